"""Runs described by plain configs (dicts or TOML tables), turned into objects by :func:`build`.

A run config names everything a run needs; every name is looked up in a registry that other
modules own, so an algorithm, compressor, topology or problem added there is available here
without any change to this module:

===============  ==========================================================================
key              meaning
===============  ==========================================================================
``algorithm``    ``{name = "dsgd", learning_rate = 0.1, ...}`` (or just ``"dsgd"``): a factory in
                 ``decsim.algorithms.REGISTRY`` and its arguments.
``problem``      ``{name = "logistic_regression", dataset = "digits", ...}``: a constructor in
                 ``decsim.problems`` whose first argument is ``n_workers``.
``topology``     ``{name = "ring", weights = "uniform"}`` (or ``"ring"``): a generator in
                 ``decsim.topology.GENERATORS``; ``torus``/``grid`` use the most square
                 ``rows x cols = n_workers`` unless ``rows``/``cols`` are given.
``n_workers``    number of workers n (the problem's and the topology's size).
``steps``        algorithm steps.
``eval_every``   steps between evaluations (optional; default: about 50 evaluations).
``seed``         the run's seed (default 0), or ``seeds = [0, 1, 2]`` for one vmapped program.
``time_model``   optional table of :class:`decsim.network.TimeModel` arguments, e.g.
                 ``{compute = 0.01, latency = 1e-4, bandwidth = 1e9, stragglers = {name =
                 "exponential", mean = 0.1}}``: the metrics gain ``sim_time``.
===============  ==========================================================================

Argument values are TOML values (numbers, strings, booleans, arrays) or one of three kinds of
table:

- ``compressor = {name = "top_k", fraction = 0.01}`` (also the short form ``"top_k(0.01)"``):
  a factory in ``decsim.compression.REGISTRY``;
- ``learning_rate = {schedule = "inverse_time", init_value = 0.5, decay_steps = 100}``: a step
  size schedule, either decsim's ``inverse_time`` (``init_value / (1 + t / decay_steps)``) or any
  schedule of ``optax.schedules`` (``exponential_decay``, ``cosine_decay_schedule``, ...);
- ``local_optimizer = {optax = "sgd", learning_rate = 0.1, momentum = 0.9}``: any optax
  function (its arguments may themselves be schedule tables).

Everything is checked before anything is compiled: an unknown name or argument raises a
``ValueError`` that lists the valid ones and the closest match. :func:`canonical` also fills in
the defaults of every factory (where they are plain values), so two spellings of the same run
have the same canonical form and the same :func:`config_hash`: the key of the sweep result store.

Example:
    >>> import decsim as ds
    >>> cfg = {"algorithm": {"name": "dsgd", "learning_rate": 0.1},
    ...        "problem": {"name": "quadratic", "dim": 5, "noise": 0.1},
    ...        "topology": "ring", "n_workers": 4, "steps": 100, "eval_every": 10, "seeds": [0, 1]}
    >>> run = ds.config.build(cfg)
    >>> run.topology.name, run.seeds
    ('ring(4)', [0, 1])
    >>> hist = run.run()
    >>> hist.metrics["loss"].shape
    (2, 11)
    >>> ds.config.build(dict(cfg, algorithm={"name": "dsdg"}))
    Traceback (most recent call last):
    ...
    ValueError: config key 'algorithm': unknown algorithm 'dsdg'; valid names: ... Did you mean...?
"""

from __future__ import annotations

import copy
import hashlib
import json
import numbers
from typing import Any, NamedTuple

from . import network
from ._canonical import arguments, as_table, canonical_call, check_int, unknown_name
from ._checks import closest
from ._registries import (
    algorithms,
    compressors,
    inverse_time,
    problems,
    schedules,
    topologies,
    topology_modifiers,
)
from ._run_checks import check_graph_kind
from ._values import build_value

TOP_LEVEL = (
    "algorithm",
    "problem",
    "topology",
    "n_workers",
    "steps",
    "eval_every",
    "seed",
    "seeds",
    "time_model",
)
_REQUIRED = ("algorithm", "problem", "topology", "n_workers", "steps")
_SIZE_ARGS = ("n", "rows", "cols")  # topology generator arguments that n_workers determines


