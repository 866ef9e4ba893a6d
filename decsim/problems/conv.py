"""2-D convolution whose forward and backward passes are fast on XLA:CPU inside a compiled scan.

A decsim run is one ``lax.scan``; inside its body XLA:CPU runs the *backward* convolutions that
autodiff of ``lax.conv_general_dilated`` produces (the input gradient, a convolution with a
reversed kernel whose input/output feature axes are swapped, and the weight gradient, a
convolution with batch and feature axes swapped) through a slow generic path, 25-100x slower than
the same program as a plain jitted step (``benchmarks/conv.py``). In a plain jitted step XLA:CPU
rewrites those convolutions into the forward form (NHWC input, HWIO kernel, explicit transposes
of the operands) that its fast library kernel takes; in the optimized HLO of a loop body they
keep autodiff's dimension labels (``b01f_01oi->b01f``, ``f01b_i01o->01bf``). Forward-form
convolutions and row-major matmuls stay fast there. Every ``impl`` of :func:`conv2d` computes
the same function (equal to ``lax.conv_general_dilated`` to float32 rounding, values and
gradients); they differ in which of those fast operations they use:

- ``"forward"`` (default): forward ``lax.conv_general_dilated``; a ``custom_vjp`` whose two
  gradients are forward-form convolutions too: the input gradient as in ``"hybrid"``, the weight
  gradient as a convolution of the transposed input ``[C_in, H, W, batch]`` with the transposed
  output gradient ``[H_out, W_out, batch, C_out]`` as its kernel (dilated by the stride), the
  layout XLA:CPU itself rewrites autodiff's weight gradient into outside a loop. Inside the scan
  it runs at the speed of a plain jitted ``"lax"`` step (``benchmarks/conv.py``), with the memory
  of ``"lax"``.
- ``"hybrid"``: forward ``lax.conv_general_dilated``; a ``custom_vjp`` whose input
  gradient is a forward-form convolution of the (dilated, padded) output gradient with the reversed,
  transposed kernel, and whose weight gradient is ``gᵀ @ patches`` (im2col, recomputed in the
  backward pass, so only the input is kept for it, as for ``"lax"``).
- ``"matmul"``: im2col and matmuls in both passes (``custom_vjp``; the input gradient is the
  transpose of the patch extraction); keeps only the input, not the patches. Fastest under
  ``vmap`` over workers, where a convolution becomes a slow grouped convolution.
- ``"im2col"``: plain autodiff through patch extraction and a matmul; fast, but autodiff keeps the
  patch matrix, ``kh * kw`` times the layer's input, for the backward pass.
- ``"lax"``: plain autodiff of ``lax.conv_general_dilated``: the reference.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from decsim.problems.conv import conv2d
    >>> x = jnp.ones((2, 8, 8, 3)); w = jnp.ones((3, 3, 3, 4))
    >>> conv2d(x, w, stride=2).shape
    (2, 4, 4, 4)
    >>> float(conv2d(x, w, padding="VALID")[0, 0, 0, 0])
    27.0
"""

from __future__ import annotations

import functools
import numbers

import jax
import jax.numpy as jnp
from jax import lax

__all__ = ["conv2d", "IMPLS", "DEFAULT_IMPL", "conv_padding"]

IMPLS = ("forward", "hybrid", "matmul", "im2col", "lax")
DEFAULT_IMPL = "forward"
_DN = ("NHWC", "HWIO", "NHWC")


