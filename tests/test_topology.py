"""Tests of decsim.topology against docs/reference/topologies.md.

Reference computations (weight rules, norms, spectra) are done independently with numpy; the
expected graph of every generator is built independently with networkx.
"""

import re

import networkx as nx
import numpy as np
import pytest

import decsim as ds
from decsim import topology as T

RULES = ("metropolis", "uniform", "lazy")


# ---------------------------------------------------------------------------------------------
# independent references


def adjacency(G: nx.Graph) -> np.ndarray:
    """0/1 adjacency matrix of a graph whose nodes are 0..n-1 (self-loops dropped)."""
    n = G.number_of_nodes()
    A = np.zeros((n, n))
    for u, v in G.edges():
        if u != v:
            A[u, v] = A[v, u] = 1.0
    return A


def reference_W(A: np.ndarray, rule: str) -> np.ndarray:
    """The weight rules of docs/reference/topologies.md, written directly from their formulas."""
    A = np.asarray(A, dtype=np.float64)
    n = A.shape[0]
    deg = A.sum(axis=1)
    if rule == "uniform":
        W = A / (1.0 + deg.max())
    else:  # metropolis, and the base of lazy
        W = A / (1.0 + np.maximum.outer(deg, deg))
    W = W + np.diag(1.0 - W.sum(axis=1))
    if rule == "lazy":
        W = 0.5 * (np.eye(n) + W)
    return W


def lollipop() -> nx.Graph:
    """Small irregular graph: hub 0 linked to 1, 2, 3, and a tail 3 - 4.
    Degrees: 0:3, 1:1, 2:1, 3:2, 4:1."""
    return nx.Graph([(0, 1), (0, 2), (0, 3), (3, 4)])


def torus_graph(rows, cols, periodic):
    G = nx.grid_2d_graph(rows, cols, periodic=periodic)
    return nx.relabel_nodes(G, {(i, j): i * cols + j for i, j in G.nodes()})


def hypercube_graph(n):
    k = n.bit_length() - 1
    G = nx.hypercube_graph(k)
    return nx.relabel_nodes(
        G, {b: sum(int(bit) << j for j, bit in enumerate(b)) for b in G.nodes()}
    )


def social_graph():
    return nx.convert_node_labels_to_integers(nx.davis_southern_women_graph(), ordering="default")


# ---------------------------------------------------------------------------------------------
# the registry: every generator x every weight rule
#
# name -> (builder(weights) -> Topology, expected_graph() -> nx.Graph or None). ``None`` means the
# graph is random; it is then read from the topology and checked for consistency with W.

REGISTRY = {
    "ring": (lambda w: T.ring(8, weights=w), lambda: nx.cycle_graph(8)),
    "torus": (lambda w: T.torus(3, 4, weights=w), lambda: torus_graph(3, 4, True)),
    "grid": (lambda w: T.grid(3, 4, weights=w), lambda: torus_graph(3, 4, False)),
    "complete": (lambda w: T.complete(6, weights=w), lambda: nx.complete_graph(6)),
    "star": (lambda w: T.star(7, weights=w), lambda: nx.star_graph(6)),
    "hypercube": (lambda w: T.hypercube(16, weights=w), lambda: hypercube_graph(16)),
    "exponential": (
        lambda w: T.exponential(12, weights=w),
        lambda: nx.circulant_graph(12, [1, 2, 4, 8]),
    ),
    "erdos_renyi": (lambda w: T.erdos_renyi(12, 0.4, seed=1, weights=w), None),
    "random_geometric": (lambda w: T.random_geometric(12, 0.5, seed=2, weights=w), None),
    "social": (lambda w: T.social(weights=w), social_graph),
    "from_networkx": (
        lambda w: T.from_networkx(nx.karate_club_graph(), weights=w),
        nx.karate_club_graph,
    ),
    "from_matrix": (lambda w: T.from_matrix(reference_W(adjacency(lollipop()), w)), lollipop),
}