# ---------------------------------------------------------------------------------------------
# canonical form


def canonical(cfg: dict) -> dict:
    """The checked, canonical form of a run config (a new dict; the input is not changed).

    Short forms are expanded (``"ring"`` -> ``{"name": "ring"}``, ``"top_k(0.01)"`` -> a table),
    every name and argument is checked against its registry and signature, and the plain default
    values of every factory are filled in. Raises ``ValueError`` on anything unknown or missing.
    """
    _check_keys(cfg)
    n = check_int("n_workers", cfg["n_workers"], 1)
    steps, eval_every = _steps(cfg)
    out: dict = {
        "algorithm": _canonical_algorithm(cfg["algorithm"]),
        "problem": _canonical_problem(cfg["problem"]),
        "topology": _canonical_topology(cfg["topology"], n),
        "n_workers": n,
        "steps": steps,
        "eval_every": eval_every,
    }
    out.update(_seeds(cfg))
    if cfg.get("time_model") is not None:  # absent: the run's id is what it was without one
        out["time_model"] = network.to_config(network.from_config(cfg["time_model"]))
    return out


def _check_keys(cfg) -> None:
    """A dict with only known top-level keys and all the required ones."""
    if not isinstance(cfg, dict):
        raise ValueError(f"a run config must be a dict (TOML table); got {type(cfg).__name__}.")
    unknown = set(cfg) - set(TOP_LEVEL)
    if unknown:
        name = sorted(unknown)[0]
        raise ValueError(
            f"unknown config key {name!r}; valid keys: {', '.join(TOP_LEVEL)}."
            f"{closest(name, TOP_LEVEL)}"
        )
    missing = [k for k in _REQUIRED if k not in cfg]
    if missing:
        raise ValueError(
            f"the run config lacks {', '.join(repr(k) for k in missing)}; a run needs "
            f"{', '.join(_REQUIRED)} (and optionally eval_every, seed or seeds)."
        )


def _steps(cfg: dict) -> tuple:
    """``(steps, eval_every)``, checked (eval_every divides steps; it may be None)."""
    steps = check_int("steps", cfg["steps"], 0)
    eval_every = cfg.get("eval_every")
    if eval_every is not None:
        eval_every = check_int("eval_every", eval_every, 1)
        if steps % eval_every:
            lo = steps // eval_every * eval_every
            raise ValueError(
                f"config: steps={steps} is not a multiple of eval_every={eval_every}; use "
                f"steps={lo if lo else eval_every} or {lo + eval_every}, or an eval_every "
                f"that divides {steps}."
            )
    return steps, eval_every


def _canonical_algorithm(value) -> dict:
    table = as_table(value, "algorithm")
    registry = algorithms()
    if table["name"] not in registry:
        raise unknown_name("algorithm", "algorithm", table["name"], registry)
    factory = registry[table["name"]]
    algo = canonical_call(table, factory, f"algorithm {table['name']}", "algorithm")
    for k in _algorithm_of(algo).hparams:  # 1 and 1.0 are the same learning rate (and hash)
        if isinstance(algo.get(k), numbers.Integral) and not isinstance(algo[k], bool):
            algo[k] = float(algo[k])
    return algo


def _canonical_problem(value) -> dict:
    table = as_table(value, "problem")
    registry = problems()
    if table["name"] not in registry:
        raise unknown_name("problem", "problem", table["name"], registry)
    if "n_workers" in table:
        raise ValueError(
            "config key 'problem': give n_workers at the top level of the config "
            "(it sizes both the problem and the topology), not in the problem table."
        )
    fn = registry[table["name"]]
    return canonical_call(
        table, fn, f"problem {table['name']}", "problem", skip=("n_workers",)
    )


