"""Deep networks: decsim against the per-worker PyTorch loop, D-SGD on a ring.

The loop is what a researcher would otherwise write: one ``torch.nn.Module`` and one
``torch.optim.SGD`` per simulated worker; each step, every worker draws its own minibatch (with
replacement, from its own rows), does forward, backward and an SGD step, then every worker's
parameters become ``x_i <- sum_j W_ij x_j`` over its ring neighbours (Metropolis weights 1/3;
BatchNorm running statistics stay local, as decsim's ``model_state_mixing="local"``). decsim runs
the same D-SGD (``ds.algorithms.dsgd``, adapt-then-combine) as one compiled ``lax.scan``.

Same network (the PyTorch modules of ``_torch_models.py`` are loaded with decsim's initial
parameters and checked to give the same loss on the same batch, training and evaluation mode),
same data, same batch (32 per worker), same number of CPU threads for both libraries
(``--threads``, default: all cores; ``torch.set_num_threads`` and ``PJRT_NPROC`` for XLA:CPU).

Workloads:

- ``cnn``: ``ds.problems.cnn(n, dataset="digits", channels=(16, 32), kernel_sizes=(3, 3),
  hidden=(64,))`` (8x8x1 images; 13,706 parameters) at n = 8, 64, 256;
- ``resnet20``: ``ds.problems.resnet20(n, dataset="synthetic_cifar", augment=False)``
  (32x32x3; 269,722 parameters, BatchNorm) at n = 8, 16.

Every configuration (network, n, side) runs in its own subprocess, so its peak resident memory
(``ru_maxrss``) is its own. The PyTorch subprocess imports only numpy and torch (the data and
initial parameters come from a file written by a preparation subprocess). decsim is measured with
``workers="vmap"``, ``"map"`` and ``"auto"`` (the runner's choice, timed inside the first call).

Timing. decsim: one call of ``S`` steps with ``eval_every=S`` (so metrics are computed only for
the first and last iterate), the first call reported separately (``first_s``: wall time including
tracing, compilation and, for ``"auto"``, the runner's vmap/map measurement; ``compile_s``:
``History.compile_seconds``); then ``--repeats`` timed calls that must not compile. The
evaluation of the two snapshots is subtracted: its cost is measured by a ``steps=0`` call (which
evaluates one snapshot) and twice that is taken off each timed call. PyTorch: the first step
(``first_s``) and one more warm-up step, then ``--repeats`` timings of at least ``--seconds``
each. Reported: worker-steps/s = n x steps/s, median and range over the repeats.

    python benchmarks/deep.py                  # full run (about 15 min on 2 cores)
    python benchmarks/deep.py --quick          # smoke run: cnn n=8 and resnet20 n=8, ~3 min
    python benchmarks/deep.py --nets cnn --cnn-ns 64 --sides torch,map --profile
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import pickle
import resource
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
CNN_ARCH = dict(channels=(16, 32), kernel_sizes=(3, 3), hidden=(64,))
LR = {"cnn": 0.05, "resnet20": 0.02}
BATCH = 32
SIDES = ("torch", "vmap", "map", "auto")


def peak_mib() -> float:
    """This process's peak resident memory (``ru_maxrss``, KiB on Linux) in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mib() -> float:
    """This process's current resident memory (VmRSS) in MiB."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


# ---------------------------------------------------------------------------------------------
# decsim side (imported only in the decsim and preparation subprocesses)


def build_problem(net: str, n: int, cfg: dict):
    import decsim as ds

    if net == "cnn":
        return ds.problems.cnn(n, dataset="digits", batch_size=BATCH, seed=0, **CNN_ARCH)
    return ds.problems.resnet20(n, dataset="synthetic_cifar", train_size=cfg["train_size"],
                                test_size=cfg["test_size"], eval_subsample=cfg["eval_subsample"],
                                augment=False, batch_size=BATCH, seed=0)


def numpy_tree(tree):
    import jax
    import numpy as np

    return jax.tree.map(np.asarray, tree)


def prepare(cfg: dict) -> dict:
    """Build the problem with decsim, write what the PyTorch side needs to ``cfg["file"]``, and
    check that the PyTorch twin of worker 0 gives decsim's loss (train and eval mode)."""
    import jax
    import numpy as np
    import torch

    import decsim as ds

    net, n = cfg["net"], cfg["n"]
    prob = build_problem(net, n, cfg)
    topo = ds.topology.ring(n)
    blob = {"x": np.asarray(prob.data["x"]), "y": np.asarray(prob.data["y"]),
            "counts": np.asarray(prob.counts), "W": np.asarray(topo.W),
            "params": numpy_tree(prob.params0),
            "state": numpy_tree(prob.model_state0) if prob.stateful else {},
            "n_classes": int(prob.info["n_classes"]), "n_params": int(prob.info["n_params"])}
    with open(cfg["file"], "wb") as fh:
        pickle.dump(blob, fh)

    model = torch_model(net, blob, 0)
    x0 = blob["x"][0, :BATCH]
    batch = {"x": x0, "y": blob["y"][0, :BATCH].astype(np.int32)}
    one = lambda t: jax.tree.map(lambda a: a[0], t)  # noqa: E731
    p0, s0 = one(prob.params0), one(prob.model_state0)
    out = {"n_params_decsim": blob["n_params"]}
    from _torch_models import num_params, to_nchw

    out["n_params_torch"] = num_params(model)
    xt, yt = to_nchw(x0), torch.as_tensor(batch["y"]).long()
    for mode, key in (("eval", None), ("train", jax.random.PRNGKey(1))):
        model.train(mode == "train")
        with torch.no_grad():
            lt = float(torch.nn.functional.cross_entropy(model(xt), yt))
        ld = float(prob.loss_fn(p0, s0, batch, key)[0])
        out[f"loss_{mode}"] = (ld, lt)
    return out


