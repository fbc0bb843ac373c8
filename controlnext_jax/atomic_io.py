"""Outputs that appear whole or not at all, and file digests for provenance."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


def sha256_file(path: str | Path, chunk: int = 1 << 24) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def atomic_folder(out_dir: str | Path, *, overwrite: bool = False, param: str = "out") -> Iterator[Path]:
    """Yield a fresh temporary folder beside `out_dir`; on success it becomes `out_dir`.

    On any exception the temporary folder is removed and `out_dir` is left as it was.
    `param` names the user-facing parameter in the error for an existing `out_dir`.
    """
    out_dir = Path(out_dir).resolve()
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f"{param}={out_dir}: already exists (choose another or pass overwrite=true)")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out_dir.exists():  # overwrite: swap in the new folder, then drop the old one
        old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
        out_dir.rename(old / "previous")
        tmp.rename(out_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(out_dir)


@contextlib.contextmanager
def atomic_file(path: str | Path, *, param: str = "out") -> Iterator[Path]:
    """Yield a temporary path beside `path` (same suffix, so writers pick the right format);
    on success it replaces `path` with the usual file permissions, on failure it is removed."""
    path = Path(path).absolute()
    if not path.parent.is_dir():
        raise FileNotFoundError(f"{param}={path}: directory {path.parent} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".partial{path.suffix}", dir=path.parent)
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
