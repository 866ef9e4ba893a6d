"""Directed graphs (docs/reference/topologies.md#directed) and the algorithms that run on them,
sgp and push_pull (docs/reference/algorithms.md#family-directed): the push and pull matrices of
each generator, the gossip paths, exact trajectories against float64 numpy references (in a
float64 subprocess and at float32 tolerance in-process), identities, reductions, behaviour and
bad input."""

import networkx as nx
import numpy as np
import pytest

import decsim as ds
from decsim.runner import trajectory

from ._reference import D, N, least_squares, np_grads, run_x64

A, T = ds.algorithms, ds.topology
ETA, STEPS = 0.05, 25


@pytest.fixture(scope="module")
def ls():
    return least_squares()


@pytest.fixture(scope="module")
def digraph():
    return T.random_directed(N, 2, seed=1)


# ---------------------------------------------------------------------------------------------
# topologies


def _arcs(topo):
    return {(int(u), int(v)) for u, v in topo.nx_graph.edges()}


@pytest.mark.parametrize("make, arcs", [
    (lambda: T.directed_ring(5), {(i, (i + 1) % 5) for i in range(5)}),
    (lambda: T.directed_exponential(6), {(i, (i + s) % 6) for i in range(6) for s in (1, 2, 4)}),
])
def test_generators_have_their_arcs_and_stochastic_matrices(make, arcs):
    topo = make()
    assert topo.directed and _arcs(topo) == arcs
    B, A_ = topo.push.toarray(), topo.pull.toarray()
    np.testing.assert_allclose(B.sum(axis=0), 1.0, atol=1e-14)
    np.testing.assert_allclose(A_.sum(axis=1), 1.0, atol=1e-14)
    for j, i in arcs:  # j -> i: B[i, j] = 1/(1 + outdeg j), A[i, j] = 1/(1 + indeg i)
        assert B[i, j] == pytest.approx(1 / (1 + topo.degrees[j]))
        assert A_[i, j] == pytest.approx(1 / (1 + sum(1 for a in arcs if a[1] == i)))


def test_random_directed_is_strongly_connected_with_uneven_in_degrees(digraph):
    assert nx.is_strongly_connected(digraph.nx_graph)
    assert np.all(digraph.degrees == 2)
    assert not digraph.doubly_stochastic
    assert np.ptp(np.diff(digraph.pull.tocsr().indptr)) > 0  # in-degrees differ
    assert 0 < digraph.lam < 1
    s = digraph.summary()
    assert s["directed"] and s["out_degree_max"] == 2 and s["lam_pull"] == digraph.lam_pull


def test_from_networkx_and_from_matrix():
    G = nx.DiGraph([(0, 1), (1, 2), (2, 0), (0, 2)])
    topo = T.from_networkx(G)
    assert topo.directed and _arcs(topo) == set(G.edges())
    P = topo.push.toarray()
    again = T.from_matrix(P, directed=True)
    np.testing.assert_array_equal(again.push.toarray(), P)
    np.testing.assert_allclose(again.pull.toarray(), topo.pull.toarray())
    assert not T.from_networkx(nx.cycle_graph(4)).directed  # undirected graphs as before


