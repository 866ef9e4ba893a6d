"""The record format of the result store, and the checks of untrusted record files.

A run's JSON record holds :data:`FORMAT`, the run's id, config and group, its status (``ok``,
or ``diverged`` for a run that produced NaN/inf), the problem's known constants, the timings,
the checksum of its NPZ (``npz_sha256``) and its own (``record_sha256``: :func:`record_digest`,
the SHA-256 of the canonical JSON of every other field). :func:`record_problem` says what is
wrong with a parsed record: it counts only when it has every field of the format with its type,
names its own id, config hash and group, and matches its own checksum. A record without
``record_sha256`` was written by an older decsim and is checked as before (NPZ checksum, id,
config hash, fields). The checksums detect damage and hand edits; they are no signature
(whoever rewrites a record on purpose can recompute them).

Reading is bounded in memory and time: a file is opened only if it is a regular file (not a
device, FIFO or link to one) within its size limit, before a byte is read (:func:`open_regular`);
the JSON is at most :data:`MAX_JSON_BYTES` and :data:`MAX_JSON_DEPTH` deep (:func:`read_json`).
What fails a check raises :class:`BadRecord`; readers skip such a run with a
:class:`StoreWarning`. The checks of the NPZ are in :mod:`decsim.study.npz`.

The limits are read when a check or a write runs; :mod:`decsim.study.store` re-exports them
live (setting ``decsim.study.store.MAX_PARAM_BYTES`` sets the one here).

Example:
    >>> from decsim.study import records
    >>> records.result_columns({"seed": 0, "steps": 10}) >= {"run", "step", "steps"}
    True
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import numbers
import os
import re
import stat
from typing import Optional

import numpy as np

from . import grid

__all__ = ["FORMAT", "MAX_JSON_BYTES", "MAX_JSON_DEPTH", "MAX_MEMBERS", "MAX_PARAM_BYTES",
           "MAX_SERIES", "MAX_NPZ_BYTES", "StoreWarning", "BadRecord", "json_safe",
           "record_digest", "result_columns", "open_regular", "sha256_of", "read_json",
           "record_problem"]

FORMAT = "decsim-run/1"

#: The largest JSON record read or written (bytes).
MAX_JSON_BYTES = 16 * 2**20
#: The deepest nesting of lists and tables in a JSON record.
MAX_JSON_DEPTH = 64
#: The most members (arrays) of an NPZ.
MAX_MEMBERS = 10_000
#: The most bytes of stored parameters (``save_params``) of one run, all members together.
MAX_PARAM_BYTES = 2**30
#: The most members ``steps`` and ``metric/*`` of an NPZ.
MAX_SERIES = 256
#: The largest NPZ file read (bytes): all members and the zip overhead.
MAX_NPZ_BYTES = MAX_PARAM_BYTES + 2**28

_CHUNK = 2**20
_HEX64 = re.compile(r"[0-9a-f]{64}")


class StoreWarning(UserWarning):
    """A stored run that is skipped (damaged, edited, crafted) or recomputed."""


class BadRecord(ValueError):
    """A stored run that is there but not intact: ``path`` is the file at fault, ``reason`` why.

    Attributes:
      path: the JSON or NPZ file of the run.
      reason: what is wrong with it, in words.
    """

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason


def json_safe(value):
    """``value`` in plain JSON types: numpy scalars to Python ones, tuples to lists, NaN and inf
    to ``None``, anything else unknown to its ``str``."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (np.floating, float)):
        v = float(value)
        return v if math.isfinite(v) else None
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.bool_,)):
        return bool(value)
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    return str(value)


