"""The linear-speedup study (docs/theory.md; ``decsim speedup``), built on sweeps.

The study is a sweep: algorithms x worker counts x topologies, each a vmapped program over the
seeds, plus centralized SGD at each n as the reference for the transient. It measures
``T(ε, n)``, the first step at which the seed-averaged, smoothed suboptimality ``f(x̄) − f*``
reaches the target ``ε``; ``speedup = T(ε, 1) / T(ε, n)``; ``efficiency = speedup / n``; the
exponent ``b`` of ``log(f − f*) = a + b log(n t)`` on the tail of each curve with a 95% interval
over seeds; and the transient, the first step from which the smoothed error stays within 10% of
centralized SGD's with the same n.

Embedded defaults (``SPEEDUP_DEFAULTS``): softmax regression on scikit-learn's digits (1437
training images split iid, batch 1 per worker, l2 = 5e-2), D-SGD with the decaying step
``η_t = 0.5 / (1 + t/100)``, 3000 steps, 3 seeds, ring, torus and complete graphs. With a step
``c / (t + t0)`` and ``2 c μ > 1`` (here ``c = 50`` and ``μ >= l2 = 0.05``), SGD on a strongly
convex problem ends in the noise-dominated regime where the error falls like
``c² σ² / ((2cμ − 1) n t)``, so ``T(ε, n) ∝ 1/n`` and the fitted exponent of ``f − f*`` against
``n t`` is −1: the regime in which linear speedup is a measurable statement. (With ``2cμ < 1``
the error falls like ``t^(−2cμ)`` and the measured speedup is super-linear, ``n^(1/(2cμ))``,
which is why the default regularization is not smaller. The −1/2 of docs/theory.md is
the exponent of the average squared gradient norm with a constant step ``η ∝ sqrt(n/T)``,
measured in ``notebooks/01_linear_speedup.ipynb`` and ``tests/test_theory.py``.) ``ε`` is
``target_factor`` times the final suboptimality of the single worker, so every n has to reach
what one worker reaches at the end.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time
from typing import Optional

import numpy as np

from .. import config as _config
from .. import theory
from .. import topology as _topology
from .._checks import closest
from .grid import expand, group_id
from .store import json_safe, load_histories
from .sweep import sweep

__all__ = ["SPEEDUP_DEFAULTS", "SpeedupResult", "speedup_plan", "speedup_study", "write_speedup",
           "reference_optimum"]

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
        t["exponent [95% CI]"] = [
            f"{b:.3f} [{lo:.3f}, {hi:.3f}]" if np.isfinite(b) else "nan"
            for b, lo, hi in zip(t["rate_exponent"], t["rate_ci_low"], t["rate_ci_high"])]
        cols = ["algorithm", "n", "topology", "spectral_gap", "steps_to_target", "speedup",
                "efficiency", "exponent [95% CI]", "transient_steps", "final_suboptimality"]
        return t[cols].to_string(index=False, float_format=lambda v: f"{v:.4g}")


def _algorithm_tables(entries) -> list:
    """Study algorithms (names or config tables) -> [(label, table)]."""
    out = []
    for entry in entries:
        if isinstance(entry, str):
            out.append((entry, {"name": entry}))
        elif isinstance(entry, dict) and "name" in entry:
            extra = ", ".join(f"{k}={v}" for k, v in entry.items()
                              if k not in ("name", "learning_rate"))
            out.append((f"{entry['name']}({extra})" if extra else entry["name"], dict(entry)))
        else:
            raise ValueError(f"algorithms must hold names or tables with a 'name'; got {entry!r}.")
    labels = [label for label, _ in out]
    if len(set(labels)) != len(labels):
        raise ValueError(f"algorithms must be distinct; got {labels}.")
    return out


def _check_study_config(cfg: dict) -> dict:
    unknown = set(cfg) - set(SPEEDUP_DEFAULTS)
    if unknown:
        name = sorted(unknown)[0]
        raise ValueError(f"unknown speedup option {name!r}; valid: {sorted(SPEEDUP_DEFAULTS)}."
                         f"{closest(name, SPEEDUP_DEFAULTS)}")
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
                             f"{', '.join(usable)}.{closest(name, usable)}")
    if cfg["steps"] % cfg["eval_every"]:
        raise ValueError(f"steps={cfg['steps']} must be a multiple of "
                         f"eval_every={cfg['eval_every']}.")
    if not cfg["target_factor"] >= 1.0:
        raise ValueError(f"target_factor must be >= 1; got {cfg['target_factor']!r}.")
    if not 0.0 < cfg["fit_tail"] <= 1.0:
        raise ValueError(f"fit_tail must be in (0, 1]; got {cfg['fit_tail']!r}.")
    return dict(cfg, algorithms=tuple(algorithms), ns=tuple(sorted(set(ns))),
                topologies=topologies, seeds=tuple(int(s) for s in cfg["seeds"]))


def speedup_plan(**overrides):
    """The sweep behind :func:`speedup_study` with these overrides of ``SPEEDUP_DEFAULTS``:
    ``(base, grid, keys)``, where ``keys`` maps ``(algorithm label, n, topology)`` (label
    ``"reference"`` for centralized SGD) to a group id, so ``ds.sweep(base, grid, out_dir)`` runs
    (or resumes, or with ``shard=`` splits) exactly the study's runs."""
    return _speedup_plan(_check_study_config({**SPEEDUP_DEFAULTS, **overrides}))


