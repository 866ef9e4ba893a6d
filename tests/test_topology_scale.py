"""Topologies of 10⁵ workers: closed-form spectra, the sparse eigensolver, memory bounds, budgets.

The closed forms are checked against dense eigendecompositions at small n (every generator that
has one, every weight rule, the degenerate sizes); the sparse eigensolver against dense ones on
both of its paths; the large graphs in a subprocess (with an address-space limit, so a quadratic
regression fails instead of exhausting the machine) whose traced peak memory must stay far below
what one dense n x n matrix would take.
"""

import json
import math
import re
import subprocess
import sys
import textwrap

import networkx as nx
import numpy as np
import pytest

from decsim import topology as T
from decsim.topology import structure as S

RULES = ("metropolis", "uniform", "lazy")


def dense_eigenvalues(topo):
    return np.sort(np.linalg.eigvalsh(topo.W))[::-1]


# ---------------------------------------------------------------------------------------------
# closed forms equal dense eigenvalues


CLOSED = [
    *[("ring", (n,)) for n in (1, 2, 3, 4, 7, 10)],
    *[("torus", rc) for rc in ((1, 1), (1, 5), (2, 2), (2, 3), (2, 4), (3, 3), (3, 5), (4, 6))],
    *[("complete", (n,)) for n in (1, 2, 3, 6, 9)],
    *[("star", (n,)) for n in (1, 2, 3, 4, 9)],
    *[("hypercube", (n,)) for n in (1, 2, 4, 8, 32)],
    *[("exponential", (n,)) for n in (1, 2, 3, 5, 8, 12, 17)],
    # grids: every rule on paths and on the 2 x 2 grid (a 4-cycle), uniform weights on any grid
    *[("grid", rc) for rc in ((1, 1), (1, 2), (1, 3), (6, 1), (1, 9), (2, 2))],
]


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("name, size", CLOSED)
def test_closed_form_spectrum_equals_dense(name, size, rule):
    topo = getattr(T, name)(*size, weights=rule)
    assert topo.closed_spectrum is not None, topo.name
    np.testing.assert_allclose(topo.eigenvalues, dense_eigenvalues(topo), rtol=0, atol=1e-12)
    assert topo.eigenvalues[0] == pytest.approx(1.0, abs=1e-15)


@pytest.mark.parametrize("rows, cols", [(2, 3), (3, 2), (3, 3), (3, 4), (4, 7), (5, 5)])
def test_uniform_grid_spectrum_is_a_kronecker_sum(rows, cols):
    topo = T.grid(rows, cols, weights="uniform")
    assert topo.closed_spectrum is not None
    np.testing.assert_allclose(topo.eigenvalues, dense_eigenvalues(topo), rtol=0, atol=1e-12)


@pytest.mark.parametrize("rule", ["metropolis", "lazy"])
@pytest.mark.parametrize("rows, cols", [(2, 3), (3, 3), (3, 4), (5, 5)])
def test_metropolis_grid_is_no_kronecker_sum(rows, cols, rule):
    """Corner, border and inner edges of a grid get different Metropolis weights, so W is not
    I - c (L_rows ⊕ L_cols) for any c: the generator leaves it to the sparse eigensolver."""
    topo = T.grid(rows, cols, weights=rule)
    assert topo.closed_spectrum is None
    weights = np.unique(np.round(topo.W[~np.eye(topo.n, dtype=bool) & (topo.W > 0)], 12))
    assert len(weights) > 1
    path = [2 - 2 * np.cos(np.pi * np.arange(m) / m) for m in (rows, cols)]
    mu = np.sort((path[0][:, None] + path[1][None, :]).ravel())
    dense = np.sort(np.linalg.eigvalsh(topo.W))
    for c in (1 / 4, 1 / 5, 1 / 3):  # no constant edge weight reproduces the spectrum
        kron = np.sort(1 - c * mu)
        kron = 0.5 * (1 + kron) if rule == "lazy" else kron
        assert np.max(np.abs(kron - dense)) > 1e-3


def test_closed_forms_by_hand():
    n = 100000
    star = T.star(n)
    assert (star.lambda_2, star.lambda_min) == (pytest.approx(1 - 1 / n, abs=1e-15), 0.0)
    ring = T.ring(n)
    assert ring.lambda_2 == pytest.approx((1 + 2 * np.cos(2 * np.pi / n)) / 3, abs=1e-15)
    cube = T.hypercube(2**17)
    assert cube.lambda_2 == pytest.approx(1 - 2 / 18, abs=1e-15)
    assert cube.lambda_min == pytest.approx(1 - 34 / 18, abs=1e-15)
    complete = T.complete(1000, weights="lazy")
    assert (complete.lambda_2, complete.lambda_min) == (pytest.approx(0.5), pytest.approx(0.5))


