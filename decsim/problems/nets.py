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
import numbers
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from ._layers import (
    DTYPES,
    Model,
    batchnorm,
    bn_init,
    check_dtype,
    check_impl,
    check_init,
    check_ints,
    check_rate,
    check_x,
    classifier_loss,
    classifier_metrics,
    dense_init,
    dense_layer,
    dropout,
    he_normal,
    max_pool2,
    num_params,
    per_channel,
    train_mode,
)
from .conv import DEFAULT_IMPL, conv2d

__all__ = ["Model", "lenet", "resnet", "resnet20", "classifier_loss", "classifier_metrics",
           "batchnorm", "num_params", "DTYPES"]


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
    channels = check_ints("channels", channels, min_len=1)
    kernel_sizes = check_ints("kernel_sizes", kernel_sizes, min_len=1)
    if len(kernel_sizes) != len(channels):
        raise ValueError(
            f"kernel_sizes must give one size per convolution (len(channels)={len(channels)}); "
            f"got kernel_sizes={kernel_sizes!r}."
        )
    hidden = check_ints("hidden", hidden)
    return _lenet(channels, kernel_sizes, hidden, check_rate("dropout", dropout, 0.0, 1.0),
                  check_dtype(dtype), check_impl(impl))


@functools.cache  # equal structure -> the very same functions (one compiled program)
def _lenet(channels, kernel_sizes, hidden, rate, dtype, impl) -> Model:
    min_hw = 2 ** len(channels)

    def init(key, input_shape, n_classes):
        shape = tuple(input_shape) if isinstance(input_shape, (tuple, list)) else input_shape
        one_d = isinstance(shape, tuple) and len(shape) == 3 and shape[1] == 1
        (h, w, c), n_classes = check_init(
            (shape[0], min_hw, shape[2]) if one_d else input_shape, n_classes, min_hw)
        w = 1 if one_d else w
        keys = iter(jax.random.split(key, len(channels) + len(hidden) + 1))
        convs = []
        for cout, k in zip(channels, kernel_sizes):
            kw = 1 if one_d else k  # a 1-D signal (width 1): k×1 kernels
            convs.append({"w": he_normal(next(keys), (k, kw, c, cout), k * kw * c),
                          "b": jnp.zeros(cout, jnp.float32)})
            c, h, w = cout, h // 2, (1 if one_d else w // 2)
        width, layers = h * w * c, []
        for n_out in (*hidden, n_classes):
            layers.append(dense_init(next(keys), width, n_out))
            width = n_out
        return {"conv": convs, "dense": layers}, {}

    def apply(params, model_state, x, *, key=None, train=None):
        train = train_mode(key, train)
        check_x(x)
        h = x.astype(dtype)
        for p in params["conv"]:
            h = conv2d(h, p["w"].astype(dtype), padding="SAME", impl=impl)
            h = h + per_channel(p["b"].astype(dtype), h.ndim)
            h = max_pool2(jax.nn.relu(h))
        h = h.reshape(h.shape[0], -1)
        for i, p in enumerate(params["dense"][:-1]):
            h = jax.nn.relu(dense_layer(p, h, dtype))
            if train and key is not None and rate > 0:
                h = dropout(jax.random.fold_in(key, i), h, rate)
        logits = dense_layer(params["dense"][-1], h, dtype).astype(jnp.float32)
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
    momentum = check_rate("momentum", momentum, 0.0, 1.0)
    if momentum == 0.0:
        raise ValueError("momentum must be a number in (0, 1); got momentum=0.0.")
    eps = check_rate("eps", eps, 0.0, 1.0)
    if eps == 0.0:
        raise ValueError("eps must be a positive number; got eps=0.0.")
    return _resnet(int(depth), int(width), shortcut, momentum, eps, check_dtype(dtype),
                   check_impl(impl))


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
        (_, _, c), n_classes = check_init(input_shape, n_classes, 1)
        keys = iter(jax.random.split(key, 3 * len(plan) + 2))
        bn_p, bn_s = bn_init(width)
        params = {"stem": {"w": he_normal(next(keys), (3, 3, c, width), 9 * c), "bn": bn_p}}
        state = {"stem": bn_s}
        stages_p, stages_s, c = [[], [], []], [[], [], []], width
        for i, (cout, stride) in enumerate(plan):
            bp, bs = {}, {}
            for name, cin in (("1", c), ("2", cout)):
                bp["conv" + name] = he_normal(next(keys), (3, 3, cin, cout), 9 * cin)
                bp["bn" + name], bs["bn" + name] = bn_init(cout)
            if shortcut == "B" and (stride != 1 or cin != c):
                bp["proj"] = he_normal(next(keys), (1, 1, c, cout), c)
                bp["bn_proj"], bs["bn_proj"] = bn_init(cout)
            stages_p[i // k].append(bp)
            stages_s[i // k].append(bs)
            c = cout
        params["stages"], state["stages"] = stages_p, stages_s
        params["dense"] = dense_init(next(keys), c, n_classes)
        return params, state

    def apply(params, model_state, x, *, key=None, train=None):
        train = train_mode(key, train)
        check_x(x)
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
        logits = dense_layer(params["dense"], h, dtype).astype(jnp.float32)
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
