"""Machinery shared by the algorithm factories.

Every public factory is wrapped by :func:`factory`, which validates nothing itself but records what
the factory was called with: its numeric hyperparameters (``hparams``, which may later be replaced
by traced arrays through ``rebuild``) and a hashable ``structure`` key of everything else. The
runner compiles one program per structure, so ``dsgd(0.1)`` and ``dsgd(0.05)`` share it.
"""

from __future__ import annotations

import functools
import inspect
import numbers
from typing import Callable

import jax
import jax.numpy as jnp

from .. import tree
from .._types import Algorithm, StepCost

FLOAT_BITS = 32


def is_number(x) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def freeze(value):
    """A hashable stand-in for a factory argument (identity for functions and opaque objects)."""
    if isinstance(value, (str, bytes, int, float, bool, type(None))):
        return value
    if isinstance(value, tuple):  # includes NamedTuples (compressors, optax transforms)
        return (type(value).__name__,) + tuple(freeze(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, freeze(v)) for k, v in value.items()))
    try:
        hash(value)
        return value
    except TypeError:
        return ("id", id(value))


def factory(*, numeric: tuple = ()):
    """Decorate an algorithm factory.

    Args:
      numeric: names of arguments that are numeric hyperparameters (learning rate, gamma, ...).
        When such an argument is a plain number it goes into ``hparams`` and can be swapped for an
        array (a tracer) with ``rebuild`` without recompiling; a callable (an optax schedule) is
        structural instead.
    """

    def wrap(fn: Callable) -> Callable:
        sig = inspect.signature(fn)

        @functools.wraps(fn)
        def public(*args, **kwargs):
            bound = sig.bind(*args, **kwargs)
            bound.apply_defaults()
            config = dict(bound.arguments)
            algo = fn(**config)
            hparams = {k: config[k] for k in numeric if is_number(config.get(k))}
            structure = (fn.__module__, fn.__name__) + tuple(
                (k, "<numeric>" if k in hparams else freeze(v)) for k, v in config.items())

            def rebuild(new_hparams: dict) -> Algorithm:
                unknown = set(new_hparams) - set(hparams)
                if unknown:
                    raise ValueError(f"{fn.__name__}: cannot rebuild with {sorted(unknown)}; its "
                                     f"numeric hyperparameters are {sorted(hparams)}.")
                # the factory body validates only plain numbers, so tracers pass through
                return fn(**{**config, **new_hparams})._replace(
                    name=fn.__name__, config=config, rebuild=rebuild, hparams=hparams,
                    structure=structure)

            return algo._replace(name=fn.__name__, config=config, rebuild=rebuild, hparams=hparams,
                                 structure=structure)

        public.numeric = tuple(numeric)
        return public

    return wrap


# ---------------------------------------------------------------------------------------------
# argument checks (only on concrete Python values; tracers pass)


def check_positive(name: str, value, *, allow_callable: bool = False, allow_none: bool = False):
    if value is None and allow_none:
        return
    if allow_callable and callable(value):
        return
    if is_number(value):
        if not value > 0:
            raise ValueError(f"{name} must be positive; got {name}={value!r}.")
        return
    if isinstance(value, jax.Array) or hasattr(value, "__jax_array__"):
        return  # traced or array-valued hyperparameter (sweeps)
    kinds = "a positive number" + (" or an optax schedule (callable step -> value)" if allow_callable else "")
    raise ValueError(f"{name} must be {kinds}; got {value!r} of type {type(value).__name__}.")


def check_unit_interval(name: str, value, *, closed_low: bool = False):
    if is_number(value):
        ok = (0.0 <= value <= 1.0) if closed_low else (0.0 < value <= 1.0)
        if not ok:
            rng = "[0, 1]" if closed_low else "(0, 1]"
            raise ValueError(f"{name} must be in {rng}; got {name}={value!r}.")


def check_int(name: str, value, minimum: int = 1):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {name}={value!r}.")


def schedule(value) -> Callable:
    """A float, array or optax schedule as a function of the int32 step counter."""
    if callable(value):
        return value
    return lambda t: value


# ---------------------------------------------------------------------------------------------
# local updates: −η_t G, or any optax GradientTransformation run independently per worker


class LocalUpdate:
    """``init(X) -> opt_state``; ``update(G, opt_state, X, t) -> (U, opt_state)`` with ``U`` the
    step to add to X (``−η_t G`` by default)."""

    def __init__(self, learning_rate, local_optimizer, owner: str):
        if local_optimizer is None:
            check_positive("learning_rate", learning_rate, allow_callable=True)
        else:
            if learning_rate is not None:
                raise ValueError(f"{owner}: give either learning_rate or local_optimizer, not both "
                                 f"(got learning_rate={learning_rate!r}); the optax transform's own "
                                 "learning rate replaces -learning_rate * G.")
            if not (hasattr(local_optimizer, "init") and hasattr(local_optimizer, "update")):
                raise ValueError(f"{owner}: local_optimizer must be an optax GradientTransformation; "
                                 f"got {type(local_optimizer).__name__}.")
        self.lr = None if local_optimizer is not None else schedule(learning_rate)
        self.opt = local_optimizer

    def init(self, X):
        if self.opt is None:
            return ()
        return jax.vmap(self.opt.init)(X)

    def update(self, G, opt_state, X, t):
        if self.opt is None:
            lr = self.lr(t)
            return jax.tree.map(lambda g: -lr * g, G), opt_state
        return jax.vmap(self.opt.update)(G, opt_state, X)


def dense_bits(X, copies: int = 1):
    """Payload of ``copies`` dense float32 vectors of the per-worker size of X."""
    return float(FLOAT_BITS * copies * tree.size(X))


def cost(grad_evals, comm_rounds, bits) -> StepCost:
    f32 = jnp.float32
    return StepCost(jnp.asarray(grad_evals, f32), jnp.asarray(comm_rounds, f32), jnp.asarray(bits, f32))