def _speedup_plan(cfg: dict):
    lr0, decay = float(cfg["learning_rate"]), float(cfg["decay_steps"])
    lr = {"schedule": "inverse_time", "init_value": lr0, "decay_steps": decay} if decay > 0 else lr0
    problem = {"name": "logistic_regression", "dataset": cfg["dataset"],
               "partition": cfg["partition"], "batch_size": cfg["batch_size"], "l2": cfg["l2"],
               "seed": cfg["data_seed"]}
    algos = [(label, {**table, "learning_rate": lr})
             for label, table in _algorithm_tables(cfg["algorithms"])]
    base = {"algorithm": algos[0][1], "problem": problem, "topology": cfg["topologies"][0],
            "n_workers": 1, "steps": int(cfg["steps"]), "eval_every": int(cfg["eval_every"]),
            "seeds": list(cfg["seeds"])}
    many = [n for n in cfg["ns"] if n > 1]
    grid, points = [], []
    for label, table in algos:
        points.append((label, table, 1, cfg["topologies"][0]))
        points += [(label, table, n, t) for n in many for t in cfg["topologies"]]
    if cfg["reference"] and many:
        # Centralized SGD is run as D-SGD on the complete graph: its Metropolis W is exactly J, so
        # X_{t+1} = W (X_t − η G_t) = J (X_t − η G_t) is the same recursion
        # (docs/reference/algorithms.md#centralized_sgd), and these runs coincide with (and are
        # stored once with) the complete-graph D-SGD rows.
        name = "dsgd" if cfg["reference"] == "centralized_sgd" else cfg["reference"]
        ref = {"name": name, "learning_rate": lr}
        points += [("reference", ref, n, "complete") for n in many]
    keys = {}
    for label, table, n, topo in points:
        grid.append({"algorithm": [table], "n_workers": [n], "topology": [topo]})
        one = dict(base, algorithm=table, n_workers=n, topology=topo)
        configs = expand(one)
        keys[(label, n, topo)] = group_id(configs[0])
    return base, grid, keys


def reference_optimum(problem) -> float:
    """``f* = min f`` of a (convex) problem, for suboptimality curves (``problems.optimum``)."""
    from ..problems import optimum

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
        raise RuntimeError(f"the speedup study's store lacks runs {missing[:3]}...; "
                           f"rerun with rerun=True.")
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
    table = _speedup_table(cfg, labels, steps, histories, curves, f_star, target)
    result = SpeedupResult(table=table, histories=histories, f_star=f_star, target=target,
                           config={**cfg, "seconds": time.perf_counter() - start,
                                   "runs_computed": report.ran, "runs_reused": report.skipped},
                           reference=reference, store=store if tmp is None else None)
    if out_dir is not None:
        result.files = write_speedup(result, out_dir)
    return result