# ---------------------------------------------------------------------------------------------
# the sparse eigensolver (used above n = 2048 without a closed form) against dense eigenvalues


def sparse_cases():
    ladder = T.grid(2, 40)
    yield "grid(6x9)", T.grid(6, 9)
    yield "grid(5x5), lazy", T.grid(5, 5, weights="lazy")
    yield "ladder", ladder
    yield "random_geometric", T.random_geometric(80, 0.25, seed=3)
    yield "barbell", T.from_networkx(nx.barbell_graph(12, 4))
    yield "erdos_renyi", T.erdos_renyi(60, 0.2, seed=1, weights="uniform")
    # a matrix whose smallest eigenvalue is near -1 (little weight on the diagonal)
    A = nx.to_numpy_array(nx.cycle_graph(30))
    yield "near_periodic", T.from_matrix(0.499 * A + 0.002 * np.eye(30))


@pytest.mark.parametrize("path", ["shift_invert", "bisection", "lanczos"])
@pytest.mark.parametrize("label, topo", list(sparse_cases()))
def test_sparse_extremes_equal_dense(label, topo, path, monkeypatch):
    if path == "lanczos":  # as for a graph of large envelope (an expander)
        monkeypatch.setattr(S, "SHIFT_INVERT_MAX_PROFILE", -1)
    if path == "bisection":  # as when the bottom of the spectrum is too dense for Lanczos
        real = S._largest_of_inverse

        def no_bottom(lu, n, project, maxiter=100):
            if not project:
                raise no_convergence()
            return real(lu, n, project, maxiter)

        monkeypatch.setattr(S, "_largest_of_inverse", no_bottom)
    eig = dense_eigenvalues(topo)
    lambda_2, lambda_min = S.sparse_extremes(topo.matrix)
    assert lambda_2 == pytest.approx(eig[1], abs=1e-9), label
    assert lambda_min == pytest.approx(eig[-1], abs=1e-9), label


def no_convergence():
    from scipy.sparse.linalg import ArpackNoConvergence

    return ArpackNoConvergence("test", [], [])


def test_sparse_extremes_choose_by_envelope():
    assert S.envelope(T.ring(50).matrix) < 200  # a band of width 2 in Cuthill-McKee order
    full = S.envelope(T.complete(40).matrix)
    assert full == 40 * 39 // 2


# ---------------------------------------------------------------------------------------------
# budgets and guards


