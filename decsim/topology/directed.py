"""Directed communication graphs and their push (column-stochastic) and pull (row-stochastic)
matrices, for push-sum and push-pull methods (docs/reference/topologies.md#directed).

A :class:`DirectedTopology` holds a strongly connected digraph (every node also keeps its own
value: an implied self-loop) and two matrices of it:

* ``push`` = B, ``B_ij = 1 / (1 + outdeg_j)`` for ``i`` an out-neighbour of ``j`` or ``i = j``:
  column-stochastic, what worker ``j`` pushes (``sgp``, the tracker of ``push_pull``);
* ``pull`` = A, ``A_ij = 1 / (1 + indeg_i)`` for ``j`` an in-neighbour of ``i`` or ``j = i``:
  row-stochastic, what worker ``i`` pulls (the model of ``push_pull``).

Its ``matrix``/``W`` is B, so the gossip paths of :mod:`decsim.gossip` compute pushes unchanged;
they plan A beside it (``mixer.push``/``mixer.pull``). Spectral summary: ``lam`` is the
second-largest eigenvalue modulus (SLEM) of B, ``lam_pull`` that of A. Algorithms for undirected
graphs (everything but ``sgp`` and ``push_pull``) refuse a directed topology before compiling.

Generators: :func:`directed_ring` (i → i+1), :func:`directed_exponential` (i → i + 2^k),
:func:`random_directed` (each node picks ``out_degree`` out-neighbours), and
``from_networkx(G)`` of a ``DiGraph`` / ``from_matrix(P, directed=True)`` (``graphs`` dispatches
them here).

Example:
    >>> import decsim as ds
    >>> topo = ds.topology.directed_ring(4)
    >>> topo.push.toarray()[:, 0].tolist()     # worker 0 keeps half and pushes half to worker 1
    [0.5, 0.5, 0.0, 0.0]
    >>> round(topo.lam, 4)                      # |(1 + i) / 2| for the eigenvalue i of the shift
    0.7071
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Optional

import networkx as nx
import numpy as np
import scipy.sparse as sp

from .._checks import integer
from . import graphs
from .graphs import Topology

GENERATORS = ("directed_ring", "directed_exponential", "random_directed")

__all__ = ["DirectedTopology", *GENERATORS, "from_networkx", "from_matrix", "from_digraph",
           "from_column_stochastic",
           "GENERATORS", "MAX_TRIES", "DENSE_MAX_N"]

MAX_TRIES = 100  # random_directed resamples at most this many times for a strongly connected one
DENSE_MAX_N = 2048  # spectra of directed matrices are dense eigendecompositions up to this n
_TOL = 1e-6


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class DirectedTopology(Topology):
    """A strongly connected digraph with its push (B) and pull (A) matrices (module docstring).

    Attributes:
      matrix: B, scipy CSR ``[n, n]`` float64, column-stochastic (``push`` is the same matrix).
      pull_matrix: A, scipy CSR, row-stochastic, same sparsity as B.
      name, graph: as for :class:`~decsim.topology.Topology` (``graph``: the DiGraph).
    """

    pull_matrix: object = dataclasses.field(default=None, kw_only=True)

    @property
    def directed(self) -> bool:
        return True

    @property
    def push(self):
        """B (scipy CSR), column-stochastic."""
        return self.matrix

    @property
    def pull(self):
        """A (scipy CSR), row-stochastic."""
        return self.pull_matrix

    @property
    def doubly_stochastic(self) -> bool:
        """Whether B is also row-stochastic (then A = B: in- and out-degrees agree)."""
        rows = np.asarray(self.matrix.sum(axis=1)).ravel()
        return bool(np.allclose(rows, 1.0, atol=_TOL))

    @functools.cached_property
    def degrees(self) -> np.ndarray:
        """Out-degree of every worker (how many neighbours it sends to)."""
        M = sp.csc_matrix(self.matrix)
        cols = np.repeat(np.arange(self.n), np.diff(M.indptr))
        arc = (M.data != 0) & (M.indices != cols)
        return np.bincount(cols[arc], minlength=self.n).astype(np.int64)

    @property
    def n_edges(self) -> int:
        """Number of arcs (directed edges, self-loops excluded)."""
        return int(self.degrees.sum())

    def _slem(self, M) -> float:
        if self.n == 1:
            return 0.0
        if self.n > DENSE_MAX_N:
            raise ValueError(f"the spectrum of a directed {self.n}-worker matrix would need a "
                             f"dense eigendecomposition (at most n = {DENSE_MAX_N}).")
        vals = np.sort(np.abs(np.linalg.eigvals(M.toarray())))[::-1]
        return float(vals[1])

    @functools.cached_property
    def lam(self) -> float:
        """Second-largest eigenvalue modulus of B."""
        return self._slem(self.matrix)

    @functools.cached_property
    def lam_pull(self) -> float:
        """Second-largest eigenvalue modulus of A."""
        return self._slem(self.pull_matrix)

    @property
    def eigenvalues(self) -> np.ndarray:
        """Eigenvalues of B (complex), by decreasing modulus."""
        vals = np.linalg.eigvals(self.matrix.toarray())
        return vals[np.argsort(-np.abs(vals), kind="stable")]

    def _undirected_only(self, what: str):
        raise ValueError(f"{what} is defined for a symmetric W; {self.name} is directed. Use lam "
                         "(the second-largest eigenvalue modulus of B), and the directed "
                         "algorithms sgp and push_pull.")

    @property
    def lambda_2(self) -> float:
        return self._undirected_only("lambda_2")

    @property
    def lambda_min(self) -> float:
        return self._undirected_only("lambda_min")

    @property
    def beta(self) -> float:
        return self._undirected_only("beta")

    @functools.cached_property
    def nx_graph(self) -> nx.DiGraph:
        if self.graph is not None:
            return self.graph
        G = nx.DiGraph()
        G.add_nodes_from(range(self.n))
        coo = sp.coo_matrix(self.matrix)
        G.add_edges_from((int(j), int(i)) for i, j in zip(coo.row, coo.col) if i != j)
        return G

    def summary(self) -> dict:
        deg = self.degrees
        indeg = np.diff(sp.csr_matrix(self.pull_matrix).indptr) - 1
        return {"name": self.name, "n": self.n, "directed": True, "arcs": self.n_edges,
                "out_degree_min": int(deg.min()), "out_degree_max": int(deg.max()),
                "in_degree_min": int(indeg.min()), "in_degree_max": int(indeg.max()),
                "doubly_stochastic": self.doubly_stochastic,
                "lam_push": self.lam, "lam_pull": self.lam_pull,
                "spectral_gap": self.spectral_gap}

    def __repr__(self) -> str:
        return f"DirectedTopology({self.name}, n={self.n}, lam={self.lam:.4g})"


# ---------------------------------------------------------------------------------------------
# matrices of a digraph


def _matrices(n: int, src, dst):
    """(B, A) of the digraph with arcs ``src[k] -> dst[k]`` (self-loops dropped, duplicates
    once)."""
    src, dst = np.asarray(src, np.int64), np.asarray(dst, np.int64)
    keep = src != dst
    key = np.unique(src[keep] * n + dst[keep])
    src, dst = key // n, key % n
    out = np.bincount(src, minlength=n)
    inn = np.bincount(dst, minlength=n)
    rows = np.concatenate([dst, np.arange(n)])  # B[i, j] for the arc j -> i and the loop
    cols = np.concatenate([src, np.arange(n)])
    B = sp.csr_matrix((1.0 / (1.0 + out[cols]), (rows, cols)), shape=(n, n))
    A = sp.csr_matrix((1.0 / (1.0 + inn[rows]), (rows, cols)), shape=(n, n))
    return B, A


def _strongly_connected(M) -> bool:
    from scipy.sparse.csgraph import connected_components

    return M.shape[0] == 1 or connected_components(M, directed=True, connection="strong")[0] == 1


def _topology(n, src, dst, name, graph=None) -> DirectedTopology:
    B, A = _matrices(n, src, dst)
    if not _strongly_connected(B):
        raise ValueError(f"digraph {name} is not strongly connected: some worker's value never "
                         "reaches some other worker, so push-sum cannot reach consensus. Add "
                         "arcs (e.g. a directed ring through all nodes).")
    return DirectedTopology(matrix=B, pull_matrix=A, name=name, graph=graph)


def directed_ring(n: int) -> DirectedTopology:
    """The directed ring i → i + 1 (mod n): every worker keeps half and pushes half."""
    n = integer("n", n, min=1, hint="Pass a whole number of workers, e.g. directed_ring(8).")
    i = np.arange(n)
    return _topology(n, i, (i + 1) % n, f"directed_ring({n})")


def directed_exponential(n: int) -> DirectedTopology:
    """The directed exponential graph: i → i + 2^k (mod n) for k = 0 .. floor(log2(n − 1))."""
    n = integer("n", n, min=1, hint="Pass a whole number of workers, e.g. "
                "directed_exponential(16).")
    i = np.arange(n)
    ks = range(int(math.floor(math.log2(n - 1))) + 1) if n > 1 else ()
    src = np.concatenate([i for _ in ks]) if n > 1 else i
    dst = np.concatenate([(i + 2**k) % n for k in ks]) if n > 1 else i
    return _topology(n, src, dst, f"directed_exponential({n})")


def random_directed(n: int, out_degree: int, *, seed: int = 0) -> DirectedTopology:
    """Each worker sends to ``out_degree`` distinct other workers chosen at random; resampled
    (at most ``MAX_TRIES`` times) until strongly connected. In-degrees differ, so B is not
    row-stochastic and A differs from B."""
    n = integer("n", n, min=2, hint="Pass at least 2 workers.")
    out_degree = integer("out_degree", out_degree, min=1,
                         hint=f"Each worker needs 1 to n − 1 = {n - 1} out-neighbours.")
    if out_degree > n - 1:
        raise ValueError(f"out_degree must be at most n − 1 = {n - 1} (distinct out-neighbours); "
                         f"got out_degree={out_degree}.")
    seed = integer("seed", seed, min=0)
    rng = np.random.default_rng(seed)
    for _ in range(MAX_TRIES):
        dst = np.stack([rng.choice(np.delete(np.arange(n), i), out_degree, replace=False)
                        for i in range(n)])
        src = np.repeat(np.arange(n), out_degree)
        B, _ = _matrices(n, src, dst.ravel())
        if _strongly_connected(B):
            name = f"random_directed({n}, {out_degree}, seed={seed})"
            return _topology(n, src, dst.ravel(), name)
    raise ValueError(f"random_directed({n}, {out_degree}) found no strongly connected digraph in "
                     f"{MAX_TRIES} tries; raise out_degree or use directed_exponential({n}).")


def from_digraph(G: nx.DiGraph, *, name: Optional[str] = None) -> DirectedTopology:
    """The topology of a networkx DiGraph (nodes relabelled 0..n−1 in node order)."""
    if G.number_of_nodes() == 0:
        raise ValueError("the digraph has no nodes; a topology needs at least one worker.")
    G = nx.convert_node_labels_to_integers(nx.DiGraph(G), ordering="default")
    arcs = np.array([(u, v) for u, v in G.edges() if u != v], np.int64).reshape(-1, 2)
    G.remove_edges_from(list(nx.selfloop_edges(G)))
    return _topology(G.number_of_nodes(), arcs[:, 0], arcs[:, 1],
                     name or f"digraph({G.number_of_nodes()})", graph=G)


def from_column_stochastic(P, *, name: Optional[str] = None) -> DirectedTopology:
    """A directed topology with push matrix ``P`` (nonnegative, columns summing to 1, strongly
    connected) as given; the pull matrix A is built from P's sparsity pattern by the rule
    ``A_ij = 1/(1 + indeg_i)``."""
    sparse = sp.issparse(P)
    M = sp.csr_matrix(P, dtype=np.float64) if sparse else np.asarray(P, dtype=np.float64)
    if M.ndim != 2 or M.shape[0] != M.shape[1]:
        raise ValueError(f"P must be a square [n, n] matrix; got shape {M.shape}.")
    M = sp.csr_matrix(M)
    if M.nnz and not np.all(np.isfinite(M.data)):
        raise ValueError("P has non-finite entries; every weight must be a finite number.")
    if M.nnz and float(M.data.min()) < 0:
        coo = M.tocoo()
        k = int(np.argmin(coo.data))
        raise ValueError(f"P has a negative entry P[{coo.row[k]}, {coo.col[k]}] = "
                         f"{coo.data[k]:.3g}; a push matrix must be nonnegative (each column "
                         "splits a worker's value among its out-neighbours).")
    cols = np.asarray(M.sum(axis=0)).ravel()
    bad = int(np.argmax(np.abs(cols - 1.0)))
    if abs(cols[bad] - 1.0) > _TOL:
        raise ValueError(f"the columns of P must sum to 1 (column-stochastic); column {bad} sums "
                         f"to {cols[bad]:.6g}. Normalize the columns, or pass a symmetric W "
                         "without directed=True.")
    M.eliminate_zeros()
    coo = M.tocoo()
    n = M.shape[0]
    _, A = _matrices(n, coo.col, coo.row)
    if not _strongly_connected(M):
        raise ValueError("P is not strongly connected: some worker's value never reaches some "
                         "other worker. Add arcs.")
    return DirectedTopology(matrix=M.tocsr(), pull_matrix=A, name=name or f"directed_matrix({n})")


def from_networkx(G, *, weights: str = "metropolis", name: Optional[str] = None) -> Topology:
    """The topology of a networkx graph: a ``DiGraph`` gives a :class:`DirectedTopology`
    (:func:`from_digraph`; ``weights`` does not apply), an undirected graph the symmetric
    topology of :func:`decsim.topology.graphs.from_networkx` under the weight rule."""
    if isinstance(G, nx.Graph) and G.is_directed():
        return from_digraph(G, name=name)
    return graphs.from_networkx(G, weights=weights, name=name)


def from_matrix(W, *, name: Optional[str] = None, directed: bool = False) -> Topology:
    """The topology of an explicit matrix: a symmetric mixing matrix W
    (:func:`decsim.topology.graphs.from_matrix`), or with ``directed=True`` the push matrix P of
    a digraph (nonnegative, columns summing to 1, strongly connected;
    :func:`from_column_stochastic`)."""
    if directed:
        return from_column_stochastic(W, name=name)
    return graphs.from_matrix(W, name=name)