def test_registry_covers_every_generator():
    assert set(T.GENERATORS) | {"from_networkx", "from_matrix"} == set(REGISTRY)


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_registry_contract(name, rule):
    build, expected_graph = REGISTRY[name]
    topo = build(rule)
    W = topo.W
    n = W.shape[0]
    G = expected_graph() if expected_graph is not None else topo.nx_graph
    assert isinstance(topo, T.Topology)
    assert W.dtype == np.float64
    assert topo.n == n == G.number_of_nodes()

    # structure: the same edges and degrees as the networkx graph
    A = adjacency(G)
    assert {frozenset(e) for e in topo.nx_graph.edges()} == {frozenset(e) for e in G.edges()}
    np.testing.assert_array_equal(topo.degrees, [G.degree(i) for i in range(n)])
    np.testing.assert_array_equal(topo.degrees, A.sum(axis=1).astype(int))
    off = W - np.diag(np.diag(W))
    np.testing.assert_array_equal(off > 0, A > 0)  # W is supported exactly on the edges
    if expected_graph is None:
        assert nx.is_connected(G)

    # the defining properties of a mixing matrix
    np.testing.assert_allclose(W, W.T, rtol=0, atol=1e-15)
    assert W.min() >= 0.0
    np.testing.assert_allclose(W.sum(axis=1), np.ones(n), rtol=0, atol=1e-12)
    np.testing.assert_allclose(W.sum(axis=0), np.ones(n), rtol=0, atol=1e-12)

    # the weights follow the rule's formula
    np.testing.assert_allclose(W, reference_W(A, rule), rtol=0, atol=1e-12)

    # spectra, computed independently
    J = np.full((n, n), 1.0 / n)
    lam = np.linalg.norm(W - J, 2)
    beta = np.linalg.norm(np.eye(n) - W, 2)
    assert topo.lam == pytest.approx(lam, rel=1e-10, abs=1e-12)
    assert topo.spectral_gap == pytest.approx(1.0 - lam, rel=1e-10, abs=1e-12)
    assert 0.0 < topo.spectral_gap <= 1.0
    assert topo.beta == pytest.approx(beta, rel=1e-10, abs=1e-12)
    assert topo.p == pytest.approx(1.0 - lam**2, rel=1e-10, abs=1e-12)
    eig = np.sort(np.linalg.eigvalsh(W))[::-1]
    np.testing.assert_allclose(topo.eigenvalues, eig, rtol=0, atol=1e-12)
    assert eig[0] == pytest.approx(1.0, abs=1e-12)
    assert topo.lambda_2 == pytest.approx(eig[1], abs=1e-12)
    assert topo.lambda_min == pytest.approx(eig[-1], abs=1e-12)
    assert topo.lam == pytest.approx(max(abs(eig[1]), abs(eig[-1])), abs=1e-12)
    if rule == "lazy":
        assert topo.lambda_min >= -1e-12

    summary = topo.summary()
    assert summary["n"] == n and summary["edges"] == G.number_of_edges()
    assert summary["spectral_gap"] == pytest.approx(topo.spectral_gap, abs=0)


# ---------------------------------------------------------------------------------------------
# reference spectra of docs/reference/topologies.md (uniform weights)


@pytest.mark.parametrize(
    "n, lambda_2, lambda_n, gap, beta",
    [
        (8, 0.8047, -1.0 / 3.0, 0.1953, 1.3333),
        (9, None, None, 0.1560, None),
        (16, None, None, 0.0507, None),
    ],
)
def test_ring_reference_spectra(n, lambda_2, lambda_n, gap, beta):
    topo = T.ring(n, weights="uniform")
    np.testing.assert_allclose(topo.W[0, [n - 1, 0, 1]], [1 / 3, 1 / 3, 1 / 3], rtol=0, atol=1e-15)
    assert topo.spectral_gap == pytest.approx(gap, abs=1e-4)
    if lambda_2 is not None:
        assert topo.lambda_2 == pytest.approx(lambda_2, abs=1e-4)
        assert topo.lambda_min == pytest.approx(lambda_n, abs=1e-4)
        assert topo.beta == pytest.approx(beta, abs=1e-4)
    # closed form of a circulant: (1 + 2 cos(2 pi k / n)) / 3
    closed = np.sort((1 + 2 * np.cos(2 * np.pi * np.arange(n) / n)) / 3)[::-1]
    np.testing.assert_allclose(topo.eigenvalues, closed, rtol=0, atol=1e-12)


