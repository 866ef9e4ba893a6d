"""Host-side assembly of a run's :class:`decsim.History` from what its programs returned: the
metrics of every evaluation with the cumulative costs, divergence, the run's record, and the
final parameters fetched from the devices.
"""

from __future__ import annotations

import jax
import numpy as np

__all__ = ["DIVERGENCE_KEYS", "COST_NAMES", "finite", "assemble_metrics", "record", "plain",
           "fetch"]

DIVERGENCE_KEYS = ("loss", "grad_norm_sq", "consensus")
# the cumulative costs, in the order of a segment's cost rows (sim_time only with a time model)
COST_NAMES = ("grad_evals", "comm_rounds", "bits", "sim_time")


def finite(record: dict, n_runs: int) -> np.ndarray:
    ok = np.ones(n_runs, dtype=bool)
    for k in DIVERGENCE_KEYS:
        if k in record:
            ok &= np.all(np.isfinite(record[k]), axis=1)
    return ok




def assemble_metrics(d, n_runs: int, n_evals: int, eval_every: int):
    """Metrics ``[n_runs, n_evals + 1]`` with the cumulative costs, padded with NaN after an early
    stop and blanked after each run's divergence; and each run's divergence step (or -1)."""
    names = list(d.records[0])
    evals_done = sum(r[names[0]].shape[1] for r in d.records)
    metrics = {k: np.concatenate([r[k] for r in d.records], axis=1) for k in names}
    k = d.cost_chunks[0].shape[-1] if d.cost_chunks else 3
    per_chunk = np.concatenate(d.cost_chunks, axis=1) if d.cost_chunks else np.zeros((n_runs, 0, k))
    cumulative = np.concatenate([np.zeros((n_runs, 1, k)), np.cumsum(per_chunk, axis=1)], axis=1)
    for i, name in enumerate(COST_NAMES[:k]):
        metrics[name] = cumulative[:, :, i]
    for k, v in metrics.items():
        if v.shape[1] < n_evals + 1:
            metrics[k] = np.concatenate(
                [v, np.full((n_runs, n_evals + 1 - v.shape[1]), np.nan)], axis=1
            )
    bad = np.zeros((n_runs, evals_done), dtype=bool)
    for k in DIVERGENCE_KEYS:
        if k in metrics:
            bad |= ~np.isfinite(metrics[k][:, :evals_done])
    diverged_step = np.full(n_runs, -1, dtype=np.int64)
    for s in range(n_runs):
        hits = np.flatnonzero(bad[s])
        if hits.size:
            diverged_step[s] = int(hits[0]) * eval_every
            for k in metrics:
                metrics[k][s, int(hits[0]) :] = np.nan
    return metrics, diverged_step


def record(algorithm, problem, topology, p, steps, eval_every, given) -> dict:
    """The run's record (``History.config``): names, arguments, hyperparameters (a list where
    they were given one value per run, else the one value), sizes."""
    per_run = {k for k, v in (given or {}).items() if np.ndim(v) == 1}
    hp = {k: np.asarray(v, np.float64) for k, v in p.hp.items()}
    return {
        "algorithm": getattr(algorithm, "name", type(algorithm).__name__),
        "algorithm_args": plain(getattr(algorithm, "args", None) or {}),
        "hparams": {
            k: v.tolist() if k in per_run else float(v.reshape(-1)[0]) for k, v in hp.items()
        },
        "problem": problem.name,
        "topology": topology.name,
        "n_workers": problem.n_workers,
        "spectral_gap": topology.spectral_gap,
        "steps": int(steps),
        "eval_every": int(eval_every),
        "batch_size": problem.batch_size,
        "gossip": p.gplan.path,
        "devices": 1 if p.mesh is None else int(p.mesh.size),
        "workers": p.workers,
    }



def fetch(stacked):
    """Device pytree -> numpy pytree, also when the worker axis spans several processes (a mesh
    over hosts after ``jax.distributed.initialize()``): each process then gets the whole array."""

    def one(a):
        if isinstance(a, jax.Array) and not a.is_fully_addressable:
            from jax.experimental import multihost_utils

            a = multihost_utils.process_allgather(a, tiled=True)
        return np.asarray(a)

    return jax.tree.map(one, stacked)


def plain(value):
    """A JSON-friendly rendering of factory arguments (objects by name)."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (str, int, float, bool, type(None))):
        return value
    if isinstance(value, (list, tuple)) and not hasattr(value, "_fields"):
        return [plain(v) for v in value]
    if callable(value):
        return getattr(value, "__name__", type(value).__name__)
    return getattr(value, "name", None) or type(value).__name__
