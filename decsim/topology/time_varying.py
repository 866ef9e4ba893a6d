"""Time-varying topologies: a sequence of mixing matrices W_t generated inside the compiled loop.

A :class:`TimeVaryingTopology` is a :class:`~decsim.topology.Topology` (its ``W`` and spectra are
those of the base graph) that also holds a jittable ``build(args, tau) -> (idx, w)``: the neighbour
lists of round tau's matrix, computed from the arrays ``args`` (which enter the compiled program as
arguments). The builders are module-level functions, so equal structure shares one program.

* :func:`one_peer_exponential` and :func:`random_matching` take a size (``GENERATORS``);
* :func:`with_link_failures` wraps a static topology (``MODIFIERS``).

Example:
    >>> import decsim as ds
    >>> topo = ds.topology.one_peer_exponential(4)
    >>> topo.W_at(1)[0].tolist()      # round 1: worker 0 averages with worker 0 + 2
    [0.5, 0.0, 0.5, 0.0]
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np

from .._checks import integer, is_number
from .graphs import Topology, complete, exponential
from .structure import densify, neighbour_lists

GENERATORS = ("one_peer_exponential", "random_matching")  # take a size n
MODIFIERS = ("with_link_failures",)  # take a static topology
TIME_VARYING = GENERATORS + MODIFIERS

__all__ = ["TimeVaryingTopology", *TIME_VARYING, "GENERATORS", "MODIFIERS", "TIME_VARYING"]


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class TimeVaryingTopology(Topology):
    """A sequence of mixing matrices ``W_t`` generated inside the compiled loop.

    ``W``, ``graph`` and every spectral quantity (``lam``, ``spectral_gap``, ...) are those of the
    *base* graph (the graph the sequence lives on); algorithms that tune themselves to the graph
    (DeTAG's accelerated gossip) use them. ``W_at(t)`` gives round t's matrix.

    Attributes:
      build: jittable ``build(args, tau) -> (idx [n, K] int32, w [n, K] float32)``, the neighbour
        lists of round tau (module-level, so it can key the compiled-program cache).
      args: numpy arrays ``build`` reads.
    """

    build: Callable = dataclasses.field(kw_only=True)
    args: dict = dataclasses.field(default_factory=dict, kw_only=True)

    @property
    def time_varying(self) -> bool:
        return True

    def sparse_builder(self):
        """``(build, args)``: jittable ``build(args, tau) -> (idx [n, K], w [n, K])``."""
        return self.build, dict(self.args)

    def W_at(self, tau: int) -> np.ndarray:
        """The mixing matrix of round ``tau`` (host-side, for inspection and tests)."""
        import jax.numpy as jnp

        args = {k: jnp.asarray(v) for k, v in self.args.items()}
        W = densify(*self.build(args, jnp.asarray(tau, jnp.int32)))
        return np.asarray(W, dtype=np.float64)


# ---------------------------------------------------------------------------------------------
# the builders: neighbour lists of round tau, inside the program


def _one_peer_lists(args, tau):
    """One-peer exponential graph: at round tau worker i averages with ``(i + 2^(tau mod K)) mod n``
    with weights 1/2 (``args["perms"][k, i] = (i + 2^k) mod n``)."""
    import jax.numpy as jnp

    perms = args["perms"]
    partner = perms[tau % perms.shape[0]]
    idx = jnp.stack([jnp.arange(partner.shape[0], dtype=jnp.int32), partner], axis=1)
    return idx, jnp.full(idx.shape, 0.5, jnp.float32)


def _matching_lists(args, tau):
    """Random matching: a fresh uniformly random permutation pairs positions (2i, 2i+1) of it;
    pairs average with weights 1/2 (with n odd, one worker per round keeps its value)."""
    import jax
    import jax.numpy as jnp

    n = args["self"].shape[0]
    perm = jax.random.permutation(jax.random.fold_in(args["key"], tau), n).astype(jnp.int32)
    m = n - n % 2
    mate = jnp.arange(n, dtype=jnp.int32).at[:m].set(
        jnp.arange(m, dtype=jnp.int32).reshape(-1, 2)[:, ::-1].reshape(-1))
    partner = jnp.zeros(n, jnp.int32).at[perm].set(perm[mate])
    idx = jnp.stack([args["self"], partner], axis=1)
    return idx, jnp.full(idx.shape, 0.5, jnp.float32)


def _link_failure_lists(args, tau):
    """Each edge of the base W fails independently with probability p_drop at every round; both
    endpoints draw the same number for an edge (keyed by the edge), and a failed edge's weight
    goes back to the diagonal, so W_t stays symmetric and doubly stochastic."""
    import jax
    import jax.numpy as jnp

    idx, w = args["idx"], args["w"]
    n = idx.shape[0]
    me = jnp.broadcast_to(jnp.arange(n, dtype=jnp.int32)[:, None], idx.shape)
    edge = jnp.minimum(me, idx) * n + jnp.maximum(me, idx)
    key = jax.random.fold_in(args["key"], tau)
    u = jax.vmap(jax.vmap(lambda e: jax.random.uniform(jax.random.fold_in(key, e))))(edge)
    off = jnp.where((u >= args["p_drop"]) & (idx != me), w, jnp.zeros_like(w))
    w_t = off.at[:, 0].set(1.0 - jnp.sum(off, axis=1))  # column 0 is the worker itself
    return idx, w_t


def _key_data(seed: int) -> np.ndarray:
    """A raw uint32[2] PRNG key from an integer seed."""
    import jax

    return np.asarray(jax.random.PRNGKey(int(seed)))


# ---------------------------------------------------------------------------------------------
# generators


def one_peer_exponential(n: int) -> TimeVaryingTopology:
    """One-peer exponential graph (Ying et al., NeurIPS 2021): at round t worker i averages with
    ``i + 2^(t mod K)`` (mod n), weights 1/2, ``K = ceil(log2 n)``. For n a power of two, K
    consecutive rounds multiply to ``J`` exactly (exact consensus in log2 n rounds). W_t is doubly
    stochastic but not symmetric. The base graph is ``exponential(n)``."""
    base = exponential(n)  # checks n (an integer >= 1)
    n = base.n
    K = max(1, math.ceil(math.log2(n))) if n > 1 else 1
    perms = np.stack([(np.arange(n) + (1 << k)) % n for k in range(K)]).astype(np.int32)
    return TimeVaryingTopology(matrix=base.matrix, name=f"one_peer_exponential({n})",
                               graph=base.graph, closed_spectrum=base.closed_spectrum,
                               build=_one_peer_lists, args={"perms": perms})


def random_matching(n: int, *, seed: int = 0) -> TimeVaryingTopology:
    """Random matching (gossip on random pairs): each round a fresh uniformly random matching of
    the workers; matched pairs average with weights 1/2. The base graph is ``complete(n)``, so n
    is bounded by the edge budget of :func:`~decsim.topology.complete` (n <= 4472)."""
    n = integer("n", n, hint="Pass a whole number of workers, e.g. random_matching(8).")
    seed = integer("seed", seed, min=0, hint="Pass a whole number, e.g. seed=0.")
    if n < 2:
        raise ValueError(f"random_matching needs n >= 2 workers to pair; got n={n}.")
    base = complete(n)
    return TimeVaryingTopology(matrix=base.matrix, name=f"random_matching({n}, seed={seed})",
                               graph=base.graph, closed_spectrum=base.closed_spectrum,
                               build=_matching_lists,
                               args={"self": np.arange(n, dtype=np.int32), "key": _key_data(seed)})


def with_link_failures(topology: Topology, p_drop: float, *, seed: int = 0) -> TimeVaryingTopology:
    """``topology`` whose edges each fail independently with probability ``p_drop`` at every round;
    a failed edge's weight returns to the diagonal, so W_t stays symmetric and doubly stochastic.
    The base graph (spectra) is ``topology``."""
    if not isinstance(topology, Topology) or topology.time_varying:
        raise ValueError("with_link_failures needs a static Topology (e.g. ds.topology.ring(8)); "
                         f"got {topology!r}.")
    if not is_number(p_drop) or not 0.0 <= p_drop < 1.0:
        raise ValueError(f"p_drop must be in [0, 1); got p_drop={p_drop!r}. Pass the probability "
                         "that an edge fails in a round as a number, e.g. p_drop=0.1.")
    p_drop = float(p_drop)
    seed = integer("seed", seed, min=0, hint="Pass a whole number, e.g. seed=0.")
    idx, w = neighbour_lists(topology.matrix)
    return TimeVaryingTopology(matrix=topology.matrix,
                               name=f"{topology.name} with p_drop={p_drop:g}",
                               graph=topology.graph, closed_spectrum=topology.closed_spectrum,
                               build=_link_failure_lists,
                               args={"idx": idx, "w": w, "p_drop": np.float32(p_drop),
                                     "key": _key_data(seed)})
