"""The one command-line convention shared by every `controlnext-*` console script.

- Parameters are Hydra overrides (`key=value`, `group=choice`) over a YAML config of the
  package (`controlnext_jax/configs/`), composed with Hydra's compose API: no output or log
  folders are created, the working directory is unchanged.
- `out=` names the output, `overwrite=false` refuses an existing one, `ckpt=` names a
  converted checkpoint.
- A mistake in the input (a `UserError`, a Hydra composition error, a missing required
  value, a failed write such as a full disk) ends in one line on stderr,
  `<prog>: error: <message>`, and exit status 2. Any other exception is a bug and keeps
  its traceback.
- SIGTERM is turned into an exception like Ctrl-C, so the temporary outputs of
  `controlnext_jax.atomic_io` are removed on the way out (exit status 130 / 143).
- `--help` prints the config with its comments.
"""

from __future__ import annotations

import errno
import re
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from controlnext_jax.errors import UserError

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
HYDRA_VERSION_BASE = "1.3"

# Failed writes and reads that are the environment's, not the program's: reported as one line.
_ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EISDIR,
                       errno.ENOTDIR, errno.ENOENT, errno.EEXIST}


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so cleanup runs as for KeyboardInterrupt."""


class Interrupted(BaseException):
    """A stop (SIGTERM, Ctrl-C) a command handled itself, e.g. training after saving a
    checkpoint: reported with its own message and exit status instead of "nothing was written"."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.message, self.status = message, status


def _raise_terminated(signum, frame):
    raise Terminated()


def compose_config(config_name: str, overrides: Sequence[str]) -> DictConfig:
    """The command's config with the user's overrides; Hydra's errors become `UserError`s."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException

    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=HYDRA_VERSION_BASE):
            cfg = compose(config_name=config_name, overrides=list(overrides))
    except OverrideParseException as e:
        bad = next((o for o in overrides if "=" not in o), None)
        raise UserError(f"cannot parse {bad!r}: parameters are given as key=value" if bad else
                        f"cannot parse the parameters: {_first_line(e)}") from None
    except MissingConfigException as e:
        raise UserError(_unknown_choice(str(e))) from None
    except ConfigCompositionException as e:
        raise UserError(_composition_message(e, config_name)) from None
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise UserError(f"missing required parameter{'s' if len(missing) > 1 else ''}: "
                        f"{', '.join(k + '=...' for k in missing)} (see `--help`)")
    return cfg


def _first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def _unknown_choice(message: str) -> str:
    # Hydra: "In 'eval': Could not find 'pose/foo'\n\nAvailable options in 'pose':\n\tdwpose\n\tmediapipe"
    found = re.search(r"Could not find '([^']+)/([^'/]+)'", message)
    options = re.findall(r"^\s+(\S+)\s*$", message.split("Available options", 1)[-1], flags=re.M)
    if found:
        group, choice = found.groups()
        return f"{group}={choice}: unknown choice; allowed: {', '.join(options) or '(none)'}"
    return _first_line(Exception(message))


def _composition_message(e: BaseException, config_name: str) -> str:
    cause = e.__cause__ or e
    text = str(cause)
    key = re.search(r"Key '([^']+)' is not in struct", text)
    if key:
        full = re.search(r"full_key: (\S+)", text)
        name = full.group(1) if full else key.group(1)
        parent = name.rsplit(".", 1)[0] if "." in name else ""
        cfg = compose_config_keys(config_name)
        node = OmegaConf.select(cfg, parent) if parent else cfg
        allowed = ", ".join(sorted(node.keys())) if isinstance(node, DictConfig) else "(none)"
        return f"unknown parameter {name!r}; allowed{' under ' + parent if parent else ''}: {allowed}"
    return _first_line(cause)


def compose_config_keys(config_name: str) -> DictConfig:
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=HYDRA_VERSION_BASE):
        return compose(config_name=config_name)


def config_help(prog: str, config_name: str) -> str:
    text = (CONFIG_DIR / f"{config_name}.yaml").read_text()
    return (f"usage: {prog} key=value ... (Hydra overrides; `group=choice` selects a config group)\n\n"
            f"Parameters (controlnext_jax/configs/{config_name}.yaml):\n\n{text}")


def run_command(prog: str, config_name: str, task: Callable[[DictConfig], None],
                argv: Sequence[str] | None = None) -> None:
    """Compose the config from `argv` (default: the process arguments) and run `task` on it
    under the convention above; exits the process on error."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        print(config_help(prog, config_name))
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        cfg = compose_config(config_name, argv)
        task(cfg)
    except UserError as e:
        _fail(prog, str(e), 2)
    except OSError as e:
        if e.errno not in _ENVIRONMENT_ERRNOS:
            raise
        where = f"{e.filename}: " if e.filename else ""
        _fail(prog, f"{where}{e.strerror or e}", 2)
    except Interrupted as e:
        _fail(prog, e.message, e.status)
    except KeyboardInterrupt:
        _fail(prog, "interrupted; nothing was written", 130)
    except Terminated:
        _fail(prog, "terminated; nothing was written", 143)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _fail(prog: str, message: str, status: int) -> None:
    print(f"{prog}: error: {' '.join(message.split())}", file=sys.stderr)
    sys.exit(status)