def decsim_child(cfg: dict) -> dict:
    import jax

    import decsim as ds

    rss_import = rss_mib()
    net, n, side = cfg["net"], cfg["n"], cfg["side"]
    prob = build_problem(net, n, cfg)
    rss_built = rss_mib()
    algo = ds.algorithms.dsgd(LR[net])
    topo = ds.topology.ring(n)
    check_memory = True

    def run(steps):
        return ds.run(algo, prob, topo, steps=steps, eval_every=max(steps, 1), progress=False,
                      workers=side, check_memory=check_memory)

    steps = cfg["probe_steps"]
    refused = None
    tic = time.perf_counter()
    try:
        h = run(steps)
    except ValueError as e:  # the runner's memory check refused the run: run it anyway
        if "check_memory" not in str(e):
            raise
        refused, check_memory = str(e).split(" (")[0], False
        tic = time.perf_counter()
        h = run(steps)
    first_s, compile_s = time.perf_counter() - tic, h.compile_seconds
    chosen = h.config.get("workers") or side
    if chosen == "auto":  # older History.config without the worker execution
        chosen = ds.runner.choose_workers(prob)  # remembered from the first call: no re-timing
    recompile_s = 0.0
    per_step = h.run_seconds / steps
    if cfg["adapt"] and steps * per_step < 0.5 * cfg["seconds"]:
        steps = max(steps, math.ceil(cfg["seconds"] / per_step / 10) * 10)
        h = run(steps)
        recompile_s = h.compile_seconds
    run(0)  # compiles the steps=0 program: it evaluates one snapshot
    eval_s = min(run(0).run_seconds for _ in range(2))
    raw, times = [], []
    for _ in range(cfg["repeats"]):
        h = run(steps)
        assert h.compile_seconds == 0, "a timed decsim call compiled"
        assert not h.diverged, "the timed run diverged; lower the learning rate"
        raw.append(h.run_seconds / steps)
        times.append(max(h.run_seconds - 2 * eval_s, 1e-9) / steps)
    est = ds.memory_estimate(algo, prob, workers=chosen)
    out = dict(steps=steps, first_s=first_s, refused=refused, compile_s=compile_s,
               recompile_s=recompile_s,
               step_s=times, raw_step_s=raw, eval_s=eval_s, workers=str(chosen),
               gossip=h.config["gossip"], estimate_mib=est.total / 2**20, estimate=str(est),
               rss_import_mib=rss_import, rss_built_mib=rss_built,
               jax=jax.__version__, backend=jax.default_backend(),
               xla_threads=os.environ.get("PJRT_NPROC", f"default ({os.cpu_count()} cores)"))
    if cfg["profile"]:
        out["profile"] = decsim_profile(ds, prob, topo, LR[net], steps, chosen, eval_s)
    out["peak_mib"] = peak_mib()
    return out


