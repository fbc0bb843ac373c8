"""The command-line convention shared by every console script (controlnext_jax.cli).

Bad parameters, Hydra's own errors, outputs that would destroy an input, unwritable
outputs, failed writes and signals: each ends in one line naming the input and what is
allowed, with the documented exit status, and leaves the folder exactly as it was.
"""

from __future__ import annotations

import errno
import hashlib
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from controlnext_jax.checkpoint.torch_files import StateDictFile
from controlnext_jax.commands import convert, evaluate, export, pose, selfcheck
from controlnext_jax.testing.torch_checkpoints import (
    model_configs,
    torch_models,
    write_controlnext_file,
    write_svd_folder,
)

COMMANDS = {"controlnext-convert": convert.main, "controlnext-export": export.main, "controlnext-pose": pose.main,
            "controlnext-eval": evaluate.main, "controlnext-selfcheck": selfcheck.main}


def snapshot(root: Path) -> dict[str, str]:
    """Every file and folder under `root` with a digest of its content: 'as before' means equal."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        out[rel] = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def run_main(main, argv, capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    return exit_info.value.code, err


def assert_one_line_error(code: int, err: str, prog: str, *fragments: str) -> None:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, err)


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cli_sources")
    configs = model_configs("tiny")
    models = torch_models(configs, seed=1)
    write_svd_folder(root / "svd", models, configs)
    write_controlnext_file(root / "controlnet.bin", models["controlnext"])
    return root


@pytest.fixture(scope="module")
def converted(sources, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli_converted") / "ckpt"
    convert.main([f"svd={sources / 'svd'}", f"controlnext={sources / 'controlnet.bin'}", f"out={out}", "model=tiny"])
    return out


# ------------------------------------------------------------------ Hydra's own errors, every command

@pytest.mark.parametrize("prog", sorted(COMMANDS))
@pytest.mark.parametrize("args,fragments", [
    (["no_such_key=1"], ["unknown parameter 'no_such_key'", "allowed:"]),
    (["just_a_word"], ["cannot parse 'just_a_word'", "key=value"]),
])
def test_hydra_errors_are_one_line(prog, args, fragments, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, err = run_main(COMMANDS[prog], args, capsys)
    assert_one_line_error(code, err, prog, *fragments)
    assert list(tmp_path.iterdir()) == []  # Hydra wrote no outputs/ folder


@pytest.mark.parametrize("prog,args,fragments", [
    ("controlnext-convert", ["svd=a"], ["missing required parameters: controlnext=..., out=..."]),
    ("controlnext-export", ["out=x"], ["missing required parameter: ckpt=..."]),
    ("controlnext-eval", ["out=x"], ["missing required parameter: dataset.root=..."]),
    ("controlnext-pose", ["video=v.mp4", "image=i.png", "pose=dwpose"],
     ["missing required parameters: pose.det_model=..., pose.pose_model=..."]),
    ("controlnext-pose", ["video=v.mp4", "image=i.png", "pose=openpose"],
     ["pose=openpose: unknown choice; allowed: dwpose, mediapipe"]),
    ("controlnext-convert", ["svd=a", "controlnext=b", "out=c", "model=huge"],
     ["model=huge: unknown choice; allowed: small, svd_xt, tiny"]),
    ("controlnext-convert", ["svd=a", "controlnext=b", "out=c", "model.unet.nope=1"],
     ["unknown parameter 'model.unet.nope'", "allowed under model.unet:", "block_out_channels"]),
])
def test_missing_values_and_unknown_choices(prog, args, fragments, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, err = run_main(COMMANDS[prog], args, capsys)
    assert_one_line_error(code, err, prog, *fragments)
    assert list(tmp_path.iterdir()) == []


def test_help_prints_the_documented_config(capsys):
    export.main(["--help"])
    out = capsys.readouterr().out
    assert "controlnext-export" in out and "ckpt: ???" in out and "overwrite: false" in out


# ------------------------------------------------------------------ outputs never destroy inputs

def test_convert_refuses_outputs_touching_its_inputs(sources, capsys):
    before = snapshot(sources)
    svd, bin_ = sources / "svd", sources / "controlnet.bin"
    for out, how in [(svd, "is the input svd="), (svd / "unet" / "converted", "lies inside the input svd="),
                     (bin_, "is the input controlnext="), (sources, "contains the input svd=")]:
        code, err = run_main(convert.main, [f"svd={svd}", f"controlnext={bin_}", f"out={out}", "model=tiny",
                                            "overwrite=true"], capsys)
        assert_one_line_error(code, err, "controlnext-convert", f"out={out}", how)
    assert snapshot(sources) == before


def test_export_refuses_outputs_touching_its_checkpoint_and_bad_dtypes(converted, capsys):
    before = snapshot(converted.parent)
    for out, how in [(converted, "is the input ckpt="), (converted.parent, "contains the input ckpt="),
                     (converted / "unet" / "x", "lies inside the input ckpt=")]:
        code, err = run_main(export.main, [f"ckpt={converted}", f"out={out}", "overwrite=true"], capsys)
        assert_one_line_error(code, err, "controlnext-export", how)
    code, err = run_main(export.main, [f"ckpt={converted}", f"out={converted.parent / 'exp'}", "dtype=int8"], capsys)
    assert_one_line_error(code, err, "controlnext-export", "dtype='int8'", "float32, bfloat16, float16")
    assert snapshot(converted.parent) == before


def test_existing_outputs_are_refused_without_overwrite(sources, converted, capsys, tmp_path):
    existing = tmp_path / "taken"
    existing.mkdir()
    (existing / "keep.txt").write_text("mine")
    for main, prog, args in [
        (convert.main, "controlnext-convert", [f"svd={sources / 'svd'}", f"controlnext={sources / 'controlnet.bin'}",
                                               "model=tiny"]),
        (export.main, "controlnext-export", [f"ckpt={converted}"]),
        (selfcheck.main, "controlnext-selfcheck", []),
    ]:
        code, err = run_main(main, [*args, f"out={existing}"], capsys)
        assert_one_line_error(code, err, prog, f"out={existing}: already exists", "overwrite=true")
    assert snapshot(tmp_path) == {"taken": "dir", "taken/keep.txt": hashlib.sha256(b"mine").hexdigest()}


def test_unwritable_output_locations_fail_before_any_work(converted, capsys, tmp_path, monkeypatch):
    a_file = tmp_path / "plain.txt"
    a_file.write_text("x")
    code, err = run_main(export.main, [f"ckpt={converted}", f"out={a_file / 'out'}"], capsys)
    assert_one_line_error(code, err, "controlnext-export", f"{a_file} is not a folder")

    # a folder the process may not write in (simulated: the tests may run as root, who may write anywhere)
    import tempfile

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(tempfile, "NamedTemporaryFile", refuse)
    code, err = run_main(export.main, [f"ckpt={converted}", f"out={tmp_path / 'ro' / 'out'}"], capsys)
    assert_one_line_error(code, err, "controlnext-export", "cannot write in", "Permission denied")
    assert snapshot(tmp_path) == {"plain.txt": hashlib.sha256(b"x").hexdigest()}


def test_a_full_disk_is_one_line_and_leaves_nothing(converted, capsys, tmp_path, monkeypatch):
    from safetensors import numpy as st_numpy

    import controlnext_jax.checkpoint.export as export_lib

    def disk_full(tensors, filename, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", filename)

    monkeypatch.setattr(export_lib, "save_file", disk_full)
    assert st_numpy.save_file is not disk_full
    out = tmp_path / "exported"
    code, err = run_main(export.main, [f"ckpt={converted}", f"out={out}"], capsys)
    assert_one_line_error(code, err, "controlnext-export", "No space left on device", "diffusion_pytorch_model")
    assert list(tmp_path.iterdir()) == []


def test_unexpected_exceptions_keep_their_traceback(converted, tmp_path, monkeypatch):
    import controlnext_jax.checkpoint.export as export_lib

    def bug(*args, **kwargs):
        raise KeyError("a bug, not a user error")

    monkeypatch.setattr(export_lib, "component_state_dict", bug)
    with pytest.raises(KeyError, match="a bug"):
        export.main([f"ckpt={converted}", f"out={tmp_path / 'e'}"])
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ signals and killed runs

# Runs the real command in a subprocess, pausing after the first component was written so
# the test can signal it while the temporary output exists.
_PAUSED_CONVERT = textwrap.dedent("""
    import signal, sys, time
    # a test runner started in the background inherits SIGINT ignored; a user's terminal does not
    signal.signal(signal.SIGINT, signal.default_int_handler)
    import controlnext_jax.checkpoint.convert as convert_lib
    from controlnext_jax.commands import convert

    real = convert_lib.save_params
    def save_then_pause(*args, **kwargs):
        real(*args, **kwargs)
        print("WRITING", flush=True)
        time.sleep(120)
    convert_lib.save_params = save_then_pause
    convert.main(sys.argv[1:])
