"""Facts about a mixing matrix W: its spectrum, its neighbour lists and its circulant structure.

Everything here reads a matrix (dense numpy or scipy sparse), never a graph or a ``Topology``:

* :class:`Spectrum`: the eigenvalues of W, densely up to n = 2048, from the 2-D DFT of worker 0's
  row when W is circulant on its grid, and by Lanczos otherwise;
* :func:`neighbour_lists`: the ELL form ``(idx, w)`` of W that the sparse gossip path gathers with;
* :func:`circulant_structure`, :func:`circulant_rebuild`: W as a sum of rolls on a worker grid;
* :func:`densify`, :func:`dense_builder`: a dense W_t from time-varying neighbour lists (jax).

:mod:`decsim.gossip` builds its paths from these; nothing here imports gossip.

Example:
    >>> import numpy as np
    >>> W = np.array([[0.5, 0.5, 0.0], [0.5, 0.0, 0.5], [0.0, 0.5, 0.5]])
    >>> idx, w = neighbour_lists(W)  # column 0: the worker itself; padding: itself at weight 0
    >>> idx.tolist()
    [[0, 1, 0], [1, 0, 2], [2, 1, 2]]
    >>> w.tolist()
    [[0.5, 0.5, 0.0], [0.0, 0.5, 0.5], [0.5, 0.5, 0.0]]
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Optional

import numpy as np
import scipy.sparse as sp

__all__ = ["DENSE_SPECTRUM_MAX_N", "SHIFT_INVERT_MAX_PROFILE", "ELL_MAX_ENTRIES", "Spectrum",
           "envelope", "dense_eigenvalues", "sparse_extremes", "neighbour_lists",
           "circulant_first_row", "circulant_structure", "circulant_rebuild", "densify",
           "dense_builder"]

DENSE_SPECTRUM_MAX_N = 2048  # above this, spectra by DFT (circulant) or Lanczos, never dense
SHIFT_INVERT_MAX_PROFILE = 5 * 10**7  # envelope above which no sparse LU is tried (Lanczos only)
ELL_MAX_ENTRIES = 5 * 10**7  # neighbour lists of more entries (n x (1 + max degree)) are refused
_CIRCULANT_TOL = 1e-12  # a W within this of its circulant rebuild has the DFT spectrum
_LANCZOS_TOL = 1e-10
_SHIFT = 1e-10  # shift-invert of I - W at -shift (lambda_2), of W at -1 - shift


# ---------------------------------------------------------------------------------------------
# spectra


class Spectrum:
    """The eigenvalues of a symmetric scipy CSR mixing matrix, each computed once on first use.

    In order of preference: a closed form given by the generator, a dense eigendecomposition up
    to n = 2048, the 2-D DFT of worker 0's row when W is circulant on its grid, and, for the two
    extremes only, a sparse eigensolver (:func:`sparse_extremes`). Nothing here makes a dense
    ``[n, n]`` array above n = 2048, and everything costs O(nnz) memory except the sparse LU of
    the shift-invert solver, which is tried only on graphs of small envelope.

    Args:
      matrix: scipy CSR ``[n, n]`` (symmetric, so its eigenvalues are real and lie in [−1, 1]).
      grid: ``(rows, cols)`` arrangement of the workers, used to recognize circulant structure.
      closed: ``None``, or a function of no arguments that returns all eigenvalues of ``matrix``
        (any order) by a closed form.
      known: what validating ``matrix`` already computed (:func:`decsim.topology.validate_matrix`):
        ``{"eigenvalues": sorted decreasing}`` from its dense eigendecomposition or
        ``{"extremes": (lambda_2, lambda_min)}`` from the sparse eigensolver; used in place of
        computing the same thing again (a closed form still comes first).
    """

    def __init__(self, matrix, grid: tuple, closed: Optional[Callable[[], np.ndarray]] = None,
                 known: Optional[dict] = None):
        self.matrix = matrix
        self.grid = grid
        self.closed = closed
        self.known = known or {}
        self.n = int(matrix.shape[0])

    @functools.cached_property
    def circulant(self):
        """All eigenvalues from the 2-D DFT of worker 0's row when W is circulant on its grid."""
        first = circulant_first_row(self.matrix, self.grid)
        if first is None:
            return None
        if abs(circulant_rebuild(first, self.n) - self.matrix).max() > _CIRCULANT_TOL:
            return None
        return np.sort(np.real(np.fft.fft2(first)).ravel())[::-1]

    @functools.cached_property
    def eigenvalues(self) -> np.ndarray:
        """Eigenvalues of W, sorted in decreasing order (λ_1 = 1 first). For n > 2048 only
        closed forms and circulant matrices have them all; use :attr:`extremes` otherwise."""
        if self.closed is not None:
            return np.sort(np.asarray(self.closed(), dtype=np.float64))[::-1]
        if "eigenvalues" in self.known:
            return self.known["eigenvalues"]
        if self.n <= DENSE_SPECTRUM_MAX_N:
            return dense_eigenvalues(self.matrix)
        circ = self.circulant
        if circ is None:
            raise ValueError(f"all eigenvalues of a non-circulant {self.n}-worker W would need a "
                             "dense eigendecomposition; use lambda_2, lambda_min, lam and "
                             "spectral_gap.")
        return circ

    @functools.cached_property
    def extremes(self) -> tuple:
        """``(lambda_2, lambda_min)``."""
        if self.n == 1:
            return 0.0, 1.0
        if (self.closed is not None or self.n <= DENSE_SPECTRUM_MAX_N
                or self.circulant is not None):
            vals = self.eigenvalues
            return float(vals[1]), float(vals[-1])
        if "extremes" in self.known:
            return self.known["extremes"]
        return sparse_extremes(self.matrix)