def decsim_profile(ds, prob, topo, lr, steps, workers, eval_s) -> dict:
    """Seconds per step of D-SGD without gossip (``gossip_every`` > steps, so ``lax.cond``
    skips every mixing: gradient + SGD update) and per evaluated snapshot; the gossip's share is
    the full step's time minus the first."""
    def per_step(algorithm):
        kw = dict(steps=steps, eval_every=steps, progress=False, workers=workers)
        ds.run(algorithm, prob, topo, **kw)
        return min(ds.run(algorithm, prob, topo, **kw).run_seconds - 2 * eval_s
                   for _ in range(2)) / steps

    local = per_step(ds.algorithms.dsgd(lr, gossip_every=steps + 1))
    return {"grad_sgd_s": local, "eval_snapshot_s": eval_s}


def _best(fn, reps: int) -> float:
    best = math.inf
    for _ in range(reps):
        tic = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - tic)
    return best


def _kernel_row(model, shape, batch, K: int, reps: int) -> dict:
    import jax

    from decsim.problems import nets

    params, state = model.init(jax.random.PRNGKey(0), shape, 10)
    loss, key = nets.classifier_loss(model.apply), jax.random.PRNGKey(0)
    f = lambda p: loss(p, state, batch, key)[0]  # noqa: E731
    sgd = lambda p: jax.tree.map(lambda a, g: a - 0.01 * g, p, jax.grad(f)(p))  # noqa: E731
    scan = jax.jit(lambda p: jax.lax.scan(lambda c, _: (sgd(c), None), p, None, length=K)[0])
    row = {}
    for name, fn, div in (("forward", jax.jit(f), 1), ("fwd+bwd", jax.jit(jax.grad(f)), 1),
                          ("in scan", scan, K)):
        jax.block_until_ready(fn(params))
        row[name] = 1e3 * _best(lambda fn=fn: jax.block_until_ready(fn(params)),
                                reps if div == 1 else 2) / div
    return row


def kernels_child(cfg: dict) -> dict:
    """Milliseconds of one worker's training step (batch 32), network alone, for each
    ``conv2d`` implementation of decsim's nets: forward, forward+backward as one jitted call,
    and forward+backward+SGD inside a ``lax.scan`` (where decsim runs it); and PyTorch's forward
    and forward+backward on the same batch."""
    import jax.numpy as jnp
    import numpy as np
    import torch

    from decsim.problems import conv, nets

    torch.set_num_threads(cfg["threads"])
    net = cfg["net"]
    shape = (8, 8, 1) if net == "cnn" else (32, 32, 3)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(BATCH, *shape)).astype(np.float32)
    y = rng.integers(0, 10, BATCH).astype(np.int32)
    reps = 20 if net == "cnn" else 3
    out = {}
    # PyTorch first: XLA's thread pool, once started, competes with PyTorch's threads
    sys.path.insert(0, HERE)
    blob = {"x": x[None], "n_classes": 10}
    m = torch_model(net, dict(blob, params=None), None)
    xt, yt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()), torch.from_numpy(y).long()

    def fb():
        m.zero_grad()
        torch.nn.functional.cross_entropy(m(xt), yt).backward()

    with torch.no_grad():
        m(xt)
        tf = _best(lambda: m(xt), reps)
    fb()
    out["torch"] = {"forward": 1e3 * tf, "fwd+bwd": 1e3 * _best(fb, reps)}
    batch = {"x": jnp.asarray(x), "y": jnp.asarray(y)}
    K = 64 if net == "cnn" else 4
    for impl in conv.IMPLS:
        model = (nets.lenet(**CNN_ARCH, impl=impl) if net == "cnn" else nets.resnet20(impl=impl))
        out[impl] = _kernel_row(model, shape, batch, K, reps)
    return out


# ---------------------------------------------------------------------------------------------
# PyTorch side (the subprocess imports numpy and torch only)


