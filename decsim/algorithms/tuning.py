"""Choco's consensus step size γ: ``tune_gamma`` (the Choco code's tuner,
docs/reference/algorithms.md#tune_gamma),
all candidates as one vmapped program, with proxy leaves for large models."""

from __future__ import annotations

import numbers
import re
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from .._checks import integer, is_number
from .._types import Compressor
from ..compression import check_compressor
from ._common import structural
from .choco import choco_gossip

__all__ = ["tune_gamma", "proxy_sizes"]

# ---------------------------------------------------------------------------------------------
# the consensus step size γ (the Choco code's tuner)


# Final errors below this fraction of the initial one count as converged (float32 round-off lies
# near 1e-15 of it): among converged candidates the fastest wins, not the luckiest residue.
TUNE_FLOOR = 1e-10

# Proxy leaves (see tune_gamma): the default largest simulated leaf size, and the fewest entries a
# proxy of a top_k / rand_k leaf keeps (so that rounding k keeps the kept fraction within 1%).
PROXY_SIZE = 10_000
PROXY_MIN_KEPT = 100


def _tuning_error(X, X_hat, weights):
    """``Σ_leaf w_leaf (||X − x̄||² + ||X − X̂||²)`` over all workers (``w = 1``: the plain sum, in
    the order of the unweighted tuner)."""
    centred = [a - jnp.mean(a, axis=0, keepdims=True) for a in jax.tree.leaves(X)]
    lag = [a - b for a, b in zip(jax.tree.leaves(X), jax.tree.leaves(X_hat))]
    if all(w == 1.0 for w in weights):
        return sum(jnp.sum(jnp.square(a)) for a in centred + lag)
    return sum(jnp.float32(w) * (jnp.sum(jnp.square(c)) + jnp.sum(jnp.square(g)))
               for c, g, w in zip(centred, lag, weights))


@structural
def _tuner(compressor: Compressor, rounds: int, weights: tuple):
    """One program: ``rounds`` Choco-Gossip rounds for every γ of a grid (vmapped over γ, the
    hyperparameter that travels as data). Returns per γ the final error, the first round at which
    the error fell below the convergence floor (``rounds`` if never), and the floor."""
    from ..gossip import Mixer

    gossip = choco_gossip(1.0, compressor)  # memoized structure: γ travels as data
    init, step = gossip.init, gossip.step

    def one(gamma, X0, W, key):
        mixer = Mixer(W=W, lam=jnp.zeros((), jnp.float32))
        state = init(X0, key)
        floor = jnp.float32(TUNE_FLOOR) * _tuning_error(state.X, state.X_hat, weights)

        def body(carry, t):
            state, hit = carry
            state, _ = step(state, {"gamma": gamma}, None, mixer, jax.random.fold_in(key, t))
            below = _tuning_error(state.X, state.X_hat, weights) <= floor
            hit = jnp.where((hit == rounds) & below, t + 1, hit)
            return (state, hit), None

        (state, hit), _ = jax.lax.scan(body, (state, jnp.asarray(rounds, jnp.int32)),
                                       jnp.arange(rounds, dtype=jnp.int32))
        return _tuning_error(state.X, state.X_hat, weights), hit, floor

    return jax.jit(jax.vmap(one, in_axes=(0, None, None, None)))


def _proxy_rule(compressor: Compressor):
    """How leaves of ``compressor`` may be shrunk: ``("any", None)`` for ``identity()`` and
    ``sign()``, ``("fraction", f)`` for ``top_k(f)`` and ``rand_k(f, ...)``, ``None`` for every
    other compressor (``qsgd``, ``dithered``, user compressors): those are simulated at full
    size."""
    from ..compression import operators

    if getattr(compressor.compress, "__module__", None) != operators.__name__:
        return None
    if compressor.name in ("identity", "sign"):
        return ("any", None)
    m = re.fullmatch(r"(top_k|rand_k)\(([^,()]+)(, unbiased)?\)", compressor.name)
    if m is None:
        return None
    try:
        fraction = float(m.group(2))
        rebuilt = (operators.top_k(fraction) if m.group(1) == "top_k"
                   else operators.rand_k(fraction, unbiased=m.group(3) is not None))
    except ValueError:
        return None
    # the name shows the fraction to 6 digits: use it only if it rebuilds this very compressor
    return ("fraction", fraction) if rebuilt is compressor else None


def proxy_sizes(compressor: Compressor, sizes, proxy_size: int | None = PROXY_SIZE) -> tuple:
    """The leaf sizes :func:`tune_gamma` simulates for leaves of ``sizes``.

    A leaf larger than ``proxy_size`` is replaced by a proxy leaf of about ``proxy_size``
    entries where the compressor admits one (see :func:`tune_gamma`): any size for
    ``identity()`` and ``sign()``; for ``top_k(f)`` and ``rand_k(f)`` at least
    ``PROXY_MIN_KEPT / f`` entries, and only if the proxy keeps the same fraction to within 1%.
    Other compressors, and leaves up to ``proxy_size``, keep their size.

    Args:
      compressor: a :class:`decsim.Compressor`.
      sizes: the leaf sizes (positive ints).
      proxy_size: the largest leaf simulated as is; ``None``: no proxies.

    Returns:
      A tuple of ints, one per leaf.

    Example:
      >>> import decsim.compression as C
      >>> proxy_sizes(C.top_k(0.01), [272474, 16]), proxy_sizes(C.qsgd(16), [272474])
      ((10000, 16), (272474,))
    """
    from ..compression import num_kept

    rule = None if proxy_size is None else _proxy_rule(compressor)
    out = []
    for s in sizes:
        s = int(s)
        if rule is None:
            out.append(s)
            continue
        kind, fraction = rule
        if kind == "any":
            out.append(min(s, proxy_size))
            continue
        cap = max(proxy_size, int(np.ceil(PROXY_MIN_KEPT / fraction)))
        if s <= cap:
            out.append(s)
            continue
        same = abs(num_kept(fraction, cap) / cap - num_kept(fraction, s) / s) <= (
            0.01 * num_kept(fraction, s) / s)
        out.append(cap if same else s)
    return tuple(out)


