"""The optimised weight rules (decsim.topology.weights): best_constant against its closed form,
fastest against the other rules and its constraints, and the error without cvxpy."""

import builtins

import numpy as np
import pytest

import decsim as ds

T = ds.topology


def _check_valid(topo, graph_of):
    W = topo.W
    np.testing.assert_allclose(W, W.T, atol=1e-9)
    np.testing.assert_allclose(W.sum(axis=1), 1.0, atol=1e-7)
    off = (np.abs(W) > 1e-9) & ~np.eye(topo.n, dtype=bool)
    assert not np.any(off & ~graph_of)  # no weight outside the graph's edges
    assert topo.lam < 1


@pytest.mark.parametrize("n", [5, 8, 11])
def test_best_constant_on_a_ring_is_the_closed_form(n):
    topo = T.ring(n, weights="best_constant")
    mu = 2 - 2 * np.cos(2 * np.pi * np.arange(n) / n)  # ring Laplacian
    alpha = 2 / (mu.max() + np.sort(mu)[1])
    np.testing.assert_allclose(topo.W, np.eye(n) - alpha * (np.diag([2.0] * n)
                               - np.roll(np.eye(n), 1, 1) - np.roll(np.eye(n), -1, 1)), atol=1e-12)
    vals = 1 - alpha * mu
    assert topo.lam == pytest.approx(np.sort(np.abs(vals))[-2], abs=1e-12)
    assert topo.lam <= T.ring(n).lam + 1e-12


@pytest.mark.parametrize("make", [lambda w: T.grid(3, 3, weights=w), lambda w: T.star(6, weights=w),
                                  lambda w: T.random_geometric(12, 0.5, seed=1, weights=w)])
def test_fastest_mixes_at_least_as_fast_as_the_other_rules(make):
    pytest.importorskip("cvxpy")
    fastest = make("fastest")
    graph_of = np.abs(make("metropolis").W) > 0
    _check_valid(fastest, graph_of)
    _check_valid(make("best_constant"), graph_of)
    for rule in ("metropolis", "uniform", "lazy", "best_constant"):
        assert fastest.lam <= make(rule).lam + 1e-5, rule


def test_optimised_weights_run_and_keep_the_mean():
    prob = ds.problems.quadratic(6, 3, noise=0.1)
    topo = T.star(6, weights="best_constant")
    assert topo.W.min() < 0
    h = ds.run(ds.algorithms.dsgd(0.1), prob, topo, steps=50, eval_every=10)
    assert not h.diverged and h.metrics["loss"][-1] < h.metrics["loss"][0]


def test_fastest_without_cvxpy_names_the_extra(monkeypatch):
    real = builtins.__import__

    def no_cvxpy(name, *args, **kwargs):
        if name == "cvxpy" or name.startswith("cvxpy."):
            raise ImportError("no cvxpy")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_cvxpy)
    with pytest.raises(ValueError, match=r"decsim\[weights\]"):
        T.ring(6, weights="fastest")


def test_fastest_refuses_large_graphs_and_unknown_rules():
    with pytest.raises(ValueError, match="up to 300 nodes"):
        T.ring(400, weights="fastest")
    with pytest.raises(ValueError, match="best_constant"):
        T.ring(6, weights="fastests")
