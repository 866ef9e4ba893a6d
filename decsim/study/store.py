"""The result store: the on-disk format of finished runs, and reading a store back.

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
files) counts as not there: a sweep recomputes it. :func:`verify_run` says why a run does not
count as finished.

**Guarantees**, each kept by the module that holds its code:

- *Crash safety* (:mod:`decsim.study.writing`): a process killed at any moment leaves the old
  record or the new one.
- *A bad record is skipped, never fatal*: :func:`load_results` and :func:`load_histories` skip
  it with a :class:`StoreWarning` naming the file and the reason. Reading is bounded in memory
  and time (:mod:`decsim.study.records`, :mod:`decsim.study.npz`): by :data:`MAX_JSON_BYTES`,
  :data:`MAX_JSON_DEPTH`, :data:`MAX_MEMBERS` and :data:`MAX_PARAM_BYTES` (set them in
  :mod:`decsim.study.records`), all checked before any array is read.
- *Concurrent writers are safe* (:mod:`decsim.study.files`): writers of one run take its lock;
  readers take none but retry, under a shared lock, a run that a writer changed while they read
  it.
- *Stale files*: :func:`tidy` (:mod:`decsim.study.writing`) removes what killed writes left.
- *Problem fingerprints* (:mod:`decsim.study.fingerprint`): a sweep reuses a stored run of a
  user problem only when its :func:`problem_fingerprint` is unchanged.

:func:`load_results` reads a store back as a tidy pandas DataFrame (one row per evaluation and
run), :func:`load_histories` as :class:`decsim.History` objects (seeds of a group stacked).
Every public name of those modules that the store had is re-exported here; the limits
(``MAX_*``) live: setting ``decsim.study.store.MAX_PARAM_BYTES`` sets the one the checks read.

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
import errno
import os
import re
import warnings

import numpy as np

from .._types import History
from . import grid
from .files import identity, lock_path, locked, prev_path, run_paths
from .fingerprint import problem_facts, problem_fingerprint
from .npz import read_npz
from .records import (  # the limits live in records (set them there: records.MAX_PARAM_BYTES)
    FORMAT,
    MAX_JSON_BYTES,
    MAX_JSON_DEPTH,
    MAX_MEMBERS,
    MAX_NPZ_BYTES,
    MAX_PARAM_BYTES,
    BadRecord,
    StoreWarning,
    json_safe,
    open_regular,
    read_json,
    record_problem,
    sha256_of,
)
from .writing import STALE_SECONDS, tidy, write_run

__all__ = ["FORMAT", "write_run", "read_run", "verify_run", "is_complete", "load_results",
           "load_histories", "problem_facts", "problem_fingerprint", "json_safe", "tidy",
           "BadRecord", "StoreWarning", "STALE_SECONDS",
           # properties of this module's class (_StoreModule, at the end): records' limits, live
           "MAX_JSON_BYTES", "MAX_JSON_DEPTH", "MAX_MEMBERS", "MAX_PARAM_BYTES"]

_READ_ATTEMPTS = 3
_ID = re.compile(r"[0-9a-f]{16}")


# ---------------------------------------------------------------------------------------------
# reading a run


def _read_once(out_dir: str, run_id: str, arrays: bool) -> tuple:
    """One read of a run; ``FileNotFoundError`` when its JSON is not there, :class:`BadRecord`
    for anything else (whatever a parser raised on a crafted file included)."""
    json_path, npz_path = run_paths(out_dir, run_id)
    path = json_path
    try:
        record = read_json(json_path)
        problem = record_problem(record, run_id)
        if problem is not None:
            raise BadRecord(json_path, problem)
        want = record["npz_sha256"]
        for path in (npz_path, prev_path(out_dir, run_id)):
            try:
                with open_regular(path, MAX_NPZ_BYTES, "NPZ") as (fh, size):
                    if sha256_of(fh, size) != want:
                        continue
                    return record, read_npz(fh, size, path, record, arrays)
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
    json_path, _ = run_paths(out_dir, run_id)
    lock = lock_path(out_dir, run_id)
    for attempt in range(_READ_ATTEMPTS):
        before = identity(json_path)
        # lock-free first; a retry (the run changed while it was read) waits for its writer
        with _reader_lock(lock, attempt):
            try:
                return _read_once(out_dir, run_id, arrays)
            except BadRecord:
                changed = identity(json_path) != before or os.path.lexists(lock)
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
                stack.enter_context(locked(lock, shared=True,
                                           create=attempt == _READ_ATTEMPTS - 1))
            except OSError:  # a read-only store
                stack.enter_context(locked(lock, shared=True, create=False))
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
