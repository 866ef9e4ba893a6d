"""Peak-memory estimate of a run, before anything compiles: ``ds.memory_estimate``.

A run holds, on its device: the problem's data (training rows, test rows, the evaluated
subsample), the carry (the algorithm state, which keeps one to four stacked copies of the
parameters, and the model state), the params snapshots of one call (``chunks + 1`` of them), and
the working memory of the largest computation in flight: the gradient evaluations of the workers
that run at the same time (all n with ``workers="vmap"``, one with ``"map"``, c with chunks of
c), or the metrics of one evaluation chunk (a forward pass, and a backward one when
``grad_norm_sq`` is computed). The working memory of a computation is bounded by the
bytes of every intermediate value in its jaxpr (what a backward pass may keep; XLA reuses buffers,
so the true figure is lower): this is what the estimate counts, per worker, from
``jax.make_jaxpr`` (tracing only; nothing compiles or runs).
"""

from __future__ import annotations

import os
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ._types import Problem

__all__ = ["MemoryEstimate", "memory_estimate", "available_bytes", "intermediate_bytes"]


class MemoryEstimate(NamedTuple):
    """Bytes of each part of a run's peak device memory (see :mod:`decsim.memory`)."""

    data: int
    state: int
    snapshots: int
    gradients: int
    evaluation: int
    total: int
    workers_in_flight: int

    def __str__(self) -> str:
        mb = lambda b: f"{b / 2**20:,.1f} MiB"  # noqa: E731
        return (f"peak ≈ {mb(self.total)}: data {mb(self.data)}, state {mb(self.state)}, "
                f"snapshots {mb(self.snapshots)}, gradient work {mb(self.gradients)} "
                f"({self.workers_in_flight} workers at once), evaluation {mb(self.evaluation)}")


def _nbytes(tree) -> int:
    return int(sum(np.prod(np.shape(a), dtype=np.int64) * jnp.dtype(a.dtype).itemsize
                   for a in jax.tree.leaves(tree)))


def intermediate_bytes(fn, *args) -> int:
    """Bytes of every value ``fn(*args)`` computes (its jaxpr's equation outputs, sub-jaxprs
    included): an upper bound on its working memory."""
    from jax.extend.core import jaxprs_in_params

    closed = jax.make_jaxpr(fn)(*args)

    def walk(jaxpr) -> int:
        total = 0
        for eqn in jaxpr.eqns:
            for v in eqn.outvars:
                aval = getattr(v, "aval", None)
                if hasattr(aval, "shape") and hasattr(aval, "dtype"):
                    total += int(np.prod(aval.shape, dtype=np.int64)) * aval.dtype.itemsize
            for sub in jaxprs_in_params(eqn.params):
                total += walk(sub)
        return total

    return walk(closed.jaxpr)


def available_bytes(device=None) -> int | None:
    """The memory a run may use: the device's limit (accelerators), else the host's available
    memory (``MemAvailable``), or ``None`` when unknown."""
    device = device or jax.devices()[0]
    try:
        stats = device.memory_stats()
    except Exception:  # noqa: BLE001 - backends without memory statistics
        stats = None
    if stats and stats.get("bytes_limit"):
        return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def memory_estimate(algorithm, problem: Problem, *, workers="vmap", seeds: int = 1,
                    snapshots: int = 2) -> MemoryEstimate:
    """Predict the peak memory of ``ds.run(algorithm, problem, ...)`` before compiling.

    Args:
      algorithm: the algorithm (its ``init`` is traced abstractly for the state's size).
      problem: the problem.
      workers: ``"vmap"``, ``"map"`` or a chunk size, as in :func:`decsim.run`.
      seeds: runs in one program (each holds its own state and snapshots).
      snapshots: params snapshots held per call (the runner keeps at least 2).

    Example:
      >>> import decsim as ds
      >>> prob = ds.problems.quadratic(8, 100)
      >>> est = ds.memory_estimate(ds.algorithms.dsgd(0.1), prob)
      >>> est.state >= 8 * 100 * 4 and est.total > est.state  # X (and a step counter)
      True
    """
    from .problems.evaluate import eval_rows, evaluation

    n = problem.n_workers
    spec = lambda a: jax.ShapeDtypeStruct(np.shape(a), _dtype(a))  # noqa: E731
    params0 = jax.tree.map(spec, problem.params0)
    state = jax.eval_shape(algorithm.init, params0, jax.random.PRNGKey(0))
    model = jax.tree.map(spec, problem.model_state0) if problem.stateful else {}
    sub, _ = eval_rows(problem)
    data = _nbytes(jax.tree.map(spec, problem.data)) + _nbytes(
        jax.tree.map(spec, problem.test_data) if problem.test_data is not None else {})
    if sub is not problem.data:
        data += _nbytes(jax.tree.map(spec, sub))
    one = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape[1:], a.dtype), params0)
    one_state = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape[1:], a.dtype), model)
    b = problem.batch_size or int(jax.tree.leaves(problem.data)[0].shape[1])
    batch = jax.tree.map(lambda a: jax.ShapeDtypeStruct((b,) + np.shape(a)[2:], _dtype(a)),
                         problem.data)
    key = jax.random.PRNGKey(0)
    if problem.stateful:
        loss = lambda x, s, rows: problem.loss_fn(x, s, rows, key)[0]  # noqa: E731
        evaluate = lambda x, s, rows: problem.loss_fn(x, s, rows, None)[0]  # noqa: E731
    else:
        loss = evaluate = lambda x, s, rows: problem.loss_fn(x, rows)  # noqa: E731
    per_worker = intermediate_bytes(jax.grad(loss), one, one_state, batch)
    in_flight = n if workers == "vmap" else (1 if workers == "map" else int(workers))
    ev = evaluation(problem)
    rows = n * int(jax.tree.leaves(sub)[0].shape[1])
    chunk = rows if ev.batch_size is None else min(rows, ev.batch_size)
    eval_rows_spec = jax.tree.map(
        lambda a: jax.ShapeDtypeStruct((chunk,) + np.shape(a)[2:], _dtype(a)), problem.data)
    from .problems.evaluate import grad_norm_on

    eval_fn = jax.grad(evaluate) if grad_norm_on(problem) else evaluate  # forward only without
    evaluation_bytes = intermediate_bytes(eval_fn, one, one_state, eval_rows_spec)  # grad norm
    carry = seeds * (_nbytes(state) + _nbytes(model))
    snaps = seeds * snapshots * (_nbytes(params0) + _nbytes(model))
    work = max(per_worker * in_flight * seeds, evaluation_bytes)
    return MemoryEstimate(data=data, state=carry, snapshots=snaps,
                          gradients=per_worker * in_flight * seeds, evaluation=evaluation_bytes,
                          total=data + carry + snaps + work, workers_in_flight=in_flight)


def _dtype(a):
    dt = np.asarray(a).dtype if not hasattr(a, "dtype") else a.dtype
    if jnp.issubdtype(dt, jnp.floating):
        return jnp.dtype(jnp.float64 if jax.config.jax_enable_x64 else jnp.float32)
    if dt == np.int64 and not jax.config.jax_enable_x64:
        return jnp.dtype(jnp.int32)
    return jnp.dtype(dt)
