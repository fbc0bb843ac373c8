"""The package as a user gets it from `pip install .`: a wheel with the configs inside and the
console scripts working from any directory, next to no other top-level package.

The wheel is built from a copy of the source tree (the checkout stays clean) and installed
with `--no-deps` into a second virtual environment that borrows this environment's
dependencies through a `.pth` line. Such a line adds the folder to sys.path without running
the `.pth` files inside it, so the editable install of this checkout is *not* visible there:
every `controlnext_jax` import in the second environment comes from the wheel.
"""

import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SOURCE_PARTS = ("pyproject.toml", "README.md", "controlnext_jax")


@pytest.fixture(scope="module")
def wheel_env(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"
    src.mkdir()
    for part in SOURCE_PARTS:
        copy = shutil.copytree if (REPO / part).is_dir() else shutil.copy2
        copy(REPO / part, src / part, **({"ignore": shutil.ignore_patterns("__pycache__")}
                                         if (REPO / part).is_dir() else {}))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(src),
                    "-w", str(root / "dist")], check=True, capture_output=True, text=True)
    wheel = next((root / "dist").glob("controlnext_jax-*.whl"))
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    purelib = Path(subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  check=True, capture_output=True, text=True).stdout.strip())
    (purelib / "borrowed_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q",
                    "--no-deps", str(wheel)], check=True, capture_output=True, text=True)
    return wheel, venv


def test_wheel_holds_the_package_and_its_configs_only(wheel_env):
    wheel, _ = wheel_env
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    assert top == {"controlnext_jax", f"{wheel.name.split('-')[0]}-{wheel.name.split('-')[1]}.dist-info"}
    configs = {n for n in names if n.startswith("controlnext_jax/configs/") and n.endswith(".yaml")}
    repo_configs = {f"controlnext_jax/{p.relative_to(REPO / 'controlnext_jax')}"
                    for p in (REPO / "controlnext_jax" / "configs").rglob("*.yaml")}
    assert configs == repo_configs
    # the embedded model, its example and its model card travel with the package (pyproject's package-data)
    embedded = {f"controlnext_jax/{p.relative_to(REPO / 'controlnext_jax').as_posix()}"
                for p in (REPO / "controlnext_jax" / "embedded").rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    assert "controlnext_jax/embedded/checkpoint/pipeline.json" in embedded
    assert embedded <= set(names), sorted(embedded - set(names))


@pytest.mark.slow
def test_installed_commands_run_from_any_directory(wheel_env, tmp_path):
    _, venv = wheel_env
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import controlnext_jax; print(controlnext_jax.__file__)"],
                           cwd=tmp_path, check=True, capture_output=True, text=True).stdout
    assert where.startswith(str(venv)), where  # the wheel's copy, not this checkout
    for script in ("controlnext-animate", "controlnext-convert", "controlnext-export", "controlnext-pose",
                   "controlnext-eval", "controlnext-selfcheck", "controlnext-train", "controlnext-synth"):
        r = subprocess.run([str(venv / "bin" / script), "--help"], cwd=tmp_path, capture_output=True, text=True)
        assert r.returncode == 0 and "Parameters (controlnext_jax/configs/" in r.stdout, (script, r.stderr)
    # a bad parameter is one line and status 2 from the installed script too
    r = subprocess.run([str(venv / "bin" / "controlnext-export"), "ckpt=nowhere", f"out={tmp_path / 'x'}"],
                       cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "ckpt=nowhere" in r.stderr
    # end to end: random-weight PyTorch checkpoints -> conversion -> JAX forward passes vs PyTorch
    out = tmp_path / "selfcheck"
    r = subprocess.run([str(venv / "bin" / "controlnext-selfcheck"), f"out={out}"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "all components match PyTorch" in r.stdout
    assert (out / "converted" / "pipeline.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["selfcheck"]  # nothing else written where it ran
