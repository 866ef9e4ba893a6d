"""Local optimizers (any optax transformation) in every algorithm with a local step, and the
learning rate as a traced multiplier of the optimizer's update or of a schedule.

Trajectories are compared with float64 numpy implementations of the equations with full-batch
gradients (tests/_reference.py); the multiplier form is compared with the optimizer built with
that learning rate, bit for bit.
"""

import jax
import numpy as np
import optax
import pytest

import decsim as ds
from decsim import runner
from decsim.runner import trajectory

from ._reference import STEPS, N, np_grads, np_top_k

A = ds.algorithms
C = ds.compression
BETA, ETA = 0.9, 0.05


# ---------------------------------------------------------------------------------------------
# numpy references: heavy-ball momentum (optax.trace: m = v + β m; update = −η m)


def ref_choco_momentum(X, A_, y, W, T, gamma, k):
    out, m, X_hat = [X], np.zeros_like(X), np.zeros_like(X)
    for _ in range(T):
        m = np_grads(X, A_, y) + BETA * m
        half = X - ETA * m
        X_hat = X_hat + np_top_k(half - X_hat, k)
        X = half + gamma * (W @ X_hat - X_hat)
        out.append(X)
    return out


def ref_tracking_momentum(X, A_, y, W, T):
    out, m = [X], np.zeros_like(X)
    Y, G_prev = np.zeros_like(X), np.zeros_like(X)
    for _ in range(T):
        G = np_grads(X, A_, y)
        Y = W @ Y + G - G_prev  # the tracker tracks the raw gradients
        m = Y + BETA * m  # the optimizer is fed the tracker
        X = W @ X - ETA * m
        G_prev = G
        out.append(X)
    return out


def ref_exact_diffusion_momentum(X, A_, y, W, T):
    Wb = 0.5 * (np.eye(W.shape[0]) + W)
    out, m = [X], np.zeros_like(X)
    X_prev, U_prev = X, np.zeros_like(X)
    for _ in range(T):
        m = np_grads(X, A_, y) + BETA * m
        U = -ETA * m
        X_prev, X = X, Wb @ (2 * X - X_prev + U - U_prev)
        U_prev = U
        out.append(X)
    return out


MOMENTUM = optax.sgd(1.0, momentum=BETA)
TRAJECTORIES = {
    "choco_sgd": (lambda: A.choco_sgd(ETA, 0.4, C.top_k(0.5), local_optimizer=MOMENTUM),
                  lambda *a: ref_choco_momentum(*a, STEPS, 0.4, 2)),  # k = round(1.5) = 2 of 3
    "gradient_tracking": (lambda: A.gradient_tracking(ETA, local_optimizer=MOMENTUM),
                          lambda *a: ref_tracking_momentum(*a, STEPS)),
    "exact_diffusion": (lambda: A.exact_diffusion(ETA, local_optimizer=MOMENTUM),
                        lambda *a: ref_exact_diffusion_momentum(*a, STEPS)),
}


@pytest.mark.parametrize("name", list(TRAJECTORIES))
def test_momentum_trajectory_matches_the_equations(name, ls, topo):
    prob, A_, y = ls
    make, ref = TRAJECTORIES[name]
    got = trajectory(make(), prob, topo, STEPS)
    want = np.stack(ref(np.zeros_like(got[0], dtype=np.float64), A_, y, topo.W))
    assert got.shape == want.shape == (STEPS + 1, N, 3)
    assert np.abs(want[-1] - want[0]).max() > 0.5  # it moved
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-5)


# ---------------------------------------------------------------------------------------------
# learning_rate times the optimizer built with learning rate 1 is the optimizer built with it

OPTIMIZERS = {
    "sgd": lambda lr: optax.sgd(lr),
    "momentum": lambda lr: optax.sgd(lr, momentum=0.9),
    "nesterov": lambda lr: optax.sgd(lr, momentum=0.9, nesterov=True),
    "adam": lambda lr: optax.adam(lr),
    "adamw": lambda lr: optax.adamw(lr, weight_decay=0.1),
}
FACTORIES = {
    "dsgd": lambda lr, opt: A.dsgd(lr, local_optimizer=opt),
    "choco_sgd": lambda lr, opt: A.choco_sgd(lr, 0.4, C.top_k(0.5), local_optimizer=opt),
    "gradient_tracking": lambda lr, opt: A.gradient_tracking(lr, local_optimizer=opt),
}


@pytest.mark.parametrize("factory", list(FACTORIES))
@pytest.mark.parametrize("opt", list(OPTIMIZERS))
def test_multiplier_equals_the_optimizer_built_with_it_exactly(factory, opt, ls, topo):
    prob = ls[0]
    make, build = FACTORIES[factory], OPTIMIZERS[opt]
    with jax.numpy_dtype_promotion("standard"):  # optax's adam mixes int32 counts and floats
        scaled = trajectory(make(0.03, build(1.0)), prob, topo, 15)
        direct = trajectory(make(None, build(0.03)), prob, topo, 15)
    assert np.abs(direct[-1] - direct[0]).max() > 1e-2
    np.testing.assert_array_equal(scaled, direct)


