"""Any JAX loss on any per-worker data."""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import numpy as np

from .._checks import integer, one_of
from .._types import Problem
from ._common import batch_size as check_batch_size
from ._common import check_model, check_stateful_model, stack_params0, warn_small_workers
from .evaluate import make_evaluation

__all__ = ["custom"]


def custom(loss_fn: Callable, params0, worker_data, *, model_state=None,
           batch_size: int | None = None, test_data=None, counts=None,
           test_metrics: Callable | None = None, init: str = "same", seed: int = 0,
           model_state_mixing: str = "local", sampling: str = "replacement",
           eval_batch_size: int | None = 4096, eval_subsample: int | None = None,
           grad_norm: bool | None = None, worker_metrics: bool = False,
           compute_dtype=None, name: str = "custom") -> Problem:
    """Any JAX loss on any per-worker data.

    Two loss forms. The simple one, ``loss_fn(params, batch) -> scalar``: the *mean* loss over a
    batch whose leaves are ``[b, ...]`` (a mean of per-example terms, plus any data-independent
    penalty). The extended one, for models with state (BatchNorm statistics) or randomness
    (dropout, data augmentation), chosen by giving ``model_state`` (``{}`` for randomness
    without state)::

        loss_fn(params, model_state, batch, key) -> (loss, new_model_state)

    ``model_state`` is one worker's; every worker starts with a copy, each gradient evaluation
    updates that worker's copy (never differentiated), and ``model_state_mixing`` says whether it
    stays local or is gossiped. ``key`` is the worker's own key for this gradient evaluation;
    ``key=None`` means evaluation mode (no dropout, BatchNorm on running statistics; the state
    returned is ignored). Metrics are taken at the worker average x̄ with the averaged model
    state.

    Args:
      loss_fn: the simple or (with ``model_state``) the extended loss.
      params0: initial parameters: one model's (``init="same"``, every worker starts there),
        a function ``key -> params`` (``init="same"``: one draw from ``PRNGKey(seed)``;
        ``init="independent"``: worker i draws from ``split(PRNGKey(seed), n)[i]``), or leaves
        ``[n_workers, ...]`` with ``init="stacked"``.
      worker_data: pytree with leaves ``[n_workers, m, ...]``.
      model_state: one worker's model state (extended form), or ``None`` (simple form).
      batch_size: samples per stochastic gradient per worker; ``None``: every gradient is the full
        local batch (deterministic).
      test_data: optional pytree with leaves ``[m_test, ...]``; ``test_loss`` is reported.
      counts: optional int ``[n_workers]``, valid rows per worker (rows past it are padding).
      test_metrics: optional ``(params, test_data) -> dict`` (extended form: ``(params,
        model_state, test_data) -> dict``, called in evaluation mode) of means over the examples;
        default ``{"test_loss": ...}``.
      init: ``"same"``, ``"independent"`` or ``"stacked"`` (see ``params0``).
      seed: the seed of ``params0(key)`` draws.
      model_state_mixing: ``"local"`` (default) or ``"gossip"`` (one gossip round of the
        model state's floating leaves per step, in the same messages; its bits are counted).
      sampling: ``"replacement"`` (default: minibatches drawn uniformly with replacement) or
        ``"epoch"`` (each worker walks through a fresh permutation of its samples per epoch).
      eval_batch_size, eval_subsample, grad_norm, worker_metrics: how metrics are computed
        (:class:`decsim.Evaluation`: chunk size, rows per worker, ``grad_norm_sq`` on or off
        (default: on for the simple form only), per-worker test metrics).
      compute_dtype: e.g. ``jnp.bfloat16``: the loss computes in this dtype (parameters and
        floating batch leaves are cast on entry, the loss is returned in float32), while the
        parameters, their gradients and the algorithms' state stay in float32 (a mixed-precision
        policy for large models). ``None``: the run's float dtype throughout.

    Example:
      >>> import jax.numpy as jnp, numpy as np, decsim as ds
      >>> def loss(w, state, batch, key):  # a stateful model: counts its gradient evaluations
      ...     return jnp.mean((batch["x"] @ w - batch["y"]) ** 2), {"calls": state["calls"] + 1}
      >>> data = {"x": np.ones((4, 8, 3), np.float32), "y": np.zeros((4, 8), np.float32)}
      >>> prob = ds.problems.custom(loss, jnp.zeros(3), data, model_state={"calls": 0.0},
      ...                           batch_size=2)
      >>> hist = ds.run(ds.algorithms.dsgd(0.1), prob, ds.topology.ring(4), steps=5)
      >>> hist.model_state["calls"].tolist()
      [5.0, 5.0, 5.0, 5.0]
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
    if not callable(loss_fn):
        form = "(params, model_state, batch, key) -> (loss, state)" if model_state is not None \
            else "(params, batch) -> scalar"
        raise ValueError(f"loss_fn must be a function {form}; got {type(loss_fn).__name__}.")
    if compute_dtype is not None:
        loss_fn = mixed_precision(loss_fn, _compute_dtype(compute_dtype), model_state is not None)
        if test_metrics is not None:
            test_metrics = mixed_precision(test_metrics, _compute_dtype(compute_dtype), None)
    init = one_of("init", init, INITS)
    model_state_mixing = one_of("model_state_mixing", model_state_mixing, MIXINGS)
    sampling = one_of("sampling", sampling, SAMPLINGS)
    evaluation = make_evaluation(eval_batch_size, eval_subsample, grad_norm, worker_metrics)
    batch_size = check_batch_size(batch_size)
    stacked0 = _initial_params(params0, init, n, integer("seed", seed, min=0))
    stateful = model_state is not None
    if stateful:
        model_state = jax.tree.map(np.asarray, model_state)
        if batch_size is None and counts.min() < m:
            raise ValueError(
                f"{name}: full-batch gradients (batch_size=None) of a model with state need "
                f"equal samples per worker (counts range {counts.min()}..{counts.max()}); give a "
                "batch_size, or equal counts.")
        check_stateful_model(loss_fn, jax.tree.map(lambda a: a[0], stacked0),
                                     model_state, worker_data, name)
    else:
        if model_state_mixing != "local":
            raise ValueError(f"model_state_mixing={model_state_mixing!r} needs a model state; "
                             "give model_state= (and the extended loss form).")
        check_model(loss_fn, jax.tree.map(lambda a: a[0], stacked0), worker_data, name)
    if test_data is not None and test_metrics is None:
        test_metrics = _default_test_metrics(loss_fn, stateful)
    warn_small_workers(counts, batch_size, name)
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
        model_state0=None if not stateful else stack_params0(model_state, n),
        model_state_mixing=model_state_mixing,
        evaluation=evaluation,
        sampling=sampling,
    )


def _compute_dtype(value):
    import jax.numpy as jnp

    try:
        dt = jnp.dtype(value)
    except TypeError:
        dt = None
    if dt is None or not jnp.issubdtype(dt, jnp.floating):
        raise ValueError(f"compute_dtype must be a floating dtype such as jnp.bfloat16 or "
                         f"jnp.float16; got {value!r}.")
    return dt


@functools.cache
def mixed_precision(fn: Callable, dtype, stateful: bool | None):
    """``fn`` computing in ``dtype``: floating leaves of its array arguments (params, model
    state, batch) are cast to ``dtype`` on entry; floating outputs come back in float32 (a model
    state keeps its own dtypes). ``stateful``: the extended loss (``(loss, state)`` out), the
    simple loss (``False``) or test metrics (``None``: a dict of means)."""
    import jax.numpy as jnp

    def down(tree):
        return jax.tree.map(lambda a: a.astype(dtype) if jnp.issubdtype(
            jnp.asarray(a).dtype, jnp.floating) else a, tree)

    def up(tree):
        return jax.tree.map(lambda a: a.astype(jnp.float32) if jnp.issubdtype(
            jnp.asarray(a).dtype, jnp.floating) else a, tree)

    if stateful:
        def extended(params, model_state, batch, key):
            loss, new = fn(down(params), down(model_state), down(batch), key)
            return up(loss), jax.tree.map(lambda n, o: n.astype(jnp.asarray(o).dtype), new,
                                          model_state)

        return extended
    if stateful is None:
        return lambda *args: up(fn(*[down(a) for a in args]))
    return lambda params, batch: up(fn(down(params), down(batch)))


INITS = ("same", "independent", "stacked")
MIXINGS = ("local", "gossip")
SAMPLINGS = ("replacement", "epoch")


def _initial_params(params0, init: str, n: int, seed: int):
    """The stacked initial parameters ``[n, ...]`` (numpy) for each ``init`` mode."""
    if callable(params0) and not any(hasattr(a, "shape") for a in jax.tree.leaves(params0)):
        # a function key -> params (a callable pytree of arrays, e.g. an equinox Module, is
        # parameters)
        if init == "stacked":
            raise ValueError('init="stacked" needs params0 with leaves [n_workers, ...], not a '
                             'function; use init="same" or "independent" with a function.')
        keys = jax.random.split(jax.random.PRNGKey(seed), n)
        if init == "same":
            return stack_params0(jax.tree.map(np.asarray, params0(keys[0])), n)
        draws = [jax.tree.map(np.asarray, params0(k)) for k in keys]
        return jax.tree.map(lambda *a: np.stack(a), *draws)
    params0 = jax.tree.map(np.asarray, params0)
    if init == "independent":
        raise ValueError('init="independent" needs params0 as a function key -> params (one '
                         'draw per worker); for given starting points use init="stacked".')
    if init == "stacked":
        bad = [np.shape(a) for a in jax.tree.leaves(params0) if np.ndim(a) < 1 or len(a) != n]
        if bad:
            raise ValueError(f'init="stacked" needs every leaf of params0 as [n_workers={n}, ...]; '
                             f"got leaves of shapes {bad}.")
        return jax.tree.map(np.array, params0)
    return stack_params0(params0, n)


@functools.cache
def _default_test_metrics(loss_fn, stateful: bool):
    if stateful:
        def stateful_metrics(params, model_state, test):
            return {"test_loss": loss_fn(params, model_state, test, None)[0]}

        return stateful_metrics

    def test_metrics(params, test):
        return {"test_loss": loss_fn(params, test)}

    return test_metrics
