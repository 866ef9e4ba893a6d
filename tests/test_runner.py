"""The compiled runner: metrics, costs, determinism, vmapped seeds, divergence, tracing, "
"validation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import decsim as ds
from decsim import runner

N = 6


@pytest.fixture(scope="module")
def quad():
    return ds.problems.quadratic(N, 5, mu=0.2, L=1.0, noise=0.3, heterogeneity=1.0, seed=0)


@pytest.fixture(scope="module")
def logreg():
    return ds.problems.logistic_regression(
        N, "breast_cancer", partition="dirichlet", alpha=0.3, batch_size=8, seed=0
    )


@pytest.fixture(scope="module")
def ring():
    return ds.topology.ring(N)


def test_metrics_and_costs(logreg, ring):
    hist = ds.run(ds.algorithms.gradient_tracking(0.1), logreg, ring, steps=40, eval_every=10)
    np.testing.assert_array_equal(hist.steps, [0, 10, 20, 30, 40])
    for key in (
        "loss",
        "grad_norm_sq",
        "consensus",
        "grad_evals",
        "comm_rounds",
        "bits",
        "test_loss",
        "test_accuracy",
    ):
        assert hist.metrics[key].shape == (5,), key
    d = ds.tree.size(logreg.params0)
    np.testing.assert_array_equal(hist.metrics["grad_evals"], hist.steps)
    np.testing.assert_array_equal(hist.metrics["comm_rounds"], hist.steps)
    np.testing.assert_array_equal(hist.metrics["bits"], hist.steps * 2 * 32 * d)
    assert hist.metrics["consensus"][0] == 0.0  # all workers start equal
    assert hist.metrics["loss"][-1] < hist.metrics["loss"][0]
    assert 0.5 < hist.metrics["test_accuracy"][-1] <= 1.0
    # the loss metric is f at the worker average, with f the mean of worker means
    f = ds.problems.full_loss(logreg)
    xbar = {k: jnp.asarray(v.mean(0)) for k, v in hist.params.items()}
    np.testing.assert_allclose(hist.metrics["loss"][-1], float(f(xbar)), rtol=1e-5)
    consensus = np.mean(
        sum(
            np.sum((v - v.mean(0)) ** 2, axis=tuple(range(1, v.ndim))) for v in hist.params.values()
        )
    )
    np.testing.assert_allclose(hist.metrics["consensus"][-1], consensus, rtol=1e-4)


def test_costs_of_gossip_every_and_all_reduce(quad, ring):
    d = 5
    h = ds.run(ds.algorithms.dsgd(0.1, gossip_every=4), quad, ring, steps=40, eval_every=20)
    np.testing.assert_array_equal(h.metrics["comm_rounds"], [0, 5, 10])
    np.testing.assert_array_equal(h.metrics["bits"], [0, 5 * 32 * d, 10 * 32 * d])
    h = ds.run(ds.algorithms.centralized_sgd(0.1), quad, ring, steps=20, eval_every=20)
    np.testing.assert_allclose(h.metrics["bits"][-1], 20 * 2 * (N - 1) / N * 32 * d, rtol=1e-6)


def test_same_seed_same_metrics(logreg, ring):
    a = ds.run(ds.algorithms.dsgd(0.2), logreg, ring, steps=30, eval_every=10, seed=5)
    b = ds.run(ds.algorithms.dsgd(0.2), logreg, ring, steps=30, eval_every=10, seed=5)
    c = ds.run(ds.algorithms.dsgd(0.2), logreg, ring, steps=30, eval_every=10, seed=6)
    for k in a.metrics:
        np.testing.assert_array_equal(a.metrics[k], b.metrics[k])
    assert not np.array_equal(a.metrics["loss"], c.metrics["loss"])


def test_vmapped_seeds_equal_sequential_seeds(logreg, ring):
    seeds = [0, 3, 7]
    batched = ds.run(ds.algorithms.dsgd(0.2), logreg, ring, steps=30, eval_every=10, seeds=seeds)
    assert batched.metrics["loss"].shape == (3, 4)
    assert batched.params["w"].shape == (3, N) + logreg.params0["w"].shape[1:]
    for i, s in enumerate(seeds):
        one = ds.run(ds.algorithms.dsgd(0.2), logreg, ring, steps=30, eval_every=10, seed=s)
        for k in one.metrics:
            np.testing.assert_allclose(batched.metrics[k][i], one.metrics[k], rtol=2e-5, atol=1e-7)
    frame = batched.to_dataframe()
    assert len(frame) == 3 * 4
    assert set(frame["seed"]) == set(seeds)
    assert {"algorithm", "topology", "problem", "step", "loss", "bits"} <= set(frame.columns)


def test_divergence_is_reported_not_raised(quad, ring):
    hist = ds.run(ds.algorithms.dsgd(40.0), quad, ring, steps=400, eval_every=10)
    assert hist.diverged is True
    assert 0 < hist.diverged_step <= 400
    first = int(np.flatnonzero(hist.steps == hist.diverged_step)[0])
    assert np.all(np.isfinite(hist.metrics["loss"][:first]))
    assert np.all(np.isnan(hist.metrics["loss"][first:]))
    assert hist.metrics["loss"].shape == hist.steps.shape
    ok = ds.run(ds.algorithms.dsgd(0.1), quad, ring, steps=40, eval_every=10)
    assert ok.diverged is False and ok.diverged_step == -1


def test_divergence_per_seed_in_a_batched_run(quad, ring):
    hist = ds.run(ds.algorithms.dsgd(40.0), quad, ring, steps=400, eval_every=10, seeds=[0, 1])
    assert hist.diverged.tolist() == [True, True]
    assert np.all(hist.diverged_step > 0)


def test_no_retrace_between_seeds_hyperparameters_and_topologies(logreg, ring):
    ds.run(ds.algorithms.dsgd(0.1), logreg, ring, steps=20, eval_every=10, seed=0)
    before = runner.trace_count()
    ds.run(ds.algorithms.dsgd(0.1), logreg, ring, steps=20, eval_every=10, seed=1)
    ds.run(ds.algorithms.dsgd(0.05), logreg, ring, steps=20, eval_every=10, seed=2)
    ds.run(ds.algorithms.dsgd(0.05), logreg, ds.topology.torus(2, 3), steps=20, eval_every=10)
    ds.run(
        ds.algorithms.dsgd(0.3),
        logreg,
        ring,
        steps=20,
        eval_every=10,
        hparams={"learning_rate": 0.01},
    )
    assert runner.trace_count() == before
    ds.run(ds.algorithms.dsgd(0.1), logreg, ring, steps=20, eval_every=10, seeds=[0, 1])
    after_batched = runner.trace_count()
    assert after_batched == before + 3  # init, segment and metrics, once for the batched shape
    ds.run(ds.algorithms.dsgd(0.2), logreg, ring, steps=20, eval_every=10, seeds=[5, 6])
    assert runner.trace_count() == after_batched


def test_algorithms_on_one_problem_share_the_metrics_program(logreg, ring):
    """The metrics (loss and gradient on the full data, test metrics) are a program of their own,
    keyed by the problem: a second algorithm on the same problem compiles only its own steps, and
    its metrics equal those computed inside a fresh program."""
    # a shape no other test uses (8 evaluations per call), so the first run surely compiles
    ds.run(ds.algorithms.dsgd(0.1), logreg, ring, steps=80, eval_every=1)
    before = dict(runner.TRACE_COUNTS)
    hist = ds.run(ds.algorithms.gradient_tracking(0.1), logreg, ring, steps=80, eval_every=1)
    traced = {k: runner.TRACE_COUNTS[k] - before.get(k, 0) for k in runner.TRACE_COUNTS}
    assert traced["segment"] == 1 and traced["metrics"] == 0  # (its init may be cached already)
    # the stored metrics are those of the returned iterates: recompute the last one directly
    X = hist.params
    xbar = jax.tree.map(lambda a: a.mean(axis=0), X)
    f = ds.problems.full_loss(logreg)
    np.testing.assert_allclose(hist.metrics["loss"][-1], float(f(xbar)), rtol=1e-5)
    assert hist.metrics["loss"].shape == (81,) and np.all(np.isfinite(hist.metrics["loss"]))


def test_hparams_override_equals_rebuilt_algorithm(quad, ring):
    a = ds.run(
        ds.algorithms.dsgd(0.3),
        quad,
        ring,
        steps=20,
        eval_every=10,
        hparams={"learning_rate": 0.07},
    )
    b = ds.run(ds.algorithms.dsgd(0.07), quad, ring, steps=20, eval_every=10)
    np.testing.assert_allclose(a.metrics["loss"], b.metrics["loss"], rtol=1e-6)
    assert a.config["hparams"]["learning_rate"] == pytest.approx(0.07)


def test_per_run_hyperparameters_in_one_vmapped_call(logreg, ring):
    """seeds + one learning rate per seed: each run equals its own single call, the grid is one
    program, and a new grid of the same size does not retrace."""
    seeds, lrs = [0, 0, 1, 1], [0.05, 0.2, 0.05, 0.2]
    algo = ds.algorithms.dsgd(0.3)
    batched = ds.run(
        algo, logreg, ring, steps=30, eval_every=10, seeds=seeds, hparams={"learning_rate": lrs}
    )
    np.testing.assert_allclose(batched.config["hparams"]["learning_rate"], lrs, rtol=1e-6)
    for i, (s, lr) in enumerate(zip(seeds, lrs)):
        one = ds.run(
            algo, logreg, ring, steps=30, eval_every=10, seed=s, hparams={"learning_rate": lr}
        )
        for k in ("loss", "grad_norm_sq", "consensus"):
            np.testing.assert_allclose(batched.metrics[k][i], one.metrics[k], rtol=2e-5, atol=1e-7)
    assert not np.allclose(batched.metrics["loss"][0], batched.metrics["loss"][1])  # lr matters
    before = runner.trace_count()
    ds.run(
        algo,
        logreg,
        ring,
        steps=30,
        eval_every=10,
        seeds=[4, 5, 6, 7],
        hparams={"learning_rate": [0.01, 0.02, 0.03, 0.04]},
    )
    assert runner.trace_count() == before


def test_per_run_hyperparameters_diverge_alone(quad, ring):
    hist = ds.run(
        ds.algorithms.dsgd(0.1),
        quad,
        ring,
        steps=400,
        eval_every=10,
        seeds=[0, 0],
        hparams={"learning_rate": [0.1, 40.0]},
    )
    assert hist.diverged.tolist() == [False, True]
    assert np.all(np.isfinite(hist.metrics["loss"][0]))


def _ls_loss(x, batch):
    return 0.5 * jnp.mean(jnp.square(batch["a"] @ x - batch["y"]))


def test_padding_is_never_seen():
    """Unequal worker sizes: rows past each count hold NaN, yet nothing becomes NaN, and f_i is the
    mean over the worker's own rows (every worker weighs the same)."""
    rng = np.random.default_rng(1)
    counts = np.array([2, 5, 3], np.int32)
    a = rng.normal(size=(3, 5, 2)).astype(np.float32)
    y = rng.normal(size=(3, 5)).astype(np.float32)
    for i, c in enumerate(counts):
        a[i, c:] = np.nan
        y[i, c:] = np.nan
    topo = ds.topology.ring(3)
    for batch_size in (None, 4):
        prob = ds.problems.custom(
            _ls_loss,
            np.zeros(2, np.float32),
            {"a": a, "y": y},
            counts=counts,
            batch_size=batch_size,
        )
        hist = ds.run(ds.algorithms.dsgd(0.1), prob, topo, steps=20, eval_every=10)
        assert not hist.diverged
        assert np.all(np.isfinite(hist.params))
    x = hist.params.mean(0)
    want = np.mean([0.5 * np.mean((a[i, :c] @ x - y[i, :c]) ** 2) for i, c in enumerate(counts)])
    np.testing.assert_allclose(hist.metrics["loss"][-1], want, rtol=1e-5)


