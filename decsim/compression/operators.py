"""The compression operators, with exact bit accounting (docs/reference/compressors.md).

A compressor is a :class:`decsim.Compressor`: ``compress(key, x) -> x_hat`` maps ONE worker's ONE
leaf (any shape) to the value the receiver reconstructs (same shape and dtype), and
``bits(x_hat)`` is the payload of that message in bits (a float32 scalar). Algorithms apply a
compressor per worker (``jax.vmap``) and per leaf (layer-wise, as in the Choco deep-learning code)
through :func:`compress_stacked`, which also derives independent keys per worker and per leaf.

Quality: a (possibly biased) compressor satisfies ``E||C(x) − x||² <= (1 − ω)||x||²`` with
``ω = compressor.omega(d) ∈ (0, 1]`` for a leaf of size d; unbiased compressors (``E C(x) = x``)
whose variance exceeds ``||x||²`` claim no such bound (``omega`` returns ``None``).

| factory                      | reconstructs                    | ω(d) | bits per leaf            |
|------------------------------|---------------------------------|------|--------------------------|
| ``identity()``               | x                               | 1    | 32 d                     |
| ``top_k(fraction)``          | the k largest-magnitude entries | k/d  | k (32 + ⌈log2 d⌉)        |
| ``rand_k(fraction)``         | k uniformly random entries      | k/d  | 32 k + 32                |
| ``rand_k(f, unbiased=True)`` | the same, scaled by d/k         | None | 32 k + 32                |
| ``qsgd(s)``                  | s-level quantization / τ        | 1/τ  | d (1 + ⌈log2(s+1)⌉) + 32 |
| ``qsgd(s, unbiased=True)``   | s-level quantization            | None | same                     |
| ``sign()``                   | (‖x‖₁/d) sign(x)                | 1/d  | d + 32                   |
| ``dithered(s)``              | the unbiased qsgd map           | None | as qsgd (fixed length)   |

with ``k = max(1, round(fraction · d))``, ``τ = 1 + min(d/s², √d/s)`` and ⌈·⌉ rounding up; ``1/d``
is the worst case of ``sign``; ``dithered`` is MALCOM-PSGD's quantizer.

The quantizer that ``qsgd`` and ``dithered`` share with MALCOM's coder is
:mod:`decsim.compression._quantizer`; the coder itself is :mod:`decsim.compression.coding`.

Factories are memoized: ``top_k(0.01) is top_k(0.01)``, so algorithms built with equal compressors
have equal structure keys and share one compiled program in the runner.

Example:
    >>> import jax, jax.numpy as jnp
    >>> comp = top_k(0.25)
    >>> x = jnp.array([0.1, -3.0, 0.2, 1.0, 0.0, 0.5, -0.4, 2.0])
    >>> comp.compress(jax.random.PRNGKey(0), x)
    Array([ 0., -3.,  0.,  0.,  0.,  0.,  0.,  2.], dtype=float32)
    >>> float(comp.bits(x)), comp.omega(8)     # k = 2 entries of (32 + 3) bits
    (70.0, 0.25)
"""

from __future__ import annotations

import functools
import math
import numbers

import jax
import jax.numpy as jnp

from .._types import Compressor
from ._quantizer import FLOAT_BITS, accumulate, check_levels, dequantize, quantize, quantize_parts
from .coding import elias_bits

COMPRESSORS = ("identity", "top_k", "rand_k", "qsgd", "sign", "dithered")  # the factories

__all__ = [*COMPRESSORS, "COMPRESSORS", "compress_stacked", "check_compressor", "num_kept",
           "qsgd_tau"]


# ---------------------------------------------------------------------------------------------
# validation (plain Python values only; compressors are structural, never traced)


def _check_fraction(fraction) -> float:
    ok = isinstance(fraction, numbers.Real) and not isinstance(fraction, bool)
    if not ok or not (0.0 < float(fraction) <= 1.0):  # also rejects NaN
        raise ValueError(f"fraction must be a number in (0, 1] (the share of entries kept, e.g. "
                         f"0.01 for 1%); got fraction={fraction!r}.")
    return float(fraction)


def num_kept(fraction: float, d: int) -> int:
    """``k = max(1, round(fraction · d))`` entries kept of a leaf of size d (never more than d).

    ``round`` is Python's (half to even, as numpy's); ``fraction · d`` is first rounded to 9
    decimals so that e.g. ``0.01 · 2000 = 20.000000000000004`` counts as 20.
    """
    return int(min(d, max(1, round(round(fraction * d, 9)))))


def _ceil_log2(m: int) -> int:
    """``ceil(log2 m)`` for an integer m >= 1, exactly (no floating point)."""
    return int(m - 1).bit_length()


