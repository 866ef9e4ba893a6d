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

import numpy as np
import scipy.sparse as sp

__all__ = ["DENSE_SPECTRUM_MAX_N", "Spectrum", "neighbour_lists", "circulant_structure",
           "circulant_rebuild", "densify", "dense_builder"]

DENSE_SPECTRUM_MAX_N = 2048  # above this, spectra by DFT (circulant) or Lanczos, never dense
_CIRCULANT_TOL = 1e-12  # a W within this of its circulant rebuild has the DFT spectrum


# ---------------------------------------------------------------------------------------------
# spectra


class Spectrum:
    """The eigenvalues of a symmetric scipy CSR mixing matrix, each computed once on first use.

    Args:
      matrix: scipy CSR ``[n, n]`` (symmetric, so its eigenvalues are real and lie in [−1, 1]).
      grid: ``(rows, cols)`` arrangement of the workers, used to recognize circulant structure.
    """

    def __init__(self, matrix, grid: tuple):
        self.matrix = matrix
        self.grid = grid
        self.n = int(matrix.shape[0])

    @functools.cached_property
    def circulant(self):
        """All eigenvalues from the 2-D DFT of worker 0's row when W is circulant on its grid."""
        rows, cols = self.grid
        first = np.asarray(self.matrix.getrow(0).toarray()).reshape(rows, cols)
        rebuilt = circulant_rebuild(first, self.n)
        if abs(rebuilt - self.matrix).max() > _CIRCULANT_TOL:
            return None
        return np.sort(np.real(np.fft.fft2(first)).ravel())[::-1]

    @functools.cached_property
    def eigenvalues(self) -> np.ndarray:
        """Eigenvalues of W, sorted in decreasing order (λ_1 = 1 first). For n > 2048 only
        circulant matrices have them all (by DFT); use :attr:`extremes` otherwise."""
        if self.n <= DENSE_SPECTRUM_MAX_N:
            W = np.asarray(self.matrix.toarray(), dtype=np.float64)
            return np.sort(np.linalg.eigvalsh(W))[::-1]
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
        if self.n <= DENSE_SPECTRUM_MAX_N or self.circulant is not None:
            vals = self.eigenvalues
            return float(vals[1]), float(vals[-1])
        from scipy.sparse.linalg import eigsh

        top = eigsh(self.matrix, k=2, which="LA", return_eigenvectors=False, tol=1e-10)
        low = eigsh(self.matrix, k=1, which="SA", return_eigenvectors=False, tol=1e-10)
        return float(np.min(top)), float(low[0])


# ---------------------------------------------------------------------------------------------
# neighbour lists and circulant structure (host side, O(nnz))


def neighbour_lists(W):
    """ELL form of W (dense or scipy sparse): ``idx`` int32 ``[n, K]`` and ``w`` float64 ``[n, K]``
    (column 0 is the worker itself; rows with fewer neighbours are padded with the worker itself
    at weight 0). O(nnz) time and memory."""
    M = sp.csr_matrix(W)
    n = M.shape[0]
    coo = M.tocoo()
    off = coo.row != coo.col
    r, c, v = coo.row[off], coo.col[off], coo.data[off]
    order = np.lexsort((c, r))
    r, c, v = r[order], c[order], v[order]
    counts = np.bincount(r, minlength=n)
    K = 1 + (int(counts.max()) if r.size else 0)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    pos = np.arange(r.size) - starts[r] + 1
    idx = np.tile(np.arange(n, dtype=np.int32)[:, None], (1, K))
    w = np.zeros((n, K), np.float64)  # the runner casts to the run's float dtype
    w[:, 0] = M.diagonal()
    idx[r, pos] = c
    w[r, pos] = v
    return idx, w


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
    if rows * cols != n:
        return None
    first = np.asarray(M.getrow(0).toarray()).reshape(rows, cols)
    if abs(circulant_rebuild(first, n) - M).max() > 0:
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


@functools.lru_cache(maxsize=None)
def dense_builder(sparse_build):
    """The dense builder ``(args, tau) -> W_t`` of a time-varying ``sparse_build(args, tau) ->
    (idx, w)`` (small n, tests). Memoized, so one builder gives one function (one program)."""

    def build(args, tau):
        return densify(*sparse_build(args, tau))

    return build
