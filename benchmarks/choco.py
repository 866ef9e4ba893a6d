"""The two headline experiments of the Choco papers, on data available here.

Koloskova, Stich, Jaggi (ICML 2019) and Koloskova, Lin, Stich, Jaggi (ICLR 2020).

What it measures
----------------
**A. Average consensus** (ICML'19 section 5): ``ds.problems.consensus(25, 2000)`` (worker i starts
at its own N(0, I) vector) on ``ds.topology.ring(25, weights="uniform")`` (1/3 weights). For
top-1%, rand-1% and 8-bit qsgd (s = 256 levels, the papers' "b-bit" convention s = 2^b) it runs
``choco_gossip`` with γ from ``tune_gamma`` (1000 rounds, grid logspace(-3, 0, 20)) and
``naive_compressed_gossip`` (the spec's equation, same γ and compressor), plus exact gossip
(``choco_gossip(1, identity())``) as the reference. Reported per method: the tuned γ, bits per
round per worker, the error ``(1/n) Σ ||x_i − x̄_0||²`` relative to its start at several rounds,
the fitted linear rate (slope of log error per round while above 1e-9), and the rounds and bits
to reach a relative error of 1e-6.

**B. L2-regularised logistic regression** (ICML'19 section 6, ICLR'20 section 5):
``ds.problems.logistic_regression(9, "digits", partition=..., batch_size=32, l2=1e-3)`` for the
``"iid"`` and label-``"sorted"`` splits, on ``ring(9, weights="uniform")``. All methods use the
same constant learning rate (0.1, like the papers' initial rate); suboptimality is
``f(x̄) − f*`` with f* from ``ds.problems.optimum`` (L-BFGS). Methods: centralized SGD
(all-reduce), exact D-SGD, Choco-SGD with top-1% and with 4-bit qsgd (s = 16; γ from
``tune_gamma`` on the model's leaf sizes 640 and 10), and DCD-PSGD with unbiased rand-1%. Each
is the mean of ``--seeds`` seeds run as one vmapped program, for 2T steps (T = ``--steps``).
Reported: suboptimality at T/2, T and 2T; bits per step; and, for each method, the first step at
which it reaches exact D-SGD's suboptimality at step T, with the bits it has sent by then as a
fraction of D-SGD's bits at T (the claim of the papers: Choco-SGD top-1% needs at most ~2× the
steps and a small fraction of the bits).

Usage::

    python benchmarks/choco.py            # full run (a few minutes on 2 CPU cores)
    python benchmarks/choco.py --quick    # smoke run
    python benchmarks/choco.py --rounds 5000 --steps 1000 --seeds 3
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time

import jax
import numpy as np

# ---------------------------------------------------------------------------------------------
# machine description
from _common import cpu_model as _cpu_model  # noqa: E402

import decsim as ds
import decsim.compression as C
from decsim.algorithms import choco


def describe_machine() -> str:
    devices = ", ".join(sorted({f"{d.platform}:{d.device_kind}" for d in jax.devices()}))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{datetime.datetime.now().isoformat(timespec='seconds')} | {_cpu_model()}, "
            f"{os.cpu_count()} CPUs, load {load:.1f} | python {platform.python_version()}, "
            f"jax {jax.__version__} | devices {devices}")


def _table(headers, rows) -> str:
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    line = lambda r: "  ".join(
        c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))
    )  # noqa: E731
    return "\n".join(
        [line(cells[0]), "  ".join("-" * w for w in widths)] + [line(r) for r in cells[1:]]
    )


def _fmt(x, spec=".2e"):
    return "nan" if x is None or not np.isfinite(x) else format(x, spec)


# ---------------------------------------------------------------------------------------------
# A. consensus


CONSENSUS_COMPRESSORS = {
    "top-1%": C.top_k(0.01),
    "rand-1%": C.rand_k(0.01),
    "qsgd 8-bit": C.qsgd(256),
}


def linear_rate(steps, err, floor=1e-9):
    """Slope of log(err/err_0) per round over the second half of the run (where err > floor · err_0;
    over the whole run above the floor when the second half is below it): ≈ 0 for a method that
    has stalled, negative for one that still converges linearly."""
    rel = err / err[0]
    keep = (rel > floor) & (steps > 0)
    late = keep & (steps >= steps[-1] / 2)
    use = late if late.sum() >= 3 else keep
    if use.sum() < 3:
        return float("nan")
    return float(np.polyfit(steps[use], np.log(rel[use]), 1)[0])


def first_reach(steps, values, target):
    hit = np.flatnonzero(values <= target)
    return int(steps[hit[0]]) if hit.size else None


def consensus_experiment(n=25, d=2000, rounds=5000, seed=0, verbose=True):
    """Runs part A; returns ``{method: dict(gamma, bits, steps, error, tune_s, run_s)}``."""
    prob = ds.problems.consensus(n, d, seed=seed)
    topo = ds.topology.ring(n, weights="uniform")
    every = max(1, rounds // 100)
    out = {}

    def record(name, algo, gamma, tune_s):
        start = time.perf_counter()
        h = ds.run(algo, prob, topo, steps=rounds, eval_every=every, progress=False)
        out[name] = dict(
            gamma=gamma,
            steps=h.steps,
            error=h.metrics["consensus_error"],
            bits=h.metrics["bits"],
            tune_s=tune_s,
            run_s=time.perf_counter() - start,
        )
        if verbose:
            print(
                f"  {name:28s} gamma={gamma:.4g}  tune {tune_s:5.1f}s  run "
                f"{out[name]['run_s']:5.1f}s",
                flush=True,
            )

    record("exact gossip", choco.choco_gossip(1.0, C.identity()), 1.0, 0.0)
    for label, comp in CONSENSUS_COMPRESSORS.items():
        start = time.perf_counter()
        gamma = ds.algorithms.tune_gamma(topo, comp, d, seed=seed)
        tune_s = time.perf_counter() - start
        record(f"choco-gossip {label}", choco.choco_gossip(gamma, comp), gamma, tune_s)
        record(f"naive gossip {label}", choco.naive_compressed_gossip(gamma, comp), gamma, 0.0)
    return out


def consensus_table(res, rounds) -> str:
    marks = sorted({0, rounds // 10, rounds // 5, rounds // 2, rounds})
    rows = []
    for name, r in res.items():
        rel = r["error"] / r["error"][0]
        at = [rel[np.searchsorted(r["steps"], m)] for m in marks]
        t6 = first_reach(r["steps"], rel, 1e-6)
        bits_round = r["bits"][-1] / r["steps"][-1]
        rows.append(
            [name, f"{r['gamma']:.3g}", f"{bits_round:.0f}"]
            + [_fmt(a) for a in at]
            + [
                _fmt(linear_rate(r["steps"], r["error"]), ".2e"),
                "-" if t6 is None else t6,
                "-" if t6 is None else f"{t6 * bits_round:.3g}",
            ]
        )
    headers = (
        ["method", "gamma", "bits/round"]
        + [f"err@{m}" for m in marks]
        + ["late log-rate/round", "rounds to 1e-6", "bits to 1e-6"]
    )
    return _table(headers, rows)


# ---------------------------------------------------------------------------------------------
# B. logistic regression


def logistic_experiment(
    partition, steps=2000, seeds=(0, 1, 2), lr=0.1, batch_size=32, l2=1e-3, verbose=True
):
    """Runs part B for one split; returns ``(f_star, gammas, {method: History})``."""
    prob = ds.problems.logistic_regression(
        9, "digits", partition=partition, batch_size=batch_size, l2=l2
    )
    topo = ds.topology.ring(9, weights="uniform")
    _, f_star = ds.problems.optimum(prob)
    sizes = ds.tree.leaf_sizes(prob.params0)
    gammas = {}
    for label, comp in (("top-1%", C.top_k(0.01)), ("qsgd 4-bit", C.qsgd(16))):
        gammas[label] = ds.algorithms.tune_gamma(topo, comp, sizes)
    methods = {
        "centralized SGD": ds.algorithms.centralized_sgd(lr),
        "exact D-SGD": ds.algorithms.dsgd(lr),
        "Choco-SGD top-1%": choco.choco_sgd(lr, gammas["top-1%"], C.top_k(0.01)),
        "Choco-SGD qsgd 4-bit": choco.choco_sgd(lr, gammas["qsgd 4-bit"], C.qsgd(16)),
        "DCD-PSGD rand-1% (unbiased)": choco.dcd_psgd(lr, C.rand_k(0.01, unbiased=True)),
    }
    every = max(1, steps // 20)
    hists = {}
    for name, algo in methods.items():
        start = time.perf_counter()
        hists[name] = ds.run(
            algo, prob, topo, steps=2 * steps, eval_every=every, seeds=list(seeds), progress=False
        )
        if verbose:
            print(f"  {partition:6s} {name:28s} {time.perf_counter() - start:5.1f}s", flush=True)
    return f_star, gammas, hists


def mean_suboptimality(h, f_star):
    """Mean over seeds of f(x̄) − f*; NaN once any seed diverged."""
    return np.mean(h.metrics["loss"], axis=0) - f_star


def logistic_table(f_star, hists, steps) -> str:
    ref = hists["exact D-SGD"]
    at_T = np.searchsorted(ref.steps, steps)
    target = mean_suboptimality(ref, f_star)[at_T]
    ref_bits = ref.metrics["bits"][0, at_T]
    rows = []
    for name, h in hists.items():
        sub = mean_suboptimality(h, f_star)
        at = [sub[np.searchsorted(h.steps, m)] for m in (steps // 2, steps, 2 * steps)]
        bits_step = h.metrics["bits"][0, 1] / h.steps[1]  # per step (also for diverged runs)
        t = first_reach(h.steps, sub, target)
        bits_then = None if t is None else h.metrics["bits"][0, np.searchsorted(h.steps, t)]
        div = np.atleast_1d(h.diverged)
        div_at = np.atleast_1d(h.diverged_step)
        rows.append(
            [name]
            + [_fmt(a, ".3e") for a in at]
            + [
                _fmt(bits_step, ".0f"),
                "-" if t is None else f"{t} ({t / steps:.2f} T)",
                "-" if t is None else f"{bits_then:.3g} ({bits_then / ref_bits:.4f})",
                f"{int(div.sum())}/{div.size}"
                + (f" (step {int(div_at[div].min())})" if div.any() else ""),
            ]
        )
    headers = [
        "method",
        f"sub@{steps // 2}",
        f"sub@T={steps}",
        f"sub@{2 * steps}",
        "bits/step",
        "steps to D-SGD@T",
        "bits by then (/ D-SGD@T)",
        "diverged seeds",
    ]
    return _table(headers, rows)


# ---------------------------------------------------------------------------------------------


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5000, help="consensus rounds (part A)")
    parser.add_argument(
        "--steps",
        type=int,
        default=1000,
        help="T: D-SGD's reference step count; part B runs 2T steps",
    )
    parser.add_argument("--seeds", type=int, default=3, help="seeds per method (part B)")
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    parser.add_argument("--skip-consensus", action="store_true")
    parser.add_argument("--skip-logistic", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.steps, args.seeds = 500, 200, 1

    print("# benchmarks/choco.py")
    print(
        "command:",
        " ".join([os.path.basename(sys.executable), "benchmarks/choco.py"] + sys.argv[1:]),
    )
    print("machine:", describe_machine())
    total = time.perf_counter()
    if not args.skip_consensus:
        print(
            f"\n## A. consensus: ring(25, uniform), d = 2000, {args.rounds} rounds "
            "(error relative to the start)"
        )
        res = consensus_experiment(rounds=args.rounds)
        print()
        print(consensus_table(res, args.rounds))
    if not args.skip_logistic:
        for partition in ("iid", "sorted"):
            print(
                f"\n## B. logistic regression, digits, ring(9, uniform), {partition} split, "
                f"lr 0.1, batch 32, l2 1e-3, T = {args.steps}, 2T steps, mean of {args.seeds} seeds"
            )
            f_star, gammas, hists = logistic_experiment(
                partition, steps=args.steps, seeds=tuple(range(args.seeds))
            )
            print(
                f"\nf* = {f_star:.6f} (L-BFGS); tuned gamma: "
                + ", ".join(f"{k} {v:.4g}" for k, v in gammas.items())
            )
            print(logistic_table(f_star, hists, args.steps))
    print(f"\ntotal wall time {time.perf_counter() - total:.0f}s")


if __name__ == "__main__":
    main()