@pytest.mark.parametrize("path", ["dense", "sparse"])
def test_push_and_pull_rounds_on_each_path(digraph, path):
    import jax.numpy as jnp

    plan = ds.gossip.plan(digraph, path)
    assert plan.path == path
    args = {k: jnp.asarray(v) for k, v in plan.args.items()}
    mixer = plan.mixer(args, digraph.lam, 0)
    Z = np.random.default_rng(0).normal(size=(N, 3))
    np.testing.assert_allclose(mixer.push(jnp.asarray(Z, jnp.float32)), digraph.push @ Z,
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(mixer.pull(jnp.asarray(Z, jnp.float32)), digraph.pull @ Z,
                               rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="directed"):
        ds.gossip.plan(digraph, "roll")


@pytest.mark.parametrize("name", ["sgp", "push_pull"])
def test_dense_and_sparse_paths_give_the_same_run(name, ls, digraph):
    """Inside the compiled loop (ds.run, 5 steps, every step evaluated). The two paths sum the
    same products in a different order (a matmul against gathers of the neighbour lists), so
    they agree to float32 rounding (about 1e-7 relative per step), not bit for bit."""
    prob, _, _ = ls
    assert ds.gossip.plan(digraph, "auto").path == "dense"  # sparse only when asked for here
    runs = {path: ds.run(getattr(A, name)(ETA), prob, digraph, 5, eval_every=1, gossip=path)
            for path in ("dense", "sparse")}
    dense, sparse = runs["dense"], runs["sparse"]
    assert (dense.config["gossip"], sparse.config["gossip"]) == ("dense", "sparse")
    assert not dense.diverged and not sparse.diverged
    np.testing.assert_allclose(sparse.params, dense.params, rtol=1e-5,
                               atol=1e-6 * np.max(np.abs(dense.params)))
    assert np.ptp(dense.params, axis=0).max() > 1e-3  # the workers disagree: gossip matters
    for metric in ("loss", "consensus", "bits"):
        np.testing.assert_allclose(sparse.metrics[metric], dense.metrics[metric], rtol=1e-5,
                                   err_msg=metric)


# ---------------------------------------------------------------------------------------------
# exact trajectories


def ref_sgp(X0, A_, y, B, steps, eta=ETA):
    X, w, out = X0.copy(), np.ones(X0.shape[0]), [X0.copy()]
    for _ in range(steps):
        Z = X / w[:, None]
        X = B @ (X - eta * np_grads(Z, A_, y))
        w = B @ w
        out.append(X / w[:, None])
    return np.stack(out)


def ref_push_pull(X0, A_, y, Apull, B, steps, eta=ETA):
    X, out = X0.copy(), [X0.copy()]
    Y, G_prev = np.zeros_like(X0), np.zeros_like(X0)
    for _ in range(steps):
        G = np_grads(X, A_, y)
        Y = B @ Y + G - G_prev
        X = Apull @ (X - eta * Y)
        G_prev = G
        out.append(X)
    return np.stack(out)


def _refs(topo, A_, y):
    X0 = np.zeros((N, D))
    B, Apull = topo.push.toarray(), topo.pull.toarray()
    return {"sgp": ref_sgp(X0, A_, y, B, STEPS),
            "push_pull": ref_push_pull(X0, A_, y, Apull, B, STEPS)}


@pytest.mark.parametrize("name", ["sgp", "push_pull"])
def test_trajectory_matches_the_equations_float32(name, ls, digraph):
    prob, A_, y = ls
    got = trajectory(getattr(A, name)(ETA), prob, digraph, STEPS)
    want = _refs(digraph, A_, y)[name]
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-5 * np.max(np.abs(want)))


def test_trajectories_match_the_equations_float64():
    out = run_x64("""
from tests.test_directed import _refs, ETA, STEPS
prob, A_, y = least_squares()
topo = ds.topology.random_directed(N, 2, seed=1)
want = _refs(topo, A_, y)
for name in ("sgp", "push_pull"):
    out[name] = trajectory(getattr(ds.algorithms, name)(ETA), prob, topo, STEPS)
    out[name + "_ref"] = want[name]
""")
    for name in ("sgp", "push_pull"):
        assert out[name].dtype == np.float64
        np.testing.assert_allclose(out[name], out[name + "_ref"], rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# identities and reductions


def test_sgp_keeps_sums(ls, digraph):
    prob, A_, y = ls
    algo = A.sgp(ETA)
    states = trajectory(algo, prob, digraph, 6, record=lambda s: (s.X, s.w))
    X, w = states
    np.testing.assert_allclose(w.sum(axis=1), N, rtol=1e-6)
    for t in range(6):  # Σ x_i changes only by the gradient step taken at Z_t
        Z = X[t] / w[t][:, None]
        np.testing.assert_allclose(X[t + 1].sum(0), X[t].sum(0) - ETA * np_grads(Z, A_, y).sum(0),
                                   rtol=1e-5, atol=1e-6)


def test_push_pull_tracks_the_mean_gradient(ls, digraph):
    prob, A_, y = ls
    X, Y = trajectory(A.push_pull(ETA), prob, digraph, 6, record=lambda s: (s.X, s.Y))
    for t in range(6):  # Y recorded after step t is Y_t, built from G_t at X_t
        np.testing.assert_allclose(Y[t + 1].mean(0), np_grads(X[t], A_, y).mean(0),
                                   rtol=1e-5, atol=1e-6)


def test_reductions_on_undirected_graphs(ls):
    prob, A_, y = ls
    ring = T.ring(N)
    np.testing.assert_allclose(trajectory(A.sgp(ETA), prob, ring, STEPS),
                               trajectory(A.dsgd(ETA), prob, ring, STEPS), rtol=1e-6, atol=1e-7)
    want = ref_push_pull(np.zeros((N, D)), A_, y, ring.W, ring.W, STEPS)  # ATC tracking
    got = trajectory(A.push_pull(ETA), prob, ring, STEPS)
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-5 * np.max(np.abs(want)))


