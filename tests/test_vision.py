"""The image workloads cnn() and resnet20(): construction, errors, a short run of each, and the
BatchNorm statistics kept local against gossiped."""

import numpy as np
import pytest

import decsim as ds


@pytest.fixture(scope="module")
def digits_cnn():
    return ds.problems.cnn(4, dataset="digits", partition="sorted", batch_size=8,
                           train_size=160, test_size=40, worker_metrics=True)


def test_cnn_problem(digits_cnn):
    prob = digits_cnn
    assert prob.name == "cnn/digits" and prob.stateful and prob.model_state0 == {}
    assert prob.data["x"].shape[2:] == (8, 8, 1) and prob.info["n_classes"] == 10
    assert prob.info["label_counts"].sum() == 160
    # label-sorted: each worker sees few classes
    assert (prob.info["label_counts"] > 0).sum(axis=1).max() <= 4
    hist = ds.run(ds.algorithms.dsgd(0.05), prob, ds.topology.ring(4), steps=40, eval_every=20,
                  workers="map")
    acc = hist.metrics["test_accuracy"]
    assert np.all(np.isfinite(hist.metrics["loss"])) and hist.metrics["loss"][-1] < hist.metrics[
        "loss"][0]
    assert acc[-1] > acc[0]
    assert hist.metrics["worker_min_test_accuracy"][-1] <= hist.metrics[
        "worker_max_test_accuracy"][-1]


@pytest.mark.parametrize("mixing", ["local", "gossip"])
def test_resnet20_batchnorm_local_or_gossiped(mixing):
    prob = ds.problems.resnet20(4, dataset="digits", batch_size=4, train_size=32, test_size=8,
                                augment=True, model_state_mixing=mixing, eval_batch_size=16)
    assert 250_000 < prob.info["n_params"] < 300_000
    hist = ds.run(ds.algorithms.dsgd(0.05), prob, ds.topology.ring(4), steps=2, eval_every=2,
                  workers="map")
    assert np.all(np.isfinite(hist.metrics["loss"]))
    leaves = [np.asarray(a) for a in __import__("jax").tree.leaves(hist.model_state)]
    spread = max(float(np.ptp(a, axis=0).max()) for a in leaves if a.dtype.kind == "f")
    assert spread > 0  # the workers' statistics differ (their data differ)
    state_floats = sum(a[0].size for a in leaves if a.dtype.kind == "f")
    per_step = 32 * prob.info["n_params"] + (32 * state_floats if mixing == "gossip" else 0)
    assert hist.metrics["bits"][-1] == pytest.approx(2 * per_step, rel=1e-6)


def test_workload_errors(tmp_path):
    with pytest.raises(ValueError, match="data_batch_1|cifar"):
        ds.problems.resnet20(2, dataset="cifar10", data_dir=tmp_path)
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'"):
        ds.problems.cnn(2, dataset="imagenet")
    with pytest.raises(ValueError, match="augment"):
        ds.problems.cnn(2, dataset="mnist1d", augment=True, train_size=40, test_size=10)
    prob = ds.problems.cnn(2, dataset="mnist1d", train_size=40, test_size=10, batch_size=4)
    hist = ds.run(ds.algorithms.dsgd(0.05), prob, ds.topology.ring(2), steps=4, eval_every=2)
    assert prob.info["image_shape"] == (40, 1, 1) and np.isfinite(hist.metrics["loss"]).all()


def test_images_of_the_wrong_shape_are_refused_before_compiling():
    import jax

    model = ds.problems.nets.lenet()
    params, state = model.init(jax.random.PRNGKey(0), (8, 8, 1), 10)
    loss = ds.problems.nets.classifier_loss(model.apply)
    data = {"x": np.zeros((2, 4, 6, 6, 3), np.float32), "y": np.zeros((2, 4), np.int32)}
    with pytest.raises(ValueError, match="shapes"):
        ds.problems.custom(loss, params, data, model_state=state, batch_size=2)
