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

__all__ = ["local_loss", "is_uniform", "objective", "oracle", "full_loss", "optimum"]


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


def oracle(problem: Problem, data, counts, noise_std) -> Callable:
    """The stacked stochastic-gradient oracle ``oracle(X, key) -> G`` (leaves ``[n, ...]``).

    Worker i draws ``batch_size`` indices uniformly (with replacement) from its own
    ``counts[i]`` rows, or uses all of them when ``batch_size is None``; Gaussian noise of standard
    deviation ``noise_std`` per coordinate is added when the problem has any. Worker i's key is
    ``split(key, n)[i]``, split again into a batch key and a noise key.
    """
    loss_fn, batch_size = problem.loss_fn, problem.batch_size
    local = local_loss(loss_fn, is_uniform(problem))
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
            leaves = [leaf + noise_std.astype(leaf.dtype) * jax.random.normal(k, leaf.shape,
                                                                              leaf.dtype)
                      for leaf, k in zip(leaves, keys)]
            g = jax.tree.unflatten(treedef, leaves)
        return g

    def stacked(X, key):
        n = jax.tree.leaves(X)[0].shape[0]
        return jax.vmap(worker)(X, data, counts, jax.random.split(key, n))

    return stacked


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
