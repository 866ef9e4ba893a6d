"""The metrics of a run's iterates, computed in chunks of bounded size.

At an evaluation the runner holds the stacked params ``X`` and, for a problem with model state,
the stacked model state ``S``. The metrics are taken at the worker average ``x̄`` with the
averaged model state ``s̄`` (floating leaves averaged, integer leaves taken from worker 0), in
evaluation mode (an extended loss is called with ``key=None``: no dropout, BatchNorm on its
running statistics):

- ``loss = f(x̄) = (1/n) Σ_i f_i(x̄)`` on the training data (or on a fixed subsample of it);
- ``grad_norm_sq = ||∇f(x̄)||²`` (optional: a backward pass over the evaluated data);
- ``consensus = (1/n) Σ_i ||x_i − x̄||²``;
- the test metrics at ``x̄`` and, optionally, over the workers' own models (``worker_mean_*``,
  ``worker_min_*``, ``worker_max_*``).

Chunks: the evaluated rows of all workers are split into chunks of at most
``Evaluation.batch_size`` rows (full chunks in a ``lax.scan``, the remainder after it), each
chunk's value and gradient computed and summed, so the memory of an evaluation does not grow with
the data set. With equal counts a chunk contributes ``(rows in chunk / all rows) · loss(chunk)``;
with unequal counts every row carries the weight ``1 / (n · counts[i])`` and losses are per
example. Test metrics are averaged over chunks weighted by their rows, so they must be means over
examples (the bundled problems whose test metrics are not, such as AUC, evaluate in one piece).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .. import tree
from .._checks import boolean, integer
from .._types import Evaluation, Problem
from .objective import local_loss

__all__ = [
    "with_evaluation",
    "make_evaluation",
    "evaluation",
    "grad_norm_on",
    "static_key",
    "eval_rows",
    "average_state",
    "metrics",
]


def make_evaluation(
    batch_size=4096, subsample=None, grad_norm=None, per_worker=False, seed=0
) -> Evaluation:
    """A checked :class:`decsim.Evaluation` (see there for the meaning of each field)."""
    hint = "Use None for no limit."
    return Evaluation(
        batch_size=None if batch_size is None else integer("batch_size", batch_size, hint=hint),
        subsample=None if subsample is None else integer("subsample", subsample, hint=hint),
        grad_norm=None if grad_norm is None else boolean("grad_norm", grad_norm),
        per_worker=boolean("per_worker", per_worker),
        seed=integer("seed", seed, min=0),
    )


def with_evaluation(problem: Problem, **options) -> Problem:
    """The problem with other evaluation options (:class:`decsim.Evaluation`): ``batch_size``
    (rows per chunk), ``subsample`` (rows per worker), ``grad_norm``, ``per_worker``, ``seed``.
    Options not given keep their current values.

    Example:
      >>> import decsim as ds
      >>> prob = ds.problems.logistic_regression(4, dataset="digits", seed=0)
      >>> small = ds.problems.with_evaluation(prob, subsample=50, grad_norm=False)
      >>> small.evaluation.subsample, small.evaluation.grad_norm
      (50, False)
    """
    if not isinstance(problem, Problem):
        raise ValueError(f"with_evaluation needs a decsim Problem; got {type(problem).__name__}.")
    unknown = set(options) - set(Evaluation._fields)
    if unknown:
        raise ValueError(
            f"with_evaluation: unknown options {sorted(unknown)}; valid: "
            f"{list(Evaluation._fields)}."
        )
    current = evaluation(problem)._asdict()
    current.update(options)
    return problem._replace(evaluation=make_evaluation(**current))


def evaluation(problem: Problem) -> Evaluation:
    """The problem's :class:`Evaluation` (the default one when it has none)."""
    return problem.evaluation if problem.evaluation is not None else Evaluation()


def grad_norm_on(problem: Problem) -> bool:
    """Whether ``grad_norm_sq`` is computed (default: for the simple loss form only)."""
    ev = evaluation(problem)
    return (not problem.stateful) if ev.grad_norm is None else bool(ev.grad_norm)


def eval_rows(problem: Problem):
    """Host side: the training rows the metrics see, ``(data, counts)``: the problem's own, or
    ``Evaluation.subsample`` rows per worker drawn once without replacement from its own samples
    (seeded by ``Evaluation.seed``; a worker with fewer samples keeps all of them)."""
    ev = evaluation(problem)
    counts = np.asarray(problem.counts)
    if not _subsampled(problem):
        return problem.data, counts
    k = int(ev.subsample)
    rng = np.random.default_rng(ev.seed)
    rows = np.zeros((problem.n_workers, k), np.int64)
    new_counts = np.minimum(counts, k).astype(np.int32)
    for i, c in enumerate(counts):
        pick = np.sort(rng.choice(int(c), size=int(new_counts[i]), replace=False))
        rows[i, : len(pick)] = pick
    take = np.arange(problem.n_workers)[:, None]
    return jax.tree.map(lambda a: np.asarray(a)[take, rows], problem.data), new_counts


def _subsampled(problem: Problem) -> bool:
    ev = evaluation(problem)
    return ev.subsample is not None and ev.subsample < int(np.max(problem.counts))


def static_key(problem: Problem) -> tuple:
    """What the metrics program depends on besides shapes and functions (the last entry: every
    worker's evaluated rows fill its data, so no row is padding)."""
    ev = evaluation(problem)
    if _subsampled(problem):
        k = int(ev.subsample)
        uniform = bool(np.all(np.minimum(problem.counts, k) == k))
    else:
        m = jax.tree.leaves(problem.data)[0].shape[1]
        uniform = bool(np.all(np.asarray(problem.counts) == m))
    return (ev.batch_size, _subsampled(problem), grad_norm_on(problem), ev.per_worker, uniform)


