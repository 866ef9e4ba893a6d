"""Which names a run config can use: the registries of algorithms, compressors, topologies,
topology modifiers, problems and step size schedules.

Every registry is looked up at call time in the module that owns it, so rows added there (or by a
user, e.g. ``decsim.algorithms.REGISTRY["mine"] = ...``) appear here without any change.
"""

from __future__ import annotations

import inspect

__all__ = [
    "algorithms",
    "compressors",
    "topologies",
    "topology_modifiers",
    "problems",
    "schedules",
    "inverse_time",
]


def algorithms() -> dict:
    """name -> factory: ``decsim.algorithms.REGISTRY``."""
    from . import algorithms as A

    return dict(A.REGISTRY)


def compressors() -> dict:
    """name -> factory: ``decsim.compression.REGISTRY``."""
    from . import compression as C

    return dict(C.REGISTRY)


def topologies() -> dict:
    """name -> generator: ``decsim.topology.REGISTRY`` (the static generators and the
    time-varying ones that take a size, such as ``one_peer_exponential``)."""
    from . import topology as T

    return {k: v for k, v in T.REGISTRY.items() if k not in topology_modifiers().values()}


def topology_modifiers() -> dict:
    """topology-table key -> wrapper: each ``with_<key>(topology, ...)`` of
    ``decsim.topology.TIME_VARYING``, e.g. ``link_failures = {p_drop = 0.1, seed = 0}``."""
    from . import topology as T

    out = {}
    for name in getattr(T, "TIME_VARYING", ()):
        fn = getattr(T, name, None)
        params = list(inspect.signature(fn).parameters) if callable(fn) else []
        if name.startswith("with_") and params and params[0] == "topology":
            out[name[len("with_") :]] = name
    return out


def problems() -> dict:
    """name -> constructor: ``decsim.problems.REGISTRY`` (the constructors whose first argument
    is ``n_workers``: quadratic, logistic_regression, mlp, consensus, ...)."""
    from . import problems as P

    return dict(P.REGISTRY)


def schedules() -> dict:
    """name -> schedule factory: decsim's ``inverse_time`` and every schedule in
    ``optax.schedules``."""
    import optax

    out = {"inverse_time": inverse_time}
    for name in dir(optax.schedules):
        fn = getattr(optax.schedules, name)
        if not name.startswith("_") and inspect.isfunction(fn) and name != "inject_hyperparams":
            out[name] = fn
    return out


def inverse_time(init_value: float, decay_steps: float):
    """The step size ``init_value / (1 + t / decay_steps)`` as a function of the step t.

    With ``init_value = c / t0`` and ``decay_steps = t0`` this is ``c / (t + t0)``, the step that
    gives SGD its ``O(1/(n t))`` rate on strongly convex problems when ``2 c μ > 1``.
    """
    init_value, decay_steps = float(init_value), float(decay_steps)
    if not init_value > 0 or not decay_steps > 0:
        raise ValueError(
            f"inverse_time needs init_value > 0 and decay_steps > 0; got "
            f"init_value={init_value!r}, decay_steps={decay_steps!r}."
        )

    def schedule(t):
        import jax.numpy as jnp

        return init_value / (1.0 + jnp.asarray(t, jnp.float32) / decay_steps)

    schedule.__name__ = f"{init_value:g}/(1+t/{decay_steps:g})"
    return schedule
