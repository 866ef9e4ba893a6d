"""Image classifiers in pure JAX for the extended loss contract: a LeNet-style CNN and the CIFAR
ResNets of He et al. (2016), with BatchNorm state and dropout.

A model is a :class:`Model` of two pure functions,
``init(key, input_shape, n_classes) -> (params, model_state)`` and
``apply(params, model_state, x, *, key=None, train=None) -> (logits, new_model_state)``, for one
worker (decsim adds the worker axis by ``vmap`` or ``lax.map``). ``key is None`` means evaluation
mode: no dropout, BatchNorm uses its running statistics and ``model_state`` comes back unchanged.
:func:`classifier_loss` and :func:`classifier_metrics` turn an ``apply`` into decsim's extended
loss and test metrics. Convolutions are :func:`decsim.problems.conv.conv2d` (``impl=`` picks its
implementation); dense layers are :func:`decsim.problems.classification.dense`.

Precision: ``dtype=jnp.bfloat16`` computes convolutions and matmuls in bfloat16 while parameters
stay float32 (they are cast where used, so gradients are float32); BatchNorm statistics, the
softmax and the logits are float32.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from decsim.problems import nets
    >>> model = nets.resnet20()
    >>> params, state = model.init(jax.random.key(0), (8, 8, 3), 10)
    >>> nets.num_params(params)
    269722
    >>> batch = {"x": jnp.ones((4, 8, 8, 3)), "y": jnp.zeros(4, jnp.int32)}
    >>> loss, new_state = nets.classifier_loss(model.apply)(params, state, batch, None)
    >>> loss.shape, new_state is state
    ((), True)
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from .classification import dense
from .conv import DEFAULT_IMPL, IMPLS, conv2d

__all__ = ["Model", "lenet", "resnet", "resnet20", "classifier_loss", "classifier_metrics",
           "batchnorm", "num_params", "DTYPES"]

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


def _dtype(dtype):
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


def _impl(impl):
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {', '.join(map(repr, IMPLS))}; got impl={impl!r}.")
    return impl


def _rate(name, value, low, high):
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and low <= value < high
    if not ok:
        raise ValueError(f"{name} must be a number in [{low:g}, {high:g}); got {name}={value!r}.")
    return float(value)


def _ints(name, value, *, min_len=0):
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


def _check_init(input_shape, n_classes, min_hw=1):
    shape = _ints("input_shape", input_shape, min_len=3)
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


def _check_x(x):
    if jnp.ndim(x) != 4:
        raise ValueError(
            f"x must be a batch of images [b, H, W, C]; got shape {jnp.shape(x)}. "
            "A single image needs x[None]."
        )


def _mode(key, train):
    if train is None:
        return key is not None
    if not isinstance(train, bool):
        raise ValueError(f"train must be True, False or None; got train={train!r}.")
    return train


# ---------------------------------------------------------------------------------------------
# layers


def _he_normal(key, shape, fan_in):
    return jax.random.normal(key, shape, jnp.float32) * jnp.float32(math.sqrt(2.0 / fan_in))


def _dense_init(key, n_in, n_out):
    # PyTorch's default nn.Linear initialization: U(-1/sqrt(n_in), 1/sqrt(n_in)) for w and b
    kw, kb = jax.random.split(key)
    bound = 1.0 / math.sqrt(n_in)
    return {"w": jax.random.uniform(kw, (n_in, n_out), jnp.float32, -bound, bound),
            "b": jax.random.uniform(kb, (n_out,), jnp.float32, -bound, bound)}


def _channels(v, ndim: int):
    """A per-channel vector ``[C]`` shaped to broadcast against ``[..., C]`` of rank ``ndim``
    explicitly (so the models run under ``jax_numpy_rank_promotion="raise"``)."""
    return v.reshape((1,) * (ndim - 1) + v.shape)


def _dense(p, h, dtype):
    return dense(h, p["w"].astype(dtype)) + _channels(p["b"].astype(dtype), h.ndim)


def _dropout(key, h, rate):
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
        >>> [round(v, 3) for v in y[:, 0].tolist()], s2["mean"].tolist(), s2["var"].tolist()
        ([-1.0, 1.0], [0.2], [1.1])
    """
    xf = x.astype(jnp.float32)
    axes = tuple(range(x.ndim - 1))
    if train:
        mean = jnp.mean(xf, axes)
        var = jnp.mean(jnp.square(xf - _channels(mean, x.ndim)), axes)
        m = math.prod(x.shape[:-1])
        unbiased = lax.stop_gradient(var) * jnp.float32(m / max(m - 1, 1))
        new_state = {"mean": (1 - momentum) * state["mean"] + momentum * lax.stop_gradient(mean),
                     "var": (1 - momentum) * state["var"] + momentum * unbiased}
    else:
        mean, var, new_state = state["mean"], state["var"], state
    a = params["scale"] * lax.rsqrt(var + jnp.float32(eps))
    c = params["bias"] - mean * a
    return (xf * _channels(a, x.ndim) + _channels(c, x.ndim)).astype(x.dtype), new_state


