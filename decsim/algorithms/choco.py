"""Choco-SGD, Choco-Gossip and the compressed baselines they are compared with (ALGORITHMS.md §4).

Koloskova, Stich, Jaggi, "Decentralized stochastic optimization and gossip algorithms with
compressed communication", ICML 2019; Koloskova, Lin, Stich, Jaggi, "Decentralized deep learning
with arbitrary communication compression", ICLR 2020.

Every worker keeps, besides its iterate ``x_i``, a public copy ``x̂_i`` that all its neighbours
know exactly (``X̂_0 = 0``). Only compressed corrections ``q_i = C(· − x̂_i)`` travel; everyone
adds ``q_i`` to their copy of ``x̂_i``, and the gossip step mixes the public copies:
``γ (W − I) X̂``. Because ``(W − I)`` has zero column sums, the worker average moves only by the
local updates, whatever the compressor: ``mean(X_{t+1}) = mean(X_t) − η mean(G_t)``.

Keys: the gradient oracle receives the step key itself (as in ``dsgd``), so Choco with the
identity compressor draws exactly D-SGD's minibatches; compression uses
``fold_in(key, COMPRESS_STREAM)``. The constant is far above any worker index because, with JAX's
partitionable threefry, ``fold_in(key, i)`` equals ``split(key, n)[i]``, the oracle's key of
worker i.

Bits: every algorithm reports the payload of what it actually sends (``compressor.bits`` summed
over leaves, mean over workers), via :func:`decsim.compression.compress_stacked`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from .. import tree
from ..compression import _check_compressor, compress_stacked, identity
from .._types import Algorithm
from ._common import LocalUpdate, check_positive, cost, factory, is_number, schedule

COMPRESS_STREAM = 0x7FFFFFF0

ORDERS = ("paper", "parallel")


def _compress_key(key):
    return jax.random.fold_in(key, COMPRESS_STREAM)


def _check_gamma(gamma, owner: str):
    """γ in (0, 1] for plain numbers; arrays and tracers (sweeps, rebuild) pass unchecked."""
    if callable(gamma):
        raise ValueError(f"{owner}: gamma must be a number in (0, 1] (a consensus step size, not a "
                         f"schedule); got {gamma!r}.")
    check_positive("gamma", gamma)
    if is_number(gamma) and not gamma <= 1.0:
        raise ValueError(f"{owner}: gamma must be in (0, 1]; got gamma={gamma!r}. Pick it with "
                         "decsim.compression.tune_gamma(topology, compressor, d).")


def _gossip_term(gamma, WZ, Z):
    """``γ (W Z − Z)`` leaf-wise, in each leaf's dtype."""
    return jax.tree.map(lambda wz, z: jnp.asarray(gamma).astype(z.dtype) * (wz - z), WZ, Z)


def choco_exchange(X_half, X_hat, gamma, compressor, mixer, key):
    """Choco's compressed exchange, paper order (reused by adaptive Choco and MALCOM-PSGD).

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
    X_next = tree.add(X_half, _gossip_term(gamma, mixer(X_hat_next), X_hat_next))
    return X_next, X_hat_next, bits


# ---------------------------------------------------------------------------------------------
# Choco-SGD


class ChocoState(NamedTuple):
    """State of Choco-SGD."""

    X: Any  # private iterates [n, ...]
    X_hat: Any  # public copies x̂_i known to every neighbour [n, ...] (zeros at start)
    opt: Any  # per-worker optax state (leaves [n, ...]) or ()
    t: Any  # int32 step counter


def _params(state):
    return state.X


@factory(numeric=("learning_rate", "gamma"))
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
    :func:`decsim.compression.tune_gamma`.

    Cost per step: 1 gradient, 1 round, ``bits(Q_t)`` per worker.

    Args:
      learning_rate: η (number or optax schedule); omit when ``local_optimizer`` is given.
      gamma: consensus step size γ in (0, 1].
      compressor: a :class:`decsim.Compressor` (biased ones are fine).
      order: ``"paper"`` or ``"parallel"``.
      local_optimizer: optax GradientTransformation run per worker in place of ``−η G`` (e.g.
        Nesterov momentum with weight decay as in the ICLR'20 deep-learning runs).

    Example:
      >>> import decsim as ds
      >>> import decsim.compression as C
      >>> prob = ds.problems.logistic_regression(9, "digits", batch_size=32)
      >>> algo = choco_sgd(0.1, gamma=0.05, compressor=C.top_k(0.01))
      >>> hist = ds.run(algo, prob, ds.topology.ring(9, weights="uniform"), steps=100)
      >>> bool(hist.metrics["loss"][-1] < hist.metrics["loss"][0])
      True
    """
    local = LocalUpdate(learning_rate, local_optimizer, "choco_sgd")
    _check_gamma(gamma, "choco_sgd")
    _check_compressor(compressor)
    if order not in ORDERS:
        raise ValueError(f"choco_sgd: order must be 'paper' (the papers' algorithm box) or "
                         f"'parallel' (the authors' code); got order={order!r}.")

    def init(X, key):
        del key
        return ChocoState(X=X, X_hat=tree.zeros_like(X), opt=local.init(X), t=jnp.zeros((), jnp.int32))

    def step(state, oracle, mixer, key):
        G = oracle(state.X, key)
        U, opt = local.update(G, state.opt, state.X, state.t)
        X_half = tree.add(state.X, U)
        k_comp = _compress_key(key)
        if order == "paper":
            X, X_hat, bits = choco_exchange(X_half, state.X_hat, gamma, compressor, mixer, k_comp)
        else:
            X = tree.add(X_half, _gossip_term(gamma, mixer(state.X_hat), state.X_hat))
            Q, bits = compress_stacked(compressor, k_comp, tree.sub(X, state.X_hat))
            X_hat = tree.add(state.X_hat, Q)
        return ChocoState(X, X_hat, opt, state.t + 1), cost(1, 1, bits)

    return Algorithm(init=init, step=step, params=_params)


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


