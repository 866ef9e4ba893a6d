"""SGP on the one-peer exponential graph against D-SGD on the static exponential graph, at equal
bits (docs/reference/algorithms.md#sgp).

The SGP paper's point: on the time-varying one-peer exponential graph every worker sends one
message per step (32 d + 32 bits, to one peer), while D-SGD on the static exponential graph sends
32 d bits to each of its 2 log2(n) − 1 neighbours. Bits here are counted per broadcast message
(decsim's convention), so the table also gives the per-edge traffic (message bits × neighbours),
which is what a worker's link carries. Both methods run with the same step on logistic regression
over iid digits (minibatches of 32) and a heterogeneous quadratic, several seeds batched; the
table gives the loss at x̄ and the consensus distance at equal per-edge traffic, and the traffic
each needs to reach a loss target. SGP with push-sum on a random digraph (random_directed) is
the third row: the case only push-sum handles.

    python benchmarks/sgp.py [--quick]
"""

import argparse
import datetime
import time

import numpy as np
from _common import machine

import decsim as ds

A, T = ds.algorithms, ds.topology


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    n, steps = 16, (500 if args.quick else 2000)
    seeds = [0, 1, 2]
    problems = {
        "logreg digits iid": (ds.problems.logistic_regression(n, "digits", batch_size=32), 0.5),
        "quadratic d=20": (ds.problems.quadratic(n, 20, noise=0.1, heterogeneity=1.0), 0.1),
    }
    runs = {
        "SGP one_peer_exponential": (A.sgp, T.one_peer_exponential(n), 1),
        "D-SGD exponential": (A.dsgd, T.exponential(n), int(T.exponential(n).degrees.max())),
        "SGP random_directed(2)": (A.sgp, T.random_directed(n, 2, seed=0), 2),
    }
    print(f"# SGP vs D-SGD at equal bits, {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC")
    print(f"# {machine()}")
    print(f"# n = {n}, {steps} steps, seeds {seeds} (mean), per-edge traffic = message bits x "
          "out-neighbours")
    t0 = time.time()
    for pname, (prob, lr) in problems.items():
        hists = {name: ds.run(make(lr), prob, topo, steps=steps, eval_every=steps // 50,
                              seeds=seeds, progress=False)
                 for name, (make, topo, _) in runs.items()}
        loss = {k: np.nanmean(h.metrics["loss"], axis=0) for k, h in hists.items()}
        target = max(v[-1] for v in loss.values()) * 1.02
        budget = min(np.nanmean(h.metrics["bits"], 0)[-1] * runs[k][2] for k, h in hists.items())
        print(f"\n## {pname} (lr {lr}); loss target {target:.4g}; equal traffic budget "
              f"{budget / 1e6:.3g} Mbit per worker")
        print(f"{'method':>26} {'msg bits/step':>13} {'edge Mbit/step':>14} {'loss @ budget':>13} "
              f"{'consensus @ budget':>18} {'final loss':>10} {'edge Mbit to target':>19}")
        for name, h in hists.items():
            bits = np.nanmean(h.metrics["bits"], 0)
            edge = bits * runs[name][2]
            at = int(np.searchsorted(edge, budget, side="right") - 1)
            cons = np.nanmean(h.metrics["consensus"], 0)
            hit = np.flatnonzero(loss[name] <= target)
            to_target = f"{edge[hit[0]] / 1e6:.3g}" if hit.size else "not reached"
            print(f"{name:>26} {bits[-1] / steps:>13.0f} {edge[-1] / steps / 1e6:>14.4f} "
                  f"{loss[name][at]:>13.4g} {cons[at]:>18.3g} {loss[name][-1]:>10.4g} "
                  f"{to_target:>19}")
    print(f"\n# {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