def _canonical_topology(value, n: int) -> dict:
    table = as_table(value, "topology")
    registry = topologies()
    if table["name"] not in registry:
        raise unknown_name("topology", "topology", table["name"], registry)
    if "n" in table:
        raise ValueError(
            "config key 'topology': give n_workers at the top level of the config, "
            "not n in the topology table."
        )
    gen = registry[table["name"]]
    params = arguments(gen)
    modifiers = topology_modifiers()
    sized = {k: table[k] for k in ("rows", "cols") if k in table}
    if sized and set(sized) != {"rows", "cols"} & set(params):
        raise ValueError(
            f"config key 'topology': give both rows and cols (rows * cols = n_workers) or "
            f"neither; got {sorted(sized)}."
        )
    rest = {k: v for k, v in table.items() if k not in ("rows", "cols") and k not in modifiers}
    try:
        owner = f"topology {table['name']}"
        topo = canonical_call(rest, gen, owner, "topology", skip=_SIZE_ARGS)
    except ValueError as err:
        if modifiers and "unknown argument" in str(err):
            raise ValueError(
                f"{err} (a topology table also takes {', '.join(sorted(modifiers))} = {{...}})."
            ) from None
        raise
    if sized:
        topo.update(_shape(sized, n))
    for key in sorted(set(table) & set(modifiers)):
        topo[key] = _canonical_modifier(key, table[key], modifiers[key])
    return topo


def _shape(sized: dict, n: int) -> dict:
    """``{rows, cols}`` of a topology table, checked against ``n_workers``."""
    rows = check_int("topology.rows", sized["rows"], 1)
    cols = check_int("topology.cols", sized["cols"], 1)
    if rows * cols != n:
        raise ValueError(
            f"config key 'topology': rows * cols = {rows * cols} but "
            f"n_workers = {n}; make them agree."
        )
    return {"rows": rows, "cols": cols}


def _canonical_modifier(key: str, value, wrapper: str) -> dict:
    """The arguments of the time-varying wrapper ``topology.<wrapper>`` (topology table key)."""
    if not isinstance(value, dict):
        raise ValueError(
            f"config key 'topology.{key}' must be a table of the arguments of "
            f"topology.{wrapper}; got {value!r}."
        )
    from . import topology as T

    body = canonical_call(
        {"name": key, **value},
        getattr(T, wrapper),
        f"topology.{wrapper}",
        f"topology.{key}",
        skip=("topology",),
    )
    body.pop("name")
    return body


def _seeds(cfg: dict) -> dict:
    """``{"seeds": [...]}`` or ``{"seed": s}`` (default 0)."""
    if "seed" in cfg and "seeds" in cfg:
        raise ValueError(
            "config: give either seed (one run) or seeds (several, one vmapped program), not both."
        )
    if "seeds" in cfg:
        seeds = cfg["seeds"]
        if not isinstance(seeds, (list, tuple)) or not seeds:
            raise ValueError(
                f"config key 'seeds' must be a nonempty list of integers; got {seeds!r}."
            )
        return {"seeds": [check_int("seeds", s, 0) for s in seeds]}
    return {"seed": check_int("seed", cfg.get("seed", 0), 0)}


