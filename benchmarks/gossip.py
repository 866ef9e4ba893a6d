"""Time per gossip round for each path (dense matmul, sparse neighbour gathers, circulant rolls)
against n and d, next to a bare roll kernel and the memory-bandwidth bound.

The bound: one round must at least read X and write W X, ``2 · n · d · 4`` bytes; divided by the
measured copy bandwidth (a jitted ``2 * X`` on the same array) it is the fastest any path can be.

    python benchmarks/gossip.py [--quick]
"""

import argparse
import datetime
import time

import jax
import jax.numpy as jnp
import numpy as np
from _common import machine

import decsim as ds
from decsim import gossip


def best_time(fn, *args, repeats=7, inner=None):
    """Best wall time of one call (ms), after compilation, several calls per sample."""
    out = fn(*args)
    jax.block_until_ready(out)
    if inner is None:
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        one = time.perf_counter() - start
        inner = max(1, int(0.05 / max(one, 1e-6)))
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner):
            out = fn(*args)
        jax.block_until_ready(out)
        best = min(best, (time.perf_counter() - start) / inner)
    return best * 1e3


def round_fn(plan):
    args = {k: jnp.asarray(v) for k, v in plan.args.items()}

    @jax.jit
    def go(X, args):
        return plan.mixer(args, jnp.float32(0.0), jnp.int32(0))(X)

    return lambda X: go(X, args)


@jax.jit
def bare_roll(X):
    third = jnp.float32(1.0 / 3.0)
    return third * (X + jnp.roll(X, 1, axis=0) + jnp.roll(X, -1, axis=0))


@jax.jit
def copy(X):
    return 2.0 * X


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    ns = [64, 256, 1024, 4096] if not args.quick else [64, 1024]
    ds_ = [100, 10_000] if not args.quick else [10_000]
    print(f"# gossip round timings, {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC")
    print(f"# {machine()}")
    print("# ms per round (best of 7); bound = 2·n·d·4 bytes / copy bandwidth")
    header = (f"{'graph':>16} {'n':>6} {'d':>6} {'dense':>9} {'sparse':>9} {'roll':>9} "
              f"{'bare roll':>9} {'bound':>8} {'GB/s':>6}")
    print(header)
    rng = np.random.default_rng(0)
    for d in ds_:
        for n in ns:
            X = jnp.asarray(rng.normal(size=(n, d)), jnp.float32)
            copy_ms = best_time(copy, X)
            bandwidth = 2 * n * d * 4 / (copy_ms * 1e-3) / 1e9
            bound = copy_ms
            for name, topo in (
                ("ring", ds.topology.ring(n)),
                ("torus", ds.topology.by_name("torus", n)),
                ("exponential", ds.topology.exponential(n)),
                ("erdos_renyi", ds.topology.erdos_renyi(n, min(1.0, 8.0 / n), seed=0)),
            ):
                cells = {}
                for path in ("dense", "sparse", "roll"):
                    if path == "dense" and n * n * d > 2e10:
                        cells[path] = "—"
                        continue
                    try:
                        plan = gossip.plan(topo, path)
                    except ValueError:
                        cells[path] = "n/a"
                        continue
                    cells[path] = f"{best_time(round_fn(plan), X, repeats=5):9.3f}"
                bare = f"{best_time(bare_roll, X):9.3f}" if name == "ring" else ""
                print(
                    f"{topo.name:>16} {n:6d} {d:6d} {cells['dense']:>9} {cells['sparse']:>9} "
                    f"{cells['roll']:>9} {bare:>9} {bound:8.3f} {bandwidth:6.1f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
