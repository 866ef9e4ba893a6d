"""BEER: gradient tracking with compressed, error-fed-back exchange of the model and the tracker
(docs/reference/algorithms.md#beer).

Zhao, Li, Li, Richtárik, Chi, "BEER: fast O(1/T) rate for decentralized nonconvex optimization
with communication compression", NeurIPS 2022. decsim follows the order of the authors' numpy
code, which is the paper's Algorithm 1 with ``H_0 = 0``, ``G_0 = 0`` and ``V_0 = g_0``.

Both public copies (``H`` of the model, ``G`` of the tracker) are kept as in Choco
(:mod:`decsim.algorithms._exchange`): only compressed corrections travel, and ``(W − I)`` has
zero column sums, so the averages of X and of the tracker move only by the local terms.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from .. import tree
from .._types import Algorithm
from ..compression import check_compressor, compress_stacked
from ._common import cost, make, stacked_params, structural
from ._common import learning_rate as checked_rate
from ._exchange import check_gamma, compress_key, gossip_term

__all__ = ["beer"]


class BeerState(NamedTuple):
    X: Any  # X_t [n, ...]
    H: Any  # public copy of X known to every neighbour, H_t (H_0 = 0)
    V: Any  # gradient tracker V_{t−1} (zeros before the first step)
    G: Any  # public copy of the tracker, G_{t−1} (zeros before the first step; G_0 = 0 too)
    g_prev: Any  # the gradient g_{t−1} (zeros before the first step)
    t: Any  # int32


@structural
def _beer(rate, compressor):
    def init(X, key):
        del key
        Z = tree.zeros_like(X)
        return BeerState(X=X, H=Z, V=Z, G=Z, g_prev=Z, t=jnp.zeros((), jnp.int32))

    def step(state, hp, oracle, mixer, key):
        gamma, eta = hp["gamma"], rate(hp, state.t)
        g = oracle(state.X, key)
        key_x, key_v = jax.random.split(compress_key(key))
        # V_t = V_{t−1} + γ (W − I) G_{t−1} + g_t − g_{t−1}: from the zero state, V_0 = g_0
        V = jax.tree.map(lambda v, dg, gn, gp: v + dg + gn - gp,
                         state.V, gossip_term(gamma, mixer(state.G), state.G), g, state.g_prev)
        # G_t = G_{t−1} + C(V_t − G_{t−1}) from t = 1 on; at t = 0 nothing is sent (G_0 = 0)
        Q_v, bits_v = compress_stacked(compressor, key_v, tree.sub(V, state.G))
        sends_v = state.t > 0
        G = jax.tree.map(lambda gc, q: jnp.where(sends_v, gc + q, gc), state.G, Q_v)
        # X_{t+1} = X_t + γ (W − I) H_t − η_t V_t;  H_{t+1} = H_t + C(X_{t+1} − H_t)
        X = jax.tree.map(lambda x, dh, v: x + dh - jnp.asarray(eta).astype(v.dtype) * v,
                         state.X, gossip_term(gamma, mixer(state.H), state.H), V)
        Q_x, bits_x = compress_stacked(compressor, key_x, tree.sub(X, state.H))
        bits = bits_x + jnp.where(sends_v, bits_v, jnp.zeros_like(bits_v))
        return BeerState(X, tree.add(state.H, Q_x), V, G, g, state.t + 1), cost(1, 1, bits)

    return init, step, stacked_params


def beer(learning_rate, gamma, compressor) -> Algorithm:
    """BEER (Zhao, Li, Li, Richtárik, Chi, NeurIPS 2022): compressed gradient tracking.

    State: X, its public copy H (``H_0 = 0``), the tracker V, its public copy G (``G_0 = 0``) and
    the previous gradient. Step t, with ``g_t = G(X_t; ξ_t)``::

        V_t = g_0 (t = 0);   V_t = V_{t−1} + γ (W − I) G_{t−1} + g_t − g_{t−1} (t ≥ 1)
        G_t = G_{t−1} + C(V_t − G_{t−1})   (t ≥ 1; G_0 = 0: the tracker is not sent at t = 0)
        X_{t+1} = X_t + γ (W − I) H_t − η_t V_t
        H_{t+1} = H_t + C(X_{t+1} − H_t)

    This is the paper's Algorithm 1 (and the authors' numpy code) with its two half-iterations
    regrouped around the gradient evaluation: their ``G^(0) = 0`` means the first tracker
    message is ``C(V_1)``, sent at t = 1. C is applied per worker and per leaf, each message
    with its own key. Invariant: ``mean(V_t) = mean(g_t)`` for every compressor. With
    ``identity()`` and γ = 1, from t = 1 on it is gradient tracking:
    ``X_{t+1} = W X_t − η V_t``, ``V_{t+1} = W V_t + g_{t+1} − g_t``.

    Cost per step: 1 gradient, 1 round; bits: ``bits(C(X_{t+1} − H_t))`` at t = 0, plus
    ``bits(C(V_t − G_{t−1}))`` from t = 1 on.

    No ``local_optimizer``: the step is along the tracker, whose public copy is what the
    compressed exchange keeps consistent; the factory takes the paper's three numbers only.

    Args:
      learning_rate: η (number or optax schedule).
      gamma: consensus step size γ in (0, 1] for both exchanges (see :func:`tune_gamma`).
      compressor: a :class:`decsim.Compressor` (biased ones, e.g. top_k, are fine).

    Example:
      >>> import decsim.compression as C
      >>> algo = beer(0.05, 0.3, C.top_k(0.1))
      >>> algo.hparams
      {'learning_rate': 0.05, 'gamma': 0.3}
    """
    rate, hp = checked_rate("beer", learning_rate)
    hp["gamma"] = check_gamma("beer", gamma)
    try:
        check_compressor(compressor)
    except ValueError as err:
        raise ValueError(f"beer: {err}") from None
    return make("beer", _beer(rate, compressor), hp,
                dict(learning_rate=learning_rate, gamma=gamma, compressor=compressor))
