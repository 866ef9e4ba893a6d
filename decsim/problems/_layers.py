"""The pieces the pure-JAX image models of :mod:`decsim.problems.nets` are built from.

:mod:`~decsim.problems.nets` re-exports the public ones (``Model``, ``num_params``, ``batchnorm``,
``classifier_loss``, ``classifier_metrics``, ``DTYPES``) and documents them; the host-side checks
(``check_*``) and the layer helpers (initializers, dense, dropout, pooling) are shared with it here
under public names so that no module reaches into another's private names.
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from .classification import dense
from .conv import IMPLS

__all__ = [
    "DTYPES", "Model", "num_params", "batchnorm", "classifier_loss", "classifier_metrics",
    "check_dtype", "check_impl", "check_rate", "check_ints", "check_init", "check_x", "train_mode",
    "he_normal", "dense_init", "per_channel", "dense_layer", "dropout", "bn_init", "max_pool2",
    "apply_of", "cross_entropy",
]

DTYPES = ("float32", "bfloat16", "float16")


class Model(NamedTuple):
    """A model as two pure functions (one worker's view).

    Attributes:
      init: ``(key, input_shape, n_classes) -> (params, model_state)``; ``input_shape`` is one
        example's ``(H, W, C)``.
      apply: ``(params, model_state, x, *, key=None, train=None) -> (logits, new_model_state)``
        for ``x [b, H, W, C]``; logits ``[b, n_classes]`` float32. ``train=None`` means
        ``train = key is not None``; ``train=True`` without a key is training mode without
        dropout.
      name: a label, e.g. ``"resnet20"``.
    """

    init: Callable
    apply: Callable
    name: str


def num_params(params) -> int:
    """The number of scalars in a pytree of arrays.

    Args:
      params: any pytree of arrays.

    Example:
        >>> num_params({"w": jnp.zeros((3, 4)), "b": jnp.zeros(4)})
        16
    """
    return sum(math.prod(jnp.shape(a)) for a in jax.tree.leaves(params))



# ---------------------------------------------------------------------------------------------
# checks (host side, before anything is traced)


def check_dtype(dtype):
    try:
        name = jnp.dtype(dtype).name
    except TypeError:
        name = repr(dtype)
    if name not in DTYPES:
        raise ValueError(
            f"dtype must be one of {', '.join(DTYPES)} (the compute dtype; parameters stay "
            f"float32); got dtype={dtype!r}."
        )
    return jnp.dtype(name)


def check_impl(impl):
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {', '.join(map(repr, IMPLS))}; got impl={impl!r}.")
    return impl


def check_rate(name, value, low, high):
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and low <= value < high
    if not ok:
        raise ValueError(f"{name} must be a number in [{low:g}, {high:g}); got {name}={value!r}.")
    return float(value)


def check_ints(name, value, *, min_len=0):
    try:
        out = tuple(value)
    except TypeError:
        out = None
    if out is None or len(out) < min_len or not all(
            isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 1 for v in out):
        raise ValueError(
            f"{name} must be a sequence of at least {min_len} integers >= 1; got {name}={value!r}."
        )
    return tuple(int(v) for v in out)


def check_init(input_shape, n_classes, min_hw=1):
    shape = check_ints("input_shape", input_shape, min_len=3)
    if len(shape) != 3:
        raise ValueError(
            f"input_shape must be one example's (H, W, C), without the batch axis; got "
            f"input_shape={input_shape!r}."
        )
    if min(shape[:2]) < min_hw:
        raise ValueError(
            f"input_shape {shape} is too small for this model: H and W must be >= {min_hw}."
        )
    if not isinstance(n_classes, numbers.Integral) or isinstance(n_classes, bool) or n_classes < 2:
        raise ValueError(f"n_classes must be an integer >= 2; got n_classes={n_classes!r}.")
    return shape, int(n_classes)


def check_x(x):
    if jnp.ndim(x) != 4:
        raise ValueError(
            f"x must be a batch of images [b, H, W, C]; got shape {jnp.shape(x)}. "
            "A single image needs x[None]."
        )


def train_mode(key, train):
    if train is None:
        return key is not None
    if not isinstance(train, bool):
        raise ValueError(f"train must be True, False or None; got train={train!r}.")
    return train


# ---------------------------------------------------------------------------------------------
# layers


def he_normal(key, shape, fan_in):
    return jax.random.normal(key, shape, jnp.float32) * jnp.float32(math.sqrt(2.0 / fan_in))


def dense_init(key, n_in, n_out):
    # PyTorch's default nn.Linear initialization: U(-1/sqrt(n_in), 1/sqrt(n_in)) for w and b
    kw, kb = jax.random.split(key)
    bound = 1.0 / math.sqrt(n_in)
    return {"w": jax.random.uniform(kw, (n_in, n_out), jnp.float32, -bound, bound),
            "b": jax.random.uniform(kb, (n_out,), jnp.float32, -bound, bound)}


def per_channel(v, ndim: int):
    """A per-channel vector ``[C]`` shaped to broadcast against ``[..., C]`` of rank ``ndim``
    explicitly (so the models run under ``jax_numpy_rank_promotion="raise"``)."""
    return v.reshape((1,) * (ndim - 1) + v.shape)


def dense_layer(p, h, dtype):
    return dense(h, p["w"].astype(dtype)) + per_channel(p["b"].astype(dtype), h.ndim)


def dropout(key, h, rate):
    keep = jax.random.bernoulli(key, 1.0 - rate, h.shape)
    return jnp.where(keep, h / jnp.asarray(1.0 - rate, h.dtype), jnp.zeros((), h.dtype))


def batchnorm(params, state, x, *, train: bool, momentum: float = 0.1, eps: float = 1e-5):
    """Batch normalization over all axes but the last (channels), PyTorch's convention.

    Train mode normalizes with the batch's mean and biased variance and updates the running
    statistics as ``running = (1 - momentum) * running + momentum * batch_stat``, with the
    *unbiased* batch variance (``m / (m - 1)`` times the biased one, ``m`` values per channel),
    as ``torch.nn.BatchNorm2d(momentum=0.1)`` does; flax's ``momentum=0.9`` is the same decay.
    Eval mode normalizes with the running statistics and returns ``state`` itself.

    Args:
      params: ``{"scale": [C], "bias": [C]}``.
      state: ``{"mean": [C], "var": [C]}`` float32.
      x: ``[..., C]``; statistics are float32 whatever ``x.dtype``, the output has ``x.dtype``.
      train: batch statistics (and updated running ones) or running statistics.
      momentum: weight of the new batch statistic in the running average.
      eps: added to the variance.

    Returns:
      ``(y, new_state)``.

    Example:
        >>> p = {"scale": jnp.ones(1), "bias": jnp.zeros(1)}
        >>> s = {"mean": jnp.zeros(1), "var": jnp.ones(1)}
        >>> y, s2 = batchnorm(p, s, jnp.array([[1.0], [3.0]]), train=True)
        >>> [[round(v, 3) for v in a.tolist()] for a in (y[:, 0], s2["mean"], s2["var"])]
        [[-1.0, 1.0], [0.2], [1.1]]
    """
    xf = x.astype(jnp.float32)
    axes = tuple(range(x.ndim - 1))
    if train:
        mean = jnp.mean(xf, axes)
        var = jnp.mean(jnp.square(xf - per_channel(mean, x.ndim)), axes)
        m = math.prod(x.shape[:-1])
        unbiased = lax.stop_gradient(var) * jnp.float32(m / max(m - 1, 1))
        new_state = {"mean": (1 - momentum) * state["mean"] + momentum * lax.stop_gradient(mean),
                     "var": (1 - momentum) * state["var"] + momentum * unbiased}
    else:
        mean, var, new_state = state["mean"], state["var"], state
    a = params["scale"] * lax.rsqrt(var + jnp.float32(eps))
    c = params["bias"] - mean * a
    return (xf * per_channel(a, x.ndim) + per_channel(c, x.ndim)).astype(x.dtype), new_state


def bn_init(c):
    return ({"scale": jnp.ones(c, jnp.float32), "bias": jnp.zeros(c, jnp.float32)},
            {"mean": jnp.zeros(c, jnp.float32), "var": jnp.ones(c, jnp.float32)})


def max_pool2(h):
    # 2x2 max pooling, stride 2 (an odd last row/column is dropped, as VALID pooling does);
    # a reshape and a max, whose gradient XLA:CPU runs fast inside a scan
    # (a width-1 input, a 1-D signal such as MNIST-1D's, is pooled along its height only)
    b, hh, ww, c = h.shape
    if ww == 1:
        h = h[:, : hh // 2 * 2]
        return jnp.max(h.reshape(b, hh // 2, 2, 1, c), axis=2)
    h = h[:, : hh // 2 * 2, : ww // 2 * 2]
    return jnp.max(h.reshape(b, hh // 2, 2, ww // 2, 2, c), axis=(2, 4))


# ---------------------------------------------------------------------------------------------
# losses and metrics


def apply_of(apply):
    if isinstance(apply, Model):
        return apply.apply
    if not callable(apply):
        raise ValueError(
            f"apply must be a model's apply function (or a Model); got {type(apply).__name__}."
        )
    return apply


def cross_entropy(logits, y):
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1))


def classifier_loss(apply) -> Callable:
    """The extended loss ``loss_fn(params, model_state, batch, key) -> (loss, new_model_state)``:
    mean softmax cross entropy of ``apply``'s logits on ``batch = {"x": [b, ...], "y": [b] int}``.

    ``key is None`` is evaluation mode (``apply(..., key=None)``: no dropout, BatchNorm running
    statistics, ``model_state`` returned unchanged); a key is training mode. The same ``apply``
    gives the very same ``loss_fn``, so runs share a compiled program.

    Args:
      apply: a :class:`Model`'s ``apply`` (or the :class:`Model`).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from decsim.problems.nets import lenet
        >>> model = lenet()
        >>> params, state = model.init(jax.random.key(0), (8, 8, 1), 3)
        >>> loss_fn = classifier_loss(model.apply)
        >>> batch = {"x": jnp.zeros((2, 8, 8, 1)), "y": jnp.array([0, 2])}
        >>> loss, _ = loss_fn(params, state, batch, jax.random.key(1))
        >>> bool(loss > 0), loss_fn is classifier_loss(model)
        (True, True)
    """
    return _classifier_loss(apply_of(apply))


@functools.cache
def _classifier_loss(apply):
    def loss_fn(params, model_state, batch, key):
        logits, new_state = apply(params, model_state, batch["x"], key=key)
        return cross_entropy(logits, batch["y"]), new_state

    return loss_fn


def classifier_metrics(apply) -> Callable:
    """``metrics(params, model_state, batch) -> {"test_loss", "test_accuracy"}`` in evaluation
    mode: the means over the batch of the cross entropy and of ``argmax(logits) == y``.

    Args:
      apply: a :class:`Model`'s ``apply`` (or the :class:`Model`).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from decsim.problems.nets import lenet
        >>> model = lenet()
        >>> params, state = model.init(jax.random.key(0), (8, 8, 1), 3)
        >>> batch = {"x": jnp.zeros((2, 8, 8, 1)), "y": jnp.array([0, 2])}
        >>> sorted(classifier_metrics(model)(params, state, batch))
        ['test_accuracy', 'test_loss']
    """
    return _classifier_metrics(apply_of(apply))


@functools.cache
def _classifier_metrics(apply):
    def metrics(params, model_state, batch):
        logits, _ = apply(params, model_state, batch["x"], key=None)
        correct = jnp.argmax(logits, axis=-1) == batch["y"]
        return {"test_loss": cross_entropy(logits, batch["y"]),
                "test_accuracy": jnp.mean(correct.astype(jnp.float32))}

    return metrics
