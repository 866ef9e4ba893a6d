"""Sweeps over grids of runs, a resumable result store, and the linear-speedup study built on them.

:func:`sweep` takes a base run config (see :mod:`decsim.config`) and a grid of dotted paths to
lists of values, runs the product, and writes every finished run into ``out_dir``:

- **grouping**: runs that differ only in their seed and in the values of numeric
  hyperparameters (learning rate, gamma, ...) are one ``ds.run(..., seeds=[...],
  hparams={name: [one value per run]})`` call: one vmapped program. Batches that differ only in
  data of equal shape (the graph of a topology with the same n, a data seed) reuse that compiled
  program, because the runner compiles per algorithm *structure* and passes the numbers as
  arguments (``decsim.runner.trace_count()`` stays put). Batches run in an order that keeps equal
  structures together. A run's *group* (its config but the seed) is what :func:`load_histories`
  stacks and what ``shard`` splits.
- **result store**: one ``<id>.json`` + ``<id>.npz`` per run, ``id`` = a hash of the run's canonical
  config (:func:`decsim.config.config_hash`). Each file is written to a temporary name and moved
  into place with ``os.replace`` (atomic), the NPZ first; the JSON, written last, records the
  NPZ's SHA-256. A run counts as finished only when its JSON parses, names its own id and config
  hash, and its NPZ matches the recorded checksum; anything else (a missing, truncated or
  corrupt file) is rerun. No pickle anywhere (``np.load(..., allow_pickle=False)``).
- **resume**: rerunning an interrupted sweep redoes nothing that finished.
- **divergence**: a run that produced NaN/inf is stored with ``status = "diverged"`` and the
  sweep goes on.
- **sharding**: ``shard=(i, k)`` (or ``"i/k"``, 0 <= i < k) runs a deterministic 1/k of the
  groups (the groups sorted by id, every k-th from the i-th), so k machines or a job array can
  share one grid and one output folder.

:func:`load_results` reads a store back as a tidy pandas DataFrame (one row per evaluation and
run), :func:`load_histories` as :class:`decsim.History` objects (seeds of a group stacked).

The speedup study (ALGORITHMS.md section 8; ``decsim speedup``) is a sweep: algorithms x worker
counts x topologies, each a vmapped program over the seeds, plus centralized SGD at each n as the
reference for the transient. It measures ``T(ε, n)``, the first step at which the seed-averaged,
smoothed suboptimality ``f(x̄) − f*`` reaches the target ``ε``; ``speedup = T(ε, 1) / T(ε, n)``;
``efficiency = speedup / n``; the exponent ``b`` of ``log(f − f*) = a + b log(n t)`` on the tail of
each curve with a 95% interval over seeds; and the transient, the first step from which the
smoothed error stays within 10% of centralized SGD's with the same n.

Embedded defaults (``SPEEDUP_DEFAULTS``): softmax regression on scikit-learn's digits (1437
training images split iid, batch 1 per worker, l2 = 5e-2), D-SGD with the decaying step
``η_t = 0.5 / (1 + t/100)``, 3000 steps, 3 seeds, ring, torus and complete graphs. With a step
``c / (t + t0)`` and ``2 c μ > 1`` (here ``c = 50`` and ``μ >= l2 = 0.05``), SGD on a strongly convex
problem ends in the noise-dominated regime where the error falls like ``c² σ² / ((2cμ − 1) n t)``,
so ``T(ε, n) ∝ 1/n`` and the fitted exponent of ``f − f*`` against ``n t`` is −1: the regime in
which linear speedup is a measurable statement. (With ``2cμ < 1`` the error falls like
``t^(−2cμ)`` and the measured speedup is super-linear, ``n^(1/(2cμ))``, which is why the default
regularization is not smaller. The −1/2 of ALGORITHMS.md section 8 is the exponent of the average
squared gradient norm with a constant step ``η ∝ sqrt(n/T)``, measured in
``notebooks/01_linear_speedup.ipynb`` and ``tests/test_theory.py``.) ``ε`` is ``target_factor``
times the final suboptimality of the single worker, so every n has to reach what one worker
reaches at the end.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import glob
import hashlib
import io
import itertools
import json
import math
import os
import sys
import tempfile
import time
import types
import zipfile
from typing import NamedTuple, Optional

import numpy as np

from . import config as _config
from . import theory
from . import topology as _topology
from ._types import History
from .runner import run

FORMAT = "decsim-run/1"


# ---------------------------------------------------------------------------------------------
# grids


class PlannedRun(NamedTuple):
    """One run of a sweep: its store id, its group (the same config but the seed) and config."""

    id: str
    group: str
    config: dict


def _hash(obj) -> str:
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _group_id(canonical: dict) -> str:
    return _hash({k: v for k, v in canonical.items() if k != "seed"})


def _flatten_grid(grid, prefix: str = "") -> dict:
    """``{"algorithm": {"learning_rate": [..]}}`` (TOML's dotted keys) -> ``{"algorithm.learning_rate": [..]}``."""
    out = {}
    for key, value in grid.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten_grid(value, path + "."))
        elif isinstance(value, (list, tuple)):
            if len(value) == 0:
                raise ValueError(f"grid key {path!r} has no values; give at least one.")
            out[path] = list(value)
        else:
            raise ValueError(f"grid key {path!r} must map to a list of values (the axis of the grid); "
                             f"got {value!r}. Wrap a single value in a list: [{value!r}].")
    return out


