"""The canonical form of one argument table: a ``{name, **args}`` table (or a short form such as
``"top_k(0.01)"``) checked against its factory's signature, with the plain defaults filled in.

Argument values are canonical too: compressor, schedule and optax tables are checked against
their registries, recursively. Every error is a ``ValueError`` that names the config key, the
valid choices and the closest match.
"""

from __future__ import annotations

import ast
import inspect
import re

from ._checks import closest, integer
from ._registries import compressors, schedules

__all__ = [
    "unknown_name",
    "unknown_argument",
    "check_int",
    "arguments",
    "as_table",
    "parse_call",
    "canonical_call",
    "canonical_value",
]


# ---------------------------------------------------------------------------------------------
# errors


def unknown_name(where: str, kind: str, name, valid) -> ValueError:
    """The error for an unknown ``kind`` (algorithm, compressor, ...) ``name`` at config key
    ``where``: it lists the valid names and the closest match."""
    valid = sorted(valid)
    listed = ", ".join(valid) if valid else "(none)"
    return ValueError(
        f"config key {where!r}: unknown {kind} {name!r}; valid names: {listed}."
        f"{closest(name, valid)}"
    )


def unknown_argument(where: str, owner: str, unknown, valid) -> ValueError:
    """The error for the (first) unknown argument of ``owner``: the valid ones, the closest."""
    name = sorted(unknown)[0]
    listed = ", ".join(sorted(valid)) if valid else "(none)"
    return ValueError(
        f"config key {where!r}: unknown argument {name!r} for {owner}; valid arguments: "
        f"{listed}.{closest(name, valid)}"
    )


def check_int(where: str, value, minimum: int):
    """``value`` as an int ``>= minimum``, or a ``ValueError`` naming the config key ``where``."""
    try:
        return integer(f"config key {where!r}", value, min=minimum)
    except ValueError:
        raise ValueError(
            f"config key {where!r} must be an integer >= {minimum}; got {value!r}."
        ) from None


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


def arguments(fn, skip=()) -> dict:
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


def as_table(value, where: str) -> dict:
    """A copy of the ``{name, **args}`` table ``value``, or ``{"name": value}`` for a name."""
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


def parse_call(text: str, where: str) -> dict:
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


def canonical_call(table: dict, fn, owner: str, where: str, skip=(), fill_defaults=True) -> dict:
    """Check a ``{name, **args}`` table against fn's signature; return it with defaults filled."""
    args = {k: v for k, v in table.items() if k not in ("name", "__args")}
    params = arguments(fn, skip)
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
        raise unknown_argument(where, owner, unknown, params)
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
            out[k] = canonical_value(args[k], f"{where}.{k}", k)
        elif k in defaults:
            out[k] = defaults[k]
    return out


def canonical_value(value, where: str, arg: str):
    """An argument value: plain values pass; tables become compressors, schedules or optax."""
    if hasattr(value, "item") and hasattr(value, "dtype") and getattr(value, "ndim", None) == 0:
        value = value.item()  # numpy scalars from Python-made configs
    if arg == "compressor" and isinstance(value, str):
        value = parse_call(value, where)
    if isinstance(value, dict):
        if arg == "compressor" or (
            "name" in value and "optax" not in value and "schedule" not in value
        ):
            return _compressor_table(value, where)
        if "schedule" in value:
            return _schedule_table(value, where)
        if "optax" in value:
            return _optax_table(value, where)
        raise ValueError(
            f"config key {where!r}: a table value needs a 'schedule' (step size "
            "schedule), an 'optax' (optax function) or, for a compressor, a 'name' key; "
            f"got keys {sorted(value)}."
        )
    if isinstance(value, list):
        return [canonical_value(v, f"{where}[{i}]", arg) for i, v in enumerate(value)]
    if not _is_plain(value):
        raise ValueError(
            f"config key {where!r}: {type(value).__name__} {value!r} is not a config "
            "value; use numbers, strings, booleans, arrays or tables."
        )
    return value


def _compressor_table(value: dict, where: str) -> dict:
    registry = compressors()
    table = as_table(value, where)
    if table["name"] not in registry:
        raise unknown_name(where, "compressor", table["name"], registry)
    return canonical_call(table, registry[table["name"]], f"compressor {table['name']}", where)


def _schedule_table(value: dict, where: str) -> dict:
    registry = schedules()
    name = value["schedule"]
    if name not in registry:
        raise unknown_name(where, "schedule", name, registry)
    body = {"name": name, **{k: v for k, v in value.items() if k != "schedule"}}
    out = canonical_call(body, registry[name], f"schedule {name}", where, fill_defaults=False)
    return {"schedule": out.pop("name"), **out}


def _optax_table(value: dict, where: str) -> dict:
    import optax

    name = value["optax"]
    fn = getattr(optax, str(name), None)
    if not callable(fn) or str(name).startswith("_"):
        valid = [n for n in dir(optax) if not n.startswith("_") and callable(getattr(optax, n))]
        raise unknown_name(where, "optax function", name, valid)
    body = {"name": name, **{k: v for k, v in value.items() if k != "optax"}}
    out = canonical_call(body, fn, f"optax.{name}", where, fill_defaults=False)
    return {"optax": out.pop("name"), **out}