def tune_gamma(topology, compressor: Compressor, d, *, seed: int = 0, rounds: int = 1000,
               grid: Sequence[float] | None = None, full_output: bool = False,
               proxy_size: int | None = PROXY_SIZE):
    """Pick Choco's consensus step size γ for a compressor on a topology (the Choco code's tuner).

    Runs ``choco_gossip(γ, compressor)`` for ``rounds`` rounds from Gaussian vectors
    ``x_i ~ N(0, I_d)`` (one per worker, drawn from ``seed``) for every γ of ``grid`` (default
    ``logspace(-3, 0, 20)``) and returns the γ minimising ``||X − x̄||² + ||X − X̂||²`` at the end.
    All γ run as one vmapped program (γ is data: one compilation per compressor, shapes and round
    count).

    Proxy leaves (what makes a ResNet-sized d cost seconds): a leaf larger than ``proxy_size``
    is simulated at a smaller size where the compressor's behaviour does not depend on d, and
    its error counts ``d_leaf / d_proxy`` times. The start vectors have i.i.d. coordinates and
    every step treats coordinates alike (it commutes with permuting them), so each coordinate's
    trajectory depends on the others only through per-leaf averages: none for ``identity()``
    (coordinates are independent), the mean ``||x||₁/d`` for ``sign()``, the ``1 − f`` quantile
    of ``|x|`` for ``top_k(f)``, the keep probability ``k/d ≈ f`` for ``rand_k(f)``. These
    concentrate as d grows (fluctuations ~ d^(−1/2)), so the normalised error curve, and with it
    the chosen γ, is that of any large enough leaf with the same fraction; proxies of top_k and
    rand_k leaves keep at least ``PROXY_MIN_KEPT = 100`` entries and the same kept fraction to
    1% (:func:`proxy_sizes`). ``qsgd`` and ``dithered`` quantize with a step ``||x||₂ / s``, which
    grows like ``sqrt(d)`` relative to the entries (their quality ``1/τ``, ``τ = 1 +
    min(d/s², sqrt(d)/s)``, depends on d), so they and user compressors always run at full size.
    Leaves up to ``proxy_size`` (10000 by default) run as before, bit for bit.

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
      proxy_size: largest leaf simulated at its own size (a positive int), or ``None`` to
        simulate every leaf at full size.

    Returns:
      γ (a float); with ``full_output=True``, ``(γ, grid, errors)`` (numpy arrays; the errors
      of proxy leaves scaled to the full size).

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
    if not sizes or any(not is_number(s) or not isinstance(s, numbers.Integral) or s < 1
                        for s in sizes):
        raise ValueError(
            f"d must be a positive integer (the vector size) or a sequence of positive "
            f"leaf sizes; got d={d!r}."
        )
    rounds = integer("rounds", rounds)
    if proxy_size is not None:
        proxy_size = integer("proxy_size", proxy_size)
    grid = np.logspace(-3, 0, 20) if grid is None else np.asarray(grid, np.float64).reshape(-1)
    if grid.size == 0 or not np.all(np.isfinite(grid)) or np.any(grid <= 0) or np.any(grid > 1):
        raise ValueError(f"grid must be a non-empty sequence of gammas in (0, 1]; got {grid!r}.")
    n = int(np.shape(W)[0])
    simulated = proxy_sizes(compressor, sizes, proxy_size)
    weights = tuple(1.0 if p == s else float(s) / p for s, p in zip(sizes, simulated))
    rng = np.random.default_rng(seed)
    X0 = [jnp.asarray(rng.normal(size=(n, int(s))), jnp.float32) for s in simulated]
    program = _tuner(compressor, rounds, weights)
    errors, hits, floor = program(
        jnp.asarray(grid, jnp.float32), X0, jnp.asarray(W, jnp.float32), jax.random.PRNGKey(seed)
    )
    errors, hits, floor = (
        np.asarray(errors, np.float64),
        np.asarray(hits),
        float(np.asarray(floor)[0]),
    )
    finite = np.isfinite(errors)
    if not finite.any():
        raise ValueError(
            f"every gamma in the grid diverged for {compressor.name} on this topology; "
            "try a grid of smaller values."
        )
    # lexicographic: final error (converged ones tie at the floor), then the round at which the
    # floor was reached, then the larger gamma
    score = np.where(finite, np.maximum(errors, floor), np.inf)
    order = np.lexsort((-grid, hits, score))
    gamma = float(grid[order[0]])
    return (gamma, grid, errors) if full_output else gamma
