"""EXTRA and quasi-global momentum (docs/reference/algorithms.md#family-more-baselines).

Trajectories run in float64 (a subprocess with jax_enable_x64, tests/_reference.run_x64) and are
compared with plain-numpy float64 implementations of the equations on the heterogeneous
least-squares problem with full-batch gradients, to 1e-10; then identities (EXTRA's mean
recursion, β = 0 is D-SGD), behaviour (exact convergence where D-SGD keeps a bias) and bad input.
"""

import numpy as np
import optax
import pytest

import decsim as ds
from decsim import runner
from decsim.runner import trajectory

from ._reference import STEPS, D, N, np_grads, run_x64

A = ds.algorithms
ETA, BETA = 0.05, 0.9
SCHED = dict(init_value=0.05, transition_steps=1, decay_rate=0.9)  # η_t = 0.05 · 0.9^t

X64 = f"""
prob, A_, y = least_squares()
topo = ds.topology.ring(N)
sched = optax.exponential_decay(**{SCHED!r})
mom = optax.sgd(1.0, momentum={BETA})
out["W"] = topo.W
out["extra"] = trajectory(ds.algorithms.extra({ETA}), prob, topo, STEPS)
out["extra_schedule"] = trajectory(ds.algorithms.extra(sched), prob, topo, STEPS)
out["extra_momentum"] = trajectory(ds.algorithms.extra({ETA}, local_optimizer=mom), prob, topo,
                                   STEPS)
out["extra_stoch_X"], out["extra_stoch_U"] = trajectory(
    ds.algorithms.extra(sched), prob._replace(batch_size=2), topo, STEPS, seed=3,
    record=lambda s: (s.X, s.U_prev))
for name, lr in (("qg", {ETA}), ("qg_schedule", sched)):
    out[name + "_X"], out[name + "_M"] = trajectory(
        ds.algorithms.qg_dsgdm(lr, beta={BETA}), prob, topo, STEPS,
        record=lambda s: (s.X, s.M_hat))
"""


@pytest.fixture(scope="module")
def x64():
    return run_x64("import optax\n" + X64)


def etas(schedule: bool):
    """η_t of each step; optax evaluates the schedule in float32, which the reference takes."""
    sched = optax.exponential_decay(**SCHED)
    return [float(sched(t)) if schedule else ETA for t in range(STEPS)]


# ---------------------------------------------------------------------------------------------
# numpy references (float64), from the equations


def ref_extra(W, A_, y, lrs, beta=None):
    """X_1 = W X_0 + U_0; X_{t+1} = (I + W) X_t − W̃ X_{t−1} + U_t − U_{t−1}, U_t = −η_t G_t
    (or −η_t m_t with heavy-ball m_t = G_t + β m_{t−1} when ``beta`` is given)."""
    I = np.eye(W.shape[0])
    Wt = 0.5 * (I + W)
    X = np.zeros((N, D))
    m = np.zeros_like(X)
    out, X_prev, U_prev = [X], None, None
    for t, eta in enumerate(lrs):
        G = np_grads(X, A_, y)
        m = G if beta is None else G + beta * m
        U = -eta * m
        X_new = W @ X + U if t == 0 else (I + W) @ X - Wt @ X_prev + U - U_prev
        X_prev, X, U_prev = X, X_new, U
        out.append(X)
    return np.stack(out)


def ref_qg(W, A_, y, lrs, beta):
    X, M_hat = np.zeros((N, D)), np.zeros((N, D))
    Xs, Ms = [X], [M_hat]
    for eta in lrs:
        M = beta * M_hat + np_grads(X, A_, y)
        X_new = W @ (X - eta * M)
        M_hat = beta * M_hat + (1 - beta) * (X - X_new) / eta
        X = X_new
        Xs.append(X)
        Ms.append(M_hat)
    return np.stack(Xs), np.stack(Ms)


def assert_exact(got, want):
    assert got.dtype == np.float64 and got.shape == want.shape
    assert np.abs(want[-1] - want[0]).max() > 0.1  # it moved
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12 * np.abs(want).max())


@pytest.mark.parametrize("case", ["extra", "extra_schedule", "extra_momentum"])
def test_extra_trajectory_matches_the_equations_in_float64(case, x64, ls):
    _, A_, y = ls
    lrs = etas(case == "extra_schedule")
    want = ref_extra(x64["W"], A_, y, lrs, BETA if case == "extra_momentum" else None)
    assert_exact(x64[case], want)


@pytest.mark.parametrize("case", ["qg", "qg_schedule"])
def test_qg_dsgdm_trajectory_matches_the_equations_in_float64(case, x64, ls):
    _, A_, y = ls
    X, M = ref_qg(x64["W"], A_, y, etas(case == "qg_schedule"), BETA)
    assert_exact(x64[case + "_X"], X)
    np.testing.assert_allclose(x64[case + "_M"], M, rtol=1e-10, atol=1e-12 * np.abs(M).max())


def test_float32_trajectories_match_the_equations(ls, topo):
    prob, A_, y = ls
    got = trajectory(A.extra(ETA), prob, topo, STEPS)
    np.testing.assert_allclose(got, ref_extra(topo.W, A_, y, etas(False)), rtol=2e-4, atol=2e-5)
    got = trajectory(A.qg_dsgdm(ETA, BETA), prob, topo, STEPS)
    want = ref_qg(topo.W, A_, y, etas(False), BETA)[0]
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-5)


# ---------------------------------------------------------------------------------------------
# identities