def config_hash(cfg: dict) -> str:
    """A short, stable hash of a run config (of its canonical form): the result-store key."""
    text = json.dumps(canonical(cfg), sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# building objects


def _algorithm_of(table: dict):
    """The Algorithm of a checked algorithm table ``{name, **args}``."""
    table = dict(table)
    fn = algorithms()[table.pop("name")]
    return fn(**{k: build_value(v) for k, v in table.items()})


def build_algorithm(cfg: dict):
    """The Algorithm of a (canonical or raw) run config."""
    return _algorithm_of(canonical(cfg)["algorithm"])


def build_problem(cfg: dict):
    """The Problem of a (canonical or raw) run config."""
    c = canonical(cfg)
    table = dict(c["problem"])
    fn = problems()[table.pop("name")]
    return fn(c["n_workers"], **{k: build_value(v) for k, v in table.items()})


def build_topology(cfg: dict):
    """The Topology of a (canonical or raw) run config."""
    from . import topology as T

    c = canonical(cfg)
    table = dict(c["topology"])
    name = table.pop("name")
    gen = topologies()[name]
    params = arguments(gen)
    n = c["n_workers"]
    modifiers = topology_modifiers()
    kwargs = {
        k: build_value(v)
        for k, v in table.items()
        if k not in ("rows", "cols") and k not in modifiers
    }
    if "n" in params:
        topo = gen(n, **kwargs)
    elif "rows" in params:
        rows, cols = (table["rows"], table["cols"]) if "rows" in table else T.torus_shape(n)
        topo = gen(rows, cols, **kwargs)
    else:
        topo = gen(**kwargs)
    for key in sorted(set(table) & set(modifiers)):
        topo = getattr(T, modifiers[key])(
            topo, **{k: build_value(v) for k, v in table[key].items()}
        )
    if topo.n != n:
        raise ValueError(
            f"config key 'topology': {topo.name} has {topo.n} workers but n_workers = {n}; "
            f"set n_workers = {topo.n}."
        )
    return topo


class Built(NamedTuple):
    """The objects of one run config (from :func:`build`).

    Attributes:
      algorithm, problem, topology: the decsim objects.
      steps, eval_every: as in :func:`decsim.run` (``eval_every`` may be ``None``).
      seed: the seed (when the config has ``seed``), else ``None``.
      seeds: the seeds (when the config has ``seeds``), else ``None``.
      config: the canonical config.
    """

    algorithm: Any
    problem: Any
    topology: Any
    steps: int
    eval_every: int | None
    seed: int | None
    seeds: list | None
    config: dict
    time_model: Any = None

    def run(self, *, progress: bool | None = None):
        """``decsim.run`` on these objects; returns the History."""
        from .runner import run

        seeds = {"seeds": self.seeds} if self.seeds is not None else {"seed": self.seed}
        return run(
            self.algorithm,
            self.problem,
            self.topology,
            self.steps,
            eval_every=self.eval_every,
            **seeds,
            progress=progress,
            time_model=self.time_model,
        )


def build(cfg: dict) -> Built:
    """Check a run config and build its algorithm, problem and topology (nothing is compiled).

    Args:
      cfg: a run config (see the module docstring), e.g. a table read from TOML.

    Returns:
      A :class:`Built` with the objects, steps, eval_every, seed(s) and the canonical config.

    Raises:
      ValueError: an unknown name or argument (with the valid ones and the closest match), a
        missing key, a bad value, or a topology the algorithm rejects (e.g. D² on a graph with
        λ_min(W) <= −1/3).
    """
    c = canonical(cfg)
    algorithm, problem, topology = build_algorithm(c), build_problem(c), build_topology(c)
    check_graph_kind(algorithm, topology)
    validate = getattr(algorithm, "validate", None)
    if validate is not None:
        validate(topology)
    return Built(
        algorithm=algorithm,
        problem=problem,
        topology=topology,
        steps=c["steps"],
        eval_every=c["eval_every"],
        seed=c.get("seed"),
        seeds=c.get("seeds"),
        config=c,
        time_model=network.from_config(c.get("time_model")),
    )


def load(path) -> dict:
    """Read a TOML file (standard ``tomllib``) into a plain dict."""
    import tomllib

    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ValueError(f"no such file: {path!r}; give the path of a TOML file.") from None
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"{path}: not valid TOML: {err}") from None


def set_path(cfg: dict, path: str, value) -> dict:
    """A copy of ``cfg`` with the dotted ``path`` (e.g. ``"algorithm.learning_rate"``) set to
    ``value``; a short form such as ``algorithm = "dsgd"`` is first expanded to a table."""
    out = copy.deepcopy(cfg)
    keys = path.split(".")
    node = out
    for i, k in enumerate(keys[:-1]):
        where = ".".join(keys[: i + 1])
        if isinstance(node.get(k), str):
            node[k] = {"name": node[k]}
        node = node.setdefault(k, {})
        if not isinstance(node, dict):
            raise ValueError(
                f"config key {where!r} is a {type(node).__name__}, not a table, so "
                f"{path!r} cannot be set."
            )
    node[keys[-1]] = copy.deepcopy(value)
    return out


__all__ = [
    "Built",
    "build",
    "build_algorithm",
    "build_problem",
    "build_topology",
    "canonical",
    "config_hash",
    "load",
    "set_path",
    "inverse_time",
    "algorithms",
    "compressors",
    "topologies",
    "problems",
    "schedules",
    "TOP_LEVEL",
]
