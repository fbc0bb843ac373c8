"""Outputs that appear whole or not at all, the checks every command makes on its output
before any work, and file digests for provenance.

A temporary output is named `.{name}.partial-{pid}-{random}` beside the final path. On any
exception (Ctrl-C and SIGTERM included, see `controlnext_jax.cli`) it is removed; a run that
was killed outright (SIGKILL, power loss) leaves it behind, and the next run writing the
same output removes every such leftover whose process is gone.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

from controlnext_jax.errors import UserError


def sha256_file(path: str | Path, chunk: int = 1 << 24) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def partial_prefix(path: Path) -> str:
    """Prefix of the temporary names used while `path` is being written (this process)."""
    return f".{path.name}.partial-{os.getpid()}-"


_PARTIAL = re.compile(r"^\.(?P<name>.+)\.partial-(?P<pid>\d+)-")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_partials(path: Path) -> list[Path]:
    """Remove leftovers of killed runs that were writing `path`; returns what was removed."""
    removed = []
    if not path.parent.is_dir():
        return removed
    for entry in path.parent.iterdir():
        m = _PARTIAL.match(entry.name)
        if m and m["name"] == path.name and not _pid_alive(int(m["pid"])):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


def _related(a: Path, b: Path) -> bool:
    return a == b or a in b.parents or b in a.parents


def check_output(out: str | Path, *, inputs: Mapping[str, str | Path | None], overwrite: bool,
                 param: str = "out", kind: str = "folder") -> Path:
    """Refuse an output that would destroy an input or cannot be written, before any work.

    `inputs` maps parameter names to the paths the command reads. The output may not be,
    contain, or lie inside any of them; an existing output needs `overwrite=true` and must
    be of the same kind (`folder` or `file`); the nearest existing folder above it must be
    writable (checked by creating and removing a file there). Stale temporaries of this
    output from killed runs are removed. Returns the absolute output path."""
    out = Path(out).expanduser().absolute()
    resolved_out = out.resolve()
    for name, path in inputs.items():
        if path is None or str(path) == "":
            continue
        p = Path(path).expanduser().absolute().resolve()
        if _related(resolved_out, p):
            how = "is" if resolved_out == p else ("contains" if resolved_out in p.parents else "lies inside")
            raise UserError(f"{param}={out}: {how} the input {name}={path}; choose an output apart from the inputs")
    if out.exists() or out.is_symlink():
        if not overwrite:
            raise UserError(f"{param}={out}: already exists (choose another or pass overwrite=true)")
        if kind == "folder" and not out.is_dir():
            raise UserError(f"{param}={out}: exists and is not a folder")
        if kind == "file" and out.is_dir():
            raise UserError(f"{param}={out}: is a folder; give a file name")
    parent = out.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise UserError(f"{param}={out}: {parent} is not a folder")
    try:
        probe = tempfile.NamedTemporaryFile(dir=parent, prefix=f".{out.name}.write-check-")
        probe.close()
    except OSError as e:
        raise UserError(f"{param}={out}: cannot write in {parent} ({e.strerror})") from None
    remove_stale_partials(out)
    return out


@contextlib.contextmanager
def atomic_folder(out_dir: str | Path, *, overwrite: bool = False, param: str = "out") -> Iterator[Path]:
    """Yield a fresh temporary folder beside `out_dir`; on success it becomes `out_dir`.

    On any exception the temporary folder is removed and `out_dir` is left as it was.
    `param` names the user-facing parameter in the error for an existing `out_dir`.
    """
    out_dir = Path(out_dir).absolute()
    if out_dir.exists() and not overwrite:
        raise UserError(f"{param}={out_dir}: already exists (choose another or pass overwrite=true)")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(out_dir)
    tmp = Path(tempfile.mkdtemp(prefix=partial_prefix(out_dir), dir=out_dir.parent))
    try:
        yield tmp
        if out_dir.exists():  # overwrite: swap in the new folder, then drop the old one
            old = Path(tempfile.mkdtemp(prefix=partial_prefix(out_dir) + "old-", dir=out_dir.parent))
            out_dir.rename(old / "previous")
            tmp.rename(out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def atomic_file(path: str | Path, *, param: str = "out") -> Iterator[Path]:
    """Yield a temporary path beside `path` (same suffix, so writers pick the right format);
    on success it replaces `path` with the usual file permissions, on failure it is removed."""
    path = Path(path).absolute()
    if not path.parent.is_dir():
        raise UserError(f"{param}={path}: directory {path.parent} does not exist")
    remove_stale_partials(path)
    fd, tmp = tempfile.mkstemp(prefix=partial_prefix(path), suffix=path.suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o666 & ~umask)  # mkstemp creates 0600; outputs get what a plain open() would give
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
