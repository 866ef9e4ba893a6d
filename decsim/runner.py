"""``run()``: one compiled program per (algorithm structure, problem structure, shapes).

A run is ``steps`` iterations of ``algorithm.step`` inside ``lax.scan``: an inner scan of
``eval_every`` steps, and an outer scan over several such chunks per call, so the host only sees
the program once per call (it checks for divergence and moves the progress bar there), never once
per step. Each call returns the params at the start and after every chunk; a third program, which
depends on the problem alone, evaluates the metrics of all of them at once (loss and gradient on
the full data, consensus, test metrics). Those metrics are most of the compile time of a run, and
every algorithm run on one problem (with the same shapes and evaluations per call) shares them.

Everything numeric enters the program as an argument: the mixing matrix, the data, the numeric
hyperparameters (learning rate, gamma, ...). Two runs that differ only in those, or only in the
seed, reuse the same compiled executable; ``TRACE_COUNTS`` counts how often a program was traced.

Randomness: ``run_key = PRNGKey(seed)``; step t uses ``fold_in(run_key, t)``, which the gradient
oracle splits into one key per worker. The initial state uses ``fold_in(run_key, 2**31 - 1)``.
"""

from __future__ import annotations

import collections
import functools
import math
import time
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from . import tree
from ._types import Algorithm, History, Problem
from .gossip import GossipPlan, plan as gossip_plan
from .topology import Topology

TRACE_COUNTS: collections.Counter = collections.Counter()
_PROGRAMS: "collections.OrderedDict" = collections.OrderedDict()
_MAX_PROGRAMS = 64  # compiled executables kept (least recently used are dropped)
_PROGRESS_MIN_SECONDS = 3.0
_DIVERGENCE_KEYS = ("loss", "grad_norm_sq", "consensus")
# Params snapshots one call may hold (it bounds the chunks per call). A call holds chunks + 1 of
# them, so at least two: for a model of P bytes (all workers), a run needs about 2P of device
# memory beyond the algorithm's own state, which holds one to four copies of the params already.
_SNAPSHOT_BUDGET_BYTES = 128 * 2**20


def trace_count(kind: Optional[str] = None) -> int:
    """How many programs the runner has traced (all kinds, or ``"init"``/``"segment"``/``"metrics"``)."""
    return sum(TRACE_COUNTS.values()) if kind is None else TRACE_COUNTS[kind]


