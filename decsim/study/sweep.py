"""Sweeps: every run of a grid, grouped into vmapped programs, stored in a resumable result store.

:func:`sweep` takes a base run config (see :mod:`decsim.config`) and a grid of dotted paths to
lists of values (:mod:`decsim.study.grid`), runs the product, and writes every finished run into
``out_dir`` (:mod:`decsim.study.store`):

- **grouping**: runs that differ only in their seed and in the values of numeric
  hyperparameters (learning rate, gamma, ...) are one :class:`Batch`, one ``ds.run(...,
  seeds=[...], hparams={name: [one value per run]})`` call: one vmapped program. Batches that
  differ only in data of equal shape (the graph of a topology with the same n, a data seed) reuse
  that compiled program, because the runner compiles per algorithm *structure* and passes the
  numbers as arguments (``decsim.runner.trace_count()`` stays put). Batches run in an order that
  keeps equal structures together.
- **resume**: finished runs found in the store are not rerun; rerunning an interrupted sweep
  redoes nothing that finished. A stored run that fails its checks (damaged, edited) is
  recomputed with a warning, and so is a stored run of a user problem (a constructor from
  outside ``decsim`` registered in ``decsim.problems.REGISTRY``) whose code or data changed
  since it was stored (its :func:`decsim.study.store.problem_fingerprint` differs); the
  temporary files of killed writes are removed first (:func:`decsim.study.store.tidy`).
  Several sweeps may write into one folder at once.
- **divergence**: a run that produced NaN/inf is stored with ``status = "diverged"`` and the
  sweep goes on.
- **sharding**: ``shard=(i, k)`` (or ``"i/k"``) runs a deterministic 1/k of the groups
  (:func:`decsim.study.grid.plan`).
"""

from __future__ import annotations

import collections
import os
import time
import warnings
from typing import NamedTuple, Optional

import numpy as np

from .. import config as _config
from .._run_checks import check_graph_kind
from ..runner import run
from .grid import PlannedRun, digest, plan
from .store import (
    BadRecord,
    StoreWarning,
    problem_facts,
    problem_fingerprint,
    tidy,
    verify_run,
    write_run,
)

__all__ = ["sweep", "sweep_file", "SweepReport", "Batch"]


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


class Batch(NamedTuple):
    """Runs that are one ``ds.run`` call (one vmapped program), with the objects it needs.

    Attributes:
      structure: the functions of the batch's algorithm and its hyperparameter names: batches
        with equal ``(structure, n_workers)`` share one compiled program.
      n_workers: the number of workers.
      runs: the :class:`decsim.study.PlannedRun` of the call, one per seed and hparams value.
      algorithm: the algorithm built from the first run's config.
      hparams: ``{name: [one value per run]}`` of the numeric hyperparameters (may be empty).
      problem: the built problem.
      topology: the built topology.
    """

    structure: tuple
    n_workers: int
    runs: list
    algorithm: object
    hparams: dict
    problem: object
    topology: object


# ---------------------------------------------------------------------------------------------
# which runs share a call


def _structure(algorithm) -> tuple:
    """The functions a compiled program closes over: factories memoize them per structure, so
    runs whose algorithms differ only in ``hparams`` values have equal keys."""
    return (algorithm.init, algorithm.step, algorithm.params,
            getattr(algorithm, "extra_metrics", None), tuple(sorted(algorithm.hparams or {})))


def _problem_key(c: dict) -> str:
    """The problems of two runs are the same object when these keys are equal."""
    return digest([c["problem"], c["n_workers"]])


def _build_batches(pending: list, problems: Optional[dict] = None) -> list:
    """Every :class:`Batch` of the pending runs, built (and checked) before anything compiles.

    A batch holds the runs whose configs differ at most in the seed and in the values of the
    algorithm's numeric hyperparameters (``build_algorithm(config).hparams``): their algorithms
    have the very same functions, so they are one vmapped call with ``hparams={name: [one value
    per run]}``. Batches of equal structure and size (one compiled program) run next to each
    other, in first-seen order. ``problems`` (``{problem key: Problem}``) holds problems
    built already and gets those built here.
    """
    problems = {} if problems is None else problems
    topologies, groups = {}, collections.OrderedDict()
    for r in pending:
        c = r.config
        algo = _config.build_algorithm(c)  # every run's own values go through the checks
        pkey = _problem_key(c)
        tkey = digest([c["topology"], c["n_workers"]])
        if pkey not in problems:
            problems[pkey] = _config.build_problem(c)
        if tkey not in topologies:
            topologies[tkey] = _config.build_topology(c)
        check_graph_kind(algo, topologies[tkey])
        validate = getattr(algo, "validate", None)
        if validate is not None:
            validate(topologies[tkey])
        rest = digest({k: v for k, v in c.items() if k not in ("seed", "algorithm")})
        key = (_structure(algo), algo.name, rest)
        groups.setdefault(key, []).append((r, algo, pkey, tkey))
    batches = []
    for (structure, _, _), members in groups.items():
        runs = [m[0] for m in members]
        algo, pkey, tkey = members[0][1], members[0][2], members[0][3]
        hparams = {k: [m[1].hparams[k] for m in members] for k in sorted(algo.hparams or {})}
        batches.append(Batch(structure, runs[0].config["n_workers"], runs, algo, hparams,
                             problems[pkey], topologies[tkey]))
    first = {}
    for j, b in enumerate(batches):
        first.setdefault((b.structure, b.n_workers), j)
    batches.sort(key=lambda b: first[(b.structure, b.n_workers)])
    return batches


