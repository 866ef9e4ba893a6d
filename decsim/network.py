"""A network time model: what each step would take on a cluster, recorded as ``sim_time``.

Curves against bits and rounds do not say which method finishes first on real hardware: a
compressed method may need fewer bits but more steps, and each step pays the latency of its
rounds. :class:`TimeModel` turns every step's :class:`~decsim.StepCost` into simulated seconds
(docs/reference/time-model.md):

* **compute**: worker i spends ``compute · grad_evals · (1 + s_{i,t})`` seconds on its gradients
  in step t, where ``s`` are straggler delays drawn inside the compiled loop from the run's key
  (``"none"``, ``("exponential", mean)``, or ``("lognormal", sigma)``: then
  ``1 + s = exp(sigma z)``, z standard normal, so compute times are lognormal with median
  ``compute``; s may be negative, a worker faster than the median);
* **communication**: each gossip round costs ``latency + deg_max · message_bits / bandwidth``
  when a worker's messages share its link (``nic="shared"``, default) or
  ``latency + message_bits / bandwidth`` with one link per neighbour (``nic="per_link"``), with
  ``message_bits = bits / comm_rounds`` of the step; an all-reduce step (``centralized_sgd``, the
  names in :data:`ALL_REDUCE`) costs ``2 (n − 1) · latency + bits / bandwidth`` (ring
  all-reduce);
* a synchronous step lasts ``max_i compute_i + communication``: everyone waits for the slowest.

``deg_max`` is the largest number of neighbours a worker sends to in one round: the topology's
maximum degree (out-degree on directed graphs); on a time-varying topology the neighbours of one
round (one for ``one_peer_exponential`` and ``random_matching``), read from its round-0 lists.

The model is a pure function of the step's cost, these topology facts and a key, so every
algorithm gets it without a change; other metrics are bitwise the same with or without it (the
straggler key is ``fold_in(fold_in(run_key, TIME_STREAM), t)``, a stream no algorithm uses).

Example:
    >>> import decsim as ds
    >>> tm = ds.network.TimeModel(compute=0.01, latency=1e-3, bandwidth=1e6)
    >>> prob = ds.problems.quadratic(4, 8)
    >>> hist = ds.run(ds.algorithms.dsgd(0.1), prob, ds.topology.ring(4), steps=10,
    ...               eval_every=5, time_model=tm)
    >>> [round(float(s), 6) for s in hist.metrics["sim_time"]]   # 10 (0.01 + 1e-3 + 2*256/1e6)
    [0.0, 0.05756, 0.11512]
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ._checks import closest

__all__ = ["TimeModel", "NICS", "STRAGGLERS", "ALL_REDUCE", "TIME_STREAM", "round_degree",
           "compute_seconds", "step_seconds", "time_args", "from_config", "to_config"]

NICS = ("shared", "per_link")
STRAGGLERS = ("none", "exponential", "lognormal")
ALL_REDUCE = frozenset({"centralized_sgd"})  # algorithms whose round is a ring all-reduce
TIME_STREAM = 2**31 - 3  # fold_in(run_key, TIME_STREAM): the stragglers' stream
_CONFIG_KEYS = ("compute", "latency", "bandwidth", "nic", "stragglers", "flops_per_second")


def _nonnegative(name: str, value, *, allow_inf: bool = False) -> float:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if ok:
        value = float(value)
        ok = value >= 0 and (allow_inf or math.isfinite(value)) and not math.isnan(value)
    if not ok:
        raise ValueError(f"TimeModel: {name} must be a number >= 0 (seconds, bits/s); got "
                         f"{name}={value!r}.")
    return value


def _stragglers(value) -> tuple:
    """``(name, scale)`` from None, a name, a pair or a TOML table."""
    if value is None or value == "none":
        return ("none", 0.0)
    if isinstance(value, dict):
        table = dict(value)
        name = table.pop("name", None)
        scale_key = {"exponential": "mean", "lognormal": "sigma"}.get(name)
        if scale_key is None or set(table) != {scale_key}:
            raise ValueError(
                "TimeModel: stragglers as a table must be {name = \"exponential\", mean = m} or "
                f"{{name = \"lognormal\", sigma = s}}; got {value!r}.")
        value = (name, table[scale_key])
    if not (isinstance(value, (tuple, list)) and len(value) == 2 and isinstance(value[0], str)):
        raise ValueError(
            "TimeModel: stragglers must be None, ('exponential', mean) or ('lognormal', sigma); "
            f"got stragglers={value!r}.")
    name = value[0]
    if name not in STRAGGLERS[1:]:
        raise ValueError(f"TimeModel: unknown straggler distribution {name!r}; choose one of "
                         f"{', '.join(STRAGGLERS)}.{closest(name, STRAGGLERS)}")
    scale = _nonnegative("the straggler " + ("mean" if name == "exponential" else "sigma"),
                         value[1])
    return (name, scale)


@dataclasses.dataclass(frozen=True)
class TimeModel:
    """Simulated seconds per step (see the module docstring); passed to ``ds.run(...,
    time_model=)``, to configs as a ``time_model`` table, and so to sweeps and comparisons.

    Args:
      compute: seconds per gradient evaluation of one worker (``c``); 0 with
        ``flops_per_second`` given means: measured from the gradient's FLOPs.
      latency: seconds per message round (per all-reduce hop).
      bandwidth: bits per second of a worker's link (``inf``: free bandwidth).
      nic: ``"shared"`` (a worker's messages to its neighbours share one link) or
        ``"per_link"`` (one link per neighbour).
      stragglers: ``None``, ``("exponential", mean)`` or ``("lognormal", sigma)`` (a TOML table
        ``{name = "exponential", mean = 0.1}`` works too).
      flops_per_second: a stated device throughput; then ``c`` = the FLOPs of one worker's
        gradient evaluation (XLA's cost analysis of the compiled single-worker gradient on one
        minibatch) / this number.

    Raises:
      ValueError: a negative or non-numeric time, zero bandwidth, an unknown ``nic`` or
        straggler distribution, or both ``compute`` and ``flops_per_second``.
    """

    compute: float = 0.0
    latency: float = 0.0
    bandwidth: float = math.inf
    nic: str = "shared"
    stragglers: Any = None
    flops_per_second: float | None = None

    def __post_init__(self):
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731
        set_("compute", _nonnegative("compute", self.compute))
        set_("latency", _nonnegative("latency", self.latency))
        set_("bandwidth", _nonnegative("bandwidth", self.bandwidth, allow_inf=True))
        if self.bandwidth == 0:
            raise ValueError("TimeModel: bandwidth must be > 0 bits per second (use inf for free "
                             "bandwidth); got bandwidth=0.")
        if self.nic not in NICS:
            raise ValueError(f"TimeModel: nic must be one of {', '.join(NICS)}; got "
                             f"nic={self.nic!r}.{closest(str(self.nic), NICS)}")
        set_("stragglers", _stragglers(self.stragglers))
        if self.flops_per_second is not None:
            fps = _nonnegative("flops_per_second", self.flops_per_second)
            if fps == 0:
                raise ValueError("TimeModel: flops_per_second must be > 0; got 0.")
            if self.compute:
                raise ValueError("TimeModel: give compute= (seconds per gradient) or "
                                 "flops_per_second= (to derive it from the model's FLOPs), not "
                                 "both.")
            set_("flops_per_second", fps)

    @property
    def static(self) -> tuple:
        """The structure a compiled program depends on: ``(nic, straggler distribution)``."""
        return (self.nic, self.stragglers[0])


def round_degree(topology) -> int:
    """The most neighbours a worker sends to in one round of ``topology``."""
    if getattr(topology, "time_varying", False):
        build, args = topology.sparse_builder()
        idx, w = build({k: jnp.asarray(v) for k, v in args.items()}, jnp.asarray(0, jnp.int32))
        return max(0, int(np.asarray(idx).shape[1]) - 1)
    deg = np.asarray(topology.degrees)
    return int(deg.max()) if deg.size else 0


def compute_seconds(model: TimeModel, problem) -> float:
    """``c``: ``model.compute``, or one worker's gradient FLOPs / ``model.flops_per_second``."""
    if model.flops_per_second is None:
        return model.compute
    one = jax.tree.map(lambda a: jnp.asarray(a[0]), problem.params0)
    b = problem.batch_size or int(np.max(problem.counts))
    batch = jax.tree.map(lambda a: jnp.asarray(a[0, :b]), problem.data)
    if problem.stateful:
        state = jax.tree.map(lambda a: jnp.asarray(a[0]), problem.model_state0)
        loss = lambda p: problem.loss_fn(p, state, batch, jax.random.PRNGKey(0))[0]  # noqa: E731
    else:
        loss = lambda p: problem.loss_fn(p, batch)  # noqa: E731
    analysis = jax.jit(jax.grad(loss)).lower(one).compile().cost_analysis()
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0] if analysis else {}
    flops = float((analysis or {}).get("flops", 0.0))
    if not flops > 0:
        raise ValueError("TimeModel: XLA reported no FLOPs for this problem's gradient; give "
                         "compute= (seconds per gradient evaluation) instead of "
                         "flops_per_second=.")
    return flops / model.flops_per_second


