"""Checkpoints of a run in progress: ``ds.run(..., checkpoint=path)``.

After every call of the segment program the runner writes the complete run state to ``path``
(atomically: a temporary file, then a rename): the carry (algorithm state and oracle state: model
state, epoch cursor), the steps done, the metrics and costs recorded so far, the divergence flags,
and a fingerprint of the run (algorithm, hyperparameters, problem, topology, seeds, steps, shapes).
The step keys are ``fold_in(PRNGKey(seed), t)``, so the seed and the step count are all the
randomness there is. A run given an existing checkpoint with the same fingerprint starts from it;
since it then calls the same compiled program on the same arrays, its History is bitwise the one
of an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import jax
import numpy as np

__all__ = ["fingerprint", "save", "load"]

_FORMAT = 1


def fingerprint(record: dict, seeds, extra: dict, template) -> str:
    """A JSON string naming everything the run's numbers depend on."""
    shapes = [[list(np.shape(a)), str(np.asarray(a).dtype) if not hasattr(a, "dtype")
               else str(a.dtype)] for a in jax.tree.leaves(template)]
    return json.dumps({"format": _FORMAT, "record": record, "seeds": seeds, **extra,
                       "carry": shapes, "treedef": str(jax.tree.structure(template))},
                      sort_keys=True, default=str)


def save(path: Path, fp: str, carry, done: int, records: list, cost_chunks: list,
         diverged: np.ndarray) -> None:
    """Write the run state to ``path`` atomically."""
    arrays = {f"carry_{i}": np.asarray(a) for i, a in enumerate(jax.tree.leaves(carry))}
    names = list(records[0]) if records else []
    for k in names:
        arrays[f"metric_{k}"] = np.concatenate([r[k] for r in records], axis=1)
    arrays["costs"] = (np.concatenate(cost_chunks, axis=1) if cost_chunks
                       else np.zeros((len(diverged), 0, 3)))
    arrays["diverged"] = np.asarray(diverged)
    meta = json.dumps({"fingerprint": fp, "done": int(done), "metrics": names,
                       "evals": [int(r[names[0]].shape[1]) for r in records] if names else []})
    arrays["meta"] = np.frombuffer(meta.encode(), np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load(path: Path, fp: str, template):
    """``(carry, done, records, cost_chunks, diverged)`` from ``path``, or ``None`` when there is
    no file. A checkpoint of another run is an error (it is never overwritten silently)."""
    if not path.exists():
        return None
    try:
        with np.load(path) as z:
            meta = json.loads(bytes(z["meta"]).decode())
            leaves = [z[f"carry_{i}"] for i in range(len(jax.tree.leaves(template)))]
            metrics = {k: z[f"metric_{k}"] for k in meta["metrics"]}
            costs, diverged = z["costs"], z["diverged"]
    except (OSError, ValueError, KeyError) as err:
        raise ValueError(f"checkpoint={str(path)!r} is not a decsim checkpoint ({err}); delete "
                         "it or give another path.") from None
    if meta["fingerprint"] != fp:
        raise ValueError(f"checkpoint={str(path)!r} holds another run (a different algorithm, "
                         "hyperparameters, problem, topology, seeds or steps); delete it or give "
                         "another path.")
    carry = jax.tree.unflatten(jax.tree.structure(template), leaves)
    records, start = [], 0
    for evals in meta["evals"]:
        records.append({k: v[:, start:start + evals] for k, v in metrics.items()})
        start += evals
    cost_chunks = [costs] if costs.shape[1] else []
    return carry, int(meta["done"]), records, cost_chunks, np.asarray(diverged, bool)
