"""DeTAG and accelerated gossip (docs/reference/algorithms.md#family-detag; Lu & De Sa, ICML 2021).

Accelerated gossip (Liu & Morse, 2011), ``AG_R(Z)``: ``Z_{−1} = Z_0 = Z``;
``Z_{r+1} = (1 + μ) W Z_r − μ Z_{r−1}`` for r = 0..R−1; returns ``Z_R``, with
``μ = (1 − sqrt(1 − lam²)) / (1 + sqrt(1 − lam²))`` from the topology's ``lam = ||W − J||_2``.
Each round keeps the mean exactly, since ``mean(W Z) = mean(Z)``. On a time-varying topology,
round r of step t uses ``W_{t·R + r}`` and μ comes from the base graph's ``lam``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from .. import tree
from .._checks import boolean, integer
from .._types import Algorithm
from ._common import LocalUpdate, cost, dense_bits, local_update, make, stacked_params, structural

__all__ = ["detag", "accelerated_gossip"]


def momentum_coefficient(lam):
    """``μ = (1 − sqrt(1 − lam²)) / (1 + sqrt(1 − lam²))`` (0 for lam = 0, → 1 as lam → 1)."""
    root = jnp.sqrt(jnp.maximum(1.0 - jnp.square(lam), 0.0))
    return (1.0 - root) / (1.0 + root)


def accelerated_rounds(mixer, Zs: tuple, rounds: int, mu) -> tuple:
    """``AG_R`` applied to each stacked pytree in ``Zs`` with the same rounds (they travel in the
    same messages). ``mu = 0`` gives R plain gossip rounds."""

    def one(r, carry):
        current, previous = carry
        m = mixer.round(r, rounds)
        mixed = tuple(m(Z) for Z in current)
        nxt = tuple(jax.tree.map(lambda wz, zp: (1.0 + mu) * wz - mu * zp, WZ, Zp)
                    for WZ, Zp in zip(mixed, previous))
        return nxt, current

    final, _ = jax.lax.fori_loop(0, rounds, one, (tuple(Zs), tuple(Zs)))
    return final


def accumulated_gradient(oracle, X, key, rounds: int):
    """``(1/R) Σ_r oracle(X, fold_in(key, r))``: R minibatches at the same point, vmapped; for a
    stateful oracle (model state, epochs) the R evaluations run one after the other, each seeing
    the state the previous one left."""
    if getattr(oracle, "stateful", False):
        total = oracle(X, jax.random.fold_in(key, 0))
        for r in range(1, rounds):
            total = tree.add(total, oracle(X, jax.random.fold_in(key, r)))
        return jax.tree.map(lambda g: g / rounds, total)
    keys = jax.vmap(lambda r: jax.random.fold_in(key, r))(jnp.arange(rounds))
    return jax.tree.map(lambda g: jnp.mean(g, axis=0), jax.vmap(oracle, in_axes=(None, 0))(X, keys))


class DetagState(NamedTuple):
    X: Any  # X_k, stacked params [n, ...]
    Y: Any  # tracker Y_k [n, ...] (Y_0 = 0)
    G_prev: Any  # Ḡ_{k−1} [n, ...] (0 before the first phase)
    opt: Any  # per-worker optax state of the local optimizer (fed Y½) or ()
    t: Any  # int32 phase counter k


@structural
def _detag(local: LocalUpdate, rounds: int, accelerate: bool):
    def init(X, key):
        del key
        Z = tree.zeros_like(X)
        return DetagState(X=X, Y=Z, G_prev=Z, opt=local.init(X), t=jnp.zeros((), jnp.int32))

    def step(state, hp, oracle, mixer, key):
        G = accumulated_gradient(oracle, state.X, key, rounds)
        Y_half = tree.add(state.Y, tree.sub(G, state.G_prev))
        U, opt = local.update(Y_half, state.opt, state.X, state.t, hp)
        X_half = tree.add(state.X, U)
        mu = momentum_coefficient(mixer.lam) if accelerate else jnp.zeros_like(mixer.lam)
        X, Y = accelerated_rounds(mixer, (X_half, Y_half), rounds, mu)
        return (DetagState(X, Y, G, opt, state.t + 1),
                cost(rounds, rounds, rounds * dense_bits(state.X, copies=2)))

    return init, step, stacked_params


def detag(learning_rate, rounds: int, *, accelerate: bool = True,
          local_optimizer=None) -> Algorithm:
    """DeTAG: gradient tracking with accelerated gossip and gradient accumulation.

    One step is one phase k: R gradient evaluations per worker at the same point (R independent
    minibatches) and R gossip rounds::

        Ḡ_k = (1/R) Σ_{r=1..R} G(X_k; ξ_{k,r})
        Y½ = Y_k + Ḡ_k − Ḡ_{k−1}
        X½ = X_k − η_k Y½
        X_{k+1} = AG_R(X½);   Y_{k+1} = AG_R(Y½)

    with ``Y_0 = 0`` and ``Ḡ_{−1} = 0``. ``accelerate=False`` sets μ = 0 (R plain rounds). With
    R = 1 and no acceleration this is adapt-then-combine gradient tracking; with W = J each phase
    is minibatch SGD on R·B·n samples. Invariant: ``mean(Y_k) = mean(Ḡ_{k−1})``.

    Cost per step: R gradients, R rounds, ``R · 2 · 32 d`` bits (X and Y travel together).

    Local optimizer: it is fed the tracker ``Y½`` (the direction of the phase; the tracker
    itself keeps tracking the raw accumulated gradients Ḡ) and its update ``U_k`` replaces
    ``−η_k Y½``: ``X½ = X_k + U_k``. Its state advances once per phase.

    Args:
      learning_rate: η (number or optax schedule of the phase counter). With
        ``local_optimizer``: a multiplier of its update (build the optimizer with learning rate
        1.0); ``None``, 1.0.
      rounds: R ≥ 1, gradients and gossip rounds per phase.
      accelerate: use Liu–Morse acceleration (μ from the topology's lam).
      local_optimizer: optax GradientTransformation run per worker on ``Y½``.

    Example:
      >>> algo = detag(0.1, rounds=4)
    """
    local, hp = local_update("detag", learning_rate, local_optimizer)
    rounds = integer("rounds", rounds)
    accelerate = boolean("accelerate", accelerate)
    return make("detag", _detag(local, rounds, accelerate), hp,
                dict(learning_rate=learning_rate, rounds=rounds, accelerate=accelerate,
                     local_optimizer=local_optimizer))


class AcceleratedGossipState(NamedTuple):
    X: Any  # stacked values [n, ...]
    t: Any  # int32


@structural
def _accelerated_gossip(rounds: int, accelerate: bool):
    def init(X, key):
        del key
        return AcceleratedGossipState(X=X, t=jnp.zeros((), jnp.int32))

    def step(state, hp, oracle, mixer, key):
        del hp, oracle, key
        mu = momentum_coefficient(mixer.lam) if accelerate else jnp.zeros_like(mixer.lam)
        (X,) = accelerated_rounds(mixer, (state.X,), rounds, mu)
        return (AcceleratedGossipState(X, state.t + 1),
                cost(0, rounds, rounds * dense_bits(state.X)))

    return init, step, stacked_params


def accelerated_gossip(rounds: int = 1, *, accelerate: bool = True) -> Algorithm:
    """Average consensus by accelerated gossip: each step is ``X ← AG_R(X)`` (no gradients).

    Run it on ``ds.problems.consensus(n, d)``. The rounds needed to shrink the consensus error
    1000× grow like ``gap^(−1/2)``, against ``gap^(−1)`` for plain gossip (``accelerate=False``).
    Cost per step: 0 gradients, R rounds, ``R · 32 d`` bits.

    Example:
      >>> algo = accelerated_gossip(rounds=10)
    """
    rounds = integer("rounds", rounds)
    accelerate = boolean("accelerate", accelerate)
    return make("accelerated_gossip", _accelerated_gossip(rounds, accelerate), {},
                dict(rounds=rounds, accelerate=accelerate))
