"""Compiled programs and the device side of a run: the program cache, trace counts, the mesh and
sharding of the worker axis, and the device-resident copies of a problem's data.

The runner builds three kinds of program (``init``, ``segment``, ``metrics``); each is traced and
compiled once per key (what it closes over: the algorithm's functions, the problem's loss, ...)
and argument signature (shapes, dtypes, tree structure), and kept in a bounded LRU cache.
"""

from __future__ import annotations

import collections
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["TRACE_COUNTS", "trace_count", "clear_cache", "compiled", "batched", "BATCHING",
           "signature",
           "enable_compilation_cache", "make_mesh", "mesh_key", "place", "worker_constraint",
           "device_data", "float_dtype", "as_float"]

TRACE_COUNTS: collections.Counter = collections.Counter()
_PROGRAMS: collections.OrderedDict = collections.OrderedDict()
_MAX_PROGRAMS = 64  # compiled executables kept (least recently used are dropped)
_DATA: collections.OrderedDict = collections.OrderedDict()
_MAX_DATA = 8  # problems whose device-resident data is kept
_ENV_CACHE_CHECKED = []


def trace_count(kind: str | None = None) -> int:
    """How many programs the runner has traced (all kinds, or ``"init"``/``"segment"``/
    ``"metrics"``)."""
    return sum(TRACE_COUNTS.values()) if kind is None else TRACE_COUNTS[kind]


def clear_cache() -> None:
    """Forget every compiled program and every device copy of problem data (the next run
    uploads and compiles again)."""
    _PROGRAMS.clear()
    _DATA.clear()


