"""Helpers shared by the problem constructors: argument checks and the stacked initial point."""

from __future__ import annotations

import warnings

import numpy as np

from .._checks import integer

__all__ = ["workers", "dim", "batch_size", "stack_params0", "check_model", "check_stateful_model",
           "warn_small_workers"]


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


def check_stateful_model(loss_fn, params, model_state, worker_data, name: str = "custom") -> None:
    """Before anything compiles, the extended form on worker 0's first two samples (abstractly,
    with ``jax.eval_shape``): ``loss_fn(params, model_state, batch, key)`` must return
    ``(scalar, new_model_state)`` with the structure, shapes and dtypes of ``model_state``, in
    training mode and with ``key=None``; the gradient must have the shapes of ``params``."""
    import jax

    batch = jax.tree.map(lambda a: np.asarray(a)[0, :2], worker_data)
    key = jax.random.PRNGKey(0)
    where = (f"params0 shapes: {_shapes(params)}; model_state shapes: {_shapes(model_state)}; "
             f"batch shapes: {_shapes(batch)}")
    for mode, k in (("training", key), ("evaluation (key=None)", None)):
        try:
            out = jax.eval_shape(lambda p, s, b, k=k: loss_fn(p, s, b, k), params, model_state,
                                 batch)
        except Exception as err:  # noqa: BLE001 - any failure of user code is reported the same
            first = str(err).splitlines()[0].rstrip(".") if str(err) else ""
            raise ValueError(f"{name}: loss_fn(params, model_state, batch, key) fails in {mode} "
                             f"mode on two samples of worker 0: {type(err).__name__}: {first}. "
                             f"{where}.") from None
        if not (isinstance(out, tuple) and len(out) == 2 and np.shape(out[0]) == ()):
            raise ValueError(f"{name}: the extended loss_fn must return (loss scalar, "
                             f"new_model_state); in {mode} mode it returned "
                             f"{_shapes(out)}. {where}.")
        got = jax.tree.map(lambda a: (tuple(np.shape(a)), str(np.asarray(a).dtype)
                                      if not hasattr(a, "dtype") else str(a.dtype)), out[1])
        want = jax.tree.map(lambda a: (tuple(np.shape(a)), str(jax.numpy.asarray(a).dtype)),
                            model_state)
        if jax.tree.structure(out[1]) != jax.tree.structure(model_state) or got != want:
            raise ValueError(f"{name}: the model state loss_fn returns in {mode} mode must have "
                             f"the structure, shapes and dtypes of model_state: got {got}, "
                             f"expected {want}.")
    grads = jax.eval_shape(jax.grad(lambda p: loss_fn(p, model_state, batch, key)[0]), params)
    if _shapes(grads) != _shapes(params):
        raise ValueError(f"{name}: the gradient of loss_fn has shapes {_shapes(grads)} but "
                         f"params0 has {_shapes(params)}; the model and its parameters do not "
                         "match.")


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
