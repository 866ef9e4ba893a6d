"""Uncompressed baselines built for heterogeneous data
(docs/reference/algorithms.md#family-more-baselines).

- :func:`extra`: EXTRA (Shi, Ling, Wu, Yin 2015), exact with a constant step.
- :func:`qg_dsgdm`: quasi-global momentum D-SGD (Lin, Karimireddy, Stich, Jaggi 2021).

Same conventions as :mod:`decsim.algorithms.baselines`: stacked pytrees ``X`` (leaves
``[n, ...]``), ``mixer(Z) = W Z`` one gossip round, ``η_t`` a number or an optax schedule at the
step counter t.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from .. import tree
from .._checks import check_hparam
from .._types import Algorithm
from ._common import (
    LocalUpdate,
    Rate,
    cost,
    dense_bits,
    local_update,
    make,
    stacked_params,
    structural,
)
from ._common import learning_rate as checked_rate

__all__ = ["extra", "qg_dsgdm"]


class ExtraState(NamedTuple):
    X: Any  # X_t [n, ...]
    X_lazy_prev: Any  # W̃ X_{t−1} = (X_{t−1} + W X_{t−1}) / 2 (X_0 before the first step)
    U_prev: Any  # the local step U_{t−1} = −η_{t−1} G_{t−1} (zeros before the first step)
    opt: Any  # per-worker optax state of the local optimizer or ()
    t: Any  # int32


@structural
def _extra(local: LocalUpdate):
    def init(X, key):
        del key
        return ExtraState(X=X, X_lazy_prev=X, U_prev=tree.zeros_like(X), opt=local.init(X),
                          t=jnp.zeros((), jnp.int32))

    def step(state, hp, oracle, mixer, key):
        G = oracle(state.X, key)
        U, opt = local.update(G, state.opt, state.X, state.t, hp)
        WX = mixer(state.X)  # the one new product of the step
        # X + W X − W̃ X_{t−1} + U_t − U_{t−1}; at t = 0 (W̃ X_{−1} := X_0, U_{−1} = 0) it is
        # W X_0 + U_0, EXTRA's first step, with no branch
        X = jax.tree.map(lambda x, wx, p, u, up: x + wx - p + u - up,
                         state.X, WX, state.X_lazy_prev, U, state.U_prev)
        lazy = jax.tree.map(lambda x, wx: 0.5 * (x + wx), state.X, WX)
        return ExtraState(X, lazy, U, opt, state.t + 1), cost(1, 1, dense_bits(state.X))

    return init, step, stacked_params


def extra(learning_rate=None, *, local_optimizer=None) -> Algorithm:
    """EXTRA (Shi, Ling, Wu, Yin, SIAM J. Optim. 2015) with ``W̃ = (I + W)/2``.

    ``X_1 = W X_0 − η G_0``; for t ≥ 1
    ``X_{t+1} = (I + W) X_t − W̃ X_{t−1} − η (G_t − G_{t−1})``. With a schedule the gradient
    difference is ``η_t G_t − η_{t−1} G_{t−1}``. The state keeps ``W̃ X_{t−1}`` (formed from the
    previous step's product ``W X_{t−1}``), so each step computes one new product ``W X_t``.

    Identity: ``x̄_{t+1} = x̄_t − η_t ḡ_t`` at every t (the columns of ``W − W̃`` sum to zero).
    With full gradients and a constant step it converges to the exact minimizer of
    ``(1/n) Σ f_i``, where D-SGD keeps a bias of order η ζ². Unlike exact diffusion, the gradient
    difference is not mixed. It needs ``η < 2 λ_min(W̃) / L``. In float32 the correction term
    that removes the bias is implicit in ``X_t − X_{t−1}``; its round-off along the average is
    never undone and leaves a small bias of ``x̄`` (about 1e-3 after 3000 steps at η = 0.2 on a
    quadratic with μ = 0.5, 1e-5 at η = 0.4), which float64 removes. Cost: 1 gradient, 1 round,
    ``32 d`` bits.

    Local optimizer: as in :func:`decsim.algorithms.d2`, it is fed ``G_t`` and its update
    ``U_t`` replaces ``−η_t G_t``: ``X_{t+1} = (I + W) X_t − W̃ X_{t−1} + U_t − U_{t−1}``. The
    recursion uses only the difference of consecutive steps, so ``x̄_{t+1} = x̄_t + mean(U_t)``;
    summing it, ``X_{t+1} = W X_t + U_t + Σ_{s<t} (W − W̃) X_s``, and the sum lies in the space
    orthogonal to the all-ones vector, so at a fixed point ``mean(U) = 0``. For a transform
    linear in the gradients (momentum, Nesterov) that means ``mean(G) = 0``: the method stays
    exact under heterogeneity; a per-worker adaptive scaling (adam) loses that.

    Args:
      learning_rate: η (number or optax schedule). With ``local_optimizer``: a multiplier of its
        update (build it with learning rate 1.0); omitted, 1.0.
      local_optimizer: optax GradientTransformation run per worker on ``G_t``.

    Example:
      >>> algo = extra(0.05)
      >>> algo.hparams
      {'learning_rate': 0.05}
    """
    local, hp = local_update("extra", learning_rate, local_optimizer)
    return make("extra", _extra(local), hp,
                dict(learning_rate=learning_rate, local_optimizer=local_optimizer))


class QGState(NamedTuple):
    X: Any  # X_t [n, ...]
    M_hat: Any  # the quasi-global momentum buffer M̂ (zeros before the first step)
    t: Any  # int32


@structural
def _qg_dsgdm(rate: Rate):
    def init(X, key):
        del key
        return QGState(X=X, M_hat=tree.zeros_like(X), t=jnp.zeros((), jnp.int32))

    def step(state, hp, oracle, mixer, key):
        G = oracle(state.X, key)
        eta = rate(hp, state.t)
        beta = hp["beta"]

        def cast(v, like):
            return jnp.asarray(v).astype(like.dtype)

        M = jax.tree.map(lambda m, g: cast(beta, g) * m + g, state.M_hat, G)
        X = mixer(jax.tree.map(lambda x, m: x - cast(eta, x) * m, state.X, M))
        M_hat = jax.tree.map(
            lambda m, x, xn: cast(beta, m) * m + cast(1.0 - beta, m) * ((x - xn) / cast(eta, x)),
            state.M_hat, state.X, X)
        return QGState(X, M_hat, state.t + 1), cost(1, 1, dense_bits(state.X))

    return init, step, stacked_params


def qg_dsgdm(learning_rate, beta=0.9) -> Algorithm:
    """Quasi-global momentum D-SGD, QG-DSGDm (Lin, Karimireddy, Stich, Jaggi, ICML 2021),
    heavy-ball form.

    Local heavy-ball momentum drifts apart across workers when their data differ; here the buffer
    instead averages the model's displacement per unit step, which includes what gossip did::

        M = β M̂ + G_t;   X½ = X_t − η_t M;   X_{t+1} = W X½
        D = (X_t − X_{t+1}) / η_t;   M̂ ← β M̂ + (1 − β) D

    with ``M̂ = 0`` before the first step. With β = 0 it is :func:`decsim.algorithms.dsgd`.
    With a schedule, the same ``η_t`` is used in the step and in ``D`` (so a schedule must stay
    positive: ``D`` is undefined at ``η_t = 0``). Cost: 1 gradient, 1 round, ``32 d`` bits.

    No ``local_optimizer``: the method is itself a momentum method whose buffer is fed the
    displacement ``D`` rather than the local gradient; an optax momentum on top would be a
    second, local buffer (the drift the method removes), and a per-worker adaptive scaling of
    ``M`` would make ``D`` a mix of differently scaled steps.

    Args:
      learning_rate: η (number or optax schedule).
      beta: momentum β in [0, 1) (a traced hyperparameter: sweeping it is one program).

    Example:
      >>> algo = qg_dsgdm(0.05, beta=0.9)
      >>> algo.hparams
      {'learning_rate': 0.05, 'beta': 0.9}
    """
    rate, hp = checked_rate("qg_dsgdm", learning_rate)
    try:
        hp["beta"] = check_hparam("beta", beta)
    except ValueError as err:
        raise ValueError(f"qg_dsgdm: {err}") from None
    return make("qg_dsgdm", _qg_dsgdm(rate), hp, dict(learning_rate=learning_rate, beta=beta))

