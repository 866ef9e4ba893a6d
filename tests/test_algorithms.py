"""Algorithms against their equations (docs/reference/algorithms.md#family-baselines),
identities and behaviour.

Every algorithm's trajectory is compared with a plain-numpy (float64) implementation of its
equations on a small heterogeneous least-squares problem with full-batch gradients.
"""

import jax
import numpy as np
import optax
import pytest

import decsim as ds
from decsim.runner import trajectory

from ._reference import STEPS, D, M, N, np_grads


def ref_centralized(X, A, y, W, eta, T):
    out = [X]
    for _ in range(T):
        X = X - eta * np_grads(X, A, y)
        X = np.broadcast_to(X.mean(0), X.shape).copy()
        out.append(X)
    return out


def ref_dsgd(X, A, y, W, eta, T, tau=1):
    out = [X]
    for t in range(T):
        X = X - eta * np_grads(X, A, y)
        if (t + 1) % tau == 0:
            X = W @ X
        out.append(X)
    return out


def ref_dpsgd(X, A, y, W, eta, T):
    out = [X]
    for _ in range(T):
        X = W @ X - eta * np_grads(X, A, y)
        out.append(X)
    return out


def ref_gt(X, A, y, W, eta, T):
    out = [X]
    G = np_grads(X, A, y)
    Y = G
    for _ in range(T):
        X = W @ X - eta * Y
        G_new = np_grads(X, A, y)
        Y = W @ Y + G_new - G
        G = G_new
        out.append(X)
    return out


def ref_d2(X, A, y, W, eta, T):
    out = [X]
    G0 = np_grads(X, A, y)
    X_prev, X = X, W @ (X - eta * G0)
    G_prev = G0
    out.append(X)
    for _ in range(T - 1):
        G = np_grads(X, A, y)
        X_prev, X = X, W @ (2 * X - X_prev - eta * G + eta * G_prev)
        G_prev = G
        out.append(X)
    return out


def ref_exact_diffusion(X, A, y, W, eta, T):
    return ref_d2(X, A, y, 0.5 * (np.eye(W.shape[0]) + W), eta, T)


def ref_dsgd_momentum(X, A, y, W, eta, T, beta=0.9):
    out, mom = [X], np.zeros_like(X)
    for _ in range(T):
        mom = np_grads(X, A, y) + beta * mom  # optax.trace: m = g + beta m; update = -eta m
        X = W @ (X - eta * mom)
        out.append(X)
    return out


# One row per algorithm: (factory call, numpy reference).
TABLE = {
    "centralized_sgd": (
        lambda: ds.algorithms.centralized_sgd(0.05),
        lambda *a: ref_centralized(*a, 0.05, STEPS),
    ),
    "dsgd": (lambda: ds.algorithms.dsgd(0.05), lambda *a: ref_dsgd(*a, 0.05, STEPS)),
    "dsgd_tau3": (
        lambda: ds.algorithms.dsgd(0.05, gossip_every=3),
        lambda *a: ref_dsgd(*a, 0.05, STEPS, tau=3),
    ),
    "dpsgd": (lambda: ds.algorithms.dpsgd(0.05), lambda *a: ref_dpsgd(*a, 0.05, STEPS)),
    "gradient_tracking": (
        lambda: ds.algorithms.gradient_tracking(0.05),
        lambda *a: ref_gt(*a, 0.05, STEPS),
    ),
    "d2": (lambda: ds.algorithms.d2(0.05), lambda *a: ref_d2(*a, 0.05, STEPS)),
    "exact_diffusion": (
        lambda: ds.algorithms.exact_diffusion(0.05),
        lambda *a: ref_exact_diffusion(*a, 0.05, STEPS),
    ),
    "dsgd_nesterov_free_momentum": (
        lambda: ds.algorithms.dsgd(local_optimizer=optax.sgd(0.05, momentum=0.9)),
        lambda *a: ref_dsgd_momentum(*a, 0.05, STEPS),
    ),
}


def test_every_baseline_has_a_trajectory_row():
    from decsim.algorithms import baselines

    covered = {name.split("_tau")[0] for name in TABLE}
    baseline_names = {
        k for k, v in ds.algorithms.REGISTRY.items() if v.__module__ == baselines.__name__
    }
    assert baseline_names and baseline_names <= covered