def dense_eigenvalues(M) -> np.ndarray:
    """All eigenvalues of a symmetric scipy sparse ``M``, sorted in decreasing order, by a dense
    eigendecomposition (O(n²) memory: n <= ``DENSE_SPECTRUM_MAX_N``)."""
    return np.sort(np.linalg.eigvalsh(np.asarray(M.toarray(), dtype=np.float64)))[::-1]


def envelope(M) -> int:
    """The envelope (profile) of symmetric ``M`` in reverse Cuthill-McKee order: the entries a
    sparse LU without pivoting can fill in one triangle at most. O(nnz)."""
    from scipy.sparse.csgraph import reverse_cuthill_mckee

    M = sp.csr_matrix(M)
    n = M.shape[0]
    order = reverse_cuthill_mckee(M, symmetric_mode=True)
    P = M[order][:, order].tocsr()
    rows = np.repeat(np.arange(n), np.diff(P.indptr))
    first = np.arange(n)
    np.minimum.at(first, rows, P.indices)
    return int(np.sum(np.arange(n) - first))


def sparse_extremes(M) -> tuple:
    """``(lambda_2, lambda_min)`` of a symmetric, doubly stochastic, connected scipy sparse W
    (n >= 3), to about 1e-10, in O(nnz) memory but for the sparse LUs described here.

    Graphs of small envelope (:func:`envelope` at most ``SHIFT_INVERT_MAX_PROFILE``: paths,
    rings, grids, meshes, geometric graphs, whose spectral gaps are small) use sparse LUs of
    shifted matrices in minimum-degree order, pivoting on the diagonal (they are positive
    definite, which the signs of the pivots confirm):

    * λ_2: Lanczos on ``P (I − W + δI)⁻¹ P`` with P the projection off the consensus vector and
      δ = 1e-10; its largest eigenvalue is ``1 / (1 − λ_2 + δ)``, well apart from the next
      however small the gap.
    * λ_min: a coarse Lanczos estimate (an upper bound), a shift σ just below it that the
      pivots prove lies below the spectrum, and Lanczos on ``(W − σI)⁻¹``; where the bottom of
      the spectrum is too dense for that to converge quickly, bisection on the sign of the
      pivots of ``W − σI``.

    Other graphs (expanders, whose sparse LU would fill in but whose gaps are large) use plain
    Lanczos on ``W − 2J`` (λ_2 is its largest eigenvalue: J's eigenvalue 1 moves to −1) and on
    ``W`` (λ_min).
    """
    M = sp.csr_matrix(M, dtype=np.float64)
    if envelope(M) <= SHIFT_INVERT_MAX_PROFILE:
        return _shift_invert_extremes(M)
    return _lanczos_extremes(M)


def _start(n: int) -> np.ndarray:
    """A fixed Lanczos start vector (ARPACK's default is random: results would vary by 1e-13)."""
    return np.random.default_rng(0).standard_normal(n)


def _lanczos_extremes(M) -> tuple:
    from scipy.sparse.linalg import LinearOperator, eigsh

    n = M.shape[0]

    def deflated(x):
        x = np.asarray(x, dtype=np.float64)
        return M @ x - 2.0 * x.mean(axis=0, keepdims=x.ndim > 1)

    op = LinearOperator((n, n), matvec=deflated, matmat=deflated, dtype=np.float64)
    ncv = min(n - 1, 40)
    top = eigsh(op, k=1, which="LA", ncv=ncv, tol=_LANCZOS_TOL, v0=_start(n),
                return_eigenvectors=False)
    return float(top[0]), _lanczos_min(M, _LANCZOS_TOL)