def torch_model(net: str, blob: dict, i: int):
    from _torch_models import LeNet, ResNet20, load_lenet, load_resnet20

    shape = blob["x"].shape[2:]
    if net == "cnn":
        m = LeNet(shape, CNN_ARCH["channels"], CNN_ARCH["kernel_sizes"], CNN_ARCH["hidden"],
                  blob["n_classes"])
        if blob["params"] is not None:
            load_lenet(m, blob["params"], i)
    else:
        m = ResNet20(shape[-1], blob["n_classes"])
        if blob["params"] is not None:
            load_resnet20(m, blob["params"], blob["state"], i)
    return m


def torch_child(cfg: dict) -> dict:
    import numpy as np
    import torch
    import torch.nn.functional as F
    from _torch_models import to_nchw

    torch.set_num_threads(cfg["threads"])
    with open(cfg["file"], "rb") as fh:
        blob = pickle.load(fh)
    net, n = cfg["net"], cfg["n"]
    models = [torch_model(net, blob, i).train() for i in range(n)]
    params = [list(m.parameters()) for m in models]
    opts = [torch.optim.SGD(m.parameters(), lr=LR[net]) for m in models]
    xs = [to_nchw(blob["x"][i]) for i in range(n)]
    ys = [torch.from_numpy(blob["y"][i].astype(np.int64)) for i in range(n)]
    counts = [int(c) for c in blob["counts"]]
    W = blob["W"]
    neighbours = [[(int(j), float(W[i, j])) for j in np.flatnonzero(W[i])] for i in range(n)]
    del blob
    gen = torch.Generator().manual_seed(0)
    split = [0.0, 0.0]  # seconds in (gradient + SGD step, gossip)

    def step():
        t0 = time.perf_counter()
        for i in range(n):  # each worker: its own minibatch, forward, backward, SGD step
            idx = torch.randint(0, counts[i], (BATCH,), generator=gen)
            loss = F.cross_entropy(models[i](xs[i][idx]), ys[i][idx])
            opts[i].zero_grad()
            loss.backward()
            opts[i].step()
        t1 = time.perf_counter()
        with torch.no_grad():  # gossip: x_i <- sum_j W_ij x_j
            old = [[p.detach().clone() for p in ps] for ps in params]
            for i in range(n):
                for k, p in enumerate(params[i]):
                    p.copy_(sum(w * old[j][k] for j, w in neighbours[i]))
        t2 = time.perf_counter()
        split[0] += t1 - t0
        split[1] += t2 - t1
        if not math.isfinite(float(loss)):
            raise FloatingPointError("the PyTorch loop diverged; lower the learning rate")

    tic = time.perf_counter()
    step()
    first_s = time.perf_counter() - tic
    tic = time.perf_counter()
    step()
    per = time.perf_counter() - tic
    k = max(1, math.ceil(cfg["seconds"] / per))
    split[:] = [0.0, 0.0]
    times = []
    for _ in range(cfg["repeats"]):
        tic = time.perf_counter()
        for _ in range(k):
            step()
        times.append((time.perf_counter() - tic) / k)
    total = sum(split)
    return dict(steps=k, first_s=first_s, step_s=times, gossip_share=split[1] / total,
                torch=torch.__version__, torch_threads=torch.get_num_threads(),
                torch_interop_threads=torch.get_num_interop_threads(), peak_mib=peak_mib())


# ---------------------------------------------------------------------------------------------
# parent


def child_main(cfg: dict) -> None:
    sys.path.insert(0, HERE)
    fn = {"prepare": prepare, "torch": torch_child, "kernels": kernels_child}.get(
        cfg["side"], decsim_child)
    cfg["load_before"] = os.getloadavg()[0]
    out = fn(cfg)
    out["load_before"] = cfg["load_before"]
    print("RESULT " + json.dumps(out), flush=True)


def spawn(cfg: dict, env: dict, timeout: float) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", json.dumps(cfg)]
    try:
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    for line in r.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    tail = (r.stderr or r.stdout).strip().splitlines()[-3:]
    return {"error": " | ".join(tail) or f"exit {r.returncode}"}


