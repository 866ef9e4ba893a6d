"""The result store: the on-disk format of finished runs, in one file.

A store is a folder with one ``<id>.json`` + ``<id>.npz`` per run, ``id`` = a hash of the run's
canonical config (:func:`decsim.study.grid.run_id`, equal to :func:`decsim.config.config_hash`).
The NPZ holds the evaluation ``steps``, one ``metric/<name>`` array per metric and, with
``save_params``, the final parameters (``param/<path>``); the JSON holds the config, the status
(``ok``, or ``diverged`` for a run that produced NaN/inf), the problem's known constants and
the timings. No pickle anywhere.

**What counts as finished.** A run is finished when its JSON parses, has every field of the
format with its type, names its own id, config hash and group, matches its own checksum
(``record_sha256``: the SHA-256 of the canonical JSON of every other field), and its NPZ matches
the checksum the JSON records (``npz_sha256``) and holds well-formed arrays (``steps``, and every
metric as long as ``steps``). Anything else (missing, truncated, corrupt, edited or crafted
files) counts as not there: a sweep recomputes it. A record without ``record_sha256`` was
written by an older decsim and is checked as before (NPZ checksum, id, config hash, fields).
The checksums detect damage and hand edits; they are no signature (whoever rewrites a record
on purpose can recompute them).

**Guarantees.**

- *Crash safety*: a write prepares both files under temporary names, then moves them into place
  with ``os.replace`` (atomic), the NPZ first, keeping a hard link ``.<id>.npz.prev`` to the old
  NPZ until the JSON is in place (a copy where the file system has no hard links). A process
  killed at any moment (``kill -9``) leaves the old record or the new one: readers fall back on
  ``.prev`` while it matches the JSON, and the next write or :func:`tidy` puts it back. (A power
  loss may at worst leave the run not finished: the checksums see any mix of old and new.)
- *A bad record is skipped, never fatal*: :func:`load_results` and :func:`load_histories` skip
  it with a :class:`StoreWarning` naming the file and the reason. Reading is bounded in memory
  and time: the JSON is at most :data:`MAX_JSON_BYTES` and :data:`MAX_JSON_DEPTH` deep; the
  NPZ must be a regular file (not a device, FIFO or link to one), its zip directory at most
  :data:`MAX_MEMBERS` members, every member's declared uncompressed size within what the record
  allows (``steps`` and metrics: 8 bytes per evaluation of the run's ``steps`` plus a header;
  parameters: :data:`MAX_PARAM_BYTES` in all) and matching its ``.npy`` header, all checked
  before any array is read; the zip bomb and the header that claims 10^12 entries are refused.
- *Concurrent writers are safe*: writers of one run take an exclusive ``fcntl.flock`` on
  ``.<id>.lock`` while they write (two sweeps on one folder, or shards, never interleave the
  files of a run); readers take no lock but retry, under a shared lock, a run that a writer
  changed while they read it.
- *Stale files*: :func:`tidy` (run at the start of every sweep) removes the temporary files of
  killed writes (``.<id>.json.*.tmp``, ``.<id>.npz.*.tmp``) older than :data:`STALE_SECONDS`
  whose run nobody is writing, leftover lock files, and settles any ``.prev``. Store files get
  the usual permissions, ``0o666 & ~umask``.

**Problem fingerprints.** A run's id is the hash of its config, so it cannot see a change of a
problem's code or data under the same name and arguments. Every record a sweep writes therefore
carries ``problem_sha256`` (:func:`problem_fingerprint`: the loss and metric functions' code
objects, the constants and the functions of their own module they use, and the bytes, shapes
and dtypes of the data and initial parameters). A sweep reuses a stored run of a problem whose
constructor lives outside ``decsim`` (a user constructor registered in
``decsim.problems.REGISTRY``) only when its fingerprint equals the current problem's (a record
without one, older or written by ``decsim run --out``, does not); otherwise it warns and
recomputes it, under the same id. Built-in problems are versioned with decsim: their runs are
reused by id alone, as before, so existing stores keep working without building any problem.
(Code objects depend on the Python version: a user problem's runs are recomputed after a
Python upgrade.)

:func:`load_results` reads a store back as a tidy pandas DataFrame (one row per evaluation and
run), :func:`load_histories` as :class:`decsim.History` objects (seeds of a group stacked);
:func:`verify_run` says why a run does not count as finished.

Example:
    >>> import tempfile
    >>> import numpy as np
    >>> from decsim.study import store
    >>> store.json_safe({"loss": float("nan"), "n": np.int64(3), "shape": (2, 3)})
    {'loss': None, 'n': 3, 'shape': [2, 3]}
    >>> store.is_complete(tempfile.mkdtemp(), "0123456789abcdef")
    False
"""

from __future__ import annotations

import collections
import contextlib
import datetime
import errno
import functools
import hashlib
import io
import json
import math
import numbers
import os
import re
import secrets
import shutil
import stat
import struct
import time
import types
import warnings
import zipfile
from typing import Optional

import numpy as np

from .._types import History
from . import grid

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: writers do not lock
    fcntl = None

__all__ = ["FORMAT", "write_run", "read_run", "verify_run", "is_complete", "load_results",
           "load_histories", "problem_facts", "problem_fingerprint", "json_safe", "tidy",
           "BadRecord", "StoreWarning", "MAX_JSON_BYTES", "MAX_JSON_DEPTH", "MAX_MEMBERS",
           "MAX_PARAM_BYTES", "STALE_SECONDS"]

FORMAT = "decsim-run/1"