def enable_compilation_cache(path: Optional[str] = None) -> str:
    """Keep compiled programs on disk (JAX's persistent compilation cache), so a new process — a
    notebook kernel restart, the next job of a sweep — skips compilation of programs it has seen.

    Args:
      path: the cache folder (default: ``$DECSIM_CACHE_DIR`` or ``~/.cache/decsim/xla``).

    Returns:
      The folder used. Setting ``DECSIM_CACHE_DIR`` in the environment enables it at import.
    """
    import os

    path = path or os.environ.get("DECSIM_CACHE_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "decsim", "xla")
    os.makedirs(path, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path


def clear_cache() -> None:
    """Forget every compiled program (the next run traces and compiles again)."""
    _PROGRAMS.clear()


# ---------------------------------------------------------------------------------------------
# losses and the gradient oracle


@functools.lru_cache(maxsize=None)
def _local_loss(loss_fn, uniform: bool):
    """``f_i(x) = mean of loss over worker i's own rows``: (x, data_i, count_i) -> scalar."""
    if uniform:
        return lambda x, data_i, count_i: loss_fn(x, data_i)

    def local(x, data_i, count_i):
        m = jax.tree.leaves(data_i)[0].shape[0]
        mask = jnp.arange(m) < count_i
        # Padding rows are replaced by row 0 before the loss sees them: whatever they hold (even
        # NaN) can then leak neither into the value nor into the gradient (0 * NaN = NaN).
        clean = jax.tree.map(
            lambda a: jnp.where(mask.reshape((m,) + (1,) * (a.ndim - 1)), a, a[:1]), data_i)
        per_example = jax.vmap(lambda ex: loss_fn(x, jax.tree.map(lambda a: a[None], ex)))(clean)
        total = jnp.sum(jnp.where(mask, per_example, jnp.zeros_like(per_example)))
        return total / count_i.astype(per_example.dtype)

    return local


def _is_uniform(problem: Problem) -> bool:
    m = jax.tree.leaves(problem.data)[0].shape[1]
    return bool(np.all(np.asarray(problem.counts) == m))


def _full_objective(problem: Problem):
    """``(x, data, counts) -> (1/n) Σ_i f_i(x)`` for one unstacked model x."""
    local = _local_loss(problem.loss_fn, _is_uniform(problem))

    def objective(x, data, counts):
        return jnp.mean(jax.vmap(local, in_axes=(None, 0, 0))(x, data, counts))

    return objective


def make_oracle(problem: Problem, data, counts, noise_std):
    """The stacked stochastic-gradient oracle ``oracle(X, key) -> G`` (leaves ``[n, ...]``).

    Worker i draws ``batch_size`` indices uniformly (with replacement) from its own
    ``counts[i]`` rows, or uses all of them when ``batch_size is None``; Gaussian noise of standard
    deviation ``noise_std`` per coordinate is added when the problem has any.
    """
    loss_fn, batch_size = problem.loss_fn, problem.batch_size
    local = _local_loss(loss_fn, _is_uniform(problem))
    noisy = problem.noise_std > 0

    def worker(x, data_i, count_i, key):
        k_batch, k_noise = jax.random.split(key)
        if batch_size is None:
            g = jax.grad(local)(x, data_i, count_i)
        else:
            idx = jax.random.randint(k_batch, (batch_size,), 0, count_i)
            g = jax.grad(loss_fn)(x, jax.tree.map(lambda a: a[idx], data_i))
        if noisy:
            leaves, treedef = jax.tree.flatten(g)
            keys = jax.random.split(k_noise, len(leaves))
            leaves = [l + noise_std.astype(l.dtype) * jax.random.normal(k, l.shape, l.dtype)
                      for l, k in zip(leaves, keys)]
            g = jax.tree.unflatten(treedef, leaves)
        return g

    def oracle(X, key):
        n = jax.tree.leaves(X)[0].shape[0]
        return jax.vmap(worker)(X, data, counts, jax.random.split(key, n))

    return oracle


# ---------------------------------------------------------------------------------------------
# the compiled programs


def _problem_metrics(problem: Problem, X, margs):
    """The metrics of the stacked params ``X``: everything that depends on the problem alone."""
    xbar = tree.worker_mean(X)
    objective = _full_objective(problem)
    loss, grad = jax.value_and_grad(objective)(xbar, margs["data"], margs["counts"])
    out = {"loss": loss, "grad_norm_sq": tree.sq_norm(grad), "consensus": tree.consensus_distance(X)}
    if problem.test_metrics is not None and margs["test"] is not None:
        out.update(problem.test_metrics(xbar, margs["test"]))
    if problem.extra_metrics is not None:
        out.update(problem.extra_metrics(X, margs["aux"]))
    return {k: jnp.asarray(v, jnp.float32) for k, v in out.items()}


def _snapshot(algo: Algorithm, state):
    """What an evaluation needs of a state: the stacked params and the algorithm's own metrics."""
    extra = algo.extra_metrics(state) if algo.extra_metrics is not None else {}
    return algo.params(state), {k: jnp.asarray(v, jnp.float32) for k, v in extra.items()}


def _metrics_args(args: dict) -> dict:
    """The program arguments the metrics read (not the graph: one metrics program serves all)."""
    return {k: args[k] for k in ("data", "counts", "test", "aux")}


def _init_key(run_key):
    """The key an algorithm's ``init`` receives (disjoint from every step key fold_in(run_key, t))."""
    return jax.random.fold_in(run_key, 2**31 - 1)


def _bind(algo: Algorithm, hparams):
    return algo.rebuild(hparams) if (algo.rebuild is not None and hparams) else algo


def _worker_constraint(mesh, n: int, axis: int = 0):
    """``tree -> tree`` pinning every leaf whose ``axis`` is the worker axis (length n) to the mesh
    split along it and the rest to replication (identity without a mesh), so that a program's
    outputs have exactly the sharding the next program expects."""
    if mesh is None:
        return lambda state: state
    from jax.sharding import NamedSharding, PartitionSpec

    split = NamedSharding(mesh, PartitionSpec(*([None] * axis), "workers"))
    whole = NamedSharding(mesh, PartitionSpec())

    def pin(a):
        spec = split if (jnp.ndim(a) > axis and a.shape[axis] == n) else whole
        return jax.lax.with_sharding_constraint(a, spec)

    return lambda state: jax.tree.map(pin, state)


def _make_init(algo: Algorithm, problem: Problem, constrain):
    def init(hparams, run_key, args):
        TRACE_COUNTS["init"] += 1
        a = _bind(algo, hparams)
        return constrain(a.init(args["params0"], _init_key(run_key)))

    return init


def _make_segment(algo: Algorithm, problem: Problem, gplan: GossipPlan, eval_every: int, chunks: int,
                  constrain, constrain_stacked):
    """``chunks`` chunks of ``eval_every`` steps. Returns the new state, the cost of each chunk and
    ``chunks + 1`` snapshots (:func:`_snapshot`, stacked): the incoming state's, then the state
    after each chunk. The metrics program evaluates them (all of them on a run's first call, the
    incoming one, evaluated by the previous call, being skipped afterwards)."""

    def segment(hparams, state, t0, run_key, args):
        TRACE_COUNTS["segment"] += 1
        a = _bind(algo, hparams)
        oracle = make_oracle(problem, args["data"], args["counts"], args["noise_std"])

        def one_step(state, t):
            mixer = gplan.mixer(args["topology"], args["lam"], t)
            state, cost = a.step(state, oracle, mixer, jax.random.fold_in(run_key, t))
            return state, jnp.stack([jnp.asarray(c, jnp.float32) for c in cost])

        def chunk(state, c):
            ts = t0 + c * eval_every + jnp.arange(eval_every, dtype=jnp.int32)
            state, costs = jax.lax.scan(one_step, state, ts)
            return state, (jnp.sum(costs, axis=0), _snapshot(a, state))

        first = _snapshot(a, state)
        state, (costs, snaps) = jax.lax.scan(chunk, state, jnp.arange(chunks, dtype=jnp.int32))
        snaps = jax.tree.map(lambda s0, s: jnp.concatenate([s0[None], s]), first, snaps)
        return constrain(state), costs.reshape(chunks, 3), constrain_stacked(snaps)

    return segment


def _make_metrics(problem: Problem):
    """``(Xs, start, margs) -> metrics``: the problem's metrics of the stacked params snapshots
    ``Xs`` (leaves ``[k, n, ...]``) from index ``start`` on (entries before it are 0). It depends
    on the problem alone, so every algorithm run on one problem (with the same shapes) shares one
    compiled program; the metrics are most of the compile time of a run."""

    def metrics(Xs, start, margs):
        TRACE_COUNTS["metrics"] += 1
        k = jax.tree.leaves(Xs)[0].shape[0]

        def one(c):
            X = jax.tree.map(lambda a: jax.lax.dynamic_index_in_dim(a, c, keepdims=False), Xs)
            return _problem_metrics(problem, X, margs)

        out = jax.tree.map(lambda v: jnp.zeros((k,) + v.shape, v.dtype), jax.eval_shape(one, 0))
        body = lambda c, out: jax.tree.map(lambda o, v: o.at[c].set(v), out, one(c))
        return jax.lax.fori_loop(start, k, body, out)

    return metrics


def _signature(args) -> tuple:
    leaves, treedef = jax.tree.flatten(args)
    return (treedef,) + tuple((np.shape(l), jnp.result_type(l).name) for l in leaves)


def _problem_key(problem: Problem) -> tuple:
    return (problem.loss_fn, problem.batch_size, problem.noise_std > 0) + _metrics_key(problem)


def _metrics_key(problem: Problem) -> tuple:
    """What the metrics program depends on besides shapes (not the batch size, noise or graph)."""
    return (problem.loss_fn, _is_uniform(problem),
            problem.test_metrics if problem.test_data is not None else None, problem.extra_metrics)


def _algo_key(algo: Algorithm):
    return algo.structure if algo.structure is not None else ("id", id(algo))


def _compiled(kind: str, builder, key: tuple, args: tuple, vmapped: bool, in_axes):
    """Fetch or build (trace + compile) the executable for ``key`` and these argument shapes."""
    full_key = (kind, key, vmapped, _signature(args))
    entry = _PROGRAMS.get(full_key)
    if entry is not None:
        _PROGRAMS.move_to_end(full_key)
        return entry, 0.0
    fn = builder()
    if vmapped:
        fn = jax.vmap(fn, in_axes=in_axes)
    start = time.perf_counter()
    entry = jax.jit(fn).lower(*args).compile()
    seconds = time.perf_counter() - start
    _PROGRAMS[full_key] = entry
    while len(_PROGRAMS) > _MAX_PROGRAMS:
        _PROGRAMS.popitem(last=False)
    return entry, seconds


# ---------------------------------------------------------------------------------------------
# run


def _default_eval_every(steps: int) -> int:
    """Largest divisor of ``steps`` that gives at least ~50 evaluations."""
    if steps <= 50:
        return 1
    target = max(1, steps // 50)
    return max(d for d in range(1, target + 1) if steps % d == 0)


def _chunks_per_call(n_evals: int, eval_every: int, max_chunks: int) -> int:
    """A divisor of n_evals, so every call runs the same program: about 10 calls per run, each at
    most ~5000 steps (so the host sees a long run often enough for a progress bar) and holding at
    most ``max_chunks`` params snapshots (memory)."""
    if n_evals == 0:
        return 0  # steps == 0: one call that only evaluates the initial state
    cap = max(1, min(math.ceil(n_evals / 10), max(1, 5000 // eval_every), max_chunks))
    return max(d for d in range(1, cap + 1) if n_evals % d == 0)


def _check_run_args(algorithm, problem, topology, steps, eval_every):
    if not isinstance(algorithm, Algorithm):
        raise ValueError(f"algorithm must be a decsim Algorithm (e.g. ds.algorithms.dsgd(0.1)); got "
                         f"{type(algorithm).__name__}.")
    if not isinstance(problem, Problem):
        raise ValueError(f"problem must be a decsim Problem (e.g. ds.problems.quadratic(8, 10)); got "
                         f"{type(problem).__name__}.")
    if not isinstance(topology, Topology):
        raise ValueError(f"topology must be a decsim Topology (e.g. ds.topology.ring(8)); got "
                         f"{type(topology).__name__}.")
    if topology.n != problem.n_workers:
        raise ValueError(f"topology {topology.name} has n={topology.n} workers but the problem has "
                         f"n_workers={problem.n_workers}; build both with the same n.")
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 0:
        raise ValueError(f"steps must be a nonnegative integer; got steps={steps!r}.")
    if eval_every is None:
        return _default_eval_every(int(steps))
    if isinstance(eval_every, bool) or not isinstance(eval_every, (int, np.integer)) or eval_every < 1:
        raise ValueError(f"eval_every must be a positive integer; got eval_every={eval_every!r}.")
    if steps % eval_every:
        lo = steps // eval_every * eval_every
        raise ValueError(f"steps={steps} is not a multiple of eval_every={eval_every}; use "
                         f"steps={lo if lo else eval_every} or {lo + eval_every}, or an eval_every "
                         f"that divides {steps}.")
    return int(eval_every)


def _program_args(problem: Problem, topology: Topology, gplan: GossipPlan) -> dict:
    f32 = jnp.float32
    return {
        "params0": jax.tree.map(lambda a: jnp.asarray(a, f32), problem.params0),
        "data": jax.tree.map(jnp.asarray, problem.data),
        "counts": jnp.asarray(problem.counts, jnp.int32),
        "noise_std": jnp.asarray(problem.noise_std, f32),
        "test": None if problem.test_data is None else jax.tree.map(jnp.asarray, problem.test_data),
        "aux": None if problem.aux is None else jax.tree.map(lambda a: jnp.asarray(a, f32), problem.aux),
        "topology": {k: jnp.asarray(v) for k, v in gplan.args.items()},
        "lam": jnp.asarray(topology.lam, f32),
    }


def _mesh(devices, n_workers: int):
    """A 1-D mesh over ``devices`` for the worker axis, or None."""
    if devices is None:
        return None
    devices = list(devices)
    if not devices:
        raise ValueError("devices must list at least one device, e.g. devices=jax.devices().")
    if n_workers % len(devices):
        raise ValueError(f"n_workers={n_workers} is not a multiple of the {len(devices)} devices; the "
                         "worker axis is split evenly. Use a worker count divisible by the device "
                         f"count (e.g. {len(devices) * max(1, n_workers // len(devices))}).")
    from jax.sharding import Mesh

    return Mesh(np.array(devices), ("workers",))


def _mesh_key(mesh):
    return None if mesh is None else tuple(d.id for d in mesh.devices.flat)


def _place(args: dict, keys, hp: dict, mesh):
    """Put per-worker arrays (initial parameters, data, counts) on the mesh split along their worker
    axis; replicate everything else. The programs' shardings follow from these."""
    from jax.sharding import NamedSharding, PartitionSpec

    split = NamedSharding(mesh, PartitionSpec("workers"))
    whole = NamedSharding(mesh, PartitionSpec())
    per_worker = {"params0", "data", "counts"}
    placed = {k: jax.tree.map(lambda a: jax.device_put(a, split if k in per_worker else whole), v)
              for k, v in args.items()}
    return placed, jax.device_put(keys, whole), jax.tree.map(lambda a: jax.device_put(a, whole), hp)


def _check_hparam(name: str, value, seeds: Optional[list]):
    """A hyperparameter value: a number, or (with ``seeds``) one number per seed."""
    arr = np.asarray(value)
    if arr.ndim == 0 and np.issubdtype(arr.dtype, np.number) and not np.issubdtype(arr.dtype, np.bool_):
        return arr
    if seeds is None:
        raise ValueError(f"hparams[{name!r}] must be a number; got {value!r}. A list of values (one "
                         "per run) needs seeds=[...] of the same length, e.g. seeds=[0] * len(values).")
    if arr.ndim != 1 or arr.shape[0] != len(seeds) or not np.issubdtype(arr.dtype, np.number) \
            or np.issubdtype(arr.dtype, np.bool_):
        raise ValueError(f"hparams[{name!r}] must be a number or a list of {len(seeds)} numbers, one "
                         f"per seed in seeds={seeds}; got {value!r}.")
    return arr


def run(algorithm: Algorithm, problem: Problem, topology: Topology, steps: int, *,
        eval_every: Optional[int] = None, seed: int = 0, seeds: Optional[Sequence[int]] = None,
        progress: Optional[bool] = None, hparams: Optional[dict] = None, gossip: str = "auto",
        devices: Optional[Sequence] = None) -> History:
    """Run ``algorithm`` on ``problem`` over ``topology`` for ``steps`` steps.

    Args:
      algorithm: from ``ds.algorithms``.
      problem: from ``ds.problems``.
      topology: from ``ds.topology`` with ``n == problem.n_workers``.
      steps: number of algorithm steps (a multiple of ``eval_every``).
      eval_every: steps between evaluations (default: about 50 evaluations).
      seed: the run's seed (minibatches, noise, compressors).
      seeds: several seeds run as one vmapped program; metrics gain a leading seed axis.
      progress: show a progress bar (default: only when the run will take more than a few seconds).
      hparams: override numeric hyperparameters (e.g. ``{"learning_rate": 0.05}``) without
        rebuilding the algorithm. With ``seeds``, a value may also be a list with one entry per
        seed (``seeds=[0, 1, 0, 1], hparams={"learning_rate": [0.1, 0.1, 0.2, 0.2]}``): run i
        uses ``seeds[i]`` and entry i, and all of them are one vmapped program (a learning-rate
        sweep in one call).
      gossip: how rounds are computed: ``"auto"``, ``"dense"``, ``"sparse"`` (neighbour gathers)
        or ``"roll"`` (circulant graphs); see :mod:`decsim.gossip`. All give the same results.
      devices: shard the worker axis over these devices (a 1-D ``jax.sharding.Mesh``), e.g.
        ``jax.devices()``; n must be a multiple of their number. XLA inserts the collectives that
        gossip needs; results equal the unsharded run. After ``jax.distributed.initialize()``,
        ``jax.devices()`` spans every process (host): run the same script in each, and each gets
        the whole History.

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
    eval_every = _check_run_args(algorithm, problem, topology, steps, eval_every)
    if algorithm.validate is not None:
        algorithm.validate(topology)
    batched = seeds is not None
    seed_list = [int(s) for s in seeds] if batched else [int(seed)]
    if batched and len(seed_list) == 0:
        raise ValueError("seeds must hold at least one seed; got an empty list.")
    hp = dict(algorithm.hparams or {})
    if hparams:
        unknown = set(hparams) - set(hp)
        if unknown:
            raise ValueError(f"hparams {sorted(unknown)} are not numeric hyperparameters of "
                             f"{algorithm.name}; valid: {sorted(hp)}.")
        hp.update(hparams)
    hp = {k: jnp.asarray(_check_hparam(k, v, seed_list if batched else None), jnp.float32)
          for k, v in hp.items()}
    hp_axes = {k: 0 if jnp.ndim(v) else None for k, v in hp.items()}  # per-run values: vmapped

    gplan = gossip_plan(topology, gossip)
    mesh = _mesh(devices, problem.n_workers)
    args = _program_args(problem, topology, gplan)
    keys = jnp.stack([jax.random.PRNGKey(s) for s in seed_list]) if batched else jax.random.PRNGKey(seed_list[0])
    if mesh is not None:
        args, keys, hp = _place(args, keys, hp, mesh)
    n_evals = steps // eval_every
    snapshot_bytes = 4 * len(seed_list) * sum(int(np.size(a)) for a in jax.tree.leaves(problem.params0))
    chunks = _chunks_per_call(n_evals, eval_every, max(1, _SNAPSHOT_BUDGET_BYTES // snapshot_bytes))
    prog_key = (_algo_key(algorithm), _problem_key(problem), _mesh_key(mesh))

    compile_seconds = 0.0
    constrain = _worker_constraint(mesh, problem.n_workers)
    constrain_stacked = _worker_constraint(mesh, problem.n_workers, axis=1)
    init_prog, secs = _compiled("init", lambda: _make_init(algorithm, problem, constrain), prog_key,
                                (hp, keys, args), batched, (hp_axes, 0, None))
    compile_seconds += secs
    state = init_prog(hp, keys, args)
    t0 = jnp.zeros((), jnp.int32)
    seg_prog, secs = _compiled(
        "segment", lambda: _make_segment(algorithm, problem, gplan, eval_every, chunks, constrain,
                                         constrain_stacked),
        prog_key + (gplan.key, eval_every, chunks), (hp, state, t0, keys, args), batched,
        (hp_axes, 0, None, 0, None))
    compile_seconds += secs

    start = time.perf_counter()
    n_seeds = len(seed_list)
    margs = _metrics_args(args)
    metrics_prog = None
    records, cost_chunks = [], []
    bar = None
    done_steps = 0
    diverged = np.zeros(n_seeds, dtype=bool)
    while not records or (done_steps < steps and not diverged.all()):
        state, costs, (Xs, extras) = seg_prog(hp, state, jnp.asarray(done_steps, jnp.int32), keys, args)
        if metrics_prog is None:  # compiled on the first snapshots (shapes and sharding)
            tic = time.perf_counter()
            metrics_prog, secs = _compiled("metrics", lambda: _make_metrics(problem),
                                           _metrics_key(problem) + (_mesh_key(mesh),),
                                           (Xs, t0, margs), batched, (0, None, None))
            compile_seconds += secs
            start += time.perf_counter() - tic  # run_seconds excludes it
        first = 0 if not records else 1  # the incoming state was the previous call's last snapshot
        metrics = {**metrics_prog(Xs, jnp.asarray(first, jnp.int32), margs), **extras}
        records.append({k: np.asarray(v, np.float64).reshape(n_seeds, -1)[:, first:]
                        for k, v in metrics.items()})
        cost_chunks.append(np.asarray(costs, np.float64).reshape(n_seeds, chunks, 3))
        done_steps += chunks * eval_every
        diverged |= ~_finite(records[-1], n_seeds)
        elapsed = time.perf_counter() - start
        if bar is None and done_steps < steps:
            show = progress if progress is not None else elapsed * steps / done_steps > _PROGRESS_MIN_SECONDS
            if show:
                from tqdm.auto import tqdm

                bar = tqdm(total=steps, unit="step", desc=f"{algorithm.name} on {topology.name}",
                           leave=False)
                bar.update(done_steps)
        elif bar is not None:
            bar.update(chunks * eval_every)
    if bar is not None:
        bar.close()
    jax.block_until_ready(state)
    run_seconds = time.perf_counter() - start

    names = list(records[0])
    evals_done = sum(r[names[0]].shape[1] for r in records)
    metrics = {k: np.concatenate([r[k] for r in records], axis=1) for k in names}
    per_chunk = np.concatenate(cost_chunks, axis=1) if cost_chunks else np.zeros((n_seeds, 0, 3))
    cumulative = np.concatenate([np.zeros((n_seeds, 1, 3)), np.cumsum(per_chunk, axis=1)], axis=1)
    for i, name in enumerate(("grad_evals", "comm_rounds", "bits")):
        metrics[name] = cumulative[:, :, i]
    all_steps = np.arange(n_evals + 1) * eval_every
    # pad an early stop to the full length with NaN; blank every seed after its divergence
    diverged_step = np.full(n_seeds, -1, dtype=np.int64)
    for k in list(metrics):
        v = metrics[k]
        if v.shape[1] < n_evals + 1:
            v = np.concatenate([v, np.full((n_seeds, n_evals + 1 - v.shape[1]), np.nan)], axis=1)
        metrics[k] = v
    bad = np.zeros((n_seeds, evals_done), dtype=bool)
    for k in _DIVERGENCE_KEYS:
        if k in metrics:
            bad |= ~np.isfinite(metrics[k][:, :evals_done])
    for s in range(n_seeds):
        hits = np.flatnonzero(bad[s])
        if hits.size:
            first = int(hits[0])
            diverged_step[s] = int(all_steps[first])
            for k in metrics:
                metrics[k][s, first:] = np.nan

    params = _fetch(algorithm.params(state) if not batched else jax.vmap(algorithm.params)(state))
    if not batched:
        metrics = {k: v[0] for k, v in metrics.items()}
    config = {
        "algorithm": algorithm.name,
        "algorithm_args": _plain(algorithm.config or {}),
        "hparams": {k: np.asarray(v, np.float64).tolist() for k, v in hp.items()},
        "problem": problem.name,
        "topology": topology.name,
        "n_workers": problem.n_workers,
        "spectral_gap": topology.spectral_gap,
        "steps": int(steps),
        "eval_every": int(eval_every),
        "batch_size": problem.batch_size,
        "gossip": gplan.path,
        "devices": 1 if mesh is None else int(mesh.size),
    }
    div = diverged_step >= 0
    return History(
        steps=all_steps,
        metrics=metrics,
        params=params,
        diverged=div if batched else bool(div[0]),
        diverged_step=diverged_step if batched else int(diverged_step[0]),
        seeds=seed_list if batched else seed_list[0],
        config=config,
        compile_seconds=compile_seconds,
        run_seconds=run_seconds,
    )


def trajectory(algorithm: Algorithm, problem: Problem, topology: Topology, steps: int, *,
               seed: int = 0, record=None, gossip: str = "auto"):
    """Every iterate of a short run, for inspection and exact-trajectory tests.

    Returns a numpy pytree with a leading axis ``[steps + 1, ...]``: ``record(state)`` (default
    ``algorithm.params(state)``) at the initial state and after each step. Uses the same oracle,
    mixer and key derivation as :func:`run`; meant for small problems (it keeps every iterate).
    """
    _check_run_args(algorithm, problem, topology, steps, 1)
    if algorithm.validate is not None:
        algorithm.validate(topology)
    record = algorithm.params if record is None else record
    gplan = gossip_plan(topology, gossip)
    args = _program_args(problem, topology, gplan)
    run_key = jax.random.PRNGKey(seed)

    @jax.jit
    def go(args):
        oracle = make_oracle(problem, args["data"], args["counts"], args["noise_std"])
        state = algorithm.init(args["params0"], _init_key(run_key))

        def one(state, t):
            mixer = gplan.mixer(args["topology"], args["lam"], t)
            state, _ = algorithm.step(state, oracle, mixer, jax.random.fold_in(run_key, t))
            return state, record(state)

        _, rest = jax.lax.scan(one, state, jnp.arange(steps, dtype=jnp.int32))
        return jax.tree.map(lambda a, b: jnp.concatenate([a[None], b]), record(state), rest)

    return tree.to_numpy(go(args))


def _fetch(stacked):
    """Device pytree -> numpy pytree, also when the worker axis spans several processes (a mesh
    over hosts after ``jax.distributed.initialize()``): each process then gets the whole array."""

    def one(a):
        if isinstance(a, jax.Array) and not a.is_fully_addressable:
            from jax.experimental import multihost_utils

            a = multihost_utils.process_allgather(a, tiled=True)
        return np.asarray(a)

    return jax.tree.map(one, stacked)


def _finite(record: dict, n_seeds: int) -> np.ndarray:
    ok = np.ones(n_seeds, dtype=bool)
    for k in _DIVERGENCE_KEYS:
        if k in record:
            ok &= np.all(np.isfinite(record[k]), axis=1)
    return ok


def _plain(value):
    """A JSON-friendly rendering of factory arguments (objects by name)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (str, int, float, bool, type(None))):
        return value
    if isinstance(value, (list, tuple)) and not hasattr(value, "_fields"):
        return [_plain(v) for v in value]
    if callable(value):
        return getattr(value, "__name__", type(value).__name__)
    return getattr(value, "name", None) or type(value).__name__


if __import__("os").environ.get("DECSIM_CACHE_DIR"):
    enable_compilation_cache()
