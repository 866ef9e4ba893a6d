"""Choco's compressed exchange, shared by every algorithm built on it (Choco-SGD, Choco-Gossip,
adaptive Choco-SGD, MALCOM-PSGD).

Every worker keeps, besides its iterate ``x_i``, a public copy ``x̂_i`` that all its neighbours
know exactly (``X̂_0 = 0``). Only compressed corrections ``q_i = C(· − x̂_i)`` travel; everyone
adds ``q_i`` to their copy of ``x̂_i``, and the gossip step mixes the public copies:
``γ (W − I) X̂``. Because ``(W − I)`` has zero column sums, the worker average moves only by the
local updates, whatever the compressor.

Keys: the gradient oracle receives the step key itself (as in ``dsgd``), so Choco with the
identity compressor draws exactly D-SGD's minibatches; compression uses
``fold_in(key, COMPRESS_STREAM)``. The constant is far above any worker index because, with JAX's
partitionable threefry, ``fold_in(key, i)`` equals ``split(key, n)[i]``, the oracle's key of
worker i.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .. import tree
from .._checks import check_hparam
from ..compression import compress_stacked

__all__ = ["COMPRESS_STREAM", "compress_key", "check_gamma", "gossip_term", "choco_exchange",
           "choco_exchange_parallel", "EXCHANGES"]

COMPRESS_STREAM = 0x7FFFFFF0


def compress_key(key):
    """The compressor's key of a step: an independent stream derived from the step key."""
    return jax.random.fold_in(key, COMPRESS_STREAM)


def check_gamma(owner: str, gamma) -> float:
    """γ in (0, 1], a plain number (a consensus step size, not a schedule)."""
    if callable(gamma):
        raise ValueError(f"{owner}: gamma must be a number in (0, 1] (a consensus step size, not a "
                         f"schedule); got {gamma!r}.")
    try:
        return check_hparam("gamma", gamma)
    except ValueError as err:
        raise ValueError(f"{owner}: {err}") from None


def gossip_term(gamma, WZ, Z):
    """``γ (W Z − Z)`` leaf-wise, in each leaf's dtype."""
    return jax.tree.map(lambda wz, z: jnp.asarray(gamma).astype(z.dtype) * (wz - z), WZ, Z)


def choco_exchange(X_half, X_hat, gamma, compressor, mixer, key):
    """Choco's compressed exchange in the papers' order.

    ``Q = C(X½ − X̂)``; ``X̂' = X̂ + Q``; ``X_next = X½ + γ (W − I) X̂'``.

    Args:
      X_half: stacked iterate after the local step, leaves ``[n, ...]``.
      X_hat: stacked public copies, leaves ``[n, ...]``.
      gamma: consensus step size (number or traced scalar).
      compressor: a :class:`decsim.Compressor`.
      mixer: one gossip round ``Z -> W Z``.
      key: PRNG key of this exchange (split per leaf and worker by ``compress_stacked``).

    Returns:
      ``(X_next, X_hat_next, bits)``: ``X_next`` is exactly ``X½ + γ (W − I) X̂'`` (no proximal
      or other post-processing), ``bits`` the float32 payload per worker of Q.
    """
    Q, bits = compress_stacked(compressor, key, tree.sub(X_half, X_hat))
    X_hat_next = tree.add(X_hat, Q)
    X_next = tree.add(X_half, gossip_term(gamma, mixer(X_hat_next), X_hat_next))
    return X_next, X_hat_next, bits


def choco_exchange_parallel(X_half, X_hat, gamma, compressor, mixer, key):
    """Choco's exchange in the order of the authors' code (compression overlaps computation).

    ``X_next = X½ + γ (W − I) X̂``; ``Q = C(X_next − X̂)``; ``X̂' = X̂ + Q``. Same arguments and
    returns as :func:`choco_exchange`.
    """
    X_next = tree.add(X_half, gossip_term(gamma, mixer(X_hat), X_hat))
    Q, bits = compress_stacked(compressor, key, tree.sub(X_next, X_hat))
    return X_next, tree.add(X_hat, Q), bits


EXCHANGES = {"paper": choco_exchange, "parallel": choco_exchange_parallel}
