"""Choco-SGD, Choco-Gossip and the compressed baselines they are compared with
(docs/reference/algorithms.md#family-choco).

Koloskova, Stich, Jaggi, "Decentralized stochastic optimization and gossip algorithms with
compressed communication", ICML 2019; Koloskova, Lin, Stich, Jaggi, "Decentralized deep learning
with arbitrary communication compression", ICLR 2020.

The compressed exchange itself (public copies ``X̂``, ``γ (W − I) X̂``, the compressor's key
stream) lives in :mod:`decsim.algorithms._exchange`. :func:`compressed_sgd` composes a local step,
that exchange and an optional post-map; Choco-SGD, adaptive Choco-SGD and MALCOM-PSGD are
instances of it, as optax builds ``adam`` from a chain of transformations.

Bits: every algorithm reports the payload of what it actually sends (``compressor.bits`` summed
over leaves, mean over workers), via :func:`decsim.compression.compress_stacked`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from .. import tree
from .._checks import one_of
from .._types import Algorithm, Compressor
from ..compression import check_compressor, compress_stacked, identity
from ._common import LocalUpdate, cost, local_update, make, stacked_params, structural
from ._exchange import EXCHANGES, check_gamma, compress_key, gossip_term

__all__ = ["choco_sgd", "choco_gossip", "naive_compressed_gossip", "dcd_psgd", "deepsqueeze"]

ORDERS = tuple(EXCHANGES)


# ---------------------------------------------------------------------------------------------
# compressed SGD: a local step, Choco's exchange, an optional post-map


class ChocoState(NamedTuple):
    """State of every compressed-SGD method (Choco-SGD, adaptive Choco-SGD, MALCOM-PSGD)."""

    X: Any  # private iterates [n, ...]
    X_hat: Any  # public copies x̂_i known to every neighbour [n, ...] (zeros at start)
    opt: Any  # the local step's per-worker state (optax state, AMSGrad moments) or ()
    t: Any  # int32 step counter


@structural
def compressed_sgd(local, compressor: Compressor, order: str = "paper",
                   post: Callable | None = None):
    """The one step body of the compressed-SGD family: ``(init, step, params)``.

    ``X½ = X_t + U_t`` with ``(U_t, opt) = local.update(G_t, opt, X_t, t, hparams)``; then
    Choco's exchange (``order`` ``"paper"`` or ``"parallel"``) with ``hparams["gamma"]``; then
    ``X_{t+1} = post(X, hparams, t)`` when a post-map is given (MALCOM's l1 prox).

    Args:
      local: a local step with ``init(X)`` and ``update(G, opt_state, X, t, hparams)`` (a
        :class:`decsim.algorithms._common.LocalUpdate`, or the AMSGrad direction of
        :mod:`decsim.algorithms.adaptive`).
      compressor: a :class:`decsim.Compressor`.
      order: ``"paper"`` or ``"parallel"``.
      post: optional ``(X, hparams, t) -> X``.
    """
    exchange = EXCHANGES[order]

    def init(X, key):
        del key
        return ChocoState(X=X, X_hat=tree.zeros_like(X), opt=local.init(X),
                          t=jnp.zeros((), jnp.int32))

    def step(state, hp, oracle, mixer, key):
        G = oracle(state.X, key)
        U, opt = local.update(G, state.opt, state.X, state.t, hp)
        X_half = tree.add(state.X, U)
        X, X_hat, bits = exchange(X_half, state.X_hat, hp["gamma"], compressor, mixer,
                                  compress_key(key))
        if post is not None:
            X = post(X, hp, state.t)
        return ChocoState(X, X_hat, opt, state.t + 1), cost(1, 1, bits)

    return init, step, stacked_params


def choco_sgd(learning_rate=None, gamma=1.0, compressor=identity(), *, order: str = "paper",
              local_optimizer=None) -> Algorithm:
    """Choco-SGD (Koloskova et al., ICML 2019 and ICLR 2020): D-SGD with compressed gossip.

    ``order="paper"`` (the algorithm box of the papers)::

        X½ = X_t − η_t G_t
        Q_t = C(X½ − X̂_t);   X̂_{t+1} = X̂_t + Q_t
        X_{t+1} = X½ + γ (W − I) X̂_{t+1}

    ``order="parallel"`` (the authors' code, which overlaps compression with computation)::

        X½ = X_t − η_t G_t
        X_{t+1} = X½ + γ (W − I) X̂_t
        Q_t = C(X_{t+1} − X̂_t);   X̂_{t+1} = X̂_t + Q_t

    with ``X̂_0 = 0`` and C applied per worker and per leaf. Identities: for every compressor
    ``mean(X_{t+1}) = mean(X_t) − η_t mean(G_t)``; with ``identity()`` and γ = 1 the paper order is
    ``dsgd`` and the parallel order is ``dpsgd`` from step 1 on (step 0 is local since X̂_0 = 0).
    The defaults (``identity()``, γ = 1) are therefore D-SGD; pass a compressor and a γ from
    :func:`tune_gamma`.

    Cost per step: 1 gradient, 1 round, ``bits(Q_t)`` per worker.

    Args:
      learning_rate: η (number or optax schedule). With ``local_optimizer``: a multiplier of its
        update (build the optimizer with learning rate 1.0); omitted, 1.0.
      gamma: consensus step size γ in (0, 1].
      compressor: a :class:`decsim.Compressor` (biased ones are fine).
      order: ``"paper"`` or ``"parallel"``.
      local_optimizer: optax GradientTransformation run per worker on ``G_t``; its update
        replaces ``−η_t G_t`` in ``X½`` (e.g. Nesterov momentum with weight decay as in the
        ICLR'20 deep-learning runs: ``optax.chain(optax.add_decayed_weights(1e-4),
        optax.sgd(1.0, momentum=0.9, nesterov=True))`` with ``learning_rate=0.1``). The
        exchange is unchanged, so ``mean(X_{t+1}) = mean(X_t + U_t)``.

    Example:
      >>> import decsim as ds
      >>> import decsim.compression as C
      >>> prob = ds.problems.logistic_regression(9, "digits", batch_size=32)
      >>> algo = choco_sgd(0.1, gamma=0.05, compressor=C.top_k(0.01))
      >>> hist = ds.run(algo, prob, ds.topology.ring(9, weights="uniform"), steps=100)
      >>> bool(hist.metrics["loss"][-1] < hist.metrics["loss"][0])
      True
    """
    local, hp = local_update("choco_sgd", learning_rate, local_optimizer)
    hp["gamma"] = check_gamma("choco_sgd", gamma)
    check_compressor(compressor)
    order = one_of("order", order, ORDERS, what="choco_sgd order")
    return make("choco_sgd", compressed_sgd(local, compressor, order), hp,
                dict(learning_rate=learning_rate, gamma=gamma, compressor=compressor, order=order,
                     local_optimizer=local_optimizer))


# ---------------------------------------------------------------------------------------------
# gossip only (average consensus)


class GossipState(NamedTuple):
    """State of the gossip-only algorithms."""

    X: Any  # iterates [n, ...]
    X_hat: Any  # public copies [n, ...] (Choco-Gossip; zeros and unused for naive gossip)
    t: Any  # int32 round counter


def _gossip_init(X, key):
    del key
    return GossipState(X=X, X_hat=tree.zeros_like(X), t=jnp.zeros((), jnp.int32))


@structural
def _choco_gossip(compressor: Compressor):
    def step(state, hp, oracle, mixer, key):
        del oracle  # gossip only: no gradients
        X = tree.add(state.X, gossip_term(hp["gamma"], mixer(state.X_hat), state.X_hat))
        Q, bits = compress_stacked(compressor, compress_key(key), tree.sub(X, state.X_hat))
        return GossipState(X, tree.add(state.X_hat, Q), state.t + 1), cost(0, 1, bits)

    return _gossip_init, step, stacked_params


def choco_gossip(gamma, compressor) -> Algorithm:
    """Choco-Gossip: average consensus with compressed messages (ICML 2019, Algorithm 1).

    ``X_{t+1} = X_t + γ (W − I) X̂_t``; ``Q_t = C(X_{t+1} − X̂_t)``; ``X̂_{t+1} = X̂_t + Q_t``
    (``X̂_0 = 0``). Keeps ``mean(X)`` exactly and converges linearly to it for any compressor with
    ω > 0 and small enough γ (at rate ~ gap² ω). Never calls the gradient oracle.

    Run it on ``ds.problems.consensus(n, d)``, whose metric ``consensus_error`` is
    ``(1/n) Σ ||x_i − x̄_0||²``.

    Cost per round: 0 gradients, 1 round, ``bits(Q_t)`` per worker.

    Args:
      gamma: consensus step size in (0, 1] (see :func:`tune_gamma`).
      compressor: a :class:`decsim.Compressor`.

    Example:
      >>> import decsim as ds
      >>> import decsim.compression as C
      >>> prob = ds.problems.consensus(9, 50, seed=0)
      >>> topo = ds.topology.ring(9, weights="uniform")
      >>> hist = ds.run(choco_gossip(0.3, C.qsgd(16)), prob, topo, steps=300, eval_every=300)
      >>> bool(hist.metrics["consensus_error"][-1] < 1e-4 * hist.metrics["consensus_error"][0])
      True
    """
    gamma = check_gamma("choco_gossip", gamma)
    check_compressor(compressor)
    return make("choco_gossip", _choco_gossip(compressor), {"gamma": gamma},
                dict(gamma=gamma, compressor=compressor))


NAIVE_FORMS = ("carli", "aysal")


@structural
def _naive_gossip(compressor: Compressor, form: str):
    def step(state, hp, oracle, mixer, key):
        del oracle
        CX, bits = compress_stacked(compressor, compress_key(key), state.X)
        if form == "carli":
            X = tree.add(state.X, gossip_term(hp["gamma"], mixer(CX), state.X))
        else:
            X = tree.add(state.X, gossip_term(hp["gamma"], mixer(CX), CX))
        return GossipState(X, state.X_hat, state.t + 1), cost(0, 1, bits)

    return _gossip_init, step, stacked_params


def naive_compressed_gossip(gamma, compressor, *, form: str = "carli") -> Algorithm:
    """Gossip that exchanges compressed iterates directly; it stalls at an error floor.

    ``form="carli"`` (default; docs/reference/algorithms.md#naive_compressed_gossip)::

        X_{t+1} = X_t + γ (W C(X_t) − X_t)

    with a per-worker C. Note on attribution: this equation is the one the Choco paper (ICML'19,
    §5) attributes to Carli et al. ("Q2-gossip"), although the baseline is often named after
    Aysal et al. The Aysal et al. form ("Q1-gossip"), ``X_{t+1} = X_t + γ (W − I) C(X_t)``,
    which keeps the mean for every compressor, is available as ``form="aysal"``. Both stall: the
    compression error never shrinks, because C is applied to the iterates, not to a vanishing
    difference. Never calls the gradient oracle.

    Cost per round: 0 gradients, 1 round, ``bits(C(X_t))`` per worker.

    Args:
      gamma: step size in (0, 1].
      compressor: a :class:`decsim.Compressor`.
      form: ``"carli"`` (the spec's equation) or ``"aysal"`` (mean-preserving).

    Example:
      >>> import decsim.compression as C
      >>> algo = naive_compressed_gossip(0.5, C.top_k(0.1))
    """
    gamma = check_gamma("naive_compressed_gossip", gamma)
    check_compressor(compressor)
    if form not in NAIVE_FORMS:
        raise ValueError(f"naive_compressed_gossip: form must be 'carli' (X + γ(W C(X) − X)) or "
                         f"'aysal' (X + γ(W − I) C(X)); got form={form!r}.")
    return make("naive_compressed_gossip", _naive_gossip(compressor, form), {"gamma": gamma},
                dict(gamma=gamma, compressor=compressor, form=form))


# ---------------------------------------------------------------------------------------------
# compressed SGD baselines


class DCDState(NamedTuple):
    """State of DCD-PSGD."""

    X: Any  # iterates [n, ...] (identical to every neighbour's replica of them)
    opt: Any  # per-worker optax state of the local optimizer or ()
    t: Any  # int32


@structural
def _dcd(local: LocalUpdate, compressor: Compressor):
    def init(X, key):
        del key
        return DCDState(X=X, opt=local.init(X), t=jnp.zeros((), jnp.int32))

    def step(state, hp, oracle, mixer, key):
        G = oracle(state.X, key)
        U, opt = local.update(G, state.opt, state.X, state.t, hp)
        delta = jax.tree.map(lambda wx, u, x: wx + u - x, mixer(state.X), U, state.X)
        Q, bits = compress_stacked(compressor, compress_key(key), delta)
        return DCDState(tree.add(state.X, Q), opt, state.t + 1), cost(1, 1, bits)

    return init, step, stacked_params


def dcd_psgd(learning_rate, compressor, *, local_optimizer=None) -> Algorithm:
    """DCD-PSGD (Tang, Gan, Zhang, Zhang, Liu, NeurIPS 2018): compress the change of the iterate.

    ``X_{t+1} = X_t + C(W X_t − η_t G_t − X_t)``, C per worker. Each worker sends ``C(·)`` and its
    neighbours add it to their replica of its iterate, so all replicas stay exact. It needs an
    unbiased compressor with small variance; with a high-variance one (unbiased rand-1%) it
    diverges at learning rates where Choco-SGD converges, as the Choco papers report.

    Local optimizer: it is fed ``G_t`` and its update ``U_t`` replaces ``−η_t G_t``:
    ``X_{t+1} = X_t + C(W X_t + U_t − X_t)``.

    Cost per step: 1 gradient, 1 round, ``bits(C(·))`` per worker.

    Args:
      learning_rate: η (number or optax schedule). With ``local_optimizer``: a multiplier of its
        update (build the optimizer with learning rate 1.0); ``None``, 1.0.
      compressor: an unbiased :class:`decsim.Compressor` (``compressor.unbiased``), else
        ``ValueError``.
      local_optimizer: optax GradientTransformation run per worker on ``G_t``.

    Example:
      >>> import decsim.compression as C
      >>> algo = dcd_psgd(0.05, C.qsgd(16, unbiased=True))
    """
    local, hp = local_update("dcd_psgd", learning_rate, local_optimizer)
    check_compressor(compressor)
    if not compressor.unbiased:
        raise ValueError(f"dcd_psgd requires an unbiased compressor (E C(x) = x); got "
                         f"{compressor.name} (unbiased=False). Use e.g. rand_k(fraction, "
                         "unbiased=True) or qsgd(levels, unbiased=True), or choco_sgd, which "
                         "handles biased compressors.")
    return make("dcd_psgd", _dcd(local, compressor), hp,
                dict(learning_rate=learning_rate, compressor=compressor,
                     local_optimizer=local_optimizer))


class DeepSqueezeState(NamedTuple):
    """State of DeepSqueeze."""

    X: Any  # iterates [n, ...]
    E: Any  # compression error carried to the next step [n, ...] (zeros at start)
    opt: Any  # per-worker optax state of the local optimizer or ()
    t: Any  # int32


@structural
def _deepsqueeze(local: LocalUpdate, compressor: Compressor):
    def init(X, key):
        del key
        return DeepSqueezeState(X=X, E=tree.zeros_like(X), opt=local.init(X),
                                t=jnp.zeros((), jnp.int32))

    def step(state, hp, oracle, mixer, key):
        G = oracle(state.X, key)
        U, opt = local.update(G, state.opt, state.X, state.t, hp)
        X_half = tree.add(state.X, U)
        V = tree.add(X_half, state.E)
        Q, bits = compress_stacked(compressor, compress_key(key), V)
        X = tree.add(X_half, gossip_term(hp["gamma"], mixer(Q), Q))
        return DeepSqueezeState(X, tree.sub(V, Q), opt, state.t + 1), cost(1, 1, bits)

    return init, step, stacked_params


def deepsqueeze(learning_rate, gamma, compressor, *, local_optimizer=None) -> Algorithm:
    """DeepSqueeze (Tang, Lian, Yu, Zhang, Liu 2019): error-compensated compressed gossip.

    ``X½ = X_t − η_t G_t``; ``V = X½ + E_t``; ``Q = C(V)``; ``E_{t+1} = V − Q``;
    ``X_{t+1} = X½ + γ (W − I) Q`` (``E_0 = 0``). Works with biased compressors.

    Local optimizer: it is fed ``G_t`` and its update ``U_t`` replaces ``−η_t G_t`` in ``X½``
    (``X½ = X_t + U_t``); the error feedback is unchanged.

    Cost per step: 1 gradient, 1 round, ``bits(Q)`` per worker.

    Args:
      learning_rate: η (number or optax schedule). With ``local_optimizer``: a multiplier of its
        update (build the optimizer with learning rate 1.0); ``None``, 1.0.
      gamma: consensus step size in (0, 1].
      compressor: a :class:`decsim.Compressor`.
      local_optimizer: optax GradientTransformation run per worker on ``G_t``.

    Example:
      >>> import decsim.compression as C
      >>> algo = deepsqueeze(0.05, 0.2, C.sign())
    """
    local, hp = local_update("deepsqueeze", learning_rate, local_optimizer)
    hp["gamma"] = check_gamma("deepsqueeze", gamma)
    check_compressor(compressor)
    return make("deepsqueeze", _deepsqueeze(local, compressor), hp,
                dict(learning_rate=learning_rate, gamma=gamma, compressor=compressor,
                     local_optimizer=local_optimizer))
