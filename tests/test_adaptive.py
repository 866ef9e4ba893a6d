"""Adaptive decentralized methods (docs/reference/algorithms.md#family-adaptive) against
plain-numpy implementations of their equations, their invariants and identities, and their costs.

The test problem is heterogeneous least squares whose workers see gradients of very different
scales (worker i's data are multiplied by ``SCALES[i]``, so its gradients by ``SCALES[i]²``): the
regime in which per-coordinate, per-worker scalings differ and the methods differ most.
"""

import doctest

import jax.numpy as jnp
import numpy as np
import pytest

import decsim as ds
import decsim.compression as C
from decsim.algorithms import adaptive
from decsim.runner import trajectory

N, M, D = 5, 6, 3
STEPS = 25
SCALES = np.array([0.3, 0.5, 1.0, 2.0, 3.0])


from ._reference import least_squares, np_grads, np_top_k  # noqa: E402


@pytest.fixture(scope="module")
def ls():
    """The shared least-squares problem with workers of very different gradient scales."""
    return least_squares(SCALES)


# ---------------------------------------------------------------------------------------------
# plain-numpy (float64) references, written from docs/reference/algorithms.md#family-adaptive
# with t counted from 1


def ref_dadam(X, A, y, W, eta, T, b1=0.9, b2=0.999, b3=0.9, eps=1e-8):
    M = np.zeros_like(X)
    V = np.zeros_like(X)
    Vbar = np.zeros_like(X)
    out = [X]
    for t in range(1, T + 1):
        G = np_grads(X, A, y)
        M = b1 * M + (1 - b1) * G
        V = b2 * V + (1 - b2) * G**2
        Mhat = M / (1 - b1**t)
        Vhat = V / (1 - b2**t)
        Vbar = b3 * Vbar + (1 - b3) * np.maximum(Vbar, Vhat)
        X = W @ X - eta * Mhat / (np.sqrt(Vbar) + eps)
        out.append(X)
    return out


def ref_damsgrad(X, A, y, W, eta, T, b1=0.9, b2=0.99, eps=1e-6, adagrad=False, record=False):
    M = np.zeros_like(X)
    V = np.zeros_like(X)
    Vhat_prev = np.full_like(X, eps)  # V̂_0
    Ut = np.full_like(X, eps)  # Ũ_1
    U = np.full_like(X, eps)  # U_1
    out, rec = [X], [(Ut, Vhat_prev)]
    for t in range(1, T + 1):
        G = np_grads(X, A, y)
        M = b1 * M + (1 - b1) * G
        if adagrad:
            Vhat = (t - 1) / t * Vhat_prev + G**2 / t
        else:
            V = b2 * V + (1 - b2) * G**2
            Vhat = np.maximum(Vhat_prev, V)
        X = W @ X - eta * M / np.sqrt(U)
        Ut = W @ Ut - Vhat_prev + Vhat
        U = np.maximum(Ut, eps)
        Vhat_prev = Vhat
        out.append(X)
        rec.append((Ut, Vhat))
    return rec if record else out


def ref_amsgrad_then_average(X, A, y, W, eta, T, b1=0.9, b2=0.99, eps=1e-6):
    """Per-worker AMSGrad (no bias correction, moments from 0) followed by one W-averaging."""
    M = np.zeros_like(X)
    V = np.zeros_like(X)
    Vhat = np.zeros_like(X)
    out = [X]
    for _ in range(T):
        G = np_grads(X, A, y)
        M = b1 * M + (1 - b1) * G
        V = b2 * V + (1 - b2) * G**2
        Vhat = np.maximum(Vhat, V)
        X = W @ (X - eta * M / (np.sqrt(Vhat) + eps))
        out.append(X)
    return out


def np_top_k_fraction(x, fraction):
    """Per-row top-k of a [n, d] array, k = max(1, round(fraction d))."""
    return np_top_k(x, max(1, int(round(fraction * x.shape[1]))))


