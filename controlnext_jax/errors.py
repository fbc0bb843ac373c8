"""The one error type for mistakes in what the user gave, and the checks that raise it.

A `UserError` is reported by every command as one line naming the parameter or file and
what is allowed, with exit status 2 (`controlnext_jax.cli`). Anything else that escapes a
command is a bug and keeps its traceback. `UserError` is a `ValueError`, so library callers
that catch `ValueError` keep working.
"""

from __future__ import annotations

from collections.abc import Iterable


class UserError(ValueError):
    """A bad parameter or input file: the message names it and says what is allowed."""


def require_choice(name: str, value, allowed: Iterable) -> None:
    allowed = list(allowed)
    if value not in allowed:
        raise UserError(f"{name}={value!r}: allowed values are {', '.join('null' if a is None else str(a) for a in allowed)}")


def require_int(name: str, value, lo: int | None = None, hi: int | None = None) -> int:
    """`value` as an int within [lo, hi] (bools and non-integral numbers refused)."""
    span = f"an integer in {lo}..{hi}" if lo is not None and hi is not None else (
        f"an integer >= {lo}" if lo is not None else "an integer")
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise UserError(f"{name}={value!r}: must be {span}")
    value = int(value)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise UserError(f"{name}={value}: must be {span}")
    return value


def require_number(name: str, value, lo: float | None = None, hi: float | None = None) -> float:
    """`value` as a float within [lo, hi]."""
    span = f"a number in {lo}..{hi}" if lo is not None and hi is not None else (
        f"a number >= {lo}" if lo is not None else "a number")
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        raise UserError(f"{name}={value!r}: must be {span}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise UserError(f"{name}={value}: must be {span}")
    return float(value)