def _grid_points(grid) -> list:
    """The points of a grid (dict: product; list of dicts: union of products, as scikit-learn's
    ParameterGrid), as dicts path -> value, in a deterministic order (paths sorted)."""
    if grid is None:
        return [{}]
    parts = grid if isinstance(grid, (list, tuple)) else [grid]
    points = []
    for part in parts:
        if not isinstance(part, dict):
            raise ValueError(f"grid must be a dict of dotted paths to lists, or a list of such dicts; "
                             f"got {type(part).__name__}.")
        flat = _flatten_grid(part)
        paths = sorted(flat)
        points.extend(dict(zip(paths, values)) for values in itertools.product(*(flat[p] for p in paths)))
    return points


def expand(base: dict, grid=None) -> list:
    """The canonical configs of every run of a grid, one per seed, in grid order, without duplicates.

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
            key = _hash(one)
            if key not in seen:
                seen.add(key)
                out.append(one)
    return out


def parse_shard(shard) -> Optional[tuple]:
    """``"i/k"`` or ``(i, k)`` with 0 <= i < k -> ``(i, k)``; ``None`` -> ``None``."""
    if shard is None:
        return None
    text = shard if isinstance(shard, str) else None
    try:
        i, k = (int(v) for v in shard.split("/")) if text is not None else (int(shard[0]), int(shard[1]))
    except (ValueError, TypeError, IndexError):
        raise ValueError(f"shard must be 'i/k' with integers 0 <= i < k (e.g. '0/4'); got {shard!r}.") from None
    if not (k >= 1 and 0 <= i < k):
        raise ValueError(f"shard must be 'i/k' with 0 <= i < k (shards are numbered from 0); got "
                         f"{i}/{k}." + (f" Use {k - 1}/{k} for the last shard." if i == k else ""))
    return i, k


def plan(base: dict, grid=None, *, shard=None) -> list:
    """The runs of a grid (this shard's share of them) as :class:`PlannedRun`, in execution order."""
    runs = [PlannedRun(_hash(c), _group_id(c), c) for c in expand(base, grid)]
    shard = parse_shard(shard)
    if shard is not None:
        i, k = shard
        groups = sorted({r.group for r in runs})
        mine = set(groups[i::k])
        runs = [r for r in runs if r.group in mine]
    return runs


# ---------------------------------------------------------------------------------------------
# the result store


def _paths(out_dir: str, run_id: str) -> tuple:
    return os.path.join(out_dir, f"{run_id}.json"), os.path.join(out_dir, f"{run_id}.npz")


def _atomic_write(path: str, data: bytes) -> None:
    folder, name = os.path.split(path)
    fd, tmp = tempfile.mkstemp(dir=folder or ".", prefix=f".{name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _json_safe(value):
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (np.floating, float)):
        v = float(value)
        return v if math.isfinite(v) else None
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.bool_,)):
        return bool(value)
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    return str(value)


def _problem_facts(problem) -> dict:
    info = problem.info or {}
    return {k: float(info[k]) for k in ("f_star", "L", "mu", "sigma2", "zeta2")
            if k in info and isinstance(info[k], (int, float, np.floating, np.integer))}