def _lanczos_min(M, tol: float) -> float:
    from scipy.sparse.linalg import eigsh

    n = M.shape[0]
    low = eigsh(M, k=1, which="SA", ncv=min(n - 1, 40), tol=tol, v0=_start(n),
                return_eigenvectors=False)
    return float(low[0])


def _positive_definite_lu(A):
    """Sparse LU of a symmetric ``A`` with diagonal pivots in minimum-degree order, or ``None``
    unless ``A`` is positive definite (then every pivot is positive)."""
    from scipy.sparse.linalg import splu

    try:
        lu = splu(sp.csc_matrix(A), permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0,
                  options={"SymmetricMode": True})
    except RuntimeError:  # an exactly singular pivot
        return None
    if not (np.array_equal(lu.perm_r, lu.perm_c) and np.all(lu.U.diagonal() > 0)):
        return None
    return lu


def _largest_of_inverse(lu, n: int, project: bool, maxiter: int = 100) -> float:
    """The largest eigenvalue of ``A⁻¹`` (``lu`` factors a positive definite A), restricted to
    the complement of the consensus vector when ``project``; raises ``ArpackNoConvergence``
    after a bounded number of restarts."""
    from scipy.sparse.linalg import LinearOperator, eigsh

    def solve(x):
        x = np.asarray(x, np.float64)
        if not project:
            return lu.solve(x)
        y = lu.solve(x - x.mean())
        return y - y.mean()

    op = LinearOperator((n, n), matvec=solve, dtype=np.float64)
    start = _start(n)
    nu = eigsh(op, k=1, which="LA", ncv=min(n - 1, 20), tol=1e-12, maxiter=maxiter,
               v0=start - start.mean() if project else start, return_eigenvectors=False)
    return float(nu[0])


def _shift_invert_extremes(M) -> tuple:
    from scipy.sparse.linalg import ArpackNoConvergence

    n = M.shape[0]
    eye = sp.identity(n, format="csc")
    lu = _positive_definite_lu(eye - M + _SHIFT * eye)
    try:
        if lu is None:  # round-off only: I - W is positive semidefinite
            raise ArpackNoConvergence("no factorization", [], [])
        lambda_2 = 1.0 - (1.0 / _largest_of_inverse(lu, n, project=True) - _SHIFT)
    except ArpackNoConvergence:
        return _lanczos_extremes(M)
    return lambda_2, _smallest(M, eye)


def _smallest(M, eye) -> float:
    """λ_min of symmetric M with spectrum in [−1, 1], via shifted sparse LUs (see
    :func:`sparse_extremes`)."""
    from scipy.sparse.linalg import ArpackNoConvergence

    n = M.shape[0]
    high = _lanczos_min(M, 1e-3)  # a Ritz value: an upper bound on lambda_min
    floor = -1.0 - _SHIFT  # W + (1 + shift) I is positive definite
    low, lu = max(high - 2e-3, floor), None
    while lu is None:
        lu = _positive_definite_lu(M - low * eye)
        if lu is None:
            if low == floor:  # round-off at the floor: no sparse LU to trust
                return _lanczos_min(M, _LANCZOS_TOL)
            high, low = low, max(low - 8 * (high - low), floor)
    try:
        return min(high, low + 1.0 / _largest_of_inverse(lu, n, project=False, maxiter=20))
    except ArpackNoConvergence:
        pass
    # bisection: all eigenvalues lie above low (positive definite) and one lies at or below high
    while high - low > 1e-11:
        mid = 0.5 * (low + high)
        if _positive_definite_lu(M - mid * eye) is None:
            high = mid
        else:
            low = mid
    return 0.5 * (low + high)


# ---------------------------------------------------------------------------------------------
# neighbour lists and circulant structure (host side, O(nnz))


