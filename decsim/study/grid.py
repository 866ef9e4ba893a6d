"""Grids of runs: expansion into canonical run configs, run and group ids, shards.

A grid maps dotted config paths to lists of values (``{"algorithm.learning_rate": [0.05, 0.1]}``,
or TOML's nested form of the same keys); a list of grids is the union of their products. Every
point becomes one canonical run config per seed (:func:`expand`). A run's id is a hash of its
canonical config (:func:`run_id`, the key of the result store); its *group* is the same config
but the seed (:func:`group_id`): what :func:`decsim.study.load_histories` stacks and what
``shard`` splits. ``shard=(i, k)`` (or ``"i/k"``, 0 <= i < k) keeps a deterministic 1/k of the
groups (the groups sorted by id, every k-th from the i-th), so k machines or a job array can share
one grid and one output folder.

Example:
    >>> from decsim.study import grid
    >>> grid.flatten({"algorithm": {"learning_rate": [0.05, 0.1]}, "seed": [0, 1]})
    {'algorithm.learning_rate': [0.05, 0.1], 'seed': [0, 1]}
    >>> grid.parse_shard("1/4")
    (1, 4)
"""

from __future__ import annotations

import hashlib
import itertools
import json
from typing import NamedTuple, Optional

from .. import config as _config

__all__ = ["PlannedRun", "expand", "plan", "parse_shard", "flatten", "digest", "run_id",
           "group_id"]


class PlannedRun(NamedTuple):
    """One run of a sweep: its store id, its group (the same config but the seed) and config."""

    id: str
    group: str
    config: dict


def digest(obj) -> str:
    """A short, stable hash (16 hex digits) of a JSON-able object: keys sorted, no NaN."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def run_id(canonical: dict) -> str:
    """The store id of a run: the :func:`digest` of its canonical config (seed included)."""
    return digest(canonical)


def group_id(canonical: dict) -> str:
    """The group of a run: the :func:`digest` of its canonical config without the seed."""
    return digest({k: v for k, v in canonical.items() if k != "seed"})


def flatten(tree: dict, leaf=None, prefix: str = "") -> dict:
    """Nested tables -> one table of dotted paths: ``{"a": {"b": v}}`` -> ``{"a.b": v}``.

    ``leaf(path, value)``, when given, maps each leaf (anything that is not a dict) as it is
    reached; otherwise leaves are kept as they are. Grids use it for TOML's nested form of dotted
    keys (checking each axis), the result store for the columns of a run's config.
    """
    out = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, leaf, path + "."))
        else:
            out[path] = value if leaf is None else leaf(path, value)
    return out


def _grid_axis(path: str, value) -> list:
    """One axis of a grid: a nonempty list of values."""
    if isinstance(value, (list, tuple)):
        if len(value) == 0:
            raise ValueError(f"grid key {path!r} has no values; give at least one.")
        return list(value)
    raise ValueError(f"grid key {path!r} must map to a list of values (the axis of the grid); "
                     f"got {value!r}. Wrap a single value in a list: [{value!r}].")


def _grid_points(grid) -> list:
    """The points of a grid (dict: product; list of dicts: union of products, as scikit-learn's
    ParameterGrid), as dicts path -> value, in a deterministic order (paths sorted)."""
    if grid is None:
        return [{}]
    parts = grid if isinstance(grid, (list, tuple)) else [grid]
    points = []
    for part in parts:
        if not isinstance(part, dict):
            raise ValueError(f"grid must be a dict of dotted paths to lists, or a list of such "
                             f"dicts; got {type(part).__name__}.")
        axes = flatten(part, _grid_axis)
        paths = sorted(axes)
        points.extend(dict(zip(paths, values))
                      for values in itertools.product(*(axes[p] for p in paths)))
    return points


def expand(base: dict, grid=None) -> list:
    """The canonical configs of every run of a grid, one per seed, in grid order, without
    duplicates.

    Args:
      base: a run config (``seeds = [...]`` expands into one run per seed).
      grid: ``{dotted path: [values]}`` (product), or a list of such dicts (union of products).
        ``"seed"`` / ``"seeds"`` may be grid keys too.
    """
    out, seen = [], set()
    for point in _grid_points(grid):
        cfg = base
        # whole tables first (e.g. "algorithm"), then their entries ("algorithm.learning_rate")
        for path in sorted(point, key=lambda p: p.count(".")):
            cfg = _config.set_path(cfg, path, point[path])
        if "seed" in point and "seeds" in cfg:
            cfg = {k: v for k, v in cfg.items() if k != "seeds"}
        c = _config.canonical(cfg)
        seeds = c.pop("seeds", None)
        for seed in (seeds if seeds is not None else [c.pop("seed")]):
            one = dict(c, seed=int(seed))
            key = run_id(one)
            if key not in seen:
                seen.add(key)
                out.append(one)
    return out


def parse_shard(shard) -> Optional[tuple]:
    """``"i/k"`` or ``(i, k)`` with 0 <= i < k -> ``(i, k)``; ``None`` -> ``None``."""
    if shard is None:
        return None
    try:
        if isinstance(shard, str):
            i, k = (int(v) for v in shard.split("/"))
        else:
            i, k = int(shard[0]), int(shard[1])
    except (ValueError, TypeError, IndexError):
        raise ValueError(f"shard must be 'i/k' with integers 0 <= i < k (e.g. '0/4'); "
                         f"got {shard!r}.") from None
    if not (k >= 1 and 0 <= i < k):
        last = f" Use {k - 1}/{k} for the last shard." if i == k else ""
        raise ValueError(f"shard must be 'i/k' with 0 <= i < k (shards are numbered from 0); got "
                         f"{i}/{k}." + last)
    return i, k


def plan(base: dict, grid=None, *, shard=None) -> list:
    """The runs of a grid (this shard's share of them) as :class:`PlannedRun`, in execution
    order."""
    runs = [PlannedRun(run_id(c), group_id(c), c) for c in expand(base, grid)]
    shard = parse_shard(shard)
    if shard is not None:
        i, k = shard
        groups = sorted({r.group for r in runs})
        mine = set(groups[i::k])
        runs = [r for r in runs if r.group in mine]
    return runs