@pytest.mark.parametrize("name", list(TABLE))
def test_trajectory_matches_equations(name, ls, topo):
    prob, A, y = ls
    make, ref = TABLE[name]
    got = trajectory(make(), prob, topo, STEPS)
    X0 = np.zeros((N, D))
    want = np.stack(ref(X0, A, y, topo.W))
    assert got.shape == want.shape == (STEPS + 1, N, D)
    scale = np.max(np.abs(want))
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-5 * scale)


@pytest.mark.parametrize("name", ["dsgd", "gradient_tracking", "d2"])
def test_run_final_params_equal_trajectory(name, ls, topo):
    prob, _, _ = ls
    algo = TABLE[name][0]()
    hist = ds.run(algo, prob, topo, steps=STEPS, eval_every=5)
    traj = trajectory(algo, prob, topo, STEPS)
    np.testing.assert_allclose(hist.params, traj[-1], rtol=1e-5, atol=1e-6)


def test_dsgd_on_complete_graph_is_minibatch_sgd_with_nb_samples(ls):
    """W = J: every row equals x̄, and x̄ follows SGD on the pooled n·b samples of the step."""
    prob, A, y = ls
    b, eta, T = 2, 0.05, 6
    stoch = prob._replace(batch_size=b)
    topo = ds.topology.complete(N)
    np.testing.assert_allclose(topo.W, np.full((N, N), 1.0 / N), atol=1e-15)
    got = trajectory(ds.algorithms.dsgd(eta), stoch, topo, T, seed=3)
    central = trajectory(ds.algorithms.centralized_sgd(eta), stoch, topo, T, seed=3)
    np.testing.assert_allclose(got, central, rtol=1e-5, atol=1e-6)
    # Rebuild the sampled indices from the documented key derivation and pool the n·b samples.
    run_key = jax.random.PRNGKey(3)
    x = np.zeros(D)
    for t in range(T):
        worker_keys = jax.random.split(jax.random.fold_in(run_key, t), N)
        rows_A, rows_y = [], []
        for i in range(N):
            k_batch = jax.random.split(worker_keys[i])[0]
            idx = np.asarray(jax.random.randint(k_batch, (b,), 0, M))
            rows_A.append(A[i, idx])
            rows_y.append(y[i, idx])
        PA, Py = np.concatenate(rows_A), np.concatenate(rows_y)
        x = x - eta * PA.T @ (PA @ x - Py) / (N * b)
        np.testing.assert_allclose(got[t + 1], np.broadcast_to(x, (N, D)), rtol=1e-4, atol=1e-5)


def test_gradient_tracking_invariant_mean_Y_equals_mean_G(ls, topo):
    prob, _, _ = ls
    stoch = prob._replace(batch_size=2)
    rec = trajectory(
        ds.algorithms.gradient_tracking(0.05),
        stoch,
        topo,
        30,
        seed=1,
        record=lambda s: (s.Y, s.G_prev),
    )
    Y, G = rec
    assert np.abs(G[1:]).max() > 0.1  # stochastic, nonzero gradients
    np.testing.assert_allclose(Y[1:].mean(axis=1), G[1:].mean(axis=1), atol=1e-4)
    # and Y differs from G on individual workers (tracking, not copying)
    assert np.abs(Y[5:] - G[5:]).max() > 1e-2


@pytest.fixture(scope="module")
def hetero_quadratic():
    return ds.problems.quadratic(8, 6, mu=0.5, L=1.0, noise=0.0, heterogeneity=2.0, seed=4)