def write_run(out_dir: str, planned: PlannedRun, hist: History, index: int, *, facts: dict,
              save_params: bool = False, group_size: int = 1) -> str:
    """Store seed ``index`` of a (seed-batched) History as one finished run; returns the JSON path."""
    arrays = {"steps": np.asarray(hist.steps)}
    batched = hist.batched
    for name, values in hist.metrics.items():
        v = np.asarray(values, dtype=np.float64)
        arrays[f"metric/{name}"] = v[index] if batched else v
    if save_params and hist.params is not None:
        import jax

        for path, leaf in jax.tree_util.tree_flatten_with_path(hist.params)[0]:
            a = np.asarray(leaf)
            arrays[f"param/{jax.tree_util.keystr(path)}"] = a[index] if batched else a
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    data = buf.getvalue()
    json_path, npz_path = _paths(out_dir, planned.id)
    _atomic_write(npz_path, data)
    diverged = bool(np.atleast_1d(hist.diverged)[index])
    step = int(np.atleast_1d(hist.diverged_step)[index])
    final = {}
    for name, values in hist.metrics.items():
        v = np.asarray(values, dtype=np.float64)
        v = v[index] if batched else v
        finite = v[np.isfinite(v)]
        final[name] = float(finite[-1]) if finite.size else None
    record = {
        "format": FORMAT,
        "id": planned.id,
        "group": planned.group,
        "config": planned.config,
        "status": "diverged" if diverged else "ok",
        "diverged_step": step,
        "npz_sha256": hashlib.sha256(data).hexdigest(),
        "info": {
            "algorithm": hist.config.get("algorithm"),
            "problem": hist.config.get("problem"),
            "topology": hist.config.get("topology"),
            "n_workers": hist.config.get("n_workers"),
            "spectral_gap": hist.config.get("spectral_gap"),
            "hparams": _own_hparams(hist.config.get("hparams"), index),
            **facts,
        },
        "final": final,
        "compile_seconds": float(hist.compile_seconds),
        "run_seconds": float(hist.run_seconds),
        "group_size": int(group_size),
        "decsim_version": _version(),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    _atomic_write(json_path, json.dumps(_json_safe(record), indent=1, allow_nan=False).encode())
    return json_path


def _own_hparams(hparams, index: int):
    """Run ``index``'s hyperparameters from a History's (per-run lists in a batched call)."""
    if not hparams:
        return hparams
    return {k: (v[index] if isinstance(v, (list, tuple)) else v) for k, v in hparams.items()}


def _version() -> str:
    from . import __version__

    return __version__


def read_run(out_dir: str, run_id: str, *, arrays: bool = True):
    """``(record, arrays)`` of a finished run, or ``None`` when it is missing, partial or corrupt."""
    json_path, npz_path = _paths(out_dir, run_id)
    try:
        with open(json_path, "rb") as fh:
            record = json.loads(fh.read().decode())
        if (not isinstance(record, dict) or record.get("format") != FORMAT or record.get("id") != run_id
                or _hash(record.get("config")) != run_id):
            return None
        with open(npz_path, "rb") as fh:
            data = fh.read()
        if hashlib.sha256(data).hexdigest() != record.get("npz_sha256"):
            return None
        if not arrays:
            return record, None
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            loaded = {k: npz[k] for k in npz.files}
        if "steps" not in loaded:
            return None
        return record, loaded
    except (OSError, ValueError, UnicodeDecodeError, KeyError, TypeError, EOFError, zipfile.BadZipFile):
        return None


def is_complete(out_dir: str, run_id: str) -> bool:
    """Whether the store holds a finished, intact run with this id."""
    return read_run(out_dir, run_id, arrays=False) is not None


def _scan(out_dir: str, ids=None) -> list:
    if ids is None:
        ids = sorted(os.path.basename(p)[:-5] for p in glob.glob(os.path.join(out_dir, "*.json"))
                     if not os.path.basename(p).startswith("."))
    out = []
    for run_id in ids:
        got = read_run(out_dir, run_id)
        if got is not None:
            out.append(got)
    return out


# ---------------------------------------------------------------------------------------------
# sweep


class SweepReport(NamedTuple):
    """What :func:`sweep` did.

    Attributes:
      out_dir: the result store.
      total: runs in this shard of the grid.
      skipped: of those, already finished in the store (not recomputed).
      ran: runs computed now (``total − skipped``).
      diverged: of the runs computed now, how many diverged (stored as diverged).
      run_ids: the ids of this shard's runs (grid order).
      seconds: wall-clock time.
    """

    out_dir: str
    total: int
    skipped: int
    ran: int
    diverged: int
    run_ids: list
    seconds: float


def sweep(base: dict, grid=None, out_dir: str = "decsim-sweep", *, shard=None, progress: bool = True,
          rerun: bool = False, save_params: bool = False) -> SweepReport:
    """Run every point of ``grid`` around the ``base`` run config; store each run in ``out_dir``.

    Args:
      base: a run config (:mod:`decsim.config`); ``seeds = [...]`` runs each point for every seed.
      grid: ``{"algorithm.learning_rate": [0.05, 0.1], "topology.name": ["ring", "torus"], ...}``
        (product of the lists), or a list of such dicts (the union of their products). Any config
        key can be an axis, including whole tables (``"algorithm": [{...}, {...}]``) and ``seed``.
      out_dir: the result store (created if needed). Finished runs found there are not rerun.
      shard: ``"i/k"`` or ``(i, k)``: run only the i-th of k deterministic shares of the grid.
      progress: a progress bar over runs.
      rerun: recompute (and overwrite) runs that are already finished.
      save_params: also store each run's final stacked parameters in its NPZ.

    Returns:
      A :class:`SweepReport`. Read the results with :func:`load_results`.

    Every config is checked and every object built before anything is compiled, so a bad name or
    value fails at once with the list of valid names.

    Example:
      >>> import tempfile, decsim as ds
      >>> base = {"algorithm": {"name": "dsgd", "learning_rate": 0.1},
      ...         "problem": {"name": "quadratic", "dim": 4, "noise": 0.1},
      ...         "topology": "ring", "n_workers": 4, "steps": 50, "eval_every": 10}
      >>> out = tempfile.mkdtemp()
      >>> report = ds.sweep(base, {"algorithm.learning_rate": [0.05, 0.1], "seed": [0, 1]}, out,
      ...                   progress=False)
      >>> report.total, report.ran
      (4, 4)
      >>> ds.sweep(base, {"algorithm.learning_rate": [0.05, 0.1], "seed": [0, 1]}, out,
      ...          progress=False).skipped
      4
      >>> ds.load_results(out).groupby("algorithm.learning_rate")["seed"].nunique().tolist()
      [2, 2]
    """
    start = time.perf_counter()
    planned = plan(base, grid, shard=shard)
    pending = [r for r in planned if rerun or not is_complete(out_dir, r.id)]
    # One call (one vmapped program) per batch: runs whose configs differ only in the seed and in
    # the values of numeric hyperparameters.
    batches: "collections.OrderedDict[str, list]" = collections.OrderedDict()
    for r in pending:
        batches.setdefault(_batch_key(r.config), []).append(r)

    # Build everything first: any error is raised before the first compilation.
    problems, topologies, jobs = {}, {}, []
    for runs in batches.values():
        c = runs[0].config
        pkey = _hash([c["problem"], c["n_workers"]])
        tkey = _hash([c["topology"], c["n_workers"]])
        if pkey not in problems:
            problems[pkey] = _config.build_problem(c)
        if tkey not in topologies:
            topologies[tkey] = _config.build_topology(c)
        checked = {}
        for r in runs:  # every run's own values go through the factory's checks
            if r.group not in checked:
                checked[r.group] = _config.build_algorithm(r.config)
                if checked[r.group].validate is not None:
                    checked[r.group].validate(topologies[tkey])
        algo = checked[runs[0].group]
        names = sorted(_config.numeric_hparams(c))
        hparams = {k: [_config.numeric_hparams(r.config)[k] for r in runs] for k in names}
        structure = _hash({**c["algorithm"], **{k: None for k in names}})
        jobs.append((structure, c["n_workers"], runs, algo, hparams, problems[pkey], topologies[tkey]))
    os.makedirs(out_dir, exist_ok=True)
    # keep equal structures (one compiled program) next to each other, in first-seen order
    first = {}
    for j, job in enumerate(jobs):
        first.setdefault((job[0], job[1]), j)
    jobs.sort(key=lambda job: first[(job[0], job[1])])

    bar = None
    if progress and pending:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(pending), desc="sweep", unit="run")
    diverged = 0
    try:
        for _, _, runs, algo, hparams, prob, topo in jobs:
            c = runs[0].config
            seeds = [r.config["seed"] for r in runs]
            hist = run(algo, prob, topo, c["steps"], eval_every=c["eval_every"], seeds=seeds,
                       hparams=hparams or None, progress=False)
            facts = _problem_facts(prob)
            facts.update(lam=float(topo.lam), p=float(topo.p))
            for s, r in enumerate(runs):
                write_run(out_dir, r, hist, s, facts=facts, save_params=save_params,
                          group_size=len(runs))
            diverged += int(np.sum(np.atleast_1d(hist.diverged)))
            if bar is not None:
                bar.update(len(runs))
    finally:
        if bar is not None:
            bar.close()
    return SweepReport(out_dir=out_dir, total=len(planned), skipped=len(planned) - len(pending),
                       ran=len(pending), diverged=diverged, run_ids=[r.id for r in planned],
                       seconds=time.perf_counter() - start)