def test_torus_5x5_reference_spectrum():
    topo = T.torus(5, 5, weights="uniform")
    off = topo.W - np.diag(np.diag(topo.W))
    np.testing.assert_allclose(off[off > 0], 0.2, rtol=0, atol=1e-15)
    assert topo.lambda_2 == pytest.approx(0.7236, abs=1e-4)
    assert topo.lambda_min == pytest.approx(-0.4472, abs=1e-4)
    assert topo.lam == pytest.approx(0.7236, abs=1e-4)


# ---------------------------------------------------------------------------------------------
# weight rules on a small irregular graph, by hand


def test_metropolis_weights_by_hand():
    W = T.from_networkx(lollipop(), weights="metropolis").W
    expected = np.array(
        [
            [1 / 4, 1 / 4, 1 / 4, 1 / 4, 0],
            [1 / 4, 3 / 4, 0, 0, 0],
            [1 / 4, 0, 3 / 4, 0, 0],
            [1 / 4, 0, 0, 5 / 12, 1 / 3],
            [0, 0, 0, 1 / 3, 2 / 3],
        ]
    )
    np.testing.assert_allclose(W, expected, rtol=0, atol=1e-15)


def test_uniform_weights_by_hand():
    W = T.from_networkx(lollipop(), weights="uniform").W  # max degree 3: every edge 1/4
    expected = np.array(
        [
            [1 / 4, 1 / 4, 1 / 4, 1 / 4, 0],
            [1 / 4, 3 / 4, 0, 0, 0],
            [1 / 4, 0, 3 / 4, 0, 0],
            [1 / 4, 0, 0, 1 / 2, 1 / 4],
            [0, 0, 0, 1 / 4, 3 / 4],
        ]
    )
    np.testing.assert_allclose(W, expected, rtol=0, atol=1e-15)


def test_lazy_is_half_identity_plus_metropolis():
    G = lollipop()
    Wm = T.from_networkx(G, weights="metropolis").W
    lazy = T.from_networkx(G, weights="lazy")
    np.testing.assert_allclose(lazy.W, 0.5 * (np.eye(5) + Wm), rtol=0, atol=1e-15)
    assert lazy.lambda_min >= 0.0
    # on a bipartite graph metropolis has negative eigenvalues; lazy moves them to >= 0
    assert T.ring(8, weights="lazy").lambda_min >= -1e-12
    assert T.ring(8, weights="metropolis").lambda_min == pytest.approx(-1 / 3, abs=1e-12)
    # the star's metropolis W = I - L / n: its smallest eigenvalue is 1 - n / n = 0 exactly
    assert T.star(5, weights="metropolis").lambda_min == 0.0


def test_weight_matrix_matches_topology():
    G = lollipop()
    for rule in RULES:
        np.testing.assert_array_equal(T.weight_matrix(G, rule), T.from_networkx(G, weights=rule).W)


@pytest.mark.parametrize("n", [2, 3, 7])
def test_complete_metropolis_is_exact_averaging(n):
    topo = T.complete(n)  # metropolis is the default
    np.testing.assert_allclose(topo.W, np.full((n, n), 1.0 / n), rtol=0, atol=1e-15)
    assert topo.lam == pytest.approx(0.0, abs=1e-12)
    assert topo.spectral_gap == pytest.approx(1.0, abs=1e-12)


def test_from_networkx_relabels_nodes_in_node_order():
    G = nx.Graph()
    G.add_nodes_from(["c", "a", "b"])
    G.add_edges_from([("c", "a"), ("a", "b")])  # path c - a - b: "a" (index 1) is the middle
    topo = T.from_networkx(G, name="abc")
    np.testing.assert_array_equal(topo.degrees, [1, 2, 1])
    assert topo.name == "abc"


def test_default_weights_are_metropolis():
    np.testing.assert_array_equal(T.star(5).W, T.star(5, weights="metropolis").W)
    np.testing.assert_array_equal(
        T.grid(2, 3).W, reference_W(adjacency(torus_graph(2, 3, False)), "metropolis")
    )


# ---------------------------------------------------------------------------------------------
# validation errors


