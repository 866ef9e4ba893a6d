"""Checking a comparison spec (``[compare]``, ``[base]``, ``[[algorithm]]``) before anything runs.

- :data:`COMPARE_DEFAULTS`: the ``[compare]`` settings and their defaults.
- :class:`Entry`: one checked ``[[algorithm]]`` table (fixed arguments, grid axes, γ tuning).
- :func:`default_grid`: the default learning-rate grid ``c · 2^k``.
- :func:`compare_plan`: a spec -> ``(settings, base, entries)``, every error a ``ValueError``
  that names the key, the value and the fix (unknown keys and algorithms, grid values that are
  not numbers, overlapping seeds), raised before any compilation.

The protocol itself is in :mod:`decsim.study.compare`.

Example:
    >>> default_grid(1.0, 3)
    [0.5, 1.0, 2.0]
"""

from __future__ import annotations

import inspect
import math
import numbers
import os
from typing import NamedTuple

from .. import config as _config
from .._checks import closest

__all__ = ["COMPARE_DEFAULTS", "Entry", "default_grid", "compare_plan"]

COMPARE_DEFAULTS = dict(
    tuning_seeds=(0, 1),
    eval_seeds=(100, 101, 102, 103, 104),
    metric="loss",
    target="worst",
    grid_points=7,
    learning_rate=0.1,
    tail=0.1,
)

_TOP = ("compare", "base", "algorithm")
_OWNED = ("algorithm", "seed", "seeds")  # base keys that compare sets itself
# a small run config around an algorithm table: checks the table, builds nothing costly
_PROBE = {"problem": {"name": "quadratic", "dim": 2}, "topology": "ring", "n_workers": 4,
          "steps": 0}


class Entry(NamedTuple):
    """One algorithm of a comparison, checked.

    Attributes:
      label: its name in the tables.
      table: its algorithm table with every fixed argument (the grid axes left out).
      axes: ``{hyperparameter: [values]}``, the tuning grid (product of the axes).
      tune_gamma: whether γ comes from :func:`decsim.algorithms.tune_gamma`.
    """

    label: str
    table: dict
    axes: dict
    tune_gamma: bool


# ---------------------------------------------------------------------------------------------
# checking a spec


def _seeds(name: str, value) -> tuple:
    if not isinstance(value, (list, tuple)) or not value:
        raise ValueError(f"[compare] {name} must be a nonempty list of integers >= 0; got "
                         f"{value!r}.")
    for s in value:
        if isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 0:
            raise ValueError(f"[compare] {name} must hold integers >= 0; got {s!r} in {value!r}.")
    if len(set(value)) != len(value):
        raise ValueError(f"[compare] {name} = {list(value)} repeats a seed; give each seed once.")
    return tuple(int(s) for s in value)