def _batch_key(config: dict) -> str:
    """Runs with equal keys differ at most in their seed and numeric hyperparameter values."""
    numeric = _config.numeric_hparams(config)
    rest = {k: v for k, v in config.items() if k != "seed"}
    rest["algorithm"] = {**config["algorithm"], **{k: None for k in numeric}}
    return _hash(rest)


def sweep_file(path: str, out_dir: Optional[str] = None, **kwargs) -> SweepReport:
    """Run a sweep described by a TOML file with a ``[base]`` table (a run config) and a ``[grid]``
    table (dotted paths to lists) or ``[[grid]]`` array of tables (union of products)."""
    spec = _config.load(path)
    unknown = set(spec) - {"base", "grid"}
    if unknown or "base" not in spec:
        raise ValueError(f"{path}: a sweep file has a [base] table (a run config) and a [grid] table; "
                         f"got top-level keys {sorted(spec)}.")
    if out_dir is None:
        out_dir = os.path.splitext(os.path.basename(path))[0] + "-results"
    return sweep(spec["base"], spec.get("grid"), out_dir, **kwargs)


# ---------------------------------------------------------------------------------------------
# reading results


def _flat_config(cfg: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in cfg.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat_config(v, key + "."))
        elif isinstance(v, list):
            out[key] = tuple(_config._tuples(v))
        else:
            out[key] = v
    return out


def _run_columns(record: dict) -> dict:
    info = record.get("info", {})
    cols = {"run": record["id"], "group": record["group"]}
    cols.update({k: info.get(k) for k in ("algorithm", "problem", "topology", "spectral_gap")})
    cols.update(_flat_config({k: v for k, v in record["config"].items() if k != "seed"}))
    cols["seed"] = record["config"]["seed"]
    cols["status"] = record["status"]
    cols["diverged"] = record["status"] == "diverged"
    cols["diverged_step"] = record["diverged_step"]
    if info.get("f_star") is not None:
        cols["f_star"] = info["f_star"]
    return cols


