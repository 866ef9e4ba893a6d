"""Choco's consensus step size γ, tuned by running Choco-Gossip (:func:`tune_gamma`).

This runs an algorithm, so it imports ``decsim.algorithms.choco`` (lazily, inside :func:`_tuner`):
the one place where compression reaches up to the algorithms. It is due to move next to Choco
(``decsim/algorithms/choco.py``), which removes that edge.
"""

from __future__ import annotations

import functools
import numbers
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from .._types import Compressor
from .operators import check_compressor

__all__ = ["tune_gamma"]


# Final errors below this fraction of the initial one count as converged (float32 round-off lies
# near 1e-15 of it): among converged candidates the fastest wins, not the luckiest residue.
_TUNE_FLOOR = 1e-10


def _tuning_error(X, X_hat):
    """``||X − x̄||² + ||X − X̂||²`` over all workers and leaves."""
    centred = jax.tree.map(lambda a: a - jnp.mean(a, axis=0, keepdims=True), X)
    lag = jax.tree.map(jnp.subtract, X, X_hat)
    return sum(jnp.sum(jnp.square(a)) for a in jax.tree.leaves(centred) + jax.tree.leaves(lag))


@functools.lru_cache(maxsize=32)
def _tuner(compressor: Compressor, n: int, sizes: tuple, rounds: int, n_grid: int):
    """One compiled program: ``rounds`` Choco-Gossip rounds for every gamma of the grid (vmapped).

    Returns per gamma the final error and the first round at which the error fell below the
    convergence floor (``rounds`` if never)."""
    from ..algorithms.choco import choco_gossip  # lazy: compression sits below algorithms
    from ..gossip import Mixer

    base = choco_gossip(0.5, compressor)

    def one(gamma, X0, W, key):
        algo = base.rebuild({"gamma": gamma})
        mixer = Mixer(W=W, lam=jnp.zeros((), jnp.float32))
        state = algo.init(X0, key)
        floor = jnp.float32(_TUNE_FLOOR) * _tuning_error(state.X, state.X_hat)

        def body(carry, t):
            state, hit = carry
            state, _ = algo.step(state, None, mixer, jax.random.fold_in(key, t))
            below = _tuning_error(state.X, state.X_hat) <= floor
            hit = jnp.where((hit == rounds) & below, t + 1, hit)
            return (state, hit), None

        (state, hit), _ = jax.lax.scan(body, (state, jnp.asarray(rounds, jnp.int32)),
                                       jnp.arange(rounds, dtype=jnp.int32))
        return _tuning_error(state.X, state.X_hat), hit, floor

    return jax.jit(jax.vmap(one, in_axes=(0, None, None, None)))


def tune_gamma(topology, compressor: Compressor, d, *, seed: int = 0, rounds: int = 1000,
               grid: Optional[Sequence[float]] = None, full_output: bool = False):
    """Pick Choco's consensus step size γ for a compressor on a topology (the Choco code's tuner).

    Runs ``choco_gossip(γ, compressor)`` for ``rounds`` rounds from Gaussian vectors
    ``x_i ~ N(0, I_d)`` (one per worker, drawn from ``seed``) for every γ of ``grid`` (default
    ``logspace(-3, 0, 20)``) and returns the γ minimising ``||X − x̄||² + ||X − X̂||²`` at the end.
    All γ run as one vmapped program (one compilation per compressor, size and round count; cached).

    Deviation (documented): the Choco code compares final errors in float64. In float32 several γ
    reach round-off level within the rounds (e.g. every γ above ~0.1 for ``identity()`` or 16-level
    qsgd on a ring of 9 with d = 2000), and their residues are noise. So final errors below
    ``1e-10 ×`` the initial one count as converged and tie; among them the γ that got there in the
    fewest rounds wins (then the larger γ). Where no candidate converges this is exactly the Choco
    rule. Diverged candidates (NaN/inf) are never chosen.

    Args:
      topology: a :class:`decsim.topology.Topology` (its ``W`` is used).
      compressor: the compressor Choco will use.
      d: vector size (an int), or a sequence of leaf sizes to tune layer-wise as the model will be
        compressed: ``ds.tree.leaf_sizes(problem.params0)``.
      seed: seed of the Gaussian vectors and of the compressor's randomness.
      rounds: gossip rounds per candidate.
      grid: candidate γ values in (0, 1].
      full_output: also return the grid and the final errors.

    Returns:
      γ (a float); with ``full_output=True``, ``(γ, grid, errors)`` (numpy arrays).

    Example:
      >>> import decsim as ds
      >>> g = tune_gamma(ds.topology.ring(9, weights="uniform"), ds.compression.top_k(0.1), 50,
      ...                rounds=200)
      >>> 0.001 <= g <= 1.0
      True
    """
    W = getattr(topology, "W", None)
    if W is None or np.ndim(W) != 2:
        raise ValueError(f"topology must be a decsim Topology (e.g. decsim.topology.ring(9)); got "
                         f"{type(topology).__name__}.")
    check_compressor(compressor)
    sizes = ((d,) if isinstance(d, numbers.Integral)
             else tuple(d) if isinstance(d, (list, tuple)) else None)
    if (not sizes or any(isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 1
                         for s in sizes)):
        raise ValueError(f"d must be a positive integer (the vector size) or a sequence of "
                         f"positive leaf sizes; got d={d!r}.")
    if isinstance(rounds, bool) or not isinstance(rounds, numbers.Integral) or rounds < 1:
        raise ValueError(f"rounds must be a positive integer; got rounds={rounds!r}.")
    grid = np.logspace(-3, 0, 20) if grid is None else np.asarray(grid, np.float64).reshape(-1)
    if grid.size == 0 or not np.all(np.isfinite(grid)) or np.any(grid <= 0) or np.any(grid > 1):
        raise ValueError(f"grid must be a non-empty sequence of gammas in (0, 1]; got {grid!r}.")
    n = int(np.shape(W)[0])
    rng = np.random.default_rng(seed)
    X0 = [jnp.asarray(rng.normal(size=(n, int(s))), jnp.float32) for s in sizes]
    program = _tuner(compressor, n, tuple(int(s) for s in sizes), int(rounds), int(grid.size))
    errors, hits, floor = program(jnp.asarray(grid, jnp.float32), X0, jnp.asarray(W, jnp.float32),
                                  jax.random.PRNGKey(seed))
    errors, hits, floor = (np.asarray(errors, np.float64), np.asarray(hits),
                           float(np.asarray(floor)[0]))
    finite = np.isfinite(errors)
    if not finite.any():
        raise ValueError(f"every gamma in the grid diverged for {compressor.name} on this "
                         "topology; try a grid of smaller values.")
    # lexicographic: final error (converged ones tie at the floor), then the round at which the
    # floor was reached, then the larger gamma
    score = np.where(finite, np.maximum(errors, floor), np.inf)
    order = np.lexsort((-grid, hits, score))
    gamma = float(grid[order[0]])
    return (gamma, grid, errors) if full_output else gamma
