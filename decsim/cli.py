"""The ``decsim`` command line.

    decsim run CONFIG.toml [--out DIR]
    decsim sweep SWEEP.toml --out DIR [--shard i/k] [--rerun]
    decsim compare CONFIG.toml [--out DIR] [--quiet]
    decsim plot DIR [--out DIR] [--x step] [--y loss]
    decsim speedup [--out DIR] [--algorithms dsgd,gradient_tracking] [--ns 1,2,4,8,16,32]
                   [--topologies ring,torus,complete] [--steps 3000] ...
    decsim topology ring 16 [--weights uniform]
    decsim --version

Errors in the input (unknown names, bad values) print one line and exit with status 2 before
anything is compiled.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Sequence
from typing import Optional


def _ints(text: str) -> tuple:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None


def _names(text: str) -> tuple:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def _parser() -> argparse.ArgumentParser:
    from . import __version__
    from .study.speedup import SPEEDUP_DEFAULTS as D

    p = argparse.ArgumentParser(
        prog="decsim", description="Decentralized-training simulator on JAX."
    )
    p.add_argument("--version", action="version", version=f"decsim {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser(
        "run",
        help="run one config (TOML) and print its final metrics",
        description="Run the config in a TOML file (keys algorithm, problem, "
        "topology, n_workers, steps, eval_every, seed or seeds; see "
        "decsim.config) and print the final metrics.",
    )
    r.add_argument("config", help="TOML file with one run config")
    r.add_argument("--out", default=None, help="also store the run (JSON + NPZ) in this folder")
    r.add_argument("--quiet", action="store_true", help="no progress bar")

    w = sub.add_parser(
        "sweep",
        help="run a grid of configs into a resumable result store",
        description="Run the product of [grid] around [base] (a run config); each "
        "finished run is stored in --out; rerunning resumes.",
    )
    w.add_argument("spec", help="TOML file with a [base] run config and a [grid] of lists")
    w.add_argument("--out", default=None, help="result folder (default: <spec name>-results)")
    w.add_argument(
        "--shard",
        default=None,
        help="i/k: run the i-th (0-based) of k deterministic shares of the grid (job arrays)",
    )
    w.add_argument("--rerun", action="store_true", help="recompute runs already in the store")
    w.add_argument("--save-params", action="store_true", help="store final parameters too")
    w.add_argument("--quiet", action="store_true", help="no progress bar")

    cp = sub.add_parser(
        "compare",
        help="a fair comparison: tune every algorithm, evaluate on fresh seeds, tabulate",
        description="Tune each [[algorithm]] on a grid over the tuning seeds, run the chosen "
        "settings on the evaluation seeds and write tables (CSV, Markdown, LaTeX) and figures "
        "(docs/reference/comparison.md); rerunning resumes.",
    )
    cp.add_argument("config", help="TOML file with [compare], [base] and [[algorithm]] tables")
    cp.add_argument("--out", default=None, help="output folder (default: <config name>-compare)")
    cp.add_argument("--quiet", action="store_true", help="no progress bar")

    pl = sub.add_parser("plot", help="write the figures of a sweep folder as PNGs")
    pl.add_argument("dir", help="a sweep result folder")
    pl.add_argument("--out", default=None, help="where to write the PNGs (default: DIR)")
    pl.add_argument("--x", default="step", help="step, grad_evals, comm_rounds or bits")
    pl.add_argument(
        "--y", default=None, help="metric (default: suboptimality when known, else loss)"
    )

    s = sub.add_parser(
        "speedup",
        help="linear-speedup study (the main job) on embedded defaults",
        description="Run algorithms for several worker counts and topologies on "
        "real data (a resumable sweep in OUT/runs); print the speedup "
        "table with efficiency, fitted rate exponent and transient; write "
        "figures.",
    )
    s.add_argument("--out", default="decsim-speedup", help="output folder (default: %(default)s)")
    s.add_argument("--ns", type=_ints, default=D["ns"], help="worker counts, e.g. 1,2,4,8")
    s.add_argument(
        "--topologies",
        type=_names,
        default=D["topologies"],
        help="comma-separated generator names (default: ring,torus,complete)",
    )
    s.add_argument(
        "--algorithms",
        type=_names,
        default=D["algorithms"],
        dest="algorithms",
        help="comma-separated algorithms that take only a learning "
        "rate, e.g. dsgd,gradient_tracking,exact_diffusion (default: dsgd)",
    )
    s.add_argument("--steps", type=int, default=D["steps"])
    s.add_argument("--eval-every", type=int, default=D["eval_every"])
    s.add_argument("--seeds", type=int, default=len(D["seeds"]), help="number of seeds (vmapped)")
    s.add_argument("--lr", type=float, default=D["learning_rate"], help="initial learning rate")
    s.add_argument(
        "--decay-steps",
        type=float,
        default=D["decay_steps"],
        help="lr_t = lr / (1 + t / decay_steps); 0 for a constant step",
    )
    s.add_argument("--batch-size", type=int, default=D["batch_size"])
    s.add_argument("--dataset", default=D["dataset"], help="digits or breast_cancer")
    s.add_argument("--partition", default=D["partition"], help="iid, dirichlet, sorted, shards")
    s.add_argument("--l2", type=float, default=D["l2"], help="ridge weight (strong convexity)")
    s.add_argument("--target-factor", type=float, default=D["target_factor"])
    s.add_argument(
        "--reference",
        default=D["reference"],
        help="algorithm the transient is measured against ('' for none)",
    )
    s.add_argument("--rerun", action="store_true", help="recompute runs already stored in OUT/runs")
    s.add_argument("--quiet", action="store_true", help="no progress bar")

    t = sub.add_parser("topology", help="print a topology's size, degrees and spectra")
    t.add_argument(
        "name",
        help="ring, torus, grid, complete, star, hypercube, exponential, "
        "erdos_renyi, random_geometric, social, directed_ring, directed_exponential, "
        "random_directed",
    )
    t.add_argument("n", type=int, nargs="?", default=None, help="number of workers")
    t.add_argument("--weights", default="metropolis", help="metropolis, uniform or lazy")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--p", type=float, default=None, help="edge probability (erdos_renyi)")
    t.add_argument("--radius", type=float, default=None, help="radius (random_geometric)")
    t.add_argument("--out-degree", type=int, default=2, help="out-degree (random_directed)")
    return p


def _check_file(path: str, what: str) -> None:
    """The command's input file must be a readable file (not a folder)."""
    if os.path.isdir(path):
        raise ValueError(f"{path!r} is a folder; give the path of a {what} file.")
    if not os.path.isfile(path):
        raise ValueError(f"no such file: {path!r}; give the path of a {what} file.")