def average_state(S):
    """The model state at x̄: floating leaves averaged over workers, others from worker 0."""
    return jax.tree.map(
        lambda a: jnp.mean(a, axis=0) if jnp.issubdtype(a.dtype, jnp.floating) else a[0], S
    )


def _eval_loss(problem: Problem):
    """``(x, s, batch) -> mean loss`` in evaluation mode, for both loss forms."""
    if problem.stateful:
        return lambda x, s, batch: problem.loss_fn(x, s, batch, None)[0]
    return lambda x, s, batch: problem.loss_fn(x, batch)


def _chunked_sum(fn, rows: int, size, x, *parts):
    """``Σ_chunks fn(x, *chunk_parts)`` over the leading axis (length ``rows``) of every leaf of
    ``parts``, in chunks of ``size`` rows (one chunk when ``size`` is None or covers all)."""
    if size is None or rows <= size:
        return fn(x, *parts)
    q, r = divmod(rows, size)
    head = jax.tree.map(lambda a: a[: q * size].reshape((q, size) + a.shape[1:]), parts)

    def body(acc, chunk):
        return tree.add(acc, fn(x, *chunk)), None

    first = jax.tree.map(lambda a: a[0], head)
    zero = jax.tree.map(jnp.zeros_like, jax.eval_shape(fn, x, *first))
    total, _ = jax.lax.scan(body, zero, head)
    if r:
        total = tree.add(total, fn(x, *jax.tree.map(lambda a: a[q * size :], parts)))
    return total


def _training(problem: Problem, xbar, sbar, data, counts, uniform: bool, with_grad: bool):
    """``(f(x̄), ∇f(x̄) or None)`` on the evaluated rows, chunk by chunk."""
    ev = evaluation(problem)
    n, m = jax.tree.leaves(data)[0].shape[:2]
    if not problem.stateful and (ev.batch_size is None or n * m <= ev.batch_size):
        # one piece: the mean over workers of f_i, exactly the definition
        local = local_loss(problem.loss_fn, uniform)

        def f(x):
            return jnp.mean(jax.vmap(local, in_axes=(None, 0, 0))(x, data, counts))

        return jax.value_and_grad(f)(xbar) if with_grad else (f(xbar), None)
    loss = _eval_loss(problem)
    flat = jax.tree.map(lambda a: a.reshape((n * m,) + a.shape[2:]), data)
    if uniform:

        def part(x, chunk):
            rows = jax.tree.leaves(chunk)[0].shape[0]
            return loss(x, sbar, chunk) * (rows / (n * m))

        parts = (flat,)
    else:
        mask = jnp.arange(m)[None, :] < counts[:, None]
        dt = jax.tree.leaves(xbar)[0].dtype
        weight = jnp.where(mask, 1.0 / (n * counts[:, None].astype(dt)), 0.0).astype(dt)
        # padding rows become row 0 of their worker, so they can leak nothing (even NaN)
        clean = jax.tree.map(
            lambda a: jnp.where(mask.reshape(mask.shape + (1,) * (a.ndim - 2)), a, a[:, :1]), data
        )
        flat = jax.tree.map(lambda a: a.reshape((n * m,) + a.shape[2:]), clean)

        def part(x, chunk, w):
            per_example = jax.vmap(lambda ex: loss(x, sbar, jax.tree.map(lambda a: a[None], ex)))
            return jnp.sum(w * per_example(chunk))

        parts = (flat, weight.reshape(-1))
    fn = jax.value_and_grad(part) if with_grad else (lambda x, *c: (part(x, *c), None))
    value, grad = _chunked_sum(fn, n * m, ev.batch_size, xbar, *parts)
    return value, grad


def _test(problem: Problem, x, s, test):
    """The test metrics of one model, averaged over chunks of the test set."""
    ev = evaluation(problem)
    rows = jax.tree.leaves(test)[0].shape[0]
    if problem.stateful:
        fn = lambda x, chunk: problem.test_metrics(x, s, chunk)  # noqa: E731
    else:
        fn = problem.test_metrics
    if ev.batch_size is None or rows <= ev.batch_size:
        return fn(x, test)

    def part(x, chunk):
        size = jax.tree.leaves(chunk)[0].shape[0]
        return {k: jnp.asarray(v) * (size / rows) for k, v in fn(x, chunk).items()}

    return _chunked_sum(part, rows, ev.batch_size, x, test)


def metrics(problem: Problem, X, S, margs) -> dict:
    """All problem metrics of one snapshot (see the module docstring)."""
    ev = evaluation(problem)
    xbar = tree.worker_mean(X)
    sbar = average_state(S) if problem.stateful else None
    uniform = static_key(problem)[-1]
    with_grad = grad_norm_on(problem)
    loss, grad = _training(
        problem, xbar, sbar, margs["eval_data"], margs["eval_counts"], uniform, with_grad
    )
    out = {"loss": loss, "consensus": tree.consensus_distance(X)}
    if with_grad:
        out["grad_norm_sq"] = tree.sq_norm(grad)
    if problem.test_metrics is not None and margs["test"] is not None:
        out.update(_test(problem, xbar, sbar, margs["test"]))
        if ev.per_worker:
            mine = jax.lax.map(
                lambda xs: _test(problem, xs[0], xs[1], margs["test"]),
                (X, S if problem.stateful else jnp.zeros(problem.n_workers)),
            )
            for k, v in mine.items():
                out[f"worker_mean_{k}"] = jnp.mean(v)
                out[f"worker_min_{k}"] = jnp.min(v)
                out[f"worker_max_{k}"] = jnp.max(v)
    return out
