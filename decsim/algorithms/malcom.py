"""MALCOM-PSGD (Campbell, Liu, Woldemariam, Scaglione, 2023): proximal decentralized SGD with l1
sparsification and source-coded quantized messages (ALGORITHMS.md section 7).

Objective ``f(x) + μ ||x||₁``. State ``X`` and public copies ``X̂`` (``X̂_0 = 0``)::

    X½ = X_t − η G_t
    Q_t = D(X½ − X̂_t)                    # dithered quantizer, per worker, per leaf
    X̂_{t+1} = X̂_t + Q_t
    Y = X½ + γ (W − I) X̂_{t+1}
    X_{t+1} = sign(Y) * max(|Y| − η μ, 0)  # prox of η μ ||·||₁ (soft threshold)

The exchange is Choco's (:func:`decsim.algorithms.choco.choco_exchange`); the bits are the exact
length of the lossless code of ``Q_t`` (:func:`decsim.compression.elias_bits`): 32 bits of norm, the
gaps between nonzero positions and each nonzero's sign and level, Elias-gamma coded.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp

from .. import tree
from .._types import Algorithm
from ..compression import dithered, identity
from ._common import LocalUpdate, check_int, cost, factory, is_number, schedule
from .choco import _compress_key, choco_exchange

CODERS = ("elias", "fixed")


def soft_threshold(Y, threshold):
    """``sign(y) max(|y| − threshold, 0)`` leaf-wise: the prox of ``threshold · ||·||₁``."""
    return jax.tree.map(lambda y: jnp.sign(y) * jnp.maximum(jnp.abs(y) - threshold, 0.0), Y)


class MalcomState(NamedTuple):
    X: Any  # private iterates [n, ...]
    X_hat: Any  # public copies [n, ...] (zeros at start)
    t: Any  # int32


def _sparsity(state):
    xbar = tree.worker_mean(state.X)
    leaves = jax.tree.leaves(xbar)
    zeros = sum(jnp.sum((a == 0).astype(jnp.float32)) for a in leaves)
    return {"sparsity": zeros / float(sum(a.size for a in leaves))}


@factory(numeric=("learning_rate", "gamma", "l1"))
def malcom_psgd(learning_rate, gamma, l1, *, levels: Optional[int] = 16, coder: str = "elias") -> Algorithm:
    """MALCOM-PSGD: Choco-style compressed gossip of dithered-quantized differences, an l1 prox
    step, and entropy-coded messages.

    Args:
      learning_rate: η (number or optax schedule).
      gamma: consensus step size γ.
      l1: μ ≥ 0, weight of the l1 penalty (the prox threshold is η μ).
      levels: s, levels of the dithered quantizer; ``None`` for exact (unquantized) messages,
        which with ``l1 = 0`` is ``choco_sgd(order="paper")`` with the identity compressor.
      coder: ``"elias"`` (exact Elias-gamma code length, section 7) or ``"fixed"`` (the
        fixed-length qsgd count ``d (1 + ceil(log2(s+1))) + 32``, for comparison).

    Cost per step: 1 gradient, 1 round, the coded bits of ``Q_t``. Metrics add ``sparsity``, the
    fraction of exact zeros in the worker average x̄.

    Example:
      >>> algo = malcom_psgd(0.1, 0.5, 1e-3, levels=16)
    """
    local = LocalUpdate(learning_rate, None, "malcom_psgd")
    if is_number(gamma) and not 0.0 < gamma <= 1.0:
        raise ValueError(f"gamma must be in (0, 1]; got gamma={gamma!r}.")
    if is_number(l1) and not l1 >= 0.0:
        raise ValueError(f"l1 must be >= 0; got l1={l1!r}.")
    if coder not in CODERS:
        raise ValueError(f"coder={coder!r} is not a coder; choose one of {CODERS}.")
    if levels is None:
        compressor = identity()
    else:
        check_int("levels", levels)
        compressor = dithered(levels, coder=coder)
    lr = schedule(learning_rate)

    def init(X, key):
        del key
        return MalcomState(X=X, X_hat=tree.zeros_like(X), t=jnp.zeros((), jnp.int32))

    def step(state, oracle, mixer, key):
        G = oracle(state.X, key)  # the same key use as choco_sgd, so the reduction is exact
        U, _ = local.update(G, (), state.X, state.t)
        X_half = tree.add(state.X, U)
        Y, X_hat, bits = choco_exchange(X_half, state.X_hat, gamma, compressor, mixer,
                                        _compress_key(key))
        X = soft_threshold(Y, lr(state.t) * l1)
        return MalcomState(X, X_hat, state.t + 1), cost(1, 1, bits)

    return Algorithm(init=init, step=step, params=lambda s: s.X, extra_metrics=_sparsity)
