"""MALCOM-PSGD (Campbell, Liu, Woldemariam, Scaglione, 2023): proximal decentralized SGD with l1
sparsification and source-coded quantized messages (docs/reference/algorithms.md#family-malcom).

Objective ``f(x) + μ ||x||₁``. State ``X`` and public copies ``X̂`` (``X̂_0 = 0``)::

    X½ = X_t − η G_t
    Q_t = D(X½ − X̂_t)                    # dithered quantizer, per worker, per leaf
    X̂_{t+1} = X̂_t + Q_t
    Y = X½ + γ (W − I) X̂_{t+1}
    X_{t+1} = sign(Y) * max(|Y| − η μ, 0)  # prox of η μ ||·||₁ (soft threshold)

MALCOM-PSGD is :func:`decsim.algorithms.choco.compressed_sgd` with the dithered quantizer and the
l1 prox as its post-map; the exchange is Choco's
(:func:`decsim.algorithms._exchange.choco_exchange`). The bits are the exact length of the
lossless code of ``Q_t`` (:func:`decsim.compression.elias_bits`): 32 bits of norm, the gaps
between nonzero positions and each nonzero's sign and level, Elias-gamma coded.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from .. import tree
from .._checks import integer, nonnegative, one_of
from .._types import Algorithm
from ..compression import dithered, identity
from ._common import Rate, local_update, make
from ._exchange import check_gamma
from .choco import compressed_sgd

__all__ = ["malcom_psgd"]

CODERS = ("elias", "fixed")


def soft_threshold(Y, threshold):
    """``sign(y) max(|y| − threshold, 0)`` leaf-wise: the prox of ``threshold · ||·||₁``."""
    return jax.tree.map(lambda y: jnp.sign(y) * jnp.maximum(jnp.abs(y) - threshold, 0.0), Y)


class L1Prox(NamedTuple):
    """The post-map ``X = prox_{η_t μ ||·||₁}(Y)`` with ``μ = hparams["l1"]``."""

    rate: Rate

    def __call__(self, Y, hparams, t):
        return soft_threshold(Y, self.rate(hparams, t) * hparams["l1"])


def _sparsity(state):
    xbar = tree.worker_mean(state.X)
    leaves = jax.tree.leaves(xbar)
    zeros = sum(jnp.sum((a == 0).astype(jnp.float32)) for a in leaves)
    return {"sparsity": zeros / float(sum(a.size for a in leaves))}


def malcom_psgd(learning_rate, gamma, l1, *, levels: int | None = 16,
                coder: str = "elias", local_optimizer=None) -> Algorithm:
    """MALCOM-PSGD: Choco-style compressed gossip of dithered-quantized differences, an l1 prox
    step, and entropy-coded messages.

    Local optimizer: it is fed ``G_t`` and its update ``U_t`` replaces ``−η_t G_t`` in ``X½``
    (``X½ = X_t + U_t``), before the exchange and the prox; the prox threshold stays
    ``η_t μ`` with ``η_t`` the learning rate. The optimizer's own step size is invisible to the
    prox, so build the optimizer with learning rate 1.0 and give ``learning_rate`` (required
    with it): ``malcom_psgd(0.1, 0.5, 1e-3, local_optimizer=optax.sgd(1.0, momentum=0.9))``.
    (For the prox of the l1 term to be a proximal-gradient step, the optimizer must not itself
    add l1-type terms.)

    Args:
      learning_rate: η (number or optax schedule); with ``local_optimizer``, also the
        multiplier of its update.
      gamma: consensus step size γ.
      l1: μ ≥ 0, weight of the l1 penalty (the prox threshold is η μ).
      levels: s, levels of the dithered quantizer; ``None`` for exact (unquantized) messages,
        which with ``l1 = 0`` is ``choco_sgd(order="paper")`` with the identity compressor.
      coder: ``"elias"`` (exact Elias-gamma code length,
        docs/reference/compressors.md#elias-gamma-coding) or ``"fixed"`` (the fixed-length qsgd
        count ``d (1 + ceil(log2(s+1))) + 32``, for comparison).
      local_optimizer: optax GradientTransformation run per worker on ``G_t`` (built with
        learning rate 1.0).

    Cost per step: 1 gradient, 1 round, the coded bits of ``Q_t``. Metrics add ``sparsity``, the
    fraction of exact zeros in the worker average x̄.

    Example:
      >>> algo = malcom_psgd(0.1, 0.5, 1e-3, levels=16)
    """
    if local_optimizer is not None and learning_rate is None:
        raise ValueError(
            "malcom_psgd: with local_optimizer, give learning_rate too (got learning_rate=None): "
            "the l1 prox needs the step size η (threshold η·l1), which an optax transform "
            "hides. Build the optimizer with learning rate 1.0 and pass learning_rate=η, e.g. "
            "malcom_psgd(0.1, gamma, l1, local_optimizer=optax.sgd(1.0, momentum=0.9))."
        )
    local, hp = local_update("malcom_psgd", learning_rate, local_optimizer)
    hp["gamma"] = check_gamma("malcom_psgd", gamma)
    hp["l1"] = nonnegative("l1", l1)
    coder = one_of("coder", coder, CODERS, what="MALCOM coder")
    if levels is None:
        compressor = identity()
    else:
        compressor = dithered(integer("levels", levels), coder=coder)
    # the same key use as choco_sgd (oracle: the step key), so the reduction to it is exact
    parts = compressed_sgd(local, compressor, "paper", L1Prox(local.rate))
    return make("malcom_psgd", parts, hp,
                dict(learning_rate=learning_rate, gamma=gamma, l1=l1, levels=levels, coder=coder,
                     local_optimizer=local_optimizer),
                extra_metrics=_sparsity)