def record_digest(record: dict) -> str:
    """The SHA-256 of the canonical JSON of every field of a record but ``record_sha256``."""
    body = {k: v for k, v in record.items() if k != "record_sha256"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False,
                      ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()


_FIXED_COLUMNS = frozenset({"run", "group", "algorithm", "problem", "topology", "spectral_gap",
                            "seed", "status", "diverged", "diverged_step", "f_star", "step"})


def result_columns(config: dict) -> set:
    """The columns :func:`decsim.study.store.load_results` gives a run besides its metrics (no
    metric may have the name of one)."""
    return set(_FIXED_COLUMNS) | set(grid.flatten({k: v for k, v in config.items()
                                                   if k != "seed"}))


@contextlib.contextmanager
def open_regular(path: str, limit: int, what: str):
    """A binary file object of the regular file ``path`` of at most ``limit`` bytes, and its
    size. Devices, FIFOs and links to them are refused without reading a byte."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)
                     | getattr(os, "O_CLOEXEC", 0))
    except IsADirectoryError:
        raise BadRecord(path, f"the {what} is not a regular file (a folder)") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise BadRecord(path, f"the {what} is not a regular file (mode "
                                  f"{stat.filemode(st.st_mode)}); refusing to read it")
    except BaseException:
        os.close(fd)
        raise
    with os.fdopen(fd, "rb") as fh:
        if st.st_size > limit:
            raise BadRecord(path, f"the {what} has {st.st_size} bytes, more than the limit of "
                                  f"{limit}")
        yield fh, st.st_size


def sha256_of(fh, size: int) -> str:
    """The SHA-256 (hex) of the first ``size`` bytes of the file object ``fh``."""
    h = hashlib.sha256()
    fh.seek(0)
    left = size
    while left > 0:
        chunk = fh.read(min(_CHUNK, left))
        if not chunk:
            break
        h.update(chunk)
        left -= len(chunk)
    return h.hexdigest()


def _no_constant(name):
    raise ValueError(f"the JSON holds {name}, which the format never writes")


def read_json(path: str):
    """The parsed JSON of a record (bounded in size and depth); ``FileNotFoundError`` if it is
    not there; :class:`BadRecord` if it cannot be read."""
    with open_regular(path, MAX_JSON_BYTES, "JSON") as (fh, size):
        raw = fh.read(size + 1)
    if len(raw) > MAX_JSON_BYTES:
        raise BadRecord(path, f"the JSON has more than {MAX_JSON_BYTES} bytes")
    try:
        record = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except RecursionError:
        raise BadRecord(path, "the JSON is nested too deeply to parse") from None
    except ValueError as err:  # JSONDecodeError, UnicodeDecodeError, huge integers
        raise BadRecord(path, f"the JSON does not parse ({err})") from None
    if _depth(record) > MAX_JSON_DEPTH:
        raise BadRecord(path, f"the JSON is nested deeper than {MAX_JSON_DEPTH} levels")
    return record


def _depth(obj) -> int:
    deepest, stack = 0, [(obj, 1)]
    while stack:
        o, d = stack.pop()
        if isinstance(o, (dict, list)):
            deepest = max(deepest, d)
            if deepest > MAX_JSON_DEPTH:
                return deepest
            stack.extend((v, d + 1) for v in (o.values() if isinstance(o, dict) else o))
    return deepest


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def record_problem(record, run_id: str) -> Optional[str]:
    """What is wrong with a parsed record (``None`` if nothing): every field the readers use,
    with its type, and the ids."""
    if not isinstance(record, dict):
        return f"the JSON is a {type(record).__name__}, not a record (a table)"
    if record.get("format") != FORMAT:
        return f"format is {record.get('format')!r}, not {FORMAT!r}"
    if record.get("id") != run_id:
        return f"the record names id {record.get('id')!r}, not its file's {run_id!r}"
    config = record.get("config")
    if not isinstance(config, dict):
        return "the record has no config table"
    for key in ("algorithm", "problem", "topology"):
        if not isinstance(config.get(key), dict) or not isinstance(config[key].get("name"), str):
            return f"config.{key} is not a table with a name"
    for key, low in (("seed", 0), ("steps", 0), ("n_workers", 1)):
        if not _is_int(config.get(key)) or config[key] < low:
            return f"config.{key} is {config.get(key)!r}, not an integer >= {low}"
    if "eval_every" not in config or not (config["eval_every"] is None or (
            _is_int(config["eval_every"]) and config["eval_every"] >= 1)):
        return f"config.eval_every is {config.get('eval_every')!r}, not an integer >= 1 or null"
    if grid.run_id(config) != run_id:
        return "the config does not hash to the run's id (it was edited)"
    if record.get("group") != grid.group_id(config):
        return f"group is {record.get('group')!r}, not the config's group {grid.group_id(config)}"
    if record.get("status") not in ("ok", "diverged"):
        return f"status is {record.get('status')!r}, not 'ok' or 'diverged'"
    step = record.get("diverged_step")
    if not _is_int(step) or not -1 <= step <= config["steps"]:
        return f"diverged_step is {step!r}, not an integer in [-1, {config['steps']}]"
    for key in ("npz_sha256",) + (("record_sha256",) if "record_sha256" in record else ()):
        if not isinstance(record.get(key), str) or not _HEX64.fullmatch(record[key]):
            return f"{key} is {record.get(key)!r}, not 64 hex digits"
    info = record.get("info")
    if not isinstance(info, dict):
        return "the record has no info table"
    for key in ("algorithm", "problem", "topology"):
        if not (info.get(key) is None or isinstance(info[key], str)):
            return f"info.{key} is {info[key]!r}, not a string"
    for key in ("spectral_gap", "n_workers", "f_star"):
        if not (info.get(key) is None or _is_num(info[key])):
            return f"info.{key} is {info[key]!r}, not a number"
    if not (info.get("hparams") is None or isinstance(info["hparams"], dict)):
        return "info.hparams is not a table"
    final = record.get("final")
    if not isinstance(final, dict) or not all(v is None or _is_num(v) for v in final.values()):
        return "final is not a table of numbers"
    for key in ("compile_seconds", "run_seconds"):
        if not _is_num(record.get(key)) or record[key] < 0:
            return f"{key} is {record.get(key)!r}, not a number >= 0"
    size = record.get("group_size", 1)
    if not _is_int(size) or size < 1:
        return f"group_size is {size!r}, not an integer >= 1"
    if not (record.get("problem_sha256") is None or isinstance(record["problem_sha256"], str)):
        return "problem_sha256 is not a string"
    if "record_sha256" in record and record_digest(record) != record["record_sha256"]:
        return "the record does not match its own checksum record_sha256 (it was edited)"
    return None