#: The largest JSON record read or written (bytes).
MAX_JSON_BYTES = 16 * 2**20
#: The deepest nesting of lists and tables in a JSON record.
MAX_JSON_DEPTH = 64
#: The most members (arrays) of an NPZ.
MAX_MEMBERS = 10_000
#: The most bytes of stored parameters (``save_params``) of one run, all members together.
MAX_PARAM_BYTES = 2**30
#: Temporary files of a write older than this many seconds are stale (removed by :func:`tidy`).
STALE_SECONDS = 300.0

_NPY_HEADER_MAX = 10_000  # bytes of an .npy header (numpy's own limit for untrusted files)
_NPY_PREFIX_MAX = _NPY_HEADER_MAX + 16  # magic, version, header length and header
_MAX_SERIES = 256  # members "steps" and "metric/*"
_MAX_ZIP_DIRECTORY = 4 * 2**20  # bytes of the zip central directory
_MAX_NPZ_BYTES = MAX_PARAM_BYTES + 2**28  # an NPZ file, all members and zip overhead
_CHUNK = 2**20
_READ_ATTEMPTS = 3
_ID = re.compile(r"[0-9a-f]{16}")
_TMP = re.compile(r"\.([0-9a-f]{16})\.(json|npz)\..+\.tmp")
_LOCK = re.compile(r"\.([0-9a-f]{16})\.lock")
_PREV = re.compile(r"\.([0-9a-f]{16})\.npz\.prev")
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


def _paths(out_dir: str, run_id: str) -> tuple:
    return os.path.join(out_dir, f"{run_id}.json"), os.path.join(out_dir, f"{run_id}.npz")


def _lock_path(out_dir: str, run_id: str) -> str:
    return os.path.join(out_dir, f".{run_id}.lock")


def _prev_path(out_dir: str, run_id: str) -> str:
    return os.path.join(out_dir, f".{run_id}.npz.prev")


# ---------------------------------------------------------------------------------------------
# plain values


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


def problem_facts(problem) -> dict:
    """The known constants of a problem (``f_star``, ``L``, ``mu``, ``sigma2``, ``zeta2``) that
    its ``info`` holds as numbers: what a stored run's ``info`` records about its problem."""
    info = problem.info or {}
    return {k: float(info[k]) for k in ("f_star", "L", "mu", "sigma2", "zeta2")
            if k in info and isinstance(info[k], (int, float, np.floating, np.integer))}


