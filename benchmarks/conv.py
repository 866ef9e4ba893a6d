"""Forward + backward speed of the conv2d implementations on XLA:CPU, for a small CNN and ResNet-20.

For each ``impl`` of ``decsim.problems.conv.conv2d`` and each model (``nets.lenet()`` and
``nets.resnet20()`` on 32x32x3 images, batch 32 per worker, train mode), it prints:

- ``plain``: ms per gradient of one worker's loss in a plain jitted step (``jit(grad)``);
- ``scan+map``: ms per training step of ``--workers`` workers (each one gradient and an SGD
  update) inside one compiled ``lax.scan`` of ``--steps`` steps, with ``lax.map`` over the
  workers, which is how decsim executes a run whose worker axis is mapped, not vmapped;
- ``scan+vmap``: the same with ``jax.vmap`` over the workers (``--vmap``; slow for the
  convolution-based impls, whose vmapped convolutions become grouped convolutions);
- ``temp MB``: XLA's temporary buffer size for the scan+map program (``memory_analysis()`` of
  the compiled program), a proxy for its peak activation memory.

Every program is compiled and warmed up first; then ``--repeats`` rounds time each impl once in
turn (interleaved, so load from other processes on a shared machine hits all impls alike), and
the best and the median of the rounds are printed. No timed call compiles.

    python benchmarks/conv.py [--models lenet,resnet20] [--impls forward,hybrid,matmul,im2col,lax]
                              [--workers 8] [--batch 32] [--steps 2] [--repeats 3] [--vmap]
    python benchmarks/conv.py --quick
"""

import argparse
import datetime
import time

import jax
import jax.numpy as jnp
import numpy as np
from _common import machine
from jax import lax

from decsim.problems import nets
from decsim.problems.conv import IMPLS


def _once(f, *args):
    t0 = time.perf_counter()
    jax.block_until_ready(f(*args))
    return time.perf_counter() - t0


def _programs(model, n, batch, hw, steps):
    loss_fn = nets.classifier_loss(model.apply)
    grad = jax.grad(loss_fn, has_aux=True)
    key = jax.random.key(0)
    params, state = model.init(key, (hw, hw, 3), 10)
    x = jax.random.normal(jax.random.key(1), (n, batch, hw, hw, 3), jnp.float32)
    y = jax.random.randint(jax.random.key(2), (n, batch), 0, 10, jnp.int32)
    stack = lambda tree: jax.tree.map(lambda a: jnp.broadcast_to(a, (n,) + a.shape), tree)  # noqa: E731
    P, S = stack(params), stack(state)

    def worker_step(p, s, xb, yb, k):
        g, s2 = grad(p, s, {"x": xb, "y": yb}, k)
        return jax.tree.map(lambda a, b: a - 0.01 * b, p, g), s2

    def run(execute):
        def program(P, S, x, y):
            def body(carry, t):
                P, S = carry
                keys = jax.random.split(jax.random.fold_in(key, t), n)
                return execute(P, S, x, y, keys), None
            return lax.scan(body, (P, S), jnp.arange(steps))[0]
        return jax.jit(program)

    by_map = run(lambda *a: lax.map(lambda b: worker_step(*b), a))
    by_vmap = run(jax.vmap(worker_step))
    plain = jax.jit(lambda p, s, xb, yb: grad(p, s, {"x": xb, "y": yb}, key))
    return plain, (params, state, x[0], y[0]), by_map, by_vmap, (P, S, x, y)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--models", default="lenet,resnet20")
    ap.add_argument("--impls", default=",".join(IMPLS))
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--size", type=int, default=32, help="image height and width")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--vmap", action="store_true", help="also time scan+vmap")
    ap.add_argument("--quick", action="store_true", help="8x8 images, 2 workers, batch 4")
    args = ap.parse_args()
    if args.quick:
        args.workers, args.batch, args.size, args.steps, args.repeats = 2, 4, 8, 1, 1
    factories = {"lenet": nets.lenet, "resnet20": nets.resnet20}
    print(f"# {datetime.date.today()}  {machine()}")
    print(f"# {args.workers} workers, batch {args.batch}, {args.size}x{args.size}x3, "
          f"{args.steps} scan steps, {args.repeats} rounds")
    print("# times in ms: best (median) of the rounds; per worker = best scan+map / workers")
    print(f"{'model':9s} {'impl':7s} {'plain':>19s} {'scan+map per step':>19s} "
          f"{'per worker':>10s} {'scan+vmap per step':>19s} {'temp MB':>8s}")
    impls = args.impls.split(",")
    for name in args.models.split(","):
        progs, temps = {}, {}
        for impl in impls:
            plain, pa, by_map, by_vmap, sa = _programs(factories[name](impl=impl), args.workers,
                                                       args.batch, args.size, args.steps)
            jobs = [(plain, pa, 1), (by_map, sa, args.steps)]
            if args.vmap:
                jobs.append((by_vmap, sa, args.steps))
            for f, a, _ in jobs:
                jax.block_until_ready(f(*a))  # warm-up: compiles
            mem = by_map.lower(*sa).compile().memory_analysis()
            temps[impl] = getattr(mem, "temp_size_in_bytes", float("nan")) / 2**20
            progs[impl] = jobs
        # interleaved rounds (impl a, impl b, ..., a, b, ...), so that load from other processes
        # on a shared machine hits every impl alike; best and median of the rounds
        times = {impl: [[] for _ in progs[impl]] for impl in impls}
        for _ in range(args.repeats):
            for impl in impls:
                for j, (f, a, steps) in enumerate(progs[impl]):
                    times[impl][j].append(_once(f, *a) / steps)
        for impl in impls:
            cols = [f"{min(t) * 1e3:8.1f} ({np.median(t) * 1e3:8.1f})" for t in times[impl]]
            if not args.vmap:
                cols.append(f"{'-':>19s}")
            per_worker = min(times[impl][1]) / args.workers * 1e3
            print(f"{name:9s} {impl:7s} {cols[0]} {cols[1]} {per_worker:10.1f} {cols[2]} "
                  f"{temps[impl]:8.1f}", flush=True)


if __name__ == "__main__":
    main()
