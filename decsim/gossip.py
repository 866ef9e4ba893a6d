"""Gossip: one round of mixing ``X <- W X`` over the stacked worker axis.

A round is ``jnp.tensordot(W, X, axes=1)`` leaf-wise (ALGORITHMS.md section 0). The matrix (or, for
a time-varying topology, the arrays it is generated from at each round) enters
the compiled program as an argument, never as a baked-in constant, so two topologies with the same
number of workers share one compiled program. Matmuls run at ``Precision.HIGHEST`` so that GPU
TF32 defaults cannot change results.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

from .topology import static_weights


def mix(W, X):
    """One gossip round ``W X`` for a stacked pytree ``X`` (leaves ``[n, ...]``)."""

    def one(a):
        w = W.astype(a.dtype)
        return jnp.tensordot(w, a, axes=1, precision=jax.lax.Precision.HIGHEST)

    return jax.tree.map(one, X)


class Mixer(NamedTuple):
    """The gossip operator an algorithm's ``step`` receives.

    Calling it performs one round ``W_t Z`` with this step's matrix. An algorithm that gossips R
    times per step and wants a time-varying topology to advance between those rounds asks for
    ``mixer.round(r, R)``, the operator of round ``tau = t·R + r`` (the same operator on a static
    topology).

    Attributes (arrays, traced inside the program):
      W: ``[n, n]`` mixing matrix of this step.
      lam: ``||W − J||_2`` of the (base) topology, for algorithms that tune themselves to the graph
        (accelerated gossip).
      weights_fn, weights_args, tau: how W was made (``topology.weights_fn``), for ``round``.
    """

    W: Any
    lam: Any
    weights_fn: Optional[Callable] = None
    weights_args: Any = None
    tau: Any = None

    def __call__(self, Z):
        return mix(self.W, Z)

    @property
    def n(self) -> int:
        return self.W.shape[0]

    def round(self, r, rounds: int) -> "Mixer":
        """The mixer of sub-round ``r`` (0 <= r < rounds) of this step."""
        if self.weights_fn is None or self.weights_fn is static_weights:
            return self
        tau = self.tau * rounds + r
        return self._replace(W=self.weights_fn(self.weights_args, tau), tau=tau)


def make_mixer(weights_fn: Callable, weights_args, lam, t) -> Mixer:
    """The mixer of step ``t`` for a topology's ``weights_fn``/``weights_args`` (inside jit)."""
    return Mixer(W=weights_fn(weights_args, t), lam=lam, weights_fn=weights_fn,
                 weights_args=weights_args, tau=t)