def test_consensus_problem_metric():
    prob = ds.problems.consensus(8, 4, seed=2)
    topo = ds.topology.ring(8)
    hist = ds.run(ds.algorithms.dsgd(1e-9), prob, topo, steps=200, eval_every=50)
    err = hist.metrics["consensus_error"]
    x0 = prob.params0
    np.testing.assert_allclose(err[0], np.mean(np.sum((x0 - x0.mean(0)) ** 2, axis=1)), rtol=1e-5)
    assert err[-1] < 1e-6 * err[0]  # plain gossip converges to the initial average


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (
            dict(steps=25, eval_every=10),
            r"steps=25 is not a multiple of eval_every=10; use steps=20 or 30",
        ),
        (dict(steps=-1), r"steps must be an integer >= 0; got steps=-1"),
        (dict(steps=10, eval_every=0), r"eval_every must be an integer >= 1; got eval_every=0"),
        (dict(steps=10, seeds=[]), r"seeds must hold at least one seed"),
        (
            dict(steps=10, hparams={"gamma": 0.1}),
            r"not numeric hyperparameters of dsgd; valid: \['learning_rate'\]",
        ),
        (
            dict(steps=10, hparams={"learning_rate": [0.1, 0.2]}),
            r"hparams\['learning_rate'\] must be a number \(a list of values, one per run, needs "
            r"seeds=.*got \[0.1, 0.2\]",
        ),
        (
            dict(steps=10, seeds=[0, 1, 2], hparams={"learning_rate": [0.1, 0.2]}),
            r"must be a number or a list of 3 numbers, one per seed in seeds",
        ),
        (
            dict(steps=10, seeds=[0], hparams={"learning_rate": "fast"}),
            r"list of 1 numbers.*got 'fast'",
        ),
    ],
)
def test_run_argument_errors(quad, ring, kwargs, match):
    with pytest.raises(ValueError, match=match):
        ds.run(ds.algorithms.dsgd(0.1), quad, ring, **kwargs)