def _record_digest(record: dict) -> str:
    """The SHA-256 of the canonical JSON of every field of a record but ``record_sha256``."""
    body = {k: v for k, v in record.items() if k != "record_sha256"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False,
                      ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()


# ---------------------------------------------------------------------------------------------
# problem fingerprints


def problem_fingerprint(problem) -> str:
    """A SHA-256 (hex) of what a problem computes: its code and its data.

    It covers the loss, test-metric and extra-metric functions (their code objects, recursively
    through nested functions: bytecode, constants, names; their default arguments and closure
    values; the constants, modules' names and the functions of their own module that they name as
    globals), the bytes, shapes and dtypes of ``params0``, ``data``, ``counts``, ``test_data``
    and ``aux`` (with their tree structure), and the name, size, batch size, noise and known
    constants. Equal problems built twice have equal fingerprints; a changed line of the loss or
    a changed data value changes it. File names and line numbers do not count.

    Args:
      problem: a :class:`decsim.Problem`.

    Returns:
      64 hex digits.
    """
    h = hashlib.sha256()
    feed = _Fingerprint(h)
    feed.value(("problem", problem.name, problem.n_workers, problem.batch_size,
                float(problem.noise_std), problem_facts(problem)))
    for name in ("loss_fn", "test_metrics", "extra_metrics"):
        feed.tag(name)
        feed.value(getattr(problem, name))
    for name in ("params0", "data", "counts", "test_data", "aux"):
        feed.tag(name)
        feed.tree(getattr(problem, name))
    return h.hexdigest()


class _Fingerprint:
    """Feeds a description of Python values, functions and arrays into a hash, deterministically
    (no ids, addresses or set orders)."""

    _MAX_DEPTH = 200

    def __init__(self, h, home=None):
        self.h, self.seen, self.depth = h, {}, 0
        self.home = set() if home is None else home  # modules whose functions are described

    def tag(self, text: str) -> None:
        data = text.encode("utf-8", "backslashreplace")
        self.h.update(struct.pack("<Q", len(data)))
        self.h.update(data)

    def array(self, a) -> None:
        try:
            a = np.ascontiguousarray(np.asarray(a))
        except Exception:  # not convertible: only its type can be described
            self.tag(f"unconvertible {type(a).__module__}.{type(a).__qualname__}")
            return
        self.tag(f"array {a.dtype.str} {a.shape}")
        if a.dtype.hasobject:
            for v in a.ravel():
                self.value(v)
        elif a.nbytes:
            self.h.update(a.reshape(-1).view(np.uint8).data)

    def tree(self, tree) -> None:
        import jax

        leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
        self.tag(f"tree {len(leaves)}")
        for path, leaf in leaves:
            self.tag(f"leaf {jax.tree_util.keystr(path)}")
            if isinstance(leaf, np.ndarray) or hasattr(leaf, "__array__"):
                self.array(leaf)
            else:
                self.value(leaf)

    def _digest(self, value) -> bytes:
        sub = _Fingerprint(hashlib.sha256(), self.home)
        sub.depth = self.depth
        sub.value(value)
        return sub.h.digest()

    def value(self, v) -> None:
        if v is None or isinstance(v, (bool, int, float, complex, str, bytes)):
            self.tag(f"{type(v).__name__} {v!r}")
            return
        if self.depth > self._MAX_DEPTH:
            self.tag(f"deep {type(v).__qualname__}")
            return
        # immutable values are described in full wherever they occur (how Python shares equal
        # constants differs between a fresh compile and a .pyc); mutable objects and functions
        # once, so cycles end
        if not isinstance(v, (tuple, frozenset, types.CodeType, np.generic)):
            if id(v) in self.seen:
                self.tag(f"seen {self.seen[id(v)][0]}")
                return
            self.seen[id(v)] = (len(self.seen), v)  # keeps v alive, so its id is not reused
        self.depth += 1
        try:
            self._value(v)
        finally:
            self.depth -= 1

    def _value(self, v) -> None:
        if isinstance(v, (np.ndarray, np.generic)):
            self.array(v)
        elif isinstance(v, dict):
            self.tag(f"dict {len(v)}")
            items = list(v.items())
            if all(isinstance(k, str) for k, _ in items):
                items.sort(key=lambda kv: kv[0])
            for k, x in items:
                self.value(k)
                self.value(x)
        elif isinstance(v, (set, frozenset)):
            self.tag(f"set {len(v)}")
            for d in sorted(self._digest(x) for x in v):  # set order varies with str hashing
                self.h.update(d)
        elif isinstance(v, (list, tuple)):
            self.tag(f"{type(v).__qualname__} {len(v)}")
            for x in v:
                self.value(x)
        elif isinstance(v, types.CodeType):
            self.code(v)
        elif isinstance(v, functools.partial):
            self.tag("partial")
            self.value((v.func, v.args, v.keywords))
        elif isinstance(v, types.FunctionType):
            self.function(v)
        elif isinstance(v, types.MethodType):
            self.tag("method")
            self.value((v.__func__, v.__self__))
        elif isinstance(v, types.ModuleType):
            self.tag(f"module {v.__name__}")
        elif isinstance(v, (type, types.BuiltinFunctionType, np.ufunc)):
            self.tag(f"named {getattr(v, '__module__', '')}.{getattr(v, '__qualname__', v)}")
        elif hasattr(v, "__wrapped__"):  # jax.jit, functools.wraps
            self.tag(f"wrapped {type(v).__qualname__}")
            self.value(v.__wrapped__)
        elif hasattr(v, "shape") and hasattr(v, "dtype") and hasattr(v, "__array__"):
            self.array(v)  # jax arrays
        else:
            # another object: its type; its attributes and __call__ only if its class comes from
            # the module of a function described here (a library's objects are named, not walked)
            cls = type(v)
            self.tag(f"object {cls.__module__}.{cls.__qualname__}")
            if cls.__module__ in self.home:
                attrs = getattr(v, "__dict__", None)
                if isinstance(attrs, dict):
                    self.value(dict(attrs))
                call = next((k.__dict__["__call__"] for k in cls.__mro__
                             if "__call__" in k.__dict__), None)
                if isinstance(call, types.FunctionType):
                    self.value(call)

    def code(self, code: types.CodeType) -> None:
        self.tag(f"code {code.co_argcount} {code.co_posonlyargcount} {code.co_kwonlyargcount} "
                 f"{code.co_flags}")
        self.h.update(code.co_code)
        self.h.update(getattr(code, "co_exceptiontable", b""))
        self.value((code.co_names, code.co_varnames, code.co_freevars, code.co_cellvars))
        self.tag(f"consts {len(code.co_consts)}")
        for const in code.co_consts:
            self.value(const)

    def function(self, fn: types.FunctionType) -> None:
        self.tag("function")
        self.code(fn.__code__)
        self.value((fn.__defaults__, fn.__kwdefaults__))
        cells = []
        for cell in fn.__closure__ or ():
            try:
                cells.append(cell.cell_contents)
            except ValueError:  # an empty cell
                cells.append("<empty cell>")
        self.value(tuple(cells))
        module = getattr(fn, "__module__", None)
        self.home.add(module)
        g = fn.__globals__
        for name in sorted(_global_names(fn.__code__)):
            if name not in g:
                continue  # a builtin, or a name bound later
            v = g[name]
            self.tag(f"global {name}")
            if isinstance(v, types.FunctionType) and v.__module__ != module:
                self.tag(f"named {v.__module__}.{v.__qualname__}")  # a library function
            elif isinstance(v, type):
                self.tag(f"named {v.__module__}.{v.__qualname__}")
            else:
                self.value(v)


def _global_names(code: types.CodeType) -> set:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _global_names(const)
    return names


# ---------------------------------------------------------------------------------------------
# locks and files


@contextlib.contextmanager
def _locked(path: str, *, shared: bool = False, blocking: bool = True, create: bool = True):
    """Hold ``flock`` on the lock file ``path``; yields whether it is held.

    The lock file is the one at ``path`` once the lock is taken (a writer that finishes unlinks
    it, so a waiter that got a lock on an unlinked file tries again). ``create=False`` takes the
    lock only if the file is there (readers); ``blocking=False`` yields ``False`` if another
    process holds it. An exclusive holder unlinks the file when done.
    """
    if fcntl is None:  # pragma: no cover
        yield not shared
        return
    while True:
        try:
            fd = os.open(path, (os.O_RDWR | os.O_CREAT) if create else os.O_RDONLY, 0o666)
        except FileNotFoundError:
            yield False
            return
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
                        | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            yield False
            return
        except BaseException:
            os.close(fd)
            raise
        try:
            st = os.stat(path)
            same = os.path.samestat(st, os.fstat(fd))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
        if not create:
            yield False
            return
    try:
        yield True
    finally:
        if not shared:
            with contextlib.suppress(OSError):
                os.unlink(path)
        os.close(fd)


def _write_tmp(path: str, data: bytes) -> str:
    """``data`` in a new temporary file next to ``path`` (mode ``0o666 & ~umask``), synced."""
    folder, name = os.path.split(path)
    while True:
        tmp = os.path.join(folder, f".{name}.{secrets.token_hex(6)}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            break
        except FileExistsError:  # pragma: no cover - 48 random bits
            continue
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return tmp


def _fsync_dir(folder: str) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder or ".", os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def _open_regular(path: str, limit: int, what: str):
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


def _sha256_of(fh, size: int) -> str:
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


def _identity(path: str):
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size


# ---------------------------------------------------------------------------------------------
# writing


def write_run(out_dir: str, planned: grid.PlannedRun, hist: History, index: int, *, facts: dict,
              save_params: bool = False, group_size: int = 1,
              problem_sha256: Optional[str] = None) -> str:
    """Store seed ``index`` of a (seed-batched) History as one finished run.

    Args:
      out_dir: the store (an existing folder).
      planned: the run's id, group and canonical config.
      hist: the History of the call that computed the run.
      index: the run's place in ``hist`` (its seed axis, when batched).
      facts: the problem's known constants (:func:`problem_facts`) and the topology's.
      save_params: also store the run's final parameters.
      group_size: how many runs the call computed (each record holds the call's seconds).
      problem_sha256: the problem's :func:`problem_fingerprint`, recorded for sweeps to compare.

    Returns:
      The JSON path. Writers of one run wait for each other; the record is in place, whole, when
      this returns.
    """
    arrays = {"steps": np.asarray(hist.steps)}
    batched = hist.batched
    for name, values in hist.metrics.items():
        v = np.asarray(values, dtype=np.float64)
        arrays[f"metric/{name}"] = v[index] if batched else v
    if save_params and hist.params is not None:
        import jax

        for path, leaf in jax.tree_util.tree_flatten_with_path(hist.params)[0]:
            a = np.asarray(leaf)
            arrays[f"param/{jax.tree_util.keystr(path)}"] = a[index] if batched else a
    clash = sorted(set(hist.metrics) & _columns(planned.config))
    if clash:
        raise ValueError(f"run {planned.id}: metric {clash[0]!r} has the name of a column of "
                         f"the results (load_results); rename it.")
    param_bytes = sum(a.nbytes for k, a in arrays.items() if k.startswith("param/"))
    if param_bytes > MAX_PARAM_BYTES:
        raise ValueError(f"run {planned.id}: its parameters take {param_bytes} bytes, more than "
                         f"the store's limit MAX_PARAM_BYTES = {MAX_PARAM_BYTES}; store it "
                         f"without save_params, or raise decsim.study.store.MAX_PARAM_BYTES.")
    params = sum(1 for k in arrays if k.startswith("param/"))
    if len(arrays) > MAX_MEMBERS or len(arrays) - params > _MAX_SERIES:
        raise ValueError(f"run {planned.id}: {len(arrays)} arrays are more than the store holds "
                         f"({MAX_MEMBERS} in all, {_MAX_SERIES} metrics).")
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    data = buf.getvalue()
    json_path, npz_path = _paths(out_dir, planned.id)
    diverged = bool(np.atleast_1d(hist.diverged)[index])
    step = int(np.atleast_1d(hist.diverged_step)[index])
    final = {}
    for name, values in hist.metrics.items():
        v = np.asarray(values, dtype=np.float64)
        v = v[index] if batched else v
        finite = v[np.isfinite(v)]
        final[name] = float(finite[-1]) if finite.size else None
    record = {
        "format": FORMAT,
        "id": planned.id,
        "group": planned.group,
        "config": planned.config,
        "status": "diverged" if diverged else "ok",
        "diverged_step": step,
        "npz_sha256": hashlib.sha256(data).hexdigest(),
        "info": {
            "algorithm": hist.config.get("algorithm"),
            "problem": hist.config.get("problem"),
            "topology": hist.config.get("topology"),
            "n_workers": hist.config.get("n_workers"),
            "spectral_gap": hist.config.get("spectral_gap"),
            "hparams": _own_hparams(hist.config.get("hparams"), index),
            **facts,
        },
        "final": final,
        "compile_seconds": float(hist.compile_seconds),
        "run_seconds": float(hist.run_seconds),
        "group_size": int(group_size),
        "decsim_version": _version(),
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    if problem_sha256 is not None:
        record["problem_sha256"] = str(problem_sha256)
    record = json_safe(record)
    record["record_sha256"] = _record_digest(record)
    text = json.dumps(record, indent=1, allow_nan=False).encode()
    if len(text) > MAX_JSON_BYTES:
        raise ValueError(f"run {planned.id}: its record takes {len(text)} bytes, more than the "
                         f"store's limit MAX_JSON_BYTES = {MAX_JSON_BYTES}.")
    with _locked(_lock_path(out_dir, planned.id)):
        _settle_prev(out_dir, planned.id)
        npz_tmp = _write_tmp(npz_path, data)
        try:
            json_tmp = _write_tmp(json_path, text)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(npz_tmp)
            raise
        prev = _prev_path(out_dir, planned.id)
        try:
            _keep_prev(npz_path, prev)  # the old record stays readable until the JSON moves
            os.replace(npz_tmp, npz_path)
            os.replace(json_tmp, json_path)
        except BaseException:
            for tmp in (npz_tmp, json_tmp):
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
            raise
        with contextlib.suppress(FileNotFoundError):
            os.unlink(prev)
        _fsync_dir(out_dir)
    return json_path


def _keep_prev(npz_path: str, prev: str) -> None:
    """``prev`` = the current NPZ (a hard link; a copy where the file system has none)."""
    try:
        os.link(npz_path, prev)
    except FileNotFoundError:
        return  # no old record
    except OSError:
        with contextlib.suppress(OSError):
            shutil.copyfile(npz_path, prev)


def _settle_prev(out_dir: str, run_id: str) -> None:
    """Under the run's lock: put back or remove the ``.prev`` NPZ of a write that was killed.

    Its JSON still names the old NPZ (the kill came between the two moves): the old NPZ goes
    back. Otherwise (the JSON names the new NPZ, or neither) it is removed.
    """
    prev = _prev_path(out_dir, run_id)
    if not os.path.lexists(prev):
        return
    json_path, npz_path = _paths(out_dir, run_id)
    try:
        record = _read_json(json_path)
        want = record.get("npz_sha256") if isinstance(record, dict) else None
        with _open_regular(prev, _MAX_NPZ_BYTES, "NPZ") as (fh, size):
            prev_sha = _sha256_of(fh, size)
        try:
            with _open_regular(npz_path, _MAX_NPZ_BYTES, "NPZ") as (fh, size):
                npz_sha = _sha256_of(fh, size)
        except (OSError, BadRecord):
            npz_sha = None
        if want == prev_sha and npz_sha != want:
            os.replace(prev, npz_path)
            return
    except (OSError, BadRecord, ValueError):
        pass
    with contextlib.suppress(OSError):
        os.unlink(prev)


def tidy(out_dir: str, *, older_than: float = STALE_SECONDS) -> list:
    """Remove what killed writes left in a store; returns the paths removed.

    Removes temporary files (``.<id>.json.*.tmp``, ``.<id>.npz.*.tmp``) whose modification time
    is more than ``older_than`` seconds ago and whose run no writer holds the lock of, lock files
    nobody holds, and puts back or removes ``.<id>.npz.prev`` files (see the module docstring).
    Files of runs being written now are left alone. Errors (a read-only store) are ignored.

    Args:
      out_dir: the store.
      older_than: the age in seconds from which a temporary file is stale.

    Returns:
      The paths removed (temporary files, lock files, ``.prev`` files), sorted.
    """
    removed = []
    try:
        names = os.listdir(out_dir)
    except OSError:
        return removed
    now = time.time()
    for name in sorted(names):
        path = os.path.join(out_dir, name)
        m_tmp, m_prev, m_lock = _TMP.fullmatch(name), _PREV.fullmatch(name), _LOCK.fullmatch(name)
        try:
            if m_tmp:
                if now - os.lstat(path).st_mtime <= older_than:
                    continue
                with _locked(_lock_path(out_dir, m_tmp.group(1)), blocking=False) as held:
                    if held:
                        os.unlink(path)
                        removed.append(path)
            elif m_prev:
                with _locked(_lock_path(out_dir, m_prev.group(1)), blocking=False) as held:
                    if held:
                        _settle_prev(out_dir, m_prev.group(1))
                        if not os.path.lexists(path):
                            removed.append(path)
            elif m_lock:
                with _locked(path, blocking=False, create=False) as held:
                    pass
                if held and not os.path.lexists(path):
                    removed.append(path)
        except OSError:
            continue
    return removed


def _own_hparams(hparams, index: int):
    """Run ``index``'s hyperparameters from a History's (per-run lists in a batched call)."""
    if not hparams:
        return hparams
    return {k: (v[index] if isinstance(v, (list, tuple)) else v) for k, v in hparams.items()}


def _version() -> str:
    from .. import __version__

    return __version__


# ---------------------------------------------------------------------------------------------
# reading: the JSON record


def _no_constant(name):
    raise ValueError(f"the JSON holds {name}, which the format never writes")


def _read_json(path: str):
    """The parsed JSON of a record (bounded in size and depth); ``FileNotFoundError`` if it is
    not there; :class:`BadRecord` if it cannot be read."""
    with _open_regular(path, MAX_JSON_BYTES, "JSON") as (fh, size):
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


def _record_problem(record, run_id: str) -> Optional[str]:
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
    if "record_sha256" in record and _record_digest(record) != record["record_sha256"]:
        return "the record does not match its own checksum record_sha256 (it was edited)"
    return None


# ---------------------------------------------------------------------------------------------
# reading: the NPZ

_EOCD = struct.Struct("<4s4H2LH")  # end of central directory
_EOCD64_LOCATOR = struct.Struct("<4sLQL")
_EOCD64 = struct.Struct("<4sQ2H2L4Q")


def _zip_directory(fh, size: int, path: str) -> None:
    """Check the zip's end-of-central-directory record (found as :mod:`zipfile` finds it) before
    :mod:`zipfile` reads the directory: at most :data:`MAX_MEMBERS` entries and a directory of
    bounded size, so a header that claims 10^12 entries is refused without reading them."""
    if size < _EOCD.size:
        raise BadRecord(path, "the NPZ is too short to be a zip file")
    fh.seek(size - _EOCD.size)
    tail = fh.read(_EOCD.size)
    if tail[:4] == b"PK\x05\x06" and tail[-2:] == b"\0\0":
        pos = size - _EOCD.size
    else:
        start = max(size - (1 << 16) - _EOCD.size, 0)
        fh.seek(start)
        tail = fh.read(size - start)
        found = tail.rfind(b"PK\x05\x06")
        if found < 0 or found + _EOCD.size > len(tail):
            raise BadRecord(path, "the NPZ is not a zip file (no end of central directory)")
        pos = start + found
        tail = tail[found:found + _EOCD.size]
    entries, dir_size = _EOCD.unpack(tail)[4:6]
    if pos >= _EOCD64_LOCATOR.size + _EOCD64.size:
        fh.seek(pos - _EOCD64_LOCATOR.size)
        if fh.read(4) == b"PK\x06\x07":
            fh.seek(pos - _EOCD64_LOCATOR.size - _EOCD64.size)
            rec = _EOCD64.unpack(fh.read(_EOCD64.size))
            if rec[0] == b"PK\x06\x06":
                entries, dir_size = max(entries, rec[7]), rec[8]
    if entries > MAX_MEMBERS:
        raise BadRecord(path, f"the NPZ's zip directory claims {entries} members, more than "
                              f"the limit of {MAX_MEMBERS}")
    if dir_size > _MAX_ZIP_DIRECTORY:
        raise BadRecord(path, f"the NPZ's zip directory claims {dir_size} bytes, more than the "
                              f"limit of {_MAX_ZIP_DIRECTORY}")


def _npy_prefix(fp, name: str, path: str) -> bytes:
    """The magic, version, length and header of an .npy member (at most
    :data:`_NPY_PREFIX_MAX` bytes read)."""
    head = fp.read(10)
    if len(head) < 10 or head[:6] != b"\x93NUMPY" or head[6] not in (1, 2):
        raise BadRecord(path, f"member {name!r} is not an .npy array of format version 1 or 2")
    if head[6] == 1:
        length = struct.unpack("<H", head[8:10])[0]
    else:
        head += fp.read(2)
        length = struct.unpack("<I", head[8:12])[0]
    if length > _NPY_HEADER_MAX:
        raise BadRecord(path, f"member {name!r} has a header of {length} bytes, more than "
                              f"{_NPY_HEADER_MAX}")
    header = fp.read(length)
    if len(header) != length:
        raise BadRecord(path, f"member {name!r} ends inside its header")
    return head + header


@functools.lru_cache(maxsize=512)
def _npy_header(prefix: bytes) -> tuple:
    """``(shape, fortran_order, dtype)`` of an .npy prefix (parsed by numpy; equal headers, as
    every metric of a store has, are parsed once)."""
    fp = io.BytesIO(prefix)
    version = np.lib.format.read_magic(fp)
    read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
            else np.lib.format.read_array_header_2_0)
    return read(fp, max_header_size=_NPY_HEADER_MAX)


def _read_npz(fh, size: int, path: str, record: dict, want_arrays: bool) -> dict:
    """The arrays of an NPZ (``steps`` only, unless ``want_arrays``), every member checked
    against the record before it is read."""
    _zip_directory(fh, size, path)
    fh.seek(0)
    steps_cfg = record["config"]["steps"]
    series_cap = _NPY_PREFIX_MAX + 8 * (steps_cfg + 1)
    out, lengths, params = {}, {}, 0
    with zipfile.ZipFile(fh) as zf:
        infos = zf.infolist()
        if len(infos) > MAX_MEMBERS:
            raise BadRecord(path, f"the NPZ has {len(infos)} members, more than {MAX_MEMBERS}")
        series = 0
        for info in infos:
            name = info.filename
            key = name[:-4] if name.endswith(".npy") else None
            if key is None or not (key == "steps" or re.fullmatch(r"(metric|param)/.+", key)):
                raise BadRecord(path, f"the NPZ holds {name!r}, which is no member of the format")
            if key in out or key in lengths:
                raise BadRecord(path, f"the NPZ holds member {name!r} twice")
            if info.flag_bits & 0x1 or info.compress_type not in (zipfile.ZIP_STORED,
                                                                 zipfile.ZIP_DEFLATED):
                raise BadRecord(path, f"member {name!r} is encrypted or uses a compression the "
                                      f"store never writes")
            if key.startswith("param/"):
                params += info.file_size
                if params > MAX_PARAM_BYTES:
                    raise BadRecord(path, f"the NPZ's parameters declare more than "
                                          f"MAX_PARAM_BYTES = {MAX_PARAM_BYTES} bytes")
            else:
                series += 1
                if series > _MAX_SERIES:
                    raise BadRecord(path, f"the NPZ has more than {_MAX_SERIES} metrics")
                if info.file_size > series_cap:
                    raise BadRecord(path, f"member {name!r} declares {info.file_size} bytes "
                                          f"uncompressed; a run of {steps_cfg} steps stores at "
                                          f"most {series_cap}")
            with zf.open(info) as fp:
                prefix = _npy_prefix(fp, name, path)
                shape, fortran, dtype = _npy_header(prefix)
                if any(d < 0 for d in shape) or dtype.hasobject:
                    raise BadRecord(path, f"member {name!r} holds Python objects or has a "
                                          f"negative dimension")
                nbytes = math.prod(shape) * dtype.itemsize
                if len(prefix) + nbytes != info.file_size:
                    raise BadRecord(path, f"member {name!r}: its header says {shape} {dtype} "
                                          f"({len(prefix) + nbytes} bytes) but it holds "
                                          f"{info.file_size}")
                if key == "steps" and (len(shape) != 1 or dtype.kind not in "iu"
                                       or not 1 <= shape[0] <= steps_cfg + 1):
                    raise BadRecord(path, f"steps is {shape} {dtype}, not 1 to {steps_cfg + 1} "
                                          f"integers")
                if key.startswith("metric/") and (len(shape) != 1 or dtype.kind != "f"):
                    raise BadRecord(path, f"metric {key[7:]!r} is {shape} {dtype}, not a "
                                          f"vector of floats")
                lengths[key] = shape[0] if shape else None
                if key == "steps" or (want_arrays and not key.startswith("param/")):
                    data = fp.read(nbytes)  # a few bytes per evaluation (bounded above)
                    if len(data) != nbytes:
                        raise BadRecord(path, f"member {name!r} ends early")
                    out[key] = np.frombuffer(data, dtype).reshape(
                        shape, order="F" if fortran else "C").copy()
            if want_arrays and key.startswith("param/"):
                with zf.open(info) as fp:  # streamed into the array (up to MAX_PARAM_BYTES)
                    out[key] = np.lib.format.read_array(fp, allow_pickle=False,
                                                        max_header_size=_NPY_HEADER_MAX)
    if "steps" not in lengths:
        raise BadRecord(path, "the NPZ has no steps")
    for key, n in lengths.items():
        if key.startswith("metric/") and n != lengths["steps"]:
            raise BadRecord(path, f"metric {key[7:]!r} has {n} values for {lengths['steps']} "
                                  f"evaluations")
    clash = sorted({k[len("metric/"):] for k in lengths if k.startswith("metric/")}
                   & _columns(record["config"]))
    if clash:
        raise BadRecord(path, f"metric {clash[0]!r} has the name of a column of the results")
    steps = out["steps"]
    if steps[0] < 0 or steps[-1] > steps_cfg or np.any(steps[1:] < steps[:-1]):
        raise BadRecord(path, f"steps are not increasing evaluation steps in [0, {steps_cfg}]")
    return out


def _read_once(out_dir: str, run_id: str, arrays: bool) -> tuple:
    """One read of a run; ``FileNotFoundError`` when its JSON is not there, :class:`BadRecord`
    for anything else (whatever a parser raised on a crafted file included)."""
    json_path, npz_path = _paths(out_dir, run_id)
    path = json_path
    try:
        record = _read_json(json_path)
        problem = _record_problem(record, run_id)
        if problem is not None:
            raise BadRecord(json_path, problem)
        want = record["npz_sha256"]
        for path in (npz_path, _prev_path(out_dir, run_id)):
            try:
                with _open_regular(path, _MAX_NPZ_BYTES, "NPZ") as (fh, size):
                    if _sha256_of(fh, size) != want:
                        continue
                    return record, _read_npz(fh, size, path, record, arrays)
            except FileNotFoundError:
                continue
        path = npz_path
        if not os.path.lexists(npz_path):
            raise BadRecord(npz_path, "the run's NPZ is missing")
        raise BadRecord(npz_path, "the NPZ does not match the checksum npz_sha256 in its JSON")
    except BadRecord:
        raise
    except FileNotFoundError:
        if path != json_path:  # pragma: no cover - the NPZ vanished as it was read
            raise BadRecord(path, "the run's NPZ is missing") from None
        raise
    except Exception as err:  # a bad record is skipped, never fatal
        raise BadRecord(path, f"unreadable ({type(err).__name__}: {err})") from None


def verify_run(out_dir: str, run_id: str, *, arrays: bool = True) -> tuple:
    """``(record, arrays)`` of a finished run, every check of the format done.

    Args:
      out_dir: the store.
      run_id: the run's id.
      arrays: also read the metric and parameter arrays (else ``arrays`` holds only ``steps``).

    Returns:
      The record (the parsed JSON) and ``{name: array}`` of the NPZ (``steps``,
      ``metric/<name>``, ``param/<path>``).

    Raises:
      FileNotFoundError: the store has no record of this run (it is not there, or not yet: an
        NPZ without its JSON is what an interrupted first write leaves).
      BadRecord: the record is there but damaged, edited or crafted (its ``path`` and
        ``reason`` say which file and why).
    """
    json_path, _ = _paths(out_dir, run_id)
    lock = _lock_path(out_dir, run_id)
    for attempt in range(_READ_ATTEMPTS):
        before = _identity(json_path)
        # lock-free first; a retry (the run changed while it was read) waits for its writer
        with _reader_lock(lock, attempt):
            try:
                return _read_once(out_dir, run_id, arrays)
            except BadRecord:
                changed = _identity(json_path) != before or os.path.lexists(lock)
                if not changed or attempt == _READ_ATTEMPTS - 1:
                    raise
    raise AssertionError("unreachable")  # pragma: no cover


@contextlib.contextmanager
def _reader_lock(lock: str, attempt: int):
    """No lock on a reader's first attempt; then a shared lock if a writer made the lock file;
    on the last attempt one the reader creates if it must (so no writer can start meanwhile),
    where the store is writable."""
    with contextlib.ExitStack() as stack:
        if attempt:
            try:
                stack.enter_context(_locked(lock, shared=True,
                                            create=attempt == _READ_ATTEMPTS - 1))
            except OSError:  # a read-only store
                stack.enter_context(_locked(lock, shared=True, create=False))
        yield


def read_run(out_dir: str, run_id: str, *, arrays: bool = True):
    """``(record, arrays)`` of a finished run, or ``None`` when it is missing, partial, corrupt
    or edited (:func:`verify_run` says why)."""
    try:
        return verify_run(out_dir, run_id, arrays=arrays)
    except (OSError, BadRecord):
        return None


def is_complete(out_dir: str, run_id: str) -> bool:
    """Whether the store holds a finished, intact run with this id (every check but reading the
    metric arrays, which the NPZ checksum covers)."""
    return read_run(out_dir, run_id, arrays=False) is not None


def _read_finished_runs(out_dir: str, ids=None) -> list:
    """``[(record, arrays)]`` of the finished, intact runs in ``out_dir`` (all of them, sorted by
    id, or those of ``ids``); missing and partial runs are left out, damaged ones too with a
    :class:`StoreWarning`."""
    if not os.path.isdir(out_dir):
        if not os.path.exists(out_dir):
            raise FileNotFoundError(errno.ENOENT, "no result store (folder) at", out_dir)
        raise NotADirectoryError(errno.ENOTDIR, "a result store is a folder; not one", out_dir)
    if ids is None:
        ids = sorted(name[:-5] for name in os.listdir(out_dir)
                     if name.endswith(".json") and _ID.fullmatch(name[:-5]))
    out = []
    for run_id in ids:
        try:
            out.append(verify_run(out_dir, run_id))
        except FileNotFoundError:
            continue
        except BadRecord as err:
            warnings.warn(f"decsim store: skipped run {run_id}: {err}", StoreWarning,
                          stacklevel=3)
    return out


# ---------------------------------------------------------------------------------------------
# reading a store as a table or as Histories


def _as_tuples(value):
    """Lists (nested) -> tuples, so config values can be DataFrame cells that group and compare."""
    return tuple(_as_tuples(v) for v in value) if isinstance(value, list) else value


_FIXED_COLUMNS = frozenset({"run", "group", "algorithm", "problem", "topology", "spectral_gap",
                            "seed", "status", "diverged", "diverged_step", "f_star", "step"})


def _columns(config: dict) -> set:
    """The columns :func:`load_results` gives a run besides its metrics (no metric may have the
    name of one)."""
    return set(_FIXED_COLUMNS) | set(grid.flatten({k: v for k, v in config.items()
                                                   if k != "seed"}))


def _run_columns(record: dict) -> dict:
    info = record.get("info", {})
    cols = {"run": record["id"], "group": record["group"]}
    cols.update({k: info.get(k) for k in ("algorithm", "problem", "topology", "spectral_gap")})
    config = {k: v for k, v in record["config"].items() if k != "seed"}
    cols.update(grid.flatten(config, lambda _, v: _as_tuples(v)))
    cols["seed"] = record["config"]["seed"]
    cols["status"] = record["status"]
    cols["diverged"] = record["status"] == "diverged"
    cols["diverged_step"] = record["diverged_step"]
    if info.get("f_star") is not None:
        cols["f_star"] = info["f_star"]
    return cols


def load_results(out_dir: str, *, final: bool = False):
    """The finished runs of a result store as a tidy pandas DataFrame.

    One row per evaluation of every run (``final=True``: one row per run with the last finite
    value of every metric). Columns: ``run`` (id), ``group`` (the same config but the seed),
    ``algorithm`` / ``problem`` / ``topology`` (display names), ``spectral_gap``, every config
    entry as a dotted column (``algorithm.name``, ``algorithm.learning_rate``, ``topology.name``,
    ``n_workers``, ``steps``, ...), ``seed``, ``status`` (``ok``/``diverged``), ``diverged``,
    ``diverged_step``, ``step`` and the metrics (``loss``, ``grad_norm_sq``, ``consensus``,
    ``grad_evals``, ``comm_rounds``, ``bits``, ...), and ``suboptimality = loss − f*`` when the
    problem knows f* (quadratics). Runs not written to the end are left out; damaged, edited or
    crafted records are skipped with a :class:`StoreWarning` naming the file and the reason.
    Raises ``FileNotFoundError`` if ``out_dir`` does not exist.
    """
    import pandas as pd

    frames = []
    for record, arrays in _read_finished_runs(out_dir):
        cols = _run_columns(record)
        metrics = {k[len("metric/"):]: v for k, v in arrays.items() if k.startswith("metric/")}
        if "f_star" in cols and "loss" in metrics:
            metrics["suboptimality"] = metrics["loss"] - cols["f_star"]
        if final:
            row = dict(cols)
            row["step"] = int(arrays["steps"][-1])
            for name, v in metrics.items():
                finite = v[np.isfinite(v)]
                row[name] = float(finite[-1]) if finite.size else float("nan")
            frames.append(pd.DataFrame([row]))
        else:
            frame = pd.DataFrame({"step": arrays["steps"], **metrics})
            for k, v in reversed(list(cols.items())):
                frame.insert(0, k, [v] * len(frame))
            frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=["run", "group", "algorithm", "problem", "topology", "seed",
                                     "status", "step", "loss"])
    return pd.concat(frames, ignore_index=True)


def load_histories(out_dir: str, *, groups=None) -> dict:
    """``{group id: History}``: the finished runs of a store, the seeds of each group stacked as
    one seed-batched History (as ``ds.run(..., seeds=[...])`` returns), so ``ds.plot.convergence``
    draws them with a band over seeds. ``groups`` restricts to some group ids. Damaged records
    are skipped with a :class:`StoreWarning`, as in :func:`load_results`."""
    by_group = collections.defaultdict(list)
    for record, arrays in _read_finished_runs(out_dir):
        if groups is None or record["group"] in groups:
            by_group[record["group"]].append((record, arrays))
    out = {}
    for gid, items in by_group.items():
        items.sort(key=lambda ra: ra[0]["config"]["seed"])
        steps = items[0][1]["steps"]
        items = [it for it in items if np.array_equal(it[1]["steps"], steps)]
        names = sorted({k for _, a in items for k in a if k.startswith("metric/")})
        metrics = {k[len("metric/"):]: np.stack([a[k] for _, a in items]) for k in names
                   if all(k in a for _, a in items)}
        record = items[0][0]
        info = record["info"]
        cfg = {k: v for k, v in record["config"].items() if k != "seed"}
        config = {"algorithm": info.get("algorithm"), "problem": info.get("problem"),
                  "topology": info.get("topology"), "n_workers": info.get("n_workers"),
                  "spectral_gap": info.get("spectral_gap"), "hparams": info.get("hparams"),
                  "steps": cfg["steps"], "eval_every": cfg["eval_every"], "run_config": cfg,
                  "group": gid, "runs": [r["id"] for r, _ in items], "f_star": info.get("f_star")}
        out[gid] = History(
            steps=steps, metrics=metrics, params=None,
            diverged=np.array([r["status"] == "diverged" for r, _ in items]),
            diverged_step=np.array([r["diverged_step"] for r, _ in items]),
            seeds=[r["config"]["seed"] for r, _ in items], config=config,
            # each record holds its whole call's seconds; a run's share is 1/group_size of them
            compile_seconds=sum(r["compile_seconds"] / r.get("group_size", 1) for r, _ in items),
            run_seconds=sum(r["run_seconds"] / r.get("group_size", 1) for r, _ in items))
    return out
