"""MALCOM-PSGD's source coder (docs/reference/compressors.md#elias-gamma-coding): the exact
length of a quantized message.

A dithered-quantized message is (norm, levels ℓ_j ∈ {0..s}, signs). Its lossless code: the norm
as 32 bits (float32), then for every nonzero level in increasing position: the gap to the
previous nonzero position (the first gap is position + 1), Elias-gamma coded; a sign bit; and the
level, Elias-gamma coded. Elias-gamma of g >= 1: floor(log2 g) zeros, then g in binary, so
2 floor(log2 g) + 1 bits. The message length is framed by the transport, so no terminator.

:func:`elias_bits` counts that length inside the program (``dithered(s, coder="elias")`` uses
it); :func:`encode_message` and :func:`decode_message` write and read the actual bit string on
the host, so tests can check that the count is the measured length.

Example:
    >>> import numpy as np
    >>> bits = encode_message(np.float32(1.0), [0, 2, 0, 1], [False, True, False, False])
    >>> len(bits), float(elias_bits([0, 2, 0, 1]))  # 32 + (3 + 1 + 3) + (3 + 1 + 1)
    (44, 44.0)
    >>> decode_message(bits, 4)[1].tolist()
    [0, 2, 0, 1]
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ._quantizer import FLOAT_BITS, check_levels, quantize_parts

__all__ = ["elias_gamma_length", "elias_bits", "quantize_message", "encode_message",
           "decode_message"]


def elias_gamma_length(g):
    """Bits of the Elias-gamma code of integers ``g >= 1``: ``2 floor(log2 g) + 1`` (jittable)."""
    g = jnp.asarray(g, jnp.int32)
    return 2 * (31 - jax.lax.clz(g)) + 1


def elias_bits(level):
    """Exact length of the coded message with these levels (any shape, flattened row-major):
    ``32 + Σ_{ℓ_j > 0} [γ(gap_j) + 1 + γ(ℓ_j)]`` (jittable, float32)."""
    lv = jnp.asarray(level, jnp.int32).reshape(-1)
    nonzero = lv > 0
    pos = jnp.arange(lv.shape[0], dtype=jnp.int32)
    last = jax.lax.cummax(jnp.where(nonzero, pos, -1))
    prev = jnp.concatenate([jnp.full((1,), -1, jnp.int32), last[:-1]])
    per = (elias_gamma_length(jnp.maximum(pos - prev, 1)) + 1
           + elias_gamma_length(jnp.maximum(lv, 1)))
    return (FLOAT_BITS + jnp.sum(jnp.where(nonzero, per, 0))).astype(jnp.float32)


def quantize_message(key, x, levels: int):
    """Host helper: the ``(norm, levels, negative)`` message of ``dithered(levels)`` for a leaf."""
    norm, level, negative = quantize_parts(key, jnp.asarray(x), check_levels(levels))
    return np.float32(norm), np.asarray(level).reshape(-1), np.asarray(negative).reshape(-1)


def _gamma_code(g: int) -> str:
    binary = format(int(g), "b")
    return "0" * (len(binary) - 1) + binary


def encode_message(norm, level, negative) -> str:
    """The bit string (a str of '0'/'1') of a quantized message; its length equals
    :func:`elias_bits` of the same levels exactly."""
    level = np.asarray(level).reshape(-1)
    negative = np.asarray(negative).reshape(-1)
    if np.any(level < 0):
        raise ValueError("levels must be nonnegative integers (magnitudes; signs travel "
                         "separately).")
    parts = [format(int(np.asarray(norm, np.float32).view(np.uint32)), "032b")]
    prev = -1
    for j in np.flatnonzero(level):
        parts.append(_gamma_code(j - prev) + ("1" if negative[j] else "0") + _gamma_code(level[j]))
        prev = j
    return "".join(parts)


def _read_gamma(bits: str, i: int):
    zeros = 0
    while bits[i] == "0":
        zeros += 1
        i += 1
    return int(bits[i:i + zeros + 1], 2), i + zeros + 1


def decode_message(bits: str, d: int):
    """Inverse of :func:`encode_message` for a message of ``d`` entries:
    ``(norm float32, levels int64 [d], negative bool [d])`` (signs of zero levels are not sent and
    decode as positive)."""
    if len(bits) < FLOAT_BITS or set(bits) - {"0", "1"}:
        raise ValueError("bits must be a string of '0'/'1' of at least 32 characters.")
    norm = np.array(int(bits[:FLOAT_BITS], 2), dtype=np.uint32).view(np.float32)
    level = np.zeros(d, np.int64)
    negative = np.zeros(d, bool)
    i, pos = FLOAT_BITS, -1
    while i < len(bits):
        gap, i = _read_gamma(bits, i)
        pos += gap
        negative[pos] = bits[i] == "1"
        level[pos], i = _read_gamma(bits, i + 1)
    return np.float32(norm), level, negative
