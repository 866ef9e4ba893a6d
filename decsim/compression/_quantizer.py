"""The s-level stochastic quantizer shared by ``qsgd``/``dithered`` and MALCOM's source coder.

One quantizer, written once: :func:`quantize_parts` draws the message ``(norm, level, negative)``
of a leaf, :func:`dequantize` is the value a message stands for, and :func:`quantize` (the map
``qsgd`` and ``dithered`` apply) is their composition. So ``dithered(s, coder="elias")``
reconstructs bit for bit what ``dithered(s)`` does, from the very message whose code length it
counts.

The public names here are shared by :mod:`~decsim.compression.operators` and
:mod:`~decsim.compression.coding`; they are not part of ``decsim.compression``'s API (except
``FLOAT_BITS``).

Example:
    >>> import jax, jax.numpy as jnp
    >>> x = jnp.array([3.0, -4.0, 0.0])          # ||x|| = 5
    >>> norm, level, negative = quantize_parts(jax.random.PRNGKey(0), x, 4)
    >>> float(norm), level.tolist(), negative.tolist()
    (5.0, [3, 4, 0], [False, True, False])
    >>> dequantize(norm, level, negative, 4).tolist()   # norm / s · (−1)^negative · level
    [3.75, -5.0, 0.0]
"""

from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp

__all__ = ["FLOAT_BITS", "accumulate", "check_levels", "quantize_parts", "dequantize", "quantize"]

FLOAT_BITS = 32  # bits of one float32 on the wire (a value, a norm, a seed)


def check_levels(levels) -> int:
    """``levels`` (s, an integer >= 1, possibly given as an integral float) as an int."""
    integral = isinstance(levels, numbers.Integral) or (
        isinstance(levels, numbers.Real) and float(levels).is_integer())
    if isinstance(levels, bool) or not integral or levels < 1:
        raise ValueError(f"levels must be an integer >= 1 (quantization levels s; b-bit qsgd in "
                         f"the Choco papers is s = 2**b); got levels={levels!r}.")
    return int(levels)


def accumulate(x):
    """x in at least float32, so norms and sums of bfloat16/float16 leaves are accurate."""
    return x.astype(jnp.float32) if jnp.dtype(x.dtype).itemsize < 4 else x


def quantize_parts(key, x, levels: int):
    """The message of s-level stochastic quantization of one leaf ``x`` (any shape).

    ``(norm, level, negative)``: the norm ``‖x‖₂`` (a scalar in at least float32), the levels
    ``ℓ_j = min(⌊s|x_j|/‖x‖₂ + u_j⌋, s)`` (int32, the shape of x) with ``u_j ~ U[0, 1)`` drawn in
    the same dtype as the norm, and the sign bits of x (bool). A zero norm (or a non-finite one
    that compares false) gives all levels 0. In exact arithmetic ``s|x_j|/‖x‖₂ + u < s + 1``
    already; the clip only absorbs float round-off, so that a level always fits the
    ``ceil(log2(s+1))`` bits that are counted.
    """
    xa = accumulate(x)
    norm = jnp.sqrt(jnp.sum(jnp.square(xa)))
    positive = norm > 0
    safe = jnp.where(positive, norm, jnp.ones_like(norm))
    s = jnp.asarray(levels, xa.dtype)
    u = jax.random.uniform(key, x.shape, xa.dtype)
    level = jnp.minimum(jnp.floor(s * jnp.abs(xa) / safe + u), s)
    level = jnp.where(positive, level, jnp.zeros_like(level)).astype(jnp.int32)
    return norm, level, jnp.signbit(xa)


def dequantize(norm, level, negative, levels: int):
    """The value a message stands for: ``norm / s · (−1)^negative · level`` in the norm's dtype,
    and zero when the norm is not positive (a zero vector gives zero, never NaN)."""
    s = jnp.asarray(levels, norm.dtype)
    magnitude = (norm / s) * level.astype(norm.dtype)
    q = jnp.where(negative, -magnitude, magnitude)
    return jnp.where(norm > 0, q, jnp.zeros_like(q))


def quantize(key, x, levels: int):
    """Unbiased s-level stochastic quantization ``‖x‖₂ sign(x) ⌊s|x|/‖x‖₂ + u⌋ / s`` of one leaf,
    in x's dtype: ``dequantize ∘ quantize_parts``."""
    return dequantize(*quantize_parts(key, x, levels), levels).astype(x.dtype)
