"""Static communication graphs: the :class:`Topology` class, weight rules, validation, generators.

This is the only module that uses networkx. A :class:`Topology` holds a symmetric, doubly
stochastic mixing matrix ``W`` (scipy CSR, float64) that mixes (``lam < 1``; its entries may be
negative, as optimised weights' are) and its spectral quantities
(docs/reference/topologies.md#spectra; notation: docs/concepts.md#notation):

* ``lam = ||W − J||_2 = max(|λ_2|, |λ_n|)``, ``spectral_gap = 1 − lam``,
* ``beta = ||I − W||_2``, ``p = 1 − lam²``.

(The eigenvalues themselves are computed in :mod:`decsim.topology.structure`.)

Generators follow networkx's conventions: size first, ``seed`` next, options keyword-only. Every
generator takes ``weights=`` (``"metropolis"`` default, ``"uniform"``, ``"lazy"``).

Scale: the structured generators (ring, torus, grid, complete, star, hypercube, exponential)
build W from numpy edge lists in O(edges) memory and know their spectra in closed form (grid
with Metropolis weights excepted: its W is no Kronecker sum, so it gets the sparse eigensolver),
so graphs of 10⁵ workers and more build in well under a second. A graph of more than
``MAX_EDGES`` edges is refused with a message (``complete(100000)`` would have 5·10⁹).

Example:
    >>> import decsim as ds
    >>> topo = ds.topology.ring(8, weights="uniform")
    >>> round(topo.spectral_gap, 4)
    0.1953
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import Optional

import networkx as nx
import numpy as np
import scipy.sparse as sp

from .._checks import closest, in_interval, integer, one_of, positive
from .structure import DENSE_SPECTRUM_MAX_N, Spectrum, dense_eigenvalues, sparse_extremes
from .weights import OPTIMISED

GENERATORS = ("ring", "torus", "grid", "complete", "star", "hypercube", "exponential",
              "erdos_renyi", "random_geometric", "social")

__all__ = ["Topology", "WEIGHT_RULES", "GENERATORS", "MAX_EDGES", "validate_matrix",
           "weight_matrix", *GENERATORS, "from_networkx", "from_matrix", "torus_shape", "by_name"]

WEIGHT_RULES = ("metropolis", "uniform", "lazy", "best_constant", "fastest")
MAX_EDGES = 10**7  # edge budget of every generator: W's CSR then takes about 250 MB
_ROW_SUM_TOL = 1e-6
_GAP_TOL = 1e-12
_NEG_TOL = 1e-12  # round-off such as 1 - 20 * (1/20) = -2e-16 on a diagonal is no negative weight


@dataclasses.dataclass(frozen=True, eq=False)
class Topology:
    """A static communication graph with its mixing matrix.

    The matrix is stored sparse (scipy CSR), so a ring of 10⁵ workers costs O(n) memory; ``W``
    materializes the dense numpy matrix on first use (O(n²): for small graphs and the dense
    gossip path only). Sizes and degrees are read from the sparse matrix. Spectral quantities come
    from the generator's closed form where it has one, else from a dense eigendecomposition up to
    n = 2048, from the DFT of the first row for circulant matrices, and from a sparse eigensolver
    (:func:`decsim.topology.structure.sparse_extremes`) otherwise.

    Attributes:
      matrix: scipy CSR ``[n, n]`` float64 mixing matrix (symmetric, doubly stochastic, with
        ``lam < 1``; entries may be negative).
      name: e.g. ``"ring(16)"``.
      graph: the networkx graph (self-loops removed) of topologies built from one, or ``None``
        (then the graph of nonzero off-diagonal entries is built on demand by ``nx_graph``).
      grid: ``(rows, cols)`` arrangement of the workers when the generator has one (torus), used to
        recognize circulant structure.
      closed_spectrum: ``None``, or a function of no arguments returning every eigenvalue of
        ``matrix`` (any order) by a closed form; the structured generators set it.
      known_spectrum: what validating ``matrix`` computed of its spectrum (see
        :class:`decsim.topology.structure.Spectrum`), so that it is not computed twice.
    """

    matrix: object
    name: str
    graph: Optional[nx.Graph] = None
    grid: Optional[tuple] = None
    closed_spectrum: Optional[Callable[[], np.ndarray]] = None
    known_spectrum: Optional[dict] = dataclasses.field(default=None, repr=False)

    # -- sizes and structure ------------------------------------------------------------------
    @property
    def n(self) -> int:
        return int(self.matrix.shape[0])

    @functools.cached_property
    def W(self) -> np.ndarray:
        """Dense numpy float64 ``[n, n]`` (read-only); O(n²) memory."""
        W = np.asarray(self.matrix.toarray(), dtype=np.float64)
        W.setflags(write=False)
        return W

    @functools.cached_property
    def nx_graph(self) -> nx.Graph:
        """The networkx graph (built on demand from the nonzero off-diagonal entries when the
        topology holds none; networkx costs about a kilobyte per edge)."""
        if self.graph is not None:
            return self.graph
        G = nx.Graph()
        G.add_nodes_from(range(self.n))
        upper = sp.triu(self.matrix, k=1).tocoo()
        G.add_edges_from(zip(upper.row.tolist(), upper.col.tolist()))
        return G

    @property
    def n_edges(self) -> int:
        return int(self.degrees.sum()) // 2

    @functools.cached_property
    def degrees(self) -> np.ndarray:
        """Number of neighbours of every worker (nonzero off-diagonal entries of its row);
        O(nnz)."""
        M = sp.csr_matrix(self.matrix)
        rows = np.repeat(np.arange(self.n), np.diff(M.indptr))
        edge = (M.data != 0) & (M.indices != rows)
        return np.bincount(rows[edge], minlength=self.n).astype(np.int64)

    @property
    def grid_shape(self) -> tuple:
        """``(rows, cols)`` arrangement of the workers (``(1, n)`` unless the generator says)."""
        return self.grid if self.grid is not None else (1, self.n)

    # -- spectra ------------------------------------------------------------------------------
    @functools.cached_property
    def _spectrum(self) -> Spectrum:
        return Spectrum(self.matrix, self.grid_shape, self.closed_spectrum, self.known_spectrum)

    @property
    def eigenvalues(self) -> np.ndarray:
        """Eigenvalues of W, sorted in decreasing order (λ_1 = 1 first). For n > 2048 only graphs
        with a closed form or a circulant W have them all; use ``lambda_2``/``lambda_min``
        otherwise."""
        return self._spectrum.eigenvalues

    @property
    def lambda_2(self) -> float:
        return self._spectrum.extremes[0]

    @property
    def lambda_min(self) -> float:
        return self._spectrum.extremes[1]

    @property
    def lam(self) -> float:
        """``||W − J||_2 = max(|λ_2|, |λ_n|)`` (the second largest eigenvalue modulus)."""
        if self.n == 1:
            return 0.0
        return float(max(abs(self.lambda_2), abs(self.lambda_min)))

    @property
    def spectral_gap(self) -> float:
        return 1.0 - self.lam

    @property
    def beta(self) -> float:
        """``||I − W||_2 = 1 − λ_min`` (W's eigenvalues lie in [−1, 1])."""
        return 1.0 - self.lambda_min

    @property
    def p(self) -> float:
        """``1 − lam²``, the mixing parameter of Koloskova et al. (2020)."""
        return 1.0 - self.lam**2

    # -- rounds -------------------------------------------------------------------------------
    @property
    def time_varying(self) -> bool:
        return False

    @property
    def directed(self) -> bool:
        """Whether the graph is directed (:class:`~decsim.topology.directed.DirectedTopology`);
        only ``sgp`` and ``push_pull`` run on one."""
        return False

    def W_at(self, tau: int) -> np.ndarray:
        """The mixing matrix of round ``tau`` (host-side, for inspection and tests): ``W`` for a
        static topology."""
        del tau
        return self.W

    def summary(self) -> dict:
        """Plain dict of the facts ``decsim topology`` prints."""
        deg = self.degrees
        return {
            "name": self.name,
            "n": self.n,
            "edges": self.n_edges,
            "degree_min": int(deg.min()) if deg.size else 0,
            "degree_max": int(deg.max()) if deg.size else 0,
            "degree_mean": float(deg.mean()) if deg.size else 0.0,
            "lambda_2": self.lambda_2,
            "lambda_min": self.lambda_min,
            "lam": self.lam,
            "spectral_gap": self.spectral_gap,
            "beta": self.beta,
            "p": self.p,
        }

    def __repr__(self) -> str:
        return f"Topology({self.name}, n={self.n}, spectral_gap={self.spectral_gap:.4g})"


# ---------------------------------------------------------------------------------------------
# validation and weights


def validate_matrix(W, *, what: str = "W"):
    """Check that ``W`` (dense or scipy sparse) is a valid mixing matrix: square, symmetric, rows
    summing to 1, and mixing (``lam = ||W − J||_2 < 1``); return it as scipy CSR float64.

    Entries may be negative. Up to n = 2048 the spectral gap is checked densely. Above, a
    nonnegative W is checked in O(nnz) (connected and aperiodic imply ``lam < 1``), and a W with
    negative entries by its two extreme eigenvalues from the sparse eigensolver
    (:func:`decsim.topology.structure.sparse_extremes`, O(nnz) memory).

    Raises:
      ValueError: naming the defect (not square, not symmetric, rows not summing to 1,
        disconnected, periodic, an eigenvalue pushed to or past ±1 by negative entries) and how
        to fix it.
    """
    return _checked_matrix(W, what=what)[0]


def _checked_matrix(W, *, what: str = "W") -> tuple:
    """:func:`validate_matrix`, returning ``(W, known)`` with what the check computed of W's
    spectrum (``None``, ``{"eigenvalues": ...}`` or ``{"extremes": ...}``), for the
    :class:`Topology` built from W (its ``known_spectrum``)."""
    sparse = sp.issparse(W)
    W = sp.csr_matrix(W, dtype=np.float64) if sparse else np.asarray(W, dtype=np.float64)
    if W.ndim != 2 or W.shape[0] != W.shape[1]:
        raise ValueError(f"{what} must be a square [n, n] matrix; got shape {W.shape}. "
                         "Pass one row and one column per worker.")
    if not np.all(np.isfinite(W.data if sparse else W)):
        raise ValueError(f"{what} has non-finite entries; every weight must be a finite number.")
    W = W if sparse else sp.csr_matrix(W)
    n = W.shape[0]
    if n < 1:
        raise ValueError(f"{what} must have at least one worker; got shape {W.shape}.")
    asym = float(abs(W - W.T).max()) if W.nnz else 0.0
    if asym > _ROW_SUM_TOL:
        raise ValueError(f"{what} is not symmetric (max |W - W^T| = {asym:.3g}); decsim needs a "
                         "symmetric W. Symmetrize it, e.g. with Metropolis weights "
                         "(ds.topology.from_networkx(G, weights='metropolis')).")
    # Negative weights are allowed (optimised weights such as "best_constant" and "fastest"
    # have them: every algorithm's analysis needs only a symmetric doubly stochastic W with
    # lam < 1, checked below); round-off such as 1 - 20 * (1/20) = -2e-16 becomes 0.
    if W.nnz:
        W.data[(W.data < 0.0) & (W.data > -_NEG_TOL)] = 0.0
    W.eliminate_zeros()
    rows = np.asarray(W.sum(axis=1)).ravel()
    bad = int(np.argmax(np.abs(rows - 1.0)))
    if abs(rows[bad] - 1.0) > _ROW_SUM_TOL:
        raise ValueError(f"the rows of {what} must sum to 1 (tolerance {_ROW_SUM_TOL:g}); row "
                         f"{bad} sums to {rows[bad]:.6g}. Put the remainder on the diagonal, or "
                         "normalize the rows.")
    known = None
    if n > 1:
        from scipy.sparse.csgraph import connected_components

        n_comp, _ = connected_components(W, directed=False)
        if n_comp > 1:
            raise ValueError(f"{what} does not mix: the graph of its nonzero entries is "
                             f"disconnected ({n_comp} components), so the spectral gap is 0. "
                             "Connect the graph.")
        # Periodic chain (an eigenvalue at -1): a bipartite graph with an all-zero diagonal.
        if not np.any(W.diagonal() > 0) and _is_bipartite(W):
            raise ValueError(f"{what} does not mix: it has an eigenvalue at -1 (a periodic "
                             "chain: bipartite graph, zero diagonal), so the spectral gap is "
                             "0. Put weight on the diagonal, e.g. weights='lazy'.")
        negative = bool(W.data.min() < 0)
        if n <= DENSE_SPECTRUM_MAX_N:
            # connected: 1 is W's top eigenvalue unless negative entries push one above it, and
            # then the second is >= 1 and the check below refuses W
            vals = dense_eigenvalues(W)
            known = {"eigenvalues": vals}
            lam = float(max(abs(vals[1]), abs(vals[-1])))
        elif negative:
            known = {"extremes": _sparse_extremes(W, what)}
            lam = float(max(abs(known["extremes"][0]), abs(known["extremes"][1])))
        else:
            lam = None  # nonnegative, connected and aperiodic: lam < 1 (Perron-Frobenius)
        if lam is not None and 1.0 - lam <= _GAP_TOL:
            hint = (" Its negative entries push an eigenvalue to or past -1 or above 1; use "
                    "smaller off-diagonal weights." if negative else "")
            raise ValueError(f"{what} does not mix: spectral gap 1 - ||W - J||_2 = "
                             f"{1.0 - lam:.3g} (<= 1e-12). Connect the graph, or use "
                             f"weights='lazy'.{hint}")
    return W, known


def _sparse_extremes(W, what: str) -> tuple:
    """``(lambda_2, lambda_min)`` of a large, connected, symmetric, doubly stochastic W with
    negative entries, by the sparse eigensolver (which, for such a W, also finds an eigenvalue
    above 1 or below -1)."""
    from scipy.sparse.linalg import ArpackNoConvergence

    try:
        lambda_2, lambda_min = sparse_extremes(W)
    except ArpackNoConvergence as err:
        raise ValueError(f"{what} has negative entries, so only its spectrum tells whether it "
                         f"mixes, and the sparse eigensolver did not converge on this "
                         f"{W.shape[0]}-worker matrix. Use nonnegative weights (e.g. "
                         "weights='metropolis'), or a W with a larger spectral gap.") from err
    return float(lambda_2), float(lambda_min)


def _is_bipartite(W) -> bool:
    """Whether the (connected) graph of W's nonzero entries is bipartite: every edge joins an
    even and an odd distance from worker 0 (breadth-first, O(nnz))."""
    from scipy.sparse.csgraph import breadth_first_order

    order, parent = breadth_first_order(W, 0, directed=False, return_predecessors=True)
    depth = np.zeros(W.shape[0], np.int64)
    for v in order[1:]:
        depth[v] = depth[parent[v]] + 1
    coo = W.tocoo()
    off = coo.row != coo.col
    return bool(np.all((depth[coo.row[off]] - depth[coo.col[off]]) % 2 == 1))


def _check_weights(weights) -> str:
    return one_of("weights", weights, WEIGHT_RULES, what="weight rule")


def _check_size(name: str, value, example: str) -> int:
    return integer(name, value, hint=f"Pass a whole number of workers, e.g. {example}.")


def _check_edges(count: float, name: str, fix: str) -> None:
    """Refuse a graph of more than ``MAX_EDGES`` edges before anything is built."""
    if count > MAX_EDGES:
        raise ValueError(f"{name} would have {count:.3g} edges, above the budget of "
                         f"MAX_EDGES = {MAX_EDGES:.0e} (its W alone would take about "
                         f"{count * 24 / 1e9:.3g} GB); {fix}")


def _edge_arrays(n: int, u, v):
    """Distinct undirected edges ``(a, b)``, a < b, without self-loops, of the pairs (u, v)."""
    u = np.asarray(u, np.int64).ravel()
    v = np.asarray(v, np.int64).ravel()
    a, b = np.minimum(u, v), np.maximum(u, v)
    keep = a != b
    key = np.unique(a[keep] * n + b[keep])
    return key // n, key % n


def _weights(n: int, a, b, weights: str):
    """Scipy CSR mixing matrix of the graph with edges ``(a[k], b[k])`` (distinct, a < b) under a
    weight rule; O(n + edges) (the optimised rules: :mod:`decsim.topology.weights`)."""
    if weights in OPTIMISED:
        return OPTIMISED[weights](n, a, b)
    deg = np.bincount(np.concatenate([a, b]), minlength=n) if a.size else np.zeros(n, np.int64)
    if weights == "uniform":
        w = np.full(a.size, 1.0 / (1.0 + (deg.max() if n else 0)))
    else:
        w = 1.0 / (1.0 + np.maximum(deg[a], deg[b]))
    off = sp.coo_matrix((np.concatenate([w, w]), (np.concatenate([a, b]), np.concatenate([b, a]))),
                        shape=(n, n)).tocsr()
    W = (off + sp.diags(1.0 - np.asarray(off.sum(axis=1)).ravel())).tocsr()
    if weights == "lazy":
        W = (0.5 * (sp.identity(n, format="csr") + W)).tocsr()
    return W


def weight_matrix(G: nx.Graph, weights: str = "metropolis", *, sparse: bool = False):
    """Mixing matrix of graph ``G`` (nodes ``0..n-1``) under a weight rule: dense numpy, or scipy
    CSR with ``sparse=True`` (O(edges) memory).

    * ``"metropolis"``: ``w_ij = 1 / (1 + max(deg_i, deg_j))`` on each edge, diagonal = remainder.
    * ``"uniform"``: ``w_ij = 1 / (1 + max_degree)`` on each edge, diagonal = remainder.
    * ``"lazy"``: ``(I + W_metropolis) / 2``.
    * ``"best_constant"``, ``"fastest"``: optimised weights, which may be negative
      (:func:`decsim.topology.weights.best_constant`, :func:`decsim.topology.weights.fastest`).
    """
    weights = _check_weights(weights)
    n = G.number_of_nodes()
    edges = np.array([(u, v) for u, v in G.edges() if u != v], dtype=np.int64).reshape(-1, 2)
    W = _weights(n, *_edge_arrays(n, edges[:, 0], edges[:, 1]), weights)
    return W if sparse else W.toarray()


def _from_graph(G: nx.Graph, name: str, weights: str) -> Topology:
    weights = _check_weights(weights)
    G = nx.Graph(G)
    G.remove_edges_from(list(nx.selfloop_edges(G)))
    if G.number_of_nodes() == 0:
        raise ValueError("the graph has no nodes; a topology needs at least one worker.")
    G = nx.convert_node_labels_to_integers(G, ordering="default")
    if G.number_of_nodes() > 1 and not nx.is_connected(G):
        comps = nx.number_connected_components(G)
        raise ValueError(f"graph {name} is disconnected ({comps} components); gossip cannot reach "
                         "consensus. Add edges (e.g. a ring through all nodes) or pick a connected "
                         "generator.")
    W, known = _checked_matrix(weight_matrix(G, weights, sparse=True), what=f"W of {name}")
    suffix = "" if weights == "metropolis" else f", {weights}"
    return Topology(matrix=W, name=f"{name}{suffix}", graph=G, known_spectrum=known)


def _from_edges(n: int, u, v, name: str, weights: str, *, degree: Optional[int] = None,
                laplacian: Optional[Callable] = None, grid: Optional[tuple] = None) -> Topology:
    """A structured generator's topology, built from numpy edge lists (no networkx).

    Args:
      degree: the constant off-diagonal weight is ``1 / (1 + degree)`` when given (every rule
        on a regular graph, Metropolis on a star or a path, uniform on any graph: degree = the
        largest degree); then W = I − L / (1 + degree) (lazy: (I + W) / 2), whose eigenvalues
        follow from ``laplacian()``, the eigenvalues of the graph Laplacian L.
    """
    a, b = _edge_arrays(n, u, v)
    _check_edges(a.size, name, "use fewer workers or a sparser graph.")
    W, known = _checked_matrix(_weights(n, a, b, weights), what=f"W of {name}")
    closed = None
    if degree is not None and laplacian is not None and weights not in OPTIMISED:
        closed = functools.partial(_mixing_spectrum, laplacian, 1.0 / (1.0 + degree),
                                   weights == "lazy")
    suffix = "" if weights == "metropolis" else f", {weights}"
    return Topology(matrix=W, name=f"{name}{suffix}", grid=grid, closed_spectrum=closed,
                    known_spectrum=known)


# ---------------------------------------------------------------------------------------------
# closed-form spectra: W = I − c·L has eigenvalues 1 − c·μ for the eigenvalues μ of L


def _mixing_spectrum(laplacian: Callable, c: float, lazy: bool) -> np.ndarray:
    lam = 1.0 - c * np.asarray(laplacian(), dtype=np.float64)
    return 0.5 * (1.0 + lam) if lazy else lam


def _cycle_laplacian(m: int) -> np.ndarray:
    """Laplacian spectrum of the simple cycle on m nodes (m = 2: one edge; m = 1: no edge)."""
    if m <= 2:
        return np.array([0.0, 2.0][:m])
    return 2.0 - 2.0 * np.cos(2.0 * np.pi * np.arange(m) / m)


def _path_laplacian(m: int) -> np.ndarray:
    return 2.0 - 2.0 * np.cos(np.pi * np.arange(m) / m)


def _product_laplacian(first: Callable, second: Callable) -> np.ndarray:
    """Laplacian spectrum of a Cartesian product of graphs (Kronecker sum of their Laplacians),
    in row-major order of the product's nodes."""
    return (first()[:, None] + second()[None, :]).ravel()


def _star_laplacian(n: int) -> np.ndarray:
    if n <= 2:
        return np.array([0.0, 2.0][:n])
    return np.concatenate([[0.0], np.ones(n - 2), [float(n)]])


def _complete_laplacian(n: int) -> np.ndarray:
    return np.concatenate([[0.0], np.full(n - 1, float(n))])


def _hypercube_laplacian(k: int) -> np.ndarray:
    return np.repeat(2.0 * np.arange(k + 1), [math.comb(k, j) for j in range(k + 1)])


def _circulant_laplacian(n: int, offsets: tuple) -> np.ndarray:
    """Laplacian spectrum of the circulant graph linking i to i + s (mod n) for s in ``offsets``
    (closed under negation mod n): μ_k = Σ_s (1 − cos(2π k s / n)), the DFT of its first row."""
    k = np.arange(n)
    return sum((1.0 - np.cos(2.0 * np.pi * ((k * s) % n) / n) for s in offsets), np.zeros(n))


# ---------------------------------------------------------------------------------------------
# generators


def _cycle_degree(m: int) -> int:
    return min(m - 1, 2)  # 1 node: none, 2 nodes: one edge, else 2


def ring(n: int, *, weights: str = "metropolis") -> Topology:
    """Cycle on ``n`` workers (n = 1: a single worker; n = 2: one edge)."""
    n = _check_size("n", n, "ring(8)")
    weights = _check_weights(weights)
    i = np.arange(n)
    return _from_edges(n, i, (i + 1) % n, f"ring({n})", weights, degree=_cycle_degree(n),
                       laplacian=functools.partial(_cycle_laplacian, n))


def torus(rows: int, cols: int, *, weights: str = "metropolis") -> Topology:
    """2-D torus (grid with wrap-around) of ``rows x cols`` workers (worker ``i * cols + j``)."""
    rows = _check_size("rows", rows, "torus(3, 4)")
    cols = _check_size("cols", cols, "torus(3, 4)")
    weights = _check_weights(weights)
    idx = np.arange(rows * cols).reshape(rows, cols)
    u = np.concatenate([idx.ravel(), idx.ravel()])
    v = np.concatenate([np.roll(idx, -1, axis=1).ravel(), np.roll(idx, -1, axis=0).ravel()])
    laplacian = functools.partial(_product_laplacian, functools.partial(_cycle_laplacian, rows),
                                  functools.partial(_cycle_laplacian, cols))
    return _from_edges(rows * cols, u, v, f"torus({rows}x{cols})", weights,
                       degree=_cycle_degree(rows) + _cycle_degree(cols), laplacian=laplacian,
                       grid=(rows, cols))


def grid(rows: int, cols: int, *, weights: str = "metropolis") -> Topology:
    """2-D grid without wrap-around (worker ``i * cols + j``).

    Its spectrum has a closed form with uniform weights (W = I − L / (1 + max degree), L the
    Kronecker sum of two path Laplacians) and on paths and the 2 x 2 grid; Metropolis weights on
    a larger grid differ between corner, border and inner edges, so W is no Kronecker sum and its
    extremes come from the sparse eigensolver.
    """
    rows = _check_size("rows", rows, "grid(3, 4)")
    cols = _check_size("cols", cols, "grid(3, 4)")
    weights = _check_weights(weights)
    idx = np.arange(rows * cols).reshape(rows, cols)
    u = np.concatenate([idx[:, :-1].ravel(), idx[:-1, :].ravel()])
    v = np.concatenate([idx[:, 1:].ravel(), idx[1:, :].ravel()])
    top = _cycle_degree(rows) + _cycle_degree(cols)  # the largest degree
    constant = weights == "uniform" or min(rows, cols) == 1 or rows == cols == 2
    laplacian = functools.partial(_product_laplacian, functools.partial(_path_laplacian, rows),
                                  functools.partial(_path_laplacian, cols))
    return _from_edges(rows * cols, u, v, f"grid({rows}x{cols})", weights,
                       degree=top if constant else None, laplacian=laplacian)


def complete(n: int, *, weights: str = "metropolis") -> Topology:
    """Complete graph: with Metropolis or uniform weights, ``W = J`` (exact averaging).

    At most ``MAX_EDGES`` edges (n up to 4472); a larger complete graph is refused.
    """
    n = _check_size("n", n, "complete(8)")
    weights = _check_weights(weights)
    largest = (1 + math.isqrt(1 + 8 * MAX_EDGES)) // 2
    _check_edges(n * (n - 1) / 2, f"complete({n})",
                 f"use complete(n) with n <= {largest}, or a sparse graph with a large spectral "
                 f"gap such as exponential({n}) or hypercube (exact averaging of n workers needs "
                 "n(n-1)/2 links).")
    u, v = np.triu_indices(n, 1)
    return _from_edges(n, u, v, f"complete({n})", weights, degree=n - 1,
                       laplacian=functools.partial(_complete_laplacian, n))


def star(n: int, *, weights: str = "metropolis") -> Topology:
    """Star: worker 0 is the hub, linked to the ``n − 1`` others."""
    n = _check_size("n", n, "star(8)")
    weights = _check_weights(weights)
    leaves = np.arange(1, n)
    # every edge joins the hub (degree n - 1) to a leaf: weight 1 / n under every rule
    return _from_edges(n, np.zeros_like(leaves), leaves, f"star({n})", weights,
                       degree=max(n - 1, 1), laplacian=functools.partial(_star_laplacian, n))


def hypercube(n: int, *, weights: str = "metropolis") -> Topology:
    """Hypercube on ``n = 2^k`` workers: i links to i XOR 2^j."""
    n = _check_size("n", n, "hypercube(16)")
    if n & (n - 1):
        lower = 1 << (n.bit_length() - 1)
        raise ValueError(f"hypercube needs n a power of two; got n={n}. Use n={lower} or "
                         f"n={lower * 2}, or exponential(n).")
    weights = _check_weights(weights)
    k = n.bit_length() - 1
    i = np.arange(n)
    u = np.concatenate([i] * k) if k else i[:0]
    v = np.concatenate([i ^ (1 << j) for j in range(k)]) if k else i[:0]
    return _from_edges(n, u, v, f"hypercube({n})", weights, degree=k,
                       laplacian=functools.partial(_hypercube_laplacian, k))


def exponential(n: int, *, weights: str = "metropolis") -> Topology:
    """Static exponential graph: worker i links to ``i ± 2^k (mod n)`` for every ``2^k < n``."""
    n = _check_size("n", n, "exponential(16)")
    weights = _check_weights(weights)
    steps = [1 << k for k in range(max(n - 1, 0).bit_length())]  # 2^k < n
    offsets = tuple(sorted({s % n for k in steps for s in (k, -k)} - {0}))
    i = np.arange(n)
    u = np.concatenate([i] * len(steps)) if steps else i[:0]
    v = np.concatenate([(i + k) % n for k in steps]) if steps else i[:0]
    return _from_edges(n, u, v, f"exponential({n})", weights, degree=len(offsets),
                       laplacian=functools.partial(_circulant_laplacian, n, offsets))


def _check_seed(seed) -> int:
    return integer("seed", seed, min=0, hint="Pass a whole number, e.g. seed=0.")


def erdos_renyi(n: int, p: float, *, seed: int = 0, weights: str = "metropolis",
                max_tries: int = 100) -> Topology:
    """Erdős–Rényi G(n, p), resampled (at most ``max_tries`` times) until connected."""
    n = _check_size("n", n, "erdos_renyi(8, 0.3)")
    p = in_interval("p", p, 0.0, 1.0, closed="right",
                           hint="Pass an edge probability, e.g. erdos_renyi(8, 0.3); the graph is "
                                "connected with high probability above log(n)/n.")
    seed = _check_seed(seed)
    weights = _check_weights(weights)
    max_tries = integer("max_tries", max_tries)
    _check_edges(p * n * (n - 1) / 2, f"erdos_renyi({n}, p={p:g})",
                 "use fewer workers or a smaller p (at least log(n)/n = "
                 f"{math.log(max(n, 2)) / n:.3g} for a connected graph).")
    rng = np.random.default_rng(seed)
    for _ in range(max_tries):
        G = nx.erdos_renyi_graph(n, p, seed=int(rng.integers(2**31)))
        if n == 1 or nx.is_connected(G):
            return _from_graph(G, f"erdos_renyi({n}, p={p:g})", weights)
    hint = math.log(n) / n
    raise ValueError(f"erdos_renyi({n}, p={p}) gave no connected graph in {max_tries} tries; "
                     f"use p above the connectivity threshold log(n)/n = {hint:.3g} "
                     f"(e.g. p={2 * hint:.3g}).")


def random_geometric(n: int, radius: float, *, seed: int = 0, weights: str = "metropolis",
                     max_tries: int = 100) -> Topology:
    """Random geometric graph in the unit square, resampled until connected."""
    n = _check_size("n", n, "random_geometric(8, 0.4)")
    radius = positive("radius", radius,
                             hint="Pass a link distance in the unit square, e.g. "
                                  "random_geometric(8, 0.4).")
    seed = _check_seed(seed)
    weights = _check_weights(weights)
    max_tries = integer("max_tries", max_tries)
    r = radius
    linked = math.pi * r**2 - 8 * r**3 / 3 + r**4 / 2 if r < 1 else 1.0  # P(two points linked)
    _check_edges(linked * n * (n - 1) / 2, f"random_geometric({n}, radius={radius:g})",
                 "use fewer workers or a smaller radius (about "
                 f"{math.sqrt(2 * math.log(max(n, 2)) / (math.pi * n)):.3g} keeps it connected).")
    rng = np.random.default_rng(seed)
    for _ in range(max_tries):
        G = nx.random_geometric_graph(n, radius, seed=int(rng.integers(2**31)))
        if n == 1 or nx.is_connected(G):
            return _from_graph(G, f"random_geometric({n}, r={radius:g})", weights)
    hint = math.sqrt(2 * math.log(n) / (math.pi * n))
    raise ValueError(f"random_geometric({n}, radius={radius}) gave no connected graph in "
                     f"{max_tries} tries; use a larger radius (about {hint:.3g} or more).")


def social(*, weights: str = "metropolis") -> Topology:
    """The Davis Southern Women social graph (networkx), 32 nodes."""
    return _from_graph(nx.davis_southern_women_graph(), "social(32)", weights)


def from_networkx(G: nx.Graph, *, weights: str = "metropolis",
                  name: Optional[str] = None) -> Topology:
    """Topology of any connected networkx graph (nodes are relabelled 0..n-1 in node order).

    ``ds.topology.from_networkx`` (:func:`decsim.topology.directed.from_networkx`) sends a
    ``DiGraph`` to a directed topology instead."""
    if not isinstance(G, nx.Graph):
        raise ValueError(f"G must be a networkx Graph; got {type(G).__name__}.")
    return _from_graph(G, name or f"graph({G.number_of_nodes()})", weights)


def from_matrix(W, *, name: Optional[str] = None) -> Topology:
    """Topology of an explicit mixing matrix (validated by :func:`validate_matrix`: square,
    symmetric, rows sum to 1, mixes with ``lam < 1``; entries may be negative).
    ``ds.topology.from_matrix(P, directed=True)`` (:func:`decsim.topology.directed.from_matrix`)
    takes a column-stochastic P instead."""
    W, known = _checked_matrix(W)
    return Topology(matrix=W, name=name or f"matrix({W.shape[0]})", known_spectrum=known)


def torus_shape(n: int) -> tuple:
    """The most square ``rows x cols = n`` factorization (rows <= cols)."""
    n = _check_size("n", n, "torus_shape(12)")
    rows = max(r for r in range(1, math.isqrt(n) + 1) if n % r == 0)
    return rows, n // rows


def by_name(name: str, n: int, *, seed: int = 0, weights: str = "metropolis",
            **options) -> Topology:
    """Build a topology of ``n`` workers from a generator name (``torus``/``grid`` use the most
    square factorization of n; ``erdos_renyi`` takes ``p=``, ``random_geometric`` takes
    ``radius=``)."""
    if name not in GENERATORS:
        raise ValueError(f"unknown topology {name!r}; valid names: {', '.join(GENERATORS)}."
                         f"{closest(name, GENERATORS)}")
    if name in ("torus", "grid"):
        return globals()[name](*torus_shape(n), weights=weights)
    if name == "social":
        if n != 32:
            raise ValueError(f"the social graph has 32 nodes; got n={n!r}. Use n=32.")
        return social(weights=weights)
    needed = {"erdos_renyi": "p", "random_geometric": "radius"}.get(name)
    extra = set(options) - ({needed} if needed else set())
    if extra:
        raise ValueError(f"topology {name!r} takes no option(s) {sorted(extra)}"
                         + (f"; it takes {needed}=" if needed else "") + ".")
    if needed:
        if needed not in options:
            raise ValueError(f"topology {name!r} needs {needed}=..., e.g. "
                             f"by_name({name!r}, {n}, {needed}={0.3 if needed == 'p' else 0.4}).")
        return globals()[name](n, options[needed], seed=seed, weights=weights)
    return globals()[name](n, weights=weights)
