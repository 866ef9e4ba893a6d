"""Gossip: one round of mixing ``X <- W X`` over the stacked worker axis.

A round is ``jnp.tensordot(W, X, axes=1)`` leaf-wise (ALGORITHMS.md section 0). The matrix enters
the compiled program as an argument, never as a baked-in constant, so two topologies with the same
number of workers share one compiled program. Matmuls run at ``Precision.HIGHEST`` so that GPU
TF32 defaults cannot change results.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp


def mix(W, X):
    """One gossip round ``W X`` for a stacked pytree ``X`` (leaves ``[n, ...]``)."""

    def one(a):
        w = W.astype(a.dtype)
        return jnp.tensordot(w, a, axes=1, precision=jax.lax.Precision.HIGHEST)

    return jax.tree.map(one, X)


class Mixer(NamedTuple):
    """The gossip operator an algorithm's ``step`` receives.

    Calling it performs one round ``W Z``. Attributes (arrays, traced inside the program):

    Attributes:
      W: ``[n, n]`` mixing matrix of this step.
      lam: ``||W − J||_2`` of the (base) topology, for algorithms that tune themselves to the graph
        (accelerated gossip).
    """

    W: Any
    lam: Any

    def __call__(self, Z):
        return mix(self.W, Z)

    @property
    def n(self) -> int:
        return self.W.shape[0]
