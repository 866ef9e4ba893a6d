"""EXTRA's exact convergence against D-SGD's constant-step bias, with gradient tracking and exact
diffusion for reference (docs/reference/algorithms.md#extra).

With full local gradients and a constant step η, D-SGD stops at a fixed point whose consensus
distance and gradient grow with η and the heterogeneity; EXTRA (and the other bias-corrected
methods) converge to the exact minimizer of ``(1/n) Σ f_i``. Every method runs with the same η on
the same ring; the table gives ``||∇f(x̄)||²`` and the consensus distance
``(1/n) Σ ||x_i − x̄||²`` at a few points of the run, and the step at which
``||∇f(x̄)||² + consensus`` first falls below 1e-8 (checked every 1% of the run).

With ``--x64`` everything runs in float64: in float32 the correction term of EXTRA and exact
diffusion (implicit in ``X_t − X_{t−1}``) accumulates round-off along the average, which leaves a
small ``||∇f(x̄)||²`` floor that grows slowly with the steps; float64 shows it is round-off.

    python benchmarks/extra.py [--quick] [--x64]
"""

import argparse
import datetime
import time

import jax
import numpy as np
from _common import machine

import decsim as ds

A = ds.algorithms
METHODS = {"D-SGD": A.dsgd, "EXTRA": A.extra, "gradient tracking": A.gradient_tracking,
           "exact diffusion": A.exact_diffusion}
TARGET = 1e-8


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--x64", action="store_true", help="run in float64 (jax_enable_x64)")
    args = p.parse_args()
    if args.x64:
        jax.config.update("jax_enable_x64", True)
    n, steps = 8, (1000 if args.quick else 3000)
    topo = ds.topology.ring(n)
    problems = {
        "quadratic d=20": (ds.problems.quadratic(n, 20, mu=0.1, L=1.0, heterogeneity=2.0, seed=0),
                           [0.1, 0.4]),
        "logreg digits sorted": (ds.problems.logistic_regression(
            n, "digits", partition="sorted", batch_size=None, l2=1e-3, seed=0), [0.2, 0.8]),
    }
    print(f"# EXTRA vs D-SGD, {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC")
    print(f"# {machine()}")
    print(f"# ring({n}), full local gradients, constant step, {steps} steps, "
          f"{'float64' if args.x64 else 'float32'}")
    print(f"{'problem':>21} {'lr':>4} {'method':>18} {'step':>5} {'|grad f|^2':>10} "
          f"{'consensus':>9} {'steps to 1e-8':>13}")
    t0 = time.time()
    for pname, (prob, lrs) in problems.items():
        for lr in lrs:
            for mname, factory in METHODS.items():
                h = ds.run(factory(lr), prob, topo, steps=steps, eval_every=steps // 100,
                           progress=False)
                m, last = h.metrics, len(h.steps) - 1
                if h.diverged:
                    print(f"{pname:>21} {lr:4.1f} {mname:>18}  diverged")
                    continue
                hit = np.flatnonzero(m["grad_norm_sq"] + m["consensus"] < TARGET)
                to = f"{int(h.steps[hit[0]]):13d}" if hit.size else f"{'never':>13}"
                for i in (10, 50, last):
                    print(f"{pname:>21} {lr:4.1f} {mname:>18} {int(h.steps[i]):5d} "
                          f"{m['grad_norm_sq'][i]:10.2e} {m['consensus'][i]:9.2e} "
                          f"{to if i == last else '':>13}", flush=True)
    print(f"# {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
