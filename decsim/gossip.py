"""Gossip: one round of mixing ``X <- W X`` over the stacked worker axis.

A round is ``W X`` leaf-wise (docs/concepts.md#notation), computed by one of three paths with the
same result (to float round-off):

* ``"dense"``: ``jnp.tensordot(W, X, axes=1)``, O(n² d) work and O(n²) memory; best for small or
  dense graphs.
* ``"sparse"``: each worker gathers its K neighbours' rows, ``(W X)_i = Σ_k w_ik X_{idx_ik}``
  (an ELL-format sparse product), O(n K d); works for every graph and every time-varying W_t.
* ``"roll"``: for circulant graphs (ring, torus, exponential: the same weight for the same offset
  at every worker) ``W X = Σ_s c_s roll(X, −s)``, O(n K d) with no index arrays at all.

:func:`plan` picks a path for a topology (``"auto"``: dense for n <= 32 or dense graphs, roll for
circulant graphs with at most 5 offsets (ring, torus), sparse otherwise: measured in
``benchmarks/gossip.py``, the fused gathers beat one materialized roll per offset beyond that).
The arrays a path needs (W, neighbour lists, offset weights, or what a time-varying topology
generates W_t from) enter the compiled program as arguments, never as baked-in constants, so
topologies with the same structure share one program. Dense matmuls run at ``Precision.HIGHEST``
so that GPU TF32 defaults cannot change results.

The host-side facts about W that the paths need (neighbour lists, circulant structure) live in
:mod:`decsim.topology.structure`: gossip imports topology, never the reverse.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .topology.structure import circulant_structure, dense_builder, neighbour_lists

PATHS = ("auto", "dense", "sparse", "roll")
_DENSE_MAX_N = 32  # "auto" keeps the dense matmul up to this many workers
_DENSE_MIN_FILL = 0.25  # ... or when at least this fraction of W is nonzero
_ROLL_MAX_SHIFTS = 5  # "auto" uses rolls for circulant graphs with at most this many offsets


# ---------------------------------------------------------------------------------------------
# the three products


def mix(W, X):
    """One gossip round ``W X`` for a stacked pytree ``X`` (leaves ``[n, ...]``), dense W."""
    return jax.tree.map(lambda a: _mix_leaf(W.astype(a.dtype), a), X)


_HIGHEST = jax.lax.Precision.HIGHEST


def _mix_leaf_plain(W, a):
    return jnp.tensordot(W, a, axes=1, precision=_HIGHEST)


@jax.custom_vjp
@jax.custom_batching.custom_vmap
def _mix_leaf(W, a):
    """``W @ a`` over the leading axis, with a batching rule and a matching reverse-mode rule.

    Under ``vmap`` (vmapped seeds put a seed axis in front of the worker axis) plain autodiff of
    the batching would give XLA ``dot(W, a[s, n, ...])`` contracting the *second* axis of ``a``,
    which XLA canonicalizes by transposing ``a`` into ``[n, s·d]`` and the result back at every
    round. The rule below instead broadcasts W along the batch and issues one batched matmul
    ``[s, n, n] @ [s, n, d]``, which needs no transpose."""
    return _mix_leaf_plain(W, a)


@_mix_leaf.def_vmap
def _mix_leaf_vmap(axis_size, in_batched, W, a):
    w_batched, a_batched = in_batched
    Wb = W if w_batched else jnp.broadcast_to(W, (axis_size,) + W.shape)
    ab = a if a_batched else jnp.broadcast_to(a, (axis_size,) + a.shape)
    flat = ab.reshape(ab.shape[:2] + (-1,))
    out = jax.lax.dot_general(Wb, flat, (((2,), (1,)), ((0,), (0,))), precision=_HIGHEST)
    return out.reshape(ab.shape), True


def _mix_leaf_fwd(W, a):
    return _mix_leaf(W, a), (W, a)


def _mix_leaf_bwd(res, g):
    W, a = res  # out = W a, so dW = g aᵀ (summed over the feature axes) and da = Wᵀ g
    dW = jnp.tensordot(g, a, axes=(tuple(range(1, g.ndim)), tuple(range(1, a.ndim))),
                       precision=_HIGHEST)
    return dW.astype(W.dtype), _mix_leaf(W.T, g)


_mix_leaf.defvjp(_mix_leaf_fwd, _mix_leaf_bwd)


_UNROLL_MAX_K = 32  # up to this many neighbours the sparse product is unrolled (fused by XLA)


def mix_sparse(idx, w, X):
    """``(W X)_i = Σ_k w[i, k] X[idx[i, k]]`` (idx int32 ``[n, K]``, w ``[n, K]``).

    One gather of n rows per neighbour slot, accumulated: O(n d) live memory whatever K is (a
    single ``X[idx]`` gather would materialize ``[n, K, d]``)."""
    K = idx.shape[1]

    def one(a):
        shape = (a.shape[0],) + (1,) * (a.ndim - 1)
        wk = w.astype(a.dtype)

        def term(k):
            return wk[:, k].reshape(shape) * jnp.take(a, idx[:, k], axis=0)

        if K <= _UNROLL_MAX_K:
            out = term(0)
            for k in range(1, K):
                out = out + term(k)
            return out
        return jax.lax.fori_loop(1, K, lambda k, acc: acc + term(k), term(0))

    return jax.tree.map(one, X)


def mix_roll(grid: tuple, shifts: tuple, c, X):
    """Circulant product on a ``grid = (rows, cols)`` arrangement of the workers:
    ``W X = Σ_s c[s] roll(X, −shift_s)`` with static 2-D shifts. A row shift is a roll of the
    flat worker axis by ``dr · cols``; only column shifts need the 2-D view."""
    rows, cols = grid

    def shifted(a, dr, dc):
        if dc % cols:
            g = a.reshape((rows, cols) + a.shape[1:])
            g = jnp.roll(g, -dc, axis=1)
            a = g.reshape(a.shape)
        if (dr * cols) % a.shape[0]:
            a = jnp.roll(a, -dr * cols, axis=0)
        return a

    def one(a):
        out = None
        for s, (dr, dc) in enumerate(shifts):
            term = c[s].astype(a.dtype) * shifted(a, dr, dc)
            out = term if out is None else out + term
        return out

    return jax.tree.map(one, X)


# ---------------------------------------------------------------------------------------------
# the operator of one round, inside the program


class Mixer(NamedTuple):
    """The gossip operator an algorithm's ``step`` receives.

    Calling it performs one round ``W_t Z`` with this step's matrix. An algorithm that gossips R
    times per step and wants a time-varying topology to advance between those rounds asks for
    ``mixer.round(r, R)``, the operator of round ``tau = t·R + r`` (the same operator on a static
    topology).

    Attributes (arrays are traced inside the program):
      W: ``[n, n]`` mixing matrix of this round on the dense path (``None`` on the others; use
        :meth:`dense` to materialize it).
      lam: ``||W − J||_2`` of the (base) topology, for algorithms that tune themselves to the graph
        (accelerated gossip).
      path: ``"dense"``, ``"sparse"`` or ``"roll"``.
      ops: the arrays of the sparse (``(idx, w)``) or roll (``c``) paths.
      static: the roll path's ``(grid, shifts)``.
      build, args, tau: how this round's arrays were made, for :meth:`round`.
    """

    W: Any = None
    lam: Any = 0.0
    path: str = "dense"
    ops: Any = None
    static: tuple = ()
    build: Callable | None = None
    args: Any = None
    tau: Any = None
    puller: Any = None  # the Mixer of A on a directed topology (None: pulls are pushes)

    def __call__(self, Z):
        if self.path == "dense":
            return mix(self.W, Z)
        if self.path == "sparse":
            return mix_sparse(self.ops[0], self.ops[1], Z)
        return mix_roll(self.static[0], self.static[1], self.ops, Z)

    @property
    def n(self) -> int:
        if self.path == "dense":
            return self.W.shape[0]
        if self.path == "sparse":
            return self.ops[0].shape[0]
        grid = self.static[0]
        return grid[0] * grid[1]

    def push(self, Z):
        """One push round ``B Z`` (column-stochastic B of a directed topology; ``W Z`` on an
        undirected one)."""
        return self(Z)

    def pull(self, Z):
        """One pull round ``A Z`` (row-stochastic A of a directed topology; ``W Z`` on an
        undirected one)."""
        return self(Z) if self.puller is None else self.puller(Z)

    def dense(self):
        """This round's W as a dense ``[n, n]`` array (O(n²) memory)."""
        if self.path == "dense":
            return self.W
        return self(jnp.eye(self.n, dtype=jnp.result_type(float)))

    def round(self, r, rounds: int) -> Mixer:
        """The mixer of sub-round ``r`` (0 <= r < rounds) of this step."""
        if self.build is None or getattr(self.build, "static", False):
            return self
        tau = self.tau * rounds + r
        return _assemble(self.path, self.build, self.args, self.static, self.lam, tau)