def load_results(out_dir: str, *, final: bool = False):
    """The finished runs of a result store as a tidy pandas DataFrame.

    One row per evaluation of every run (``final=True``: one row per run with the last finite
    value of every metric). Columns: ``run`` (id), ``group`` (the same config but the seed),
    ``algorithm`` / ``problem`` / ``topology`` (display names), ``spectral_gap``, every config
    entry as a dotted column (``algorithm.name``, ``algorithm.learning_rate``, ``topology.name``,
    ``n_workers``, ``steps``, ...), ``seed``, ``status`` (``ok``/``diverged``), ``diverged``,
    ``diverged_step``, ``step`` and the metrics (``loss``, ``grad_norm_sq``, ``consensus``,
    ``grad_evals``, ``comm_rounds``, ``bits``, ...), and ``suboptimality = loss − f*`` when the
    problem knows f* (quadratics). Missing, partial or corrupt files are skipped.
    """
    import pandas as pd

    frames = []
    for record, arrays in _scan(out_dir):
        cols = _run_columns(record)
        metrics = {k[len("metric/"):]: v for k, v in arrays.items() if k.startswith("metric/")}
        if "f_star" in cols and "loss" in metrics:
            metrics["suboptimality"] = metrics["loss"] - cols["f_star"]
        if final:
            row = dict(cols)
            row["step"] = int(arrays["steps"][-1])
            for name, v in metrics.items():
                finite = v[np.isfinite(v)]
                row[name] = float(finite[-1]) if finite.size else float("nan")
            frames.append(pd.DataFrame([row]))
        else:
            frame = pd.DataFrame({"step": arrays["steps"], **metrics})
            for k, v in reversed(list(cols.items())):
                frame.insert(0, k, [v] * len(frame))
            frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=["run", "group", "algorithm", "problem", "topology", "seed",
                                     "status", "step", "loss"])
    return pd.concat(frames, ignore_index=True)


def load_histories(out_dir: str, *, groups=None) -> dict:
    """``{group id: History}``: the finished runs of a store, the seeds of each group stacked as
    one seed-batched History (as ``ds.run(..., seeds=[...])`` returns), so ``ds.plot.convergence``
    draws them with a band over seeds. ``groups`` restricts to some group ids."""
    by_group = collections.defaultdict(list)
    for record, arrays in _scan(out_dir):
        if groups is None or record["group"] in groups:
            by_group[record["group"]].append((record, arrays))
    out = {}
    for gid, items in by_group.items():
        items.sort(key=lambda ra: ra[0]["config"]["seed"])
        steps = items[0][1]["steps"]
        items = [it for it in items if np.array_equal(it[1]["steps"], steps)]
        names = sorted({k for _, a in items for k in a if k.startswith("metric/")})
        metrics = {k[len("metric/"):]: np.stack([a[k] for _, a in items]) for k in names
                   if all(k in a for _, a in items)}
        record = items[0][0]
        info = record["info"]
        cfg = {k: v for k, v in record["config"].items() if k != "seed"}
        config = {"algorithm": info.get("algorithm"), "problem": info.get("problem"),
                  "topology": info.get("topology"), "n_workers": info.get("n_workers"),
                  "spectral_gap": info.get("spectral_gap"), "hparams": info.get("hparams"),
                  "steps": cfg["steps"], "eval_every": cfg["eval_every"], "run_config": cfg,
                  "group": gid, "runs": [r["id"] for r, _ in items], "f_star": info.get("f_star")}
        out[gid] = History(
            steps=steps, metrics=metrics, params=None,
            diverged=np.array([r["status"] == "diverged" for r, _ in items]),
            diverged_step=np.array([r["diverged_step"] for r, _ in items]),
            seeds=[r["config"]["seed"] for r, _ in items], config=config,
            # each record holds its whole call's seconds; a run's share is 1/group_size of them
            compile_seconds=sum(r["compile_seconds"] / r.get("group_size", 1) for r, _ in items),
            run_seconds=sum(r["run_seconds"] / r.get("group_size", 1) for r, _ in items))
    return out


# ---------------------------------------------------------------------------------------------
# the linear-speedup study

SPEEDUP_DEFAULTS = dict(
    dataset="digits",
    partition="iid",
    batch_size=1,
    l2=5e-2,
    algorithms=("dsgd",),
    learning_rate=0.5,
    decay_steps=100.0,
    ns=(1, 2, 4, 8, 16, 32),
    topologies=("ring", "torus", "complete"),
    steps=3000,
    eval_every=10,
    seeds=(0, 1, 2),
    target_factor=1.1,
    smooth_window=5,
    data_seed=0,
    reference="centralized_sgd",
    transient_tol=0.1,
    fit_tail=0.5,
)

_UNUSABLE_TOPOLOGIES = ("social", "erdos_renyi", "random_geometric")


@dataclasses.dataclass
class SpeedupResult:
    """What :func:`speedup_study` measured.

    Attributes:
      table: pandas DataFrame, one row per (algorithm, n, topology): spectral gap, steps to
        target, speedup, efficiency, fitted exponent with its 95% interval over seeds, transient,
        final suboptimality.
      histories: ``{(algorithm, n, topology): History}`` (seed-batched).
      reference: ``{n: History}`` of the centralized-SGD reference runs (n > 1).
      f_star: ``{n: f*}`` reference optimum of each n's objective (:func:`reference_optimum`).
      target: the suboptimality target ε.
      config: the settings used.
      files: paths written (when ``out_dir`` was given).
      store: the sweep result store of the runs (``None`` when it was temporary).
    """

    table: object
    histories: dict
    f_star: dict
    target: float
    config: dict
    files: list = dataclasses.field(default_factory=list)
    reference: dict = dataclasses.field(default_factory=dict)
    store: Optional[str] = None

    def format_table(self) -> str:
        t = self.table.copy()
        t["exponent [95% CI]"] = [f"{b:.3f} [{lo:.3f}, {hi:.3f}]" if np.isfinite(b) else "nan"
                                  for b, lo, hi in zip(t["rate_exponent"], t["rate_ci_low"], t["rate_ci_high"])]
        cols = ["algorithm", "n", "topology", "spectral_gap", "steps_to_target", "speedup", "efficiency",
                "exponent [95% CI]", "transient_steps", "final_suboptimality"]
        return t[cols].to_string(index=False, float_format=lambda v: f"{v:.4g}")


