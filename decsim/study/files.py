"""The files of a run in a store, and the locks its writers and readers take.

A run's files are ``<id>.json`` and ``<id>.npz`` (:func:`run_paths`); while a write replaces
them, ``.<id>.npz.prev`` (:func:`prev_path`) keeps the old NPZ. *Concurrent writers are safe*:
writers of one run take an exclusive ``fcntl.flock`` on ``.<id>.lock`` (:func:`lock_path`,
:func:`locked`) while they write (two sweeps on one folder, or shards, never interleave the
files of a run); readers take no lock but retry, under a shared lock, a run that a writer
changed while they read it (:func:`identity` tells that it changed).
"""

from __future__ import annotations

import contextlib
import os

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: writers do not lock
    fcntl = None

__all__ = ["run_paths", "lock_path", "prev_path", "locked", "identity"]


def run_paths(out_dir: str, run_id: str) -> tuple:
    """``(json_path, npz_path)`` of a run."""
    return os.path.join(out_dir, f"{run_id}.json"), os.path.join(out_dir, f"{run_id}.npz")


def lock_path(out_dir: str, run_id: str) -> str:
    """The lock file of a run's writers."""
    return os.path.join(out_dir, f".{run_id}.lock")


def prev_path(out_dir: str, run_id: str) -> str:
    """Where a write keeps the old NPZ until the new JSON is in place."""
    return os.path.join(out_dir, f".{run_id}.npz.prev")


@contextlib.contextmanager
def locked(path: str, *, shared: bool = False, blocking: bool = True, create: bool = True):
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


def identity(path: str):
    """What changes when a file is replaced or rewritten (``None`` if it is not there)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size