@pytest.mark.parametrize(
    "make",
    [
        lambda: ds.algorithms.gradient_tracking(0.2),
        lambda: ds.algorithms.d2(0.2),
        lambda: ds.algorithms.exact_diffusion(0.2),
    ],
    ids=["gradient_tracking", "d2", "exact_diffusion"],
)
def test_bias_corrected_methods_reach_the_optimum(make, hetero_quadratic):
    prob = hetero_quadratic
    algo = make()
    # an even ring's Metropolis W has λ_min = −1/3 exactly, which D² excludes (it needs
    # λ_min > −1/3 strictly); lazy weights put every eigenvalue in [0, 1]
    topo = ds.topology.ring(8, weights="lazy" if algo.name == "d2" else "metropolis")
    hist = ds.run(algo, prob, topo, steps=1500, eval_every=1500)
    assert not hist.diverged
    err = np.mean(np.sum((hist.params - prob.info["x_star"][None]) ** 2, axis=1))
    assert err < 1e-5


def test_dsgd_keeps_a_bias(hetero_quadratic):
    prob = hetero_quadratic
    topo = ds.topology.ring(8)
    hist = ds.run(ds.algorithms.dsgd(0.2), prob, topo, steps=1500, eval_every=1500)
    assert not hist.diverged
    err = np.mean(np.sum((hist.params - prob.info["x_star"][None]) ** 2, axis=1))
    assert err > 1e-2  # heterogeneity leaves a consensus bias that no number of steps removes


def test_bias_corrected_methods_solve_heterogeneous_least_squares(ls, topo):
    """Heterogeneous Hessians too: the fixed point is the minimizer of (1/n) Σ f_i."""
    prob, A, y = ls
    H = sum(A[i].T @ A[i] / M for i in range(N)) / N
    r = sum(A[i].T @ y[i] / M for i in range(N)) / N
    x_star = np.linalg.solve(H, r)
    for algo in (ds.algorithms.gradient_tracking(0.05), ds.algorithms.exact_diffusion(0.05)):
        hist = ds.run(algo, prob, topo, steps=3000, eval_every=3000)
        np.testing.assert_allclose(hist.params, np.broadcast_to(x_star, (N, D)), atol=3e-3)
    dsgd = ds.run(ds.algorithms.dsgd(0.05), prob, topo, steps=3000, eval_every=3000)
    assert np.abs(dsgd.params.mean(0) - x_star).max() > 1e-2


def test_d2_rejects_small_lambda_min():
    W = np.array([[0.2, 0.8], [0.8, 0.2]])  # eigenvalues 1 and -0.6
    topo = ds.topology.from_matrix(W)
    prob = ds.problems.quadratic(2, 3)
    with pytest.raises(ValueError, match=r"d2 requires.*-1/3.*exact_diffusion.*lazy"):
        ds.run(ds.algorithms.d2(0.1), prob, topo, steps=10)
    # exact diffusion works on the same graph
    hist = ds.run(ds.algorithms.exact_diffusion(0.1), prob, topo, steps=10, eval_every=10)
    assert not hist.diverged


@pytest.mark.parametrize(
    "bad, match",
    [
        (
            lambda: ds.algorithms.dsgd(-0.1),
            r"learning_rate must be a finite positive number; got learning_rate=-0.1",
        ),
        (lambda: ds.algorithms.dsgd("fast"), r"learning_rate must be a positive number"),
        (lambda: ds.algorithms.dsgd(0.1, gossip_every=0), r"gossip_every must be an integer >= 1"),
        (
            lambda: ds.algorithms.dsgd(-0.1, local_optimizer=optax.sgd(1.0)),
            r"learning_rate must be a finite positive number",
        ),
        (
            lambda: ds.algorithms.dpsgd(None, local_optimizer=object()),
            r"optax GradientTransformation",
        ),
        (
            lambda: ds.algorithms.gradient_tracking(0.0),
            r"learning_rate must be a finite positive number",
        ),
    ],
)
def test_factory_validation(bad, match):
    with pytest.raises(ValueError, match=match):
        bad()


def test_schedule_learning_rate(ls, topo):
    """An optax schedule is evaluated at the step counter t."""
    prob, A, y = ls
    sched = optax.exponential_decay(0.05, transition_steps=1, decay_rate=0.9)
    got = trajectory(ds.algorithms.dsgd(sched), prob, topo, 10)
    X = np.zeros((N, D))
    for t in range(10):
        X = topo.W @ (X - 0.05 * 0.9**t * np_grads(X, A, y))
    np.testing.assert_allclose(got[-1], X, rtol=2e-4, atol=1e-5)