def _algorithm_tables(entries) -> list:
    """Study algorithms (names or config tables) -> [(label, table)]."""
    out = []
    for entry in entries:
        if isinstance(entry, str):
            out.append((entry, {"name": entry}))
        elif isinstance(entry, dict) and "name" in entry:
            extra = ", ".join(f"{k}={v}" for k, v in entry.items() if k not in ("name", "learning_rate"))
            out.append((f"{entry['name']}({extra})" if extra else entry["name"], dict(entry)))
        else:
            raise ValueError(f"algorithms must hold names or tables with a 'name'; got {entry!r}.")
    labels = [label for label, _ in out]
    if len(set(labels)) != len(labels):
        raise ValueError(f"algorithms must be distinct; got {labels}.")
    return out


def _check_study_config(cfg: dict) -> dict:
    if "algorithm" in cfg:  # the single-algorithm spelling of earlier versions
        cfg = dict(cfg)
        cfg["algorithms"] = (cfg.pop("algorithm"),)
    unknown = set(cfg) - set(SPEEDUP_DEFAULTS)
    if unknown:
        name = sorted(unknown)[0]
        raise ValueError(f"unknown speedup option {name!r}; valid: {sorted(SPEEDUP_DEFAULTS)}."
                         f"{_config._closest(name, SPEEDUP_DEFAULTS)}")
    algorithms = cfg["algorithms"]
    if isinstance(algorithms, (str, dict)):
        algorithms = (algorithms,)
    if not algorithms:
        raise ValueError("algorithms must name at least one algorithm, e.g. ('dsgd',).")
    ns = [int(n) for n in cfg["ns"]]
    if not ns or min(ns) < 1:
        raise ValueError(f"ns must be positive worker counts; got {cfg['ns']!r}.")
    if 1 not in ns:
        raise ValueError(f"ns must include 1 (speedup is measured against one worker); got {ns}.")
    topologies = tuple(cfg["topologies"])
    if not topologies:
        raise ValueError("topologies must name at least one topology, e.g. ('ring',).")
    for name in topologies:
        if name not in _topology.GENERATORS or name in _UNUSABLE_TOPOLOGIES:
            usable = [g for g in _topology.GENERATORS if g not in _UNUSABLE_TOPOLOGIES]
            raise ValueError(f"topology {name!r} is not usable in the speedup study; choose from "
                             f"{', '.join(usable)}.{_config._closest(name, usable)}")
    if cfg["steps"] % cfg["eval_every"]:
        raise ValueError(f"steps={cfg['steps']} must be a multiple of eval_every={cfg['eval_every']}.")
    if not cfg["target_factor"] >= 1.0:
        raise ValueError(f"target_factor must be >= 1; got {cfg['target_factor']!r}.")
    if not 0.0 < cfg["fit_tail"] <= 1.0:
        raise ValueError(f"fit_tail must be in (0, 1]; got {cfg['fit_tail']!r}.")
    return dict(cfg, algorithms=tuple(algorithms), ns=tuple(sorted(set(ns))), topologies=topologies,
                seeds=tuple(int(s) for s in cfg["seeds"]))


def speedup_plan(**overrides):
    """The sweep behind :func:`speedup_study` with these overrides of ``SPEEDUP_DEFAULTS``:
    ``(base, grid, keys)``, where ``keys`` maps ``(algorithm label, n, topology)`` (label
    ``"reference"`` for centralized SGD) to a group id, so ``ds.sweep(base, grid, out_dir)`` runs (or
    resumes, or with ``shard=`` splits) exactly the study's runs."""
    return _speedup_plan(_check_study_config({**SPEEDUP_DEFAULTS, **overrides}))


def _speedup_plan(cfg: dict):
    lr0, decay = float(cfg["learning_rate"]), float(cfg["decay_steps"])
    lr = {"schedule": "inverse_time", "init_value": lr0, "decay_steps": decay} if decay > 0 else lr0
    problem = {"name": "logistic_regression", "dataset": cfg["dataset"], "partition": cfg["partition"],
               "batch_size": cfg["batch_size"], "l2": cfg["l2"], "seed": cfg["data_seed"]}
    algos = [(label, {**table, "learning_rate": lr}) for label, table in _algorithm_tables(cfg["algorithms"])]
    base = {"algorithm": algos[0][1], "problem": problem, "topology": cfg["topologies"][0], "n_workers": 1,
            "steps": int(cfg["steps"]), "eval_every": int(cfg["eval_every"]), "seeds": list(cfg["seeds"])}
    many = [n for n in cfg["ns"] if n > 1]
    grid, points = [], []
    for label, table in algos:
        points.append((label, table, 1, cfg["topologies"][0]))
        points += [(label, table, n, t) for n in many for t in cfg["topologies"]]
    if cfg["reference"] and many:
        # Centralized SGD is run as D-SGD on the complete graph: its Metropolis W is exactly J, so
        # X_{t+1} = W (X_t − η G_t) = J (X_t − η G_t) is the same recursion (ALGORITHMS.md section 3),
        # and these runs coincide with (and are stored once with) the complete-graph D-SGD rows.
        name = "dsgd" if cfg["reference"] == "centralized_sgd" else cfg["reference"]
        ref = {"name": name, "learning_rate": lr}
        points += [("reference", ref, n, "complete") for n in many]
    keys = {}
    for label, table, n, topo in points:
        grid.append({"algorithm": [table], "n_workers": [n], "topology": [topo]})
        one = dict(base, algorithm=table, n_workers=n, topology=topo)
        configs = expand(one)
        keys[(label, n, topo)] = _group_id(configs[0])
    return base, grid, keys


