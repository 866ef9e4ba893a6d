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

import ast
import copy
import functools
import hashlib
import inspect
import json
import numbers
import re
from typing import Any, NamedTuple

from . import _checks as checks

TOP_LEVEL = (
    "algorithm",
    "problem",
    "topology",
    "n_workers",
    "steps",
    "eval_every",
    "seed",
    "seeds",
)
_REQUIRED = ("algorithm", "problem", "topology", "n_workers", "steps")
_SIZE_ARGS = ("n", "rows", "cols")  # topology generator arguments that n_workers determines


# ---------------------------------------------------------------------------------------------
# registries (looked up at call time, so rows added by other modules appear automatically)


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


# ---------------------------------------------------------------------------------------------
# errors


def _unknown(where: str, kind: str, name, valid) -> ValueError:
    valid = sorted(valid)
    listed = ", ".join(valid) if valid else "(none)"
    return ValueError(
        f"config key {where!r}: unknown {kind} {name!r}; valid names: {listed}."
        f"{checks.closest(name, valid)}"
    )


def _bad_args(where: str, owner: str, unknown, valid) -> ValueError:
    name = sorted(unknown)[0]
    listed = ", ".join(sorted(valid)) if valid else "(none)"
    return ValueError(
        f"config key {where!r}: unknown argument {name!r} for {owner}; valid arguments: "
        f"{listed}.{checks.closest(name, valid)}"
    )


# ---------------------------------------------------------------------------------------------
# canonical form


def _is_plain(value) -> bool:
    if value is None or isinstance(value, (str, bool, int, float)):
        return True
    if isinstance(value, (list, tuple)) and not hasattr(value, "_fields"):
        return all(_is_plain(v) for v in value)
    return False