def _bn_init(c):
    return ({"scale": jnp.ones(c, jnp.float32), "bias": jnp.zeros(c, jnp.float32)},
            {"mean": jnp.zeros(c, jnp.float32), "var": jnp.ones(c, jnp.float32)})


def _max_pool2(h):
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
# LeNet-style CNN


def lenet(*, channels: Sequence[int] = (16, 32), kernel_sizes: Sequence[int] = (5, 3),
          hidden: Sequence[int] = (128,), dropout: float = 0.0, dtype=jnp.float32,
          impl: str = DEFAULT_IMPL) -> Model:
    """A LeNet-style CNN: ``[conv k×k (SAME) + bias → ReLU → 2×2 max pool] × len(channels)`` →
    flatten → ``[dense → ReLU → dropout] × len(hidden)`` → dense to ``n_classes``.

    LeNet-5 (LeCun et al. 1998) is close to ``channels=(6, 16), kernel_sizes=(5, 5),
    hidden=(120, 84)`` (with max pooling and ReLU in place of its subsampling and tanh).
    An input of width 1 (a 1-D signal, e.g. MNIST-1D as ``[40, 1, 1]``) gets ``k×1`` kernels
    and ``2×1`` pooling. Stateless: ``model_state`` is ``{}``. Dropout acts only when ``apply``
    gets a ``key`` (and ``train`` is not False); its masks come from ``fold_in(key, layer)``.

    Args:
      channels: output channels of the convolutions.
      kernel_sizes: their kernel sizes (same length as ``channels``).
      hidden: widths of the hidden dense layers.
      dropout: drop rate after each hidden dense layer, in ``[0, 1)``.
      dtype: compute dtype (``jnp.float32``, ``jnp.bfloat16``, ``jnp.float16``); params stay
        float32.
      impl: the :func:`~decsim.problems.conv.conv2d` implementation.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> model = lenet(dropout=0.5)
        >>> params, state = model.init(jax.random.key(0), (8, 8, 1), 10)
        >>> logits, _ = model.apply(params, state, jnp.ones((4, 8, 8, 1)))
        >>> logits.shape, logits.dtype, state
        ((4, 10), dtype('float32'), {})
    """
    channels = _ints("channels", channels, min_len=1)
    kernel_sizes = _ints("kernel_sizes", kernel_sizes, min_len=1)
    if len(kernel_sizes) != len(channels):
        raise ValueError(
            f"kernel_sizes must give one size per convolution (len(channels)={len(channels)}); "
            f"got kernel_sizes={kernel_sizes!r}."
        )
    hidden = _ints("hidden", hidden)
    return _lenet(channels, kernel_sizes, hidden, _rate("dropout", dropout, 0.0, 1.0),
                  _dtype(dtype), _impl(impl))


