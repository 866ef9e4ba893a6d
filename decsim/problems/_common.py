"""Helpers shared by the problem constructors: argument checks and the stacked initial point."""

from __future__ import annotations

from typing import Optional

import numpy as np

from .. import _checks as checks

__all__ = ["workers", "dim", "batch_size", "stack_params0"]


def workers(n_workers) -> int:
    """The worker count n, an integer >= 1."""
    return checks.integer("n_workers", n_workers)


def dim(value) -> int:
    """A model dimension, an integer >= 1."""
    return checks.integer("dim", value)


def batch_size(value) -> Optional[int]:
    """A minibatch size per worker (integer >= 1) or ``None`` (the full local batch)."""
    if value is None:
        return None
    return checks.integer("batch_size", value,
                          hint="Use None for the full local batch (deterministic gradients).")


def stack_params0(params0, n: int):
    """One model's initial parameters copied onto every worker: leaves ``[n, ...]`` (numpy)."""
    import jax

    return jax.tree.map(lambda a: np.broadcast_to(np.asarray(a)[None], (n,) + np.shape(a)).copy(),
                        params0)