def qsgd_tau(d: int, levels: int) -> float:
    """``τ = 1 + min(d/s², √d/s)``: the variance factor of s-level qsgd on a leaf of size d."""
    return 1.0 + min(d / levels**2, math.sqrt(d) / levels)


def _bits(value: float):
    return jnp.asarray(value, jnp.float32)


def _flat_size(x) -> int:
    return int(math.prod(jnp.shape(x)))


# ---------------------------------------------------------------------------------------------
# compressors


@functools.cache
def identity() -> Compressor:
    """No compression: ``C(x) = x``; ω = 1; ``32 d`` bits (dense float32).

    Example:
      >>> identity().omega(10), float(identity().bits(jnp.zeros(10)))
      (1.0, 320.0)
    """

    def compress(key, x):
        del key
        return x

    return Compressor(compress=compress, bits=lambda x_hat: _bits(FLOAT_BITS * _flat_size(x_hat)),
                      omega=lambda d: 1.0, name="identity", unbiased=True, deterministic=True)


def top_k(fraction: float) -> Compressor:
    """Top-k sparsification: keep the ``k = max(1, round(fraction·d))`` entries of largest
    ``|x_j|``.

    Deterministic and biased; ``||C(x) − x||² <= (1 − k/d)||x||²`` for every x (the dropped
    entries are the smallest), so ``omega(d) = k/d`` is the guaranteed quality (the actual one is
    often better). Uses ``jax.lax.top_k`` (a partial selection), not a full sort. Ties are broken
    towards lower indices (``lax.top_k``'s order).

    Bits: ``k (32 + ceil(log2 d))``: each kept value as float32 plus its position.

    Args:
      fraction: share of entries kept, in (0, 1].

    Example:
      >>> comp = top_k(0.01)
      >>> comp.omega(2000), float(comp.bits(jnp.zeros(2000)))   # k = 20, 20 · (32 + 11)
      (0.01, 860.0)
    """
    return _top_k(_check_fraction(fraction))


@functools.cache
def _top_k(fraction: float) -> Compressor:
    def compress(key, x):
        del key
        flat = x.reshape(-1)
        d = flat.shape[0]
        k = num_kept(fraction, d)
        if k >= d:
            return x
        _, idx = jax.lax.top_k(jnp.abs(flat), k)
        return jnp.zeros_like(flat).at[idx].set(flat[idx]).reshape(x.shape)

    def bits(x_hat):
        d = _flat_size(x_hat)
        return _bits(num_kept(fraction, d) * (FLOAT_BITS + _ceil_log2(d)))

    return Compressor(compress=compress, bits=bits, omega=lambda d: num_kept(fraction, d) / d,
                      name=f"top_k({fraction:g})", unbiased=fraction == 1.0, deterministic=True)


def rand_k(fraction: float, unbiased: bool = False) -> Compressor:
    """Random-k sparsification: keep k uniformly random entries (a uniform k-subset).

    ``k = max(1, round(fraction·d))``. Biased version: ``E||C(x) − x||² = (1 − k/d)||x||²``,
    ``omega(d) = k/d``. With ``unbiased=True`` the kept entries are scaled by ``d/k`` so that
    ``E C(x) = x``; its error ``E||C(x) − x||² = (d/k − 1)||x||²`` exceeds ``||x||²`` when
    ``k < d/2``, so it claims no quality (``omega`` returns ``None``).

    Bits: ``32 k + 32``: the kept values; the positions come from a seed shared with the receiver
    (32 bits).

    Args:
      fraction: share of entries kept, in (0, 1].
      unbiased: scale by ``d/k``.

    Example:
      >>> comp = rand_k(0.01)
      >>> comp.omega(2000), float(comp.bits(jnp.zeros(2000)))
      (0.01, 672.0)
    """
    if not isinstance(unbiased, bool):
        raise ValueError(f"unbiased must be True or False; got unbiased={unbiased!r}.")
    return _rand_k(_check_fraction(fraction), unbiased)


def _random_subset(key, d: int, k: int):
    """Indices of a uniformly random k-subset of ``range(d)``.

    The k largest of d i.i.d. random values form a uniform k-subset (exchangeability). The values
    are 29 random bits placed in the mantissa and low exponent bits of positive normal float32
    numbers (float order = integer order, no NaN, inf or denormals), so ``lax.top_k`` runs on
    floats, its fast path: ~30x faster than ``jax.random.choice(replace=False)`` (a full shuffle)
    at d = 2000, and ties (broken by index) have probability ~ d/2^29 per call instead of d/2^23
    with ``jax.random.uniform``.
    """
    raw = (jax.random.bits(key, (d,), jnp.uint32) >> 3) + jnp.uint32(1 << 23)
    _, idx = jax.lax.top_k(jax.lax.bitcast_convert_type(raw, jnp.float32), k)
    return idx