def _check_out(path: str) -> None:
    """``--out`` must be a folder that can be created and written, checked before any computation
    so that no work is lost at the end."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"--out {path!r} is a file, not a folder; give a folder to write to.")
    try:
        os.makedirs(path, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".decsim-probe-")
        os.close(fd)
        os.remove(probe)
    except OSError as err:
        raise ValueError(
            f"--out {path!r} cannot be written ({err.strerror or err}); give a "
            "folder you can write to."
        ) from None


def _cmd_speedup(args) -> int:
    from .study.speedup import speedup_study

    _check_out(args.out)

    res = speedup_study(
        out_dir=args.out,
        progress=not args.quiet,
        ns=args.ns,
        topologies=args.topologies,
        algorithms=args.algorithms,
        steps=args.steps,
        eval_every=args.eval_every,
        seeds=tuple(range(args.seeds)),
        learning_rate=args.lr,
        decay_steps=args.decay_steps,
        batch_size=args.batch_size,
        dataset=args.dataset,
        partition=args.partition,
        l2=args.l2,
        target_factor=args.target_factor,
        reference=args.reference or None,
        rerun=args.rerun,
    )
    cfg = res.config
    lr = (
        f"{cfg['learning_rate']:g}/(1+t/{cfg['decay_steps']:g})"
        if cfg["decay_steps"] > 0
        else f"{cfg['learning_rate']:g}"
    )
    print(
        f"decsim speedup: {', '.join(cfg['algorithms'])} on logistic regression / {cfg['dataset']} "
        f"({cfg['partition']}, batch {cfg['batch_size']} per worker, l2 {cfg['l2']:g}), lr {lr}, "
        f"{cfg['steps']} steps, {len(cfg['seeds'])} seeds"
    )
    print(
        f"target: smoothed suboptimality f(x̄) − f* <= {res.target:.4g} "
        f"({cfg['target_factor']:g} x the final value of one worker)"
    )
    print(
        "exponent: b in log(f − f*) = a + b log(n t) on the last "
        f"{cfg['fit_tail']:.0%} of each run, 95% interval over seeds (theory for this strongly "
        "convex problem with step ∝ 1/t: −1)"
    )
    print(
        f"transient: steps until the smoothed f − f* stays within {cfg['transient_tol']:.0%} of "
        f"{cfg['reference'] or '(no reference)'} with the same n (NaN: not within the run)\n"
    )
    print(res.format_table())
    t = res.table
    for label in dict.fromkeys(t["algorithm"]):
        for topo in ("torus", "ring"):
            row = t[(t["algorithm"] == label) & (t["topology"] == topo) & (t["n"] == 16)]
            if len(row):
                r = row.iloc[0]
                print(
                    f"\n{label} at n = 16 on the {topo} ({r['graph']}, gap "
                    f"{r['spectral_gap']:.3g}): "
                    f"speedup {r['speedup']:.2f}, efficiency {r['efficiency']:.2f}"
                )
                break
    print(
        f"\n{cfg['seconds']:.1f} s ({cfg['runs_computed']} runs computed, {cfg['runs_reused']} "
        f"reused from {os.path.join(args.out, 'runs')}); wrote:"
    )
    for path in res.files:
        print(f"  {path}")
    return 0


def _final_table(hist) -> str:
    import numpy as np
    import pandas as pd

    names = [k for k in hist.metrics if k not in ("grad_evals", "comm_rounds", "bits")]
    names += ["grad_evals", "comm_rounds", "bits"]
    seeds = hist.seeds if hist.batched else [hist.seeds]
    rows = []
    finals = {k: np.atleast_1d(hist.final(k)) for k in names}
    for i, seed in enumerate(seeds):
        rows.append(
            {
                "seed": seed,
                **{k: finals[k][i] for k in names},
                "diverged": bool(np.atleast_1d(hist.diverged)[i]),
            }
        )
    return pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.5g}")


def _cmd_run(args) -> int:
    from . import config
    from .study.grid import PlannedRun, group_id, run_id
    from .study.store import problem_facts, write_run

    _check_file(args.config, "CONFIG.toml")
    if args.out:
        _check_out(args.out)
    built = config.build(config.load(args.config))
    hist = built.run(progress=not args.quiet)
    c = built.config
    print(
        f"{hist.config['algorithm']} on {hist.config['problem']} over {hist.config['topology']} "
        f"(n = {c['n_workers']}, gap {hist.config['spectral_gap']:.4g}), {c['steps']} steps; "
        f"compile {hist.compile_seconds:.2f} s, run {hist.run_seconds:.2f} s\n"
    )
    print("final metrics (last evaluation):")
    print(_final_table(hist))
    if args.out:
        seeds = c["seeds"] if "seeds" in c else [c["seed"]]
        facts = problem_facts(built.problem)
        facts.update(lam=float(built.topology.lam), p=float(built.topology.p))
        base = {k: v for k, v in c.items() if k not in ("seed", "seeds")}
        for i, seed in enumerate(seeds):
            one = dict(base, seed=seed)
            planned = PlannedRun(run_id(one), group_id(one), one)
            path = write_run(args.out, planned, hist, i, facts=facts, group_size=len(seeds))
            print(f"stored {path}")
    return 0


def _cmd_sweep(args) -> int:
    from .study.grid import parse_shard
    from .study.sweep import sweep_file

    _check_file(args.spec, "SWEEP.toml")
    parse_shard(args.shard)  # a bad --shard fails before anything runs
    if args.out:
        _check_out(args.out)
    rep = sweep_file(
        args.spec,
        args.out,
        shard=args.shard,
        progress=not args.quiet,
        rerun=args.rerun,
        save_params=args.save_params,
    )
    shard = f" (shard {args.shard})" if args.shard else ""
    print(
        f"decsim sweep{shard}: {rep.total} runs, {rep.skipped} already finished, {rep.ran} "
        f"computed "
        f"({rep.diverged} diverged) in {rep.seconds:.1f} s; results in {rep.out_dir}"
    )
    print(
        f"read them with decsim.load_results({rep.out_dir!r}); draw them with `decsim plot "
        f"{rep.out_dir}`"
    )
    return 0


def _cmd_compare(args) -> int:
    import warnings

    from .study.compare import CompareWarning, compare, compare_plan

    _check_file(args.config, "CONFIG.toml")
    compare_plan(args.config)  # a bad spec fails before the output folder is made
    out = args.out or os.path.splitext(os.path.basename(args.config))[0] + "-compare"
    _check_out(out)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CompareWarning)  # printed below, with the table
        res = compare(args.config, out, progress=not args.quiet)
    print(res.markdown())
    for note in res.warnings:
        print(f"warning: {note}")
    print(f"\n{res.runs_computed} runs computed, {res.runs_reused} reused from {res.store}; "
          f"wrote:")
    for path in res.files.values():
        print(f"  {path}")
    return 0


def _cmd_plot(args) -> int:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from . import plot
    from .study.store import load_results

    if not os.path.isdir(args.dir):
        raise ValueError(
            f"{args.dir!r} is not a folder; give a sweep result folder (decsim sweep --out DIR)."
        )
    out = args.out or args.dir
    _check_out(out)
    frame = load_results(args.dir)
    if len(frame) == 0:
        raise ValueError(
            f"{args.dir!r} holds no finished runs (no intact <id>.json + <id>.npz pairs)."
        )
    figs = plot.sweep_figures(frame, x=args.x, y=args.y)
    print(f"{frame['run'].nunique()} runs in {args.dir}; wrote:")
    for name, fig in figs.items():
        path = os.path.join(out, f"{name}.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        print(f"  {path}")
    return 0


def _print_directed(T, args, n) -> int:
    if args.name == "random_directed":
        topo = T.random_directed(n, args.out_degree, seed=args.seed)
    else:
        topo = getattr(T, args.name)(n)
    s = topo.summary()
    print(f"{s['name']}: n = {s['n']}, arcs = {s['arcs']}, out-degree min/max = "
          f"{s['out_degree_min']}/{s['out_degree_max']}, in-degree min/max = "
          f"{s['in_degree_min']}/{s['in_degree_max']}")
    print(f"  lam (push B) = {s['lam_push']:.6f}   (second-largest eigenvalue modulus)")
    print(f"  lam (pull A) = {s['lam_pull']:.6f}")
    print(f"  doubly stochastic: {s['doubly_stochastic']}   (directed: use sgp or push_pull)")
    return 0


def _cmd_topology(args) -> int:
    from . import topology as T

    options = {}
    if args.name == "erdos_renyi":
        options["p"] = args.p if args.p is not None else 0.3
    if args.name == "random_geometric":
        options["radius"] = args.radius if args.radius is not None else 0.4
    n = args.n
    if n is None:
        if args.name != "social":
            raise ValueError(
                f"topology {args.name} needs a number of workers, e.g. "
                f"`decsim topology {args.name} 16`."
            )
        n = 32
    if args.name in T.directed.GENERATORS:
        return _print_directed(T, args, n)
    topo = T.by_name(args.name, n, seed=args.seed, weights=args.weights, **options)
    s = topo.summary()
    print(
        f"{s['name']}: n = {s['n']}, edges = {s['edges']}, degree min/mean/max = "
        f"{s['degree_min']}/{s['degree_mean']:.3g}/{s['degree_max']}"
    )
    print(f"  lambda_2     = {s['lambda_2']:.6f}")
    print(f"  lambda_min   = {s['lambda_min']:.6f}")
    print(f"  lam          = {s['lam']:.6f}   (||W - J||_2)")
    print(f"  spectral_gap = {s['spectral_gap']:.6f}   (1 - lam)")
    print(f"  beta         = {s['beta']:.6f}   (||I - W||_2)")
    print(f"  p            = {s['p']:.6f}   (1 - lam^2)")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the ``decsim`` command line on ``argv`` (``sys.argv[1:]`` when ``None``).

    Returns the exit status: 0 on success, 2 for bad input (one line on stderr, before anything
    is compiled).
    """
    args = _parser().parse_args(argv)
    commands = {
        "speedup": _cmd_speedup,
        "topology": _cmd_topology,
        "run": _cmd_run,
        "sweep": _cmd_sweep,
        "plot": _cmd_plot,
        "compare": _cmd_compare,
    }
    try:
        return commands[args.command](args)
    except (ValueError, TypeError, OSError) as err:
        # user errors (bad values, wrong TOML types, files and folders): one line, status 2
        text = " ".join(str(err).split()) or type(err).__name__
        print(f"decsim {args.command}: error: {text}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
