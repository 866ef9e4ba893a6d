"""Static communication graphs: the :class:`Topology` class, weight rules, validation, generators.

This is the only module that uses networkx. A :class:`Topology` holds a symmetric, doubly
stochastic, nonnegative mixing matrix ``W`` (numpy, float64) and its spectral quantities
(ALGORITHMS.md section 1 and section 0):

* ``lam = ||W − J||_2 = max(|λ_2|, |λ_n|)``, ``spectral_gap = 1 − lam``,
* ``beta = ||I − W||_2``, ``p = 1 − lam²``.

(The eigenvalues themselves are computed in :mod:`decsim.topology.structure`.)

Generators follow networkx's conventions: size first, ``seed`` next, options keyword-only. Every
generator takes ``weights=`` (``"metropolis"`` default, ``"uniform"``, ``"lazy"``).

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
from typing import Optional

import networkx as nx
import numpy as np
import scipy.sparse as sp

from .structure import DENSE_SPECTRUM_MAX_N, Spectrum

GENERATORS = ("ring", "torus", "grid", "complete", "star", "hypercube", "exponential",
              "erdos_renyi", "random_geometric", "social")

__all__ = ["Topology", "WEIGHT_RULES", "GENERATORS", "validate_matrix", "weight_matrix",
           *GENERATORS, "from_networkx", "from_matrix", "torus_shape", "by_name"]

WEIGHT_RULES = ("metropolis", "uniform", "lazy")
_ROW_SUM_TOL = 1e-6
_GAP_TOL = 1e-12
_NEG_TOL = 1e-12  # round-off such as 1 - 20 * (1/20) = -2e-16 on a diagonal is no negative weight


@dataclasses.dataclass(frozen=True, eq=False)
class Topology:
    """A static communication graph with its mixing matrix.

    The matrix is stored sparse (scipy CSR), so a ring of 10⁴ workers costs O(n) memory; ``W``
    materializes the dense numpy matrix on first use. Spectral quantities come from a dense
    eigendecomposition up to n = 2048, from the DFT of the first row for circulant graphs (ring,
    torus, exponential), and from Lanczos (``scipy.sparse.linalg.eigsh``) otherwise.

    Attributes:
      matrix: scipy CSR ``[n, n]`` float64 mixing matrix (symmetric, nonnegative, doubly
        stochastic).
      name: e.g. ``"ring(16)"``.
      graph: the networkx graph (self-loops removed), or ``None`` when built from a bare matrix
        (then the graph of nonzero off-diagonal entries is used on demand).
      grid: ``(rows, cols)`` arrangement of the workers when the generator has one (torus), used to
        recognize circulant structure.
    """

    matrix: object
    name: str
    graph: Optional[nx.Graph] = None
    grid: Optional[tuple] = None

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
        if self.graph is not None:
            return self.graph
        G = nx.Graph()
        G.add_nodes_from(range(self.n))
        upper = sp.triu(self.matrix, k=1).tocoo()
        G.add_edges_from(zip(upper.row.tolist(), upper.col.tolist()))
        return G

    @property
    def n_edges(self) -> int:
        return int(self.nx_graph.number_of_edges())

    @functools.cached_property
    def degrees(self) -> np.ndarray:
        return np.array([d for _, d in sorted(self.nx_graph.degree())], dtype=np.int64)

    @property
    def grid_shape(self) -> tuple:
        """``(rows, cols)`` arrangement of the workers (``(1, n)`` unless the generator says)."""
        return self.grid if self.grid is not None else (1, self.n)

    # -- spectra ------------------------------------------------------------------------------
    @functools.cached_property
    def _spectrum(self) -> Spectrum:
        return Spectrum(self.matrix, self.grid_shape)

    @property
    def eigenvalues(self) -> np.ndarray:
        """Eigenvalues of W, sorted in decreasing order (λ_1 = 1 first). For n > 2048 only
        circulant graphs have them all (by DFT); use ``lambda_2``/``lambda_min`` otherwise."""
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
    """Check that ``W`` (dense or scipy sparse) is a valid mixing matrix; return it as scipy CSR
    float64.

    Raises:
      ValueError: naming the defect (not square, not symmetric, negative entries, rows not summing
        to 1, disconnected, periodic) and how to fix it.
    """
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
    if W.nnz and float(W.data.min()) < -_NEG_TOL:
        coo = W.tocoo()
        k = int(np.argmin(coo.data))
        raise ValueError(f"{what} has a negative entry W[{coo.row[k]}, {coo.col[k]}] = "
                         f"{coo.data[k]:.3g}; weights must be nonnegative. Use a weight rule such "
                         "as 'metropolis' or 'lazy'.")
    if W.nnz and W.data.min() < 0.0:
        W.data[W.data < 0.0] = 0.0
    W.eliminate_zeros()
    rows = np.asarray(W.sum(axis=1)).ravel()
    bad = int(np.argmax(np.abs(rows - 1.0)))
    if abs(rows[bad] - 1.0) > _ROW_SUM_TOL:
        raise ValueError(f"the rows of {what} must sum to 1 (tolerance {_ROW_SUM_TOL:g}); row "
                         f"{bad} sums to {rows[bad]:.6g}. Put the remainder on the diagonal, or "
                         "normalize the rows.")
    if n > 1:
        from scipy.sparse.csgraph import connected_components

        n_comp, labels = connected_components(W, directed=False)
        if n_comp > 1:
            raise ValueError(f"{what} does not mix: the graph of its nonzero entries is "
                             f"disconnected ({n_comp} components), so the spectral gap is 0. "
                             "Connect the graph.")
        # Periodic chain (an eigenvalue at -1): a bipartite graph with an all-zero diagonal.
        if not np.any(W.diagonal() > 0):
            G = nx.from_scipy_sparse_array(W)
            if nx.is_bipartite(G):
                raise ValueError(f"{what} does not mix: it has an eigenvalue at -1 (a periodic "
                                 "chain: bipartite graph, zero diagonal), so the spectral gap is "
                                 "0. Put weight on the diagonal, e.g. weights='lazy'.")
        if n <= DENSE_SPECTRUM_MAX_N:
            dense = W.toarray()
            J = np.full_like(dense, 1.0 / n)
            lam = float(np.max(np.abs(np.linalg.eigvalsh(dense - J))))
            if 1.0 - lam <= _GAP_TOL:
                raise ValueError(f"{what} does not mix: spectral gap 1 - ||W - J||_2 = "
                                 f"{1.0 - lam:.3g} (<= 1e-12). Connect the graph, or use "
                                 "weights='lazy'.")
    return W


def _check_weights(weights: str) -> None:
    if weights not in WEIGHT_RULES:
        raise ValueError(f"weights={weights!r} is not a weight rule; choose one of {WEIGHT_RULES}.")


def weight_matrix(G: nx.Graph, weights: str = "metropolis", *, sparse: bool = False):
    """Mixing matrix of graph ``G`` (nodes ``0..n-1``) under a weight rule: dense numpy, or scipy
    CSR with ``sparse=True`` (O(edges) memory).

    * ``"metropolis"``: ``w_ij = 1 / (1 + max(deg_i, deg_j))`` on each edge, diagonal = remainder.
    * ``"uniform"``: ``w_ij = 1 / (1 + max_degree)`` on each edge, diagonal = remainder.
    * ``"lazy"``: ``(I + W_metropolis) / 2``.
    """
    _check_weights(weights)
    n = G.number_of_nodes()
    edges = np.array([(u, v) for u, v in G.edges() if u != v], dtype=np.int64).reshape(-1, 2)
    deg = np.bincount(edges.ravel(), minlength=n) if edges.size else np.zeros(n, np.int64)
    u, v = edges[:, 0], edges[:, 1]
    if weights == "uniform":
        w = np.full(len(u), 1.0 / (1.0 + (deg.max() if n else 0)))
    else:
        w = 1.0 / (1.0 + np.maximum(deg[u], deg[v]))
    off = sp.coo_matrix((np.concatenate([w, w]), (np.concatenate([u, v]), np.concatenate([v, u]))),
                        shape=(n, n)).tocsr()
    W = (off + sp.diags(1.0 - np.asarray(off.sum(axis=1)).ravel())).tocsr()
    if weights == "lazy":
        W = (0.5 * (sp.identity(n, format="csr") + W)).tocsr()
    return W if sparse else W.toarray()


def _check_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}.")
    return int(value)


def _from_graph(G: nx.Graph, name: str, weights: str) -> Topology:
    _check_weights(weights)
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
    W = validate_matrix(weight_matrix(G, weights, sparse=True), what=f"W of {name}")
    suffix = "" if weights == "metropolis" else f", {weights}"
    return Topology(matrix=W, name=f"{name}{suffix}", graph=G)


# ---------------------------------------------------------------------------------------------
# generators


def ring(n: int, *, weights: str = "metropolis") -> Topology:
    """Cycle on ``n`` workers (n = 1: a single worker; n = 2: one edge)."""
    n = _check_int("n", n)
    G = nx.empty_graph(n)
    G.add_edges_from((i, (i + 1) % n) for i in range(n) if (i + 1) % n != i)
    return _from_graph(G, f"ring({n})", weights)


def torus(rows: int, cols: int, *, weights: str = "metropolis") -> Topology:
    """2-D torus (grid with wrap-around) of ``rows x cols`` workers (worker ``i * cols + j``)."""
    rows, cols = _check_int("rows", rows), _check_int("cols", cols)
    G = nx.grid_2d_graph(rows, cols, periodic=True)  # nodes (i, j) in row-major order
    return dataclasses.replace(_from_graph(G, f"torus({rows}x{cols})", weights), grid=(rows, cols))


def grid(rows: int, cols: int, *, weights: str = "metropolis") -> Topology:
    """2-D grid without wrap-around (worker ``i * cols + j``)."""
    rows, cols = _check_int("rows", rows), _check_int("cols", cols)
    G = nx.grid_2d_graph(rows, cols, periodic=False)
    return _from_graph(G, f"grid({rows}x{cols})", weights)


def complete(n: int, *, weights: str = "metropolis") -> Topology:
    """Complete graph: with Metropolis or uniform weights, ``W = J`` (exact averaging)."""
    n = _check_int("n", n)
    return _from_graph(nx.complete_graph(n), f"complete({n})", weights)


def star(n: int, *, weights: str = "metropolis") -> Topology:
    """Star: worker 0 is the hub, linked to the ``n − 1`` others."""
    n = _check_int("n", n)
    return _from_graph(nx.star_graph(n - 1) if n > 1 else nx.empty_graph(1), f"star({n})", weights)


def hypercube(n: int, *, weights: str = "metropolis") -> Topology:
    """Hypercube on ``n = 2^k`` workers: i links to i XOR 2^j."""
    n = _check_int("n", n)
    if n & (n - 1):
        lower = 1 << (n.bit_length() - 1)
        raise ValueError(f"hypercube needs n a power of two; got n={n}. Use n={lower} or "
                         f"n={lower * 2}, or exponential(n).")
    G = nx.empty_graph(n)
    k = n.bit_length() - 1
    G.add_edges_from((i, i ^ (1 << j)) for i in range(n) for j in range(k))
    return _from_graph(G, f"hypercube({n})", weights)


def exponential(n: int, *, weights: str = "metropolis") -> Topology:
    """Static exponential graph: worker i links to ``i ± 2^k (mod n)`` for every ``2^k < n``."""
    n = _check_int("n", n)
    G = nx.empty_graph(n)
    k = 1
    while k < n:
        G.add_edges_from((i, (i + k) % n) for i in range(n) if (i + k) % n != i)
        k *= 2
    return _from_graph(G, f"exponential({n})", weights)


def erdos_renyi(n: int, p: float, *, seed: int = 0, weights: str = "metropolis",
                max_tries: int = 100) -> Topology:
    """Erdős–Rényi G(n, p), resampled (at most ``max_tries`` times) until connected."""
    n = _check_int("n", n)
    if not 0.0 < float(p) <= 1.0:
        raise ValueError(f"p must be in (0, 1]; got p={p!r}.")
    rng = np.random.default_rng(seed)
    for _ in range(max_tries):
        G = nx.erdos_renyi_graph(n, float(p), seed=int(rng.integers(2**31)))
        if n == 1 or nx.is_connected(G):
            return _from_graph(G, f"erdos_renyi({n}, p={p:g})", weights)
    hint = math.log(n) / n
    raise ValueError(f"erdos_renyi({n}, p={p}) gave no connected graph in {max_tries} tries; "
                     f"use p above the connectivity threshold log(n)/n = {hint:.3g} "
                     f"(e.g. p={2 * hint:.3g}).")


def random_geometric(n: int, radius: float, *, seed: int = 0, weights: str = "metropolis",
                     max_tries: int = 100) -> Topology:
    """Random geometric graph in the unit square, resampled until connected."""
    n = _check_int("n", n)
    if not float(radius) > 0.0:
        raise ValueError(f"radius must be positive; got radius={radius!r}.")
    rng = np.random.default_rng(seed)
    for _ in range(max_tries):
        G = nx.random_geometric_graph(n, float(radius), seed=int(rng.integers(2**31)))
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
    """Topology of any connected networkx graph (nodes are relabelled 0..n-1 in node order)."""
    if not isinstance(G, nx.Graph):
        raise ValueError(f"G must be a networkx Graph; got {type(G).__name__}.")
    return _from_graph(G, name or f"graph({G.number_of_nodes()})", weights)


def from_matrix(W, *, name: Optional[str] = None) -> Topology:
    """Topology of an explicit mixing matrix (validated: square, symmetric, nonnegative, rows sum
    to 1, connected)."""
    W = validate_matrix(W)
    return Topology(matrix=W, name=name or f"matrix({W.shape[0]})")


def torus_shape(n: int) -> tuple:
    """The most square ``rows x cols = n`` factorization (rows <= cols)."""
    n = _check_int("n", n)
    rows = max(r for r in range(1, math.isqrt(n) + 1) if n % r == 0)
    return rows, n // rows


def by_name(name: str, n: int, *, seed: int = 0, weights: str = "metropolis",
            **options) -> Topology:
    """Build a topology of ``n`` workers from a generator name (``torus``/``grid`` use the most
    square factorization of n; ``erdos_renyi`` takes ``p=``, ``random_geometric`` takes
    ``radius=``)."""
    if name not in GENERATORS:
        import difflib
        close = difflib.get_close_matches(str(name), GENERATORS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown topology {name!r}; valid names: {', '.join(GENERATORS)}.{hint}")
    if name in ("torus", "grid"):
        return globals()[name](*torus_shape(n), weights=weights)
    if name == "social":
        if n != 32:
            raise ValueError(f"the social graph has 32 nodes; got n={n}.")
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