@functools.cache
def _rand_k(fraction: float, unbiased: bool) -> Compressor:
    def compress(key, x):
        flat = x.reshape(-1)
        d = flat.shape[0]
        k = num_kept(fraction, d)
        if k >= d:
            return x
        idx = _random_subset(key, d, k)
        kept = flat[idx]
        if unbiased:
            kept = kept * jnp.asarray(d / k, flat.dtype)
        return jnp.zeros_like(flat).at[idx].set(kept).reshape(x.shape)

    def bits(x_hat):
        return _bits(FLOAT_BITS * num_kept(fraction, _flat_size(x_hat)) + FLOAT_BITS)

    omega = None if unbiased else (lambda d: num_kept(fraction, d) / d)
    name = f"rand_k({fraction:g}{', unbiased' if unbiased else ''})"
    return Compressor(compress=compress, bits=bits, omega=omega, name=name,
                      unbiased=unbiased or fraction == 1.0, deterministic=fraction == 1.0)


def _qsgd_bits(levels: int):
    def bits(x_hat):
        d = _flat_size(x_hat)
        return _bits(d * (1 + _ceil_log2(levels + 1)) + FLOAT_BITS)

    return bits


def qsgd(levels: int, unbiased: bool = False) -> Compressor:
    """QSGD stochastic quantization (Alistarh et al. 2017) with s = ``levels`` levels.

    ``Q(x) = ‖x‖₂ sign(x) ⌊s|x|/‖x‖₂ + u⌋ / s`` with ``u ~ U[0, 1)`` per entry: unbiased, with
    ``E||Q(x) − x||² <= min(d/s², √d/s)||x||²``. The default (biased) version is ``Q(x)/τ`` with
    ``τ = 1 + min(d/s², √d/s)``, which is a contraction with ``omega(d) = 1/τ``
    (Koloskova et al. 2019); ``unbiased=True`` returns Q itself (``omega`` is ``None``).

    Bits: ``d (1 + ceil(log2(s+1))) + 32``: a sign bit and a level in 0..s per entry, plus the
    norm. (The Choco papers' "b-bit qsgd" is s = 2^b levels, e.g. 4-bit is ``qsgd(16)``; its
    honest fixed-length cost is then 1 + 5 = 6 bits per entry.)

    Args:
      levels: s >= 1, integer.
      unbiased: return Q rather than Q/τ.

    Example:
      >>> comp = qsgd(16)
      >>> round(comp.omega(2000), 4), float(comp.bits(jnp.zeros(2000)))
      (0.2635, 12032.0)
    """
    if not isinstance(unbiased, bool):
        raise ValueError(f"unbiased must be True or False; got unbiased={unbiased!r}.")
    return _qsgd(check_levels(levels), unbiased)


@functools.cache
def _qsgd(levels: int, unbiased: bool) -> Compressor:
    def compress(key, x):
        q = quantize(key, x, levels)
        if unbiased:
            return q
        qa = accumulate(q)
        return (qa / jnp.asarray(qsgd_tau(_flat_size(x), levels), qa.dtype)).astype(x.dtype)

    omega = None if unbiased else (lambda d: 1.0 / qsgd_tau(d, levels))
    name = f"qsgd({levels}{', unbiased' if unbiased else ''})"
    return Compressor(compress=compress, bits=_qsgd_bits(levels), omega=omega, name=name,
                      unbiased=unbiased, deterministic=False)


@functools.cache
def sign() -> Compressor:
    """Scaled sign: ``C(x) = (‖x‖₁/d) sign(x)``.

    Deterministic and biased, ``||C(x) − x||² = (1 − ω(x))||x||²`` exactly, with
    ``ω(x) = ‖x‖₁² / (d ‖x‖₂²)``, which depends on x. ``omega(d)`` returns its worst case ``1/d``
    (reached by a one-hot x, since ``‖x‖₁ >= ‖x‖₂``); dense vectors do far better (≈ 2/π for
    Gaussian entries).

    Bits: ``d + 32``: one sign bit per entry and the scale.

    Example:
      >>> comp = sign()
      >>> comp.compress(None, jnp.array([1.0, -3.0]))
      Array([ 2., -2.], dtype=float32)
    """

    def compress(key, x):
        del key
        xa = accumulate(x)
        scale = jnp.sum(jnp.abs(xa)) / jnp.asarray(_flat_size(x), xa.dtype)
        return (scale * jnp.sign(xa)).astype(x.dtype)

    def bits(x_hat):
        return _bits(_flat_size(x_hat) + FLOAT_BITS)

    return Compressor(compress=compress, bits=bits, omega=lambda d: 1.0 / d, name="sign",
                      unbiased=False, deterministic=True)


