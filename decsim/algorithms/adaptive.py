"""Adaptive decentralized methods (docs/reference/algorithms.md#family-adaptive).

Per-coordinate learning rates matter when coordinates see gradients of very different sizes, as the
embeddings of rare and frequent categories in factorization machines do (Gao & Huang, "Adaptive
Serverless Learning", 2020). Four methods, all written for stacked pytrees ``X`` (leaves
``[n, ...]``), with ``mixer(Z)`` one round ``W Z``, ``oracle(X, key)`` the stacked stochastic
gradients at X, ``η_t`` the learning rate (a number, or an optax schedule evaluated at the int32
step counter, which is 0 at the first step), and every operation (``*``, ``/``, ``sqrt``, ``max``,
``²``) element-wise:

* :func:`dadam`: decentralized Adam of Nazari et al.; each worker keeps its own moments and only X
  is gossiped.
* :func:`damsgrad` and :func:`dadagrad` (Chen et al.): the second-moment estimate is itself tracked
  by gossip, so that all workers step with (nearly) the same per-coordinate scaling; this is what
  makes them converge when DADAM's worker-specific scalings pull x̄ to a wrong point.
* :func:`ada_choco_sgd`: the communication-efficient variant, Choco-SGD's compressed exchange with
  a local AMSGrad direction.

The spec counts steps from t = 1; the state's counter ``t`` holds the number of steps done (t − 1
in the spec's numbering at the start of step t).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from .. import tree
from .._checks import in_interval, positive
from .._types import Algorithm
from ..compression import check_compressor, identity
from ._common import Rate, cost, dense_bits, make, stacked_params, structural
from ._common import learning_rate as _rate
from ._exchange import check_gamma
from .choco import compressed_sgd

__all__ = ["dadam", "damsgrad", "dadagrad", "ada_choco_sgd"]

_map = jax.tree.map


def _check_beta(name: str, value) -> float:
    """b1, b2, b3 are structural (plain Python numbers in [0, 1)); 1 would divide by zero in the
    bias corrections or freeze a moment forever."""
    return in_interval(name, value, 0.0, 1.0, closed="left",
                              hint="It is an exponential-average weight, e.g. 0.9.")


def _check_eps(value) -> float:
    return positive("eps", value, hint="It is the floor of the adaptive denominator, "
                                              "e.g. 1e-6.")


def _full(X, value: float):
    return jax.tree.map(lambda a: jnp.full_like(a, value), X)


# ---------------------------------------------------------------------------------------------
# DADAM


class DadamState(NamedTuple):
    """State of :func:`dadam`."""

    X: Any  # stacked params X_t [n, ...]
    M: Any  # first moment M_{t−1} [n, ...] (0 before the first step)
    V: Any  # second moment V_{t−1} [n, ...] (0 before the first step)
    V_bar: Any  # V̄_{t−1} [n, ...] (V̄_0 = 0)
    t: Any  # int32, steps done


@structural
def _dadam(rate: Rate, b1: float, b2: float, b3: float, eps: float):
    def init(X, key):
        del key
        Z = tree.zeros_like(X)
        return DadamState(X=X, M=Z, V=Z, V_bar=Z, t=jnp.zeros((), jnp.int32))

    def step(state, hp, oracle, mixer, key):
        G = oracle(state.X, key)
        dt = jax.tree.leaves(state.X)[0].dtype  # float32, or float64 with jax_enable_x64
        t = (state.t + 1).astype(dt)  # the spec's t (from 1)
        c1 = 1.0 - jnp.power(jnp.asarray(b1, dt), t)
        c2 = 1.0 - jnp.power(jnp.asarray(b2, dt), t)
        M = _map(lambda m, g: b1 * m + (1.0 - b1) * g, state.M, G)
        V = _map(lambda v, g: b2 * v + (1.0 - b2) * jnp.square(g), state.V, G)
        V_bar = _map(lambda vb, v: b3 * vb + (1.0 - b3) * jnp.maximum(vb, v / c2), state.V_bar, V)
        eta = rate(hp, state.t)
        X = _map(lambda wx, m, vb: wx - eta * (m / c1) / (jnp.sqrt(vb) + eps),
                 mixer(state.X), M, V_bar)
        return DadamState(X, M, V, V_bar, state.t + 1), cost(1, 1, dense_bits(state.X))

    return init, step, stacked_params


def dadam(learning_rate, *, b1: float = 0.9, b2: float = 0.999, b3: float = 0.9,
          eps: float = 1e-8) -> Algorithm:
    """Decentralized Adam, DADAM (Nazari, Tarzanagh, Michailidis 2019), in the order of the
    official code. At step t = 1, 2, ... every worker, with its own gradient ``G_t`` at ``X_t``:

    ``M = b1 M + (1−b1) G_t``; ``V = b2 V + (1−b2) G_t²``; ``M̂ = M / (1 − b1^t)``;
    ``V̂ = V / (1 − b2^t)``; ``V̄ = b3 V̄ + (1−b3) max(V̄, V̂)`` (``V̄_0 = 0``);
    ``X_{t+1} = W X_t − η_t M̂ / (sqrt(V̄) + eps)``.

    The moments are per worker and never exchanged, so workers with gradients of different scales
    take differently scaled steps; with heterogeneous data the average model then does not go to
    a stationary point of f (Chen et al. 2021), which :func:`damsgrad` repairs.

    Cost per step: 1 gradient, 1 round, ``32 d`` bits (only X is gossiped).

    Args:
      learning_rate: η (number or optax schedule of the step counter, 0 at the first step).
      b1, b2: Adam's moment weights, in [0, 1).
      b3: weight of the running max-average V̄, in [0, 1).
      eps: added to ``sqrt(V̄)``.

    Reference: P. Nazari, D. A. Tarzanagh, G. Michailidis, "DADAM: A consensus-based distributed
    adaptive gradient method for online optimization", arXiv:1901.09109.

    Example:
      >>> import decsim as ds
      >>> from decsim.algorithms import adaptive
      >>> prob = ds.problems.quadratic(4, 5, noise=0.1)
      >>> hist = ds.run(adaptive.dadam(0.05), prob, ds.topology.ring(4), steps=100)
      >>> bool(hist.metrics["loss"][-1] < hist.metrics["loss"][0])
      True
    """
    rate, hp = _rate("dadam", learning_rate)
    b1, b2, b3 = _check_beta("b1", b1), _check_beta("b2", b2), _check_beta("b3", b3)
    eps = _check_eps(eps)
    return make("dadam", _dadam(rate, b1, b2, b3, eps), hp,
                dict(learning_rate=learning_rate, b1=b1, b2=b2, b3=b3, eps=eps))


# ---------------------------------------------------------------------------------------------
# DAMSGrad and DAdaGrad (Chen et al.): the second moment is tracked by gossip


class TrackedAdaptiveState(NamedTuple):
    """State of :func:`damsgrad` and :func:`dadagrad`.

    ``U_t = max(Ũ_t, eps)`` is a function of ``U_tilde`` and is not stored.
    """

    X: Any  # stacked params X_t [n, ...]
    M: Any  # first moment M_{t−1} [n, ...] (0 before the first step)
    V: Any  # AMSGrad second moment V_{t−1} [n, ...] (0 at first); () for dadagrad
    V_hat: Any  # V̂_{t−1} [n, ...] (V̂_0 = eps)
    U_tilde: Any  # Ũ_t [n, ...], the gossip-tracked second moment (Ũ_1 = eps)
    t: Any  # int32, steps done (the spec's t − 1)


@structural
def _tracked_adaptive(rate: Rate, b1: float, eps: float, amsgrad: bool, b2=None):
    def init(X, key):
        del key
        Z = tree.zeros_like(X)
        E = _full(X, eps)
        return TrackedAdaptiveState(X=X, M=Z, V=Z if amsgrad else (), V_hat=E, U_tilde=E,
                                    t=jnp.zeros((), jnp.int32))

    def step(state, hp, oracle, mixer, key):
        G = oracle(state.X, key)
        M = _map(lambda m, g: b1 * m + (1.0 - b1) * g, state.M, G)
        if amsgrad:
            V = _map(lambda v, g: b2 * v + (1.0 - b2) * jnp.square(g), state.V, G)
            V_hat = _map(jnp.maximum, state.V_hat, V)
        else:
            V = ()
            t = (state.t + 1).astype(jax.tree.leaves(state.X)[0].dtype)  # the spec's t (from 1)
            V_hat = _map(lambda vh, g: ((t - 1.0) / t) * vh + (1.0 / t) * jnp.square(g),
                         state.V_hat, G)
        eta = rate(hp, state.t)
        # X_{t+1} = W X_t − η M_t / sqrt(U_t), with U_t = max(Ũ_t, eps) from the previous round
        X = _map(lambda wx, m, ut: wx - eta * m / jnp.sqrt(jnp.maximum(ut, eps)),
                 mixer(state.X), M, state.U_tilde)
        # Ũ_{t+1} = W Ũ_t − V̂_{t−1} + V̂_t (keeps mean(Ũ_{t+1}) = mean(V̂_t))
        U_tilde = _map(lambda wu, old, new: wu - old + new, mixer(state.U_tilde), state.V_hat,
                       V_hat)
        new = TrackedAdaptiveState(X, M, V, V_hat, U_tilde, state.t + 1)
        return new, cost(1, 1, dense_bits(state.X, copies=2))

    return init, step, stacked_params


def damsgrad(learning_rate, *, b1: float = 0.9, b2: float = 0.99, eps: float = 1e-6) -> Algorithm:
    """Decentralized AMSGrad, DAMSGrad (Chen, Karimi, Zhao, Li 2021, Algorithm 2).

    Init ``M = V = 0``, ``V̂_0 = eps``, ``Ũ_1 = eps``, ``U_1 = eps``. At step t = 1, 2, ...:

    ``M = b1 M + (1−b1) G_t``; ``V = b2 V + (1−b2) G_t²``; ``V̂_t = max(V̂_{t−1}, V)``;
    ``X_{t+1} = W X_t − η_t M / sqrt(U_t)``; ``Ũ_{t+1} = W Ũ_t − V̂_{t−1} + V̂_t``;
    ``U_{t+1} = max(Ũ_{t+1}, eps)``.

    Ũ tracks the network average of the workers' V̂ (invariant ``mean(Ũ_{t+1}) = mean(V̂_t)``), so
    all workers' per-coordinate step sizes agree up to consensus error, and x̄ moves along an
    adaptively scaled average gradient. Note that the first step divides by ``sqrt(eps)``
    (``U_1 = eps``, as in the paper): it is ``−η (1−b1) G_1 / sqrt(eps)``, much longer than the
    later ones, so tune η with that in mind.

    Cost per step: 1 gradient, 1 round (X and Ũ travel together), ``2 · 32 d`` bits.

    Args:
      learning_rate: η (number or optax schedule of the step counter, 0 at the first step).
      b1, b2: moment weights, in [0, 1).
      eps: initial value of V̂ and Ũ and floor of U.

    Reference: X. Chen, B. Karimi, W. Zhao, P. Li, "On the convergence of decentralized adaptive
    gradient methods", arXiv:2109.03194.

    Example:
      >>> from decsim.algorithms import adaptive
      >>> algo = adaptive.damsgrad(0.001, b2=0.999)
      >>> algo.hparams   # swept without recompiling; b1, b2, eps are structural
      {'learning_rate': 0.001}
    """
    rate, hp = _rate("damsgrad", learning_rate)
    b1, b2 = _check_beta("b1", b1), _check_beta("b2", b2)
    eps = _check_eps(eps)
    return make(
        "damsgrad",
        _tracked_adaptive(rate, b1, eps, True, b2),
        hp,
        dict(learning_rate=learning_rate, b1=b1, b2=b2, eps=eps),
    )


def dadagrad(learning_rate, *, b1: float = 0.9, eps: float = 1e-6) -> Algorithm:
    """Decentralized AdaGrad, DAdaGrad (Chen, Karimi, Zhao, Li 2021): :func:`damsgrad` with the
    AdaGrad second moment ``V̂_t = ((t−1)/t) V̂_{t−1} + (1/t) G_t²`` (``V̂_0 = eps``, so
    ``V̂_1 = G_1²``), the running mean of squared gradients.

    ``M = b1 M + (1−b1) G_t``; ``X_{t+1} = W X_t − η_t M / sqrt(U_t)``;
    ``Ũ_{t+1} = W Ũ_t − V̂_{t−1} + V̂_t``; ``U_{t+1} = max(Ũ_{t+1}, eps)``; ``Ũ_1 = U_1 = eps``.

    Cost per step: 1 gradient, 1 round, ``2 · 32 d`` bits.

    Example:
      >>> from decsim.algorithms import adaptive
      >>> algo = adaptive.dadagrad(0.001)
    """
    rate, hp = _rate("dadagrad", learning_rate)
    b1 = _check_beta("b1", b1)
    eps = _check_eps(eps)
    return make(
        "dadagrad",
        _tracked_adaptive(rate, b1, eps, False),
        hp,
        dict(learning_rate=learning_rate, b1=b1, eps=eps),
    )


# ---------------------------------------------------------------------------------------------
# Adaptive Choco-SGD: compressed exchange, local AMSGrad direction


class AMSGradMoments(NamedTuple):
    """The local AMSGrad direction's per-worker state (never exchanged)."""

    M: Any  # first moment [n, ...] (0 at start)
    V: Any  # second moment [n, ...] (0 at start)
    V_hat: Any  # running max of V [n, ...] (0 at start)


