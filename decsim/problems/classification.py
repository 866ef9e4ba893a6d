"""Classification on scikit-learn's bundled data (digits, breast cancer): logistic regression and
MLPs, partitioned over the workers."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.custom_derivatives import SymbolicZero

from .. import data as _data
from .._checks import integer
from .._types import Problem
from ._common import batch_size as check_batch_size
from ._common import warn_small_workers
from ._common import workers as check_workers

__all__ = ["logistic_regression", "mlp", "dense"]


@jax.custom_jvp
def dense(x, w):
    """``x @ w`` for ``x [..., b, i]`` and ``w [i, o]``, with a weight gradient XLA:CPU runs fast.

    The value and every derivative are those of ``x @ w`` (the tangent rule is the product
    rule; forward mode, reverse mode and Hessians all work). The difference is the layout of the
    weight gradient ``xᵀ @ g``: plain autodiff hands XLA a dot that contracts the *batch* axis of
    ``x``, which XLA:CPU's fast matmul library does not take, so under the runner's per-worker
    ``vmap`` it falls back to a slow generic loop. Here ``xᵀ`` is materialized first (behind an
    optimization barrier, so XLA cannot fold the transpose back into the dot), which makes every
    dot of the backward pass a standard row-major matmul: about 1.25x faster per-worker gradients
    for the bundled MLP (``benchmarks/vs_loop.py``). Use it in custom models the same way.
    """
    return x @ w


def _dense_jvp(primals, tangents):
    x, w = primals
    dx, dw = tangents
    out = x @ w
    terms = []
    if not isinstance(dx, SymbolicZero):
        terms.append(dx @ w)
    if not isinstance(dw, SymbolicZero):
        # x, transposed into memory and back: the same values, but transposing this linear map
        # (reverse mode) gives dot(materialized xᵀ, g), which contracts xᵀ's minor axis.
        x_t = x if x.ndim < 2 else jnp.swapaxes(
            jax.lax.optimization_barrier(jnp.swapaxes(x, -1, -2)), -1, -2)
        terms.append(x_t @ dw)
    tangent = functools.reduce(jnp.add, terms) if terms else jnp.zeros_like(out)
    return out, tangent


dense.defjvp(_dense_jvp, symbolic_zeros=True)


def _linear_logits(params, x):
    return dense(x, params["w"]) + params["b"][None, :]


def _mlp_logits(activation: str, params, x):
    act = {"tanh": jnp.tanh, "relu": jax.nn.relu}[activation]
    h = x
    for layer in params[:-1]:
        h = act(dense(h, layer["w"]) + layer["b"][None, :])
    return dense(h, params[-1]["w"]) + params[-1]["b"][None, :]


def _xent(logits, y):
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1))


def _weight_sq_norm(params):
    return sum(jnp.sum(jnp.square(leaf)) for path, leaf in
               jax.tree_util.tree_flatten_with_path(params)[0] if "w" in jax.tree_util.keystr(path))


@functools.cache
def _classifier_fns(model: str, l2: float):
    """(loss_fn, test_metrics) for a model ("linear" or "mlp:<activation>") and l2 weight.
    Memoized so that equal options give the same function objects (one compiled program)."""
    logits_fn = _linear_logits if model == "linear" else functools.partial(_mlp_logits, model[4:])

    def loss_fn(params, batch):
        data_loss = _xent(logits_fn(params, batch["x"]), batch["y"])
        return data_loss + 0.5 * l2 * _weight_sq_norm(params) if l2 else data_loss

    def test_metrics(params, test):
        logits = logits_fn(params, test["x"])
        return {
            "test_loss": _xent(logits, test["y"]),
            "test_accuracy": jnp.mean(
                (jnp.argmax(logits, axis=1) == test["y"]).astype(jnp.float32)
            ),
        }

    return loss_fn, test_metrics


def _classification(
    name,
    n,
    dataset,
    partition,
    alpha,
    shards_per_worker,
    batch_size,
    test_fraction,
    seed,
    model,
    l2,
    params0,
):
    X, y, _ = _data.load_dataset(dataset)
    Xtr, ytr, Xte, yte = _data.train_test(X, y, test_fraction=test_fraction, seed=seed)
    parts = _data.partition(
        ytr, n, partition, alpha=alpha, shards_per_worker=shards_per_worker, seed=seed
    )
    (xs, ys), counts = _data.stack([Xtr, ytr], parts)
    loss_fn, test_metrics = _classifier_fns(model, float(l2))
    test = {"x": Xte, "y": yte} if len(yte) else None
    stacked0 = jax.tree.map(lambda a: np.broadcast_to(a[None], (n,) + a.shape).copy(), params0)
    label_hist = np.stack(
        [np.bincount(ys[w, : counts[w]], minlength=int(y.max()) + 1) for w in range(n)]
    )
    info = dict(
        dataset=dataset,
        partition=partition,
        n_train=int(len(ytr)),
        n_test=int(len(yte)),
        n_features=int(X.shape[1]),
        n_classes=int(y.max()) + 1,
        l2=float(l2),
        label_counts=label_hist,
    )
    batch_size = check_batch_size(batch_size)
    warn_small_workers(counts, batch_size, name)
    return Problem(
        name=name,
        n_workers=n,
        params0=stacked0,
        data={"x": xs, "y": ys},
        counts=counts,
        loss_fn=loss_fn,
        batch_size=batch_size,
        test_data=test,
        test_metrics=test_metrics if test is not None else None,
        info=info,
    )


def logistic_regression(
    n_workers: int,
    dataset: str = "digits",
    *,
    partition: str = "iid",
    alpha: float = 0.5,
    shards_per_worker: int = 2,
    batch_size: int | None = 32,
    l2: float = 1e-4,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> Problem:
    """Multinomial (softmax) logistic regression on a bundled scikit-learn data set.

    ``f_i(w, b) = mean over worker i's samples of cross-entropy + (l2/2) ||w||²``.
    Features are standardized on the training split; ``test_fraction`` of the data (stratified)
    is held out for ``test_loss`` and ``test_accuracy``. Parameters start at zero.

    Args:
      n_workers: number of workers.
      dataset: ``"digits"`` (64 features, 10 classes) or ``"breast_cancer"`` (30 features,
        2 classes).
      partition: ``"iid"``, ``"dirichlet"`` (with ``alpha``), ``"sorted"``, ``"shards"``.
      batch_size: samples per stochastic gradient per worker; ``None`` for full local gradients.
      l2: weight of the ridge penalty on ``w``.
    """
    n = check_workers(n_workers)
    X, y, n_classes = _data.load_dataset(dataset)
    params0 = {
        "w": np.zeros((X.shape[1], n_classes), np.float32),
        "b": np.zeros(n_classes, np.float32),
    }
    return _classification(
        f"logistic_regression/{dataset}",
        n,
        dataset,
        partition,
        alpha,
        shards_per_worker,
        batch_size,
        test_fraction,
        seed,
        "linear",
        l2,
        params0,
    )


def mlp(
    n_workers: int,
    dataset: str = "digits",
    *,
    hidden: Sequence[int] = (32,),
    activation: str = "tanh",
    partition: str = "iid",
    alpha: float = 0.5,
    shards_per_worker: int = 2,
    batch_size: int | None = 32,
    l2: float = 0.0,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> Problem:
    """A multilayer perceptron classifier on a bundled data set (same data handling as
    :func:`logistic_regression`). Weights start Glorot-uniform from ``seed`` (the same on every
    worker), biases at zero.
    """
    n = check_workers(n_workers)
    if activation not in ("tanh", "relu"):
        raise ValueError(f"activation must be 'tanh' or 'relu'; got {activation!r}.")
    if isinstance(hidden, (str, bytes)) or not isinstance(hidden, (list, tuple)):
        raise ValueError(
            f"hidden must be a list of layer widths, e.g. hidden=(32,) or "
            f"hidden=[64, 32]; got hidden={hidden!r}."
        )
    hidden = tuple(integer("hidden[i]", h) for h in hidden)
    X, y, n_classes = _data.load_dataset(dataset)
    rng = np.random.default_rng(seed + 7919)
    sizes = (X.shape[1],) + hidden + (n_classes,)
    params0 = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        bound = np.sqrt(6.0 / (fan_in + fan_out))
        params0.append(
            {
                "w": rng.uniform(-bound, bound, (fan_in, fan_out)).astype(np.float32),
                "b": np.zeros(fan_out, np.float32),
            }
        )
    return _classification(
        f"mlp{list(hidden)}/{dataset}",
        n,
        dataset,
        partition,
        alpha,
        shards_per_worker,
        batch_size,
        test_fraction,
        seed,
        f"mlp:{activation}",
        l2,
        params0,
    )