def test_sgp_on_one_peer_exponential_is_dsgd():
    """The SGP paper's graph: its rounds are doubly stochastic, so w stays 1 and SGP is D-SGD."""
    prob = ds.problems.quadratic(8, 3, noise=0.1)
    topo = T.one_peer_exponential(8)
    got = trajectory(A.sgp(0.1), prob, topo, 12, seed=2)
    np.testing.assert_allclose(got, trajectory(A.dsgd(0.1), prob, topo, 12, seed=2),
                               rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------------------------------------
# behaviour


def test_both_reach_consensus_and_push_pull_the_exact_optimum(ls, digraph):
    prob, A_, y = ls
    H = np.einsum("imd,ime->de", A_, A_) / A_.shape[1]
    b = np.einsum("imd,im->d", A_, y) / A_.shape[1]
    x_star = np.linalg.solve(H, b)
    pp = trajectory(A.push_pull(0.05), prob, digraph, 1500)[-1]
    np.testing.assert_allclose(pp, np.tile(x_star, (N, 1)), atol=2e-4)
    # SGP with a constant step behaves like D-SGD: a disagreement of order η around x*
    spread, err = {}, {}
    for eta, steps in ((0.05, 1500), (0.025, 3000)):
        sg = trajectory(A.sgp(eta), prob, digraph, steps)[-1]
        spread[eta] = np.max(np.abs(sg - sg.mean(0)))
        err[eta] = np.max(np.abs(sg.mean(0) - x_star))
    assert 1.6 < spread[0.05] / spread[0.025] < 2.4
    # what push-sum buys: D-SGD that only pulls with A, X <- A (X − η G), weighs the workers by
    # A's Perron vector and settles far from x* (numpy, the same problem and step)
    X = np.zeros((N, D))
    for _ in range(1500):
        X = digraph.pull.toarray() @ (X - 0.05 * np_grads(X, A_, y))
    assert np.max(np.abs(X.mean(0) - x_star)) > 5 * err[0.05]
    assert np.max(np.abs(X.mean(0) - x_star)) > 50 * np.max(np.abs(pp.mean(0) - x_star))


# ---------------------------------------------------------------------------------------------
# bad input


def test_undirected_algorithms_refuse_a_directed_topology(ls):
    prob, _, _ = ls
    for algo in (A.dsgd(0.1), A.d2(0.1), A.choco_sgd(0.1, 0.3, ds.compression.top_k(0.5))):
        with pytest.raises(ValueError, match="sgp.*push_pull"):
            ds.run(algo, prob, T.directed_ring(N), steps=5)
    cfg = {"algorithm": {"name": "dsgd", "learning_rate": 0.1},
           "problem": {"name": "quadratic", "dim": 3}, "topology": "directed_ring",
           "n_workers": 4, "steps": 5}
    with pytest.raises(ValueError, match="sgp"):
        ds.config.build(cfg)
    cfg["algorithm"] = {"name": "sgp", "learning_rate": 0.1}
    assert ds.config.build(cfg).topology.directed


def test_sweep_and_compare_refuse_a_directed_topology_before_compiling(tmp_path):
    base = {"problem": {"name": "quadratic", "dim": 3}, "topology": "directed_ring",
            "n_workers": 4, "steps": 10, "eval_every": 5}
    spec = {"compare": {"tuning_seeds": [0], "eval_seeds": [1], "grid_points": 1},
            "base": base, "algorithm": [{"name": "sgp", "learning_rate": 0.1},
                                        {"name": "dsgd", "learning_rate": 0.1}]}
    before = ds.runner.trace_count()
    with pytest.raises(ValueError, match=r"dsgd needs an undirected.*sgp.*push_pull"):
        ds.sweep(dict(base, algorithm={"name": "dsgd", "learning_rate": 0.1}),
                 {"algorithm.learning_rate": [0.05, 0.1]}, str(tmp_path / "sweep"),
                 progress=False)
    with pytest.raises(ValueError, match=r"dsgd needs an undirected.*sgp.*push_pull"):
        ds.compare(spec, str(tmp_path / "compare"), progress=False)  # sgp listed first: no run
    assert ds.runner.trace_count() == before
    assert not (tmp_path / "sweep").exists() and not (tmp_path / "compare").exists()


def test_bad_directed_input():
    P = np.array([[0.5, 0.0, 0.5], [0.5, 1.5, 0.0], [0.0, -0.5, 0.5]])
    with pytest.raises(ValueError, match=r"negative entry P\[2, 1\]"):
        T.from_matrix(P, directed=True)
    with pytest.raises(ValueError, match="columns of P must sum to 1"):
        T.from_matrix(np.array([[0.5, 0.2], [0.2, 0.5]]), directed=True)
    with pytest.raises(ValueError, match="not strongly connected"):
        T.from_matrix(np.array([[1.0, 0.5], [0.0, 0.5]]), directed=True)
    with pytest.raises(ValueError, match="out_degree must be at most n − 1 = 3"):
        T.random_directed(4, 4)
    with pytest.raises(ValueError, match="not strongly connected"):
        T.from_networkx(nx.DiGraph([(0, 1), (1, 2)]))
    with pytest.raises(ValueError, match="lambda_min is defined for a symmetric W"):
        _ = T.directed_ring(4).lambda_min


def test_cli_prints_a_directed_summary(capsys):
    from decsim import cli

    assert cli.main(["topology", "random_directed", "6", "--out-degree", "2"]) == 0
    out = capsys.readouterr().out
    assert "arcs = 12" in out and "lam (pull A)" in out and "doubly stochastic: False" in out