def fmt_rate(n: int, step_s: list) -> str:
    rates = sorted(n / t for t in step_s)
    med = n / statistics.median(step_s)
    return f"{med:9,.0f} ({rates[0]:,.0f}-{rates[-1]:,.0f})"


def print_group(net: str, n: int, group: list) -> None:
    """The table rows of one (network, n). The loop runs before and after decsim; the ratio is
    against the faster of its two medians (on a shared machine PyTorch's threads can slow down
    100-fold while another job holds a core, so the slower run measures the other job)."""
    loop = [n / statistics.median(r["step_s"]) for r in group if r["side"] == "torch"]
    loop_rate = max(loop) if loop else None
    for r in group:
        med = n / statistics.median(r["step_s"])
        ratio = f"{med / loop_rate:6.2f}" if loop_rate else f"{'':6}"
        print(f"{net:8} {n:4d} {r['side']:6} {r.get('workers', '-'):7} "
              f"{fmt_rate(n, r['step_s']):>28} {ratio} "
              f"{r.get('compile_s', float('nan')):9.1f} {r['first_s']:8.1f} "
              f"{r['peak_mib']:8.0f} {r.get('estimate_mib', float('nan')):8.0f} "
              f"{r['steps']:5d} {r['load_before']:5.2f}", flush=True)
        if r["side"] == "torch":
            print(f"#   torch threads {r['torch_threads']} (interop "
                  f"{r['torch_interop_threads']}); gossip "
                  f"{100 * r['gossip_share']:.0f}% of the loop's time", flush=True)
            continue
        share = 2 * r["eval_s"] / (r["raw_step_s"][0] * r["steps"])
        print(f"#   {r['xla_threads']} XLA threads; gossip {r['gossip']}; eval "
              f"{r['eval_s']:.3f} s/snapshot ({100 * share:.0f}% of a call, subtracted); RSS "
              f"after import {r['rss_import_mib']:.0f} MiB, after building the problem "
              f"{r['rss_built_mib']:.0f} MiB; {r['estimate']}", flush=True)
        if r.get("refused"):
            print(f"#   the runner's memory check refused it ({r['refused']}); "
                  "ran with check_memory=False", flush=True)
        if "profile" in r:
            pr, total = r["profile"], statistics.median(r["step_s"])
            print(f"#   profile (s/step): D-SGD {total:.4f}, without gossip "
                  f"{pr['grad_sgd_s']:.4f} (gossip about {total - pr['grad_sgd_s']:.4f}); "
                  f"eval {pr['eval_snapshot_s']:.4f} s/snapshot", flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nets", default="cnn,resnet20")
    p.add_argument("--cnn-ns", default="8,64,256")
    p.add_argument("--resnet-ns", default="8,16")
    p.add_argument("--sides", default=",".join(SIDES),
                   help="torch, vmap, map, auto (decsim's workers= choices)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seconds", type=float, default=2.0,
                   help="minimum duration of one timing (cnn; resnet20 runs --resnet-steps)")
    p.add_argument("--resnet-steps", type=int, default=2, help="steps per decsim resnet20 call")
    p.add_argument("--train-size", type=int, default=2048, help="synthetic CIFAR images (all)")
    p.add_argument("--test-size", type=int, default=128)
    p.add_argument("--eval-subsample", type=int, default=16, help="rows per worker evaluated")
    p.add_argument("--threads", type=int, default=os.cpu_count(),
                   help="CPU threads for both libraries (torch.set_num_threads, PJRT_NPROC)")
    p.add_argument("--profile", action="store_true",
                   help="also time decsim's gradient+SGD, gossip and evaluation separately")
    p.add_argument("--kernels", action="store_true",
                   help="only time one worker's step per conv2d implementation (and PyTorch's)")
    p.add_argument("--timeout", type=float, default=900, help="seconds per subprocess")
    p.add_argument("--json", help="write all results to this file")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: n = 8 only, one repeat, short timings (about 3 min)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child_main(json.loads(args.child))
    if args.quick:
        args.cnn_ns, args.resnet_ns, args.repeats, args.seconds = "8", "8", 1, 0.5
        args.resnet_steps = 1
    if args.threads < 1 or args.repeats < 1:
        p.error("--threads and --repeats must be >= 1")
    nets = [v for v in args.nets.split(",") if v]
    sides = [v for v in args.sides.split(",") if v]
    for v in sides:
        if v not in SIDES:
            p.error(f"--sides: unknown side {v!r}; use some of {', '.join(SIDES)}")
    env = dict(os.environ, PJRT_NPROC=str(args.threads))

    sys.path.insert(0, HERE)
    import torch
    from _common import machine

    now = datetime.datetime.now(datetime.UTC)
    print(f"# deep networks: decsim vs a per-worker PyTorch loop, {now:%Y-%m-%d %H:%M} UTC")
    print(f"# {machine()}; torch {torch.__version__}")
    print(f"# threads: torch.set_num_threads({args.threads}); XLA:CPU PJRT_NPROC={args.threads}")
    print(f"# D-SGD on a ring, batch {BATCH}/worker, lr cnn {LR['cnn']} / resnet20 "
          f"{LR['resnet20']}; {args.repeats} repeats; evaluation subtracted (see docstring)")
    print(f"# load average at start: {os.getloadavg()[0]:.2f} (machine shared with other jobs)",
          flush=True)
    results = []
    if args.kernels:
        for net in nets:
            r = spawn(dict(net=net, side="kernels", threads=args.threads), env, args.timeout)
            results.append(dict(r, net=net))
            if "error" in r:
                print(f"{net}: failed: {r['error']}")
                continue
            print(f"# {net}: ms per worker step (batch {BATCH}); 'in scan' includes the SGD "
                  "update, as inside a decsim run")
            for impl, row in r.items():
                if impl != "load_before":
                    print(f"{net:8} {impl:7} " + "  ".join(f"{k} {v:8.2f}" for k, v in
                                                            row.items()), flush=True)
        nets = []
    if not nets:
        return
    header = (f"{'net':8} {'n':>4} {'side':6} {'workers':7} {'worker-steps/s med (range)':>28} "
              f"{'x loop':>6} {'compile_s':>9} {'first_s':>8} {'peak MiB':>8} {'est MiB':>8} "
              f"{'steps':>5} {'load':>5}")
    print(header)
    print("-" * len(header), flush=True)
    with tempfile.TemporaryDirectory(prefix="decsim-deep-") as tmp:
        for net in nets:
            ns = args.cnn_ns if net == "cnn" else args.resnet_ns
            for n in [int(v) for v in ns.split(",") if v]:
                base = dict(net=net, n=n, threads=args.threads, repeats=args.repeats,
                            seconds=args.seconds, train_size=args.train_size,
                            test_size=args.test_size, eval_subsample=args.eval_subsample,
                            profile=args.profile, file=os.path.join(tmp, f"{net}-{n}.pkl"),
                            adapt=net == "cnn",
                            probe_steps=20 if net == "cnn" else args.resnet_steps)
                check = spawn(dict(base, side="prepare"), env, args.timeout)
                if "error" in check:
                    print(f"{net:8} {n:4d} prepare failed: {check['error']}", flush=True)
                    continue
                diffs = [abs(a - b) for a, b in (check["loss_train"], check["loss_eval"])]
                print(f"# {net} n={n}: {check['n_params_decsim']:,} params (torch "
                      f"{check['n_params_torch']:,}); loss decsim vs torch on one batch: "
                      f"train {check['loss_train'][0]:.5f} / {check['loss_train'][1]:.5f}, "
                      f"eval {check['loss_eval'][0]:.5f} / {check['loss_eval'][1]:.5f} "
                      f"(max diff {max(diffs):.1e})", flush=True)
                order = list(sides)
                if "torch" in sides and len(sides) > 1:  # the loop before and after decsim
                    order = ["torch"] + [v for v in sides if v != "torch"] + ["torch"]
                group = []
                for side in order:
                    r = spawn(dict(base, side=side), env, args.timeout)
                    r.update(net=net, n=n, side=side)
                    group.append(r)
                    if "error" in r:
                        print(f"{net:8} {n:4d} {side:6} failed: {r['error']}", flush=True)
                results.extend(group)
                print_group(net, n, [r for r in group if "error" not in r])
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1)


if __name__ == "__main__":
    main()