def test_extra_mean_follows_the_average_gradient_step_every_step(x64, ls):
    """x̄_{t+1} = x̄_t − η_t ḡ_t, stochastic gradients and a schedule; U_prev after step t is
    −η_t G_t."""
    _, A_, y = ls
    X, U = x64["extra_stoch_X"], x64["extra_stoch_U"]
    np.testing.assert_allclose(X[1:].mean(axis=1) - X[:-1].mean(axis=1), U[1:].mean(axis=1),
                               rtol=0, atol=1e-14)
    # the gradients were minibatch ones (not the full ones at X_t), and the rows disagree
    full = np.stack([-eta * np_grads(X[t], A_, y) for t, eta in enumerate(etas(True))])
    assert np.abs(U[1:] - full).max() > 1e-3
    assert np.abs(X[-1] - X[-1].mean(axis=0)).max() > 1e-2


@pytest.mark.parametrize("lr", [ETA, optax.exponential_decay(**SCHED)],
                         ids=["constant", "schedule"])
def test_qg_dsgdm_with_beta_zero_is_dsgd_bitwise(lr, ls, topo):
    prob = ls[0]._replace(batch_size=2)
    got = trajectory(A.qg_dsgdm(lr, beta=0.0), prob, topo, STEPS, seed=1)
    want = trajectory(A.dsgd(lr), prob, topo, STEPS, seed=1)
    assert np.abs(want[-1] - want[0]).max() > 0.1
    np.testing.assert_array_equal(got, want)


# ---------------------------------------------------------------------------------------------
# behaviour


@pytest.fixture(scope="module")
def hetero_quadratic():
    return ds.problems.quadratic(8, 6, mu=0.5, L=1.0, noise=0.0, heterogeneity=2.0, seed=4)


def _final(algo, prob, steps=1500):
    hist = ds.run(algo, prob, ds.topology.ring(8), steps=steps, eval_every=steps)
    assert not hist.diverged
    return hist


def test_extra_converges_exactly_where_dsgd_keeps_a_bias(hetero_quadratic):
    prob = hetero_quadratic
    x_star = prob.info["x_star"][None]
    # η = 0.4 < 2 λ_min(W̃) / L = 2/3 on this ring; a larger step also keeps the float32 floor
    # low (round-off in the implicit correction term biases x̄ slightly, see extra's docstring)
    hist = _final(A.extra(0.4), prob)
    assert hist.metrics["consensus"][-1] < 1e-10
    assert np.mean(np.sum((hist.params - x_star) ** 2, axis=1)) < 1e-8
    dsgd = _final(A.dsgd(0.4), prob)
    assert np.mean(np.sum((dsgd.params - x_star) ** 2, axis=1)) > 1e-2


def test_extra_solves_heterogeneous_least_squares(ls, topo):
    """Different Hessians per worker: the fixed point is the minimizer of (1/n) Σ f_i."""
    prob, A_, y = ls
    M = A_.shape[1]
    H = sum(A_[i].T @ A_[i] / M for i in range(N)) / N
    r = sum(A_[i].T @ y[i] / M for i in range(N)) / N
    hist = ds.run(A.extra(0.05), prob, topo, steps=3000, eval_every=3000)
    np.testing.assert_allclose(hist.params, np.broadcast_to(np.linalg.solve(H, r), (N, D)),
                               atol=3e-3)


def test_qg_dsgdm_has_dsgds_fixed_point(hetero_quadratic):
    """At a fixed point D = 0 and M̂ = 0, so X = W (X − η G): D-SGD's fixed point (with its bias),
    reached with momentum."""
    prob = hetero_quadratic
    qg = _final(A.qg_dsgdm(0.1, beta=0.9), prob)
    dsgd = _final(A.dsgd(0.1), prob)
    np.testing.assert_allclose(qg.params, dsgd.params, atol=1e-4)
    assert np.mean(np.sum((qg.params - prob.info["x_star"][None]) ** 2, axis=1)) > 1e-2


# ---------------------------------------------------------------------------------------------
# bad input


@pytest.mark.parametrize("bad, match", [
    (lambda: A.qg_dsgdm(0.1, beta=1.0),
     r"qg_dsgdm: beta must be a number in \[0, 1\); got beta=1.0\. .*momentum weight"),
    (lambda: A.qg_dsgdm(0.1, beta=-0.1), r"qg_dsgdm: beta must be a number in \[0, 1\)"),
    (lambda: A.qg_dsgdm(0.1, beta="0.9"), r"qg_dsgdm: beta must be a number in \[0, 1\)"),
    (lambda: A.qg_dsgdm(0.1, beta=optax.constant_schedule(0.9)),
     r"qg_dsgdm: beta must be a number"),
    (lambda: A.qg_dsgdm(-0.1),
     r"learning_rate must be a finite positive number; got learning_rate=-0.1"),
    (lambda: A.extra(0.0), r"learning_rate must be a finite positive number; got "
                           r"learning_rate=0.0"),
    (lambda: A.extra(0.1, local_optimizer=object()), r"extra: local_optimizer must be an optax"),
])
def test_bad_arguments(bad, match):
    with pytest.raises(ValueError, match=match):
        bad()


def test_a_per_run_beta_is_checked_before_compiling(ls, topo):
    before = dict(runner.TRACE_COUNTS)
    with pytest.raises(ValueError, match=r"qg_dsgdm: beta must be a number in \[0, 1\); got "
                                         r"beta=1.0"):
        ds.run(A.qg_dsgdm(0.05), ls[0], topo, steps=4, seeds=[0, 0],
               hparams={"beta": [0.5, 1.0]})
    assert dict(runner.TRACE_COUNTS) == before
