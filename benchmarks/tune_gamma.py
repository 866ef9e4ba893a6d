"""How long ``tune_gamma`` takes at ResNet-20 size, with and without proxy leaves.

What it measures
----------------
``ds.algorithms.tune_gamma(ring(8, weights="uniform"), compressor, d=272474)`` (the parameter
count of ResNet-20, n = 8 workers, the default grid of 20 γ and 1000 rounds) for ``top_k(0.01)``
and ``sign()``, twice each:

- ``full``: ``proxy_size=None``, every coordinate simulated (what tune_gamma did before proxies);
- ``proxy``: the default ``proxy_size`` (10000): the leaf is simulated at 10000 entries and its
  error scaled by d / 10000 (see the tune_gamma docstring for why the chosen γ does not depend
  on d for these compressors).

Reported per run: wall-clock seconds (compilation included, as a user pays it), the chosen γ and,
for the full run, the largest relative difference of the proxy's final errors from the full
run's over the γ up to the chosen one that did not converge to round-off (the contracting part
of the curve the choice is made on; beyond the chosen γ, at the onset of instability, the growth
depends on the draw).

Usage::

    python benchmarks/tune_gamma.py            # full: about 15 minutes on 2 CPU cores (the full
                                               # size runs dominate)
    python benchmarks/tune_gamma.py --quick    # 100 rounds: about 2 minutes
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import decsim as ds

try:
    from _common import machine
except ImportError:  # run from elsewhere
    from benchmarks._common import machine


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="100 rounds instead of 1000")
    ap.add_argument("--d", type=int, default=272474)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--skip-full", action="store_true", help="only the proxy runs")
    args = ap.parse_args()
    rounds = 100 if args.quick else 1000
    print(machine())
    print(f"tune_gamma on ring({args.n}, uniform), d = {args.d}, {rounds} rounds, 20 gammas")
    topo = ds.topology.ring(args.n, weights="uniform")
    print(f"{'compressor':12s} {'mode':6s} {'simulated d':>11s} {'seconds':>8s} {'gamma':>8s} "
          f"{'max rel. err. diff':>18s}")
    for comp in (ds.compression.top_k(0.01), ds.compression.sign()):
        results = {}
        for mode, proxy in (("proxy", ds.algorithms.tuning.PROXY_SIZE), ("full", None)):
            if mode == "full" and args.skip_full:
                continue
            sizes = ds.algorithms.tuning.proxy_sizes(comp, [args.d], proxy)
            tic = time.perf_counter()
            gamma, grid, errors = ds.algorithms.tune_gamma(topo, comp, args.d, rounds=rounds,
                                                           proxy_size=proxy, full_output=True)
            seconds = time.perf_counter() - tic
            results[mode] = errors / (args.n * args.d)  # per coordinate (the start is ~ 1 each)
            diff = ""
            if mode == "full":
                p, f = results["proxy"], results["full"]
                live = (f > 1e-8) & (grid <= gamma)  # contracting, not at round-off
                diff = (f"{np.max(np.abs(p[live] - f[live]) / f[live]):.3f}" if live.any()
                        else "all converged")
            print(f"{comp.name:12s} {mode:6s} {sizes[0]:11d} {seconds:8.1f} {gamma:8.4f} "
                  f"{diff:>18s}", flush=True)


if __name__ == "__main__":
    main()