def _plain(value):
    """tuples -> lists (JSON's form), recursively."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _signature(fn) -> inspect.Signature:
    return inspect.signature(fn)  # follows __wrapped__, so decorated factories show their arguments


def _arguments(fn, skip=()) -> dict:
    """name -> Parameter of the keyword-passable arguments of fn (without ``skip``)."""
    return {
        k: p
        for k, p in _signature(fn).parameters.items()
        if k not in skip and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    }


def _defaults(params: dict, given: dict) -> dict:
    """Plain default values of the parameters not in ``given``."""
    return {
        k: _plain(p.default)
        for k, p in params.items()
        if k not in given and p.default is not p.empty and _is_plain(p.default)
    }


def _as_table(value, where: str) -> dict:
    if isinstance(value, str):
        return {"name": value}
    if isinstance(value, dict):
        if "name" not in value:
            raise ValueError(
                f"config key {where!r} needs a 'name', e.g. {{name = \"...\", ...}}; "
                f"got keys {sorted(value)}."
            )
        return dict(value)
    raise ValueError(
        f"config key {where!r} must be a name or a table with a 'name'; got "
        f"{type(value).__name__} {value!r}."
    )


def _parse_call(text: str, where: str) -> dict:
    """``"top_k(0.01)"`` / ``"qsgd(levels=4)"`` / ``"sign"`` ->
    ``{"name": ..., "__args": [...], ...}``."""
    m = re.fullmatch(r"\s*([A-Za-z_]\w*)\s*(?:\((.*)\))?\s*", text)
    if not m:
        raise ValueError(
            f"config key {where!r}: cannot read {text!r}; write name(arg, ...) such as "
            "'top_k(0.01)' or a table {name = \"top_k\", fraction = 0.01}."
        )
    name, inner = m.group(1), m.group(2)
    out: dict = {"name": name}
    if inner and inner.strip():
        try:
            call = ast.parse(f"f({inner})", mode="eval").body
            out["__args"] = [ast.literal_eval(a) for a in call.args]
            out.update({kw.arg: ast.literal_eval(kw.value) for kw in call.keywords})
        except (SyntaxError, ValueError):
            raise ValueError(
                f"config key {where!r}: cannot read the arguments of {text!r}; use "
                "literal numbers, strings or booleans."
            ) from None
    return out


def _canonical_call(table: dict, fn, owner: str, where: str, skip=(), fill_defaults=True) -> dict:
    """Check a ``{name, **args}`` table against fn's signature; return it with defaults filled."""
    args = {k: v for k, v in table.items() if k not in ("name", "__args")}
    params = _arguments(fn, skip)
    positional = table.get("__args", [])
    if positional:
        names = [
            k for k, p in params.items() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        if len(positional) > len(names):
            raise ValueError(
                f"config key {where!r}: {owner} takes at most {len(names)} positional "
                f"argument(s) ({', '.join(names)}); got {len(positional)}."
            )
        for k, v in zip(names, positional):
            if k in args:
                raise ValueError(f"config key {where!r}: {owner} got {k!r} twice.")
            args[k] = v
    unknown = set(args) - set(params)
    if unknown:
        raise _bad_args(where, owner, unknown, params)
    missing = [k for k, p in params.items() if p.default is p.empty and k not in args]
    if missing:
        raise ValueError(
            f"config key {where!r}: {owner} needs {', '.join(missing)} (e.g. "
            f"{missing[0]} = ...); it takes {', '.join(params)}."
        )
    defaults = _defaults(params, args) if fill_defaults else {}
    out = {"name": table["name"]}
    for k in params:  # signature order, so canonical forms read like the call
        if k in args:
            out[k] = _canonical_value(args[k], f"{where}.{k}", k)
        elif k in defaults:
            out[k] = defaults[k]
    return out


def _canonical_value(value, where: str, arg: str):
    """An argument value: plain values pass; tables become compressors, schedules or optax."""
    if hasattr(value, "item") and hasattr(value, "dtype") and getattr(value, "ndim", None) == 0:
        value = value.item()  # numpy scalars from Python-made configs
    if arg == "compressor" and isinstance(value, str):
        value = _parse_call(value, where)
    if isinstance(value, dict):
        if arg == "compressor" or (
            "name" in value and "optax" not in value and "schedule" not in value
        ):
            registry = compressors()
            table = _as_table(value, where)
            if table["name"] not in registry:
                raise _unknown(where, "compressor", table["name"], registry)
            return _canonical_call(
                table, registry[table["name"]], f"compressor {table['name']}", where
            )
        if "schedule" in value:
            registry = schedules()
            name = value["schedule"]
            if name not in registry:
                raise _unknown(where, "schedule", name, registry)
            body = {"name": name, **{k: v for k, v in value.items() if k != "schedule"}}
            out = _canonical_call(
                body, registry[name], f"schedule {name}", where, fill_defaults=False
            )
            return {"schedule": out.pop("name"), **out}
        if "optax" in value:
            import optax

            name = value["optax"]
            fn = getattr(optax, str(name), None)
            if not callable(fn) or str(name).startswith("_"):
                valid = [
                    n for n in dir(optax) if not n.startswith("_") and callable(getattr(optax, n))
                ]
                raise _unknown(where, "optax function", name, valid)
            body = {"name": name, **{k: v for k, v in value.items() if k != "optax"}}
            out = _canonical_call(body, fn, f"optax.{name}", where, fill_defaults=False)
            return {"optax": out.pop("name"), **out}
        raise ValueError(
            f"config key {where!r}: a table value needs a 'schedule' (step size "
            "schedule), an 'optax' (optax function) or, for a compressor, a 'name' key; "
            f"got keys {sorted(value)}."
        )
    if isinstance(value, list):
        return [_canonical_value(v, f"{where}[{i}]", arg) for i, v in enumerate(value)]
    if not _is_plain(value):
        raise ValueError(
            f"config key {where!r}: {type(value).__name__} {value!r} is not a config "
            "value; use numbers, strings, booleans, arrays or tables."
        )
    return value


def _check_int(where: str, value, minimum: int):
    try:
        return checks.integer(f"config key {where!r}", value, min=minimum)
    except ValueError:
        raise ValueError(
            f"config key {where!r} must be an integer >= {minimum}; got {value!r}."
        ) from None


def canonical(cfg: dict) -> dict:
    """The checked, canonical form of a run config (a new dict; the input is not changed).

    Short forms are expanded (``"ring"`` -> ``{"name": "ring"}``, ``"top_k(0.01)"`` -> a table),
    every name and argument is checked against its registry and signature, and the plain default
    values of every factory are filled in. Raises ``ValueError`` on anything unknown or missing.
    """
    if not isinstance(cfg, dict):
        raise ValueError(f"a run config must be a dict (TOML table); got {type(cfg).__name__}.")
    unknown = set(cfg) - set(TOP_LEVEL)
    if unknown:
        name = sorted(unknown)[0]
        raise ValueError(
            f"unknown config key {name!r}; valid keys: {', '.join(TOP_LEVEL)}."
            f"{checks.closest(name, TOP_LEVEL)}"
        )
    missing = [k for k in _REQUIRED if k not in cfg]
    if missing:
        raise ValueError(
            f"the run config lacks {', '.join(repr(k) for k in missing)}; a run needs "
            f"{', '.join(_REQUIRED)} (and optionally eval_every, seed or seeds)."
        )
    n = _check_int("n_workers", cfg["n_workers"], 1)
    steps = _check_int("steps", cfg["steps"], 0)
    eval_every = cfg.get("eval_every")
    if eval_every is not None:
        eval_every = _check_int("eval_every", eval_every, 1)
        if steps % eval_every:
            lo = steps // eval_every * eval_every
            raise ValueError(
                f"config: steps={steps} is not a multiple of eval_every={eval_every}; use "
                f"steps={lo if lo else eval_every} or {lo + eval_every}, or an eval_every "
                f"that divides {steps}."
            )
    out: dict = {}

    # algorithm
    table = _as_table(cfg["algorithm"], "algorithm")
    registry = algorithms()
    if table["name"] not in registry:
        raise _unknown("algorithm", "algorithm", table["name"], registry)
    factory = registry[table["name"]]
    algo = _canonical_call(table, factory, f"algorithm {table['name']}", "algorithm")
    for k in _algorithm_of(algo).hparams:  # 1 and 1.0 are the same learning rate (and hash)
        if isinstance(algo.get(k), numbers.Integral) and not isinstance(algo[k], bool):
            algo[k] = float(algo[k])
    out["algorithm"] = algo
    # problem
    table = _as_table(cfg["problem"], "problem")
    registry = problems()
    if table["name"] not in registry:
        raise _unknown("problem", "problem", table["name"], registry)
    if "n_workers" in table:
        raise ValueError(
            "config key 'problem': give n_workers at the top level of the config "
            "(it sizes both the problem and the topology), not in the problem table."
        )
    out["problem"] = _canonical_call(
        table, registry[table["name"]], f"problem {table['name']}", "problem", skip=("n_workers",)
    )
    # topology
    table = _as_table(cfg["topology"], "topology")
    registry = topologies()
    if table["name"] not in registry:
        raise _unknown("topology", "topology", table["name"], registry)
    if "n" in table:
        raise ValueError(
            "config key 'topology': give n_workers at the top level of the config, "
            "not n in the topology table."
        )
    gen = registry[table["name"]]
    params = _arguments(gen)
    modifiers = topology_modifiers()
    sized = {k: table[k] for k in ("rows", "cols") if k in table}
    if sized and set(sized) != {"rows", "cols"} & set(params):
        raise ValueError(
            f"config key 'topology': give both rows and cols (rows * cols = n_workers) or "
            f"neither; got {sorted(sized)}."
        )
    rest = {k: v for k, v in table.items() if k not in ("rows", "cols") and k not in modifiers}
    try:
        topo = _canonical_call(rest, gen, f"topology {table['name']}", "topology", skip=_SIZE_ARGS)
    except ValueError as err:
        if modifiers and "unknown argument" in str(err):
            raise ValueError(
                f"{err} (a topology table also takes {', '.join(sorted(modifiers))} = {{...}})."
            ) from None
        raise
    if sized:
        topo.update(
            rows=_check_int("topology.rows", sized["rows"], 1),
            cols=_check_int("topology.cols", sized["cols"], 1),
        )
        if topo["rows"] * topo["cols"] != n:
            raise ValueError(
                f"config key 'topology': rows * cols = {topo['rows'] * topo['cols']} but "
                f"n_workers = {n}; make them agree."
            )
    for key in sorted(set(table) & set(modifiers)):
        if not isinstance(table[key], dict):
            raise ValueError(
                f"config key 'topology.{key}' must be a table of the arguments of "
                f"topology.{modifiers[key]}; got {table[key]!r}."
            )
        from . import topology as T

        wrapper = getattr(T, modifiers[key])
        body = _canonical_call(
            {"name": key, **table[key]},
            wrapper,
            f"topology.{modifiers[key]}",
            f"topology.{key}",
            skip=("topology",),
        )
        body.pop("name")
        topo[key] = body
    out["topology"] = topo

    out["n_workers"] = n
    out["steps"] = steps
    out["eval_every"] = eval_every
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
        out["seeds"] = [_check_int("seeds", s, 0) for s in seeds]
    else:
        out["seed"] = _check_int("seed", cfg.get("seed", 0), 0)
    return out


def config_hash(cfg: dict) -> str:
    """A short, stable hash of a run config (of its canonical form): the result-store key."""
    text = json.dumps(canonical(cfg), sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# building objects


def _key(value) -> str:
    return json.dumps(value, sort_keys=True)


def _tuples(value):
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def _build_value(value):
    if isinstance(value, dict):
        if "schedule" in value:
            return _schedule(_key(value))
        if "optax" in value:
            return _optax(_key(value))
        return _compressor(_key(value))
    return _tuples(value)


# Equal tables give the very same object (memoized), so algorithms built from equal configs have
# equal structure keys and reuse one compiled program.
@functools.lru_cache(maxsize=256)
def _compressor(key: str):
    table = json.loads(key)
    fn = compressors()[table.pop("name")]
    return fn(**{k: _build_value(v) for k, v in table.items()})


@functools.lru_cache(maxsize=256)
def _schedule(key: str):
    table = json.loads(key)
    fn = schedules()[table.pop("schedule")]
    return fn(**{k: _build_value(v) for k, v in table.items()})


@functools.lru_cache(maxsize=256)
def _optax(key: str):
    import optax

    table = json.loads(key)
    fn = getattr(optax, table.pop("optax"))
    return fn(**{k: _build_value(v) for k, v in table.items()})


def _algorithm_of(table: dict):
    """The Algorithm of a checked algorithm table ``{name, **args}``."""
    table = dict(table)
    fn = algorithms()[table.pop("name")]
    return fn(**{k: _build_value(v) for k, v in table.items()})


def build_algorithm(cfg: dict):
    """The Algorithm of a (canonical or raw) run config."""
    return _algorithm_of(canonical(cfg)["algorithm"])


def build_problem(cfg: dict):
    """The Problem of a (canonical or raw) run config."""
    c = canonical(cfg)
    table = dict(c["problem"])
    fn = problems()[table.pop("name")]
    return fn(c["n_workers"], **{k: _build_value(v) for k, v in table.items()})


def build_topology(cfg: dict):
    """The Topology of a (canonical or raw) run config."""
    from . import topology as T

    c = canonical(cfg)
    table = dict(c["topology"])
    name = table.pop("name")
    gen = topologies()[name]
    params = _arguments(gen)
    n = c["n_workers"]
    modifiers = topology_modifiers()
    kwargs = {
        k: _build_value(v)
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
            topo, **{k: _build_value(v) for k, v in table[key].items()}
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

    def run(self, *, progress: bool | None = None):
        """``decsim.run`` on these objects; returns the History."""
        from .runner import run

        if self.seeds is not None:
            return run(
                self.algorithm,
                self.problem,
                self.topology,
                self.steps,
                eval_every=self.eval_every,
                seeds=self.seeds,
                progress=progress,
            )
        return run(
            self.algorithm,
            self.problem,
            self.topology,
            self.steps,
            eval_every=self.eval_every,
            seed=self.seed,
            progress=progress,
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
