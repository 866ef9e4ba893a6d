"""ds.memory_estimate, the runner's memory check, and the bfloat16 compute policy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import decsim as ds
from decsim import _run_checks


def _problem(n=4, m=16, d=32, **kw):
    rng = np.random.default_rng(0)
    data = {"x": rng.normal(size=(n, m, d)).astype(np.float32),
            "y": rng.normal(size=(n, m)).astype(np.float32)}

    def loss(p, batch):
        h = jnp.tanh(batch["x"] @ p["w1"])
        return jnp.mean((h @ p["w2"] - batch["y"]) ** 2)

    params = {"w1": np.full((d, 64), 0.01, np.float32), "w2": np.zeros(64, np.float32)}
    return ds.problems.custom(loss, params, data, batch_size=8, **kw)


def test_estimate_counts_the_state_copies_and_the_workers_in_flight():
    prob = _problem()
    params_bytes = 4 * 4 * (32 * 64 + 64)  # n = 4 workers, float32
    dsgd = ds.memory_estimate(ds.algorithms.dsgd(0.1), prob)
    gt = ds.memory_estimate(ds.algorithms.gradient_tracking(0.1), prob)
    assert params_bytes <= dsgd.state <= params_bytes + 16  # X and a step counter
    assert gt.state > 2 * params_bytes  # X, the tracker, the last gradient
    assert dsgd.data == 4 * 16 * (32 + 1) * 4
    mapped = ds.memory_estimate(ds.algorithms.dsgd(0.1), prob, workers="map")
    assert dsgd.gradients == 4 * mapped.gradients and mapped.workers_in_flight == 1
    # the gradient work holds at least the hidden activations of a batch per worker
    assert mapped.gradients >= 8 * 64 * 4
    two = ds.memory_estimate(ds.algorithms.dsgd(0.1), prob, seeds=2)
    assert two.state == 2 * dsgd.state and two.total > dsgd.total
    assert "MiB" in str(dsgd)


def test_a_run_that_cannot_fit_is_refused_before_compiling(monkeypatch):
    prob = _problem()
    monkeypatch.setattr(_run_checks, "available_bytes", lambda: 1000)
    _run_checks.MEMORY_CHECKED.clear()
    before = dict(ds.runner.TRACE_COUNTS)
    with pytest.raises(ValueError, match=r"fewer workers.*workers=\"map\".*bfloat16"):
        ds.run(ds.algorithms.dsgd(0.1), prob, ds.topology.ring(4), steps=2)
    assert dict(ds.runner.TRACE_COUNTS) == before
    hist = ds.run(ds.algorithms.dsgd(0.1), prob, ds.topology.ring(4), steps=2,
                  check_memory=False)
    assert np.isfinite(hist.metrics["loss"]).all()


def test_bfloat16_policy_keeps_float32_parameters():
    full = _problem()
    half = _problem(compute_dtype=jnp.bfloat16)
    topo = ds.topology.ring(4)
    a = ds.run(ds.algorithms.dsgd(0.05), full, topo, steps=20, eval_every=10)
    b = ds.run(ds.algorithms.dsgd(0.05), half, topo, steps=20, eval_every=10)
    assert b.params["w1"].dtype == np.float32
    # bf16 has 8 bits of mantissa: close to the float32 run, but not equal
    np.testing.assert_allclose(a.metrics["loss"], b.metrics["loss"], rtol=3e-2)
    assert not np.array_equal(a.params["w1"], b.params["w1"])
    # the loss really computed in bf16
    seen = []

    def probe(p, batch):
        seen.append(p["w1"].dtype)
        return full.loss_fn(p, batch)

    ds.problems.custom(probe, jax.tree.map(lambda a: a[0], full.params0), full.data,
                       compute_dtype=jnp.bfloat16)
    assert seen and all(dt == jnp.bfloat16 for dt in seen)
    with pytest.raises(ValueError, match="compute_dtype"):
        _problem(compute_dtype=jnp.int8)


def test_evaluation_memory_does_not_grow_with_the_data_set():
    small = _problem(m=64, eval_batch_size=32)
    large = _problem(m=4096, eval_batch_size=32)
    algo = ds.algorithms.dsgd(0.1)
    a, b = ds.memory_estimate(algo, small), ds.memory_estimate(algo, large)
    assert a.evaluation == b.evaluation  # one chunk of 32 rows in flight, whatever m
    assert b.data == 64 * a.data
    whole = ds.memory_estimate(algo, ds.problems.with_evaluation(large, batch_size=None))
    assert whole.evaluation > 50 * b.evaluation
    # and the chunked metrics equal the one-piece ones
    topo = ds.topology.ring(4)
    h1 = ds.run(algo, large, topo, steps=2, eval_every=2)
    h2 = ds.run(algo, ds.problems.with_evaluation(large, batch_size=None), topo, steps=2,
                eval_every=2)
    np.testing.assert_allclose(h1.metrics["loss"], h2.metrics["loss"], rtol=1e-5)
    np.testing.assert_allclose(h1.metrics["grad_norm_sq"], h2.metrics["grad_norm_sq"], rtol=1e-4)
