"""Fair comparisons of algorithms (``decsim compare``, ``ds.compare``;
docs/reference/comparison.md).

Every algorithm gets the same treatment, so that a difference in the table is a difference of
the algorithms and not of how carefully each was tuned:

1. **Tuning.** Each algorithm's numeric hyperparameters run on a grid over the tuning seeds,
   all points and seeds of one algorithm as one vmapped program (one sweep batch). The default
   grid is the learning rate only: ``grid_points`` values ``c · 2^k``, ``k = −(m−1)/2 .. (m−1)/2``
   (``m = grid_points``, 7 by default: ``c/8 .. 8c``), centred on the algorithm table's own
   ``learning_rate`` when it gives one number, else on ``[compare] learning_rate`` (0.1). A list
   in the algorithm table (``learning_rate = [...]``, ``gamma = [...]``, any numeric
   hyperparameter) is that axis of the grid. The consensus step ``gamma`` of an algorithm that
   takes a ``compressor`` comes from :func:`decsim.algorithms.tune_gamma` on the run's topology,
   compressor and model size unless a value or list is given (``gamma = "tune"`` asks for it).
2. **Choice.** The score of a run is its final metric (default ``loss``), the mean of its last
   ``ceil(tail · E)`` evaluations (``tail = 0.1``, E evaluations): a diverged run scores +inf.
   The best point minimises the mean score over the tuning seeds. A best value at the edge of
   its axis gives a :class:`CompareWarning` that names the extension to try.
3. **Evaluation.** The chosen settings run on the evaluation seeds (disjoint from the tuning
   seeds), again one vmapped program per algorithm.
4. **Report** (:mod:`decsim.study.compare_report`): per algorithm the chosen hyperparameters,
   the final metrics (mean and 95% t-interval over the evaluation seeds) and the cost to reach
   the target (default ``"worst"``: the largest final mean of the metric among the algorithms)
   in steps, gradient evaluations, gossip rounds, bits and ``sim_time`` (when the runs record
   it), with the number of seeds that reached it.

All runs live in the resumable sweep store ``out_dir/runs``; tuned γ values are kept in
``out_dir/gamma.json``, so an interrupted comparison resumes without redoing finished work.
``[base]`` is passed to the run configs as it is (e.g. a ``time_model`` table).

Names: :func:`compare`, :class:`CompareResult`, :class:`CompareWarning`, :func:`best_point`, and
re-exported from :mod:`decsim.study.compare_spec` (checking a spec: :func:`compare_plan`,
:data:`COMPARE_DEFAULTS`, :class:`Entry`, :func:`default_grid`) and
:mod:`decsim.study.compare_report` (:func:`tail_score`; the tables and figures).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import time
import warnings
from typing import Optional

import numpy as np

from .. import config as _config
from .._checks import is_number
from .compare_report import markdown_table, summarise, tail_score, write_compare
from .compare_spec import COMPARE_DEFAULTS, Entry, compare_plan, default_grid
from .grid import digest, plan
from .store import load_histories
from .sweep import sweep

__all__ = ["compare", "compare_plan", "CompareResult", "CompareWarning", "COMPARE_DEFAULTS",
           "Entry", "default_grid", "tail_score", "best_point"]


class CompareWarning(UserWarning):
    """A comparison result to look at: a best value at the edge of its grid, or an algorithm
    whose every setting diverged."""


@dataclasses.dataclass
class CompareResult:
    """What :func:`compare` found.

    Attributes:
      table: pandas DataFrame, one row per algorithm: chosen hyperparameters, final metrics
        (``<m>``, ``<m>_ci_low``, ``<m>_ci_high``), target, ``reached`` (seeds that reached it)
        and the costs to reach it (``<cost>_to_target`` with its interval).
      tuning: pandas DataFrame, one row per grid point: its values, the score of each tuning
        seed, the mean score and whether it was chosen.
      chosen: ``{label: {hyperparameter: value}}`` (tuned γ included).
      target: the target value of the metric.
      warnings: the :class:`CompareWarning` messages.
      files: ``{kind: path}`` of what was written (csv, markdown, latex, json, figures).
      store: the sweep store of every run.
      settings: the ``[compare]`` settings used.
      runs_computed, runs_reused: runs computed now / found finished in the store.
      histories: ``{label: History}`` of the evaluation runs (seeds stacked).
    """

    table: object
    tuning: object
    chosen: dict
    target: float
    warnings: list
    files: dict
    store: str
    settings: dict
    runs_computed: int = 0
    runs_reused: int = 0
    histories: dict = dataclasses.field(default_factory=dict)

    def markdown(self) -> str:
        """The summary table in Markdown."""
        return markdown_table(self)


# ---------------------------------------------------------------------------------------------
# scores and choices


def best_point(points: list, scores) -> tuple:
    """``(index, diverged_all)``: the point with the smallest mean score over seeds (the first
    on ties); ``scores`` is ``[point][seed]``. All +inf -> ``(0, True)``."""
    means = [float(np.mean(s)) for s in scores]
    if not np.isfinite(means).any():
        return 0, True
    return int(np.argmin(means)), False


def _edge_warnings(entry: Entry, point: dict) -> list:
    out = []
    for k, values in entry.axes.items():
        if len(values) < 2 or point[k] not in (values[0], values[-1]):
            continue
        low = point[k] == values[0]
        v, near = (values[0], values[1]) if low else (values[-1], values[-2])
        step = v / near if v > 0 and near > 0 else None
        suggest = v * step if step else v + (v - near)
        out.append(f"{entry.label}: the best {k} = {v:g} is the {'smallest' if low else 'largest'}"
                   f" value of its grid [{values[0]:g} .. {values[-1]:g}]; extend the grid "
                   f"{'down' if low else 'up'} (e.g. add {suggest:g}) and rerun.")
    return out


# ---------------------------------------------------------------------------------------------
# running


def _probe_config(base: dict, table: dict, seed: int) -> dict:
    return dict(base, algorithm=table, seed=seed)


def _tuned_gammas(entries, base, out_dir) -> dict:
    """``{label: γ}`` for the entries that tune γ, from ``out_dir/gamma.json`` when stored."""
    from .. import tree
    from .._values import build_value
    from ..algorithms import tune_gamma

    path = os.path.join(out_dir, "gamma.json")
    try:
        with open(path) as fh:
            cache = json.load(fh)
        cache = cache if isinstance(cache, dict) else {}
    except (OSError, ValueError):
        cache = {}
    out = {}
    for e in entries:
        if not e.tune_gamma:
            continue
        table = dict(e.table, gamma=0.5, **{k: v[0] for k, v in e.axes.items()})
        built = _config.build(_probe_config(base, table, 0))
        c = built.config
        sizes = [int(s) for s in tree.leaf_sizes(built.problem.params0)]
        key = digest([c["topology"], c["n_workers"], c["algorithm"]["compressor"], sizes])
        value = cache.get(key)
        if not (is_number(value) and 0 < value <= 1):
            value = float(tune_gamma(built.topology, build_value(c["algorithm"]["compressor"]),
                                     sizes))
            cache[key] = value
        out[e.label] = float(value)
    if out:
        os.makedirs(out_dir, exist_ok=True)
        tmp = path + ".tmp"
        with open(tmp, "w") as fh:
            json.dump(cache, fh, indent=1, sort_keys=True)
        os.replace(tmp, path)
    return out


def _points(entry: Entry) -> list:
    names = sorted(entry.axes)
    return [dict(zip(names, vs)) for vs in itertools.product(*(entry.axes[k] for k in names))]


def _select(hist, ids: list) -> Optional[object]:
    """The History of a group restricted to the runs ``ids`` (in that order), or ``None`` if one
    is missing."""
    runs = hist.config["runs"]
    if not set(ids) <= set(runs):
        return None
    idx = [runs.index(i) for i in ids]
    metrics = {k: np.asarray(v)[idx] for k, v in hist.metrics.items()}
    f_star = hist.config.get("f_star")
    if f_star is not None and "loss" in metrics:
        metrics["suboptimality"] = metrics["loss"] - float(f_star)
    return dataclasses.replace(
        hist, metrics=metrics, diverged=np.asarray(hist.diverged)[idx],
        diverged_step=np.asarray(hist.diverged_step)[idx],
        seeds=[hist.seeds[i] for i in idx], config=dict(hist.config, runs=list(ids)))


def _run_phase(base, tables: list, seeds, store, progress) -> tuple:
    """Sweep every table over ``seeds`` (one vmapped batch per algorithm structure); returns
    ``([History per table], report)``."""
    base = dict(base, seeds=list(seeds))
    report = sweep(base, [{"algorithm": tables}], store, progress=progress)
    planned = [plan(dict(base, algorithm=t)) for t in tables]
    loaded = load_histories(store, groups={p[0].group for p in planned})
    hists = []
    for p in planned:
        hist = loaded.get(p[0].group)
        hist = None if hist is None else _select(hist, [r.id for r in p])
        if hist is None:
            raise RuntimeError(f"the store {store} lacks runs of group {p[0].group} after the "
                               f"sweep (damaged files?); run the comparison again.")
        hists.append(hist)
    return hists, report


def _metric(hist, name: str):
    if name not in hist.metrics:
        raise ValueError(f"[compare] metric {name!r} is not recorded by these runs; recorded: "
                         f"{', '.join(sorted(hist.metrics))}.")
    return np.asarray(hist.metrics[name], dtype=np.float64)


def compare(spec, out_dir: str = "decsim-compare", *, progress: bool = True) -> CompareResult:
    """Tune every algorithm of ``spec`` on the tuning seeds, run the chosen settings on the
    evaluation seeds and write the report (CSV, Markdown, LaTeX, JSON, figures) to ``out_dir``.

    Args:
      spec: a dict with ``compare`` (settings, see :data:`COMPARE_DEFAULTS`), ``base`` (a run
        config without algorithm and seeds) and ``algorithm`` (a list of algorithm tables, lists
        for the grid axes), or the path of such a TOML file.
      out_dir: where the report and the run store (``out_dir/runs``) go; rerunning resumes.
      progress: progress bars over the runs.

    Returns:
      A :class:`CompareResult`.

    Example:
      >>> import tempfile, decsim as ds
      >>> spec = {"compare": {"tuning_seeds": [0], "eval_seeds": [1, 2], "grid_points": 3},
      ...         "base": {"problem": {"name": "quadratic", "dim": 3, "noise": 0.1},
      ...                  "topology": "ring", "n_workers": 4, "steps": 40, "eval_every": 10},
      ...         "algorithm": [{"name": "dsgd", "learning_rate": 0.2},
      ...                       {"name": "gradient_tracking", "learning_rate": 0.2}]}
      >>> res = ds.compare(spec, tempfile.mkdtemp(), progress=False)
      >>> sorted(res.chosen), res.runs_computed
      (['dsgd', 'gradient_tracking'], 10)
    """
    start = time.perf_counter()
    settings, base, entries = compare_plan(spec)
    store = os.path.join(out_dir, "runs")
    # every run config of the tuning grid is checked (and every object built) before compiling
    for e in entries:
        gamma = {"gamma": 0.5} if e.tune_gamma else {}
        for j, p in enumerate(_points(e)):
            cfg = _probe_config(base, dict(e.table, **p, **gamma), settings["tuning_seeds"][0])
            if j == 0:
                _config.build(cfg)
            else:
                _config.build_algorithm(cfg)
    gammas = _tuned_gammas(entries, base, out_dir)
    tables, owners = [], []
    for e in entries:
        for p in _points(e):
            t = dict(e.table, **p)
            if e.tune_gamma:
                t["gamma"] = gammas[e.label]
            tables.append(t)
            owners.append((e, p))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        tuned, rep1 = _run_phase(base, tables, settings["tuning_seeds"], store, progress)

    rows, chosen, chosen_tables, notes = [], {}, [], []
    for e in entries:
        idx = [i for i, (o, _) in enumerate(owners) if o is e]
        scores = [[tail_score(row, settings["tail"]) for row in _metric(tuned[i], settings[
            "metric"])] for i in idx]
        best, none_ok = best_point([owners[i][1] for i in idx], scores)
        point = owners[idx[best]][1]
        for j, i in enumerate(idx):
            rows.append(dict(algorithm=e.label, **owners[i][1], **{
                f"score_seed_{s}": v for s, v in zip(settings["tuning_seeds"], scores[j])},
                score=float(np.mean(scores[j])), chosen=j == best))
        if none_ok:
            notes.append(f"{e.label}: every setting of its grid diverged on the tuning seeds; "
                         f"extend the grid down (smaller step sizes) and rerun.")
        else:
            notes.extend(_edge_warnings(e, point))
        chosen[e.label] = dict(point, **({"gamma": gammas[e.label]} if e.tune_gamma else {}))
        chosen_tables.append(tables[idx[best]])
    for note in notes:
        warnings.warn(f"decsim compare: {note}", CompareWarning, stacklevel=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        evals, rep2 = _run_phase(base, chosen_tables, settings["eval_seeds"], store, progress)

    import pandas as pd

    histories = {e.label: h for e, h in zip(entries, evals)}
    table, target = summarise(histories, chosen, settings)
    result = CompareResult(
        table=table, tuning=pd.DataFrame(rows), chosen=chosen, target=target, warnings=notes,
        files={}, store=store, settings=dict(settings, seconds=time.perf_counter() - start),
        runs_computed=rep1.ran + rep2.ran, runs_reused=rep1.skipped + rep2.skipped,
        histories=histories)
    result.files = write_compare(result, out_dir)
    return result
