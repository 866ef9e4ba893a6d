"""A user-written algorithm, a plain NamedTuple with init, step, params and hparams (no decorator,
no decsim base class), works with run, trajectory, batched hyperparameters and sweeps."""

from typing import NamedTuple

import jax
import numpy as np

import decsim as ds
from decsim import runner

from ._reference import STEPS, np_grads


class HeavyBall(NamedTuple):
    init: object
    step: object
    params: object
    hparams: dict
    name: str = "heavy_ball"


def _init(X, key):
    del key
    return (X, X)


def _step(state, hp, oracle, mixer, key):
    X, X_prev = state
    G = oracle(X, key)
    new = jax.tree.map(lambda wx, g, x, xp: wx - hp["learning_rate"] * g + hp["beta"] * (x - xp),
                       mixer(X), G, X, X_prev)
    return (new, X), ds.StepCost(1.0, 1.0, 32.0 * ds.tree.size(X))


def _params(state):
    return state[0]


def heavy_ball(learning_rate=0.05, beta=0.5):
    # module-level functions: every call gives the same init/step/params, so one program
    return HeavyBall(_init, _step, _params, {"learning_rate": learning_rate, "beta": beta})


def ref_heavy_ball(X, A, y, W, eta, beta, T):
    out, prev = [X], X
    for _ in range(T):
        X, prev = W @ X - eta * np_grads(X, A, y) + beta * (X - prev), X
        out.append(X)
    return out


def test_trajectory_matches_equations(ls, topo):
    prob, A, y = ls
    got = runner.trajectory(heavy_ball(), prob, topo, STEPS)
    want = np.stack(ref_heavy_ball(np.zeros_like(got[0], np.float64), A, y, topo.W, 0.05, 0.5,
                                   STEPS))
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-5 * np.abs(want).max())


def test_run_batches_its_hparams_in_one_program(ls, topo):
    prob, _, _ = ls
    ds.run(heavy_ball(), prob, topo, steps=20, eval_every=10, seeds=[0, 0])
    before = runner.trace_count()
    hist = ds.run(heavy_ball(), prob, topo, steps=20, eval_every=10, seeds=[0, 0],
                  hparams={"beta": [0.0, 0.5]})
    assert runner.trace_count() == before  # same functions, same shapes: no new program
    assert hist.config["algorithm"] == "heavy_ball"
    single = ds.run(heavy_ball(beta=0.5), prob, topo, steps=20, eval_every=10)
    np.testing.assert_allclose(hist.select(1).params, single.params, rtol=1e-6, atol=1e-7)
    assert np.abs(hist.select(0).params - hist.select(1).params).max() > 1e-4
    np.testing.assert_array_equal(single.metrics["bits"], [0, 10 * 32 * 3, 20 * 32 * 3])


def test_sweep_over_a_registered_user_algorithm(tmp_path, monkeypatch):
    monkeypatch.setitem(ds.algorithms.REGISTRY, "heavy_ball", heavy_ball)
    base = {"algorithm": {"name": "heavy_ball", "learning_rate": 0.05},
            "problem": {"name": "quadratic", "dim": 3, "noise": 0.1}, "topology": "ring",
            "n_workers": 4, "steps": 20, "eval_every": 10}
    report = ds.sweep(base, {"algorithm.beta": [0.0, 0.5], "seed": [0, 1]}, str(tmp_path),
                      progress=False)
    assert report.ran == 4
    frame = ds.load_results(str(tmp_path), final=True)
    assert sorted(frame["algorithm.beta"].unique().tolist()) == [0.0, 0.5]
    assert frame["loss"].notna().all()