def test_an_optimizer_alone_has_multiplier_one_and_is_unchanged(ls, topo):
    prob = ls[0]
    opt = optax.sgd(0.05, momentum=0.9)
    alone = A.dsgd(local_optimizer=opt)
    assert alone.hparams == {"learning_rate": 1.0}
    np.testing.assert_array_equal(trajectory(alone, prob, topo, 10),
                                  trajectory(A.dsgd(1.0, local_optimizer=opt), prob, topo, 10))


def test_learning_rate_sweep_with_a_local_optimizer_is_one_program(ls, topo):
    prob = ls[0]
    lrs = [0.01, 0.02, 0.04]
    algo = A.choco_sgd(0.01, 0.4, C.top_k(0.5), local_optimizer=MOMENTUM)
    before = dict(runner.TRACE_COUNTS)
    hist = ds.run(algo, prob, topo, 12, eval_every=4, seeds=[0, 0, 0],
                  hparams={"learning_rate": lrs})
    traced = {k: runner.TRACE_COUNTS[k] - before.get(k, 0) for k in runner.TRACE_COUNTS}
    assert all(v <= 1 for v in traced.values())  # one program of each kind for the three runs
    assert hist.metrics["loss"].shape == (3, 4)
    for i, lr in enumerate(lrs):  # each run is the optimizer built with its learning rate
        alone = ds.run(A.choco_sgd(None, 0.4, C.top_k(0.5),
                                   local_optimizer=optax.sgd(lr, momentum=0.9)),
                       prob, topo, 12, eval_every=4)
        np.testing.assert_array_equal(hist.params[i], alone.params)
    assert len({float(hist.metrics["loss"][i, -1]) for i in range(3)}) == 3


def test_a_schedule_has_a_traced_multiplier(ls, topo):
    prob, A_, y = ls
    sched = optax.exponential_decay(0.05, transition_steps=1, decay_rate=0.9)
    algo = A.dsgd(sched)
    assert algo.hparams == {"learning_rate": 1.0}
    got = trajectory(algo, prob, topo, 10, hparams={"learning_rate": 0.5})
    X = np.zeros((N, 3))
    for t in range(10):
        X = topo.W @ (X - 0.5 * 0.05 * 0.9**t * np_grads(X, A_, y))
    np.testing.assert_allclose(got[-1], X, rtol=2e-4, atol=1e-5)
    # multiplier 1.0 is the schedule itself, bit for bit; a sweep is one call
    hist = ds.run(algo, prob, topo, 10, eval_every=5, seeds=[0, 0],
                  hparams={"learning_rate": [1.0, 0.5]})
    np.testing.assert_array_equal(hist.params[0], ds.run(algo, prob, topo, 10,
                                                         eval_every=5).params)
    np.testing.assert_allclose(hist.params[1], got[-1], rtol=1e-6, atol=1e-7)


def test_a_config_sweep_over_the_multiplier_is_one_program(tmp_path):
    base = {"algorithm": {"name": "gradient_tracking", "learning_rate": 0.05,
                          "local_optimizer": {"optax": "sgd", "learning_rate": 1.0,
                                              "momentum": 0.9}},
            # shapes no other test uses, so the programs are surely not cached yet
            "problem": {"name": "quadratic", "dim": 11, "mu": 0.5, "L": 1.0, "noise": 0.1,
                        "seed": 0},
            "topology": "ring", "n_workers": 3, "steps": 10, "eval_every": 5}
    before = dict(runner.TRACE_COUNTS)
    report = ds.sweep(base, {"algorithm.learning_rate": [0.02, 0.05, 0.1], "seed": [0, 1]},
                      str(tmp_path), progress=False)
    traced = {k: runner.TRACE_COUNTS[k] - before.get(k, 0) for k in runner.TRACE_COUNTS}
    assert traced == {"init": 1, "segment": 1, "metrics": 1}
    assert (report.total, report.ran) == (6, 6)
    frame = ds.load_results(str(tmp_path), final=True)
    assert sorted(set(frame["algorithm.learning_rate"])) == [0.02, 0.05, 0.1]


# ---------------------------------------------------------------------------------------------
# validation


@pytest.mark.parametrize("bad, match", [
    (lambda: A.malcom_psgd(None, 0.5, 1e-3, local_optimizer=MOMENTUM),
     r"malcom_psgd: with local_optimizer, give learning_rate too.*threshold"),
    (lambda: A.gradient_tracking(local_optimizer=object()), r"optax GradientTransformation"),
    (lambda: A.d2(local_optimizer=optax.sgd(-1.0)), r"d2: .*gradient ascent"),
    (lambda: A.detag(-0.1, 2, local_optimizer=MOMENTUM), r"learning_rate must be a finite"),
    (lambda: A.gradient_tracking(), r"gradient_tracking: learning_rate must be a positive"),
    (lambda: A.deepsqueeze(0.1, 0.2, C.sign(), local_optimizer=optax.sgd("x")),
     r"deepsqueeze: local_optimizer fails on a test update"),
])
def test_bad_arguments(bad, match):
    with pytest.raises(ValueError, match=match):
        bad()


def test_every_algorithm_with_a_local_step_takes_one():
    import inspect

    takes = {name for name, f in A.REGISTRY.items()
             if "local_optimizer" in inspect.signature(f).parameters}
    assert takes == {"centralized_sgd", "dsgd", "dpsgd", "gradient_tracking", "d2",
                     "exact_diffusion", "extra", "detag", "choco_sgd", "dcd_psgd", "deepsqueeze",
                     "malcom_psgd", "sgp", "push_pull"}
