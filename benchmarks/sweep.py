"""What grouping saves in a sweep, what the result store costs, and where `decsim speedup` spends
its time.

What it measures
----------------
1. **Grouping.** A sweep of 4 seeds x 3 learning rates (12 runs) of D-SGD on
   ``logistic_regression(16, "digits", batch_size=16)`` over ``ring(16)``, ``--steps`` steps,
   timed three ways, each from an empty program cache (``decsim.runner.clear_cache()``):

   * ``ds.sweep``: all 12 runs (seeds and learning rates) are one vmapped call (one init + one
     segment program traced);
   * ``one run per config``: 12 ``ds.run(..., seed=s)`` calls (the learning rates and seeds reuse
     one single-seed program, but the seeds run one after the other);
   * ``recompile per run``: the same 12 calls with the cache cleared before each, which is what a
     script pays when nothing shares compiled programs.

   Reported: wall seconds, programs traced, and seconds per run.
2. **Store.** Per run: writing ``<id>.json`` + ``<id>.npz`` atomically (fsync included), checking
   a run is finished (JSON parse + SHA-256 of the NPZ), and ``load_results`` of the folder.
3. **Resume.** The same sweep run again: every run found finished, nothing computed.
4. **Main job** (skipped with ``--quick``): ``decsim speedup`` defaults via
   ``ds.speedup_study(out_dir=...)``, cold and then resumed, with the compile and run seconds that
   the stored runs recorded.

Usage::

    python benchmarks/sweep.py            # about 2 minutes on 2 CPU cores
    python benchmarks/sweep.py --quick    # smoke run (no main job), well under a minute
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import tempfile
import time


def machine() -> str:
    import jax

    dev = jax.devices()[0]
    return (
        f"{platform.node()} | {platform.platform()} | Python {platform.python_version()} | "
        f"{os.cpu_count()} CPU cores | jax {jax.__version__} on {dev.platform} "
        f"({dev.device_kind}) | "
        f"{datetime.datetime.now().isoformat(timespec='seconds')}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--quick", action="store_true", help="small settings, no main job")
    args = parser.parse_args()
    steps = 100 if args.quick else args.steps

    import decsim as ds
    from decsim import runner, study

    print(machine())
    base = {
        "algorithm": {"name": "dsgd", "learning_rate": 0.1},
        "problem": {
            "name": "logistic_regression",
            "dataset": "digits",
            "batch_size": 16,
            "seed": 0,
        },
        "topology": "ring",
        "n_workers": 16,
        "steps": steps,
        "eval_every": max(1, steps // 20),
    }
    lrs, seeds = [0.05, 0.1, 0.2], [0, 1, 2, 3]
    grid = {"algorithm.learning_rate": lrs, "seed": seeds}
    rows = []

    with tempfile.TemporaryDirectory() as tmp:
        runner.clear_cache()
        t0, tr0 = time.perf_counter(), runner.trace_count()
        report = ds.sweep(base, grid, os.path.join(tmp, "a"), progress=False)
        wall = time.perf_counter() - t0
        comp = ran = 0.0
        for p in os.listdir(os.path.join(tmp, "a")):
            if p.endswith(
                ".json"
            ):  # each record holds its call's seconds; its share is 1/group_size
                r = json.load(open(os.path.join(tmp, "a", p)))
                comp += r["compile_seconds"] / r["group_size"]
                ran += r["run_seconds"] / r["group_size"]
        rows.append(
            (
                "ds.sweep (1 call, 12 vmapped runs)",
                wall,
                comp,
                ran,
                runner.trace_count() - tr0,
                report.ran,
            )
        )

        built = ds.config.build(base)
        for how, fresh in (
            ("one ds.run per config (12 calls)", False),
            ("recompile per run (12 calls)", True),
        ):
            runner.clear_cache()
            t0, tr0, comp, ran = time.perf_counter(), runner.trace_count(), 0.0, 0.0
            for lr in lrs:
                for s in seeds:
                    if fresh:
                        runner.clear_cache()
                    h = ds.run(
                        ds.algorithms.dsgd(lr),
                        built.problem,
                        built.topology,
                        steps,
                        eval_every=base["eval_every"],
                        seed=s,
                        progress=False,
                    )
                    comp, ran = comp + h.compile_seconds, ran + h.run_seconds
            rows.append((how, time.perf_counter() - t0, comp, ran, runner.trace_count() - tr0, 12))

        print(
            f"\n1. grouping: D-SGD, logistic regression / digits, n = 16, ring, {steps} steps, "
            f"4 seeds x 3 learning rates"
        )
        print(
            f"{'how':38s} {'wall_s':>7s} {'compile_s':>9s} {'run_s':>6s} {'traced':>6s} "
            f"{'s/run':>6s}"
        )
        for how, secs, comp, ran, traced, runs in rows:
            print(f"{how:38s} {secs:7.2f} {comp:9.2f} {ran:6.2f} {traced:6d} {secs / runs:6.3f}")

        out = os.path.join(tmp, "a")
        planned = study.plan(base, grid)
        t0 = time.perf_counter()
        for r in planned:
            assert study.is_complete(out, r.id)
        check_ms = 1e3 * (time.perf_counter() - t0) / len(planned)
        hist = ds.run(
            ds.algorithms.dsgd(0.1),
            built.problem,
            built.topology,
            steps,
            eval_every=base["eval_every"],
            seeds=[0],
            progress=False,
        )
        scratch = os.path.join(tmp, "w")
        os.makedirs(scratch)
        t0 = time.perf_counter()
        for r in planned:
            study.write_run(scratch, r, hist, 0, facts={})
        write_ms = 1e3 * (time.perf_counter() - t0) / len(planned)
        t0 = time.perf_counter()
        frame = ds.load_results(out)
        load_s = time.perf_counter() - t0
        size = sum(os.path.getsize(os.path.join(out, p)) for p in os.listdir(out)) / len(planned)
        print(
            f"\n2. store: write {write_ms:.2f} ms/run (JSON + NPZ, atomic, fsync), check finished "
            f"{check_ms:.2f} ms/run, load_results {load_s:.3f} s for {len(planned)} runs "
            f"({len(frame)} rows), {size / 1024:.1f} KiB/run"
        )

        t0 = time.perf_counter()
        again = ds.sweep(base, grid, out, progress=False)
        print(
            f"\n3. resume: {again.skipped} of {again.total} runs found finished, {again.ran} "
            f"computed, "
            f"{time.perf_counter() - t0:.2f} s"
        )

        if not args.quick:
            study = os.path.join(tmp, "speedup")
            t0 = time.perf_counter()
            res = ds.speedup_study(out_dir=study, progress=False)
            cold = time.perf_counter() - t0
            recs = [
                json.load(open(os.path.join(study, "runs", p)))
                for p in os.listdir(os.path.join(study, "runs"))
                if p.endswith(".json")
            ]
            # compile/run seconds are recorded per group and repeated on each of its seeds
            groups = {}
            for r in recs:
                groups[r["group"]] = (r["compile_seconds"], r["run_seconds"])
            compile_s = sum(c for c, _ in groups.values())
            run_s = sum(t for _, t in groups.values())
            t0 = time.perf_counter()
            ds.speedup_study(out_dir=study, progress=False)
            warm = time.perf_counter() - t0
            t = res.table
            torus16 = t[(t["n"] == 16) & (t["topology"] == "torus")]["speedup"].iloc[0]
            print(
                f"\n4. decsim speedup (defaults: {len(groups)} vmapped calls, {len(recs)} runs): "
                f"cold {cold:.1f} s (compile {compile_s:.1f} s, run {run_s:.1f} s, the rest: data, "
                f"f* references, figures), resumed {warm:.1f} s; "
                f"n = 16 torus speedup {torus16:.2f}"
            )


if __name__ == "__main__":
    main()