def time_args(model: TimeModel, problem, topology, algorithm) -> dict:
    """The numbers :func:`step_seconds` reads (program arguments, float32)."""
    all_reduce = getattr(algorithm, "name", None) in ALL_REDUCE
    deg = 1 if all_reduce else round_degree(topology)
    if model.nic == "per_link":
        deg = 1
    n = problem.n_workers
    return {
        "compute": np.float32(compute_seconds(model, problem)),
        "latency": np.float32(model.latency * (2 * (n - 1) if all_reduce else 1)),
        "bits_seconds": np.float32(deg / model.bandwidth),
        "scale": np.float32(model.stragglers[1]),
    }


def step_seconds(static: tuple, targs: dict, cost, key, n: int):
    """Simulated seconds of one synchronous step with cost ``cost`` (traced)."""
    _, dist = static
    if dist == "exponential":
        slow = targs["scale"] * jnp.max(jax.random.exponential(key, (n,), jnp.float32))
    elif dist == "lognormal":  # 1 + s = exp(σ z): compute times lognormal with median c
        slow = jnp.max(jnp.exp(targs["scale"] * jax.random.normal(key, (n,), jnp.float32))) - 1.0
    else:
        slow = jnp.float32(0.0)
    compute = targs["compute"] * cost.grad_evals * (1.0 + slow)
    comm = targs["latency"] * cost.comm_rounds + targs["bits_seconds"] * cost.bits
    return compute + comm


