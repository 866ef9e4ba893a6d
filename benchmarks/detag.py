"""DeTAG's claim (Lu & De Sa, ICML 2021) measured: on unshuffled (label-sorted) data, the gap
between
gradient-tracking methods and D-PSGD grows as the graph gets sparser; on shuffled data it is small.

For each data split (label-sorted, iid), topology (rings and tori of 8 to 32 workers) and method
(DeTAG with R rounds, gradient tracking, D², D-PSGD), every method gets the same number of gradient
evaluations per worker, its learning rate is tuned on a grid (best final training loss, mean over
seeds), and the table reports the final suboptimality ``f(x̄) − f*`` (f* from L-BFGS).

D² needs λ_min(W) > −1/3; even rings with Metropolis weights sit exactly at −1/3, so D² runs on the
lazy version ``(I + W)/2`` of the same graph (which is exact diffusion on W) and says so.

    python benchmarks/detag.py [--quick] [--budget 2000] [--ns 8,16,32]
"""

import argparse
import datetime
import time

import numpy as np
import pandas as pd
from _common import machine

import decsim as ds


def best_run(algo, prob, topo, steps, grid, seeds):
    """Best (lowest mean final training loss over seeds) learning rate on the grid; one compiled
    program serves the whole grid."""
    best = (np.inf, None)
    for lr in grid:
        h = ds.run(
            algo,
            prob,
            topo,
            steps=steps,
            eval_every=steps,
            seeds=seeds,
            progress=False,
            hparams={"learning_rate": lr},
        )
        loss = np.inf if h.diverged.any() else float(np.mean(h.metrics["loss"][:, -1]))
        if loss < best[0]:
            best = (loss, lr)
    return best


def study(ns, shapes, partitions, budget, rounds, grid, seeds, l2=1e-3, batch_size=8):
    rows = []
    for partition in partitions:
        for n in ns:
            prob = ds.problems.logistic_regression(
                n, "digits", partition=partition, batch_size=batch_size, l2=l2, seed=0
            )
            _, f_star = ds.problems.optimum(prob)
            for shape in shapes:
                topo = ds.topology.by_name(shape, n)
                lazy = ds.topology.by_name(shape, n, weights="lazy")
                methods = [
                    ("D-PSGD", ds.algorithms.dpsgd(0.1), topo, budget),
                    ("gradient tracking", ds.algorithms.gradient_tracking(0.1), topo, budget),
                    ("D² (lazy W)", ds.algorithms.d2(0.1), lazy, budget),
                    (
                        f"DeTAG (R={rounds})",
                        ds.algorithms.detag(0.1, rounds),
                        topo,
                        budget // rounds,
                    ),
                ]
                for name, algo, graph, steps in methods:
                    loss, lr = best_run(algo, prob, graph, steps, grid, seeds)
                    rows.append(
                        dict(
                            partition=partition,
                            topology=topo.name,
                            n=n,
                            spectral_gap=topo.spectral_gap,
                            method=name,
                            best_lr=lr,
                            suboptimality=loss - f_star,
                        )
                    )
                print(f"  {partition:6s} {topo.name:18s} done", flush=True)
    return pd.DataFrame(rows)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="ring only, n = 8 and 16, small budget")
    p.add_argument("--budget", type=int, default=2000, help="gradients per worker")
    p.add_argument("--rounds", type=int, default=4, help="DeTAG's R")
    p.add_argument("--ns", default="8,16,32")
    p.add_argument("--seeds", type=int, default=3)
    args = p.parse_args()
    ns = [int(v) for v in args.ns.split(",")]
    shapes = ["ring", "torus"]
    budget = args.budget
    if args.quick:
        ns, shapes, budget = [8, 16], ["ring"], 800
    grid = (0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4)
    start = time.perf_counter()
    print(f"# DeTAG heterogeneity study, {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC")
    print(f"# {machine()}")
    print(
        f"# logistic regression on digits (batch 8, l2 1e-3), {budget} gradients per worker, "
        f"lr grid {grid}, {args.seeds} seeds"
    )
    table = study(ns, shapes, ["sorted", "iid"], budget, args.rounds, grid, list(range(args.seeds)))
    wide = table.pivot_table(
        index=["partition", "topology", "n", "spectral_gap"],
        columns="method",
        values="suboptimality",
        sort=False,
    )
    wide["D-PSGD / best tracking"] = wide["D-PSGD"] / wide.drop(columns="D-PSGD").min(axis=1)
    print()
    print(wide.to_string(float_format=lambda v: f"{v:.3g}"))
    print(f"\n{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