def dithered(levels: int, coder: str = "fixed") -> Compressor:
    """The dithered (unbiased qsgd) quantizer used by MALCOM-PSGD
    (docs/reference/algorithms.md#family-malcom).

    ``D(x) = ‖x‖₂ sign(x) ⌊s|x|/‖x‖₂ + u⌋ / s``, ``u ~ U[0, 1)``: the same map as
    ``qsgd(levels, unbiased=True)``. Its ``bits`` is the fixed-length qsgd count
    ``d (1 + ceil(log2(s+1))) + 32``; the entropy-coded length
    (docs/reference/compressors.md#elias-gamma-coding) is an upper layer.

    With ``coder="elias"`` the payload is the exact length of MALCOM-PSGD's lossless code of the
    message (docs/reference/compressors.md#elias-gamma-coding: 32-bit norm, Elias-gamma gaps
    between nonzero positions, sign bit and Elias-gamma level per nonzero), known only while
    compressing: use ``encode(key, x) -> (x_hat, bits)`` (``compress_stacked`` does);
    ``bits(x_hat)`` cannot recover the levels from the reconstruction and refuses.

    Args:
      levels: s >= 1, integer.
      coder: ``"fixed"`` (fixed-length count) or ``"elias"`` (exact entropy-coded length).

    Example:
      >>> float(dithered(4).bits(jnp.zeros(10)))   # 10 · (1 + 3) + 32
      72.0
    """
    if coder not in ("fixed", "elias"):
        raise ValueError(f"coder={coder!r} is not a coder; choose 'fixed' or 'elias'.")
    return _dithered(check_levels(levels), coder)


@functools.cache
def _dithered(levels: int, coder: str = "fixed") -> Compressor:
    def compress(key, x):
        return quantize(key, x, levels)

    if coder == "fixed":
        return Compressor(compress=compress, bits=_qsgd_bits(levels), omega=None,
                          name=f"dithered({levels})", unbiased=True, deterministic=False)

    def encode(key, x):
        norm, level, negative = quantize_parts(key, x, levels)
        return dequantize(norm, level, negative, levels).astype(x.dtype), elias_bits(level)

    def bits(x_hat):
        raise ValueError("dithered(coder='elias') knows its code length only while compressing; "
                         "call its encode(key, x) (compress_stacked does) instead of bits(x_hat).")

    return Compressor(compress=compress, bits=bits, omega=None,
                      name=f"dithered({levels}, elias)", unbiased=True, deterministic=False,
                      encode=encode)


# ---------------------------------------------------------------------------------------------
# applying a compressor to stacked pytrees


def check_compressor(compressor, owner: str = "compressor") -> Compressor:
    """``compressor`` itself if it is a :class:`decsim.Compressor`; a ValueError naming ``owner``
    (the argument it was passed as) otherwise."""
    if not isinstance(compressor, Compressor):
        raise ValueError(f"{owner} must be a decsim Compressor, e.g. "
                         f"decsim.compression.top_k(0.01); got {compressor!r} of type "
                         f"{type(compressor).__name__}.")
    return compressor


def compress_stacked(compressor: Compressor, key, X):
    """Compress a stacked pytree per worker and per leaf.

    Leaf ``i`` (in ``jax.tree.leaves`` order) of worker ``w`` is compressed with key
    ``split(fold_in(key, i), n)[w]``, so every worker and every leaf draws independently.

    Args:
      compressor: a :class:`decsim.Compressor`.
      key: PRNG key for this exchange.
      X: stacked pytree, leaves ``[n, ...]``.

    Returns:
      ``(X_hat, bits)``: the reconstructed values (same structure, shapes and dtypes) and a float32
      scalar, the mean over workers of each worker's total payload over all leaves (what
      ``StepCost.bits`` records).

    Example:
      >>> X = {"w": jnp.ones((4, 10)), "b": jnp.ones((4, 2))}
      >>> X_hat, bits = compress_stacked(qsgd(4), jax.random.PRNGKey(0), X)
      >>> float(bits)   # (10·4 + 32) + (2·4 + 32)
      112.0
    """
    leaves, treedef = jax.tree.flatten(X)
    out, total = [], jnp.zeros((), jnp.float32)
    for i, leaf in enumerate(leaves):
        n = leaf.shape[0]
        keys = jax.random.split(jax.random.fold_in(key, i), n)
        if compressor.encode is not None:
            x_hat, leaf_bits = jax.vmap(compressor.encode)(keys, leaf)
        else:
            x_hat = jax.vmap(compressor.compress)(keys, leaf)
            leaf_bits = jax.vmap(compressor.bits)(x_hat)
        total = total + jnp.mean(leaf_bits.astype(jnp.float32))
        out.append(x_hat)
    return jax.tree.unflatten(treedef, out), total

