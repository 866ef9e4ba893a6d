"""Studies over grids of runs. First resident: the linear-speedup study behind ``decsim speedup``.

The speedup study (ALGORITHMS.md section 8) runs one algorithm for n = 1, 2, 4, ... workers on
several topologies, each configuration as one vmapped program over the seeds, and measures
``T(ε, n)``, the first step at which the seed-averaged, smoothed suboptimality ``f(x̄) − f*``
reaches the target ``ε``; ``speedup = T(ε, 1) / T(ε, n)`` and ``efficiency = speedup / n``.

Embedded defaults (``SPEEDUP_DEFAULTS``): softmax regression on scikit-learn's digits (1437
training images split iid, batch 1 per worker, l2 = 5e-2), D-SGD with the decaying step
``η_t = 0.5 / (1 + t/100)``, 3000 steps, 3 seeds, ring, torus and complete graphs. With a step
``c / (t + t0)`` and ``2 c μ > 1`` (here ``c = 50`` and ``μ >= l2 = 0.05``), SGD on a strongly convex
problem ends in the noise-dominated regime where the error falls like ``c² σ² / ((2cμ − 1) n t)``,
so ``T(ε, n) ∝ 1/n``: the regime in which linear speedup is a measurable statement. (With
``2cμ < 1`` the error falls like ``t^(−2cμ)`` and the measured speedup is super-linear,
``n^(1/(2cμ))``, which is why the default regularization is not smaller.) ``ε`` is
``target_factor`` times the final suboptimality of the single worker, so every n has to reach
what one worker reaches at the end.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Optional

import numpy as np

from . import algorithms as _algorithms
from . import problems as _problems
from . import theory
from . import topology as _topology
from .runner import run

SPEEDUP_DEFAULTS = dict(
    dataset="digits",
    partition="iid",
    batch_size=1,
    l2=5e-2,
    algorithm="dsgd",
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
)

_SPEEDUP_ALGORITHMS = ("dsgd", "dpsgd", "gradient_tracking", "exact_diffusion", "centralized_sgd")


@dataclasses.dataclass
class SpeedupResult:
    """What :func:`speedup_study` measured.

    Attributes:
      table: pandas DataFrame, one row per (n, topology): spectral gap, steps to target, speedup,
        efficiency, final suboptimality.
      histories: ``{(n, topology): History}`` (seed-batched).
      f_star: ``{n: f*}`` reference optimum of each n's objective (L-BFGS, full batch).
      target: the suboptimality target ε.
      config: the settings used.
      files: paths written (when ``out_dir`` was given).
    """

    table: object
    histories: dict
    f_star: dict
    target: float
    config: dict
    files: list = dataclasses.field(default_factory=list)

    def format_table(self) -> str:
        t = self.table.copy()
        cols = ["n", "topology", "spectral_gap", "steps_to_target", "speedup", "efficiency",
                "final_suboptimality"]
        return t[cols].to_string(index=False, float_format=lambda v: f"{v:.4g}")


def _check_study_config(cfg: dict) -> dict:
    unknown = set(cfg) - set(SPEEDUP_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown speedup options {sorted(unknown)}; valid: {sorted(SPEEDUP_DEFAULTS)}.")
    if cfg["algorithm"] not in _SPEEDUP_ALGORITHMS:
        raise ValueError(f"algorithm={cfg['algorithm']!r} is not available for the speedup study; "
                         f"choose one of {_SPEEDUP_ALGORITHMS}.")
    ns = [int(n) for n in cfg["ns"]]
    if not ns or min(ns) < 1:
        raise ValueError(f"ns must be positive worker counts; got {cfg['ns']!r}.")
    if 1 not in ns:
        raise ValueError(f"ns must include 1 (speedup is measured against one worker); got {ns}.")
    for name in cfg["topologies"]:
        if name not in _topology.GENERATORS or name in ("social", "erdos_renyi", "random_geometric"):
            raise ValueError(f"topology {name!r} is not usable in the speedup study; choose from "
                             "ring, torus, grid, complete, star, hypercube, exponential.")
    if cfg["steps"] % cfg["eval_every"]:
        raise ValueError(f"steps={cfg['steps']} must be a multiple of eval_every={cfg['eval_every']}.")
    if not cfg["target_factor"] >= 1.0:
        raise ValueError(f"target_factor must be >= 1; got {cfg['target_factor']!r}.")
    cfg = dict(cfg, ns=tuple(sorted(set(ns))), topologies=tuple(cfg["topologies"]),
               seeds=tuple(int(s) for s in cfg["seeds"]))
    return cfg


def speedup_study(*, out_dir: Optional[str] = None, progress: bool = True, verbose: bool = False,
                  **overrides) -> SpeedupResult:
    """Run the linear-speedup study; optionally write ``speedup.csv``, ``speedup.json``,
    ``convergence.png`` and ``speedup.png`` to ``out_dir``.

    Any key of ``SPEEDUP_DEFAULTS`` can be overridden, e.g. ``ns=(1, 4, 16)``, ``steps=2000``.

    Example:
      >>> import decsim as ds
      >>> res = ds.sweep.speedup_study(ns=(1, 4), topologies=("ring",), steps=300, seeds=(0,),
      ...                              progress=False)
      >>> res.table[["n", "topology", "speedup"]].shape
      (2, 3)
    """
    import pandas as pd

    cfg = _check_study_config({**SPEEDUP_DEFAULTS, **overrides})
    lr0, decay = float(cfg["learning_rate"]), float(cfg["decay_steps"])
    schedule = _decaying(lr0, decay) if decay > 0 else lr0
    factory = _algorithms.REGISTRY[cfg["algorithm"]]
    algo = factory(schedule)

    jobs = [(n, name) for n in cfg["ns"] for name in (cfg["topologies"] if n > 1 else cfg["topologies"][:1])]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(jobs), desc="speedup study", unit="run")
    histories, f_star, curves, probs = {}, {}, {}, {}
    start = time.perf_counter()
    for n, name in jobs:
        if n not in probs:
            probs[n] = _problems.logistic_regression(
                n, cfg["dataset"], partition=cfg["partition"], batch_size=cfg["batch_size"],
                l2=cfg["l2"], seed=cfg["data_seed"])
            f_star[n] = _problems.optimum(probs[n])[1]
        prob = probs[n]
        topo = _topology.by_name(name, n)
        hist = run(algo, prob, topo, cfg["steps"], eval_every=cfg["eval_every"], seeds=list(cfg["seeds"]),
                   progress=False)
        histories[(n, name)] = hist
        curves[(n, name)] = np.asarray(hist.metrics["loss"]) - f_star[n]
        if bar is not None:
            bar.update(1)
        if verbose:
            print(f"  n={n:3d} {topo.name:24s} compile {hist.compile_seconds:5.2f}s run {hist.run_seconds:5.2f}s")
    if bar is not None:
        bar.close()
    # n = 1: every topology is the single worker; share its run.
    for name in cfg["topologies"][1:]:
        histories[(1, name)] = histories[(1, cfg["topologies"][0])]
        curves[(1, name)] = curves[(1, cfg["topologies"][0])]

    steps = histories[(1, cfg["topologies"][0])].steps
    w = cfg["smooth_window"]
    base = theory.smooth(np.nanmean(curves[(1, cfg["topologies"][0])], axis=0), w)
    target = float(cfg["target_factor"] * base[-1])
    T1 = theory.steps_to_target(steps, curves[(1, cfg["topologies"][0])], target, window=w)
    rows = []
    for (n, name), hist in histories.items():
        Tn = theory.steps_to_target(steps, curves[(n, name)], target, window=w)
        final = theory.smooth(np.nanmean(curves[(n, name)], axis=0), w)[-1]
        rows.append(dict(n=n, topology=name, graph=hist.config["topology"],
                         spectral_gap=hist.config["spectral_gap"], steps_to_target=Tn,
                         speedup=theory.speedup(T1, Tn), efficiency=theory.efficiency(T1, Tn, n),
                         final_suboptimality=float(final), f_star=f_star[n],
                         diverged=bool(np.any(hist.diverged))))
    table = pd.DataFrame(rows).sort_values(["topology", "n"], key=_topology_order(cfg["topologies"]))
    table = table.reset_index(drop=True)
    result = SpeedupResult(table=table, histories=histories, f_star=f_star, target=target,
                           config={**cfg, "seconds": time.perf_counter() - start})
    if out_dir is not None:
        result.files = write_speedup(result, out_dir)
    return result


def _decaying(lr0: float, decay: float):
    def schedule(t):
        import jax.numpy as jnp

        return lr0 / (1.0 + jnp.asarray(t, jnp.float32) / decay)

    schedule.__name__ = f"{lr0:g}/(1+t/{decay:g})"
    return schedule


def _topology_order(names):
    order = {name: i for i, name in enumerate(names)}

    def key(col):
        return col.map(order) if col.name == "topology" else col

    return key


def write_speedup(result: SpeedupResult, out_dir: str) -> list:
    """Write the table (CSV), the settings (JSON) and the two figures (PNG) to ``out_dir``."""
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
        json.dump({"config": cfg, "target": result.target,
                   "f_star": {str(k): v for k, v in result.f_star.items()}}, fh, indent=2)
    files.append(path)

    topologies = list(result.config["topologies"])
    fig, axes = plt.subplots(1, len(topologies), figsize=(4.6 * len(topologies), 4.0), sharey=True,
                             squeeze=False)
    for ax, name in zip(axes[0], topologies):
        keys = sorted(k for k in result.histories if k[1] == name)
        hists = [result.histories[k] for k in keys]
        hists = [_with_suboptimality(h, result.f_star[k[0]]) for h, k in zip(hists, keys)]
        plot.convergence(hists, y="suboptimality", labels=[f"n={k[0]}" for k in keys], ax=ax,
                         title=name)
        ax.axhline(result.target, color="k", lw=0.8, ls=":")
    fig.suptitle(f"{result.config['algorithm']} on {result.config['dataset']}: f(x̄) − f* (mean, "
                 f"min–max over {len(result.config['seeds'])} seeds); dotted: target ε")
    fig.tight_layout()
    path = os.path.join(out_dir, "convergence.png")
    fig.savefig(path, dpi=120)
    plt.close(fig)
    files.append(path)

    fig = plot.speedup(result.table, title=f"linear speedup, ε = {result.target:.3g}")
    path = os.path.join(out_dir, "speedup.png")
    fig.savefig(path, dpi=120)
    plt.close(fig)
    files.append(path)
    return files


def _with_suboptimality(hist, f_star):
    metrics = dict(hist.metrics, suboptimality=np.asarray(hist.metrics["loss"]) - f_star)
    return dataclasses.replace(hist, metrics=metrics)


__all__ = ["SPEEDUP_DEFAULTS", "SpeedupResult", "speedup_study", "write_speedup"]

