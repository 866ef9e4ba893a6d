"""Writing a run into the store, safely against crashes and other writers, and tidying up.

- *Crash safety*: :func:`write_run` prepares both files under temporary names, then moves them
  into place with ``os.replace`` (atomic), the NPZ first, keeping a hard link ``.<id>.npz.prev``
  to the old NPZ until the JSON is in place (a copy where the file system has no hard links). A
  process killed at any moment (``kill -9``) leaves the old record or the new one: readers fall
  back on ``.prev`` while it matches the JSON, and the next write or :func:`tidy` puts it back.
  (A power loss may at worst leave the run not finished: the checksums see any mix of old and
  new.) Writers of one run hold its lock (:mod:`decsim.study.files`) while they write.
- *Stale files*: :func:`tidy` (run at the start of every sweep) removes the temporary files of
  killed writes (``.<id>.json.*.tmp``, ``.<id>.npz.*.tmp``) older than :data:`STALE_SECONDS`
  whose run nobody is writing, leftover lock files, and settles any ``.prev``. Store files get
  the usual permissions, ``0o666 & ~umask``.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import io
import json
import os
import re
import secrets
import shutil
import time
from typing import Optional

import numpy as np

from .._types import History
from . import grid, records
from .files import lock_path, locked, prev_path, run_paths
from .records import (
    FORMAT,
    MAX_NPZ_BYTES,
    MAX_SERIES,
    BadRecord,
    json_safe,
    open_regular,
    read_json,
    record_digest,
    result_columns,
    sha256_of,
)

__all__ = ["write_run", "tidy", "STALE_SECONDS"]

#: Temporary files of a write older than this many seconds are stale (removed by :func:`tidy`).
STALE_SECONDS = 300.0

_TMP = re.compile(r"\.([0-9a-f]{16})\.(json|npz)\..+\.tmp")
_LOCK = re.compile(r"\.([0-9a-f]{16})\.lock")
_PREV = re.compile(r"\.([0-9a-f]{16})\.npz\.prev")


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


def write_run(out_dir: str, planned: grid.PlannedRun, hist: History, index: int, *, facts: dict,
              save_params: bool = False, group_size: int = 1,
              problem_sha256: Optional[str] = None) -> str:
    """Store seed ``index`` of a (seed-batched) History as one finished run.

    Args:
      out_dir: the store (an existing folder).
      planned: the run's id, group and canonical config.
      hist: the History of the call that computed the run.
      index: the run's place in ``hist`` (its seed axis, when batched).
      facts: the problem's known constants (:func:`~decsim.study.fingerprint.problem_facts`)
        and the topology's.
      save_params: also store the run's final parameters.
      group_size: how many runs the call computed (each record holds the call's seconds).
      problem_sha256: the problem's :func:`~decsim.study.fingerprint.problem_fingerprint`,
        recorded for sweeps to compare.

    Returns:
      The JSON path. Writers of one run wait for each other; the record is in place, whole, when
      this returns.
    """
    run = hist.select(index)  # this run alone, whether or not the call was batched
    arrays = {"steps": np.asarray(run.steps)}
    for name, values in run.metrics.items():
        arrays[f"metric/{name}"] = np.asarray(values, dtype=np.float64)
    if save_params and run.params is not None:
        import jax

        for path, leaf in jax.tree_util.tree_flatten_with_path(run.params)[0]:
            arrays[f"param/{jax.tree_util.keystr(path)}"] = np.asarray(leaf)
    clash = sorted(set(hist.metrics) & result_columns(planned.config))
    if clash:
        raise ValueError(f"run {planned.id}: metric {clash[0]!r} has the name of a column of "
                         f"the results (load_results); rename it.")
    param_bytes = sum(a.nbytes for k, a in arrays.items() if k.startswith("param/"))
    if param_bytes > records.MAX_PARAM_BYTES:
        raise ValueError(f"run {planned.id}: its parameters take {param_bytes} bytes, more than "
                         f"the store's limit MAX_PARAM_BYTES = {records.MAX_PARAM_BYTES}; store it "
                         f"without save_params, or raise decsim.study.records.MAX_PARAM_BYTES.")
    params = sum(1 for k in arrays if k.startswith("param/"))
    if len(arrays) > records.MAX_MEMBERS or len(arrays) - params > MAX_SERIES:
        raise ValueError(f"run {planned.id}: {len(arrays)} arrays are more than the store holds "
                         f"({records.MAX_MEMBERS} in all, {MAX_SERIES} metrics).")
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    data = buf.getvalue()
    json_path, npz_path = run_paths(out_dir, planned.id)
    diverged, step = bool(run.diverged), int(run.diverged_step)
    final = {}
    for name, values in run.metrics.items():
        v = np.asarray(values, dtype=np.float64)
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
            "hparams": run.config.get("hparams"),
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
    record["record_sha256"] = record_digest(record)
    text = json.dumps(record, indent=1, allow_nan=False).encode()
    if len(text) > records.MAX_JSON_BYTES:
        raise ValueError(f"run {planned.id}: its record takes {len(text)} bytes, more than the "
                         f"store's limit MAX_JSON_BYTES = {records.MAX_JSON_BYTES}.")
    with locked(lock_path(out_dir, planned.id)):
        _settle_prev(out_dir, planned.id)
        npz_tmp = _write_tmp(npz_path, data)
        try:
            json_tmp = _write_tmp(json_path, text)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(npz_tmp)
            raise
        prev = prev_path(out_dir, planned.id)
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
    prev = prev_path(out_dir, run_id)
    if not os.path.lexists(prev):
        return
    json_path, npz_path = run_paths(out_dir, run_id)
    try:
        record = read_json(json_path)
        want = record.get("npz_sha256") if isinstance(record, dict) else None
        with open_regular(prev, MAX_NPZ_BYTES, "NPZ") as (fh, size):
            prev_sha = sha256_of(fh, size)
        try:
            with open_regular(npz_path, MAX_NPZ_BYTES, "NPZ") as (fh, size):
                npz_sha = sha256_of(fh, size)
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
                with locked(lock_path(out_dir, m_tmp.group(1)), blocking=False) as held:
                    if held:
                        os.unlink(path)
                        removed.append(path)
            elif m_prev:
                with locked(lock_path(out_dir, m_prev.group(1)), blocking=False) as held:
                    if held:
                        _settle_prev(out_dir, m_prev.group(1))
                        if not os.path.lexists(path):
                            removed.append(path)
            elif m_lock:
                with locked(path, blocking=False, create=False) as held:
                    pass
                if held and not os.path.lexists(path):
                    removed.append(path)
        except OSError:
            continue
    return removed


def _version() -> str:
    from .. import __version__

    return __version__