def _speedup_table(cfg, labels, steps, histories, curves, f_star, target):
    """The study's table: one row per (algorithm, n, topology), in the order of the settings."""
    import pandas as pd

    w = cfg["smooth_window"]
    first_topo = cfg["topologies"][0]
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
                rows.append(dict(
                    algorithm=label, n=n, topology=topo, graph=hist.config["topology"],
                    spectral_gap=hist.config["spectral_gap"], steps_to_target=Tn,
                    speedup=theory.speedup(T1, Tn), efficiency=theory.efficiency(T1, Tn, n),
                    rate_exponent=fit.b, rate_ci_low=fit.ci_low, rate_ci_high=fit.ci_high,
                    transient_steps=transient, final_suboptimality=float(final),
                    f_star=f_star[n], diverged=bool(np.any(hist.diverged))))
    order = {name: i for i, name in enumerate(cfg["topologies"])}
    alg_order = {name: i for i, name in enumerate(labels)}
    table = pd.DataFrame(rows)
    table = table.assign(_a=table["algorithm"].map(alg_order), _t=table["topology"].map(order))
    return table.sort_values(["_a", "_t", "n"]).drop(columns=["_a", "_t"]).reset_index(drop=True)


def write_speedup(result: SpeedupResult, out_dir: str) -> list:
    """Write the table (CSV), the settings (JSON) and the figures (PNG) to ``out_dir``."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from .. import plot

    os.makedirs(out_dir, exist_ok=True)
    files = []
    path = os.path.join(out_dir, "speedup.csv")
    result.table.to_csv(path, index=False)
    files.append(path)
    path = os.path.join(out_dir, "speedup.json")
    cfg = {k: (list(v) if isinstance(v, tuple) else v) for k, v in result.config.items()}
    with open(path, "w") as fh:
        json.dump(json_safe({"config": cfg, "target": result.target,
                             "f_star": {str(k): v for k, v in result.f_star.items()},
                             "store": result.store}), fh, indent=2)
    files.append(path)

    topologies = list(result.config["topologies"])
    labels = list(dict.fromkeys(k[0] for k in result.histories))
    size = (4.6 * len(topologies), 3.8 * len(labels))
    fig, axes = plt.subplots(len(labels), len(topologies), figsize=size, sharey=True,
                             squeeze=False)
    for row, label in zip(axes, labels):
        for ax, name in zip(row, topologies):
            keys = sorted(k for k in result.histories if k[0] == label and k[2] == name)
            hists = [_with_suboptimality(result.histories[k], result.f_star[k[1]]) for k in keys]
            plot.convergence(hists, y="suboptimality", labels=[f"n={k[1]}" for k in keys], ax=ax,
                             title=f"{label} · {name}" if len(labels) > 1 else name)
            ax.axhline(result.target, color="k", lw=0.8, ls=":")
    fig.suptitle(f"{', '.join(labels)} on {result.config['dataset']}: f(x̄) − f* (mean, min–max "
                 f"over {len(result.config['seeds'])} seeds); dotted: target ε")
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
    fig, axes = plt.subplots(len(labels), len(topologies), figsize=size, sharey=True,
                             squeeze=False)
    for row, label in zip(axes, labels):
        for ax, name in zip(row, topologies):
            keys = sorted(k for k in result.histories if k[0] == label and k[2] == name)
            curves = {k[1]: (result.histories[k].steps,
                             np.asarray(result.histories[k].metrics["loss"]) - result.f_star[k[1]])
                      for k in keys}
            plot.error_vs_nt(curves, reference_exponent=-1.0, tail=result.config["fit_tail"],
                             ax=ax, title=f"{label} · {name}" if len(labels) > 1 else name,
                             ylabel="f(x̄) − f*")
    fig.tight_layout()
    path = os.path.join(out_dir, "error_vs_nt.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    files.append(path)

    n_draw = max(n for n in result.config["ns"] if n <= 16)
    if n_draw > 1:
        fig, axes = plt.subplots(1, len(topologies), figsize=(3.6 * len(topologies), 3.8),
                                 squeeze=False)
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