@pytest.mark.parametrize(
    "W, message",
    [
        (np.full((2, 3), 1 / 3), "must be a square"),
        (np.array([0.5, 0.5]), "must be a square"),
        (np.array([[0.5, 0.5, 0.0], [0.25, 0.5, 0.25], [0.25, 0.0, 0.75]]), "is not symmetric"),
        (np.array([[1.5, -0.5], [-0.5, 1.5]]), "does not mix.*negative entries"),
        (np.array([[0.5, 0.4], [0.4, 0.5]]), "rows of W must sum to 1"),
        (np.kron(np.eye(2), np.full((2, 2), 0.5)), "does not mix.*disconnected"),
        (np.array([[0.0, 1.0], [1.0, 0.0]]), "does not mix.*periodic"),
        (np.array([[np.nan, 0.5], [0.5, 0.5]]), "non-finite"),
    ],
)
def test_from_matrix_rejects(W, message):
    with pytest.raises(ValueError, match=message):
        T.from_matrix(W)


def test_from_matrix_row_sum_tolerance():
    W = np.full((3, 3), 1 / 3)
    ok = W + 1e-8 * np.eye(3)
    np.testing.assert_array_equal(T.from_matrix(ok).W, ok)  # within 1e-6
    with pytest.raises(ValueError, match="row 0 sums to"):
        T.from_matrix(W + np.diag([1e-4, 0, 0]))


def test_from_matrix_copies_and_freezes():
    W = np.full((3, 3), 1 / 3)
    topo = T.from_matrix(W, name="avg3")
    W[0, 0] = 5.0
    assert topo.W[0, 0] == pytest.approx(1 / 3, abs=1e-15)
    assert topo.name == "avg3"
    assert not topo.W.flags.writeable


def test_hypercube_needs_power_of_two():
    with pytest.raises(ValueError, match=r"power of two; got n=6\. Use n=4 or n=8"):
        T.hypercube(6)


@pytest.mark.parametrize(
    "build, message",
    [
        (
            lambda: T.ring(8, weights="metropolis_hastings"),
            "unknown weight rule 'metropolis_hastings'; weights must be one of 'metropolis', "
            "'uniform', "
            "'lazy', 'best_constant', 'fastest'. Did you mean 'metropolis'?",
        ),
        (
            lambda: T.complete(4, weights="Uniform"),
            "unknown weight rule 'Uniform'.*Did you mean 'uniform'?",
        ),
        (
            lambda: T.from_networkx(nx.path_graph(3), weights="max_degree"),
            "unknown weight rule 'max_degree'",
        ),
        (lambda: T.weight_matrix(nx.path_graph(3), "bogus"), "weights must be one of 'metropolis'"),
        (lambda: T.star(6, weights="lazzy"), "Did you mean 'lazy'?"),
        (lambda: T.torus(3, 4, weights=None), "unknown weight rule None"),
    ],
)
def test_unknown_weight_rule(build, message):
    with pytest.raises(ValueError, match=re.escape(message) if "*" not in message else message):
        build()


def test_from_networkx_disconnected():
    G = nx.disjoint_union(nx.path_graph(3), nx.path_graph(2))
    with pytest.raises(ValueError, match=r"disconnected \(2 components\)"):
        T.from_networkx(G)


def test_from_networkx_rejects_non_graph_and_empty():
    with pytest.raises(ValueError, match="must be a networkx Graph"):
        T.from_networkx(np.eye(3))
    with pytest.raises(ValueError, match="no nodes"):
        T.from_networkx(nx.Graph())


def test_erdos_renyi_gives_up_after_max_tries():
    with pytest.raises(ValueError, match=r"no connected graph in 3 tries.*connectivity threshold"):
        T.erdos_renyi(20, 1e-4, seed=0, max_tries=3)


def test_random_geometric_gives_up_after_max_tries():
    with pytest.raises(ValueError, match=r"no connected graph in 2 tries.*larger radius"):
        T.random_geometric(30, 1e-3, seed=0, max_tries=2)


