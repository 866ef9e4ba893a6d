"""The objects that canonical argument values stand for: compressors, step size schedules and
optax transformations built from their tables, and arrays as tuples.

Equal tables give the very same object (memoized), so algorithms built from equal configs have
equal structure keys and reuse one compiled program.
"""

from __future__ import annotations

import functools
import json

from ._registries import compressors, schedules

__all__ = ["build_value"]


def _key(value) -> str:
    return json.dumps(value, sort_keys=True)


def _tuples(value):
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def build_value(value):
    """The object of a canonical argument value (a table becomes its compressor, schedule or
    optax object; lists become tuples)."""
    if isinstance(value, dict):
        if "schedule" in value:
            return _schedule(_key(value))
        if "optax" in value:
            return _optax(_key(value))
        return _compressor(_key(value))
    return _tuples(value)


@functools.lru_cache(maxsize=256)
def _compressor(key: str):
    table = json.loads(key)
    fn = compressors()[table.pop("name")]
    return fn(**{k: build_value(v) for k, v in table.items()})


@functools.lru_cache(maxsize=256)
def _schedule(key: str):
    table = json.loads(key)
    fn = schedules()[table.pop("schedule")]
    return fn(**{k: build_value(v) for k, v in table.items()})


@functools.lru_cache(maxsize=256)
def _optax(key: str):
    import optax

    table = json.loads(key)
    fn = getattr(optax, table.pop("optax"))
    return fn(**{k: build_value(v) for k, v in table.items()})