def ref_ada_choco(X, A, y, W, eta, T, gamma, fraction=None, b1=0.9, b2=0.99, eps=1e-6):
    """Choco-SGD (paper order) with a local AMSGrad step; top-k or exact messages."""
    M = np.zeros_like(X)
    V = np.zeros_like(X)
    Vhat = np.zeros_like(X)
    Xhat = np.zeros_like(X)
    out = [X]
    for _ in range(T):
        G = np_grads(X, A, y)
        M = b1 * M + (1 - b1) * G
        V = b2 * V + (1 - b2) * G**2
        Vhat = np.maximum(Vhat, V)
        Xh = X - eta * M / (np.sqrt(Vhat) + eps)
        Q = Xh - Xhat if fraction is None else np_top_k_fraction(Xh - Xhat, fraction)
        Xhat = Xhat + Q
        X = Xh + gamma * (W @ Xhat - Xhat)
        out.append(X)
    return out


TABLE = {
    "dadam": (lambda: adaptive.dadam(0.05), lambda *a: ref_dadam(*a, 0.05, STEPS)),
    "dadam_betas": (
        lambda: adaptive.dadam(0.02, b1=0.5, b2=0.9, b3=0.5, eps=1e-3),
        lambda *a: ref_dadam(*a, 0.02, STEPS, b1=0.5, b2=0.9, b3=0.5, eps=1e-3),
    ),
    "damsgrad": (lambda: adaptive.damsgrad(2e-4), lambda *a: ref_damsgrad(*a, 2e-4, STEPS)),
    "damsgrad_betas": (
        lambda: adaptive.damsgrad(2e-3, b1=0.5, b2=0.9, eps=1e-3),
        lambda *a: ref_damsgrad(*a, 2e-3, STEPS, b1=0.5, b2=0.9, eps=1e-3),
    ),
    "dadagrad": (
        lambda: adaptive.dadagrad(2e-4),
        lambda *a: ref_damsgrad(*a, 2e-4, STEPS, adagrad=True),
    ),
    "dadagrad_betas": (
        lambda: adaptive.dadagrad(1e-3, b1=0.0, eps=1e-4),
        lambda *a: ref_damsgrad(*a, 1e-3, STEPS, b1=0.0, eps=1e-4, adagrad=True),
    ),
    "ada_choco_sgd": (
        lambda: adaptive.ada_choco_sgd(0.05, 0.4, C.top_k(0.34)),
        lambda *a: ref_ada_choco(*a, 0.05, STEPS, gamma=0.4, fraction=0.34),
    ),
    "ada_choco_sgd_betas": (
        lambda: adaptive.ada_choco_sgd(0.02, 0.7, C.top_k(0.67), b1=0.5, b2=0.9, eps=1e-3),
        lambda *a: ref_ada_choco(
            *a, 0.02, STEPS, gamma=0.7, fraction=0.67, b1=0.5, b2=0.9, eps=1e-3
        ),
    ),
}


@pytest.mark.parametrize("name", list(TABLE))
def test_trajectory_matches_equations(name, ls, topo):
    prob, A, y = ls
    make, ref = TABLE[name]
    got = trajectory(make(), prob, topo, STEPS)
    want = np.stack(ref(np.zeros((N, D)), A, y, topo.W))
    assert got.shape == want.shape == (STEPS + 1, N, D)
    assert np.abs(want[-1] - want[0]).max() > 0.1  # the iterates move
    scale = np.max(np.abs(want))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * scale)


def test_ada_choco_identity_gamma_one_is_amsgrad_then_averaging(ls, topo):
    """With exact messages and γ = 1: X_{t+1} = W (X_t − η M / (sqrt(V̂) + eps)), per-worker
    AMSGrad (moments from 0, no bias correction) followed by one W-averaging."""
    prob, A, y = ls
    want = np.stack(ref_amsgrad_then_average(np.zeros((N, D)), A, y, topo.W, 0.05, STEPS))
    for algo in (adaptive.ada_choco_sgd(0.05), adaptive.ada_choco_sgd(0.05, 1.0, C.identity())):
        got = trajectory(algo, prob, topo, STEPS)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())
    # and it is not the same as averaging before the adaptive step (the order matters)
    assert np.abs(want[2] - want[1]).max() > 1e-2


