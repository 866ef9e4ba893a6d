"""Optimised symmetric weights for an undirected graph (docs/reference/topologies.md#best_constant,
docs/reference/topologies.md#fastest). Their entries may be negative; they are still symmetric,
doubly stochastic and mix (``lam < 1``), which is all that every undirected algorithm needs.

* :func:`best_constant`: ``W = I − α L`` with ``α = 2 / (λ_1(L) + λ_{n−1}(L))`` (Xiao & Boyd
  2004), the constant edge weight that minimises ``||W − J||_2``; ``L`` is the graph Laplacian
  and ``λ_{n−1}`` its smallest nonzero eigenvalue (dense eigendecomposition: n up to 2048).
* :func:`fastest`: the fastest-mixing symmetric weights on the graph (Boyd, Diaconis & Xiao
  2004): minimise ``||W − J||_2`` over symmetric W with the graph's sparsity and ``W 1 = 1``, a
  semidefinite program solved with cvxpy (``pip install decsim[weights]``), for graphs of up to
  ``FASTEST_MAX_N`` nodes.

Both take the edge lists ``(a, b)`` (distinct, ``a < b``) of an ``n``-node graph and return a
scipy CSR matrix; generators reach them through ``weights="best_constant"`` or
``weights="fastest"``.

Example:
    >>> import decsim as ds
    >>> ring = ds.topology.ring(8, weights="best_constant")
    >>> round(ring.lam, 4), round(ds.topology.ring(8).lam, 4)   # Metropolis: 1/3 per edge
    (0.7445, 0.8047)
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

__all__ = ["best_constant", "fastest", "OPTIMISED", "FASTEST_MAX_N", "BEST_CONSTANT_MAX_N"]

FASTEST_MAX_N = 300  # the SDP has one variable per edge and an n x n matrix constraint
BEST_CONSTANT_MAX_N = 2048  # dense Laplacian spectrum


def _laplacian(n: int, a, b):
    adj = sp.coo_matrix((np.ones(2 * a.size), (np.concatenate([a, b]), np.concatenate([b, a]))),
                        shape=(n, n)).tocsr()
    return sp.diags(np.asarray(adj.sum(axis=1)).ravel()) - adj


def best_constant(n: int, a, b):
    """``I − α L`` with the best constant edge weight ``α = 2 / (λ_1(L) + λ_{n−1}(L))``."""
    if n == 1:
        return sp.identity(1, format="csr")
    if n > BEST_CONSTANT_MAX_N:
        raise ValueError(f"weights='best_constant' needs the Laplacian spectrum of a {n}-node "
                         f"graph (dense, at most n = {BEST_CONSTANT_MAX_N}); use "
                         "weights='metropolis'.")
    L = _laplacian(n, a, b)
    mu = np.sort(np.linalg.eigvalsh(L.toarray()))
    if mu[1] <= 1e-12:
        raise ValueError("weights='best_constant' needs a connected graph (its Laplacian has a "
                         "second eigenvalue 0). Connect the graph.")
    alpha = 2.0 / (mu[-1] + mu[1])
    return (sp.identity(n, format="csr") - alpha * L).tocsr()


def _import_cvxpy():
    try:
        import cvxpy
    except ImportError as err:
        raise ValueError("weights='fastest' solves a semidefinite program with cvxpy, which is "
                         "not installed; pip install 'decsim[weights]' (or cvxpy), or use "
                         "weights='best_constant'.") from err
    return cvxpy


def fastest(n: int, a, b):
    """Fastest-mixing symmetric weights: ``min ||W − J||_2`` over symmetric W with the sparsity
    of the graph (plus the diagonal) and ``W 1 = 1``; an SDP in cvxpy (SCS or Clarabel)."""
    if n == 1:
        return sp.identity(1, format="csr")
    if n > FASTEST_MAX_N:
        raise ValueError(f"weights='fastest' solves an SDP with an {n} x {n} matrix variable; it "
                         f"is meant for graphs of up to {FASTEST_MAX_N} nodes. Use "
                         "weights='best_constant' for larger graphs.")
    cp = _import_cvxpy()
    # W = I − Σ_e w_e (e_a − e_b)(e_a − e_b)^T: symmetric, W 1 = 1 and the sparsity by
    # construction; one variable per edge
    w = cp.Variable(a.size)
    inc = sp.coo_matrix((np.concatenate([np.ones(a.size), -np.ones(a.size)]),
                         (np.concatenate([a, b]), np.concatenate([np.arange(a.size)] * 2))),
                        shape=(n, a.size)).toarray()
    W = np.eye(n) - inc @ cp.diag(w) @ inc.T
    J = np.full((n, n), 1.0 / n)
    problem = cp.Problem(cp.Minimize(cp.sigma_max(W - J)))
    problem.solve()
    if problem.status not in ("optimal", "optimal_inaccurate") or w.value is None:
        raise ValueError(f"weights='fastest': the SDP solver ended with status {problem.status!r}; "
                         "use weights='best_constant'.")
    values = np.asarray(w.value, np.float64)
    off = sp.coo_matrix((np.concatenate([values, values]),
                         (np.concatenate([a, b]), np.concatenate([b, a]))), shape=(n, n)).tocsr()
    return (off + sp.diags(1.0 - np.asarray(off.sum(axis=1)).ravel())).tocsr()


OPTIMISED = {"best_constant": best_constant, "fastest": fastest}