def reference_optimum(problem) -> float:
    """``f* = min f`` of a (convex) problem, for suboptimality curves (``problems.optimum``)."""
    from .problems import optimum

    return optimum(problem)[1]


def speedup_study(*, out_dir: Optional[str] = None, progress: bool = True, verbose: bool = False,
                  rerun: bool = False, **overrides) -> SpeedupResult:
    """Run the linear-speedup study as a sweep; optionally write ``speedup.csv``,
    ``speedup.json``, ``convergence.png``, ``speedup.png``, ``error_vs_nt.png`` and
    ``topologies.png`` to ``out_dir``, with the runs stored (resumable) in ``out_dir/runs``.

    Any key of ``SPEEDUP_DEFAULTS`` can be overridden, e.g. ``ns=(1, 4, 16)``, ``steps=2000``,
    ``algorithms=("dsgd", "gradient_tracking")`` (names, or config tables such as
    ``{"name": "choco_sgd", "gamma": 0.4, "compressor": {"name": "top_k", "fraction": 0.1}}``; the
    study supplies the learning rate).

    Example:
      >>> import decsim as ds
      >>> res = ds.speedup_study(ns=(1, 2), topologies=("ring",), steps=100, seeds=(0,),
      ...                        progress=False)
      >>> res.table[["n", "topology", "speedup"]].shape
      (2, 3)
    """
    import pandas as pd

    start = time.perf_counter()
    cfg = _check_study_config({**SPEEDUP_DEFAULTS, **overrides})
    base, grid, keys = _speedup_plan(cfg)
    tmp = None
    if out_dir is not None:
        store = os.path.join(out_dir, "runs")
    else:
        tmp = tempfile.TemporaryDirectory(prefix="decsim-speedup-")
        store = tmp.name
    try:
        report = sweep(base, grid, store, progress=progress, rerun=rerun)
        loaded = load_histories(store, groups=set(keys.values()))
    finally:
        if tmp is not None:
            tmp.cleanup()
    missing = [k for k, g in keys.items() if g not in loaded]
    if missing:
        raise RuntimeError(f"the speedup study's store lacks runs {missing[:3]}...; rerun with rerun=True.")
    if verbose:
        print(f"  {report.ran} runs computed, {report.skipped} found in {store}")

    f_star, histories, reference, curves = {}, {}, {}, {}
    for (label, n, topo), gid in keys.items():
        if n not in f_star:
            f_star[n] = reference_optimum(_config.build_problem(dict(base, n_workers=n)))
        hist = loaded[gid]
        curve = np.asarray(hist.metrics["loss"]) - f_star[n]
        if label == "reference":
            reference[n] = hist
            curves[("reference", n)] = curve
        else:
            histories[(label, n, topo)] = hist
            curves[(label, n, topo)] = curve
    labels = [label for label, _ in _algorithm_tables(cfg["algorithms"])]
    first_topo = cfg["topologies"][0]
    for label in labels:  # n = 1: every topology is the single worker; share its run
        for topo in cfg["topologies"][1:]:
            histories[(label, 1, topo)] = histories[(label, 1, first_topo)]
            curves[(label, 1, topo)] = curves[(label, 1, first_topo)]

    steps = histories[(labels[0], 1, first_topo)].steps
    w = cfg["smooth_window"]
    base_curve = theory.smooth(np.nanmean(curves[(labels[0], 1, first_topo)], axis=0), w)
    target = float(cfg["target_factor"] * base_curve[-1])
    rows = []
    for label in labels:
        T1 = theory.steps_to_target(steps, curves[(label, 1, first_topo)], target, window=w)
        for n in cfg["ns"]:
            for topo in cfg["topologies"]:
                hist, curve = histories[(label, n, topo)], curves[(label, n, topo)]
                Tn = theory.steps_to_target(steps, curve, target, window=w)
                fit = theory.fit_rate(n * steps.astype(np.float64), curve, tail=cfg["fit_tail"])
                if n == 1:
                    transient = 0.0  # one worker is centralized SGD
                elif ("reference", n) in curves:
                    transient = theory.transient_time(steps, curve, curves[("reference", n)],
                                                      tol=cfg["transient_tol"], window=w)
                else:
                    transient = float("nan")
                final = theory.smooth(np.nanmean(curve, axis=0), w)[-1]
                rows.append(dict(algorithm=label, n=n, topology=topo, graph=hist.config["topology"],
                                 spectral_gap=hist.config["spectral_gap"], steps_to_target=Tn,
                                 speedup=theory.speedup(T1, Tn), efficiency=theory.efficiency(T1, Tn, n),
                                 rate_exponent=fit.b, rate_ci_low=fit.ci_low, rate_ci_high=fit.ci_high,
                                 transient_steps=transient, final_suboptimality=float(final),
                                 f_star=f_star[n], diverged=bool(np.any(hist.diverged))))
    order = {name: i for i, name in enumerate(cfg["topologies"])}
    alg_order = {name: i for i, name in enumerate(labels)}
    table = pd.DataFrame(rows)
    table = table.assign(_a=table["algorithm"].map(alg_order), _t=table["topology"].map(order))
    table = table.sort_values(["_a", "_t", "n"]).drop(columns=["_a", "_t"]).reset_index(drop=True)
    result = SpeedupResult(table=table, histories=histories, f_star=f_star, target=target,
                           config={**cfg, "seconds": time.perf_counter() - start,
                                   "runs_computed": report.ran, "runs_reused": report.skipped},
                           reference=reference, store=store if tmp is None else None)
    if out_dir is not None:
        result.files = write_speedup(result, out_dir)
    return result