def from_config(table) -> TimeModel | None:
    """A :class:`TimeModel` from a config's ``time_model`` table (``None`` stays ``None``)."""
    if table is None or isinstance(table, TimeModel):
        return table
    if not isinstance(table, dict):
        raise ValueError(f"config key 'time_model' must be a table such as {{compute = 0.01, "
                         f"latency = 1e-4, bandwidth = 1e9}}; got {table!r}.")
    unknown = sorted(set(table) - set(_CONFIG_KEYS))
    if unknown:
        raise ValueError(f"unknown time_model key {unknown[0]!r}; valid keys: "
                         f"{', '.join(_CONFIG_KEYS)}.{closest(unknown[0], _CONFIG_KEYS)}")
    return TimeModel(**table)


def to_config(model: TimeModel) -> dict:
    """The canonical ``time_model`` table of ``model`` (TOML-safe: no inf, no tuples)."""
    name, scale = model.stragglers
    out = {"compute": model.compute, "latency": model.latency, "nic": model.nic}
    if math.isfinite(model.bandwidth):
        out["bandwidth"] = model.bandwidth
    if name != "none":
        out["stragglers"] = {"name": name, ("mean" if name == "exponential" else "sigma"): scale}
    if model.flops_per_second is not None:
        out["flops_per_second"] = model.flops_per_second
    return out
