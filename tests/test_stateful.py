"""Models with state and randomness (the extended loss form), initial points, worker-axis
execution, evaluation in chunks and epochs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import decsim as ds

N, M, D = 4, 6, 3
ETA = 0.1


def _data(seed=0, m=M):
    rng = np.random.default_rng(seed)
    return {"x": rng.normal(size=(N, m, D)).astype(np.float32),
            "y": rng.normal(size=(N, m)).astype(np.float32)}


def _state_loss(w, s, batch, key):
    """A loss whose gradient depends on the model state; the state tracks the mean prediction
    (like BatchNorm's running mean) in training mode only."""
    pred = batch["x"] @ w
    loss = jnp.mean((pred - s["c"] * batch["y"]) ** 2)
    if key is None:
        return loss, s
    return loss, {"c": 0.5 * s["c"] + 0.5 * jnp.mean(pred) + 1.0}


def _np_reference(W, data, steps, gossip_state):
    """D-SGD with full-batch gradients and the state update above, in float64 numpy."""
    X = np.zeros((N, D))
    c = np.ones(N)
    for _ in range(steps):
        G = np.zeros_like(X)
        for i in range(N):
            x, y = data["x"][i].astype(np.float64), data["y"][i].astype(np.float64)
            r = x @ X[i] - c[i] * y
            G[i] = 2 * x.T @ r / M
            c[i] = 0.5 * c[i] + 0.5 * np.mean(x @ X[i]) + 1.0
        X = W @ (X - ETA * G)
        if gossip_state:
            c = W @ c
    return X, c


@pytest.mark.parametrize("mixing", ["local", "gossip"])
def test_stateful_dsgd_matches_its_equations(mixing):
    data = _data()
    prob = ds.problems.custom(_state_loss, jnp.zeros(D), data, model_state={"c": 1.0},
                              model_state_mixing=mixing)
    topo = ds.topology.ring(N)
    hist = ds.run(ds.algorithms.dsgd(ETA), prob, topo, steps=5, eval_every=5, workers="vmap")
    X, c = _np_reference(topo.W, data, 5, mixing == "gossip")
    np.testing.assert_allclose(hist.params, X, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(hist.model_state["c"], c, rtol=1e-4, atol=1e-5)
    # the metrics are taken at x̄ with the averaged state, in evaluation mode
    xbar, cbar = X.mean(0), c.mean()
    f = np.mean([np.mean((data["x"][i] @ xbar - cbar * data["y"][i]) ** 2) for i in range(N)])
    np.testing.assert_allclose(hist.metrics["loss"][-1], f, rtol=1e-4)
    assert "grad_norm_sq" not in hist.metrics  # off by default for the extended form
    # gossiped state costs 32 bits per float per step, on top of D-SGD's 32 d
    per_step = 32 * D + (32 if mixing == "gossip" else 0)
    assert hist.metrics["bits"][-1] == 5 * per_step


def test_extended_form_without_state_equals_the_simple_form():
    data = _data(1)

    def simple(w, batch):
        return jnp.mean((batch["x"] @ w - batch["y"]) ** 2)

    def extended(w, s, batch, key):
        return simple(w, batch), s

    topo = ds.topology.ring(N)
    a = ds.run(ds.algorithms.gradient_tracking(ETA),
               ds.problems.custom(simple, jnp.zeros(D), data), topo, steps=6, eval_every=3)
    b = ds.run(ds.algorithms.gradient_tracking(ETA),
               ds.problems.custom(extended, jnp.zeros(D), data, model_state={}, grad_norm=True),
               topo, steps=6, eval_every=3, workers="vmap")
    np.testing.assert_allclose(a.params, b.params, rtol=1e-6, atol=1e-7)
    for k in ("loss", "grad_norm_sq", "consensus"):
        np.testing.assert_allclose(a.metrics[k], b.metrics[k], rtol=1e-5)
    assert b.model_state == {}


def _dropout_loss(w, s, batch, key):
    """Dropout on the inputs (keep probability 1/2, rescaled); none in evaluation mode."""
    x = batch["x"]
    if key is not None:
        keep = jax.random.bernoulli(key, 0.5, x.shape)
        x = jnp.where(keep, 2.0 * x, 0.0)
    return jnp.mean((x @ w - batch["y"]) ** 2), s


def test_dropout_keys_are_per_worker_and_per_seed():
    data = _data(2)
    data["x"][:] = data["x"][:1]  # every worker holds the same data
    data["y"][:] = data["y"][:1]
    prob = ds.problems.custom(_dropout_loss, jnp.zeros(D), data, model_state={}, grad_norm=True)
    topo = ds.topology.ring(N)
    algo = ds.algorithms.dsgd(ETA)
    # one step from a common point: equal data, so only the dropout masks tell workers apart
    one_local = ds.run(algo, prob, topo, steps=1, eval_every=1, workers="vmap")
    assert np.ptp(np.asarray(one_local.params), axis=0).max() > 1e-4
    a = ds.run(algo, prob, topo, steps=4, eval_every=2, seed=3, workers="vmap")
    b = ds.run(algo, prob, topo, steps=4, eval_every=2, seed=3, workers="vmap")
    c = ds.run(algo, prob, topo, steps=4, eval_every=2, seed=4, workers="vmap")
    np.testing.assert_array_equal(a.params, b.params)
    assert not np.allclose(a.params, c.params)
    # evaluation mode has no dropout: the metric is the plain loss at x̄
    xbar = np.asarray(a.params).mean(0)
    f = np.mean((data["x"][0] @ xbar - data["y"][0]) ** 2)
    np.testing.assert_allclose(a.metrics["loss"][-1], f, rtol=1e-5)


def test_initial_points():
    data = _data(3)

    def simple(w, batch):
        return jnp.mean((batch["x"] @ w - batch["y"]) ** 2)

    def draw(key):
        return jax.random.normal(key, (D,))

    same = ds.problems.custom(simple, draw, data, seed=5)
    assert np.ptp(same.params0, axis=0).max() == 0
    np.testing.assert_allclose(same.params0[0], draw(jax.random.split(jax.random.PRNGKey(5),
                                                                        N)[0]), rtol=1e-6)
    indep = ds.problems.custom(simple, draw, data, init="independent", seed=5)
    keys = jax.random.split(jax.random.PRNGKey(5), N)
    np.testing.assert_allclose(indep.params0, np.stack([draw(k) for k in keys]), rtol=1e-6)
    hist = ds.run(ds.algorithms.dsgd(ETA), indep, ds.topology.ring(N), steps=2, eval_every=1)
    assert hist.metrics["consensus"][0] > 0.1  # the workers start apart
    X0 = np.arange(N * D, dtype=np.float32).reshape(N, D)
    stacked = ds.problems.custom(simple, X0, data, init="stacked")
    np.testing.assert_array_equal(stacked.params0, X0)
    with pytest.raises(ValueError, match="independent"):
        ds.problems.custom(simple, jnp.zeros(D), data, init="independent")
    with pytest.raises(ValueError, match=r"\[n_workers=4"):
        ds.problems.custom(simple, jnp.zeros(D), data, init="stacked")
    with pytest.raises(ValueError, match="init"):
        ds.problems.custom(simple, jnp.zeros(D), data, init="random")


def test_bad_stateful_models_are_refused_before_compiling():
    data = _data()
    with pytest.raises(ValueError, match="must return"):
        ds.problems.custom(lambda w, s, b, k: jnp.sum(w), jnp.zeros(D), data, model_state={})
    with pytest.raises(ValueError, match="structure, shapes and dtypes"):
        ds.problems.custom(lambda w, s, b, k: (jnp.sum(w), {"c": jnp.zeros(2)}), jnp.zeros(D),
                           data, model_state={"c": jnp.zeros(1)})
    with pytest.raises(ValueError, match="structure, shapes and dtypes"):
        ds.problems.custom(lambda w, s, b, k: (jnp.sum(w), {}), jnp.zeros(D), data,
                           model_state={"c": 0.0})
    with pytest.raises(ValueError, match="fails in evaluation"):
        ds.problems.custom(lambda w, s, b, k: (jnp.sum(w) + k.shape[0], s), jnp.zeros(D), data,
                           model_state={})
    with pytest.raises(ValueError, match="equal samples per worker"):
        ds.problems.custom(_state_loss, jnp.zeros(D), data, model_state={"c": 1.0},
                           counts=[6, 5, 6, 6])
    with pytest.raises(ValueError, match="needs a model state"):
        ds.problems.custom(lambda w, b: jnp.sum(w), jnp.zeros(D), data,
                           model_state_mixing="gossip")
    with pytest.raises(ValueError, match="model_state_mixing"):
        ds.problems.custom(_state_loss, jnp.zeros(D), data, model_state={"c": 1.0},
                           model_state_mixing="average")


@pytest.mark.parametrize("workers", ["map", 2])
def test_worker_execution_does_not_change_results(workers):
    data = _data(4)
    prob = ds.problems.custom(_state_loss, jnp.zeros(D), data, model_state={"c": 1.0},
                              batch_size=3)
    topo = ds.topology.ring(N)
    algo = ds.algorithms.detag(ETA, rounds=2)
    ref = ds.run(algo, prob, topo, steps=4, eval_every=2, workers="vmap")
    other = ds.run(algo, prob, topo, steps=4, eval_every=2, workers=workers)
    np.testing.assert_allclose(ref.params, other.params, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ref.model_state["c"], other.model_state["c"], rtol=1e-5)
    np.testing.assert_allclose(ref.metrics["loss"], other.metrics["loss"], rtol=1e-5)


def test_worker_execution_is_checked():
    prob = ds.problems.quadratic(N, D)
    topo = ds.topology.ring(N)
    with pytest.raises(ValueError, match="divide"):
        ds.run(ds.algorithms.dsgd(ETA), prob, topo, steps=1, workers=3)
    with pytest.raises(ValueError, match="workers"):
        ds.run(ds.algorithms.dsgd(ETA), prob, topo, steps=1, workers="loop")
    assert ds.runner.choose_workers(prob) == "vmap"


def _simple(w, batch):
    return jnp.mean((batch["x"] @ w - batch["y"]) ** 2)


@pytest.mark.parametrize("counts", [None, [6, 4, 5, 6]])
def test_chunked_evaluation_equals_one_piece(counts):
    data = _data(5)
    test = {"x": data["x"][0], "y": data["y"][0]}
    whole = ds.problems.custom(_simple, jnp.ones(D), data, counts=counts, test_data=test,
                               eval_batch_size=None)
    chunked = ds.problems.with_evaluation(whole, batch_size=5)  # 24 rows: 4 chunks + 4 rows
    topo = ds.topology.ring(N)
    a = ds.run(ds.algorithms.dsgd(ETA), whole, topo, steps=4, eval_every=2)
    b = ds.run(ds.algorithms.dsgd(ETA), chunked, topo, steps=4, eval_every=2)
    for k in ("loss", "grad_norm_sq", "test_loss"):
        np.testing.assert_allclose(a.metrics[k], b.metrics[k], rtol=1e-5)


def test_subsample_and_per_worker_metrics():
    data = _data(6)
    test = {"x": data["x"][1], "y": data["y"][1]}
    prob = ds.problems.custom(_simple, jnp.ones(D), data, test_data=test, eval_subsample=2,
                              grad_norm=False, worker_metrics=True)
    hist = ds.run(ds.algorithms.dsgd(ETA), prob, ds.topology.ring(N), steps=2, eval_every=2)
    assert "grad_norm_sq" not in hist.metrics
    sub, counts = ds.problems.evaluate.eval_rows(prob)
    assert sub["x"].shape == (N, 2, D) and counts.tolist() == [2] * N
    for i in range(N):  # the subsample is drawn from the worker's own rows
        assert all(any(np.array_equal(r, q) for q in data["x"][i]) for r in sub["x"][i])
    X = np.asarray(hist.params)
    xbar = X.mean(0)
    f = np.mean([np.mean((sub["x"][i] @ xbar - sub["y"][i]) ** 2) for i in range(N)])
    np.testing.assert_allclose(hist.metrics["loss"][-1], f, rtol=1e-5)
    mine = [np.mean((test["x"] @ X[i] - test["y"]) ** 2) for i in range(N)]
    np.testing.assert_allclose(hist.metrics["worker_mean_test_loss"][-1], np.mean(mine), rtol=1e-5)
    np.testing.assert_allclose(hist.metrics["worker_max_test_loss"][-1], np.max(mine), rtol=1e-5)
    np.testing.assert_allclose(hist.metrics["worker_min_test_loss"][-1], np.min(mine), rtol=1e-5)
    with pytest.raises(ValueError, match="subsample"):
        ds.problems.with_evaluation(prob, subsample=0)
    with pytest.raises(ValueError, match="unknown options"):
        ds.problems.with_evaluation(prob, chunk=3)


def test_epochs_visit_every_sample_once():
    m, b = 6, 2
    data = _data(7, m)
    data["id"] = np.tile(np.arange(m, dtype=np.int32), (N, 1))

    def counting(w, s, batch, key):
        seen = s["seen"] + jnp.sum(jax.nn.one_hot(batch["id"], m), axis=0)
        return _simple(w, batch), {"seen": seen if key is not None else s["seen"]}

    prob = ds.problems.custom(counting, jnp.zeros(D), data, model_state={"seen": np.zeros(m)},
                              batch_size=b, sampling="epoch")
    hist = ds.run(ds.algorithms.dsgd(ETA), prob, ds.topology.ring(N), steps=2 * m // b,
                  eval_every=m // b, workers="vmap")
    np.testing.assert_array_equal(hist.model_state["seen"], np.full((N, m), 2.0))
    # with replacement, some sample is drawn twice within the same number of steps
    rep = prob._replace(sampling="replacement")
    hist = ds.run(ds.algorithms.dsgd(ETA), rep, ds.topology.ring(N), steps=2 * m // b,
                  eval_every=m // b, workers="vmap")
    assert not np.all(hist.model_state["seen"] == 2.0)


@pytest.mark.parametrize("name", sorted(__import__("tests.registry", fromlist=["x"]).ALGORITHMS))
def test_every_algorithm_runs_a_model_with_state(name):
    """Every registered algorithm runs the extended form unchanged, and the model state sees
    exactly one update per gradient evaluation the algorithm reports."""
    from tests.registry import ALGORITHMS

    make, hp, (grad_evals, _, _) = ALGORITHMS[name]
    data = _data(8)

    def counting(w, s, batch, key):
        loss = jnp.mean((batch["x"] @ w - batch["y"]) ** 2) + 0.0 * s["calls"]
        return loss, {"calls": s["calls"] + (0.0 if key is None else 1.0)}

    prob = ds.problems.custom(counting, jnp.zeros(D), data, model_state={"calls": 0.0},
                              batch_size=2)
    topo = ds.topology.ring(N, weights="lazy")  # D² needs λ_min(W) > −1/3
    hist = ds.run(make(**hp), prob, topo, steps=3, eval_every=3, workers="vmap")
    assert np.all(np.isfinite(hist.metrics["loss"]))
    np.testing.assert_array_equal(hist.model_state["calls"], np.full(N, 3.0 * grad_evals))
    assert hist.metrics["grad_evals"][-1] == 3 * grad_evals