@pytest.mark.parametrize("build, message", [
    (lambda: T.complete(100000), "complete(100000) would have 5e+09 edges, above the budget of "
                                 "MAX_EDGES = 1e+07 (its W alone would take about 120 GB); use "
                                 "complete(n) with n <= 4472, or a sparse graph"),
    (lambda: T.complete(4473), "complete(4473) would have 1e+07 edges"),
    (lambda: T.random_matching(5000), "complete(5000) would have 1.25e+07 edges"),
    (lambda: T.erdos_renyi(100000, 0.5), "erdos_renyi(100000, p=0.5) would have 2.5e+09 edges, "
                                         "above the budget"),
    (lambda: T.random_geometric(100000, 0.3), "random_geometric(100000, radius=0.3) would have"),
])
def test_edge_budget(build, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        build()
    assert T.MAX_EDGES == 10**7 and 4472 * 4471 // 2 <= T.MAX_EDGES < 4473 * 4472 // 2


def test_hub_graphs_never_take_quadratic_memory():
    star = T.star(100000)
    # a circulant check rebuilds W from worker 0's row: the hub's row would rebuild n² entries
    assert S.circulant_first_row(star.matrix, star.grid_shape) is None
    assert S.circulant_structure(star.matrix, star.grid_shape) is None
    # the padded neighbour lists of the sparse gossip path would be n x n: refused, not allocated
    with pytest.raises(ValueError, match=re.escape("would hold n x K = 100000 x 100000")):
        S.neighbour_lists(star.matrix)
    from decsim import gossip

    with pytest.raises(ValueError, match="graph of bounded degree"):
        gossip.plan(star)
    idx, _ = S.neighbour_lists(T.star(50).matrix)  # small hubs are fine
    assert idx.shape == (50, 50)


def test_periodic_check_is_sparse():
    ring = nx.to_numpy_array(nx.cycle_graph(6)) / 2  # bipartite, zero diagonal: periodic
    with pytest.raises(ValueError, match="periodic"):
        T.from_matrix(ring)
    odd = nx.to_numpy_array(nx.cycle_graph(5)) / 2  # an odd cycle mixes
    assert T.from_matrix(odd).spectral_gap > 0


def ring_with_negative_weights(n, edge, diagonal):
    """Metropolis ring of n (weights 1/3) with edge (0, 1) set to ``edge`` and W[0, 0], W[1, 1]
    to ``diagonal`` (the caller keeps the rows summing to 1)."""
    W = T.ring(n).matrix.tolil()
    W[0, 1] = W[1, 0] = edge
    W[0, 0] = W[1, 1] = diagonal
    return W.tocsr()


# Edge (0, 1) at -0.01: the path around the rest of the ring (n - 1 edges of weight 1/3) has
# resistance 3 (n - 1) > 100, so the signed Laplacian I - W has a negative eigenvalue: W has
# one above 1. Diagonal -1/2 and edge 7/6: (e_0 - e_1) / sqrt(2) has Rayleigh quotient -5/3, so
# W has one below -1. Both are connected with a positive diagonal elsewhere, so only the
# spectrum shows that they do not mix; edge -1e-5 (resistance times weight about 0.02) mixes.
NOT_MIXING = {"above 1": (-0.01, 2 / 3 + 0.01), "below -1": (7 / 6, -0.5)}


@pytest.mark.parametrize("case", sorted(NOT_MIXING))
def test_large_W_with_negative_entries_that_does_not_mix_is_refused(case):
    n = S.DENSE_SPECTRUM_MAX_N + 52  # above the dense check: the sparse eigensolver decides
    W = ring_with_negative_weights(n, *NOT_MIXING[case])
    assert np.allclose(np.asarray(W.sum(axis=1)).ravel(), 1.0) and W.min() < 0
    with pytest.raises(ValueError, match="does not mix: spectral gap .*negative entries"):
        T.from_matrix(W)
    mixing = T.from_matrix(ring_with_negative_weights(n, -1e-5, 2 / 3 + 1e-5))
    assert mixing.matrix.min() < 0 and 0.0 < mixing.spectral_gap < T.ring(n).spectral_gap


def test_large_W_with_negative_entries_is_refused_when_the_eigensolver_fails(monkeypatch):
    from decsim.topology import graphs

    def fails(M):
        raise no_convergence()

    monkeypatch.setattr(graphs, "sparse_extremes", fails)
    W = ring_with_negative_weights(S.DENSE_SPECTRUM_MAX_N + 52, -1e-5, 2 / 3 + 1e-5)
    with pytest.raises(ValueError, match="negative entries.*did not converge.*nonnegative"):
        T.from_matrix(W)
    assert T.ring(S.DENSE_SPECTRUM_MAX_N + 52).n > 0  # nonnegative: no eigensolver needed


@pytest.mark.parametrize("edge, mixes", [(-0.01, False), (-1e-4, True)])
def test_sparse_mixing_check_agrees_with_the_dense_spectrum(edge, mixes, monkeypatch):
    """With the dense threshold lowered to 16, a ring of 40 goes through the sparse check: its
    verdict and its reported gap are those of the dense eigendecomposition of W - J."""
    from decsim.topology import graphs

    monkeypatch.setattr(graphs, "DENSE_SPECTRUM_MAX_N", 16)
    monkeypatch.setattr(S, "DENSE_SPECTRUM_MAX_N", 16)
    n = 40
    W = ring_with_negative_weights(n, edge, 2 / 3 - edge)
    gap = 1.0 - np.max(np.abs(np.linalg.eigvalsh(W.toarray() - 1.0 / n)))
    assert (gap > 0) == mixes
    if mixes:
        assert T.from_matrix(W).spectral_gap == pytest.approx(gap, abs=1e-9)
    else:
        with pytest.raises(ValueError, match=re.escape(f"1 - ||W - J||_2 = {gap:.3g} (<=")):
            T.from_matrix(W)


def test_the_spectrum_the_check_computed_is_not_computed_again(monkeypatch):
    """Validating W computes its spectrum (densely up to n = 2048; by the sparse eigensolver
    above, for W with negative entries); the topology's spectral properties reuse it."""
    from decsim.topology import graphs

    calls = {"dense": 0, "sparse": 0}

    def counted(name, fn):
        def wrapper(M):
            calls[name] += 1
            return fn(M)
        return wrapper

    monkeypatch.setattr(graphs, "dense_eigenvalues", counted("dense", S.dense_eigenvalues))
    monkeypatch.setattr(S, "dense_eigenvalues", counted("dense", S.dense_eigenvalues))
    monkeypatch.setattr(graphs, "sparse_extremes", counted("sparse", S.sparse_extremes))
    monkeypatch.setattr(S, "sparse_extremes", counted("sparse", S.sparse_extremes))
    small = T.erdos_renyi(40, 0.2, seed=3)  # no closed form: a dense eigendecomposition
    want = np.sort(np.linalg.eigvalsh(small.matrix.toarray()))[::-1]
    assert small.lam == max(abs(want[1]), abs(want[-1])) and calls["dense"] == 1
    np.testing.assert_array_equal(small.eigenvalues, want)
    assert calls["dense"] == 1
    large = T.from_matrix(ring_with_negative_weights(S.DENSE_SPECTRUM_MAX_N + 52, -1e-5,
                                                     2 / 3 + 1e-5))
    assert 0.0 < large.spectral_gap < 1.0 and large.lambda_min < 0.0
    assert calls == {"dense": 1, "sparse": 1}


# ---------------------------------------------------------------------------------------------
# 10⁵ workers, in a subprocess with an address-space limit


SCRIPT = textwrap.dedent("""
    import json, resource, sys, time, tracemalloc
    resource.setrlimit(resource.RLIMIT_AS, (8 << 30, 8 << 30))
    from decsim import topology as T

    out = {}
    for expr in sys.argv[1:]:
        tracemalloc.start()
        start = time.perf_counter()
        topo = eval(expr)
        s = topo.summary()
        seconds = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        out[expr] = dict(peak=peak, seconds=seconds, n=s["n"], edges=s["edges"],
                         lambda_2=s["lambda_2"], lambda_min=s["lambda_min"],
                         degree_max=s["degree_max"])
        del topo
    print(json.dumps(out))
""")


def run_large(*exprs):
    proc = subprocess.run([sys.executable, "-c", SCRIPT, *exprs], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_large_structured_graphs_in_bounded_memory():
    n = 100000
    got = run_large("T.star(100000)", "T.ring(100000)", "T.torus(316, 316)",
                    "T.grid(316, 316, weights='uniform')", "T.hypercube(2**17)",
                    "T.exponential(100000)")
    star = got["T.star(100000)"]
    assert (star["n"], star["edges"], star["degree_max"]) == (n, n - 1, n - 1)
    assert star["lambda_2"] == pytest.approx(1 - 1 / n, abs=1e-15) and star["lambda_min"] == 0.0
    assert star["peak"] < 100e6  # one dense n x n float64 matrix: 80 GB
    ring = got["T.ring(100000)"]
    assert ring["lambda_2"] == pytest.approx((1 + 2 * math.cos(2 * math.pi / n)) / 3, abs=1e-15)
    torus = got["T.torus(316, 316)"]
    assert torus["lambda_2"] == pytest.approx((1 + 2 + 2 * math.cos(2 * math.pi / 316)) / 5,
                                              abs=1e-15)
    grid = got["T.grid(316, 316, weights='uniform')"]
    assert grid["lambda_2"] == pytest.approx(1 - (2 - 2 * math.cos(math.pi / 316)) / 5, abs=1e-15)
    assert got["T.hypercube(2**17)"]["lambda_2"] == pytest.approx(1 - 2 / 18, abs=1e-15)
    for expr, facts in got.items():
        # O(edges): a few hundred bytes per edge at most (the exponential graph has 1.6e6)
        assert facts["peak"] < 400e6 and facts["peak"] < 200 * (facts["edges"] + n), expr


def test_metropolis_grid_200x200_by_sparse_eigensolver():
    """No closed form: the spectral gap of grid(200, 200) (every run needs it) comes from
    shift-invert Lanczos on sparse LUs (it took minutes by plain Lanczos)."""
    got = run_large("T.grid(200, 200)", "T.grid(2, 50000)")
    grid = got["T.grid(200, 200)"]
    # reference: plain Lanczos to tol 1e-10 (the former path), and the dense grid(40, 40) trend
    assert grid["lambda_2"] == pytest.approx(0.99995052987334, abs=1e-11)
    assert grid["lambda_min"] == pytest.approx(-0.59990228543168, abs=1e-11)
    ladder = got["T.grid(2, 50000)"]  # a gap of 1e-9, and a dense bottom of the spectrum
    assert 0 < 1 - ladder["lambda_2"] < 2e-9
    assert ladder["lambda_min"] == pytest.approx(-0.5, abs=1e-8)
    for expr, facts in got.items():
        assert facts["peak"] < 400e6, expr
