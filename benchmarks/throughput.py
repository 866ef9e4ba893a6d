"""Throughput of the compiled runner: worker-steps per second for D-SGD as the worker count grows.

What it measures
----------------
``ds.algorithms.dsgd`` on ``ds.problems.mlp(n, "digits", hidden=(32,), batch_size=16)`` (iid
partition) over ``ds.topology.ring(n)``, for n = 1, 2, 4, ..., 256. For every n:

* ``compile_s``: ``History.compile_seconds`` of the *first* ``ds.run`` call at this n (trace +
  XLA compile of the init, segment and metrics programs). If the step count is then re-chosen (see
  below),
  the segment program is compiled once more; that extra time is reported as ``recompile_s``.
* steady-state speed: after a warm-up call with exactly the timed shapes (so nothing is compiled
  inside the timing), ``--repeats`` timed calls; ``History.run_seconds`` (which excludes
  compilation) gives ``steps/s`` and ``worker-steps/s = n * steps / run_seconds`` (median and best
  over the repeats).
* ``traces``: ``decsim.runner.trace_count()`` after the warm-up and after the timed repeats; the two
  must be equal (repeated calls with the same shapes never retrace).

``eval_every = steps``: each call evaluates the full-data metrics only at the start and the end, so
the timing is of the training steps, not of evaluation.

The step count per n is chosen so that one timed call takes at least ``--min-seconds`` (unless
``--steps`` fixes it): a short probe call, then one re-chosen step count if the probe was too short.

Finally one vmapped multi-seed call (``seeds=[0..7]`` at n=16 by default) is timed the same way;
its throughput is ``seeds * n * steps / run_seconds``.

Usage::

    python benchmarks/throughput.py                       # full run, a few minutes on 2 CPU cores
    python benchmarks/throughput.py --quick               # smoke run, well under 30 s
    python benchmarks/throughput.py --ns 1,16,256 --steps 2000 --repeats 3
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import statistics
import sys
import time

import jax
import numpy as np

import decsim as ds
from decsim.runner import trace_count

DATASET = "digits"
HIDDEN = (32,)
BATCH_SIZE = 16
LEARNING_RATE = 0.1
PROBE_STEPS = 200
MAX_STEPS = 1_000_000


# ---------------------------------------------------------------------------------------------
# machine description


from _common import cpu_model as _cpu_model  # noqa: E402


def _ram_gib() -> str:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return f"{int(line.split()[1]) / 2**20:.1f} GiB"
    except OSError:
        pass
    return "unknown"


def machine_description() -> list[str]:
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    devices = ", ".join(f"{d.platform}:{d.device_kind}" for d in jax.devices())
    return [
        f"date:     {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"cpu:      {_cpu_model()} ({os.cpu_count()} logical cores, {usable} usable)",
        f"ram:      {_ram_gib()}",
        f"os:       {platform.platform()}",
        f"python:   {platform.python_version()}",
        f"jax:      {jax.__version__}, backend={jax.default_backend()}, devices=[{devices}]",
        f"decsim:   {ds.__version__}",
    ]


# ---------------------------------------------------------------------------------------------
# measurement


def _param_count(problem) -> int:
    """Parameters of one worker's model (leaves of params0 are [n, ...])."""
    return int(sum(np.prod(np.shape(a)[1:]) for a in jax.tree.leaves(problem.params0)))


def _round_steps(x: float) -> int:
    """Round a step count up to 2 significant digits (keeps the numbers readable)."""
    x = max(int(math.ceil(x)), 1)
    scale = 10 ** max(len(str(x)) - 2, 0)
    return min(int(math.ceil(x / scale) * scale), MAX_STEPS)


