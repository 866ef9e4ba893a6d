"""BEER (docs/reference/algorithms.md#beer): compressed gradient tracking.

Trajectories of the model, both public copies and the tracker run in float64 (a subprocess with
jax_enable_x64, tests/_reference.run_x64) and are compared with a plain-numpy float64
implementation of the equations (full-batch gradients, deterministic compressors), to 1e-10;
then the exact bits (one message at t = 0, two after, per leaf), the tracking invariant, the
reduction to gradient tracking, bias removal where Choco-SGD keeps a floor, and bad input.
"""

import numpy as np
import optax
import pytest

import decsim as ds
from decsim import runner

from ._reference import STEPS, D, N, np_grads, np_sign, np_top_k, run_x64
from .registry import TK, TK_BITS

A = ds.algorithms
C = ds.compression
ETA, GAMMA = 0.05, 0.4
SCHED = dict(init_value=0.1, transition_steps=1, decay_rate=0.95)

X64 = f"""
import optax
prob, A_, y = least_squares()
topo = ds.topology.ring(N)
out["W"] = topo.W
top1, sched = ds.compression.top_k(0.34), optax.exponential_decay(**{SCHED!r})
full = lambda s: (s.X, s.H, s.V, s.G)
for name, algo in (("top_k", ds.algorithms.beer({ETA}, {GAMMA}, top1)),
                   ("sign", ds.algorithms.beer({ETA}, {GAMMA}, ds.compression.sign())),
                   ("schedule", ds.algorithms.beer(sched, {GAMMA}, top1)),
                   ("identity", ds.algorithms.beer({ETA}, 1.0, ds.compression.identity()))):
    for key, value in zip("XHVG", trajectory(algo, prob, topo, STEPS, record=full)):
        out[name + "_" + key] = value
out["stoch_V"], out["stoch_g"] = trajectory(
    ds.algorithms.beer({ETA}, {GAMMA}, top1), prob._replace(batch_size=2), topo, STEPS, seed=2,
    record=lambda s: (s.V, s.g_prev))
"""


@pytest.fixture(scope="module")
def x64():
    return run_x64(X64)


def etas(schedule: bool):
    """η_t of each step; optax evaluates the schedule in float32, which the reference takes."""
    sched = optax.exponential_decay(**SCHED)
    return [float(sched(t)) if schedule else ETA for t in range(STEPS)]


def ref_beer(W, A_, y, lrs, gamma, comp):
    """The recorded states: X_t, H_t (t = 0..T) and, after step t, V_t and G_t (zeros first)."""
    L = W - np.eye(W.shape[0])
    X = H = G = V = g_prev = np.zeros((N, D))
    rec = {"X": [X], "H": [H], "V": [V], "G": [G]}
    for t, eta in enumerate(lrs):
        g = np_grads(X, A_, y)
        if t == 0:
            V = g  # G_0 = 0: the tracker is not sent at t = 0
        else:
            V = V + gamma * L @ G + g - g_prev
            G = G + comp(V - G)
        X = X + gamma * L @ H - eta * V
        H = H + comp(X - H)
        g_prev = g
        for k, v in zip("XHVG", (X, H, V, G)):
            rec[k].append(v)
    return {k: np.stack(v) for k, v in rec.items()}


COMPRESSORS = {"top_k": lambda Z: np_top_k(Z, 1), "sign": np_sign}  # top_k(0.34): 1 of D = 3


@pytest.mark.parametrize("case", ["top_k", "sign", "schedule"])
def test_trajectory_matches_the_equations_in_float64(case, x64, ls):
    _, A_, y = ls
    want = ref_beer(x64["W"], A_, y, etas(case == "schedule"), GAMMA,
                    COMPRESSORS.get(case, COMPRESSORS["top_k"]))
    assert np.abs(want["X"][-1]).max() > 0.1 and np.abs(want["G"][-1]).max() > 0.1  # it moved
    for k in "XHVG":
        got = x64[f"{case}_{k}"]
        assert got.dtype == np.float64 and got.shape == want[k].shape == (STEPS + 1, N, D)
        np.testing.assert_allclose(got, want[k], rtol=1e-10, atol=1e-12 * np.abs(want[k]).max(),
                                   err_msg=k)
    np.testing.assert_array_equal(x64[f"{case}_G"][:2], 0.0)  # G_0 = 0


def test_float32_trajectory_matches_the_equations(ls, topo):
    prob, A_, y = ls
    got = ds.runner.trajectory(A.beer(ETA, GAMMA, C.top_k(0.34)), prob, topo, STEPS)
    want = ref_beer(topo.W, A_, y, etas(False), GAMMA, COMPRESSORS["top_k"])["X"]
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-5)