def test_mismatched_topology_and_types(quad):
    with pytest.raises(ValueError, match=r"has n=4 workers but the problem has n_workers=6"):
        ds.run(ds.algorithms.dsgd(0.1), quad, ds.topology.ring(4), steps=10)
    with pytest.raises(ValueError, match=r"algorithm must be a decsim Algorithm"):
        ds.run("dsgd", quad, ds.topology.ring(N), steps=10)
    with pytest.raises(ValueError, match=r"topology must be a decsim Topology"):
        ds.run(ds.algorithms.dsgd(0.1), quad, np.eye(N), steps=10)


def test_default_eval_every_and_zero_steps(quad, ring):
    hist = ds.run(ds.algorithms.dsgd(0.1), quad, ring, steps=1000)
    assert len(hist.steps) >= 50 and hist.steps[-1] == 1000
    hist = ds.run(ds.algorithms.dsgd(0.1), quad, ring, steps=0)
    np.testing.assert_array_equal(hist.steps, [0])


@pytest.mark.slow
def test_persistent_compilation_cache(tmp_path):
    """A second process finds the first one's compiled programs on disk."""
    import os
    import subprocess
    import sys

    code = (
        "import decsim as ds; p = ds.problems.mlp(4, hidden=(16,)); "
        "h = ds.run(ds.algorithms.dsgd(0.1), p, ds.topology.ring(4), steps=20, eval_every=10); "
        "print(h.compile_seconds)"
    )
    env = dict(os.environ, DECSIM_CACHE_DIR=str(tmp_path / "xla"))
    first = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert first.returncode == 0, first.stderr[-2000:]
    assert any((tmp_path / "xla").iterdir())
    second = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert second.returncode == 0, second.stderr[-2000:]
    assert float(second.stdout.split()[-1]) < float(first.stdout.split()[-1])
