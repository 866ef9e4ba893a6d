"""Compile cost of a study: several algorithms on one problem, as a comparison notebook runs them.

For each algorithm, in order, prints the seconds ``ds.run`` spent compiling
(``History.compile_seconds``)
and the programs it traced, by kind (``decsim.runner.TRACE_COUNTS``): ``init`` and ``segment`` are
per algorithm; ``metrics`` (loss and gradient on the full data, consensus, test metrics) depends
on the problem alone, so only the first algorithm on a problem compiles it. Then it runs every
algorithm again and checks that nothing is traced a second time.

    python benchmarks/compile.py [--n 16] [--steps 400] [--eval-every 20] [--quick]
"""

import argparse
import datetime
import time

from _common import machine


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=16)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--eval-every", type=int, default=20)
    p.add_argument("--quick", action="store_true", help="three algorithms only")
    args = p.parse_args()

    import decsim as ds
    from decsim import runner

    n = args.n
    prob = ds.problems.mlp(n, "digits", hidden=(32,), batch_size=16, seed=0)
    ring, lazy = ds.topology.ring(n), ds.topology.ring(n, weights="lazy")
    C, A = ds.compression, ds.algorithms
    algos = [
        ("dsgd", A.dsgd(0.1), ring),
        ("gradient_tracking", A.gradient_tracking(0.1), ring),
        ("d2 (lazy W)", A.d2(0.1), lazy),
    ]
    if not args.quick:
        algos += [
            ("dpsgd", A.dpsgd(0.1), ring),
            ("exact_diffusion", A.exact_diffusion(0.1), ring),
            ("choco_sgd top-1%", A.choco_sgd(0.1, 0.05, C.top_k(0.01)), ring),
            ("detag R=2", A.detag(0.1, rounds=2), ring),
            ("damsgrad", A.damsgrad(0.01), ring),
        ]

    print(
        f"# compile cost of {len(algos)} algorithms on one problem, "
        f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC"
    )
    print(f"# {machine()}")
    print(f"# mlp 64-32-10 on digits, n={n}, {args.steps} steps, eval_every={args.eval_every}")
    print(f"{'algorithm':20s} {'compile s':>10s} {'run s':>7s}  traced (init, segment, metrics)")
    total, start = 0.0, time.perf_counter()
    for name, algo, topo in algos:
        before = dict(runner.TRACE_COUNTS)
        h = ds.run(algo, prob, topo, steps=args.steps, eval_every=args.eval_every, progress=False)
        traced = tuple(
            runner.TRACE_COUNTS[k] - before.get(k, 0) for k in ("init", "segment", "metrics")
        )
        total += h.compile_seconds
        print(f"{name:20s} {h.compile_seconds:10.2f} {h.run_seconds:7.3f}  {traced}")
    wall = time.perf_counter() - start
    print(f"total compile {total:.2f} s of {wall:.2f} s wall")
    before = runner.trace_count()
    for _, algo, topo in algos:
        ds.run(algo, prob, topo, steps=args.steps, eval_every=args.eval_every, progress=False)
    again = runner.trace_count() - before
    print(f"second pass over the same runs: {again} programs traced")
    if again:
        raise SystemExit("a repeated run traced again")


if __name__ == "__main__":
    main()