@functools.cache  # equal structure -> the very same functions (one compiled program)
def _lenet(channels, kernel_sizes, hidden, rate, dtype, impl) -> Model:
    min_hw = 2 ** len(channels)

    def init(key, input_shape, n_classes):
        shape = tuple(input_shape) if isinstance(input_shape, (tuple, list)) else input_shape
        one_d = isinstance(shape, tuple) and len(shape) == 3 and shape[1] == 1
        (h, w, c), n_classes = _check_init(
            (shape[0], min_hw, shape[2]) if one_d else input_shape, n_classes, min_hw)
        w = 1 if one_d else w
        keys = iter(jax.random.split(key, len(channels) + len(hidden) + 1))
        convs = []
        for cout, k in zip(channels, kernel_sizes):
            kw = 1 if one_d else k  # a 1-D signal (width 1): k×1 kernels
            convs.append({"w": _he_normal(next(keys), (k, kw, c, cout), k * kw * c),
                          "b": jnp.zeros(cout, jnp.float32)})
            c, h, w = cout, h // 2, (1 if one_d else w // 2)
        width, layers = h * w * c, []
        for n_out in (*hidden, n_classes):
            layers.append(_dense_init(next(keys), width, n_out))
            width = n_out
        return {"conv": convs, "dense": layers}, {}

    def apply(params, model_state, x, *, key=None, train=None):
        train = _mode(key, train)
        _check_x(x)
        h = x.astype(dtype)
        for p in params["conv"]:
            h = conv2d(h, p["w"].astype(dtype), padding="SAME", impl=impl)
            h = h + _channels(p["b"].astype(dtype), h.ndim)
            h = _max_pool2(jax.nn.relu(h))
        h = h.reshape(h.shape[0], -1)
        for i, p in enumerate(params["dense"][:-1]):
            h = jax.nn.relu(_dense(p, h, dtype))
            if train and key is not None and rate > 0:
                h = _dropout(jax.random.fold_in(key, i), h, rate)
        logits = _dense(params["dense"][-1], h, dtype).astype(jnp.float32)
        return logits, model_state

    name = f"lenet{'-'.join(map(str, channels))}"
    return Model(init, apply, name)


# ---------------------------------------------------------------------------------------------
# CIFAR ResNets (He et al. 2016, section 4.2)


def resnet(depth: int = 20, *, width: int = 16, shortcut: str = "A", momentum: float = 0.1,
           eps: float = 1e-5, dtype=jnp.float32, impl: str = DEFAULT_IMPL) -> Model:
    """The CIFAR ResNet of He et al. (2016), section 4.2: depth ``6k + 2``.

    A 3×3 convolution to ``width`` channels, then 3 stages of ``k`` basic blocks with ``width``,
    ``2 width`` and ``4 width`` channels (the first block of stages 2 and 3 has stride 2), global
    average pooling and a dense layer. A basic block is ``conv3×3 → BN → ReLU → conv3×3 → BN``,
    plus the shortcut, then ReLU. Convolutions have no bias and symmetric padding 1 (as in the
    paper's code, so a stride-2 convolution's taps are centred on the pixels that the shortcut
    keeps). He-normal initialization (fan-in) for convolutions, BN scale 1 and bias 0.

    Shortcuts: ``"A"`` (the paper's CIFAR choice): identity; where the shape changes, the input
    subsampled ``x[:, ::2, ::2]`` and zero-padded with ``(C_out - C_in) / 2`` channels on each
    side (no parameters); ``"B"``: a 1×1 stride-2 convolution and BN there instead.
    ResNet-20 has 269,722 parameters with ``"A"`` and 272,474 with ``"B"`` (10 classes; BN
    scales and biases counted, running statistics not).

    BatchNorm: :func:`batchnorm` (PyTorch's convention: ``momentum`` is the weight of the new
    batch statistic, default 0.1; unbiased variance in the running average); its running
    statistics are ``model_state``.

    Args:
      depth: ``6k + 2`` (20, 32, 44, 56, 110, ...).
      width: channels of the first stage.
      shortcut: ``"A"`` or ``"B"``.
      momentum: BatchNorm momentum, in ``(0, 1)``.
      eps: BatchNorm epsilon.
      dtype: compute dtype; params and BN statistics stay float32.
      impl: the :func:`~decsim.problems.conv.conv2d` implementation.

    Example:
        >>> import jax
        >>> params, state = resnet(8).init(jax.random.key(0), (8, 8, 3), 10)
        >>> len(params["stages"]), len(params["stages"][0]), sorted(state["stem"])
        (3, 1, ['mean', 'var'])
    """
    if (not isinstance(depth, numbers.Integral) or isinstance(depth, bool) or depth < 8
            or (depth - 2) % 6):
        raise ValueError(f"depth must be 6k + 2 for an integer k >= 1 (20, 32, 44, 56, 110); "
                         f"got depth={depth!r}.")
    if not isinstance(width, numbers.Integral) or isinstance(width, bool) or width < 2 or width % 2:
        raise ValueError(f"width must be an even integer >= 2; got width={width!r}.")
    if shortcut not in ("A", "B"):
        raise ValueError(f"shortcut must be 'A' or 'B'; got shortcut={shortcut!r}.")
    momentum = _rate("momentum", momentum, 0.0, 1.0)
    if momentum == 0.0:
        raise ValueError("momentum must be a number in (0, 1); got momentum=0.0.")
    eps = _rate("eps", eps, 0.0, 1.0)
    if eps == 0.0:
        raise ValueError("eps must be a positive number; got eps=0.0.")
    return _resnet(int(depth), int(width), shortcut, momentum, eps, _dtype(dtype), _impl(impl))