def _assemble(path, build, args, static, lam, tau) -> Mixer:
    arrays = build(args, tau)
    if path == "dense":
        return Mixer(W=arrays, lam=lam, path=path, static=static, build=build, args=args, tau=tau)
    return Mixer(lam=lam, path=path, ops=arrays, static=static, build=build, args=args, tau=tau)


class GossipPlan(NamedTuple):
    """How a topology's rounds are computed: host-side, chosen once per run.

    Attributes:
      path: ``"dense"``, ``"sparse"`` or ``"roll"``.
      build: jittable ``(args, tau) -> arrays`` (dense: W; sparse: ``(idx, w)``; roll: ``c``);
        module-level or memoized, so it can key the compiled-program cache.
      args: numpy arrays ``build`` reads (program arguments).
      static: hashable structure (the roll path's grid and shifts).
    """

    path: str
    build: Callable
    args: dict
    static: tuple = ()
    pull: Callable | None = None  # builder of A's arrays (directed topologies)

    @property
    def key(self) -> tuple:
        return (self.path, self.build, self.static, self.pull)

    def mixer(self, args, lam, tau) -> Mixer:
        """The Mixer of round ``tau`` inside the program (``args``: the device copies of
        ``self.args``)."""
        m = _assemble(self.path, self.build, args, self.static, lam, tau)
        if self.pull is not None:
            m = m._replace(puller=_assemble(self.path, self.pull, args, self.static, lam, tau))
        return m