# every bad argument: a ValueError naming the argument, the value and the fix
@pytest.mark.parametrize(
    "build, message",
    [
        (
            lambda: T.erdos_renyi(8, "0.3"),
            "p must be a number in (0, 1]; got p='0.3'. Pass an edge "
            "probability, e.g. erdos_renyi(8, 0.3)",
        ),
        (lambda: T.erdos_renyi(8, 0.0), "p must be a number in (0, 1]; got p=0.0."),
        (lambda: T.erdos_renyi(8, 1.5), "p must be a number in (0, 1]; got p=1.5."),
        (lambda: T.erdos_renyi(8, float("nan")), "p must be a number in (0, 1]; got p=nan."),
        (lambda: T.erdos_renyi(8, 0.5, seed="a"), "seed must be an integer >= 0; got seed='a'."),
        (
            lambda: T.erdos_renyi(8, 0.5, max_tries=0),
            "max_tries must be an integer >= 1; got max_tries=0.",
        ),
        (
            lambda: T.random_geometric(8, "x"),
            "radius must be a finite positive number; got radius='x'. "
            "Pass a link distance in the unit square, e.g. "
            "random_geometric(8, 0.4).",
        ),
        (
            lambda: T.random_geometric(8, 0.0),
            "radius must be a finite positive number; got radius=0.0.",
        ),
        (lambda: T.random_geometric(8, 0.4, seed=-1), "seed must be an integer >= 0; got seed=-1."),
        (
            lambda: T.ring(0),
            "n must be an integer >= 1; got n=0. Pass a whole number of workers, e.g. ring(8).",
        ),
        (
            lambda: T.ring(2.5),
            "n must be an integer >= 1; got n=2.5. Pass a whole number of workers, e.g. ring(8).",
        ),
        (lambda: T.ring(True), "n must be an integer >= 1; got n=True."),
        (lambda: T.ring("8"), "n must be an integer >= 1; got n='8'."),
        (
            lambda: T.torus(3, "4"),
            "cols must be an integer >= 1; got cols='4'. Pass a whole number of "
            "workers, e.g. torus(3, 4).",
        ),
        (lambda: T.torus(0, 3), "rows must be an integer >= 1; got rows=0."),
        (
            lambda: T.grid(3, -1),
            "cols must be an integer >= 1; got cols=-1. Pass a whole number of "
            "workers, e.g. grid(3, 4).",
        ),
        (lambda: T.complete(4.0), "n must be an integer >= 1; got n=4.0."),
        (lambda: T.star(None), "n must be an integer >= 1; got n=None."),
        (lambda: T.hypercube("16"), "n must be an integer >= 1; got n='16'."),
        (lambda: T.exponential(-3), "n must be an integer >= 1; got n=-3."),
        (lambda: T.torus_shape(1.5), "n must be an integer >= 1; got n=1.5."),
        (lambda: T.random_matching(4, seed=0.5), "seed must be an integer >= 0; got seed=0.5."),
        (lambda: T.random_matching("4"), "n must be an integer >= 1; got n='4'."),
        (
            lambda: T.with_link_failures(T.ring(4), "0.1"),
            "p_drop must be in [0, 1); got p_drop='0.1'. Pass the probability",
        ),
        (lambda: T.with_link_failures(T.ring(4), 0.1, seed="s"), "seed must be an integer >= 0"),
        (lambda: T.by_name("social", 16), "the social graph has 32 nodes; got n=16. Use n=32."),
    ],
)
def test_argument_validation(build, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        build()


def test_random_generators_are_seeded():
    a = T.erdos_renyi(12, 0.4, seed=5)
    b = T.erdos_renyi(12, 0.4, seed=5)
    np.testing.assert_array_equal(a.W, b.W)
    others = [T.erdos_renyi(12, 0.4, seed=s).W for s in range(6, 10)]
    assert any(not np.array_equal(a.W, w) for w in others)
    np.testing.assert_array_equal(
        T.random_geometric(12, 0.5, seed=3).W, T.random_geometric(12, 0.5, seed=3).W
    )


def test_by_name_suggests_closest():
    with pytest.raises(ValueError, match=re.escape("Did you mean 'ring'?")):
        T.by_name("rign", 8)
    with pytest.raises(ValueError, match="unknown topology 'zzzz'; valid names: ring, torus"):
        T.by_name("zzzz", 8)


def test_by_name_builds():
    assert T.by_name("torus", 12).name == "torus(3x4)"
    assert T.by_name("grid", 6, weights="lazy").name == "grid(2x3), lazy"
    np.testing.assert_array_equal(
        T.by_name("ring", 8, weights="uniform").W, T.ring(8, weights="uniform").W
    )
    np.testing.assert_array_equal(
        T.by_name("erdos_renyi", 10, seed=4, p=0.5).W, T.erdos_renyi(10, 0.5, seed=4).W
    )
    assert T.by_name("social", 32).n == 32
    with pytest.raises(ValueError, match="32 nodes; got n=16"):
        T.by_name("social", 16)


@pytest.mark.parametrize(
    "n, shape", [(12, (3, 4)), (16, (4, 4)), (7, (1, 7)), (1, (1, 1)), (18, (3, 6))]
)
def test_torus_shape(n, shape):
    assert T.torus_shape(n) == shape


# ---------------------------------------------------------------------------------------------
# edge cases and specific structures


@pytest.mark.parametrize("rule", RULES)
def test_single_worker(rule):
    for topo in (
        T.ring(1, weights=rule),
        T.complete(1, weights=rule),
        T.star(1, weights=rule),
        T.torus(1, 1, weights=rule),
    ):
        np.testing.assert_array_equal(topo.W, [[1.0]])
        assert topo.n == 1
        assert topo.spectral_gap == pytest.approx(1.0, abs=1e-15)
        assert topo.n_edges == 0


def test_ring_of_two():
    topo = T.ring(2)
    np.testing.assert_allclose(topo.W, np.full((2, 2), 0.5), rtol=0, atol=1e-15)
    np.testing.assert_array_equal(topo.degrees, [1, 1])
    assert topo.n_edges == 1
    np.testing.assert_allclose(
        T.ring(2, weights="lazy").W, [[0.75, 0.25], [0.25, 0.75]], rtol=0, atol=1e-15
    )


def test_torus_2x2_is_a_four_cycle():
    topo = T.torus(2, 2)
    np.testing.assert_array_equal(topo.degrees, [2, 2, 2, 2])
    assert topo.n_edges == 4
    assert nx.is_isomorphic(topo.nx_graph, nx.cycle_graph(4))
    assert 0 < topo.spectral_gap <= 1


@pytest.mark.parametrize("n", [8, 16])
def test_exponential_neighbours(n):
    topo = T.exponential(n)
    expected_degree = 2 * (n.bit_length() - 1) - 1  # +n/2 and -n/2 coincide
    np.testing.assert_array_equal(topo.degrees, np.full(n, expected_degree))
    powers = [2**k for k in range(n.bit_length() - 1)]
    for i in range(n):
        want = {(i + s * d) % n for d in powers for s in (1, -1)}
        assert set(topo.nx_graph.neighbors(i)) == want


def test_exponential_8_degree_5():
    topo = T.exponential(8)
    np.testing.assert_array_equal(topo.degrees, np.full(8, 5))
    assert set(topo.nx_graph.neighbors(0)) == {1, 7, 2, 6, 4}


def test_grid_and_torus_degrees():
    np.testing.assert_array_equal(T.grid(3, 3).degrees, [2, 3, 2, 3, 4, 3, 2, 3, 2])
    np.testing.assert_array_equal(T.torus(4, 4).degrees, np.full(16, 4))
    np.testing.assert_array_equal(T.torus(2, 4).degrees, np.full(8, 3))  # vertical wrap collapses


def test_hypercube_neighbours_differ_in_one_bit():
    topo = T.hypercube(8)
    for i in range(8):
        assert set(topo.nx_graph.neighbors(i)) == {i ^ 1, i ^ 2, i ^ 4}
    assert T.hypercube(1).n == 1


def test_star_hub_is_worker_zero():
    topo = T.star(6)
    np.testing.assert_array_equal(topo.degrees, [5, 1, 1, 1, 1, 1])


def test_names_and_repr():
    assert T.ring(16).name == "ring(16)"
    assert T.ring(16, weights="uniform").name == "ring(16), uniform"
    assert "ring(8)" in repr(T.ring(8)) and "spectral_gap" in repr(T.ring(8))
    assert T.ring(8).time_varying is False
    assert ds.topology.ring is T.ring


def test_round_off_negative_diagonal_is_accepted():
    """1 - 20 * (1/20) is -2e-16 in floating point: round-off, not a negative weight."""
    n = 21
    W = np.full((n, n), 1.0 / (n - 1))
    np.fill_diagonal(W, 0.0)
    np.fill_diagonal(W, 1.0 - W.sum(axis=1))
    topo = T.from_matrix(W)
    assert topo.W.min() >= 0.0
    # a negative weight is allowed when W still mixes, refused when an eigenvalue leaves (-1, 1)
    W = T.star(5, weights="best_constant").W
    # star of 5: Laplacian spectrum {0, 1, 1, 1, 5}, alpha = 1/3, W's spectrum {1, 2/3, -2/3}
    assert W.min() < -0.1 and T.from_matrix(W).lam == pytest.approx(2 / 3, abs=1e-12)
    with pytest.raises(ValueError, match="does not mix.*negative entries"):
        T.from_matrix(np.array([[1.001, -0.001], [-0.001, 1.001]]))


def test_by_name_options_are_checked():
    with pytest.raises(ValueError, match=r"needs p="):
        T.by_name("erdos_renyi", 8)
    with pytest.raises(ValueError, match=r"takes no option"):
        T.by_name("ring", 8, p=0.5)
    assert T.by_name("erdos_renyi", 8, p=0.6, seed=1).n == 8


@pytest.mark.parametrize("rows, cols", [(1, 1), (1, 6), (6, 1), (2, 2), (2, 5), (3, 4), (5, 3)])
def test_torus_and_grid_neighbours_by_index(rows, cols):
    """Worker i * cols + j sits at (i, j): its neighbours written out by index (independent of
    networkx's grid_2d_graph, which the generators use)."""

    def expected(periodic):
        out = {}
        for i in range(rows):
            for j in range(cols):
                cand = [(i - 1, j), (i + 1, j), (i, j - 1), (i, j + 1)]
                if periodic:
                    cand = [(a % rows, b % cols) for a, b in cand]
                out[i * cols + j] = {
                    a * cols + b
                    for a, b in cand
                    if 0 <= a < rows and 0 <= b < cols and (a, b) != (i, j)
                }
        return out

    for topo, periodic in ((T.torus(rows, cols), True), (T.grid(rows, cols), False)):
        assert sorted(topo.nx_graph.nodes()) == list(range(rows * cols))
        got = {u: set(topo.nx_graph.neighbors(u)) for u in range(rows * cols)}
        assert got == expected(periodic), topo.name
    assert T.torus(rows, cols).grid == (rows, cols) and T.grid(rows, cols).grid is None


def test_static_W_at_is_W():
    topo = T.ring(6)
    assert topo.W_at(0) is topo.W and topo.W_at(17) is topo.W


def test_package_layout_and_registry():
    """Every name of the package's __all__ exists; the submodules' generators are in their __all__;
    REGISTRY holds every generator that takes a size (what decsim.config builds from names)."""
    from decsim import config

    for module in (T, T.graphs, T.structure, T.time_varying, T.directed):
        assert all(hasattr(module, name) for name in module.__all__), module.__name__
    assert set(T.graphs.GENERATORS) <= set(T.graphs.__all__)
    assert set(T.time_varying.TIME_VARYING) <= set(T.time_varying.__all__)
    assert T.REGISTRY == config.topologies()
    assert set(T.REGISTRY) == (set(T.GENERATORS) | {"one_peer_exponential", "random_matching"}
                               | set(T.directed.GENERATORS))
    assert T.REGISTRY["ring"] is T.ring is T.graphs.ring
    assert T.TIME_VARYING == ("one_peer_exponential", "random_matching", "with_link_failures")


def _import_graph():
    import importlib.util
    import pathlib

    root = pathlib.Path(__file__).resolve().parents[1]
    path = root / "tools" / "import_graph.py"
    spec = importlib.util.spec_from_file_location("import_graph", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module, root / "decsim"


def test_topology_never_imports_gossip():
    """gossip imports topology, never the reverse, not even lazily inside a function
    (tools/import_graph.py reads every import statement with ast)."""
    tool, root = _import_graph()
    edges = {(a, b) for a, b, _, _ in tool.edges(root)}
    assert ("decsim.gossip", "decsim.topology.structure") in edges
    assert not [e for e in edges if e[0].startswith("decsim.topology") and e[1] == "decsim.gossip"]
    graph = {}
    for a, b in edges:
        graph.setdefault(a, set()).add(b)
    for component in tool.cycles(graph):
        assert not any(m.startswith(("decsim.topology", "decsim.gossip")) for m in component)
