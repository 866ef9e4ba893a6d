"""Time-varying topologies: W_t generated inside the compiled loop
(docs/reference/topologies.md#time-varying)."""

import numpy as np
import pytest

import decsim as ds
from decsim import topology as T

from .registry import ALGORITHMS

TV = {
    "one_peer_exponential": lambda n: T.one_peer_exponential(n),
    "random_matching": lambda n: T.random_matching(n, seed=3),
    "link_failures": lambda n: T.with_link_failures(T.ring(n), 0.3, seed=1),
}


@pytest.mark.parametrize("name", list(TV))
@pytest.mark.parametrize("n", [8, 7])
def test_every_W_t_is_doubly_stochastic(name, n):
    topo = TV[name](n)
    assert topo.time_varying and topo.n == n
    mats = [topo.W_at(t) for t in range(12)]
    for W in mats:
        assert W.min() >= 0.0
        np.testing.assert_allclose(W.sum(axis=1), 1.0, atol=1e-6)
        np.testing.assert_allclose(W.sum(axis=0), 1.0, atol=1e-6)
    assert any(not np.array_equal(mats[0], W) for W in mats[1:])  # it does vary
    if name != "one_peer_exponential":
        for W in mats:
            np.testing.assert_array_equal(W, W.T)


def test_one_peer_exponential_exact_consensus_in_log2_n_rounds():
    for n in (2, 4, 8, 16, 32):
        topo = T.one_peer_exponential(n)
        P = np.eye(n)
        for t in range(int(np.log2(n))):
            P = topo.W_at(t) @ P
        np.testing.assert_allclose(P, np.full((n, n), 1.0 / n), atol=1e-6)
        if n > 2:  # one round fewer is not enough
            Q = np.eye(n)
            for t in range(int(np.log2(n)) - 1):
                Q = topo.W_at(t) @ Q
            assert np.abs(Q - 1.0 / n).max() >= 1.0 / n - 1e-9  # entries 2/n or 0


def test_random_matching_pairs_everyone():
    topo = T.random_matching(8, seed=0)
    for t in range(5):
        W = topo.W_at(t)
        assert np.all(np.diag(W) == 0.5)
        assert np.all((W > 0).sum(axis=1) == 2)  # itself and one partner
    odd = T.random_matching(7, seed=0).W_at(0)
    assert sorted(np.diag(odd).tolist()).count(1.0) == 1  # one worker sits out


def test_link_failures_drop_edges_at_the_rate():
    base = T.ring(16)
    topo = T.with_link_failures(base, 0.25, seed=2)
    kept = []
    for t in range(200):
        W = topo.W_at(t)
        kept.append(np.mean(W[base.W > 0][~np.eye(16, dtype=bool)[base.W > 0]] > 0))
    assert np.mean(kept) == pytest.approx(0.75, abs=0.03)
    np.testing.assert_allclose(T.with_link_failures(base, 0.0).W_at(5), base.W, atol=1e-7)
    assert topo.spectral_gap == base.spectral_gap  # spectra of the base graph


def test_runs_on_time_varying_graphs_do_not_recompile_per_step():
    prob = ds.problems.consensus(16, 3, seed=0)
    topo = T.one_peer_exponential(16)
    hist = ds.run(ds.algorithms.dsgd(1e-9), prob, topo, steps=8, eval_every=4)
    # 4 rounds of one-peer exponential average exactly (up to float32)
    assert hist.metrics["consensus_error"][1] < 1e-10 * hist.metrics["consensus_error"][0]
    before = ds.runner.trace_count()
    ds.run(
        ds.algorithms.dsgd(1e-9), prob, T.one_peer_exponential(16), steps=8, eval_every=4, seed=1
    )
    assert ds.runner.trace_count() == before


@pytest.mark.parametrize("name", ["random_matching", "link_failures"])
def test_every_algorithm_runs_on_time_varying_graphs(name):
    prob = ds.problems.quadratic(8, 4, mu=0.5, L=1.0, heterogeneity=0.5, seed=0)
    # the base ring of the link failures has lazy weights: an even ring's Metropolis W has
    # λ_min = −1/3 exactly, which D² excludes
    topo = (T.with_link_failures(T.ring(8, weights="lazy"), 0.3, seed=1)
            if name == "link_failures" else TV[name](8))
    for make, hparams, (grad_evals, _, _) in ALGORITHMS.values():
        if not grad_evals:
            continue
        algo = make(**dict(hparams, learning_rate=0.1))
        hist = ds.run(algo, prob, topo, steps=300, eval_every=300)
        assert not hist.diverged, algo.name
        assert hist.metrics["loss"][-1] < hist.metrics["loss"][0], algo.name


def test_trajectory_on_time_varying_equals_numpy():
    prob = ds.problems.quadratic(8, 3, mu=0.5, L=1.0, heterogeneity=1.0, seed=1)
    topo = T.with_link_failures(T.ring(8), 0.4, seed=5)
    got = ds.runner.trajectory(ds.algorithms.dpsgd(0.1), prob, topo, 6)
    a = prob.data["a"][:, 0].astype(np.float64)
    c = prob.data["c"][:, 0].astype(np.float64)
    X = np.zeros((8, 3))
    for t in range(6):
        X = topo.W_at(t) @ X - 0.1 * a * (X - c)
        np.testing.assert_allclose(got[t + 1], X, rtol=1e-5, atol=1e-6)


def test_validation():
    with pytest.raises(ValueError, match="p_drop must be in"):
        T.with_link_failures(T.ring(4), 1.0)
    with pytest.raises(ValueError, match="needs a static Topology"):
        T.with_link_failures(T.random_matching(4), 0.1)
    with pytest.raises(ValueError, match="needs n >= 2"):
        T.random_matching(1)


@pytest.mark.parametrize("name", list(TV))
def test_W_at_equals_the_dense_gossip_round(name):
    """W_at densifies the topology's own build function (no gossip plan); the dense gossip path
    computes the same matrix inside the program."""
    import jax.numpy as jnp

    from decsim import gossip

    topo = TV[name](8)
    build, args = topo.sparse_builder()
    assert build is topo.build and isinstance(topo, T.TimeVaryingTopology)
    plan = gossip.plan(topo, "dense")
    dev = {k: jnp.asarray(v) for k, v in plan.args.items()}
    for tau in (0, 3, 9):
        want = np.asarray(plan.build(dev, jnp.asarray(tau, jnp.int32)), np.float64)
        np.testing.assert_array_equal(topo.W_at(tau), want)
    assert plan.build is gossip.plan(TV[name](8), "dense").build  # one builder, one program