def _static(fn):
    fn.static = True
    return fn


@_static
def _build_dense(args, tau):
    del tau
    return args["W"]


@_static
def _build_sparse(args, tau):
    del tau
    return args["idx"], args["w"]


@_static
def _build_dense_pull(args, tau):
    del tau
    return args["A"]


@_static
def _build_sparse_pull(args, tau):
    del tau
    return args["idx_pull"], args["w_pull"]


@_static
def _build_roll(args, tau):
    del tau
    return args["c"]


# ---------------------------------------------------------------------------------------------
# host side: choosing a path for a topology


def plan(topology, path: str = "auto") -> GossipPlan:
    """Choose how to compute the rounds of ``topology`` (see the module docstring)."""
    if path not in PATHS:
        raise ValueError(f"gossip={path!r} is not a gossip path; choose one of {PATHS}.")
    if topology.time_varying:
        build, args = topology.sparse_builder()
        if path == "roll":
            raise ValueError(f"gossip='roll' needs a static circulant topology; {topology.name} is "
                             "time-varying. Use 'sparse', 'dense' or 'auto'.")
        if path == "dense" or (path == "auto" and topology.n <= _DENSE_MAX_N):
            return GossipPlan("dense", dense_builder(build), args)
        return GossipPlan("sparse", build, args)
    if getattr(topology, "directed", False):
        return _directed_plan(topology, path)
    M = topology.matrix
    n = M.shape[0]
    fill = M.nnz / max(1, n * n)
    if path == "auto":
        if n <= _DENSE_MAX_N or fill >= _DENSE_MIN_FILL:
            path = "dense"
        else:
            circ = _circulant(topology)
            # Rolls materialize one shifted copy per offset while the gathers fuse into one pass,
            # so rolls win only for a handful of offsets (ring, torus); see benchmarks/gossip.py.
            path = "roll" if circ is not None and len(circ[0]) <= _ROLL_MAX_SHIFTS else "sparse"
    if path == "dense":
        return GossipPlan("dense", _build_dense, {"W": np.asarray(topology.W, np.float64)})
    if path == "sparse":
        idx, w = neighbour_lists(M)
        return GossipPlan("sparse", _build_sparse, {"idx": idx, "w": w})
    found = _circulant(topology)
    if found is None:
        raise ValueError(f"gossip='roll' needs a circulant W (the same weight for the same offset "
                         f"at every worker); {topology.name} is not. Use 'sparse' or 'auto'.")
    shifts, c = found
    return GossipPlan("roll", _build_roll, {"c": c}, static=(topology.grid_shape, shifts))


def _directed_plan(topology, path: str) -> GossipPlan:
    """Push (B) and pull (A) arrays of a directed topology, on the dense or the sparse path."""
    B, A = topology.push, topology.pull
    n = B.shape[0]
    if path == "roll":
        raise ValueError(f"gossip='roll' needs a symmetric circulant W; {topology.name} is "
                         "directed. Use 'dense', 'sparse' or 'auto'.")
    if path == "dense" or (path == "auto" and (n <= _DENSE_MAX_N
                                               or B.nnz / (n * n) >= _DENSE_MIN_FILL)):
        return GossipPlan("dense", _build_dense,
                          {"W": B.toarray().astype(np.float64), "A": A.toarray()},
                          pull=_build_dense_pull)
    idx, w = neighbour_lists(B)
    idx_a, w_a = neighbour_lists(A)
    return GossipPlan("sparse", _build_sparse,
                      {"idx": idx, "w": w, "idx_pull": idx_a, "w_pull": w_a},
                      pull=_build_sparse_pull)


def _circulant(topology):
    return circulant_structure(topology.matrix, topology.grid_shape)