class AMSGradDirection(NamedTuple):
    """The local step ``U = −η_t M / (sqrt(V̂) + eps)`` of adaptive Choco-SGD, with
    ``M = b1 M + (1−b1) G``, ``V = b2 V + (1−b2) G²``, ``V̂ = max(V̂, V)`` per worker: a local
    step for :func:`decsim.algorithms.choco.compressed_sgd`."""

    rate: Rate
    b1: float
    b2: float
    eps: float

    def init(self, X):
        Z = tree.zeros_like(X)
        return AMSGradMoments(M=Z, V=Z, V_hat=Z)

    def update(self, G, moments, X, t, hparams):
        b1, b2, eps = self.b1, self.b2, self.eps
        M = _map(lambda m, g: b1 * m + (1.0 - b1) * g, moments.M, G)
        V = _map(lambda v, g: b2 * v + (1.0 - b2) * jnp.square(g), moments.V, G)
        V_hat = _map(jnp.maximum, moments.V_hat, V)
        eta = self.rate(hparams, t)
        U = _map(lambda m, vh: -(eta * m / (jnp.sqrt(vh) + eps)), M, V_hat)
        return U, AMSGradMoments(M, V, V_hat)


def ada_choco_sgd(
    learning_rate,
    gamma=1.0,
    compressor=None,
    *,
    b1: float = 0.9,
    b2: float = 0.99,
    eps: float = 1e-6,
) -> Algorithm:
    """Communication-efficient adaptive decentralized SGD: Choco-SGD (paper order) whose local
    step is the AMSGrad direction (in the spirit of Gao & Huang's communication-efficient
    adaptive serverless method).

    Per worker, with moments that start at 0 and are never exchanged::

        M = b1 M + (1−b1) G_t;  V = b2 V + (1−b2) G_t²;  V̂ = max(V̂, V)
        X½ = X_t − η_t M / (sqrt(V̂) + eps)

    then Choco's compressed exchange (:func:`decsim.algorithms.choco.compressed_sgd`)::

        Q_t = C(X½ − X̂_t);  X̂_{t+1} = X̂_t + Q_t;  X_{t+1} = X½ + γ (W − I) X̂_{t+1}

    (``X̂_0 = 0``, C per worker and per leaf). With ``identity()`` and γ = 1 it is AMSGrad on every
    worker followed by one W-averaging, ``X_{t+1} = W X½``. For every compressor the worker
    average moves only by the local steps: ``mean(X_{t+1}) = mean(X½)``.

    Keys: as in ``choco_sgd``, the gradient oracle gets the step key itself and the compressor
    an independent stream derived from it.

    Cost per step: 1 gradient, 1 round, ``bits(Q_t)`` per worker (the compressor's payload).

    Args:
      learning_rate: η (number or optax schedule of the step counter, 0 at the first step).
      gamma: consensus step size γ in (0, 1] (see ``decsim.algorithms.tune_gamma``).
      compressor: a :class:`decsim.Compressor`; ``None`` means ``decsim.compression.identity()``.
      b1, b2: moment weights, in [0, 1).
      eps: added to ``sqrt(V̂)``.

    Example:
      >>> import decsim as ds
      >>> import decsim.compression as C
      >>> from decsim.algorithms import adaptive
      >>> prob = ds.problems.quadratic(4, 5, noise=0.1)
      >>> algo = adaptive.ada_choco_sgd(0.05, gamma=0.5, compressor=C.top_k(0.4))
      >>> hist = ds.run(algo, prob, ds.topology.ring(4), steps=100)
      >>> bool(hist.metrics["loss"][-1] < hist.metrics["loss"][0])
      True
    """
    rate, hp = _rate("ada_choco_sgd", learning_rate)
    hp["gamma"] = check_gamma("ada_choco_sgd", gamma)
    compressor = identity() if compressor is None else compressor
    check_compressor(compressor)
    b1, b2 = _check_beta("b1", b1), _check_beta("b2", b2)
    eps = _check_eps(eps)
    parts = compressed_sgd(AMSGradDirection(rate, b1, b2, eps), compressor, "paper")
    return make(
        "ada_choco_sgd",
        parts,
        hp,
        dict(
            learning_rate=learning_rate, gamma=gamma, compressor=compressor, b1=b1, b2=b2, eps=eps
        ),
    )
