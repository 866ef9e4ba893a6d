"""Machinery shared by the algorithm factories: memoized structure, learning rates as data, local
updates, costs.

A factory (e.g. :func:`decsim.algorithms.dsgd`) does three things, all on the host with concrete
values: it validates its arguments with :mod:`decsim._checks`; it gets its pure functions from a
:func:`structural` builder, memoized on the structural arguments only (so ``dsgd(0.1)`` and
``dsgd(0.05)`` share the very same ``step``, and so one compiled program); and it returns an
:class:`decsim.Algorithm` whose ``hparams`` hold the numbers (learning rate, gamma, ...), which
the runner passes into the compiled program as data.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from .. import tree
from .._checks import check_hparam, is_number, learning_rate_value
from .._types import Algorithm, StepCost
from ..compression import FLOAT_BITS

__all__ = ["FLOAT_BITS", "structural", "hparam_checker", "make", "Rate", "learning_rate",
           "LocalUpdate", "local_update", "stacked_params", "dense_bits", "cost", "LocalState",
           "local_init"]


def structural(builder: Callable) -> Callable:
    """Memoize a factory's structural builder on its (hashable) arguments.

    Equal structure then gives the very same functions, which is what the runner's program cache
    keys on. Unhashable arguments (rare: a custom object without ``__hash__``) build afresh.
    """
    cached = functools.lru_cache(maxsize=512)(builder)

    @functools.wraps(builder)
    def get(*args):
        try:
            return cached(*args)
        except TypeError as err:
            if "unhashable" not in str(err):
                raise
            return builder(*args)

    get.cache_clear = cached.cache_clear
    return get


def hparam_checker(owner: str) -> Callable:
    """``check(hparams)``: each value through :func:`decsim._checks.check_hparam` (by name), with
    the owner's name in the message. The factory checks its own numbers with it, and the runner
    every per-run value, so both go through one check."""

    def check(hparams: dict) -> None:
        for name, value in hparams.items():
            try:
                check_hparam(name, value)
            except ValueError as err:
                raise ValueError(f"{owner}: {err}") from None

    return check


def make(name: str, parts: tuple, hparams: dict, args: dict, **extra) -> Algorithm:
    """The :class:`Algorithm` of a factory: ``parts = (init, step, params)``; ``hparams`` are
    checked here (plain Python values)."""
    hparams = {k: float(v) for k, v in hparams.items()}
    check = hparam_checker(name)
    check(hparams)
    init, step, params = parts
    return Algorithm(init=init, step=step, params=params, hparams=hparams, name=name, args=args,
                     check_hparams=check, **extra)


class Rate(NamedTuple):
    """A learning rate ``η_t = hparams["learning_rate"] · schedule(t)``.

    The number ``hparams["learning_rate"]`` is data (traced, swept without recompiling); the
    optional optax ``schedule`` of the int32 step counter is structure. Without a schedule
    ``η_t = hparams["learning_rate"]``; with one, ``hparams["learning_rate"]`` is a multiplier of
    it (1.0 as built, which leaves the schedule's values unchanged bit for bit).
    """

    schedule: Callable | None = None

    def __call__(self, hparams: dict, t):
        lr = hparams["learning_rate"]
        return lr if self.schedule is None else lr * self.schedule(t)


def learning_rate(owner: str, value, *, allow_none: bool = False):
    """Validate a learning rate argument: ``(Rate, hparams)``, ``hparams`` always
    ``{"learning_rate": number}``.

    A number ``η`` gives ``{"learning_rate": η}``; a callable is an optax schedule (structural)
    and gives the multiplier ``{"learning_rate": 1.0}``; ``None`` (only with ``allow_none``: a
    local optimizer supplies the step's size) gives the multiplier 1.0 too.
    """
    if value is None and allow_none:
        return Rate(), {"learning_rate": 1.0}
    if callable(value):
        return Rate(value), {"learning_rate": 1.0}
    if not is_number(value):
        raise ValueError(f"{owner}: learning_rate must be a positive number or an optax schedule "
                         f"(callable step -> value); got {value!r} of type "
                         f"{type(value).__name__}.")
    return Rate(), {"learning_rate": learning_rate_value("learning_rate", value)}


class LocalUpdate(NamedTuple):
    """The local step ``U_t`` that a worker adds to its iterate: ``U_t = η_t · D_t``, with
    ``η_t`` the :class:`Rate` and the direction ``D_t = −V`` by default, or the update of an optax
    transformation (run independently on every worker) fed with ``V``.

    ``V`` is the vector the algorithm steps along: the stochastic gradient for D-SGD and Choco,
    the tracker for gradient tracking and DeTAG. Build the optax transform with learning rate 1
    (``optax.sgd(1.0, momentum=0.9)``) and let ``learning_rate`` (traced) scale it; for optax
    transforms that end in ``scale_by_learning_rate`` (sgd, momentum, nesterov, adam, adamw, ...)
    that is bit for bit the transform built with that learning rate. A transform built with its
    own learning rate and no ``learning_rate`` (multiplier 1.0) is unchanged.

    ``init(X) -> opt_state``; ``update(V, opt_state, X, t, hparams) -> (U, opt_state)``.
    """

    rate: Rate = Rate()
    optimizer: Any = None

    def init(self, X):
        if self.optimizer is None:
            return ()
        return jax.vmap(self.optimizer.init)(X)

    def update(self, V, opt_state, X, t, hparams):
        lr = self.rate(hparams, t)
        if self.optimizer is None:
            return jax.tree.map(lambda g: -jnp.asarray(lr).astype(g.dtype) * g, V), opt_state
        D, opt_state = jax.vmap(self.optimizer.update)(V, opt_state, X)
        return jax.tree.map(lambda d: jnp.asarray(lr).astype(d.dtype) * d, D), opt_state


def local_update(owner: str, learning_rate_value, local_optimizer):
    """Validate ``learning_rate`` and ``local_optimizer``: ``(LocalUpdate, hparams)``.

    Without an optimizer, ``learning_rate`` (a number or an optax schedule) is required. With
    one, ``learning_rate`` is optional: a number or a schedule multiplies the optimizer's update
    (build the optimizer with learning rate 1.0), ``None`` means 1.0. Either way ``hparams`` is
    ``{"learning_rate": number}``, so ``ds.run(..., hparams={"learning_rate": [...]})`` sweeps
    it in one compiled program.
    """
    if local_optimizer is None:
        rate, hp = learning_rate(owner, learning_rate_value)
        return LocalUpdate(rate, None), hp
    if not (hasattr(local_optimizer, "init") and hasattr(local_optimizer, "update")):
        raise ValueError(
            f"{owner}: local_optimizer must be an optax GradientTransformation (e.g. "
            f"optax.sgd(1.0, momentum=0.9) with learning_rate=0.1); got "
            f"{type(local_optimizer).__name__}."
        )
    _probe_descent(owner, local_optimizer)
    rate, hp = learning_rate(owner, learning_rate_value, allow_none=True)
    return LocalUpdate(rate, local_optimizer), hp


def _probe_descent(owner: str, optimizer) -> None:
    """One update of the optax transformation on a tiny problem (params 0, gradient 1), on the
    host: it must run and must not point uphill. This catches a negative learning rate (gradient
    ascent) or a hyperparameter of the wrong type before anything compiles."""
    import numpy as np

    x = jnp.zeros((2,), jnp.float32)
    g = jnp.ones((2,), jnp.float32)
    try:
        with jax.numpy_dtype_promotion("standard"):  # the user's promotion setting is not ours
            update, _ = optimizer.update(g, optimizer.init(x), x)
        step = np.asarray(update, np.float64)
    except Exception as err:  # noqa: BLE001 - any failure of the transform is reported alike
        first = str(err).splitlines()[0].rstrip(".") if str(err) else ""
        raise ValueError(
            f"{owner}: local_optimizer fails on a test update: "
            f"{type(err).__name__}: {first}. Check its hyperparameters (numbers or "
            "optax schedules)."
        ) from None
    if not np.all(np.isfinite(step)) or float(np.sum(step * np.asarray(g))) > 0:
        raise ValueError(
            f"{owner}: local_optimizer's update points along the gradient (gradient "
            f"ascent: {step.tolist()} for gradient [1, 1]); is its learning rate "
            "negative? Use a positive learning rate."
        )


class LocalState(NamedTuple):
    """State of the single-sequence methods (centralized SGD, D-SGD, D-PSGD)."""

    X: Any  # stacked params [n, ...]
    opt: Any  # per-worker optax state (leaves [n, ...]) or ()
    t: Any  # int32 step counter


def local_init(local: LocalUpdate) -> Callable:
    """``init(X, key) -> LocalState`` for a local update."""

    def init(X, key):
        del key
        return LocalState(X=X, opt=local.init(X), t=jnp.zeros((), jnp.int32))

    return init


def stacked_params(state):
    """``state.X``: the params of every algorithm whose iterate is called X."""
    return state.X


def dense_bits(X, copies: int = 1):
    """Payload of ``copies`` dense float32 vectors of the per-worker size of X."""
    return float(FLOAT_BITS * copies * tree.size(X))


def cost(grad_evals, comm_rounds, bits) -> StepCost:
    f32 = jnp.float32
    return StepCost(
        jnp.asarray(grad_evals, f32), jnp.asarray(comm_rounds, f32), jnp.asarray(bits, f32)
    )