def measure(n: int, *, seeds=None, steps=None, repeats: int, min_seconds: float) -> dict:
    """Time ``dsgd`` on the MLP/digits problem over ring(n); see the module docstring."""
    problem = ds.problems.mlp(
        n, DATASET, hidden=HIDDEN, batch_size=BATCH_SIZE, partition="iid", seed=0
    )
    topology = ds.topology.ring(n)
    algo = ds.algorithms.dsgd(LEARNING_RATE)
    n_seeds = 1 if seeds is None else len(seeds)

    def call(k):
        if seeds is None:
            return ds.run(algo, problem, topology, k, eval_every=k, seed=0, progress=False)
        return ds.run(algo, problem, topology, k, eval_every=k, seeds=seeds, progress=False)

    # First call at this n: its compile time is the one a user pays. Then a warm-up call with the
    # same shapes; if that is too short to time well, choose a larger step count once (compiling
    # the segment program again) and warm that up too.
    k = steps if steps is not None else PROBE_STEPS
    first = call(k)
    compile_s, recompile_s = first.compile_seconds, 0.0
    warm = call(k)
    if steps is None and warm.run_seconds < min_seconds:
        k = _round_steps(1.25 * k * min_seconds / max(warm.run_seconds, 1e-6))
        recompile_s += call(k).compile_seconds
        warm = call(k)
        if warm.run_seconds < 0.8 * min_seconds:  # rare (the probe was dominated by overhead)
            k = _round_steps(1.25 * k * min_seconds / max(warm.run_seconds, 1e-6))
            recompile_s += call(k).compile_seconds
            warm = call(k)
    if warm.compile_seconds != 0.0:
        raise RuntimeError(
            f"n={n}: the warm-up call compiled again ({warm.compile_seconds:.2f} s)."
        )

    traces_before = trace_count()
    times = []
    for _ in range(repeats):
        h = call(k)
        if h.compile_seconds != 0.0:
            raise RuntimeError(f"n={n}: a timed call compiled ({h.compile_seconds:.2f} s).")
        if np.any(h.diverged):
            raise RuntimeError(f"n={n}: the run diverged; lower LEARNING_RATE.")
        times.append(h.run_seconds)
    traces_after = trace_count()

    med, best = statistics.median(times), min(times)
    loss = np.asarray(h.metrics["loss"])
    return dict(
        n=n,
        seeds=n_seeds,
        d=_param_count(problem),
        steps=k,
        compile_s=compile_s,
        recompile_s=recompile_s,
        run_s=med,
        best_s=best,
        steps_per_s=k / med,
        wsteps_per_s=n_seeds * n * k / med,
        wsteps_per_s_best=n_seeds * n * k / best,
        traces_before=traces_before,
        traces_after=traces_after,
        loss0=float(np.ravel(loss[..., 0])[0]),
        loss_end=float(np.ravel(loss[..., -1])[0]),
    )


# ---------------------------------------------------------------------------------------------
# output


def _fmt_rate(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:,.1f}"


