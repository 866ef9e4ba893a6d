"""Synthetic problems with known solutions: quadratics (x*, f*, L, μ, σ², ζ²) and average
consensus."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from .. import tree
from .._checks import nonnegative, positive
from .._types import Problem
from ._common import dim as check_dim
from ._common import workers as check_workers

__all__ = ["quadratic", "consensus"]


def _quadratic_loss(params, batch):
    """``mean_b ½ Σ_j a_bj (x_j − c_bj)²`` (batch leaves ``a``, ``c``: ``[b, d]``)."""
    return 0.5 * jnp.mean(jnp.sum(batch["a"] * jnp.square(params[None, :] - batch["c"]), axis=1))


def quadratic(n_workers: int, dim: int, *, mu: float = 0.1, L: float = 1.0, noise: float = 0.0,
              heterogeneity: float = 1.0, seed: int = 0) -> Problem:
    """Heterogeneous strongly convex quadratic with known optimum.

    ``f_i(x) = ½ (x − c_i)ᵀ A (x − c_i)`` with ``A = diag(linspace(mu, L, dim))`` shared by all
    workers (so f is μ-strongly convex and L-smooth, exactly),
    ``c_i = x* + heterogeneity · A⁻¹ e_i``
    with ``Σ_i e_i = 0`` and ``(1/n) Σ_i ||e_i||² = 1``. Hence ``x* = mean_i c_i``,
    ``∇f_i(x) − ∇f(x) = −heterogeneity · e_i`` and ``ζ² = heterogeneity²`` (for n > 1).
    Stochastic gradients add ``noise · N(0, I)``: variance ``σ² = noise²`` per coordinate.
    ``mu = L`` gives the isotropic quadratic of docs/theory.md.

    ``info`` holds ``x_star``, ``f_star``, ``L``, ``mu``, ``sigma2`` (per coordinate), ``zeta2``.
    """
    n = check_workers(n_workers)
    check_dim(dim)
    mu, L = positive("mu", mu), positive("L", L)
    if not L >= mu:
        raise ValueError(f"need 0 < mu <= L; got mu={mu!r}, L={L!r}.")
    noise = nonnegative("noise", noise)
    heterogeneity = nonnegative("heterogeneity", heterogeneity)
    rng = np.random.default_rng(seed)
    a = np.linspace(mu, L, dim)
    x_star = rng.normal(size=dim)
    e = rng.normal(size=(n, dim))
    e -= e.mean(axis=0, keepdims=True)
    if n > 1:
        e /= np.sqrt(np.mean(np.sum(e**2, axis=1)))
    else:
        e[:] = 0.0
    c = x_star[None, :] + heterogeneity * e / a[None, :]
    f_star = float(np.mean(0.5 * np.sum(a[None, :] * (x_star[None, :] - c) ** 2, axis=1)))
    zeta2 = float(np.mean(np.sum((heterogeneity * e) ** 2, axis=1)))
    # host data in float64: the runner casts to the run's float dtype (float32 unless
    # jax_enable_x64), so x64 runs see the exact problem whose x* and f* are recorded
    data = {"a": np.broadcast_to(a, (n, 1, dim)).copy(), "c": c[:, None, :].copy()}
    params0 = np.zeros((n, dim), np.float32)  # exact in every float dtype
    info = dict(
        x_star=x_star,
        f_star=f_star,
        L=float(L),
        mu=float(mu),
        sigma2=float(noise) ** 2,
        zeta2=zeta2,
        dim=int(dim),
    )
    return Problem(
        name=f"quadratic(d={dim})",
        n_workers=n,
        params0=params0,
        data=data,
        counts=np.ones(n, np.int32),
        loss_fn=_quadratic_loss,
        batch_size=None,
        noise_std=float(noise),
        info=info,
    )


def _consensus_metrics(X, aux):
    return {"consensus_error": jnp.mean(tree.worker_sq_norms(X - aux[None, :]))}


def consensus(n_workers: int, dim: int, *, seed: int = 0) -> Problem:
    """Average consensus: worker i starts at its own ``a_i ~ N(0, I)``; ``f_i(x) = ½||x − a_i||²``.

    The target is ``x̄_0 = mean_i a_i``; the metric ``consensus_error`` is
    ``(1/n) Σ_i ||x_i − x̄_0||²``. Gossip-only algorithms never call the gradient oracle.
    """
    n = check_workers(n_workers)
    check_dim(dim)
    rng = np.random.default_rng(seed)
    a0 = rng.normal(size=(n, dim)).astype(np.float32)
    data = {"a": np.ones((n, 1, dim), np.float32), "c": a0[:, None, :].copy()}
    mean = a0.mean(axis=0)
    info = dict(
        x_star=mean,
        f_star=float(np.mean(0.5 * np.sum((a0 - mean) ** 2, axis=1))),
        L=1.0,
        mu=1.0,
        sigma2=0.0,
        dim=int(dim),
    )
    return Problem(
        name=f"consensus(d={dim})",
        n_workers=n,
        params0=a0,
        data=data,
        counts=np.ones(n, np.int32),
        loss_fn=_quadratic_loss,
        batch_size=None,
        extra_metrics=_consensus_metrics,
        aux=mean,
        info=info,
    )
