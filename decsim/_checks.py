"""The one validation vocabulary of decsim: plain Python, run on the host before anything is
traced.

Every check raises a ``ValueError`` that names the argument, the constraint, the value and, where
one exists, the fix; every check returns the value in its canonical Python type, so callers write
``rounds = checks.integer("rounds", rounds)``. Nothing here is ever called on a tracer: factories
run once with concrete values and numeric hyperparameters travel into compiled programs as data.

Example:
    >>> from decsim import _checks as checks
    >>> checks.integer("rounds", 3)
    3
    >>> checks.integer("rounds", 0)
    Traceback (most recent call last):
    ...
    ValueError: rounds must be an integer >= 1; got rounds=0.
    >>> checks.one_of("weights", "metropolis", ("metropolis", "uniform"))
    'metropolis'
"""

from __future__ import annotations

import difflib
import math
import numbers
from collections.abc import Iterable

__all__ = [
    "is_number",
    "integer",
    "number",
    "positive",
    "nonnegative",
    "in_interval",
    "one_of",
    "closest",
    "boolean",
    "learning_rate_value",
    "HPARAM_CHECKS",
    "check_hparam",
]


def is_number(value) -> bool:
    """A real Python or numpy number (not a bool)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def integer(name: str, value, *, min: int = 1, max: int | None = None, hint: str = "") -> int:
    """``value`` as an ``int`` in ``[min, max]`` (bools, floats and strings are refused)."""
    if not _is_int(value) or value < min or (max is not None and value > max):
        bound = f">= {min}" if max is None else f"in [{min}, {max}]"
        raise ValueError(f"{name} must be an integer {bound}; got {name}={value!r}.{_sp(hint)}")
    return int(value)


def number(name: str, value, *, hint: str = "") -> float:
    """``value`` as a finite ``float`` (bools, strings and NaN/inf are refused)."""
    if not is_number(value) or not math.isfinite(float(value)):
        raise ValueError(f"{name} must be a finite number; got {name}={value!r}.{_sp(hint)}")
    return float(value)


def positive(name: str, value, *, hint: str = "") -> float:
    """``value`` as a finite ``float > 0``."""
    if not is_number(value) or not math.isfinite(float(value)) or not value > 0:
        raise ValueError(
            f"{name} must be a finite positive number; got {name}={value!r}.{_sp(hint)}"
        )
    return float(value)


def nonnegative(name: str, value, *, hint: str = "") -> float:
    """``value`` as a finite ``float >= 0``."""
    if not is_number(value) or not math.isfinite(float(value)) or not value >= 0:
        raise ValueError(f"{name} must be a finite number >= 0; got {name}={value!r}.{_sp(hint)}")
    return float(value)


def in_interval(
    name: str, value, low: float, high: float, *, closed: str = "both", hint: str = ""
) -> float:
    """``value`` as a ``float`` in the interval from ``low`` to ``high``.

    Args:
      closed: which ends belong to the interval: ``"both"``, ``"left"``, ``"right"`` or
        ``"neither"``.
    """
    ok = is_number(value) and math.isfinite(float(value))
    if ok:
        lo_ok = value >= low if closed in ("both", "left") else value > low
        hi_ok = value <= high if closed in ("both", "right") else value < high
        ok = lo_ok and hi_ok
    if not ok:
        left = "[" if closed in ("both", "left") else "("
        right = "]" if closed in ("both", "right") else ")"
        raise ValueError(
            f"{name} must be a number in {left}{low:g}, {high:g}{right}; got "
            f"{name}={value!r}.{_sp(hint)}"
        )
    return float(value)


def boolean(name: str, value) -> bool:
    """``value`` if it is ``True`` or ``False``."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False; got {name}={value!r}.")
    return value


def closest(value, valid: Iterable) -> str:
    """``" Did you mean 'x'?"`` for the closest valid name, or ``""``."""
    close = difflib.get_close_matches(str(value), [str(v) for v in valid], n=1)
    return f" Did you mean {close[0]!r}?" if close else ""


def one_of(name: str, value, choices: Iterable, *, what: str | None = None):
    """``value`` if it is one of ``choices``; else an error listing them and the closest one."""
    choices = tuple(choices)
    try:
        ok = value in choices
    except TypeError:  # unhashable values compare unequal to every choice
        ok = False
    if not ok:
        listed = ", ".join(repr(c) for c in choices)
        label = what or name
        raise ValueError(
            f"unknown {label} {value!r}; {name} must be one of {listed}.{closest(value, choices)}"
        )
    return value


def learning_rate_value(name: str, value) -> float:
    """A numeric learning rate: finite and positive (a negative one would run gradient ascent)."""
    return positive(
        name, value, hint="Use e.g. 0.1, or an optax schedule (callable step -> value)."
    )


def _gamma(name: str, value) -> float:
    return in_interval(
        name,
        value,
        0.0,
        1.0,
        closed="right",
        hint="Pick it with decsim.algorithms.tune_gamma(topology, compressor, d).",
    )


def _momentum(name: str, value) -> float:
    return in_interval(name, value, 0.0, 1.0, closed="left",
                       hint="It is a momentum weight: 0 is no momentum, e.g. 0.9.")


# The numeric hyperparameters decsim's factories declare, and what each may be. Values given per
# run (``ds.run(..., hparams=...)``, sweeps) go through the same check as the factory's arguments.
HPARAM_CHECKS = {
    "learning_rate": learning_rate_value,
    "gamma": _gamma,
    "l1": nonnegative,
    "beta": _momentum,
}


def check_hparam(name: str, value) -> float:
    """Check one numeric hyperparameter value by its name (unknown names: any finite number)."""
    return HPARAM_CHECKS.get(name, number)(name, value)


def _sp(hint: str) -> str:
    return f" {hint}" if hint else ""