def _is_number(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def _settings(table) -> dict:
    """The ``[compare]`` table, checked, with the defaults filled in."""
    if table is None:
        table = {}
    if not isinstance(table, dict):
        raise ValueError(f"[compare] must be a table; got {table!r}.")
    unknown = sorted(set(table) - set(COMPARE_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown [compare] key {unknown[0]!r}; valid keys: "
                         f"{', '.join(COMPARE_DEFAULTS)}.{closest(unknown[0], COMPARE_DEFAULTS)}")
    s = {**COMPARE_DEFAULTS, **table}
    s["tuning_seeds"] = _seeds("tuning_seeds", s["tuning_seeds"])
    s["eval_seeds"] = _seeds("eval_seeds", s["eval_seeds"])
    both = sorted(set(s["tuning_seeds"]) & set(s["eval_seeds"]))
    if both:
        raise ValueError(f"[compare] eval_seeds share {both} with tuning_seeds; evaluation seeds "
                         f"must be disjoint from the tuning seeds (e.g. eval_seeds = "
                         f"[{max(s['tuning_seeds']) + 1}, ...]).")
    if not isinstance(s["metric"], str) or not s["metric"]:
        raise ValueError(f"[compare] metric must be a metric name such as 'loss'; got "
                         f"{s['metric']!r}.")
    target = s["target"]
    if not (target == "worst" or _is_number(target)):
        raise ValueError(f"[compare] target must be 'worst' (the largest final mean among the "
                         f"algorithms) or a number; got {target!r}.")
    s["target"] = target if target == "worst" else float(target)
    m = s["grid_points"]
    if isinstance(m, bool) or not isinstance(m, numbers.Integral) or m < 1 or m % 2 == 0:
        raise ValueError(f"[compare] grid_points must be an odd integer >= 1 (the default is in "
                         f"the middle of the grid); got {m!r}.")
    if not _is_number(s["learning_rate"]) or s["learning_rate"] <= 0:
        raise ValueError(f"[compare] learning_rate (the centre of default grids) must be a "
                         f"positive number; got {s['learning_rate']!r}.")
    if not _is_number(s["tail"]) or not 0 < s["tail"] <= 1:
        raise ValueError(f"[compare] tail (the fraction of final evaluations averaged) must be "
                         f"in (0, 1]; got {s['tail']!r}.")
    return s


def default_grid(centre: float, points: int = 7) -> list:
    """``points`` values ``centre · 2^k``, ``k = −(points−1)/2 .. (points−1)/2`` (points odd).

    Example:
      >>> default_grid(0.1, 5)
      [0.025, 0.05, 0.1, 0.2, 0.4]
    """
    half = (points - 1) // 2
    return [float(centre) * 2.0 ** k for k in range(-half, half + 1)]


def _axis(label: str, key: str, values) -> list:
    if not values:
        raise ValueError(f"algorithm {label}: {key} = [] has no values; give at least one.")
    for v in values:
        if not _is_number(v):
            raise ValueError(f"algorithm {label}: every value of the grid {key} = {values!r} "
                             f"must be a finite number; got {v!r} ({type(v).__name__}). Write "
                             f"numbers without quotes, e.g. {key} = [0.05, 0.1].")
    if len(set(values)) != len(values):
        raise ValueError(f"algorithm {label}: the grid {key} = {values!r} repeats a value.")
    return sorted(values)


def _entry(raw, settings: dict, labels: set) -> Entry:
    """One ``[[algorithm]]`` table -> an :class:`Entry` (checked; nothing built but the
    algorithm's hyperparameter names)."""
    if isinstance(raw, str):
        raw = {"name": raw}
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
        raise ValueError(f"each [[algorithm]] needs name = '<algorithm>'; got {raw!r}.")
    registry = _config.algorithms()
    name = raw["name"]
    if name not in registry:
        raise ValueError(f"[[algorithm]] name {name!r} is not a registered algorithm; valid "
                         f"names: {', '.join(sorted(registry))}.{closest(name, registry)}")
    table = dict(raw)
    label = table.pop("label", name)
    if not isinstance(label, str) or not label:
        raise ValueError(f"algorithm {name}: label must be a nonempty string; got {label!r}.")
    if label in labels:
        raise ValueError(f"two [[algorithm]] tables are both labelled {label!r}; give each a "
                         f"distinct label = '...'.")
    labels.add(label)
    axes = {k: _axis(label, k, v) for k, v in table.items() if isinstance(v, (list, tuple))}
    for k in axes:
        table.pop(k)
    lr = table.get("learning_rate")
    if "learning_rate" not in axes and (lr is None or _is_number(lr)):
        table.pop("learning_rate", None)
        centre = settings["learning_rate"] if lr is None else float(lr)
        axes["learning_rate"] = default_grid(centre, settings["grid_points"])
    params = inspect.signature(registry[name]).parameters
    explicit = table.get("gamma") == "tune"
    tune = ("gamma" not in axes and table.get("gamma", "tune") == "tune" and "gamma" in params
            and "compressor" in table)
    if explicit and not tune:
        raise ValueError(f"algorithm {label}: gamma = 'tune' needs an algorithm with a gamma "
                         f"argument and a compressor = {{...}} in its table; give gamma a number "
                         f"or a list.")
    if tune:
        table.pop("gamma", None)
    probe = dict(table, **{k: v[0] for k, v in axes.items()}, **({"gamma": 0.5} if tune else {}))
    hparams = _config.build_algorithm({"algorithm": probe, **_PROBE}).hparams or {}
    for k in axes:
        if k not in hparams:
            raise ValueError(f"algorithm {label}: {k} = {axes[k]!r} is a list, but only numeric "
                             f"hyperparameters ({', '.join(sorted(hparams)) or 'none'}) can be "
                             f"tuned; give {k} one value.")
    axes = {k: [float(v) for v in values] for k, values in axes.items()}
    return Entry(label, table, axes, tune)


def compare_plan(spec) -> tuple:
    """Check a comparison spec (a dict, or the path of a TOML file) without running anything.

    Returns ``(settings, base, entries)``: the ``[compare]`` settings with defaults, the
    ``[base]`` run config and one :class:`Entry` per ``[[algorithm]]``. Raises ``ValueError``
    on an unknown key or algorithm, a grid value that is not a number, overlapping seeds or a
    base that does not make a run config.

    Example:
      >>> settings, base, entries = compare_plan({
      ...     "base": {"problem": {"name": "quadratic", "dim": 3}, "topology": "ring",
      ...              "n_workers": 4, "steps": 20, "eval_every": 5},
      ...     "algorithm": [{"name": "dsgd"}, {"name": "gradient_tracking",
      ...                                      "learning_rate": [0.1, 0.2]}]})
      >>> [(e.label, len(e.axes["learning_rate"])) for e in entries]
      [('dsgd', 7), ('gradient_tracking', 2)]
    """
    if isinstance(spec, (str, os.PathLike)):
        spec = _config.load(spec)
    if not isinstance(spec, dict):
        raise ValueError(f"a comparison spec is a dict or the path of a TOML file; got "
                         f"{type(spec).__name__}.")
    unknown = sorted(set(spec) - set(_TOP))
    if unknown:
        raise ValueError(f"unknown comparison key {unknown[0]!r}; a spec has [compare], [base] "
                         f"and [[algorithm]] tables.{closest(unknown[0], _TOP)}")
    base, algos = spec.get("base"), spec.get("algorithm")
    if not isinstance(base, dict):
        raise ValueError("a comparison spec needs a [base] table (problem, topology, n_workers, "
                         "steps, eval_every) shared by every algorithm.")
    owned = sorted(set(base) & set(_OWNED))
    if owned:
        raise ValueError(f"[base] must not set {', '.join(owned)}: compare sets the algorithm "
                         f"from [[algorithm]] and the seeds from [compare] tuning_seeds / "
                         f"eval_seeds.")
    if isinstance(algos, dict):
        algos = [algos]
    if not isinstance(algos, list) or not algos:
        raise ValueError("a comparison spec needs at least one [[algorithm]] table "
                         "(name = '...').")
    settings = _settings(spec.get("compare"))
    labels: set = set()
    entries = [_entry(a, settings, labels) for a in algos]
    return settings, dict(base), entries


