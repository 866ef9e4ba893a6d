"""Any JAX loss on any per-worker data."""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import numpy as np

from .._types import Problem
from . import _common

__all__ = ["custom"]


def custom(loss_fn: Callable, params0, worker_data, *, batch_size: int | None = None,
           test_data=None, counts=None, test_metrics: Callable | None = None,
           name: str = "custom") -> Problem:
    """Any JAX loss on any per-worker data.

    Args:
      loss_fn: ``loss_fn(params, batch) -> scalar``, the *mean* loss over a batch whose leaves are
        ``[b, ...]`` (it must be a mean of per-example terms, plus any data-independent penalty).
      params0: initial parameters of one model (the same on every worker).
      worker_data: pytree with leaves ``[n_workers, m, ...]``.
      batch_size: samples per stochastic gradient per worker; ``None``: every gradient is the full
        local batch (deterministic).
      test_data: optional pytree with leaves ``[m_test, ...]``; ``test_loss`` is reported.
      counts: optional int ``[n_workers]``, valid rows per worker (rows past it are padding).
      test_metrics: optional ``(params, test_data) -> dict``; default ``{"test_loss": loss_fn}``.
    """
    leaves = jax.tree.leaves(worker_data)
    if not leaves:
        raise ValueError(
            "worker_data must be a pytree with at least one array leaf [n_workers, m, ...]."
        )
    shapes = {np.shape(a)[:2] for a in leaves}
    if any(np.ndim(a) < 2 for a in leaves) or len(shapes) != 1:
        raise ValueError(
            "every leaf of worker_data must have shape [n_workers, m, ...] with the same "
            f"n_workers and m; got leading shapes {sorted(shapes)}."
        )
    n, m = shapes.pop()
    if counts is None:
        counts = np.full(n, m, np.int32)
    raw = np.asarray(counts)
    if raw.shape != (n,) or not np.all(np.mod(raw, 1) == 0):
        raise ValueError(f"counts must be {n} whole numbers in [1, {m}]; got {counts!r}.")
    counts = raw.astype(np.int32)
    if counts.min() < 1 or counts.max() > m:
        raise ValueError(f"counts must be {n} whole numbers in [1, {m}]; got {counts!r}.")
    if test_data is not None and test_metrics is None:
        test_metrics = _default_test_metrics(loss_fn)
    if not callable(loss_fn):
        raise ValueError(
            f"loss_fn must be a function (params, batch) -> scalar; got {type(loss_fn).__name__}."
        )
    params0 = jax.tree.map(np.asarray, params0)
    batch_size = _common.batch_size(batch_size)
    _common.check_model(loss_fn, params0, worker_data, name)
    _common.warn_small_workers(counts, batch_size, name)
    stacked0 = _common.stack_params0(params0, n)
    return Problem(
        name=name,
        n_workers=int(n),
        params0=stacked0,
        data=jax.tree.map(np.asarray, worker_data),
        counts=counts,
        loss_fn=loss_fn,
        batch_size=batch_size,
        test_data=test_data,
        test_metrics=test_metrics,
        info={},
    )


@functools.cache
def _default_test_metrics(loss_fn):
    def test_metrics(params, test):
        return {"test_loss": loss_fn(params, test)}

    return test_metrics