def enable_compilation_cache(path: str | None = None) -> str:
    """Keep compiled programs on disk (JAX's persistent compilation cache), so a new process — a
    notebook kernel restart, the next job of a sweep — skips compilation of programs it has seen.

    Args:
      path: the cache folder (default: ``$DECSIM_CACHE_DIR`` or ``~/.cache/decsim/xla``).

    Returns:
      The folder used. With ``DECSIM_CACHE_DIR`` set in the environment, the first compilation
      of a run enables it (importing decsim changes no JAX setting).
    """
    path = path or os.environ.get("DECSIM_CACHE_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "decsim", "xla")
    os.makedirs(path, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path


def signature(args) -> tuple:
    """Tree structure, shapes and dtypes of a program's arguments (part of its cache key)."""
    leaves, treedef = jax.tree.flatten(args)
    return (treedef,) + tuple((np.shape(leaf), jnp.result_type(leaf).name) for leaf in leaves)


BATCHING = ("map", "vmap")


def batched(fn, in_axes, batching: str):
    """``fn`` over a leading run axis of the arguments whose ``in_axes`` entry is not None.

    ``"vmap"`` vectorizes the runs (``jax.vmap``): often faster, but XLA may pick other kernels
    for other batch sizes, so a run's numbers can change (by rounding, which chaotic dynamics
    such as top-k selection can amplify) with the number of runs it shares a call with.
    ``"map"`` runs them one after another inside the program (``jax.lax.map``): every run is
    computed by exactly the program of a run alone, so its numbers are bitwise those of an
    unbatched run, however many runs share the call.
    """
    if batching == "vmap":
        return jax.vmap(fn, in_axes=in_axes)
    flags = [ax is not None for ax in in_axes]

    def mapped(*args):
        runs = tuple(a for a, f in zip(args, flags) if f)

        def one(run_args):
            it = iter(run_args)
            return fn(*[next(it) if f else a for a, f in zip(args, flags)])

        return jax.lax.map(one, runs)

    return mapped


def compiled(kind: str, builder, key: tuple, args: tuple, vmapped: bool, in_axes,
             batching: str = "map"):
    """Fetch or build (trace + compile) the executable for ``key`` and these argument shapes.

    With ``vmapped``, the program runs a batch of runs (:func:`batched`, by ``batching``).
    Returns ``(executable, compile_seconds)`` (0 when it came from the cache)."""
    if not _ENV_CACHE_CHECKED:
        _ENV_CACHE_CHECKED.append(True)
        if os.environ.get("DECSIM_CACHE_DIR"):
            enable_compilation_cache()
    full_key = (kind, key, vmapped and batching, signature(args))
    entry = _PROGRAMS.get(full_key)
    if entry is not None:
        _PROGRAMS.move_to_end(full_key)
        return entry, 0.0
    fn = builder()
    if vmapped:
        fn = batched(fn, in_axes, batching)
    start = time.perf_counter()
    entry = jax.jit(fn).lower(*args).compile()
    seconds = time.perf_counter() - start
    _PROGRAMS[full_key] = entry
    while len(_PROGRAMS) > _MAX_PROGRAMS:
        _PROGRAMS.popitem(last=False)
    return entry, seconds


def float_dtype():
    """The float dtype of a run: float64 when ``jax_enable_x64`` is on, else float32 (JAX's)."""
    return jnp.dtype(jnp.result_type(float))


def as_float(tree):
    """Device copies of a pytree with every floating leaf in :func:`float_dtype` (integer and
    boolean leaves keep their dtype)."""
    dt = float_dtype()

    def one(a):
        a = np.asarray(a) if not isinstance(a, jax.Array) else a
        return jnp.asarray(a, dt) if jnp.issubdtype(a.dtype, jnp.floating) else jnp.asarray(a)

    return jax.tree.map(one, tree)


def device_data(problem) -> dict:
    """The device-resident arrays of a problem (initial params, data, counts, noise, test data,
    aux), uploaded once and cached by the identity of the problem's arrays, so a second run on
    the same problem (or on ``problem._replace(batch_size=...)``) re-uploads nothing.

    The cache holds references to the host arrays, so their identities stay valid; a problem
    whose arrays are modified in place needs :func:`clear_cache`.
    """
    host = (problem.params0, problem.data, problem.counts, problem.test_data, problem.aux,
            problem.model_state0)
    key = (tuple(id(a) for a in jax.tree.leaves(host)), jax.tree.structure(host),
           float(problem.noise_std), float_dtype().name, problem.evaluation)
    entry = _DATA.get(key)
    if entry is not None:
        _DATA.move_to_end(key)
        return entry[1]
    args = {
        "params0": as_float(problem.params0),
        "data": as_float(problem.data),
        "counts": jnp.asarray(problem.counts, jnp.int32),
        "noise_std": jnp.asarray(problem.noise_std, float_dtype()),
        "test": None if problem.test_data is None else as_float(problem.test_data),
        "aux": None if problem.aux is None else as_float(problem.aux),
        "model_state0": None if problem.model_state0 is None else as_float(problem.model_state0),
    }
    from .problems.evaluate import eval_rows

    eval_data, eval_counts = eval_rows(problem)
    if eval_data is problem.data:
        args["eval_data"], args["eval_counts"] = args["data"], args["counts"]
    else:
        args["eval_data"] = as_float(eval_data)
        args["eval_counts"] = jnp.asarray(eval_counts, jnp.int32)
    _DATA[key] = (host, args)
    while len(_DATA) > _MAX_DATA:
        _DATA.popitem(last=False)
    return args


# ---------------------------------------------------------------------------------------------
# mesh and sharding of the worker axis


def make_mesh(devices, n_workers: int):
    """A 1-D mesh over ``devices`` for the worker axis, or None."""
    if devices is None:
        return None
    devices = list(devices)
    if not devices:
        raise ValueError("devices must list at least one device, e.g. devices=jax.devices().")
    if n_workers % len(devices):
        raise ValueError(f"n_workers={n_workers} is not a multiple of the {len(devices)} devices; "
                         "the worker axis is split evenly. Use a worker count divisible by the "
                         f"device count (e.g. {len(devices) * max(1, n_workers // len(devices))}).")
    from jax.sharding import Mesh

    return Mesh(np.array(devices), ("workers",))


def mesh_key(mesh):
    return None if mesh is None else tuple(d.id for d in mesh.devices.flat)


def place(args: dict, keys, hp: dict, mesh):
    """Put per-worker arrays (initial parameters, data, counts) on the mesh split along their
    worker axis; replicate everything else. The programs' shardings follow from these."""
    from jax.sharding import NamedSharding, PartitionSpec

    split = NamedSharding(mesh, PartitionSpec("workers"))
    whole = NamedSharding(mesh, PartitionSpec())
    per_worker = {"params0", "data", "counts", "model_state0", "eval_data", "eval_counts"}
    placed = {k: jax.tree.map(lambda a, s=(split if k in per_worker else whole):
                              jax.device_put(a, s), v)
              for k, v in args.items()}
    return (placed, jax.device_put(keys, whole),
            jax.tree.map(lambda a: jax.device_put(a, whole), hp))


def worker_constraint(mesh, n: int, axis: int = 0):
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
