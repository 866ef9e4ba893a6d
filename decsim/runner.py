"""``run()``: one compiled program per (algorithm structure, problem structure, shapes).

A run is ``steps`` iterations of ``algorithm.step`` inside ``lax.scan``: an inner scan of
``eval_every`` steps, and an outer scan over several such chunks per call, so the host only sees
the program once per call (it checks for divergence and moves the progress bar there), never once
per step. Each call returns the params at the start and after every chunk; a third program, which
depends on the problem alone, evaluates the metrics of all of them at once (loss and gradient on
the full data, consensus, test metrics). Those metrics are most of the compile time of a run, and
every algorithm run on one problem (with the same shapes and evaluations per call) shares them.

Everything numeric enters the program as an argument: the mixing matrix, the data, the numeric
hyperparameters (``algorithm.hparams``: learning rate, gamma, ...). Two runs that differ only in
those, or only in the seed, reuse the same compiled executable; ``TRACE_COUNTS`` counts how often
a program was traced. A run has five phases: check, plan, compile, drive, assemble.

Randomness: ``run_key = PRNGKey(seed)``; step t uses ``fold_in(run_key, t)``, which the gradient
oracle splits into one key per worker. The initial state uses ``fold_in(run_key, 2**31 - 1)``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import tree
from ._checkpoint import fingerprint as checkpoint_fingerprint
from ._checkpoint import load as load_checkpoint
from ._checkpoint import save as save_checkpoint
from ._checks import boolean, one_of
from ._history import COST_NAMES, assemble_metrics, fetch, finite
from ._history import record as run_record
from ._loop import (
    algo_key,
    init_carry,
    make_init,
    make_metrics,
    make_segment,
    make_step,
    metrics_args,
    metrics_key,
    problem_key,
)
from ._programs import (
    BATCHING,
    TRACE_COUNTS,
    as_float,
    clear_cache,
    compiled,
    device_data,
    enable_compilation_cache,
    float_dtype,
    make_mesh,
    mesh_key,
    place,
    trace_count,
    worker_constraint,
)
from ._run_checks import (
    check_checkpoint,
    check_fits,
    check_run_args,
    check_seeds,
    check_workers,
    choose_workers,
    resolve_hparams,
)
from ._types import Algorithm, History, Problem
from .gossip import GossipPlan
from .gossip import plan as gossip_plan
from .network import from_config as network_config
from .network import time_args
from .network import to_config as time_config
from .problems.objective import oracle as make_oracle
from .topology import Topology

__all__ = ["run", "trajectory", "choose_workers", "TRACE_COUNTS", "trace_count", "clear_cache",
           "enable_compilation_cache", "make_oracle"]

_PROGRESS_MIN_SECONDS = 3.0
# Params snapshots one call may hold (it bounds the chunks per call). A call holds chunks + 1 of
# them, so at least two: for a model of P bytes (all workers), a run needs about 2P of device
# memory beyond the algorithm's own state, which holds one to four copies of the params already.
_SNAPSHOT_BUDGET_BYTES = 128 * 2**20


# ---------------------------------------------------------------------------------------------
# phase 1: check (decsim/_run_checks.py)


# ---------------------------------------------------------------------------------------------
# phase 2: plan


def _chunks_per_call(n_evals: int, eval_every: int, max_chunks: int) -> int:
    """A divisor of n_evals, so every call runs the same program: about 10 calls per run, each at
    most ~5000 steps (so the host sees a long run often enough for a progress bar) and holding at
    most ``max_chunks`` params snapshots (memory)."""
    if n_evals == 0:
        return 0  # steps == 0: one call that only evaluates the initial state
    cap = max(1, min(math.ceil(n_evals / 10), max(1, 5000 // eval_every), max_chunks))
    return max(d for d in range(1, cap + 1) if n_evals % d == 0)


class _Plan(NamedTuple):
    gplan: GossipPlan
    mesh: Any
    args: dict
    keys: Any
    hp: dict
    hp_axes: dict
    chunks: int
    n_evals: int
    workers: Any
    timing: Any = None  # the time model's static structure, or None


def _plan(algorithm, problem, topology, steps, eval_every, seeds, batched, hp, gossip, devices,
          workers, time_model=None):
    gplan = gossip_plan(topology, gossip)
    mesh = make_mesh(devices, problem.n_workers)
    args = dict(device_data(problem))
    args["topology"] = as_float(dict(gplan.args))
    args["lam"] = jnp.asarray(topology.lam, float_dtype())
    if time_model is not None:
        args["time"] = as_float(time_args(time_model, problem, topology, algorithm))
    keys = (
        jnp.stack([jax.random.PRNGKey(s) for s in seeds])
        if batched
        else jax.random.PRNGKey(seeds[0])
    )
    if mesh is not None:
        args, keys, hp = place(args, keys, hp, mesh)
    hp_axes = {k: 0 if jnp.ndim(v) else None for k, v in hp.items()}  # per-run values: vmapped
    n_evals = steps // eval_every
    params_size = sum(int(np.size(a)) for a in jax.tree.leaves(problem.params0))
    snapshot_bytes = float_dtype().itemsize * len(seeds) * max(1, params_size)
    chunks = _chunks_per_call(n_evals, eval_every, max(1, _SNAPSHOT_BUDGET_BYTES // snapshot_bytes))
    return _Plan(gplan, mesh, args, keys, hp, hp_axes, chunks, n_evals, workers,
                 None if time_model is None else time_model.static)


# ---------------------------------------------------------------------------------------------
# phase 3: compile


def _compile(algorithm, problem, p: _Plan, eval_every: int, batched: bool, batching: str):
    """The init and segment executables (from the cache when seen before) and compile seconds."""
    prog_key = (algo_key(algorithm), problem_key(problem), mesh_key(p.mesh), p.workers)
    n = problem.n_workers
    constrain = worker_constraint(p.mesh, n)
    constrain_stacked = worker_constraint(p.mesh, n, axis=1)
    init_prog, secs_init = compiled(
        "init",
        lambda: make_init(algorithm, problem, constrain),
        prog_key,
        (p.keys, p.args),
        batched,
        (0, None),
        batching,
    )
    state = init_prog(p.keys, p.args)
    t0 = jnp.zeros((), jnp.int32)
    seg_prog, secs_seg = compiled(
        "segment",
        lambda: make_segment(
            algorithm, problem, p.gplan, eval_every, p.chunks, constrain, constrain_stacked,
            p.workers, p.timing,
        ),
        prog_key + (p.gplan.key, eval_every, p.chunks, p.timing),
        (p.hp, state, t0, p.keys, p.args),
        batched,
        (p.hp_axes, 0, None, 0, None),
        batching,
    )
    return state, seg_prog, secs_init + secs_seg


# ---------------------------------------------------------------------------------------------
# phase 4: drive


class _Driven(NamedTuple):
    state: Any
    records: list
    cost_chunks: list
    compile_seconds: float
    run_seconds: float


def _drive(
    algorithm,
    problem,
    topology,
    p: _Plan,
    state,
    seg_prog,
    steps,
    eval_every,
    batched,
    n_runs,
    progress,
    batching,
    checkpoint=None,
    callback=None,
) -> _Driven:
    """Call the segment program until ``steps`` are done or every run diverged; evaluate the
    snapshots of each call with the metrics program (compiled on the first snapshots). With a
    ``checkpoint`` (``(path, fingerprint)``), start from it when it exists and write it after
    every call; ``callback(step, metrics)`` sees each new evaluation."""
    start = time.perf_counter()
    margs = metrics_args(p.args)
    t0 = jnp.zeros((), jnp.int32)
    metrics_prog, compile_seconds = None, 0.0
    records, cost_chunks, bar, done = [], [], None, 0
    diverged = np.zeros(n_runs, dtype=bool)
    if checkpoint is not None:
        restored = load_checkpoint(checkpoint[0], checkpoint[1], state)
        if restored is not None:
            carry, done, records, cost_chunks, diverged = restored
            state = jax.tree.map(lambda a, t: jax.device_put(jnp.asarray(a, t.dtype),
                                                              t.sharding), carry, state)
    while not records or (done < steps and not diverged.all()):
        state, costs, (Xs, Ss, extras) = seg_prog(
            p.hp, state, jnp.asarray(done, jnp.int32), p.keys, p.args
        )
        if metrics_prog is None:  # compiled on the first snapshots (shapes and sharding)
            tic = time.perf_counter()
            metrics_prog, compile_seconds = compiled(
                "metrics",
                lambda: make_metrics(problem),
                metrics_key(problem) + (mesh_key(p.mesh),),
                (Xs, Ss, t0, margs),
                batched,
                (0, 0, None, None),
                batching,
            )
            start += time.perf_counter() - tic  # run_seconds excludes it
        first = 0 if not records else 1  # the incoming state was the previous call's last snapshot
        metrics = {**metrics_prog(Xs, Ss, jnp.asarray(first, jnp.int32), margs), **extras}
        records.append(
            {
                k: np.asarray(v, np.float64).reshape(n_runs, -1)[:, first:]
                for k, v in metrics.items()
            }
        )
        ncost = 3 if p.timing is None else 4
        cost_chunks.append(np.asarray(costs, np.float64).reshape(n_runs, p.chunks, ncost))
        done += p.chunks * eval_every
        diverged |= ~finite(records[-1], n_runs)
        if checkpoint is not None:
            save_checkpoint(checkpoint[0], checkpoint[1], fetch(state), done, records, cost_chunks,
                      diverged)
        if callback is not None:
            rows = records[-1]["loss"].shape[1]
            at = done - p.chunks * eval_every + (first + np.arange(rows)) * eval_every
            cum = np.cumsum(np.concatenate(cost_chunks, axis=1), axis=1)
            for j, step_j in enumerate(at.tolist()):
                row = {k: v[:, j] for k, v in records[-1].items()}
                e = step_j // eval_every
                for i, name in enumerate(COST_NAMES[: cum.shape[-1]]):
                    row[name] = cum[:, e - 1, i] if e else np.zeros(n_runs)
                callback(int(step_j), {k: v if batched else float(v[0]) for k, v in row.items()})
        bar = _progress(
            bar, progress, algorithm, topology, start, done, steps, p.chunks * eval_every
        )
    if bar is not None:
        bar.close()
    jax.block_until_ready(state)
    return _Driven(state, records, cost_chunks, compile_seconds, time.perf_counter() - start)


def _progress(bar, progress, algorithm, topology, start, done, steps, per_call):
    if bar is None and done < steps:
        elapsed = time.perf_counter() - start
        show = progress if progress is not None else elapsed * steps / done > _PROGRESS_MIN_SECONDS
        if show:
            from tqdm.auto import tqdm

            name = getattr(algorithm, "name", type(algorithm).__name__)
            bar = tqdm(total=steps, unit="step", desc=f"{name} on {topology.name}", leave=False)
            bar.update(done)
    elif bar is not None:
        bar.update(per_call)
    return bar


# ---------------------------------------------------------------------------------------------
# the public functions


def run(
    algorithm: Algorithm,
    problem: Problem,
    topology: Topology,
    steps: int,
    *,
    eval_every: int | None = None,
    seed: int = 0,
    seeds: Sequence[int] | None = None,
    progress: bool | None = None,
    hparams: dict | None = None,
    gossip: str = "auto",
    devices: Sequence | None = None,
    batching: str = "map",
    workers="auto",
    checkpoint=None,
    callback=None,
    check_memory: bool = True,
    time_model=None,
) -> History:
    """Run ``algorithm`` on ``problem`` over ``topology`` for ``steps`` steps.

    Args:
      algorithm: from ``ds.algorithms``, or any NamedTuple with ``init``, ``step``, ``params``
        and ``hparams`` (see :class:`decsim.Algorithm`).
      problem: from ``ds.problems``.
      topology: from ``ds.topology`` with ``n == problem.n_workers``.
      steps: number of algorithm steps (a multiple of ``eval_every``).
      eval_every: steps between evaluations (default: about 50 evaluations).
      seed: the run's seed (minibatches, noise, compressors), an integer in [0, 2**32).
      seeds: several seeds (runs) as one compiled program; metrics gain a leading seed axis.
      progress: show a progress bar (default: only when the run will take more than a few seconds).
      hparams: override numeric hyperparameters (e.g. ``{"learning_rate": 0.05}``) without
        recompiling. With ``seeds``, a value may also be a list with one entry per
        seed (``seeds=[0, 1, 0, 1], hparams={"learning_rate": [0.1, 0.1, 0.2, 0.2]}``): run i
        uses ``seeds[i]`` and entry i, and all of them are one vmapped program (a learning-rate
        sweep in one call). Every value passes the same checks as the factory's arguments.
      gossip: how rounds are computed: ``"auto"``, ``"dense"``, ``"sparse"`` (neighbour gathers)
        or ``"roll"`` (circulant graphs); see :mod:`decsim.gossip`. All give the same results.
      devices: shard the worker axis over these devices (a 1-D ``jax.sharding.Mesh``), e.g.
        ``jax.devices()``; n must be a multiple of their number. XLA inserts the collectives that
        gossip needs; results equal the unsharded run. After ``jax.distributed.initialize()``,
        ``jax.devices()`` spans every process (host): run the same script in each, and each gets
        the whole History.

      batching: how the runs of ``seeds=`` share the program: ``"map"`` (default) computes each
        exactly as it would run alone, so its numbers are bitwise those of ``ds.run(...,
        seed=s)`` however many runs share the call; ``"vmap"`` vectorizes them (often faster on
        accelerators; numbers equal to rounding, which chaotic dynamics can amplify).
      workers: how the worker axis of gradient evaluations is executed: ``"vmap"`` (one batched
        program; best for small models and on accelerators), ``"map"`` (a compiled loop over
        workers, each an ordinary batch computation: convolutions stay convolutions instead of
        becoming grouped ones, much faster on CPU), or an int c (chunks of c workers vmapped
        inside a loop; bounded memory). ``"auto"`` (default): ``"vmap"`` for the simple loss
        form; for a model with state or randomness, the faster of ``"vmap"`` and ``"map"``
        measured on one gradient evaluation (once per problem structure and process). All
        choices give the same results to float rounding.
      checkpoint: a file path: the complete run state (algorithm state, model state, steps done,
        metrics so far) is written there after every compiled call (about 10 per run), and a
        run given an existing checkpoint of the same run continues from it; the History is then
        bitwise that of an uninterrupted run. A checkpoint of another run is an error.
      callback: ``callback(step, metrics)``, called on the host for every evaluation in order
        (``metrics``: name -> float, or ``[n_runs]`` arrays with ``seeds=``, including the
        cumulative ``grad_evals``, ``comm_rounds`` and ``bits``): log to TensorBoard, print,
        stop early by raising (with a checkpoint, a rerun continues).
      check_memory: refuse, before compiling, a run whose estimated peak memory
        (:func:`decsim.memory_estimate`) exceeds the device's available memory.
      time_model: a :class:`decsim.network.TimeModel` (or its config table): the metrics gain
        the cumulative simulated seconds ``sim_time`` (stragglers drawn per run inside the
        compiled loop); every other number is bitwise the same as without it.

    Returns:
      A :class:`History`. A run whose metrics become NaN/inf stops early and is marked
      ``diverged`` with ``diverged_step``; it never raises.

    Example:
      >>> import decsim as ds
      >>> prob = ds.problems.quadratic(4, 5, noise=0.1)
      >>> hist = ds.run(ds.algorithms.dsgd(0.1), prob, ds.topology.ring(4), steps=100)
      >>> bool(hist.metrics["loss"][-1] < hist.metrics["loss"][0])
      True
    """
    eval_every = check_run_args(algorithm, problem, topology, steps, eval_every)
    one_of("batching", batching, BATCHING)
    batched = seeds is not None
    seed_list = check_seeds(seed, seeds)
    hp = resolve_hparams(algorithm, hparams, len(seed_list) if batched else None)
    workers = check_workers(workers, problem)
    time_model = network_config(time_model)
    if boolean("check_memory", check_memory):
        check_fits(algorithm, problem, workers, len(seed_list))
    p = _plan(
        algorithm, problem, topology, steps, eval_every, seed_list, batched, hp, gossip, devices,
        workers, time_model,
    )
    state, seg_prog, compile_seconds = _compile(
        algorithm, problem, p, eval_every, batched, batching
    )
    if callback is not None and not callable(callback):
        raise ValueError(f"callback must be a function (step, metrics) -> None; got "
                         f"{type(callback).__name__}.")
    ck = None
    if checkpoint is not None:
        path = check_checkpoint(checkpoint)
        fp = checkpoint_fingerprint(
            run_record(algorithm, problem, topology, p, steps, eval_every, hparams), seed_list,
            {"batching": batching, "workers": str(p.workers), "batched": batched,
             "algo": [getattr(f, "__qualname__", str(f)) for f in algo_key(algorithm)],
             "time_model": None if time_model is None else time_config(time_model)},
            state)
        ck = (path, fp)
    d = _drive(
        algorithm,
        problem,
        topology,
        p,
        state,
        seg_prog,
        steps,
        eval_every,
        batched,
        len(seed_list),
        progress,
        batching,
        ck,
        callback,
    )
    metrics, diverged_step = assemble_metrics(d, len(seed_list), p.n_evals, eval_every)
    state, ostate = d.state
    params = fetch(jax.vmap(algorithm.params)(state) if batched else algorithm.params(state))
    model_state = fetch(ostate["model"]) if "model" in ostate else None
    div = diverged_step >= 0
    return History(
        steps=np.arange(p.n_evals + 1) * eval_every,
        metrics=metrics if batched else {k: v[0] for k, v in metrics.items()},
        params=params,
        diverged=div if batched else bool(div[0]),
        diverged_step=diverged_step if batched else int(diverged_step[0]),
        seeds=seed_list if batched else seed_list[0],
        config=dict(
            run_record(algorithm, problem, topology, p, steps, eval_every, hparams),
            batching=batching if batched else None,
            **({} if time_model is None else {"time_model": time_config(time_model)}),
        ),
        compile_seconds=compile_seconds + d.compile_seconds,
        run_seconds=d.run_seconds,
        model_state=model_state,
    )


def trajectory(
    algorithm: Algorithm,
    problem: Problem,
    topology: Topology,
    steps: int,
    *,
    seed: int = 0,
    record=None,
    gossip: str = "auto",
    hparams: dict | None = None,
    workers="vmap",
):
    """Every iterate of a short run, for inspection and exact-trajectory tests.

    Returns a numpy pytree with a leading axis ``[steps + 1, ...]``: ``record(state)`` (default
    ``algorithm.params(state)``) at the initial state and after each step. Uses the same step
    (oracle, mixer, key derivation and hyperparameters as data) as :func:`run`; meant for small
    problems (it keeps every iterate).
    """
    check_run_args(algorithm, problem, topology, steps, 1)
    (seed,) = check_seeds(seed, None)
    hp = resolve_hparams(algorithm, hparams, None)
    record = algorithm.params if record is None else record
    gplan = gossip_plan(topology, gossip)
    args = dict(device_data(problem))
    args["topology"] = as_float(dict(gplan.args))
    args["lam"] = jnp.asarray(topology.lam, float_dtype())
    step = make_step(algorithm, problem, gplan, check_workers(workers, problem))

    @jax.jit
    def go(hp, run_key, args):
        carry = init_carry(algorithm, problem, run_key, args)

        def one(carry, t):
            carry, _ = step(hp, carry, t, run_key, args)
            return carry, record(carry[0])

        _, rest = jax.lax.scan(one, carry, jnp.arange(steps, dtype=jnp.int32))
        return jax.tree.map(lambda a, b: jnp.concatenate([a[None], b]), record(carry[0]), rest)

    return tree.to_numpy(go(hp, jax.random.PRNGKey(seed), args))
