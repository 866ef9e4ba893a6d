"""decsim against the common research-code pattern: one PyTorch module per simulated worker and a
Python loop over workers. Same MLP (64-32-10, tanh), same digits data split iid, batch 16 per
worker, D-SGD (adapt-then-combine: local SGD step, then averaging with ring neighbours, Metropolis
weights 1/3), same machine, one process.

Prints steady-state worker-steps per second for both (compilation and warm-up excluded; decsim's
compile time is reported separately) and the ratio. Each side is timed ``--repeats`` times,
interleaved (loop, decsim, loop, decsim, ...), each timing lasting at least ``--seconds``; the
medians are reported. PyTorch is an optional benchmark dependency
(`pip install torch`), never a dependency of decsim.

Both sides get the same number of CPU threads, ``--threads`` (default 1): PyTorch through
``torch.set_num_threads`` and XLA through ``PJRT_NPROC``, which sizes XLA:CPU's intra-op thread
pool (by default one thread per core) and must be set before JAX creates its CPU client, so this
script sets it before importing JAX. ``--threads 0`` leaves both libraries at their defaults.

    python benchmarks/vs_loop.py [--ns 8,64,256] [--seconds 2] [--repeats 3] [--threads 1] [--quick]
"""

import argparse
import datetime
import os
import time

import numpy as np
from _common import machine

# ---------------------------------------------------------------------------------------------
# the per-worker loop (PyTorch)


def torch_loop(prob, topo, lr: float, batch: int):
    """Build the loop baseline; returns ``step()`` running one D-SGD step for all workers."""
    import torch

    torch.manual_seed(0)
    n = prob.n_workers
    xs = torch.as_tensor(prob.data["x"])
    ys = torch.as_tensor(prob.data["y"]).long()
    counts = prob.counts
    layers = prob.params0  # [{"w": [n, 64, 32], "b": ...}, {...}]
    models = []
    for i in range(n):
        m = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.Tanh(), torch.nn.Linear(32, 10))
        with torch.no_grad():
            for lin, layer in zip((m[0], m[2]), layers):
                lin.weight.copy_(torch.as_tensor(layer["w"][i]).T)
                lin.bias.copy_(torch.as_tensor(layer["b"][i]))
        models.append(m)
    opts = [torch.optim.SGD(m.parameters(), lr=lr) for m in models]
    loss_fn = torch.nn.CrossEntropyLoss()
    W = topo.W
    neighbours = [[(j, float(W[i, j])) for j in np.flatnonzero(W[i])] for i in range(n)]
    rng = np.random.default_rng(0)

    def step():
        for i in range(n):  # local SGD step on each worker's own minibatch
            idx = torch.as_tensor(rng.integers(0, counts[i], batch))
            loss = loss_fn(models[i](xs[i, idx]), ys[i, idx])
            opts[i].zero_grad()
            loss.backward()
            opts[i].step()
        with torch.no_grad():  # gossip: x_i <- sum_j W_ij x_j
            params = [[p.detach().clone() for p in m.parameters()] for m in models]
            for i in range(n):
                for k, p in enumerate(models[i].parameters()):
                    p.copy_(sum(w * params[j][k] for j, w in neighbours[i]))

    return step


def time_loop(step, min_seconds: float) -> float:
    """Seconds per step of the loop, averaged over at least ``min_seconds`` (after a warm-up)."""
    step()  # warm-up
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < min_seconds or done < 3:
        step()
        done += 1
    return (time.perf_counter() - start) / done


# ---------------------------------------------------------------------------------------------
# decsim


def decsim_timer(prob, topo, lr: float, min_seconds: float):
    """Compile, pick a step count whose run lasts ``min_seconds``, and return
    ``(time_one, compile_seconds, gossip_path)``; ``time_one()`` gives seconds per step of one
    more run of that length (compilation excluded; nothing is compiled again)."""
    import decsim as ds

    algo = ds.algorithms.dsgd(lr)
    steps = 200
    compile_s = 0.0
    while True:  # grow the run until it lasts long enough to time
        h = ds.run(algo, prob, topo, steps=steps, eval_every=steps, progress=False)
        if h.compile_seconds > 0:
            compile_s += h.compile_seconds
            continue
        if h.run_seconds >= min_seconds:
            break
        steps = int(steps * max(2.0, 1.2 * min_seconds / max(h.run_seconds, 1e-3)))

    def time_one() -> float:
        h = ds.run(algo, prob, topo, steps=steps, eval_every=steps, progress=False)
        assert h.compile_seconds == 0, "a timed decsim call compiled"
        return h.run_seconds / steps

    return time_one, compile_s, h.config["gossip"]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ns", default="8,64,256")
    p.add_argument("--seconds", type=float, default=2.0, help="minimum duration of one timing")
    p.add_argument("--repeats", type=int, default=3,
                   help="interleaved timings per side and n; the medians are reported")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: n = 8 only, 0.2 s timings, one repeat")
    p.add_argument("--threads", type=int, default=1,
                   help="CPU threads for each side (torch intra-op threads and PJRT_NPROC for "
                        "XLA); 0 leaves both at their library defaults")
    args = p.parse_args()
    if args.quick:
        args.ns, args.seconds, args.repeats = "8", 0.2, 1
    if args.threads < 0:
        p.error(f"--threads must be >= 0; got {args.threads}")
    if args.repeats < 1:
        p.error(f"--repeats must be >= 1; got {args.repeats}")
    if args.threads:
        os.environ["PJRT_NPROC"] = str(args.threads)  # read when JAX creates its CPU client
    import torch

    import decsim as ds

    if args.threads:
        torch.set_num_threads(args.threads)
    xla_threads = os.environ.get("PJRT_NPROC", f"default ({os.cpu_count()} cores)")

    lr, batch = 0.1, 16
    now = datetime.datetime.now(datetime.UTC)
    print(f"# decsim vs a per-worker PyTorch loop, {now:%Y-%m-%d %H:%M} UTC")
    print(
        f"# {machine()}; torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"XLA:CPU threads (PJRT_NPROC) {xla_threads}"
    )
    print("# D-SGD on MLP 64-32-10 (tanh), digits iid, batch 16 per worker, ring, lr 0.1")
    print(
        f"{'n':>5} {'loop w-steps/s':>15} {'decsim w-steps/s':>17} {'ratio':>7} "
        f"{'decsim compile s':>17} {'gossip':>7}"
    )
    for n in [int(v) for v in args.ns.split(",")]:
        prob = ds.problems.mlp(n, "digits", hidden=(32,), batch_size=batch, seed=0)
        topo = ds.topology.ring(n)
        loop_step = torch_loop(prob, topo, lr, batch)
        decsim_one, compile_s, path = decsim_timer(prob, topo, lr, args.seconds)
        loop_s, dec_s = [], []
        for _ in range(args.repeats):  # interleaved, so a busy moment hits both sides alike
            loop_s.append(time_loop(loop_step, args.seconds))
            dec_s.append(decsim_one())
        loop_s, dec_s = float(np.median(loop_s)), float(np.median(dec_s))
        print(
            f"{n:5d} {n / loop_s:15,.0f} {n / dec_s:17,.0f} {loop_s / dec_s:7.1f} "
            f"{compile_s:17.2f} {path:>7}",
            flush=True,
        )


if __name__ == "__main__":
    main()