def test_bits_one_message_at_t0_then_both_per_leaf(two_leaf, topo):
    """Layer-wise top_k on the two-leaf model: TK_BITS per message (tests/registry.py)."""
    hist = ds.run(A.beer(ETA, 0.3, TK), two_leaf, topo, steps=4, eval_every=1)
    np.testing.assert_array_equal(hist.metrics["bits"], TK_BITS * np.array([0, 1, 3, 5, 7]))
    np.testing.assert_array_equal(hist.metrics["comm_rounds"], [0, 1, 2, 3, 4])
    np.testing.assert_array_equal(hist.metrics["grad_evals"], [0, 1, 2, 3, 4])


# ---------------------------------------------------------------------------------------------
# identities


def test_tracker_mean_is_the_gradient_mean(x64):
    """mean(V_t) = mean(g_t) with minibatch gradients and top_k, at every step."""
    V, g = x64["stoch_V"][1:], x64["stoch_g"][1:]
    np.testing.assert_allclose(V.mean(axis=1), g.mean(axis=1), rtol=0, atol=1e-13)
    assert np.abs(V[5:] - g[5:]).max() > 1e-2  # tracking, not copying


def test_identity_and_gamma_one_is_gradient_tracking_from_t1(x64, ls):
    """From BEER's state at t = 1: X_{t+1} = W X_t − η V_t, V_{t+1} = W V_t + g_{t+1} − g_t."""
    _, A_, y = ls
    W = x64["W"]
    X, V = x64["identity_X"], x64["identity_V"][1:]  # V[t] = V_t
    np.testing.assert_allclose(V[1], np_grads(X[1], A_, y), rtol=1e-12)  # V_1 = g_1 (G_0 = 0)
    Xg, Vg = X[1], V[1]
    for t in range(1, STEPS):
        Xg_next = W @ Xg - ETA * Vg
        Vg = W @ Vg + np_grads(Xg_next, A_, y) - np_grads(Xg, A_, y)
        Xg = Xg_next
        np.testing.assert_allclose(X[t + 1], Xg, rtol=1e-10, atol=1e-13)
        if t + 1 < STEPS:
            np.testing.assert_allclose(V[t + 1], Vg, rtol=1e-10, atol=1e-13)
    # and the public copies are the iterates: nothing is lost to compression
    np.testing.assert_allclose(x64["identity_H"][1:], X[1:], rtol=0, atol=1e-15)
    assert np.abs(X[-1] - X[1]).max() > 0.1


# ---------------------------------------------------------------------------------------------
# behaviour


def test_tracking_removes_the_floor_choco_keeps():
    """Heterogeneous quadratic, full gradients, the same top_k and γ: BEER reaches x*, Choco-SGD
    stops at a heterogeneity floor."""
    prob = ds.problems.quadratic(8, 6, mu=0.5, L=1.0, noise=0.0, heterogeneity=2.0, seed=4)
    topo, x_star = ds.topology.ring(8), prob.info["x_star"][None]
    errs = {}
    for name, algo in (("beer", A.beer(0.1, 0.2, C.top_k(0.34))),
                       ("choco", A.choco_sgd(0.1, 0.2, C.top_k(0.34)))):
        hist = ds.run(algo, prob, topo, steps=1500, eval_every=1500)
        assert not hist.diverged
        errs[name] = np.mean(np.sum((hist.params - x_star) ** 2, axis=1))
    assert errs["beer"] < 1e-8
    assert errs["choco"] > 1e-1


# ---------------------------------------------------------------------------------------------
# bad input


@pytest.mark.parametrize("bad, match", [
    (lambda: A.beer(0.1, 0.0, TK), r"beer: gamma must be a number in \(0, 1\]; got gamma=0.0\. "
                                   r"Pick it with decsim.algorithms.tune_gamma"),
    (lambda: A.beer(0.1, 1.5, TK), r"beer: gamma must be a number in \(0, 1\]; got gamma=1.5"),
    (lambda: A.beer(0.1, optax.constant_schedule(0.3), TK),
     r"beer: gamma must be a number in \(0, 1\] \(a consensus step size, not a schedule\)"),
    (lambda: A.beer(0.1, 0.3, object()),
     r"beer: compressor must be a decsim Compressor, e.g. decsim.compression.top_k\(0.01\); "
     r"got <object"),
    (lambda: A.beer(0.1, 0.3, "top_k"), r"beer: compressor must be a decsim Compressor"),
    (lambda: A.beer(-0.1, 0.3, TK),
     r"learning_rate must be a finite positive number; got learning_rate=-0.1"),
])
def test_bad_arguments(bad, match):
    with pytest.raises(ValueError, match=match):
        bad()


def test_a_per_run_gamma_is_checked_before_compiling(ls, topo):
    before = dict(runner.TRACE_COUNTS)
    with pytest.raises(ValueError, match=r"beer: gamma must be a number in \(0, 1\]; got "
                                         r"gamma=2.0"):
        ds.run(A.beer(0.05, 0.3, TK), ls[0], topo, steps=4, seeds=[0, 0],
               hparams={"gamma": [0.3, 2.0]})
    assert dict(runner.TRACE_COUNTS) == before