def write_speedup(result: SpeedupResult, out_dir: str) -> list:
    """Write the table (CSV), the settings (JSON) and the figures (PNG) to ``out_dir``."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from . import plot

    os.makedirs(out_dir, exist_ok=True)
    files = []
    path = os.path.join(out_dir, "speedup.csv")
    result.table.to_csv(path, index=False)
    files.append(path)
    path = os.path.join(out_dir, "speedup.json")
    cfg = {k: (list(v) if isinstance(v, tuple) else v) for k, v in result.config.items()}
    with open(path, "w") as fh:
        json.dump(_json_safe({"config": cfg, "target": result.target,
                              "f_star": {str(k): v for k, v in result.f_star.items()},
                              "store": result.store}), fh, indent=2)
    files.append(path)

    topologies = list(result.config["topologies"])
    labels = list(dict.fromkeys(k[0] for k in result.histories))
    fig, axes = plt.subplots(len(labels), len(topologies), figsize=(4.6 * len(topologies), 3.8 * len(labels)),
                             sharey=True, squeeze=False)
    for row, label in zip(axes, labels):
        for ax, name in zip(row, topologies):
            keys = sorted(k for k in result.histories if k[0] == label and k[2] == name)
            hists = [_with_suboptimality(result.histories[k], result.f_star[k[1]]) for k in keys]
            plot.convergence(hists, y="suboptimality", labels=[f"n={k[1]}" for k in keys], ax=ax,
                             title=f"{label} · {name}" if len(labels) > 1 else name)
            ax.axhline(result.target, color="k", lw=0.8, ls=":")
    fig.suptitle(f"{', '.join(labels)} on {result.config['dataset']}: f(x̄) − f* (mean, min–max over "
                 f"{len(result.config['seeds'])} seeds); dotted: target ε")
    fig.tight_layout()
    path = os.path.join(out_dir, "convergence.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    files.append(path)

    fig = plot.speedup(result.table, title=f"linear speedup, ε = {result.target:.3g}")
    path = os.path.join(out_dir, "speedup.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    files.append(path)

    # error against n·t: with linear speedup the curves of all n collapse onto one line
    fig, axes = plt.subplots(len(labels), len(topologies), figsize=(4.6 * len(topologies), 3.8 * len(labels)),
                             sharey=True, squeeze=False)
    for row, label in zip(axes, labels):
        for ax, name in zip(row, topologies):
            keys = sorted(k for k in result.histories if k[0] == label and k[2] == name)
            curves = {k[1]: (result.histories[k].steps,
                             np.asarray(result.histories[k].metrics["loss"]) - result.f_star[k[1]])
                      for k in keys}
            plot.error_vs_nt(curves, reference_exponent=-1.0, tail=result.config["fit_tail"], ax=ax,
                             title=f"{label} · {name}" if len(labels) > 1 else name,
                             ylabel="f(x̄) − f*")
    fig.tight_layout()
    path = os.path.join(out_dir, "error_vs_nt.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    files.append(path)

    n_draw = max(n for n in result.config["ns"] if n <= 16)
    if n_draw > 1:
        fig, axes = plt.subplots(1, len(topologies), figsize=(3.6 * len(topologies), 3.8), squeeze=False)
        for ax, name in zip(axes[0], topologies):
            plot.topology(_topology.by_name(name, n_draw), ax=ax)
        fig.tight_layout()
        path = os.path.join(out_dir, "topologies.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        files.append(path)
    return files


def _with_suboptimality(hist, f_star):
    metrics = dict(hist.metrics, suboptimality=np.asarray(hist.metrics["loss"]) - f_star)
    return dataclasses.replace(hist, metrics=metrics)


# ---------------------------------------------------------------------------------------------
# `ds.sweep(...)` calls sweep() while `ds.sweep.load_results` etc. stay reachable: the module is
# callable (module __class__ assignment, Python reference 3.3.2.1, "Customizing module attribute
# access"), so the function and its module share the name without shadowing one another.


class _CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs):
        return sweep(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

__all__ = ["sweep", "sweep_file", "expand", "plan", "parse_shard", "load_results", "load_histories",
           "read_run", "write_run", "is_complete", "PlannedRun", "SweepReport", "SPEEDUP_DEFAULTS",
           "SpeedupResult", "speedup_study", "speedup_plan", "write_speedup"]
