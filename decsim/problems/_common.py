"""Helpers shared by the problem constructors: argument checks and the stacked initial point."""

from __future__ import annotations

import warnings

import numpy as np

from .._checks import integer

__all__ = ["workers", "dim", "batch_size", "stack_params0", "check_model", "warn_small_workers"]


def workers(n_workers) -> int:
    """The worker count n, an integer >= 1."""
    return integer("n_workers", n_workers)


def dim(value) -> int:
    """A model dimension, an integer >= 1."""
    return integer("dim", value)


def batch_size(value) -> int | None:
    """A minibatch size per worker (integer >= 1) or ``None`` (the full local batch)."""
    if value is None:
        return None
    return integer("batch_size", value,
                          hint="Use None for the full local batch (deterministic gradients).")


def stack_params0(params0, n: int):
    """One model's initial parameters copied onto every worker: leaves ``[n, ...]`` (numpy)."""
    import jax

    return jax.tree.map(lambda a: np.broadcast_to(np.asarray(a)[None], (n,) + np.shape(a)).copy(),
                        params0)


def _shapes(tree) -> str:
    import jax

    return str(jax.tree.map(lambda a: tuple(np.shape(a)), tree))


def check_model(loss_fn, params, worker_data, name: str = "custom") -> None:
    """Before anything compiles: ``loss_fn(params, batch)`` on worker 0's first sample must be a
    scalar, and its gradient must have the shapes of ``params`` (traced abstractly with
    ``jax.eval_shape``; nothing runs). Errors show the shapes of both."""
    import jax

    batch = jax.tree.map(lambda a: np.asarray(a)[0, :1], worker_data)

    def fails(err):
        first = str(err).splitlines()[0].rstrip(".") if str(err) else ""
        return ValueError(f"{name}: loss_fn(params0, batch) fails on one sample of worker 0: "
                          f"{type(err).__name__}: {first}. params0 shapes: {_shapes(params)}; "
                          f"batch shapes: {_shapes(batch)}. Check that params0 matches the data.")

    try:
        out = jax.eval_shape(loss_fn, params, batch)
    except Exception as err:  # noqa: BLE001 - any failure of user code is reported the same way
        raise fails(err) from None
    if np.shape(out) != ():
        raise ValueError(f"{name}: loss_fn(params0, batch) must return a scalar (the mean loss of "
                         f"the batch); on one sample it returned shape {tuple(np.shape(out))}. "
                         f"params0 shapes: {_shapes(params)}; batch shapes: {_shapes(batch)}.")
    try:
        grads = jax.eval_shape(jax.grad(loss_fn), params, batch)
    except Exception as err:  # noqa: BLE001
        raise fails(err) from None
    got, want = _shapes(grads), _shapes(params)
    if got != want:
        raise ValueError(f"{name}: the gradient of loss_fn has shapes {got} but params0 has "
                         f"{want}; the model and its parameters do not match.")


def warn_small_workers(counts, batch_size, name: str) -> None:
    """Warn when a worker holds fewer samples than one minibatch (it then samples its few
    samples with replacement, which is rarely what a study intends)."""
    if batch_size is None:
        return
    small = int(np.min(counts))
    if small < batch_size:
        warnings.warn(f"{name}: a worker holds only {small} samples, fewer than batch_size="
                      f"{batch_size}; its minibatches repeat samples. Use fewer workers, a smaller "
                      "batch_size, or batch_size=None (the full local batch).", stacklevel=3)
