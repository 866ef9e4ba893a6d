"""Baselines without compression (ALGORITHMS.md section 3).

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
    Rate,
    cost,
    dense_bits,
    local_init,
    local_update,
    make,
    stacked_params,
    structural,
)
from ._common import learning_rate as _rate

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
      learning_rate: η (number or optax schedule); omit when ``local_optimizer`` is given.
      local_optimizer: optax GradientTransformation run per worker in place of ``−η G`` (its
        update is averaged).

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
      learning_rate: η (number or optax schedule); omit when ``local_optimizer`` is given.
      gossip_every: τ ≥ 1, local steps per communication.
      local_optimizer: optax GradientTransformation run per worker in place of ``−η G``.

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
    t: Any  # int32


@structural
def _tracking(rate: Rate):
    local = LocalUpdate(rate, None)

    def init(X, key):
        del key
        Z = tree.zeros_like(X)
        return TrackingState(X=X, Y=Z, G_prev=Z, t=jnp.zeros((), jnp.int32))

    def step(state, hp, oracle, mixer, key):
        G = oracle(state.X, key)
        Y = tree.add(mixer(state.Y), tree.sub(G, state.G_prev))
        U, _ = local.update(Y, (), state.X, state.t, hp)
        X = tree.add(mixer(state.X), U)
        return TrackingState(X, Y, G, state.t + 1), cost(1, 1, dense_bits(state.X, copies=2))

    return init, step, stacked_params


def gradient_tracking(learning_rate) -> Algorithm:
    """Distributed stochastic gradient tracking, DSGT (Pu & Nedić, 2021).

    ``Y_0 = G_0``; ``X_{t+1} = W X_t − η_t Y_t``; ``Y_{t+1} = W Y_t + G_{t+1} − G_t``.
    At step t: evaluate ``G_t`` at ``X_t``, form ``Y_t`` (``G_0`` at t = 0, else
    ``W Y_{t−1} + G_t − G_{t−1}``), set ``X_{t+1} = W X_t − η_t Y_t``. Starting the state from
    ``Y_{−1} = G_{−1} = 0`` makes the t = 0 case the same formula, with no branch.

    Invariant: ``mean(Y_t) = mean(G_t)``. Cost: 1 gradient, 1 round (X and Y travel together),
    ``2 · 32 d`` bits.

    Example:
      >>> algo = gradient_tracking(0.05)
    """
    rate, hp = _rate("gradient_tracking", learning_rate)
    return make("gradient_tracking", _tracking(rate), hp, dict(learning_rate=learning_rate))


class D2State(NamedTuple):
    X: Any  # X_t [n, ...]
    X_prev: Any  # X_{t-1} (X_0 before the first step)
    D_prev: Any  # η_{t-1} G_{t-1} (zeros before the first step)
    t: Any  # int32


@structural
def _d2_like(rate: Rate, lazy: bool):
    def init(X, key):
        del key
        return D2State(X=X, X_prev=X, D_prev=tree.zeros_like(X), t=jnp.zeros((), jnp.int32))

    def step(state, hp, oracle, mixer, key):
        G = oracle(state.X, key)
        eta = rate(hp, state.t)
        D = tree.scale(eta, G)
        # 2 X_t − X_{t−1} − η_t G_t + η_{t−1} G_{t−1}; at t = 0 it is X_0 − η_0 G_0.
        Z = jax.tree.map(
            lambda x, xp, d, dp: 2.0 * x - xp - d + dp, state.X, state.X_prev, D, state.D_prev
        )
        WZ = mixer(Z)
        X = jax.tree.map(lambda z, wz: 0.5 * (z + wz), Z, WZ) if lazy else WZ
        return D2State(X, state.X, D, state.t + 1), cost(1, 1, dense_bits(state.X))

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


def d2(learning_rate) -> Algorithm:
    """D² (Tang, Lian, Yan, Zhang, Liu, ICML 2018).

    ``X_1 = W (X_0 − η G_0)``; ``X_{t+1} = W (2 X_t − X_{t−1} − η G_t + η G_{t−1})``.
    With a schedule, the gradient terms are ``η_t G_t − η_{t−1} G_{t−1}`` (each gradient keeps the
    step it was taken with), which reduces to the paper's recursion for a constant η.

    Requires ``λ_min(W) > −1/3`` (checked against the topology before compiling).
    Cost: 1 gradient, 1 round, ``32 d`` bits.

    Example:
      >>> algo = d2(0.05)
    """
    rate, hp = _rate("d2", learning_rate)
    return make(
        "d2",
        _d2_like(rate, False),
        hp,
        dict(learning_rate=learning_rate),
        validate=_check_d2_topology,
    )


def exact_diffusion(learning_rate) -> Algorithm:
    """Exact diffusion (Yuan, Ying, Zhao, Sayed 2019): the D² recursion with ``W̄ = (I + W)/2``.

    ``X_1 = W̄ (X_0 − η G_0)``; ``X_{t+1} = W̄ (2 X_t − X_{t−1} − η G_t + η G_{t−1})``. ``W̄`` has
    all eigenvalues in [0, 1], so it works on every topology. Cost: 1 gradient, 1 round, ``32 d``.

    Example:
      >>> algo = exact_diffusion(0.05)
    """
    rate, hp = _rate("exact_diffusion", learning_rate)
    return make("exact_diffusion", _d2_like(rate, True), hp, dict(learning_rate=learning_rate))
