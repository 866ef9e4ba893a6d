"""Adaptive decentralized methods (docs/reference/algorithms.md#family-adaptive) on
factorization machines, their linear speedup, and Chen et al.'s heterogeneous-scale example.

What it measures
----------------
1. ``compare``: tuned D-SGD against DADAM, DAMSGrad, DAdaGrad and ada_choco_sgd (16-level qsgd
   messages, γ from ``tune_gamma``) on ``ds.problems.factorization_machine`` (8 fields, 771
   categories, k = 4, 8 workers on a ring, batch 32, ``--compare-steps`` steps), for the ``skewed``
   partition (each worker its own popular categories) and ``iid``. Every method's learning rate is
   chosen from its factor-2 grid on the final *training* loss (mean over the seeds); the table
   reports, for the chosen η, the training loss, the test log-loss (mean ± std over seeds), the
   test AUC, the bits each worker sent, and the steps and bits each method needed to reach tuned
   D-SGD's final test log-loss (smoothed over 3 evaluations). ``edge`` marks an η at the end of
   its grid. The data are enough for one pass at most, so the training loss that tunes η tracks
   the test loss.
2. ``speedup``: DAMSGrad on the iid FM problem with n = 1, 2, 4, ..., 32 workers (ring; the same
   96 000 samples split over n). One and two workers run ``--speedup-steps`` steps, n > 2
   workers three times the ideal ``steps / n`` (at least 150), each with ~75 evaluations. ε is
   1.01 × the final training loss (smoothed over 3 evaluations) of the best single-worker run;
   for every n the η of the grid that reaches ε first is used; ``T(ε, n)`` is the first evaluated
   step where the
   seed-mean smoothed loss is ≤ ε; ``speedup = T(ε, 1) / T(ε, n)``, ``efficiency = speedup / n``.
3. ``chen``: ``f_i(x) = ½ a_i ||x − c_i||²`` on 8 workers (ring), d = 10, ``c_i ~ N(0, I)``,
   worker scales ``a_i = 10^linspace(−1, 1, 8)`` (gradients 100× apart), gradient noise 0.1,
   η_t = η0 / sqrt(1 + t/500). ``||∇f(x̄)||²`` at a few steps: DADAM at every η0 against
   DAMSGrad and DAdaGrad.

Usage::

    python benchmarks/adaptive.py                 # everything, ~15 min on 2 busy CPU cores
    python benchmarks/adaptive.py --quick         # smoke run, a few minutes
    python benchmarks/adaptive.py --parts chen    # one part
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import decsim as ds
import decsim.compression as C
from decsim import theory
from decsim.algorithms import adaptive

SEEDS = (0, 1, 2)

COMPARE_GRIDS = {
    "dsgd": (1.0, 2.0, 4.0, 8.0, 16.0),
    "dadam": (0.005, 0.01, 0.02, 0.04, 0.08),
    "damsgrad": (0.01, 0.02, 0.04, 0.08, 0.16),
    "dadagrad": (0.01, 0.02, 0.04, 0.08, 0.16),
    "ada_choco_sgd": (0.005, 0.01, 0.02, 0.04, 0.08),
}
SPEEDUP_GRID = (0.005, 0.01, 0.02, 0.04, 0.08, 0.16)


# ---------------------------------------------------------------------------------------------
# machine description


from _common import cpu_model as _cpu_model  # noqa: E402


def machine_description() -> list:
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    devices = ", ".join(f"{d.platform}:{d.device_kind}" for d in jax.devices())
    try:
        load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        load = "unknown"
    return [
        f"date:     {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"cpu:      {_cpu_model()} ({os.cpu_count()} logical cores, {usable} usable; load avg "
        f"{load})",
        f"python:   {platform.python_version()}, jax {jax.__version__} "
        f"({jax.default_backend()}: {devices}), decsim {ds.__version__}",
    ]


def _table(header, rows) -> str:
    body = [[str(c) for c in r] for r in rows]
    widths = [
        max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(header)
    ]
    line = lambda cells: "  ".join(c.rjust(w) for c, w in zip(cells, widths))
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(b) for b in body])


# ---------------------------------------------------------------------------------------------
# 1. FM comparison


def _first_reach(steps, values, target, window=3):
    """First step at which the seed-mean, smoothed curve is <= target (inf if never)."""
    curve = theory.smooth(np.nanmean(np.asarray(values, np.float64), axis=0), window)
    hit = np.flatnonzero(curve <= target)
    return float(steps[hit[0]]) if hit.size else float("inf")


def compare(steps: int, n: int, n_samples: int, grids: dict, partitions, seeds, verbose=True):
    topo = ds.topology.ring(n)
    out = {}
    for partition in partitions:
        prob = ds.problems.factorization_machine(
            n, partition=partition, n_samples=n_samples, batch_size=32, seed=0
        )
        comp = C.qsgd(16)
        gamma = ds.algorithms.tune_gamma(topo, comp, ds.tree.leaf_sizes(prob.params0), rounds=300)
        factories = {
            "dsgd": ds.algorithms.dsgd,
            "dadam": adaptive.dadam,
            "damsgrad": adaptive.damsgrad,
            "dadagrad": adaptive.dadagrad,
            "ada_choco_sgd": lambda lr, g=gamma, c=comp: adaptive.ada_choco_sgd(lr, g, c),
        }
        eval_every = max(1, steps // 20)
        tuned = {}
        start = time.perf_counter()
        for name, grid in grids.items():
            runs = [
                ds.run(
                    factories[name](grid[0]),
                    prob,
                    topo,
                    steps=steps,
                    eval_every=eval_every,
                    seeds=list(seeds),
                    hparams={"learning_rate": lr},
                    progress=False,
                )
                for lr in grid
            ]
            train = [
                np.nanmean(h.final("loss")) if not np.any(h.diverged) else np.inf for h in runs
            ]
            best = int(np.argmin(train))
            tuned[name] = (grid[best], best in (0, len(grid) - 1), runs[best])
            if verbose:
                print(
                    f"  [{partition}] {name}: train loss per lr "
                    + ", ".join(f"{lr:g}: {t:.4f}" for lr, t in zip(grid, train)),
                    flush=True,
                )
        target = theory.smooth(np.nanmean(tuned["dsgd"][2].metrics["test_loss"], axis=0), 3)[-1]
        rows = []
        for name, (lr, edge, h) in tuned.items():
            test = h.final("test_loss")
            t_hit = _first_reach(h.steps, h.metrics["test_loss"], target)
            bits_per_step = float(np.nanmean(h.metrics["bits"][:, -1])) / steps
            rows.append(
                [
                    name,
                    f"{lr:g}" + (" edge" if edge else ""),
                    f"{np.mean(h.final('loss')):.4f}",
                    f"{np.mean(test):.4f} ± {np.std(test):.4f}",
                    f"{np.mean(h.final('test_auc')):.4f}",
                    f"{np.nanmean(h.metrics['bits'][:, -1]) / 8e6:.2f}",
                    "-" if not np.isfinite(t_hit) else f"{t_hit:.0f}",
                    "-" if not np.isfinite(t_hit) else f"{t_hit * bits_per_step / 8e6:.2f}",
                ]
            )
        info = prob.info
        print(
            f"\n## FM comparison, partition={partition}: {prob.name}, n={n} ring, batch 32, "
            f"{steps} steps, seeds {list(seeds)}; n_train={info['n_train']}, "
            f"n_test={info['n_test']}, "
            f"Bayes test log-loss {info['bayes_test_loss']:.4f} (AUC "
            f"{info['bayes_test_auc']:.4f}); "
            f"ada_choco_sgd: qsgd(16), gamma={gamma:.3g}; target = tuned D-SGD's final test loss "
            f"{target:.4f}; tuning took {time.perf_counter() - start:.0f} s"
        )
        print(
            _table(
                [
                    "method",
                    "lr",
                    "train loss",
                    "test log-loss",
                    "test AUC",
                    "MB sent/worker",
                    "steps to target",
                    "MB to target",
                ],
                rows,
            )
        )
        out[partition] = tuned
    return out


# ---------------------------------------------------------------------------------------------
# 2. linear speedup of DAMSGrad


def _speedup_steps(steps: int, n: int):
    """Steps and evaluation interval for n workers: ``steps`` for one or two workers, three times
    the ideal ``steps / n`` beyond (at least 150), with ~75 evaluations per run, so that fast runs
    are resolved as finely as slow ones."""
    k = steps if n <= 2 else max(150, int(np.ceil(3 * steps / n)))
    every = max(1, k // 75)
    return int(np.ceil(k / every) * every), every


def speedup(steps: int, ns, n_samples: int, grid, seeds, verbose=True):
    curves = {}
    start = time.perf_counter()
    for n in ns:
        prob = ds.problems.factorization_machine(
            n, partition="iid", n_samples=n_samples, batch_size=32, seed=0
        )
        topo = ds.topology.ring(n)
        k, every = _speedup_steps(steps, n)
        for lr in grid:
            h = ds.run(
                adaptive.damsgrad(grid[0]),
                prob,
                topo,
                steps=k,
                eval_every=every,
                seeds=list(seeds),
                hparams={"learning_rate": lr},
                progress=False,
            )
            curves[(n, lr)] = (h.steps, np.asarray(h.metrics["loss"]), topo.spectral_gap)
        if verbose:
            print(f"  n={n}: {k} steps, done ({time.perf_counter() - start:.0f} s)", flush=True)
    window = 3
    finals = {
        lr: theory.smooth(np.nanmean(curves[(ns[0], lr)][1], axis=0), window)[-1] for lr in grid
    }
    eps = 1.01 * min(finals.values())
    rows = []
    T1 = None
    for n in ns:
        found = []
        for lr in grid:
            steps_arr, loss, gap = curves[(n, lr)]
            T = theory.steps_to_target(steps_arr, loss, eps, window=window)
            found.append(
                (
                    T if np.isfinite(T) else np.inf,
                    lr,
                    gap,
                    theory.smooth(np.nanmean(loss, axis=0), window)[-1],
                )
            )
        T, lr, gap, final = min(found)
        T1 = T if T1 is None else T1
        k, _ = _speedup_steps(steps, n)
        rows.append(
            [
                n,
                f"{gap:.4f}",
                f"{lr:g}" + (" edge" if lr in (grid[0], grid[-1]) else ""),
                k,
                f"{T:.0f}" if np.isfinite(T) else f"> {k}",
                f"{T1 / T:.2f}" if np.isfinite(T) else "-",
                f"{T1 / T / n:.2f}" if np.isfinite(T) else "-",
                " ".join("-" if not np.isfinite(f[0]) else f"{f[0]:.0f}" for f in found),
            ]
        )
    print(
        f"\n## DAMSGrad linear speedup: FM (iid, {n_samples} samples split over n), ring, batch 32 "
        f"per worker, seeds {list(seeds)}; eps = {eps:.4f} (1.01 x the best one-worker training "
        f"loss after {steps} steps, smoothed over {window} evaluations); eta per n: the one of "
        f"{list(grid)} that reaches eps first"
    )
    print(
        _table(
            ["n", "gap", "lr", "steps run", "T(eps,n)", "speedup", "efficiency", "T(eps,n) per lr"],
            rows,
        )
    )
    return rows


# ---------------------------------------------------------------------------------------------
# 3. Chen et al.: heterogeneous gradient scales


def _scaled_quadratic_loss(x, batch):
    return 0.5 * jnp.mean(jnp.sum(batch["a"] * jnp.square(x[None, :] - batch["c"]), axis=1))


def heterogeneous_scales_problem(
    n: int = 8, d: int = 10, spread: float = 2.0, noise: float = 0.1, seed: int = 0
):
    """``f_i(x) = ½ a_i ||x − c_i||²`` with ``a_i = 10^linspace(−spread/2, spread/2, n)``."""
    rng = np.random.default_rng(seed)
    scales = 10.0 ** np.linspace(-spread / 2, spread / 2, n)
    data = {
        "a": np.broadcast_to(scales[:, None, None], (n, 1, d)).astype(np.float32).copy(),
        "c": rng.normal(size=(n, 1, d)).astype(np.float32),
    }
    prob = ds.problems.custom(
        _scaled_quadratic_loss,
        np.zeros(d, np.float32),
        data,
        name=f"scaled_quadratic(spread={spread:g})",
    )
    return prob._replace(noise_std=float(noise))


def decaying(lr0: float, tau: float = 500.0):
    def schedule(t):
        return lr0 / jnp.sqrt(1.0 + jnp.asarray(t, jnp.float32) / tau)

    schedule.__name__ = f"{lr0:g}/sqrt(1+t/{tau:g})"
    return schedule


def chen(steps: int, seeds):
    prob = heterogeneous_scales_problem()
    topo = ds.topology.ring(prob.n_workers)
    cases = [("dadam", adaptive.dadam, lr) for lr in (0.003, 0.01, 0.03)] + [
        ("damsgrad", adaptive.damsgrad, 0.003),
        ("dadagrad", adaptive.dadagrad, 0.003),
    ]
    marks = [0, steps // 8, steps // 4, steps // 2, steps]
    rows = []
    for name, make, lr in cases:
        h = ds.run(
            make(decaying(lr)),
            prob,
            topo,
            steps=steps,
            eval_every=steps // 8,
            seeds=list(seeds),
            progress=False,
        )
        g = np.nanmean(h.metrics["grad_norm_sq"], axis=0)
        at = [g[int(np.flatnonzero(h.steps == m)[0])] for m in marks]
        rows.append([name, f"{lr:g}"] + [f"{v:.2e}" for v in at] + [f"{at[-1] / at[1]:.2g}"])
    print(
        f"\n## Chen et al.'s example: {prob.name}, n={prob.n_workers} ring, d=10, noise 0.1, "
        f"eta_t = eta0/sqrt(1+t/500), seeds {list(seeds)}: ||grad f(x_bar)||^2 (seed mean)"
    )
    print(
        _table(["method", "eta0"] + [f"t={m}" for m in marks] + [f"t={steps}/t={marks[1]}"], rows)
    )
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--parts",
        default="compare,speedup,chen",
        help="comma-separated subset of compare,speedup,chen",
    )
    p.add_argument("--quick", action="store_true", help="small smoke run")
    p.add_argument("--compare-steps", type=int, default=300)
    p.add_argument("--speedup-steps", type=int, default=1500)
    p.add_argument("--chen-steps", type=int, default=8000)
    args = p.parse_args(argv)
    parts = [s.strip() for s in args.parts.split(",") if s.strip()]
    unknown = set(parts) - {"compare", "speedup", "chen"}
    if unknown:
        p.error(f"unknown parts {sorted(unknown)}; choose from compare, speedup, chen")
    print("# benchmarks/adaptive.py " + " ".join(sys.argv[1:] if argv is None else argv))
    print("\n".join(machine_description()))
    start = time.perf_counter()
    if "compare" in parts:
        if args.quick:
            grids = {k: v[1:4] for k, v in COMPARE_GRIDS.items()}
            compare(100, 4, 40000, grids, ("skewed",), SEEDS[:2])
        else:
            compare(args.compare_steps, 8, 160000, COMPARE_GRIDS, ("skewed", "iid"), SEEDS)
    if "speedup" in parts:
        if args.quick:
            speedup(200, (1, 4), 16000, SPEEDUP_GRID[1:5], SEEDS[:2])
        else:
            speedup(args.speedup_steps, (1, 2, 4, 8, 16, 32), 96000, SPEEDUP_GRID, SEEDS)
    if "chen" in parts:
        chen(1000 if args.quick else args.chen_steps, SEEDS[:2] if args.quick else SEEDS)
    print(f"\ntotal {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
