"""The ``decsim`` command line.

    decsim speedup [--out DIR] [--ns 1,2,4,8,16,32] [--topologies ring,torus,complete] ...
    decsim topology ring 16 [--weights uniform]
    decsim --version
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence


def _ints(text: str) -> tuple:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _names(text: str) -> tuple:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def _parser() -> argparse.ArgumentParser:
    from . import __version__
    from .sweep import SPEEDUP_DEFAULTS as D

    p = argparse.ArgumentParser(prog="decsim", description="Decentralized-training simulator on JAX.")
    p.add_argument("--version", action="version", version=f"decsim {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("speedup", help="linear-speedup study (the main job) on embedded defaults",
                       description="Run one algorithm for several worker counts and topologies on "
                                   "real data; print the speedup table and write figures.")
    s.add_argument("--out", default="decsim-speedup", help="output folder (default: %(default)s)")
    s.add_argument("--ns", type=_ints, default=D["ns"], help="worker counts, e.g. 1,2,4,8")
    s.add_argument("--topologies", type=_names, default=D["topologies"],
                   help="comma-separated generator names (default: ring,torus,complete)")
    s.add_argument("--algorithm", default=D["algorithm"], help="dsgd, dpsgd, gradient_tracking, "
                   "exact_diffusion or centralized_sgd (default: %(default)s)")
    s.add_argument("--steps", type=int, default=D["steps"])
    s.add_argument("--eval-every", type=int, default=D["eval_every"])
    s.add_argument("--seeds", type=int, default=len(D["seeds"]), help="number of seeds (vmapped)")
    s.add_argument("--lr", type=float, default=D["learning_rate"], help="initial learning rate")
    s.add_argument("--decay-steps", type=float, default=D["decay_steps"],
                   help="lr_t = lr / (1 + t / decay_steps); 0 for a constant step")
    s.add_argument("--batch-size", type=int, default=D["batch_size"])
    s.add_argument("--dataset", default=D["dataset"], help="digits or breast_cancer")
    s.add_argument("--partition", default=D["partition"], help="iid, dirichlet, sorted, shards")
    s.add_argument("--target-factor", type=float, default=D["target_factor"])
    s.add_argument("--quiet", action="store_true", help="no progress bar")

    t = sub.add_parser("topology", help="print a topology's size, degrees and spectra")
    t.add_argument("name", help="ring, torus, grid, complete, star, hypercube, exponential, "
                   "erdos_renyi, random_geometric, social")
    t.add_argument("n", type=int, nargs="?", default=None, help="number of workers")
    t.add_argument("--weights", default="metropolis", help="metropolis, uniform or lazy")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--p", type=float, default=None, help="edge probability (erdos_renyi)")
    t.add_argument("--radius", type=float, default=None, help="radius (random_geometric)")
    return p


def _cmd_speedup(args) -> int:
    from .sweep import speedup_study

    res = speedup_study(
        out_dir=args.out, progress=not args.quiet, ns=args.ns, topologies=args.topologies,
        algorithm=args.algorithm, steps=args.steps, eval_every=args.eval_every,
        seeds=tuple(range(args.seeds)), learning_rate=args.lr, decay_steps=args.decay_steps,
        batch_size=args.batch_size, dataset=args.dataset, partition=args.partition,
        target_factor=args.target_factor)
    cfg = res.config
    print(f"decsim speedup: {cfg['algorithm']} on logistic regression / {cfg['dataset']} "
          f"({cfg['partition']}, batch {cfg['batch_size']} per worker), lr {cfg['learning_rate']:g}/"
          f"(1+t/{cfg['decay_steps']:g}), {cfg['steps']} steps, {len(cfg['seeds'])} seeds")
    print(f"target: smoothed suboptimality f(x̄) − f* <= {res.target:.4g} "
          f"({cfg['target_factor']:g} x the final value of one worker)\n")
    print(res.format_table())
    print(f"\n{cfg['seconds']:.1f} s; wrote:")
    for path in res.files:
        print(f"  {path}")
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
            raise ValueError(f"topology {args.name} needs a number of workers, e.g. "
                             f"`decsim topology {args.name} 16`.")
        n = 32
    topo = T.by_name(args.name, n, seed=args.seed, weights=args.weights, **options)
    s = topo.summary()
    print(f"{s['name']}: n = {s['n']}, edges = {s['edges']}, degree min/mean/max = "
          f"{s['degree_min']}/{s['degree_mean']:.3g}/{s['degree_max']}")
    print(f"  lambda_2     = {s['lambda_2']:.6f}")
    print(f"  lambda_min   = {s['lambda_min']:.6f}")
    print(f"  lam          = {s['lam']:.6f}   (||W - J||_2)")
    print(f"  spectral_gap = {s['spectral_gap']:.6f}   (1 - lam)")
    print(f"  beta         = {s['beta']:.6f}   (||I - W||_2)")
    print(f"  p            = {s['p']:.6f}   (1 - lam^2)")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "speedup":
            return _cmd_speedup(args)
        if args.command == "topology":
            return _cmd_topology(args)
    except ValueError as err:
        print(f"decsim {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 1


if __name__ == "__main__":
    sys.exit(main())
