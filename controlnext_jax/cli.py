"""Shared behaviour of the Hydra command-line entry points."""

from __future__ import annotations

import functools
import sys
from pathlib import Path

from omegaconf.errors import MissingMandatoryValue

# Absolute path of the Hydra config tree (the repo's `configs/`; the package is installed
# editable). Hydra resolves a relative config_path against the *package* of the entry
# point, which fails for the top-level `convert`/`eval`/`train` packages.
CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "configs")

# Errors that mean "the user's input is wrong": reported as one clear line, no traceback.
# MissingMandatoryValue: a required key (`???` in the config) was not given on the command line.
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, KeyError, MissingMandatoryValue)


def user_errors(prog: str):
    """Decorate a Hydra task function: user errors exit with status 2 and a one-line message.

    Hydra prints a traceback for exceptions escaping the task function; SystemExit passes
    through it untouched.
    """

    def wrap(fn):
        @functools.wraps(fn)
        def inner(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except USER_ERRORS as e:
                print(f"{prog}: error: {e}", file=sys.stderr)
                sys.exit(2)

        return inner

    return wrap
