"""What a :class:`decsim.Problem` means: the local objectives ``f_i``, the global objective
``f = (1/n) Σ_i f_i``, the stacked stochastic-gradient oracle, and a reference optimum.

Worker i holds ``counts[i]`` samples in rows ``0 .. counts[i]-1`` of every leaf of ``data``; the
rows past the count are padding that neither sampling nor any loss ever sees. ``f_i`` is the mean
of ``loss_fn`` over worker i's own samples, so every worker weighs the same whatever its size.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from .. import tree
from .._types import Problem

__all__ = ["local_loss", "is_uniform", "objective", "Oracle", "oracle", "oracle_state",
           "over_workers", "WORKERS", "EPOCH_STREAM", "full_loss", "optimum"]


@functools.cache
def local_loss(loss_fn, uniform: bool):
    """``f_i(x) = mean of loss over worker i's own rows``: ``(x, data_i, count_i) -> scalar``."""
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


def is_uniform(problem: Problem) -> bool:
    """Every worker holds all ``m`` rows of its data (no padding)."""
    m = jax.tree.leaves(problem.data)[0].shape[1]
    return bool(np.all(np.asarray(problem.counts) == m))


def objective(problem: Problem) -> Callable:
    """``(x, data, counts) -> (1/n) Σ_i f_i(x)`` for one unstacked model x."""
    local = local_loss(problem.loss_fn, is_uniform(problem))

    def f(x, data, counts):
        return jnp.mean(jax.vmap(local, in_axes=(None, 0, 0))(x, data, counts))

    return f


WORKERS = ("vmap", "map")  # how the worker axis is executed (or an int: chunks of that size)
EPOCH_STREAM = 2**31 - 2  # fold_in(run_key, EPOCH_STREAM): the epoch permutations' key


class Oracle:
    """The stacked stochastic-gradient oracle ``oracle(X, key) -> G`` (leaves ``[n, ...]``).

    Worker i draws ``batch_size`` indices uniformly (with replacement) from its own
    ``counts[i]`` rows, or uses all of them when ``batch_size is None``; Gaussian noise of standard
    deviation ``noise_std`` per coordinate is added when the problem has any. Worker i's key is
    ``split(key, n)[i]``, split again into a batch key and a noise key (and a model key, passed to
    an extended loss for dropout or augmentation).

    ``state`` is what the oracle carries between calls: the stacked model state of a stateful
    problem (``"model"``, updated by every gradient evaluation) and the epoch cursor of
    ``sampling="epoch"`` (``"cursor"``); ``{}`` otherwise. The runner threads it through the
    run. Within one step an algorithm may call the oracle several times, sequentially, at the
    step's top level; ``stateful`` says whether the calls depend on each other (then they must not
    be vmapped or put inside ``lax`` loops).
    """

    def __init__(self, fn: Callable, state: dict):
        self._fn = fn
        self.state = state
        self.stateful = bool(state)

    def __call__(self, X, key):
        G, self.state = self._fn(X, self.state, key)
        return G


def oracle_state(problem: Problem, model_state0) -> dict:
    """The initial :attr:`Oracle.state` of a run (``model_state0``: the stacked device copy)."""
    out = {}
    if problem.stateful:
        out["model"] = model_state0
    if problem.sampling == "epoch" and problem.batch_size is not None:
        out["cursor"] = jnp.zeros((problem.n_workers,), jnp.int32)
    return out


def over_workers(fn: Callable, workers, *xs):
    """``fn`` applied to worker i's slice of every ``xs`` and stacked: ``jax.vmap`` (one batched
    program), ``lax.map`` (a compiled loop, each worker an ordinary batch computation) or
    ``lax.map`` over chunks of ``workers`` workers, each chunk vmapped (bounded memory)."""
    if workers == "vmap":
        return jax.vmap(fn)(*xs)
    if workers == "map":
        return jax.lax.map(lambda a: fn(*a), xs)
    return jax.lax.map(lambda a: fn(*a), xs, batch_size=int(workers))


