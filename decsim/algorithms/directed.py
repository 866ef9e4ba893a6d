"""Algorithms for directed graphs: push-sum SGD and push-pull gradient tracking
(docs/reference/algorithms.md#family-directed).

On a :class:`~decsim.topology.DirectedTopology` the mixer has two operators: ``mixer.push(Z)``
is ``B Z`` with the column-stochastic B (what every worker pushes to its out-neighbours: the
column sums, hence the sum over workers, are kept) and ``mixer.pull(Z)`` is ``A Z`` with the
row-stochastic A (every worker averages what it pulls from its in-neighbours: consensus values
are kept). On an undirected or time-varying topology both are the ordinary round ``W Z``, so
these algorithms run there too (and reduce to D-SGD and adapt-then-combine gradient tracking).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from .. import tree
from .._types import Algorithm
from ._common import cost, dense_bits, local_update, make, structural

__all__ = ["sgp", "push_pull"]


def _scale_rows(X, w):
    """Each worker's leaves divided by its scalar weight: ``X / w`` row by row."""
    return jax.tree.map(lambda a: a / w.reshape((-1,) + (1,) * (a.ndim - 1)).astype(a.dtype), X)


class SGPState(NamedTuple):
    X: Any  # numerators x_i [n, ...]
    w: Any  # push-sum weights w_i [n] (float32; 1 at the start)
    opt: Any  # per-worker optax state of the local optimizer or ()
    t: Any  # int32


def _sgp_params(state):
    return _scale_rows(state.X, state.w)


@structural
def _sgp(local):
    def init(X, key):
        del key
        n = jax.tree.leaves(X)[0].shape[0]
        dtype = jax.tree.leaves(X)[0].dtype
        return SGPState(X=X, w=jnp.ones((n,), dtype), opt=local.init(X),
                        t=jnp.zeros((), jnp.int32))

    def step(state, hp, oracle, mixer, key):
        Z = _scale_rows(state.X, state.w)
        G = oracle(Z, key)
        U, opt = local.update(G, state.opt, Z, state.t, hp)
        X = mixer.push(tree.add(state.X, U))
        w = mixer.push(state.w)
        return SGPState(X, w, opt, state.t + 1), cost(1, 1, dense_bits(state.X) + 32.0)

    return init, step, _sgp_params


def sgp(learning_rate=None, *, local_optimizer=None) -> Algorithm:
    """Stochastic Gradient Push (Assran, Loizou, Ballas, Rabbat, ICML 2019): SGD with push-sum
    gossip (Kempe, Dobra, Gehrke 2003) on a directed graph.

    State: numerators ``X`` and scalar weights ``w`` (``w_0 = 1``); the model is ``Z = X / w``.
    Step t: ``G_t = G(Z_t)``; ``X_{t+1} = B (X_t − η_t G_t)``; ``w_{t+1} = B w_t``;
    ``Z_{t+1} = X_{t+1} / w_{t+1}``. Metrics are taken at Z. Because B is column-stochastic,
    ``Σ_i x_i`` changes only by the gradient step and ``Σ_i w_i = n``, so the de-biased ratio
    Z reaches consensus on any strongly connected digraph although B is not doubly stochastic.

    Cost per step: 1 gradient, 1 round, ``32 d + 32`` bits (the numerators and the weight).
    On a doubly stochastic W (``w`` stays 1) it is ``dsgd``.

    Args:
      learning_rate: η (number or optax schedule). With ``local_optimizer``: a multiplier of its
        update (build it with learning rate 1.0); omitted, 1.0.
      local_optimizer: optax GradientTransformation run per worker on ``G_t`` (evaluated at
        ``Z_t``); its update replaces ``−η_t G_t`` (the SGP paper trains with Nesterov momentum).

    Example:
      >>> import decsim as ds
      >>> prob = ds.problems.quadratic(6, 3)
      >>> hist = ds.run(sgp(0.1), prob, ds.topology.random_directed(6, 2), steps=300)
      >>> bool(hist.metrics["loss"][-1] < hist.metrics["loss"][0])
      True
    """
    local, hp = local_update("sgp", learning_rate, local_optimizer)
    return make("sgp", _sgp(local), hp,
                dict(learning_rate=learning_rate, local_optimizer=local_optimizer), directed=True)


class PushPullState(NamedTuple):
    X: Any  # x_t [n, ...]
    Y: Any  # the tracker Y_{t−1} (zeros before the first step)
    G_prev: Any  # G_{t−1} (zeros before the first step)
    opt: Any
    t: Any


@structural
def _push_pull(local):
    def init(X, key):
        del key
        Z = tree.zeros_like(X)
        return PushPullState(X=X, Y=Z, G_prev=Z, opt=local.init(X), t=jnp.zeros((), jnp.int32))

    def step(state, hp, oracle, mixer, key):
        G = oracle(state.X, key)
        Y = tree.add(mixer.push(state.Y), tree.sub(G, state.G_prev))  # Y_0 = G_0 (Y_{−1} = 0)
        U, opt = local.update(Y, state.opt, state.X, state.t, hp)
        X = mixer.pull(tree.add(state.X, U))
        return (PushPullState(X, Y, G, opt, state.t + 1),
                cost(1, 1, dense_bits(state.X, copies=2)))

    def params(state):
        return state.X

    return init, step, params


def push_pull(learning_rate=None, *, local_optimizer=None) -> Algorithm:
    """Push-Pull / AB gradient tracking on a directed graph (Pu, Shi, Xu, Nedić 2021; Xin & Khan
    2018): the model is pulled with the row-stochastic A, the tracker pushed with the
    column-stochastic B of the same digraph.

    Step t: evaluate ``G_t`` at ``X_t``; ``Y_t = G_0`` at t = 0, else
    ``Y_t = B Y_{t−1} + G_t − G_{t−1}``; ``X_{t+1} = A (X_t − η_t Y_t)``. Invariant:
    ``mean(Y_t) = mean(G_t)`` (B keeps sums). With A = B = W (undirected) it is adapt-then-combine
    gradient tracking. With full gradients and a constant step it converges to the exact
    optimum of ``(1/n) Σ f_i`` on any strongly connected digraph.

    Cost per step: 1 gradient, 1 round (X and Y travel together), ``2 · 32 d`` bits.

    Args:
      learning_rate: η (number or optax schedule). With ``local_optimizer``: a multiplier of its
        update (build it with learning rate 1.0); omitted, 1.0.
      local_optimizer: optax GradientTransformation run per worker on the tracker ``Y_t``; its
        update replaces ``−η_t Y_t``.

    Example:
      >>> import decsim as ds
      >>> push_pull(0.05).directed
      True
    """
    local, hp = local_update("push_pull", learning_rate, local_optimizer)
    return make("push_pull", _push_pull(local), hp,
                dict(learning_rate=learning_rate, local_optimizer=local_optimizer), directed=True)