def format_table(rows: list[dict]) -> str:
    header = [
        "n",
        "d",
        "steps",
        "compile_s",
        "recompile_s",
        "run_s(med)",
        "steps/s",
        "worker-steps/s (med)",
        "worker-steps/s (best)",
        "traces warm->after",
    ]
    body = []
    for r in rows:
        flag = "" if r["traces_before"] == r["traces_after"] else "  RETRACED!"
        body.append(
            [
                str(r["n"]),
                str(r["d"]),
                str(r["steps"]),
                f"{r['compile_s']:.2f}",
                f"{r['recompile_s']:.2f}",
                f"{r['run_s']:.3f}",
                _fmt_rate(r["steps_per_s"]),
                _fmt_rate(r["wsteps_per_s"]),
                _fmt_rate(r["wsteps_per_s_best"]),
                f"{r['traces_before']}->{r['traces_after']}{flag}",
            ]
        )
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(header)]
    line = lambda cells: "  ".join(c.rjust(w) for c, w in zip(cells, widths))
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(b) for b in body])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--ns",
        default=None,
        help="comma-separated worker counts (default 1,2,4,...,256; --quick: 1,4,16,64)",
    )
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help="fixed steps per call for every n (default: chosen per n so that one timed "
        "call takes >= --min-seconds)",
    )
    p.add_argument(
        "--repeats", type=int, default=None, help="timed calls per n (default 5; --quick 2)"
    )
    p.add_argument(
        "--min-seconds",
        type=float,
        default=None,
        help="target duration of one timed call (default 0.6; --quick 0.1)",
    )
    p.add_argument("--seeds-n", type=int, default=16, help="n for the vmapped multi-seed line")
    p.add_argument("--n-seeds", type=int, default=8, help="number of seeds for the vmapped line")
    p.add_argument("--quick", action="store_true", help="smoke run (well under 30 s)")
    a = p.parse_args(argv)

    ns = (
        [int(s) for s in a.ns.split(",") if s.strip()]
        if a.ns
        else ([1, 4, 16, 64] if a.quick else [2**i for i in range(9)])
    )
    repeats = a.repeats if a.repeats is not None else (2 if a.quick else 5)
    min_seconds = a.min_seconds if a.min_seconds is not None else (0.1 if a.quick else 0.6)
    if a.steps is not None and a.steps < 1:
        p.error("--steps must be a positive integer")
    if repeats < 1:
        p.error("--repeats must be >= 1")

    t_start = time.perf_counter()
    print("decsim throughput benchmark" + (" (--quick)" if a.quick else ""))
    for line in machine_description():
        print("  " + line)
    print(
        f"  workload: dsgd(lr={LEARNING_RATE}) on mlp(hidden={list(HIDDEN)}, {DATASET}, "
        f"batch_size={BATCH_SIZE} per worker, partition=iid) over ring(n), float32"
    )
    print(
        f"  eval_every = steps (metrics only at start and end of each call, so evaluation does "
        f"not dominate); {repeats} timed calls per n after a warm-up call with the same shapes; "
        f"steps chosen so one call takes >= {min_seconds} s"
        + (f" (fixed --steps {a.steps})" if a.steps else "")
    )
    print(flush=True)

    rows = []
    for n in ns:
        r = measure(n, steps=a.steps, repeats=repeats, min_seconds=min_seconds)
        rows.append(r)
        print(
            f"  n={n:<4d} steps={r['steps']:<7d} compile {r['compile_s']:.2f}s  "
            f"{_fmt_rate(r['wsteps_per_s'])} worker-steps/s  traces {r['traces_before']}->"
            f"{r['traces_after']}  loss {r['loss0']:.3f}->{r['loss_end']:.3f}",
            flush=True,
        )

    print()
    print(format_table(rows))
    print()
    print(
        "  compile_s: History.compile_seconds of the first call at this n (init, segment and "
        "metrics programs)"
    )
    print("  recompile_s: segment program compiled again after the probe chose a larger step count")
    print(
        "  run_s: median History.run_seconds (excludes compilation); worker-steps/s = n*steps/run_s"
    )
    print(
        "  traces warm->after: trace_count() after the warm-up call and after the timed calls "
        "(equal = no retrace)"
    )

    seeds = list(range(a.n_seeds))
    r = measure(a.seeds_n, seeds=seeds, steps=a.steps, repeats=repeats, min_seconds=min_seconds)
    single = next((x for x in rows if x["n"] == a.seeds_n), None)
    ratio = (
        f"; {r['wsteps_per_s'] / single['wsteps_per_s']:.2f}x the single-seed worker-steps/s "
        f"at n={a.seeds_n}"
        if single
        else ""
    )
    print()
    print(
        f"vmapped seeds: seeds=[0..{a.n_seeds - 1}] at n={a.seeds_n}: steps={r['steps']}, "
        f"compile {r['compile_s']:.2f}s (+{r['recompile_s']:.2f}s), run {r['run_s']:.3f}s "
        f"(median), "
        f"{_fmt_rate(r['wsteps_per_s'])} worker-steps/s (seeds*n*steps/s; best "
        f"{_fmt_rate(r['wsteps_per_s_best'])}){ratio}; traces {r['traces_before']}->"
        f"{r['traces_after']}"
    )
    print(f"\ntotal benchmark time: {time.perf_counter() - t_start:.1f} s")
    retraced = [x["n"] for x in rows + [r] if x["traces_before"] != x["traces_after"]]
    if retraced:
        print(f"ERROR: retrace during repeated calls at n={retraced}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
