"""Checkpoint and resume (bitwise) and the evaluation callback."""

import jax.numpy as jnp
import numpy as np
import pytest

import decsim as ds


class Stop(Exception):
    pass


def _problem():
    rng = np.random.default_rng(0)
    data = {"x": rng.normal(size=(4, 8, 3)).astype(np.float32),
            "y": rng.normal(size=(4, 8)).astype(np.float32)}

    def loss(w, s, batch, key):
        pred = batch["x"] @ w
        return jnp.mean((pred - batch["y"]) ** 2), {"c": 0.9 * s["c"] + 0.1 * jnp.mean(pred)}

    return ds.problems.custom(loss, jnp.zeros(3), data, model_state={"c": 0.0}, batch_size=2,
                              sampling="epoch")


ALGO = ds.algorithms.choco_sgd(0.1, gamma=0.3, compressor=ds.compression.rand_k(0.5))
TOPO = ds.topology.ring(4)


def _equal(a, b):
    assert set(a.metrics) == set(b.metrics)
    for k in a.metrics:
        np.testing.assert_array_equal(a.metrics[k], b.metrics[k], err_msg=k)
    np.testing.assert_array_equal(a.params, b.params)
    np.testing.assert_array_equal(a.model_state["c"], b.model_state["c"])


@pytest.mark.parametrize("seeds", [None, [0, 1]])
def test_resume_is_bitwise_an_uninterrupted_run(tmp_path, seeds):
    prob = _problem()
    kw = dict(steps=40, eval_every=2, workers="vmap", seeds=seeds)
    ref = ds.run(ALGO, prob, TOPO, **kw)
    path = tmp_path / "run.npz"

    def stop_at_24(step, metrics):
        if step == 24:
            raise Stop

    with pytest.raises(Stop):
        ds.run(ALGO, prob, TOPO, checkpoint=path, callback=stop_at_24, **kw)
    assert path.exists()
    seen = []
    resumed = ds.run(ALGO, prob, TOPO, checkpoint=path, callback=lambda s, m: seen.append(s),
                     **kw)
    assert seen and seen[0] > 2 and seen[-1] == 40  # it did not start over
    _equal(ref, resumed)
    # a finished checkpoint returns the same History without running again
    again = ds.run(ALGO, prob, TOPO, checkpoint=path, callback=lambda s, m: seen.append(s), **kw)
    _equal(ref, again)


def test_a_checkpoint_of_another_run_is_refused(tmp_path):
    prob = _problem()
    path = tmp_path / "run.npz"
    ds.run(ALGO, prob, TOPO, steps=4, eval_every=2, workers="vmap", checkpoint=path)
    with pytest.raises(ValueError, match="another run"):
        ds.run(ALGO, prob, TOPO, steps=4, eval_every=2, workers="vmap", checkpoint=path,
               hparams={"learning_rate": 0.2})
    with pytest.raises(ValueError, match="is a folder"):
        ds.run(ALGO, prob, TOPO, steps=4, eval_every=2, checkpoint=tmp_path)
    (tmp_path / "junk.npz").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a decsim checkpoint"):
        ds.run(ALGO, prob, TOPO, steps=4, eval_every=2, workers="vmap",
               checkpoint=tmp_path / "junk.npz")


def test_callback_sees_every_evaluation_in_order():
    prob = ds.problems.quadratic(4, 3, noise=0.1)
    seen = []
    hist = ds.run(ds.algorithms.dsgd(0.1), prob, TOPO, steps=30, eval_every=3,
                  callback=lambda step, m: seen.append((step, m)))
    assert [s for s, _ in seen] == hist.steps.tolist()
    for j, (_, m) in enumerate(seen):
        for k in ("loss", "consensus", "grad_evals", "bits"):
            assert m[k] == pytest.approx(hist.metrics[k][j], rel=1e-6)
    with pytest.raises(ValueError, match="callback"):
        ds.run(ds.algorithms.dsgd(0.1), prob, TOPO, steps=3, callback="print")