""")


def _start_paused_convert(sources: Path, out: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", _PAUSED_CONVERT, f"svd={sources / 'svd'}",
                             f"controlnext={sources / 'controlnet.bin'}", f"out={out}", "model=tiny"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "WRITING", proc.stderr.read() if proc.poll() is not None else ""
    partials = [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.partial-")]
    assert len(partials) == 1  # the temporary output exists while it runs
    return proc


@pytest.mark.slow
@pytest.mark.parametrize("sig,status,word", [(signal.SIGTERM, 143, "terminated"), (signal.SIGINT, 130, "interrupted")])
def test_signals_remove_the_temporary_output(sources, tmp_path, sig, status, word):
    out = tmp_path / "ckpt"
    proc = _start_paused_convert(sources, out)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == status, err
    assert err.strip().splitlines()[-1] == f"controlnext-convert: error: {word}; nothing was written"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_a_killed_runs_leftover_is_removed_by_the_next_run(sources, tmp_path, capsys):
    out = tmp_path / "ckpt"
    proc = _start_paused_convert(sources, out)
    proc.kill()  # SIGKILL: no cleanup can run
    proc.wait(timeout=60)
    leftovers = [p.name for p in tmp_path.iterdir()]
    assert len(leftovers) == 1 and leftovers[0].startswith(".ckpt.partial-")
    convert.main([f"svd={sources / 'svd'}", f"controlnext={sources / 'controlnet.bin'}", f"out={out}", "model=tiny"])
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]


def test_a_live_writers_temporary_is_not_touched(tmp_path):
    from controlnext_jax.atomic_io import remove_stale_partials

    mine = tmp_path / f".out.partial-{os.getpid()}-abc"
    mine.mkdir()
    dead = tmp_path / ".out.partial-999999999-abc"  # beyond any pid_max: no such process
    dead.mkdir()
    other = tmp_path / ".other.partial-999999999-abc"
    other.mkdir()
    assert remove_stale_partials(tmp_path / "out") == [dead]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([mine.name, other.name])


# ------------------------------------------------------------------ weight files

def test_legacy_torch_pickles_load_with_weights_only(tmp_path):
    state = {"a.weight": torch.randn(3, 4), "b.bias": torch.randn(5)}
    path = tmp_path / "legacy.bin"
    torch.save(state, path, _use_new_zipfile_serialization=False)
    import zipfile

    assert not zipfile.is_zipfile(path)  # really the pre-1.6 format
    loaded = StateDictFile(path)
    assert sorted(loaded) == sorted(state)
    for key, value in state.items():
        assert (loaded[key] == value.numpy()).all()