def neighbour_lists(W):
    """ELL form of W (dense or scipy sparse): ``idx`` int32 ``[n, K]`` and ``w`` float64 ``[n, K]``
    (column 0 is the worker itself; rows with fewer neighbours are padded with the worker itself
    at weight 0). O(n·K) time and memory: O(nnz) when the degrees are about even.

    Raises:
      ValueError: when the padding would dominate a large W (``n·K`` above ``ELL_MAX_ENTRIES``
        and above four times the nonzeros): a hub such as the star's makes ``K`` about n, so the
        lists would be quadratic in n.
    """
    M = sp.csr_matrix(W)
    n = M.shape[0]
    coo = M.tocoo()
    off = coo.row != coo.col
    r, c, v = coo.row[off], coo.col[off], coo.data[off]
    counts = np.bincount(r, minlength=n)
    K = 1 + (int(counts.max()) if r.size else 0)
    if n * K > ELL_MAX_ENTRIES and n * K > 4 * (M.nnz + n):
        hub = int(np.argmax(counts))
        raise ValueError(f"the neighbour lists of this W would hold n x K = {n} x {K} = "
                         f"{n * K:.3g} entries (worker {hub} has {K - 1} neighbours) for "
                         f"{M.nnz} nonzeros; the sparse gossip path pads every worker to the "
                         "largest degree, and allows at most "
                         f"{ELL_MAX_ENTRIES:.0e} entries. Use a graph of bounded degree (ring, "
                         "torus, exponential, ...) or fewer workers.")
    order = np.lexsort((c, r))
    r, c, v = r[order], c[order], v[order]
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    pos = np.arange(r.size) - starts[r] + 1
    idx = np.tile(np.arange(n, dtype=np.int32)[:, None], (1, K))
    w = np.zeros((n, K), np.float64)  # the runner casts to the run's float dtype
    w[:, 0] = M.diagonal()
    idx[r, pos] = c
    w[r, pos] = v
    return idx, w


def circulant_first_row(W, grid: tuple):
    """Worker 0's row of W (scipy sparse) as a ``[rows, cols]`` array, when W could be circulant
    on ``grid``: n = rows·cols and every row holds as many nonzeros as row 0; else ``None``.
    O(n) memory, so the rebuild that confirms it costs O(nnz), never O(n²) (a star's hub row
    is n long, but its other rows are not)."""
    M = sp.csr_matrix(W)
    rows, cols = grid
    n = M.shape[0]
    if rows * cols != n:
        return None
    counts = np.diff(M.indptr)
    if np.any(counts != counts[0]):
        return None
    return np.asarray(M.getrow(0).toarray()).reshape(rows, cols)


def circulant_rebuild(first: np.ndarray, n: int):
    """The sparse circulant matrix whose worker-0 row on the grid is ``first`` ([rows, cols])."""
    rows, cols = first.shape
    r, c = np.nonzero(first)
    i = np.arange(n)
    ir, ic = i // cols, i % cols
    data, ii, jj = [], [], []
    for dr, dc in zip(r, c):
        data.append(np.full(n, first[dr, dc]))
        ii.append(i)
        jj.append(((ir + dr) % rows) * cols + (ic + dc) % cols)
    if not data:
        return sp.csr_matrix((n, n))
    entries = (np.concatenate(data), (np.concatenate(ii), np.concatenate(jj)))
    return sp.csr_matrix(entries, shape=(n, n))


def circulant_structure(W, grid: tuple):
    """If W (dense or sparse) is circulant on ``grid = (rows, cols)`` (worker ``i = r·cols + c``),
    return ``(shifts, c)``: the distinct 2-D offsets of worker 0's neighbours and their weights,
    such that ``W X = Σ_s c_s roll(X, −shift_s)``; otherwise ``None``. O(nnz)."""
    M = sp.csr_matrix(W)
    rows, cols = grid
    n = M.shape[0]
    first = circulant_first_row(M, grid)
    if first is None or abs(circulant_rebuild(first, n) - M).max() > 0:
        return None
    js = np.flatnonzero(first.ravel())
    shifts = tuple((int(j // cols), int(j % cols)) for j in js)
    return shifts, first.ravel()[js].astype(np.float64)


# ---------------------------------------------------------------------------------------------
# dense matrices from neighbour lists (jittable)


def densify(idx, w):
    """The dense ``[n, n]`` matrix of neighbour lists ``(idx, w)`` (jax; duplicates add up)."""
    import jax.numpy as jnp

    n = idx.shape[0]
    rows = jnp.broadcast_to(jnp.arange(n)[:, None], idx.shape)
    return jnp.zeros((n, n), w.dtype).at[rows, idx].add(w)


@functools.cache
def dense_builder(sparse_build):
    """The dense builder ``(args, tau) -> W_t`` of a time-varying ``sparse_build(args, tau) ->
    (idx, w)`` (small n, tests). Memoized, so one builder gives one function (one program)."""

    def build(args, tau):
        return densify(*sparse_build(args, tau))

    return build