@pytest.mark.parametrize("adagrad", [False, True], ids=["damsgrad", "dadagrad"])
def test_tracked_second_moment_invariant(adagrad, ls, topo):
    """mean_i(Ũ_{t+1}) = mean_i(V̂_t) at every step, with stochastic gradients."""
    prob, _, _ = ls
    stoch = prob._replace(batch_size=2)
    algo = adaptive.dadagrad(1e-3) if adagrad else adaptive.damsgrad(1e-3)
    U_tilde, V_hat = trajectory(
        algo, stoch, topo, 30, seed=1, record=lambda s: (s.U_tilde, s.V_hat)
    )
    assert U_tilde.shape == V_hat.shape == (31, N, D)
    np.testing.assert_allclose(U_tilde[0], 1e-6)  # Ũ_1 = V̂_0 = eps
    np.testing.assert_allclose(V_hat[0], 1e-6)
    scale = np.abs(V_hat).max()
    assert scale > 1e-2
    np.testing.assert_allclose(
        U_tilde.mean(axis=1), V_hat.mean(axis=1), rtol=1e-5, atol=1e-6 * scale
    )
    # Ũ tracks the average; it is not each worker's own V̂, nor yet the exact average
    assert np.abs(U_tilde[5:] - V_hat[5:]).max() > 1e-2 * scale
    assert np.abs(U_tilde[5:] - U_tilde[5:].mean(axis=1, keepdims=True)).max() > 1e-3 * scale


def test_ada_choco_mean_moves_only_by_local_steps(ls, topo):
    """For any compressor: mean(X_{t+1}) = mean(X_t − η M / (sqrt(V̂) + eps))."""
    prob, _, _ = ls
    eta, eps = 0.05, 1e-6
    algo = adaptive.ada_choco_sgd(eta, 0.3, C.qsgd(2))  # stochastic, biased compressor
    X, Mom, Vh = trajectory(
        algo,
        prob._replace(batch_size=2),
        topo,
        20,
        seed=2,
        record=lambda s: (s.X, s.opt.M, s.opt.V_hat),
    )
    local = X[:-1] - eta * Mom[1:] / (np.sqrt(Vh[1:]) + eps)
    np.testing.assert_allclose(X[1:].mean(axis=1), local.mean(axis=1), rtol=1e-5, atol=1e-5)
    assert np.abs(X[1:] - X[1:].mean(axis=1, keepdims=True)).max() > 1e-3  # not in consensus


def test_costs(ls, topo):
    """Bits per worker per step: DADAM 32 d (X only), DAMSGrad/DAdaGrad 2·32 d (X and Ũ),
    ada_choco_sgd the compressor's payload."""
    prob, _, _ = ls
    d = ds.tree.size(prob.params0)
    cases = [
        (adaptive.dadam(0.01), 32 * d),
        (adaptive.damsgrad(1e-3), 64 * d),
        (adaptive.dadagrad(1e-3), 64 * d),
        (adaptive.ada_choco_sgd(0.01), 32 * d),
        (adaptive.ada_choco_sgd(0.01, 0.5, C.top_k(0.34)), 1 * (32 + 2)),
    ]
    for algo, bits in cases:
        hist = ds.run(algo, prob, topo, steps=10, eval_every=5)
        np.testing.assert_array_equal(hist.metrics["grad_evals"], [0, 5, 10])
        np.testing.assert_array_equal(hist.metrics["comm_rounds"], [0, 5, 10])
        np.testing.assert_allclose(hist.metrics["bits"], [0, 5 * bits, 10 * bits])


def test_schedule_learning_rate(ls, topo):
    """An optax schedule is evaluated at the step counter (0 at the first step); the bias
    corrections still count t from 1."""
    import optax

    prob, A, y = ls
    sched = optax.exponential_decay(0.05, transition_steps=1, decay_rate=0.9)
    got = trajectory(adaptive.dadam(sched), prob, topo, 10)
    b1, b2, b3, eps = 0.9, 0.999, 0.9, 1e-8
    X = np.zeros((N, D))
    M, V, Vbar = np.zeros_like(X), np.zeros_like(X), np.zeros_like(X)
    for t in range(1, 11):
        G = np_grads(X, A, y)
        M = b1 * M + (1 - b1) * G
        V = b2 * V + (1 - b2) * G**2
        Vbar = b3 * Vbar + (1 - b3) * np.maximum(Vbar, V / (1 - b2**t))
        X = topo.W @ X - 0.05 * 0.9 ** (t - 1) * (M / (1 - b1**t)) / (np.sqrt(Vbar) + eps)
    np.testing.assert_allclose(got[-1], X, rtol=1e-4, atol=1e-5)


