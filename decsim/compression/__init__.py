"""Compression operators with exact bit accounting (docs/reference/compressors.md).

Every public name is re-exported here (``decsim.compression.top_k``):

* :mod:`~decsim.compression.operators`: the compressors (``identity``, ``top_k``, ``rand_k``,
  ``qsgd``, ``sign``, ``dithered``), ``compress_stacked`` (a compressor applied per worker and per
  leaf) and ``check_compressor``;
* :mod:`~decsim.compression.coding`: MALCOM-PSGD's source coder (``elias_bits``,
  ``encode_message``, ``decode_message``, ...).

Choco's consensus step size is tuned next to Choco: :func:`decsim.algorithms.tune_gamma`.

``REGISTRY`` maps each compressor factory's name to the factory (``operators.COMPRESSORS``).

Example:
    >>> import jax, jax.numpy as jnp
    >>> import decsim.compression as C
    >>> comp = C.top_k(0.25)
    >>> x = jnp.array([0.1, -3.0, 0.2, 1.0, 0.0, 0.5, -0.4, 2.0])
    >>> comp.compress(jax.random.PRNGKey(0), x)
    Array([ 0., -3.,  0.,  0.,  0.,  0.,  0.,  2.], dtype=float32)
    >>> float(comp.bits(x)), comp.omega(8)     # k = 2 entries of (32 + 3) bits
    (70.0, 0.25)
    >>> sorted(C.REGISTRY)
    ['dithered', 'identity', 'qsgd', 'rand_k', 'sign', 'top_k']
"""

from . import coding, operators
from ._quantizer import FLOAT_BITS
from .coding import decode_message, elias_bits, elias_gamma_length, encode_message, quantize_message
from .operators import (
                     check_compressor,
                     compress_stacked,
                     dithered,
                     identity,
                     num_kept,
                     qsgd,
                     qsgd_tau,
                     rand_k,
                     sign,
                     top_k,
)

REGISTRY = {name: getattr(operators, name) for name in operators.COMPRESSORS}

__all__ = ["REGISTRY", "FLOAT_BITS", "identity", "top_k", "rand_k", "qsgd", "sign", "dithered",
           "compress_stacked", "check_compressor", "num_kept", "qsgd_tau",
           "elias_gamma_length", "elias_bits", "quantize_message", "encode_message",
           "decode_message", "operators", "coding"]