def _epoch_indices(perm_key, worker, cursor, count, m: int, b: int):
    """Rows ``cursor .. cursor + b − 1`` of worker ``worker``'s sequence of epochs, each epoch a
    fresh uniform permutation of its ``count`` rows (``b <= count``, so a batch spans at most two
    epochs)."""

    def order(epoch):
        k = jax.random.fold_in(jax.random.fold_in(perm_key, worker), epoch)
        u = jax.random.uniform(k, (m,))
        return jnp.argsort(jnp.where(jnp.arange(m) < count, u, 2.0))

    pos = cursor + jnp.arange(b, dtype=jnp.int32)
    epoch0 = cursor // count
    first, second = order(epoch0), order(epoch0 + 1)
    within = pos % count
    return jnp.where(pos // count == epoch0, first[within], second[within])


def oracle(problem: Problem, data, counts, noise_std, *, state: dict | None = None,
           workers="vmap", perm_key=None) -> Oracle:
    """The problem's :class:`Oracle` on the device arrays ``data``/``counts``/``noise_std``.

    ``state`` is the oracle's incoming state (default: none, which is right for a problem
    without model state and with sampling with replacement); ``workers`` how the worker axis
    is executed (:func:`over_workers`); ``perm_key`` the key of the epoch permutations.
    """
    loss_fn, batch_size = problem.loss_fn, problem.batch_size
    local = local_loss(loss_fn, is_uniform(problem)) if not problem.stateful else None
    noisy = problem.noise_std > 0
    epochs = problem.sampling == "epoch" and batch_size is not None
    m = jax.tree.leaves(problem.data)[0].shape[1]
    state = {} if state is None else state

    def add_noise(g, k_noise):
        leaves, treedef = jax.tree.flatten(g)
        keys = jax.random.split(k_noise, len(leaves))
        leaves = [leaf + noise_std.astype(leaf.dtype) * jax.random.normal(k, leaf.shape, leaf.dtype)
                  for leaf, k in zip(leaves, keys)]
        return jax.tree.unflatten(treedef, leaves)

    def worker(x, data_i, count_i, key, i, st):
        new = dict(st)
        if problem.stateful:
            k_batch, k_noise, k_model = jax.random.split(key, 3)
        else:
            k_batch, k_noise = jax.random.split(key)
        if batch_size is None:
            batch = data_i
        else:
            if epochs:
                idx = _epoch_indices(perm_key, i, st["cursor"], count_i, m, batch_size)
                new["cursor"] = st["cursor"] + batch_size
            else:
                idx = jax.random.randint(k_batch, (batch_size,), 0, count_i)
            batch = jax.tree.map(lambda a: a[idx], data_i)
        if problem.stateful:
            g, new["model"] = jax.grad(loss_fn, has_aux=True)(x, st["model"], batch, k_model)
        elif batch_size is None:
            g = jax.grad(local)(x, data_i, count_i)
        else:
            g = jax.grad(loss_fn)(x, batch)
        if noisy:
            g = add_noise(g, k_noise)
        return g, new

    def stacked(X, st, key):
        n = jax.tree.leaves(X)[0].shape[0]
        return over_workers(worker, workers, X, data, counts, jax.random.split(key, n),
                            jnp.arange(n, dtype=jnp.int32), st)

    return Oracle(stacked, state)


def full_loss(problem: Problem) -> Callable:
    """``f(x) = (1/n) Σ_i f_i(x)`` for one (unstacked) model, as a jittable function of x."""
    data = jax.tree.map(jnp.asarray, problem.data)
    counts = jnp.asarray(problem.counts)
    f = objective(problem)
    return lambda x: f(x, data, counts)


def optimum(problem: Problem, *, max_steps: int = 5000, tol: float = 1e-9):
    """Minimize the full objective with L-BFGS (scipy's L-BFGS-B on the jitted value and
    gradient of f, in float64 on the host) from the initial point.

    Returns ``(x_star, f_star)`` (numpy pytree, float). For convex problems this is the reference
    for suboptimality ``f(x̄) − f*``; for non-convex ones, a local minimum. It stops after
    ``max_steps`` iterations, when the largest gradient entry falls below ``tol``, or when the
    line search cannot improve f any more at float32 resolution (the usual end on real data).

    Only ``value_and_grad`` of f is compiled (well under a second), not an optimizer loop.
    """
    from jax.flatten_util import ravel_pytree
    from scipy.optimize import minimize

    f = full_loss(problem)
    x0 = jax.tree.map(lambda a: jnp.asarray(a[0]), problem.params0)
    flat0, unravel = ravel_pytree(x0)
    value_and_grad = jax.jit(jax.value_and_grad(lambda v: f(unravel(v))))

    def fun(v):
        value, grad = value_and_grad(jnp.asarray(v, flat0.dtype))
        return float(value), np.asarray(grad, np.float64)

    res = minimize(fun, np.asarray(flat0, np.float64), jac=True, method="L-BFGS-B",
                   options={"maxiter": int(max_steps), "ftol": 0.0, "gtol": float(tol)})
    flat = jnp.asarray(res.x, flat0.dtype)
    return tree.to_numpy(unravel(flat)), float(value_and_grad(flat)[0])