@factory(numeric=("gamma",))
def choco_gossip(gamma, compressor) -> Algorithm:
    """Choco-Gossip: average consensus with compressed messages (ICML 2019, Algorithm 1).

    ``X_{t+1} = X_t + γ (W − I) X̂_t``; ``Q_t = C(X_{t+1} − X̂_t)``; ``X̂_{t+1} = X̂_t + Q_t``
    (``X̂_0 = 0``). Keeps ``mean(X)`` exactly and converges linearly to it for any compressor with
    ω > 0 and small enough γ (at rate ~ gap² ω). Never calls the gradient oracle.

    Run it on ``ds.problems.consensus(n, d)``, whose metric ``consensus_error`` is
    ``(1/n) Σ ||x_i − x̄_0||²``.

    Cost per round: 0 gradients, 1 round, ``bits(Q_t)`` per worker.

    Args:
      gamma: consensus step size in (0, 1] (see :func:`decsim.compression.tune_gamma`).
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
    _check_gamma(gamma, "choco_gossip")
    _check_compressor(compressor)

    def step(state, oracle, mixer, key):
        del oracle  # gossip only: no gradients
        X = tree.add(state.X, _gossip_term(gamma, mixer(state.X_hat), state.X_hat))
        Q, bits = compress_stacked(compressor, _compress_key(key), tree.sub(X, state.X_hat))
        return GossipState(X, tree.add(state.X_hat, Q), state.t + 1), cost(0, 1, bits)

    return Algorithm(init=_gossip_init, step=step, params=_params)


NAIVE_FORMS = ("carli", "aysal")


@factory(numeric=("gamma",))
def naive_compressed_gossip(gamma, compressor, *, form: str = "carli") -> Algorithm:
    """Gossip that exchanges compressed iterates directly; it stalls at an error floor.

    ``form="carli"`` (default, the equation of ALGORITHMS.md §4)::

        X_{t+1} = X_t + γ (W C(X_t) − X_t)

    with a per-worker C. Note on attribution: ALGORITHMS.md names this baseline after Aysal et
    al.; the equation it gives is the one the Choco paper (ICML'19, §5) attributes to Carli et
    al. ("Q2-gossip"). The Aysal et al. form ("Q1-gossip"), ``X_{t+1} = X_t + γ (W − I) C(X_t)``,
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
    _check_gamma(gamma, "naive_compressed_gossip")
    _check_compressor(compressor)
    if form not in NAIVE_FORMS:
        raise ValueError(f"naive_compressed_gossip: form must be 'carli' (X + γ(W C(X) − X)) or "
                         f"'aysal' (X + γ(W − I) C(X)); got form={form!r}.")

    def step(state, oracle, mixer, key):
        del oracle
        CX, bits = compress_stacked(compressor, _compress_key(key), state.X)
        if form == "carli":
            X = tree.add(state.X, _gossip_term(gamma, mixer(CX), state.X))
        else:
            X = tree.add(state.X, _gossip_term(gamma, mixer(CX), CX))
        return GossipState(X, state.X_hat, state.t + 1), cost(0, 1, bits)

    return Algorithm(init=_gossip_init, step=step, params=_params)


# ---------------------------------------------------------------------------------------------
# compressed SGD baselines


class DCDState(NamedTuple):
    """State of DCD-PSGD."""

    X: Any  # iterates [n, ...] (identical to every neighbour's replica of them)
    t: Any  # int32


@factory(numeric=("learning_rate",))
def dcd_psgd(learning_rate, compressor) -> Algorithm:
    """DCD-PSGD (Tang, Gan, Zhang, Zhang, Liu, NeurIPS 2018): compress the change of the iterate.

    ``X_{t+1} = X_t + C(W X_t − η_t G_t − X_t)``, C per worker. Each worker sends ``C(·)`` and its
    neighbours add it to their replica of its iterate, so all replicas stay exact. It needs an
    unbiased compressor with small variance; with a high-variance one (unbiased rand-1%) it
    diverges at learning rates where Choco-SGD converges, as the Choco papers report.

    Cost per step: 1 gradient, 1 round, ``bits(C(·))`` per worker.

    Args:
      learning_rate: η (number or optax schedule).
      compressor: an unbiased :class:`decsim.Compressor` (``compressor.unbiased``), else
        ``ValueError``.

    Example:
      >>> import decsim.compression as C
      >>> algo = dcd_psgd(0.05, C.qsgd(16, unbiased=True))
    """
    LocalUpdate(learning_rate, None, "dcd_psgd")  # validates learning_rate
    lr = schedule(learning_rate)
    _check_compressor(compressor)
    if not compressor.unbiased:
        raise ValueError(f"dcd_psgd requires an unbiased compressor (E C(x) = x); got "
                         f"{compressor.name} (unbiased=False). Use e.g. rand_k(fraction, "
                         "unbiased=True) or qsgd(levels, unbiased=True), or choco_sgd, which "
                         "handles biased compressors.")

    def init(X, key):
        del key
        return DCDState(X=X, t=jnp.zeros((), jnp.int32))

    def step(state, oracle, mixer, key):
        G = oracle(state.X, key)
        eta = lr(state.t)
        delta = jax.tree.map(lambda wx, g, x: wx - jnp.asarray(eta).astype(x.dtype) * g - x,
                             mixer(state.X), G, state.X)
        Q, bits = compress_stacked(compressor, _compress_key(key), delta)
        return DCDState(tree.add(state.X, Q), state.t + 1), cost(1, 1, bits)

    return Algorithm(init=init, step=step, params=_params)


class DeepSqueezeState(NamedTuple):
    """State of DeepSqueeze."""

    X: Any  # iterates [n, ...]
    E: Any  # compression error carried to the next step [n, ...] (zeros at start)
    t: Any  # int32


@factory(numeric=("learning_rate", "gamma"))
def deepsqueeze(learning_rate, gamma, compressor) -> Algorithm:
    """DeepSqueeze (Tang, Lian, Yu, Zhang, Liu 2019): error-compensated compressed gossip.

    ``X½ = X_t − η_t G_t``; ``V = X½ + E_t``; ``Q = C(V)``; ``E_{t+1} = V − Q``;
    ``X_{t+1} = X½ + γ (W − I) Q`` (``E_0 = 0``). Works with biased compressors.

    Cost per step: 1 gradient, 1 round, ``bits(Q)`` per worker.

    Args:
      learning_rate: η (number or optax schedule).
      gamma: consensus step size in (0, 1].
      compressor: a :class:`decsim.Compressor`.

    Example:
      >>> import decsim.compression as C
      >>> algo = deepsqueeze(0.05, 0.2, C.sign())
    """
    LocalUpdate(learning_rate, None, "deepsqueeze")
    lr = schedule(learning_rate)
    _check_gamma(gamma, "deepsqueeze")
    _check_compressor(compressor)

    def init(X, key):
        del key
        return DeepSqueezeState(X=X, E=tree.zeros_like(X), t=jnp.zeros((), jnp.int32))

    def step(state, oracle, mixer, key):
        G = oracle(state.X, key)
        eta = lr(state.t)
        X_half = jax.tree.map(lambda x, g: x - jnp.asarray(eta).astype(x.dtype) * g, state.X, G)
        V = tree.add(X_half, state.E)
        Q, bits = compress_stacked(compressor, _compress_key(key), V)
        X = tree.add(X_half, _gossip_term(gamma, mixer(Q), Q))
        return DeepSqueezeState(X, tree.sub(V, Q), state.t + 1), cost(1, 1, bits)

    return Algorithm(init=init, step=step, params=_params)
