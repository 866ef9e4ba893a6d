"""Stacked-pytree helpers: every leaf has a leading worker axis ``[n, ...]``."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "worker_mean",
    "average",
    "sq_norm",
    "worker_sq_norms",
    "consensus_distance",
    "size",
    "leaf_sizes",
    "add",
    "sub",
    "scale",
    "zeros_like",
    "to_numpy",
]


def worker_mean(X):
    """``x̄ = (1/n) sum_i x_i``, leaf-wise; leaves lose the worker axis."""
    return jax.tree.map(lambda a: jnp.mean(a, axis=0), X)


def average(X):
    """Exact averaging ``J X`` (every row replaced by the mean), leaf-wise."""
    return jax.tree.map(lambda a: jnp.broadcast_to(jnp.mean(a, axis=0, keepdims=True), a.shape), X)


def sq_norm(tree):
    """Squared Euclidean norm of a whole pytree (a scalar)."""
    return sum(jnp.sum(jnp.square(a)) for a in jax.tree.leaves(tree))


def worker_sq_norms(X):
    """``[n]`` vector of ``||x_i||²`` over all leaves."""
    return sum(jnp.sum(jnp.square(a).reshape(a.shape[0], -1), axis=1) for a in jax.tree.leaves(X))


def consensus_distance(X):
    """``(1/n) sum_i ||x_i − x̄||²`` over all leaves."""
    centred = jax.tree.map(lambda a: a - jnp.mean(a, axis=0, keepdims=True), X)
    return jnp.mean(worker_sq_norms(centred))


def size(tree, *, stacked: bool = True) -> int:
    """Number of scalars per worker (``d``); with ``stacked=False`` the whole tree."""
    leaves = jax.tree.leaves(tree)
    if stacked:
        return int(sum(math.prod(np.shape(a)[1:]) for a in leaves))
    return int(sum(math.prod(np.shape(a)) for a in leaves))


def leaf_sizes(tree, *, stacked: bool = True) -> list:
    """Per-leaf number of scalars per worker."""
    return [
        int(math.prod(np.shape(a)[1:] if stacked else np.shape(a))) for a in jax.tree.leaves(tree)
    ]


def add(X, Y):
    """``X + Y`` leaf by leaf (the two trees have the same structure)."""
    return jax.tree.map(jnp.add, X, Y)


def sub(X, Y):
    """``X − Y`` leaf by leaf (the two trees have the same structure)."""
    return jax.tree.map(jnp.subtract, X, Y)


def scale(alpha, X):
    """``alpha · X`` leaf by leaf; ``alpha`` is a scalar (traced or not)."""
    return jax.tree.map(lambda x: alpha * x, X)


def zeros_like(X):
    """A tree of zeros with the structure, shapes and dtypes of ``X``."""
    return jax.tree.map(jnp.zeros_like, X)


def to_numpy(tree):
    """Device pytree -> numpy pytree."""
    return jax.tree.map(np.asarray, tree)
