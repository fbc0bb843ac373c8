"""Which code produced a result: recorded in reports and sidecars.

From a source checkout: the git commit of the working tree, `+dirty` with uncommitted
changes. From an installed wheel: the package version, plus the commit pip recorded when
it was installed from a git URL (PEP 610 `direct_url.json`). Never raises.
"""

from __future__ import annotations

import json
import subprocess
from importlib import metadata
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def _git(args: list[str], cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True,
                          timeout=10).stdout.strip()


def git_commit(repo: Path) -> str | None:
    """HEAD of the git working tree at `repo` (`+dirty` with uncommitted changes), or None."""
    try:
        head = _git(["rev-parse", "HEAD"], repo)
        dirty = _git(["status", "--porcelain", "--untracked-files=no"], repo)
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty else "")


def code_version() -> str:
    """`controlnext-jax <version> (commit <sha>)`, as far as it can be known."""
    try:
        dist = metadata.distribution("controlnext-jax")
        version = dist.version
    except metadata.PackageNotFoundError:
        dist, version = None, "unknown version"
    source_tree = PACKAGE_DIR.parent
    commit = git_commit(source_tree) if (source_tree / ".git").exists() else None
    if commit is None and dist is not None:
        try:
            direct = json.loads(dist.read_text("direct_url.json") or "{}")
            commit = direct.get("vcs_info", {}).get("commit_id")
        except (json.JSONDecodeError, OSError):
            commit = None
    return f"controlnext-jax {version} (commit {commit or 'unknown'})"