FACTORIES = {
    "dadam": lambda lr: adaptive.dadam(lr),
    "damsgrad": lambda lr: adaptive.damsgrad(lr),
    "dadagrad": lambda lr: adaptive.dadagrad(lr),
    "ada_choco_sgd": lambda lr: adaptive.ada_choco_sgd(lr, 0.5, C.qsgd(4)),
}


def test_runs_differing_in_learning_rate_share_one_program(ls, topo):
    from decsim import runner

    prob, _, _ = ls
    ds.run(adaptive.damsgrad(1e-3), prob, topo, steps=10, eval_every=10)
    before = runner.trace_count()
    a = ds.run(
        adaptive.damsgrad(1e-3),
        prob,
        topo,
        steps=10,
        eval_every=10,
        hparams={"learning_rate": 2e-3},
    )
    b = ds.run(adaptive.damsgrad(2e-3), prob, topo, steps=10, eval_every=10)
    assert runner.trace_count() == before
    np.testing.assert_allclose(a.metrics["loss"], b.metrics["loss"], rtol=1e-6)


@pytest.mark.parametrize(
    "bad, match",
    [
        (
            lambda: adaptive.dadam(-0.1),
            r"learning_rate must be a finite positive number; got learning_rate=-0.1",
        ),
        (lambda: adaptive.dadam(0.1, b1=1.0), r"b1 must be a number in \[0, 1\).*got b1=1.0"),
        (lambda: adaptive.dadam(0.1, b3=-0.5), r"b3 must be a number in \[0, 1\)"),
        (lambda: adaptive.damsgrad(0.1, b2=1.5), r"b2 must be a number in \[0, 1\)"),
        (
            lambda: adaptive.damsgrad(0.1, eps=0.0),
            r"eps must be a finite positive number; got eps=0.0",
        ),
        (lambda: adaptive.dadagrad("fast"), r"learning_rate must be a positive number"),
        (
            lambda: adaptive.ada_choco_sgd(0.1, gamma=1.5),
            r"gamma must be a number in \(0, 1\]; got gamma=1.5",
        ),
        (
            lambda: adaptive.ada_choco_sgd(0.1, 0.5, compressor="top_k"),
            r"compressor must be a decsim Compressor",
        ),
    ],
)
def test_factory_validation(bad, match):
    with pytest.raises(ValueError, match=match):
        bad()


def test_heterogeneous_scales_dadam_plateaus_damsgrad_keeps_decreasing():
    """Chen et al.'s point: when workers' gradients differ in scale, each DADAM worker normalizes
    by its own second moment, so x̄ settles where the *normalized* gradients balance, not at a
    stationary point of f: ||∇f(x̄)||² stalls, at every learning rate. DAMSGrad's shared, tracked
    second moment keeps x̄ moving along ∇f."""
    n, d = 6, 4
    rng = np.random.default_rng(0)
    scales = 10.0 ** np.linspace(-1.0, 1.0, n)
    data = {
        "a": np.broadcast_to(scales[:, None, None], (n, 1, d)).astype(np.float32).copy(),
        "c": rng.normal(size=(n, 1, d)).astype(np.float32),
    }

    def loss(x, b):
        return 0.5 * jnp.mean(jnp.sum(b["a"] * jnp.square(x[None, :] - b["c"]), axis=1))

    prob = ds.problems.custom(loss, np.zeros(d, np.float32), data)
    topo = ds.topology.ring(n)
    g0 = None
    for lr in (0.003, 0.01, 0.03):
        h = ds.run(adaptive.dadam(lr), prob, topo, steps=2000, eval_every=500)
        g = h.metrics["grad_norm_sq"]
        g0 = g[0]
        assert g[-1] > 0.1 * g0  # plateau far from stationarity
        assert g[-1] > 0.5 * g[2]  # and no progress over the last 1000 steps
    h = ds.run(adaptive.damsgrad(3e-3), prob, topo, steps=2000, eval_every=500)
    g = h.metrics["grad_norm_sq"]
    assert g[-1] < 1e-2 * g0
    assert g[-1] < 0.5 * g[2]  # still decreasing


def test_docstring_examples():
    result = doctest.testmod(adaptive, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