def _run_batch(batch: Batch, out_dir: str, save_params: bool,
               fingerprint: Optional[str] = None) -> int:
    """One ``ds.run`` call for a batch, each run stored (with its problem's ``fingerprint``);
    returns how many diverged."""
    c = batch.runs[0].config
    seeds = [r.config["seed"] for r in batch.runs]
    hist = run(batch.algorithm, batch.problem, batch.topology, c["steps"],
               eval_every=c["eval_every"], seeds=seeds, hparams=batch.hparams or None,
               progress=False, time_model=c.get("time_model"))
    facts = problem_facts(batch.problem)
    facts.update(lam=float(batch.topology.lam), p=float(batch.topology.p))
    for s, r in enumerate(batch.runs):
        write_run(out_dir, r, hist, s, facts=facts, save_params=save_params,
                  group_size=len(batch.runs), problem_sha256=fingerprint)
    return int(np.sum(np.atleast_1d(hist.diverged)))


def _is_user_problem(c: dict) -> bool:
    """Whether a run's problem constructor comes from outside decsim (a user's, registered in
    ``decsim.problems.REGISTRY``): its stored runs are reused only with an equal fingerprint."""
    fn = _config.problems().get(c["problem"]["name"])
    module = getattr(fn, "__module__", None) or ""
    return not (module == "decsim" or module.startswith("decsim."))


def _fingerprint_of(problem, fingerprints: dict) -> str:
    """The :func:`problem_fingerprint` of a built problem, computed once per problem object."""
    key = id(problem)
    if key not in fingerprints:
        fingerprints[key] = (problem_fingerprint(problem), problem)  # the problem keeps its id
    return fingerprints[key][0]


def _is_reusable(out_dir: str, r: PlannedRun, problems: dict, fingerprints: dict) -> bool:
    """Whether the store holds run ``r`` finished and intact, computed by the current version of
    its problem where that is a user's; a damaged or outdated run is reported with a warning."""
    try:
        record, _ = verify_run(out_dir, r.id, arrays=False)
    except FileNotFoundError:
        return False
    except BadRecord as err:
        warnings.warn(f"decsim sweep: recomputing run {r.id}: {err}", StoreWarning, stacklevel=3)
        return False
    if _is_user_problem(r.config):
        pkey = _problem_key(r.config)
        if pkey not in problems:
            problems[pkey] = _config.build_problem(r.config)
        if record.get("problem_sha256") != _fingerprint_of(problems[pkey], fingerprints):
            warnings.warn(f"decsim sweep: recomputing run {r.id}: problem "
                          f"{r.config['problem']['name']!r} is not the one it was computed "
                          f"with (its code or data changed since)", StoreWarning, stacklevel=3)
            return False
    return True


def sweep(base: dict, grid=None, out_dir: str = "decsim-sweep", *, shard=None,
          progress: bool = True, rerun: bool = False, save_params: bool = False) -> SweepReport:
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
      A :class:`SweepReport`. Read the results with :func:`decsim.study.load_results`.

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
    planned: list[PlannedRun] = plan(base, grid, shard=shard)
    tidy(out_dir)
    problems, fingerprints, pending = {}, {}, []
    for r in planned:
        if rerun or not _is_reusable(out_dir, r, problems, fingerprints):
            pending.append(r)
    batches = _build_batches(pending, problems)  # any error is raised before the first compilation
    os.makedirs(out_dir, exist_ok=True)

    bar = None
    if progress and pending:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(pending), desc="sweep", unit="run")
    diverged = 0
    try:
        for batch in batches:
            diverged += _run_batch(batch, out_dir, save_params,
                                   _fingerprint_of(batch.problem, fingerprints))
            if bar is not None:
                bar.update(len(batch.runs))
    finally:
        if bar is not None:
            bar.close()
    return SweepReport(out_dir=out_dir, total=len(planned), skipped=len(planned) - len(pending),
                       ran=len(pending), diverged=diverged, run_ids=[r.id for r in planned],
                       seconds=time.perf_counter() - start)


def sweep_file(path: str, out_dir: Optional[str] = None, **kwargs) -> SweepReport:
    """Run a sweep described by a TOML file with a ``[base]`` table (a run config) and a ``[grid]``
    table (dotted paths to lists) or ``[[grid]]`` array of tables (union of products)."""
    spec = _config.load(path)
    unknown = set(spec) - {"base", "grid"}
    if unknown or "base" not in spec:
        raise ValueError(f"{path}: a sweep file has a [base] table (a run config) and a [grid] "
                         f"table; got top-level keys {sorted(spec)}.")
    if out_dir is None:
        out_dir = os.path.splitext(os.path.basename(path))[0] + "-results"
    return sweep(spec["base"], spec.get("grid"), out_dir, **kwargs)
