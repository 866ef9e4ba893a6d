"""BEER against Choco-SGD with the same compressor on heterogeneous data
(docs/reference/algorithms.md#beer).

BEER's claim (Zhao et al., NeurIPS 2022): gradient tracking on top of the compressed exchange
removes the heterogeneity floor that Choco-SGD keeps with a constant step. Two problems, full
local gradients (no sampling noise, so a floor is heterogeneity alone): logistic regression on
label-sorted digits (each worker sees one or two classes) and a heterogeneous quadratic. Both
methods use the same compressor, the same γ (``tune_gamma`` for that compressor) and each its
best learning rate on a small grid (lowest final ``||∇f(x̄)||² + consensus``). The table gives,
at a few points of the run, ``||∇f(x̄)||²``, the consensus distance ``(1/n) Σ ||x_i − x̄||²``
(where the floor shows: on the shared-Hessian quadratic x̄ is exact for both methods, the workers
are not), the Mbit sent per worker, and the Mbit to reach
``||∇f(x̄)||² + consensus < 1e-4``.

    python benchmarks/beer.py [--quick]
"""

import argparse
import datetime
import time

import numpy as np
from _common import machine

import decsim as ds
from decsim import compression as C

METHODS = {"Choco-SGD": ds.algorithms.choco_sgd, "BEER": ds.algorithms.beer}


TARGET = 1e-4


def error(h):
    return h.metrics["grad_norm_sq"] + h.metrics["consensus"]


def best_lr(make, prob, topo, steps, grid):
    """The grid's learning rate with the lowest final ||∇f(x̄)||² + consensus (diverged runs
    excluded); one compiled program serves the grid."""
    best = (np.inf, None, None)
    for lr in grid:
        h = ds.run(make(lr), prob, topo, steps=steps, eval_every=steps // 50, progress=False)
        g = np.inf if h.diverged else float(error(h)[-1])
        if g < best[0]:
            best = (g, lr, h)
    return best


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    n, steps = 8, (1000 if args.quick else 3000)
    topo = ds.topology.ring(n)
    problems = {
        "logreg digits sorted": ds.problems.logistic_regression(
            n, "digits", partition="sorted", batch_size=None, l2=1e-3, seed=0),
        "quadratic d=20": ds.problems.quadratic(n, 20, mu=0.1, L=1.0, heterogeneity=2.0, seed=0),
    }
    grids = {"logreg digits sorted": [0.025, 0.05, 0.1, 0.2, 0.4, 0.8],
             "quadratic d=20": [0.025, 0.05, 0.1, 0.2, 0.4]}
    print(f"# BEER vs Choco-SGD, {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC")
    print(f"# {machine()}")
    print(f"# ring({n}), full local gradients, {steps} steps; Mbit per worker, cumulative")
    print(f"{'problem':>21} {'compressor':>12} {'method':>10} {'gamma':>6} {'lr':>5} {'step':>5} "
          f"{'|grad f|^2':>10} {'consensus':>9} {'Mbit':>7} {'to 1e-4':>7}")
    t0 = time.time()
    for pname, prob in problems.items():
        d = ds.tree.size(prob.params0)
        for comp in (C.top_k(0.1), C.sign()):
            gamma = ds.algorithms.tune_gamma(topo, comp, d, seed=0)
            for mname, factory in METHODS.items():
                _, lr, h = best_lr(lambda lr, f=factory, g=gamma, c=comp: f(lr, g, c), prob, topo,
                                   steps, grids[pname])
                if h is None:
                    print(f"{pname:>21} {comp.name:>12} {mname:>10} {gamma:6.3f}  all diverged")
                    continue
                m, last = h.metrics, len(h.steps) - 1
                hit = np.flatnonzero(error(h) < TARGET)
                to = f"{m['bits'][hit[0]] / 1e6:7.2f}" if hit.size else f"{'never':>7}"
                for i in (5, 25, last):
                    print(f"{pname:>21} {comp.name:>12} {mname:>10} {gamma:6.3f} {lr:5.3f} "
                          f"{int(h.steps[i]):5d} {m['grad_norm_sq'][i]:10.2e} "
                          f"{m['consensus'][i]:9.2e} {m['bits'][i] / 1e6:7.2f} "
                          f"{to if i == last else '':>7}", flush=True)
    print(f"# {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
