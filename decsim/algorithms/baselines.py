"""Baselines without compression (docs/reference/algorithms.md#family-baselines).

All updates are written for stacked pytrees ``X`` (leaves ``[n, ...]``); ``mixer(Z)`` is one round
``W Z``; ``oracle(X, key)`` the stacked stochastic gradients at X; ``η_t`` the learning rate (a
number or an optax schedule evaluated at the step counter t).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from .. import tree
from .._checks import integer
from .._types import Algorithm
from ._common import (
    LocalState,
    LocalUpdate,
    cost,
    dense_bits,
    local_init,
    local_update,
    make,
    stacked_params,
    structural,
)

__all__ = ["centralized_sgd", "dsgd", "dpsgd", "gradient_tracking", "d2", "exact_diffusion"]


@structural
def _centralized(local: LocalUpdate):
    def step(state, hp, oracle, mixer, key):
        G = oracle(state.X, key)
        U, opt = local.update(G, state.opt, state.X, state.t, hp)
        X = tree.average(tree.add(state.X, U))
        n = mixer.n
        bits = 2.0 * (n - 1) / n * dense_bits(state.X)
        return LocalState(X, opt, state.t + 1), cost(1, 1, bits)

    return local_init(local), step, stacked_params


def centralized_sgd(learning_rate=None, *, local_optimizer=None) -> Algorithm:
    """All-reduce minibatch SGD: ``X_{t+1} = J (X_t − η_t G_t)``.

    Every worker computes a gradient on its own minibatch, the updates are averaged exactly (an
    all-reduce), so all rows stay equal: minibatch SGD with n·b samples per step.

    Cost per step: 1 gradient; 1 round; ``2 (n−1)/n · 32 d`` bits per worker (ring all-reduce).

    Args:
      learning_rate: η (number or optax schedule). With ``local_optimizer``: a multiplier of its
        update (build the optimizer with learning rate 1.0); omitted, 1.0.
      local_optimizer: optax GradientTransformation run per worker on ``G_t``; its update
        replaces ``−η G`` (and is averaged).

    Example:
      >>> algo = centralized_sgd(0.1)
    """
    local, hp = local_update("centralized_sgd", learning_rate, local_optimizer)
    return make(
        "centralized_sgd",
        _centralized(local),
        hp,
        dict(learning_rate=learning_rate, local_optimizer=local_optimizer),
    )


@structural
def _dsgd(local: LocalUpdate, gossip_every: int):
    def step(state, hp, oracle, mixer, key):
        G = oracle(state.X, key)
        U, opt = local.update(G, state.opt, state.X, state.t, hp)
        half = tree.add(state.X, U)
        if gossip_every == 1:
            X, rounds = mixer(half), 1.0
        else:
            mixing = (state.t + 1) % gossip_every == 0
            X = jax.lax.cond(mixing, lambda z: mixer(z), lambda z: z, half)
            rounds = mixing.astype(jnp.float32)
        return LocalState(X, opt, state.t + 1), cost(1, rounds, rounds * dense_bits(state.X))

    return local_init(local), step, stacked_params


def dsgd(learning_rate=None, *, gossip_every: int = 1, local_optimizer=None) -> Algorithm:
    """Adapt-then-combine D-SGD (Koloskova et al., ICML 2020): ``X_{t+1} = W (X_t − η_t G_t)``.

    With ``gossip_every = τ`` the mixing happens only when ``(t+1) % τ == 0``; the other steps are
    purely local (``X_{t+1} = X_t − η_t G_t``).

    Cost per step: 1 gradient; 1 round and ``32 d`` bits on mixing steps, 0 otherwise.

    Args:
      learning_rate: η (number or optax schedule). With ``local_optimizer``: a multiplier of its
        update (build the optimizer with learning rate 1.0); omitted, 1.0.
      gossip_every: τ ≥ 1, local steps per communication.
      local_optimizer: optax GradientTransformation run per worker on ``G_t``; its update
        replaces ``−η G``.

    Example:
      >>> algo = dsgd(0.1, gossip_every=4)
    """
    local, hp = local_update("dsgd", learning_rate, local_optimizer)
    gossip_every = integer("gossip_every", gossip_every)
    return make(
        "dsgd",
        _dsgd(local, gossip_every),
        hp,
        dict(
            learning_rate=learning_rate, gossip_every=gossip_every, local_optimizer=local_optimizer
        ),
    )


@structural
def _dpsgd(local: LocalUpdate):
    def step(state, hp, oracle, mixer, key):
        G = oracle(state.X, key)
        U, opt = local.update(G, state.opt, state.X, state.t, hp)
        X = tree.add(mixer(state.X), U)
        return LocalState(X, opt, state.t + 1), cost(1, 1, dense_bits(state.X))

    return local_init(local), step, stacked_params


def dpsgd(learning_rate=None, *, local_optimizer=None) -> Algorithm:
    """Combine-then-adapt D-PSGD (Lian et al., NeurIPS 2017): ``X_{t+1} = W X_t − η_t G_t``,
    with ``G_t`` evaluated at ``X_t``.

    Cost per step: 1 gradient, 1 round, ``32 d`` bits.

    Args:
      learning_rate: η (number or optax schedule). With ``local_optimizer``: a multiplier of its
        update (build the optimizer with learning rate 1.0); omitted, 1.0.
      local_optimizer: optax GradientTransformation run per worker on ``G_t``; its update
        replaces ``−η G``.

    Example:
      >>> algo = dpsgd(0.1)
    """
    local, hp = local_update("dpsgd", learning_rate, local_optimizer)
    return make(
        "dpsgd",
        _dpsgd(local),
        hp,
        dict(learning_rate=learning_rate, local_optimizer=local_optimizer),
    )


class TrackingState(NamedTuple):
    X: Any  # stacked params [n, ...]
    Y: Any  # gradient tracker Y_{t-1} [n, ...] (zeros before the first step)
    G_prev: Any  # G_{t-1} [n, ...] (zeros before the first step)
    opt: Any  # per-worker optax state of the local optimizer (fed Y_t) or ()
    t: Any  # int32


@structural
def _tracking(local: LocalUpdate):
    def init(X, key):
        del key
        Z = tree.zeros_like(X)
        return TrackingState(X=X, Y=Z, G_prev=Z, opt=local.init(X), t=jnp.zeros((), jnp.int32))

    def step(state, hp, oracle, mixer, key):
        G = oracle(state.X, key)
        Y = tree.add(mixer(state.Y), tree.sub(G, state.G_prev))
        U, opt = local.update(Y, state.opt, state.X, state.t, hp)
        X = tree.add(mixer(state.X), U)
        return (TrackingState(X, Y, G, opt, state.t + 1),
                cost(1, 1, dense_bits(state.X, copies=2)))

    return init, step, stacked_params


def gradient_tracking(learning_rate=None, *, local_optimizer=None) -> Algorithm:
    """Distributed stochastic gradient tracking, DSGT (Pu & Nedić, 2021).

    ``Y_0 = G_0``; ``X_{t+1} = W X_t − η_t Y_t``; ``Y_{t+1} = W Y_t + G_{t+1} − G_t``.
    At step t: evaluate ``G_t`` at ``X_t``, form ``Y_t`` (``G_0`` at t = 0, else
    ``W Y_{t−1} + G_t − G_{t−1}``), set ``X_{t+1} = W X_t − η_t Y_t``. Starting the state from
    ``Y_{−1} = G_{−1} = 0`` makes the t = 0 case the same formula, with no branch.

    Invariant: ``mean(Y_t) = mean(G_t)``. Cost: 1 gradient, 1 round (X and Y travel together),
    ``2 · 32 d`` bits.

    Local optimizer: it is fed the tracker ``Y_t`` (the direction the method steps along) and its
    update ``U_t`` replaces ``−η_t Y_t``: ``X_{t+1} = W X_t + η_t U_t`` (heavy-ball or Nesterov
    momentum on the tracked direction). The tracker itself keeps tracking the raw gradients (its
    recursion needs ``G_t − G_{t−1}``), so ``mean(Y_t) = mean(G_t)`` still holds; with
    momentum, ``x̄`` then follows momentum SGD on ``mean(G_t)``.

    Args:
      learning_rate: η (number or optax schedule). With ``local_optimizer``: a multiplier of its
        update (build it with learning rate 1.0); omitted, 1.0.
      local_optimizer: optax GradientTransformation run per worker on ``Y_t``.

    Example:
      >>> import optax
      >>> algo = gradient_tracking(0.05)
      >>> gradient_tracking(0.05, local_optimizer=optax.sgd(1.0, momentum=0.9)).hparams
      {'learning_rate': 0.05}
    """
    local, hp = local_update("gradient_tracking", learning_rate, local_optimizer)
    return make("gradient_tracking", _tracking(local), hp,
                dict(learning_rate=learning_rate, local_optimizer=local_optimizer))


class D2State(NamedTuple):
    X: Any  # X_t [n, ...]
    X_prev: Any  # X_{t-1} (X_0 before the first step)
    U_prev: Any  # the local step U_{t-1} = −η_{t-1} G_{t-1} (zeros before the first step)
    opt: Any  # per-worker optax state of the local optimizer or ()
    t: Any  # int32


@structural
def _d2_like(local: LocalUpdate, lazy: bool):
    def init(X, key):
        del key
        return D2State(X=X, X_prev=X, U_prev=tree.zeros_like(X), opt=local.init(X),
                       t=jnp.zeros((), jnp.int32))

    def step(state, hp, oracle, mixer, key):
        G = oracle(state.X, key)
        U, opt = local.update(G, state.opt, state.X, state.t, hp)
        # 2 X_t − X_{t−1} + U_t − U_{t−1} (U = −η G); at t = 0 it is X_0 + U_0.
        Z = jax.tree.map(
            lambda x, xp, u, up: 2.0 * x - xp + u - up, state.X, state.X_prev, U, state.U_prev
        )
        WZ = mixer(Z)
        X = jax.tree.map(lambda z, wz: 0.5 * (z + wz), Z, WZ) if lazy else WZ
        return D2State(X, state.X, U, opt, state.t + 1), cost(1, 1, dense_bits(state.X))

    return init, step, stacked_params


def _check_d2_topology(topology):
    lam_min = topology.lambda_min
    # strict, beyond round-off: a ring of 6 has λ_min = −1/3 exactly, which spectra compute as
    # −1/3 ± 1 ulp
    if not lam_min > -1.0 / 3.0 + 1e-12:
        raise ValueError(
            f"d2 requires the smallest eigenvalue of W to exceed -1/3; topology "
            f"{topology.name} has lambda_min(W) = {lam_min:.4f}. Use "
            "exact_diffusion(...) instead, or build the topology with "
            "weights='lazy' (all eigenvalues >= 0)."
        )


def d2(learning_rate=None, *, local_optimizer=None) -> Algorithm:
    """D² (Tang, Lian, Yan, Zhang, Liu, ICML 2018).

    ``X_1 = W (X_0 − η G_0)``; ``X_{t+1} = W (2 X_t − X_{t−1} − η G_t + η G_{t−1})``.
    With a schedule, the gradient terms are ``η_t G_t − η_{t−1} G_{t−1}`` (each gradient keeps the
    step it was taken with), which reduces to the paper's recursion for a constant η.

    Requires ``λ_min(W) > −1/3`` (checked against the topology before compiling).
    Cost: 1 gradient, 1 round, ``32 d`` bits.

    Local optimizer: it is fed ``G_t``, and its update ``U_t`` (scaled by η_t) replaces
    ``−η_t G_t``: ``X_{t+1} = W (2 X_t − X_{t−1} + U_t − U_{t−1})``. The recursion uses only
    the difference of consecutive steps, so ``x̄_{t+1} = x̄_t + mean(U_t)`` (x̄ follows the
    optimizer on the average); with a transform linear in the gradients (momentum, Nesterov) a
    fixed point still has ``mean(G) = 0``, so the method stays exact under heterogeneity; a
    per-worker adaptive scaling (adam) loses that, as it does in every method.

    Args:
      learning_rate: η (number or optax schedule). With ``local_optimizer``: a multiplier of its
        update (build it with learning rate 1.0); omitted, 1.0.
      local_optimizer: optax GradientTransformation run per worker on ``G_t``.

    Example:
      >>> algo = d2(0.05)
    """
    local, hp = local_update("d2", learning_rate, local_optimizer)
    return make(
        "d2",
        _d2_like(local, False),
        hp,
        dict(learning_rate=learning_rate, local_optimizer=local_optimizer),
        validate=_check_d2_topology,
    )


def exact_diffusion(learning_rate=None, *, local_optimizer=None) -> Algorithm:
    """Exact diffusion (Yuan, Ying, Zhao, Sayed 2019): the D² recursion with ``W̄ = (I + W)/2``.

    ``X_1 = W̄ (X_0 − η G_0)``; ``X_{t+1} = W̄ (2 X_t − X_{t−1} − η G_t + η G_{t−1})``. ``W̄`` has
    all eigenvalues in [0, 1], so it works on every topology. Cost: 1 gradient, 1 round, ``32 d``.

    Local optimizer: as in :func:`d2`, with ``W̄`` in place of W:
    ``X_{t+1} = W̄ (2 X_t − X_{t−1} + U_t − U_{t−1})``.

    Args:
      learning_rate: η (number or optax schedule). With ``local_optimizer``: a multiplier of its
        update (build it with learning rate 1.0); omitted, 1.0.
      local_optimizer: optax GradientTransformation run per worker on ``G_t``.

    Example:
      >>> algo = exact_diffusion(0.05)
    """
    local, hp = local_update("exact_diffusion", learning_rate, local_optimizer)
    return make("exact_diffusion", _d2_like(local, True), hp,
                dict(learning_rate=learning_rate, local_optimizer=local_optimizer))
