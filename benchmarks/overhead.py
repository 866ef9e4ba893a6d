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

    def call(steps, clear):
        if clear:
            _programs._DATA.clear()  # benchmark only: the old behaviour, re-upload every call
        tic = time.perf_counter()
        h = ds.run(algo, prob, topo, steps=steps, eval_every=max(steps, 1), progress=False)
        seconds = time.perf_counter() - tic
        assert h.compile_seconds == 0.0
        return 1e3 * seconds

    ds.run(algo, prob, topo, steps=0, progress=False)  # compile everything once
    ds.run(algo, prob, topo, steps=10, eval_every=10, progress=False)
    # metrics alone: the compiled metrics program on one snapshot, as run() calls it
    metrics = next(v for k, v in _programs._PROGRAMS.items() if k[0] == "metrics")
    margs = {k: v for k, v in _programs.device_data(prob).items()
             if k in ("data", "counts", "test", "aux")}
    Xs = jnp.zeros((1, n, d), jnp.float32)

    def metrics_alone():
        tic = time.perf_counter()
        np.asarray(metrics(Xs, jnp.int32(0), margs)["loss"])
        return 1e3 * (time.perf_counter() - tic)

    rows = {"cached0": [], "fresh0": [], "cached10": [], "fresh10": [], "metrics": [],
            "overhead_cached": [], "overhead_fresh": []}
    for _ in range(args.repeats):  # interleaved, so load on a shared machine hits all alike
        m = metrics_alone()
        c0, f0 = call(0, False), call(0, True)
        rows["metrics"].append(m)
        rows["cached0"].append(c0)
        rows["fresh0"].append(f0)
        rows["overhead_cached"].append(c0 - m)
        rows["overhead_fresh"].append(f0 - m)
        rows["cached10"].append(call(10, False))
        rows["fresh10"].append(call(10, True))
    med = {k: float(np.median(v)) for k, v in rows.items()}
    print(f"# {datetime.date.today()} {machine()}")
    print(f"# n = {n}, d = {d}, {args.samples} samples per worker ({mb:.0f} MB of data), median of "
          f"{args.repeats} interleaved repeats, milliseconds")
    print(f"{'call':<28}{'cached data':>14}{'re-uploaded':>14}")
    print(f"{'run(steps=0)':<28}{med['cached0']:>14.1f}{med['fresh0']:>14.1f}")
    print(f"{'run(steps=10)':<28}{med['cached10']:>14.1f}{med['fresh10']:>14.1f}")
    print(f"{'metrics alone (1 eval)':<28}{med['metrics']:>14.1f}")
    print(f"{'fixed overhead':<28}{med['overhead_cached']:>14.1f}{med['overhead_fresh']:>14.1f}"
          "   (run(steps=0) minus the evaluation it makes)")


if __name__ == "__main__":
    main()