def conv_padding(in_hw, kernel_hw, stride: int, padding):
    """The explicit ``((top, bottom), (left, right))`` padding of ``"SAME"`` or ``"VALID"``.

    ``"SAME"`` follows XLA/TensorFlow: output size ``ceil(H / stride)``, with the odd pixel of
    padding at the bottom/right. Explicit pairs are returned as they are (as tuples).

    Args:
      in_hw: ``(H, W)`` of the input.
      kernel_hw: ``(kh, kw)`` of the kernel.
      stride: the stride in both spatial directions.
      padding: ``"SAME"``, ``"VALID"`` or ``((top, bottom), (left, right))``.

    Example:
        >>> conv_padding((32, 32), (3, 3), 2, "SAME")
        ((0, 1), (0, 1))
    """
    if padding == "VALID":
        return ((0, 0), (0, 0))
    if padding != "SAME":
        return tuple((int(lo), int(hi)) for lo, hi in padding)
    pads = []
    for n, k in zip(in_hw, kernel_hw):
        out = -(-n // stride)
        total = max((out - 1) * stride + k - n, 0)
        pads.append((total // 2, total - total // 2))
    return tuple(pads)


def _check(x, w, stride, padding, impl):
    if impl not in IMPLS:
        listed = ", ".join(repr(i) for i in IMPLS)
        raise ValueError(f"impl must be one of {listed}; got impl={impl!r}.")
    if not (isinstance(padding, str) and padding in ("SAME", "VALID")) and not _is_pairs(padding):
        raise ValueError(
            "padding must be 'SAME', 'VALID' or ((top, bottom), (left, right)) of integers >= 0; "
            f"got padding={padding!r}."
        )
    if not isinstance(stride, numbers.Integral) or isinstance(stride, bool) or stride < 1:
        raise ValueError(f"stride must be an integer >= 1; got stride={stride!r}.")
    if jnp.ndim(x) != 4 or jnp.ndim(w) != 4:
        raise ValueError(
            f"conv2d takes x [batch, H, W, C] and w [kh, kw, C_in, C_out]; got x of shape "
            f"{jnp.shape(x)} and w of shape {jnp.shape(w)}. Add a batch axis with x[None]."
        )
    if x.shape[3] != w.shape[2]:
        raise ValueError(
            f"x has {x.shape[3]} channels but w expects C_in={w.shape[2]} (w.shape[2]); "
            f"x.shape={x.shape}, w.shape={w.shape}."
        )
    pads = conv_padding(x.shape[1:3], w.shape[:2], int(stride), padding)
    if any(n + lo + hi < k for n, (lo, hi), k in zip(x.shape[1:3], pads, w.shape[:2])):
        raise ValueError(
            f"the padded input must be at least as large as the kernel; got H, W = "
            f"{x.shape[1:3]}, padding={padding!r} and kh, kw = {w.shape[:2]}. "
            "Use padding='SAME'."
        )
    if x.dtype != w.dtype:
        raise ValueError(
            f"x and w must have the same dtype; got x.dtype={x.dtype}, w.dtype={w.dtype}. "
            "Cast one, e.g. w.astype(x.dtype)."
        )


def _is_pairs(padding) -> bool:
    try:
        return len(padding) == 2 and all(
            len(pair) == 2 and all(isinstance(p, numbers.Integral) and not isinstance(p, bool)
                                   and p >= 0 for p in pair) for pair in padding)
    except TypeError:
        return False


def conv2d(x, w, *, stride: int = 1, padding="SAME", impl: str = DEFAULT_IMPL):
    """2-D convolution (cross-correlation), NHWC input and HWIO kernel.

    ``y[b, i, j, o] = sum_{di, dj, c} xp[b, s*i + di, s*j + dj, c] * w[di, dj, c, o]``, where
    ``xp`` is ``x`` zero-padded per ``padding``; the result equals
    ``lax.conv_general_dilated(x, w, (s, s), padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))``
    for every ``impl`` (see the module docstring for what each one trades).

    Args:
      x: input ``[batch, H, W, C_in]`` (NHWC).
      w: kernel ``[kh, kw, C_in, C_out]`` (HWIO), same dtype as ``x``.
      stride: the stride in both spatial directions.
      padding: ``"SAME"`` (output ``ceil(H / stride)``), ``"VALID"``, or explicit
        ``((top, bottom), (left, right))`` zero padding.
      impl: ``"forward"`` (default), ``"hybrid"``, ``"matmul"``, ``"im2col"`` or ``"lax"``.

    Returns:
      ``[batch, H_out, W_out, C_out]``.

    Example:
        >>> import jax.numpy as jnp
        >>> y = conv2d(jnp.ones((1, 5, 5, 2)), jnp.ones((3, 3, 2, 1)), impl="matmul")
        >>> y[0, :, :, 0].tolist()[0]
        [8.0, 12.0, 12.0, 12.0, 8.0]
    """
    _check(x, w, stride, padding, impl)
    pads = conv_padding(x.shape[1:3], w.shape[:2], int(stride), padding)
    return _IMPL_FNS[impl](x, w, int(stride), pads)


# ---------------------------------------------------------------------------------------------
# building blocks


def _lax_conv(x, w, stride, pads):
    return lax.conv_general_dilated(x, w, (stride, stride), pads, dimension_numbers=_DN)


def _patches(x, kh, kw, stride, pads):
    """im2col: ``[b, Ho, Wo, kh*kw*C]``, the patch of output pixel (i, j), ordered (di, dj, c)
    as ``w.reshape(kh*kw*C, C_out)`` is, built from strided slices (no convolution)."""
    xp = jnp.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
    b, hp, wp, c = xp.shape
    ho, wo = (hp - kh) // stride + 1, (wp - kw) // stride + 1
    cols = [lax.slice(xp, (0, di, dj, 0),
                      (b, di + (ho - 1) * stride + 1, dj + (wo - 1) * stride + 1, c),
                      (1, stride, stride, 1))
            for di in range(kh) for dj in range(kw)]
    return cols[0] if len(cols) == 1 else jnp.concatenate(cols, axis=-1)


def _t(a):
    """``aᵀ`` materialized in memory (the barrier keeps XLA from folding the transpose into the
    next dot, which would then contract a major axis: slow on XLA:CPU)."""
    return lax.optimization_barrier(a.T)


def _weight_grad(x, g, w_shape, stride, pads):
    # dw[k, o] = sum_n P[n, k] g[n, o], computed as (gᵀ @ P)ᵀ: gᵀ is kh*kw times smaller than P,
    # so it is the cheaper one to transpose, and the dot is a standard row-major matmul
    kh, kw, ci, co = w_shape
    patches = _patches(x, kh, kw, stride, pads).reshape(-1, kh * kw * ci)
    # (the barrier keeps XLA from folding the final transpose into the dot, which would then
    # contract the patches' major axis)
    return lax.optimization_barrier(_t(g.reshape(-1, co)) @ patches).T.reshape(w_shape)


def _im2col(x, w, stride, pads):
    kh, kw, ci, co = w.shape
    patches = _patches(x, kh, kw, stride, pads)
    ho, wo = patches.shape[1:3]
    return (patches.reshape(-1, kh * kw * ci) @ w.reshape(-1, co)).reshape(x.shape[0], ho, wo, co)


# ---------------------------------------------------------------------------------------------
# "matmul": im2col in both passes, keeping only x


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _matmul(x, w, stride, pads):
    return _im2col(x, w, stride, pads)


def _matmul_fwd(x, w, stride, pads):
    return _im2col(x, w, stride, pads), (x, w)


def _after(x, g):
    """``x``, made to depend on ``g`` (``x + 0 * g[0]``; XLA does not fold ``0 * a`` for floats),
    so the scheduler cannot rebuild the backward pass's patches from ``x`` before ``g`` exists.
    Without it XLA:CPU builds every layer's patch matrix during the forward pass and keeps them
    all alive, as ``"im2col"`` does. (An optimization barrier is not enough: XLA removes barriers
    before scheduling.)"""
    return x + jnp.zeros((), x.dtype) * g.reshape(-1)[0].astype(x.dtype)


def _matmul_bwd(stride, pads, res, g):
    x, w = _after(res[0], g), res[1]
    kh, kw, ci, co = w.shape
    dpatches = (g.reshape(-1, co) @ _t(w.reshape(-1, co))).reshape(g.shape[:3] + (kh * kw * ci,))
    # the transpose of the (linear) patch extraction: pads and adds, no convolution
    _, pullback = jax.vjp(lambda a: _patches(a, kh, kw, stride, pads), x)
    (dx,) = pullback(dpatches)
    return dx, _weight_grad(x, g, w.shape, stride, pads)


_matmul.defvjp(_matmul_fwd, _matmul_bwd)


# ---------------------------------------------------------------------------------------------
# "hybrid": lax forward, forward-form convolution for dx, im2col matmul for dw


def _input_grad(g, w, x_shape, stride, pads):
    """``dx`` of ``y = conv(x, w)``: a stride-1 forward-form convolution of ``g``, dilated by the
    stride and padded by ``k - 1``, with the reversed kernel whose feature axes are swapped
    (materialized, so XLA sees an ordinary HWIO kernel), cropped to ``x``'s place in ``xp``."""
    kh, kw = w.shape[:2]
    w_rev = lax.optimization_barrier(jnp.transpose(w[::-1, ::-1], (0, 1, 3, 2)))
    zero = jnp.zeros((), g.dtype)
    g_full = lax.pad(g, zero, ((0, 0, 0), (kh - 1, kh - 1, stride - 1),
                               (kw - 1, kw - 1, stride - 1), (0, 0, 0)))
    dxp = lax.conv_general_dilated(g_full, w_rev, (1, 1), "VALID", dimension_numbers=_DN)
    # dxp[t] is the gradient at padded position t < (Ho-1)*s + k; x sits at [lo, lo + H) of xp
    # (positions past dxp's end were never read by the forward pass: zero gradient)
    for axis, (lo, _), n in ((1, pads[0], x_shape[1]), (2, pads[1], x_shape[2])):
        short = lo + n - dxp.shape[axis]
        if short > 0:
            cfg = [(0, 0, 0)] * 4
            cfg[axis] = (0, short, 0)
            dxp = lax.pad(dxp, zero, cfg)
        dxp = lax.slice_in_dim(dxp, lo, lo + n, axis=axis)
    return dxp


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _hybrid(x, w, stride, pads):
    return _lax_conv(x, w, stride, pads)


def _hybrid_fwd(x, w, stride, pads):
    return _lax_conv(x, w, stride, pads), (x, w)


def _conv_bwd(weight_grad, stride, pads, res, g):
    # the backward pass of "hybrid" and "forward": they differ in the weight gradient only
    x, w = _after(res[0], g), res[1]
    return (_input_grad(g, w, x.shape, stride, pads),
            weight_grad(x, g, w.shape, stride, pads))


_hybrid.defvjp(_hybrid_fwd, functools.partial(_conv_bwd, _weight_grad))

# ---------------------------------------------------------------------------------------------
# "forward": every pass a forward-form (NHWC x HWIO) convolution


def _weight_grad_conv(x, g, w_shape, stride, pads):
    """``dw[di, dj, c, o] = sum_{b,i,j} xp[b, s*i + di, s*j + dj, c] g[b, i, j, o]``: a
    forward-form convolution whose batch axis is ``C_in``, whose input features are the batch
    and whose kernel is ``g`` (spatial ``H_out x W_out``, dilated by the stride). The transposes
    are materialized so that XLA cannot fold them back into the convolution's dimension
    numbers, which inside a loop body it would then run on its slow generic path."""
    kh, kw = w_shape[:2]
    xt = lax.optimization_barrier(jnp.transpose(x, (3, 1, 2, 0)))   # [C_in, H, W, batch]
    gt = lax.optimization_barrier(jnp.transpose(g, (1, 2, 0, 3)))   # [Ho, Wo, batch, C_out]
    d = lax.conv_general_dilated(xt, gt, (1, 1), pads, rhs_dilation=(stride, stride),
                                 dimension_numbers=_DN)             # [C_in, >= kh, >= kw, C_out]
    # positions past kh (kw) pair the last padded rows with nothing the forward pass read
    return jnp.transpose(d[:, :kh, :kw, :], (1, 2, 0, 3))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _forward(x, w, stride, pads):
    return _lax_conv(x, w, stride, pads)


_forward.defvjp(_hybrid_fwd, functools.partial(_conv_bwd, _weight_grad_conv))

_IMPL_FNS = {"forward": _forward, "hybrid": _hybrid, "matmul": _matmul, "im2col": _im2col,
             "lax": _lax_conv}
