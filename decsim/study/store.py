"""The result store: the on-disk format of finished runs, in one file.

A store is a folder with one ``<id>.json`` + ``<id>.npz`` per run, ``id`` = a hash of the run's
canonical config (:func:`decsim.study.grid.run_id`, equal to :func:`decsim.config.config_hash`).
Each file is written to a temporary name and moved into place with ``os.replace`` (atomic), the
NPZ first; the JSON, written last, records the NPZ's SHA-256. A run counts as finished only when
its JSON parses, names its own id and config hash, and its NPZ matches the recorded checksum;
anything else (a missing, truncated or corrupt file) counts as not there, so a sweep reruns it. A
run that produced NaN/inf is stored with ``status = "diverged"``. No pickle anywhere
(``np.load(..., allow_pickle=False)``).

:func:`load_results` reads a store back as a tidy pandas DataFrame (one row per evaluation and
run), :func:`load_histories` as :class:`decsim.History` objects (seeds of a group stacked).

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
import datetime
import glob
import hashlib
import io
import json
import math
import os
import tempfile
import zipfile

import numpy as np

from .._types import History
from . import grid

__all__ = ["FORMAT", "write_run", "read_run", "is_complete", "load_results", "load_histories",
           "problem_facts", "json_safe"]

FORMAT = "decsim-run/1"


def _paths(out_dir: str, run_id: str) -> tuple:
    return os.path.join(out_dir, f"{run_id}.json"), os.path.join(out_dir, f"{run_id}.npz")


def _atomic_write(path: str, data: bytes) -> None:
    folder, name = os.path.split(path)
    fd, tmp = tempfile.mkstemp(dir=folder or ".", prefix=f".{name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


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


def write_run(out_dir: str, planned: grid.PlannedRun, hist: History, index: int, *, facts: dict,
              save_params: bool = False, group_size: int = 1) -> str:
    """Store seed ``index`` of a (seed-batched) History as one finished run; returns the JSON
    path."""
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
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    data = buf.getvalue()
    json_path, npz_path = _paths(out_dir, planned.id)
    _atomic_write(npz_path, data)
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
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    _atomic_write(json_path, json.dumps(json_safe(record), indent=1, allow_nan=False).encode())
    return json_path


def _own_hparams(hparams, index: int):
    """Run ``index``'s hyperparameters from a History's (per-run lists in a batched call)."""
    if not hparams:
        return hparams
    return {k: (v[index] if isinstance(v, (list, tuple)) else v) for k, v in hparams.items()}


def _version() -> str:
    from .. import __version__

    return __version__


def read_run(out_dir: str, run_id: str, *, arrays: bool = True):
    """``(record, arrays)`` of a finished run, or ``None`` when it is missing, partial or
    corrupt."""
    json_path, npz_path = _paths(out_dir, run_id)
    try:
        with open(json_path, "rb") as fh:
            record = json.loads(fh.read().decode())
        if (not isinstance(record, dict) or record.get("format") != FORMAT
                or record.get("id") != run_id or grid.run_id(record.get("config")) != run_id):
            return None
        with open(npz_path, "rb") as fh:
            data = fh.read()
        if hashlib.sha256(data).hexdigest() != record.get("npz_sha256"):
            return None
        if not arrays:
            return record, None
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            loaded = {k: npz[k] for k in npz.files}
        if "steps" not in loaded:
            return None
        return record, loaded
    except (OSError, ValueError, UnicodeDecodeError, KeyError, TypeError, EOFError,
            zipfile.BadZipFile):
        return None



def is_complete(out_dir: str, run_id: str) -> bool:
    """Whether the store holds a finished, intact run with this id."""
    return read_run(out_dir, run_id, arrays=False) is not None


def _read_finished_runs(out_dir: str, ids=None) -> list:
    """``[(record, arrays)]`` of the finished, intact runs in ``out_dir`` (all of them, sorted by
    id, or those of ``ids``); missing, partial and corrupt runs are left out."""
    if ids is None:
        ids = sorted(os.path.basename(p)[:-5] for p in glob.glob(os.path.join(out_dir, "*.json"))
                     if not os.path.basename(p).startswith("."))
    out = []
    for run_id in ids:
        got = read_run(out_dir, run_id)
        if got is not None:
            out.append(got)
    return out


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
    problem knows f* (quadratics). Missing, partial or corrupt files are skipped.
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
    draws them with a band over seeds. ``groups`` restricts to some group ids."""
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
