"""Fixed cost of a ``ds.run`` call: what a repeated short run pays besides its steps.

A notebook runs the same problem again and again with short runs. Each call used to convert the
problem's data to device arrays again (about 100 MB at n = 256, d = 1000). This script times, side
by side in one process, a second ``ds.run`` call on the same problem with the device-data cache
(today's behaviour) and with it cleared before every call (the old behaviour), next to the cost
of the metric evaluations alone, which every call pays (``steps=0``: the initial evaluation only).

    python benchmarks/overhead.py [--n 256] [--dim 1000] [--samples 100] [--repeats 20]
"""

import argparse
import datetime
import time

import numpy as np
from _common import machine


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=256)
    p.add_argument("--dim", type=int, default=1000)
    p.add_argument("--samples", type=int, default=100, help="samples per worker")
    p.add_argument("--repeats", type=int, default=20)
    args = p.parse_args()

    import jax
    import jax.numpy as jnp

    import decsim as ds
    from decsim import _programs

    rng = np.random.default_rng(0)
    n, d, m = args.n, args.dim, args.samples
    A = rng.normal(size=(n, m, d)).astype(np.float32)
    y = rng.normal(size=(n, m)).astype(np.float32)

    def loss(x, batch):
        return 0.5 * jnp.mean(jnp.square(batch["A"] @ x - batch["y"]))

    prob = ds.problems.custom(loss, np.zeros(d, np.float32), {"A": A, "y": y}, batch_size=8)
    topo = ds.topology.ring(n)
    algo = ds.algorithms.dsgd(0.01)
    mb = (A.nbytes + y.nbytes) / 2**20

    def timed(steps, clear):
        out = []
        for _ in range(args.repeats):
            if clear:
                _programs._DATA.clear()  # benchmark only: the old behaviour, re-upload every call
            tic = time.perf_counter()
            h = ds.run(algo, prob, topo, steps=steps, eval_every=max(steps, 1), progress=False)
            jax.block_until_ready(jnp.zeros(()))
            out.append(time.perf_counter() - tic)
            assert h.compile_seconds == 0.0
        return 1e3 * float(np.median(out))

    ds.run(algo, prob, topo, steps=0, progress=False)  # compile everything once
    ds.run(algo, prob, topo, steps=10, eval_every=10, progress=False)
    # metrics alone: the compiled metrics program on one snapshot, as run() calls it
    metrics = next(v for k, v in _programs._PROGRAMS.items() if k[0] == "metrics")
    margs = {k: v for k, v in _programs.device_data(prob).items()
             if k in ("data", "counts", "test", "aux")}
    Xs = jnp.zeros((1, n, d), jnp.float32)
    ms = []
    for _ in range(args.repeats):
        tic = time.perf_counter()
        jax.block_until_ready(metrics(Xs, jnp.int32(0), margs))
        ms.append(time.perf_counter() - tic)
    metric_ms = 1e3 * float(np.median(ms))

    cached0, fresh0 = timed(0, False), timed(0, True)
    cached10, fresh10 = timed(10, False), timed(10, True)
    print(f"# {datetime.date.today()} {machine()}")
    print(f"# n = {n}, d = {d}, {m} samples per worker ({mb:.0f} MB of data), median of "
          f"{args.repeats} calls, milliseconds")
    print(f"{'call':<28}{'cached data':>14}{'re-uploaded':>14}")
    print(f"{'run(steps=0)':<28}{cached0:>14.1f}{fresh0:>14.1f}")
    print(f"{'run(steps=10)':<28}{cached10:>14.1f}{fresh10:>14.1f}")
    print(f"{'metrics alone (1 eval)':<28}{metric_ms:>14.1f}")
    print(f"fixed overhead of a call (run(steps=0) minus one evaluation): "
          f"{cached0 - metric_ms:.1f} ms cached, {fresh0 - metric_ms:.1f} ms re-uploaded")


if __name__ == "__main__":
    main()