def resnet20(*, shortcut: str = "A", momentum: float = 0.1, eps: float = 1e-5,
             dtype=jnp.float32, impl: str = DEFAULT_IMPL) -> Model:
    """ResNet-20 for CIFAR: :func:`resnet` with ``depth=20`` (3 stages × 3 basic blocks,
    16/32/64 channels; about 0.27M parameters).

    Args:
      shortcut: ``"A"`` (zero-padded identity, the paper's) or ``"B"`` (projection).
      momentum: BatchNorm momentum (weight of the new batch statistic).
      eps: BatchNorm epsilon.
      dtype: compute dtype; params stay float32.
      impl: the conv2d implementation.

    Example:
        >>> import jax
        >>> params, state = resnet20(shortcut="B").init(jax.random.key(0), (8, 8, 3), 10)
        >>> num_params(params)
        272474
    """
    return resnet(20, shortcut=shortcut, momentum=momentum, eps=eps, dtype=dtype, impl=impl)


@functools.cache
def _resnet(depth, width, shortcut, momentum, eps, dtype, impl) -> Model:
    k = (depth - 2) // 6
    plan = [(width * 2 ** s, 1 if (s == 0 or b) else 2) for s in range(3) for b in range(k)]

    def init(key, input_shape, n_classes):
        (_, _, c), n_classes = _check_init(input_shape, n_classes, 1)
        keys = iter(jax.random.split(key, 3 * len(plan) + 2))
        bn_p, bn_s = _bn_init(width)
        params = {"stem": {"w": _he_normal(next(keys), (3, 3, c, width), 9 * c), "bn": bn_p}}
        state = {"stem": bn_s}
        stages_p, stages_s, c = [[], [], []], [[], [], []], width
        for i, (cout, stride) in enumerate(plan):
            bp, bs = {}, {}
            for name, cin in (("1", c), ("2", cout)):
                bp["conv" + name] = _he_normal(next(keys), (3, 3, cin, cout), 9 * cin)
                bp["bn" + name], bs["bn" + name] = _bn_init(cout)
            if shortcut == "B" and (stride != 1 or cin != c):
                bp["proj"] = _he_normal(next(keys), (1, 1, c, cout), c)
                bp["bn_proj"], bs["bn_proj"] = _bn_init(cout)
            stages_p[i // k].append(bp)
            stages_s[i // k].append(bs)
            c = cout
        params["stages"], state["stages"] = stages_p, stages_s
        params["dense"] = _dense_init(next(keys), c, n_classes)
        return params, state

    def apply(params, model_state, x, *, key=None, train=None):
        train = _mode(key, train)
        _check_x(x)
        bn = functools.partial(batchnorm, train=train, momentum=momentum, eps=eps)
        conv = functools.partial(conv2d, padding=((1, 1), (1, 1)), impl=impl)

        h = conv(x.astype(dtype), params["stem"]["w"].astype(dtype))
        h, stem_s = bn(params["stem"]["bn"], model_state["stem"], h)
        h = jax.nn.relu(h)
        new_stages = []
        for sp, ss in zip(params["stages"], model_state["stages"]):
            new_blocks = []
            for bp, bs in zip(sp, ss):
                h, nbs = _block(bp, bs, h, bn, conv, shortcut, dtype)
                new_blocks.append(nbs)
            new_stages.append(new_blocks)
        h = jnp.mean(h.astype(jnp.float32), axis=(1, 2)).astype(dtype)
        logits = _dense(params["dense"], h, dtype).astype(jnp.float32)
        if not train:
            return logits, model_state
        return logits, {"stem": stem_s, "stages": new_stages}

    return Model(init, apply, f"resnet{depth}")


def _block(bp, bs, x, bn, conv, shortcut, dtype):
    cin, cout = x.shape[-1], bp["conv1"].shape[-1]
    stride = 1 if cin == cout else 2
    new = {}
    h = conv(x, bp["conv1"].astype(dtype), stride=stride)
    h, new["bn1"] = bn(bp["bn1"], bs["bn1"], h)
    h = conv(jax.nn.relu(h), bp["conv2"].astype(dtype))
    h, new["bn2"] = bn(bp["bn2"], bs["bn2"], h)
    if "proj" in bp:
        s = conv2d(x, bp["proj"].astype(dtype), stride=stride, padding="VALID",
                   impl=_conv_impl(conv))
        s, new["bn_proj"] = bn(bp["bn_proj"], bs["bn_proj"], s)
    elif stride != 1:
        extra = cout - cin
        s = jnp.pad(x[:, ::2, ::2], ((0, 0), (0, 0), (0, 0), (extra // 2, extra - extra // 2)))
    else:
        s = x
    return jax.nn.relu(h + s), new


def _conv_impl(conv):
    return conv.keywords["impl"]


# ---------------------------------------------------------------------------------------------
# losses and metrics


def _apply_of(apply):
    if isinstance(apply, Model):
        return apply.apply
    if not callable(apply):
        raise ValueError(
            f"apply must be a model's apply function (or a Model); got {type(apply).__name__}."
        )
    return apply


def _xent(logits, y):
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
        >>> model = lenet()
        >>> params, state = model.init(jax.random.key(0), (8, 8, 1), 3)
        >>> loss_fn = classifier_loss(model.apply)
        >>> batch = {"x": jnp.zeros((2, 8, 8, 1)), "y": jnp.array([0, 2])}
        >>> loss, _ = loss_fn(params, state, batch, jax.random.key(1))
        >>> bool(loss > 0), loss_fn is classifier_loss(model)
        (True, True)
    """
    return _classifier_loss(_apply_of(apply))


@functools.cache
def _classifier_loss(apply):
    def loss_fn(params, model_state, batch, key):
        logits, new_state = apply(params, model_state, batch["x"], key=key)
        return _xent(logits, batch["y"]), new_state

    return loss_fn


def classifier_metrics(apply) -> Callable:
    """``metrics(params, model_state, batch) -> {"test_loss", "test_accuracy"}`` in evaluation
    mode: the means over the batch of the cross entropy and of ``argmax(logits) == y``.

    Args:
      apply: a :class:`Model`'s ``apply`` (or the :class:`Model`).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> model = lenet()
        >>> params, state = model.init(jax.random.key(0), (8, 8, 1), 3)
        >>> batch = {"x": jnp.zeros((2, 8, 8, 1)), "y": jnp.array([0, 2])}
        >>> sorted(classifier_metrics(model)(params, state, batch))
        ['test_accuracy', 'test_loss']
    """
    return _classifier_metrics(_apply_of(apply))


@functools.cache
def _classifier_metrics(apply):
    def metrics(params, model_state, batch):
        logits, _ = apply(params, model_state, batch["x"], key=None)
        correct = jnp.argmax(logits, axis=-1) == batch["y"]
        return {"test_loss": _xent(logits, batch["y"]),
                "test_accuracy": jnp.mean(correct.astype(jnp.float32))}

    return metrics
