"""Tests of decsim.data (partitions, padding) and decsim.problems (shapes and known optima).

Reference quantities are computed independently with numpy. Nothing here calls ``decsim.run``.
"""

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import decsim as ds
from decsim import data as D
from decsim import problems as P

SCHEMES = ("iid", "dirichlet", "sorted", "shards")
SIZES = {"digits": (1797, 64, 10), "breast_cancer": (569, 30, 2)}  # samples, features, classes


@pytest.fixture(scope="module")
def digits_labels():
    _, y, n_classes = D.load_dataset("digits")
    assert n_classes == 10
    return y


def label_entropy(labels, parts, n_classes):
    """Mean over workers of the entropy (nats) of the worker's label histogram."""
    out = []
    for p in parts:
        freq = np.bincount(labels[p], minlength=n_classes) / len(p)
        freq = freq[freq > 0]
        out.append(float(-(freq * np.log(freq)).sum()))
    return float(np.mean(out))


# ---------------------------------------------------------------------------------------------
# datasets


@pytest.mark.parametrize("name", sorted(SIZES))
def test_load_dataset(name):
    X, y, n_classes = D.load_dataset(name)
    m, f, c = SIZES[name]
    assert X.shape == (m, f) and X.dtype == np.float32
    assert y.shape == (m,) and y.dtype == np.int32
    assert n_classes == c
    np.testing.assert_array_equal(np.unique(y), np.arange(c))


def test_load_dataset_accepts_hyphen_and_suggests():
    X, _, _ = D.load_dataset("breast-cancer")
    assert X.shape == (569, 30)
    with pytest.raises(ValueError, match=re.escape("dataset='digit' is not bundled") + ".*"
                       + re.escape("Did you mean 'digits'?")):
        D.load_dataset("digit")


def test_train_test_split_is_stratified_and_standardized():
    X, y, _ = D.load_dataset("digits")
    Xtr, ytr, Xte, yte = D.train_test(X, y, test_fraction=0.2, seed=0)
    assert len(yte) == math.ceil(0.2 * 1797) and len(ytr) + len(yte) == 1797
    assert Xtr.dtype == Xte.dtype == np.float32 and ytr.dtype == yte.dtype == np.int32
    # stratified: class frequencies agree to within a couple of samples per class
    np.testing.assert_allclose(np.bincount(yte, minlength=10) / len(yte),
                               np.bincount(y, minlength=10) / len(y), rtol=0, atol=0.01)
    # standardized with the training statistics (constant features stay at 0)
    np.testing.assert_allclose(Xtr.mean(axis=0), 0.0, rtol=0, atol=1e-5)
    std = Xtr.std(axis=0)
    np.testing.assert_allclose(std[std > 0], 1.0, rtol=0, atol=1e-4)
    Xall, yall, Xnone, ynone = D.train_test(X, y, test_fraction=0.0, seed=0)
    assert len(yall) == 1797 and Xnone.shape == (0, 64) and ynone.shape == (0,)
    with pytest.raises(ValueError, match="test_fraction must be in"):
        D.train_test(X, y, test_fraction=1.0, seed=0)


# ---------------------------------------------------------------------------------------------
# partitions


@pytest.mark.parametrize("n_workers", [1, 7, 32, 200])
@pytest.mark.parametrize("scheme", SCHEMES)
def test_partition_assigns_every_sample_once(digits_labels, scheme, n_workers):
    y = digits_labels
    parts = D.partition(y, n_workers, scheme, alpha=0.1, seed=3)
    assert isinstance(parts, list) and len(parts) == n_workers
    for p in parts:
        assert np.issubdtype(np.asarray(p).dtype, np.integer)
        assert len(p) >= 1
    everything = np.sort(np.concatenate(parts))
    np.testing.assert_array_equal(everything, np.arange(len(y)))


@pytest.mark.parametrize("scheme", SCHEMES)
def test_partition_is_deterministic(digits_labels, scheme):
    a = D.partition(digits_labels, 9, scheme, alpha=0.3, seed=11)
    b = D.partition(digits_labels, 9, scheme, alpha=0.3, seed=11)
    assert all(np.array_equal(pa, pb) for pa, pb in zip(a, b))
    if scheme != "sorted":  # the only scheme without randomness
        c = D.partition(digits_labels, 9, scheme, alpha=0.3, seed=12)
        assert any(not np.array_equal(pa, pc) for pa, pc in zip(a, c))


def test_iid_partition_is_balanced(digits_labels):
    y = digits_labels
    parts = D.partition(y, 10, "iid", seed=0)
    sizes = np.array([len(p) for p in parts])
    assert sizes.max() - sizes.min() <= 1
    # each worker sees nearly every class
    assert label_entropy(y, parts, 10) > 0.95 * np.log(10)


@pytest.mark.parametrize("n_workers", [3, 10, 25])
def test_sorted_partition_is_label_contiguous(digits_labels, n_workers):
    y = digits_labels
    parts = D.partition(y, n_workers, "sorted")
    sizes = np.array([len(p) for p in parts])
    assert sizes.max() - sizes.min() <= 1
    for p in parts:
        assert np.all(np.diff(y[p]) >= 0)  # nondecreasing labels within a worker
    for left, right in zip(parts[:-1], parts[1:]):
        assert y[left].max() <= y[right].min()  # and across consecutive workers
    if n_workers == 10:  # about one class per worker
        assert label_entropy(y, parts, 10) < 0.1 * np.log(10)


def test_shards_partition(digits_labels):
    y = digits_labels
    parts = D.partition(y, 10, "shards", shards_per_worker=2, seed=0)
    # 20 shards of 89 or 90 samples from the label-sorted order
    for p in parts:
        assert 178 <= len(p) <= 180
        assert np.all(np.diff(p) > 0)  # sorted indices
        assert len(np.unique(y[p])) <= 4  # two shards, each spanning at most two labels
    assert label_entropy(y, parts, 10) < 0.5 * np.log(10)


def test_dirichlet_skew_grows_as_alpha_shrinks(digits_labels):
    y = digits_labels
    skewed = np.mean([label_entropy(y, D.partition(y, 10, "dirichlet", alpha=0.1, seed=s), 10)
                      for s in range(3)])
    flat = np.mean([label_entropy(y, D.partition(y, 10, "dirichlet", alpha=100.0, seed=s), 10)
                    for s in range(3)])
    assert flat > 0.95 * np.log(10)
    assert skewed < 0.6 * np.log(10)
    assert skewed < flat - 0.3


def test_dirichlet_with_more_workers_than_a_class(digits_labels):
    # very small alpha leaves workers empty before the repair step: each must still get a sample
    parts = D.partition(digits_labels, 300, "dirichlet", alpha=0.01, seed=0)
    assert min(len(p) for p in parts) >= 1
    np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(len(digits_labels)))


def test_partition_of_tiny_label_set():
    y = np.array([0, 1, 1, 0, 2])
    for scheme in SCHEMES:
        parts = D.partition(y, 5, scheme, shards_per_worker=1, alpha=1.0, seed=0)
        assert sorted(len(p) for p in parts) == [1, 1, 1, 1, 1]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            dict(n_workers=4, scheme="dirichlett"),
            re.escape("partition='dirichlett' is unknown")
            + ".*"
            + re.escape("Did you mean 'dirichlet'?"),
        ),
        (dict(n_workers=4, scheme="sorte"), re.escape("Did you mean 'sorted'?")),
        (dict(n_workers=2000, scheme="iid"), "n_workers=2000 exceeds the 1797 training samples"),
        (dict(n_workers=0, scheme="iid"), "n_workers must be an integer >= 1"),
        (dict(n_workers=2.0, scheme="iid"), "n_workers must be an integer >= 1"),
        (dict(n_workers=4, scheme="dirichlet", alpha=0.0), "alpha must be positive.*alpha=0.0"),
        (dict(n_workers=4, scheme="dirichlet", alpha=-1.0), "alpha must be positive.*alpha=-1.0"),
        (dict(n_workers=4, scheme="shards", shards_per_worker=0), "shards_per_worker must be"),
        (
            dict(n_workers=1000, scheme="shards", shards_per_worker=2),
            "n_workers \\* shards_per_worker",
        ),
    ],
)
def test_partition_errors(digits_labels, kwargs, message):
    with pytest.raises(ValueError, match=message):
        D.partition(digits_labels, **kwargs)


# ---------------------------------------------------------------------------------------------
# stack


def test_stack_pads_with_counts():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(10, 3)).astype(np.float32)
    y = np.arange(10, dtype=np.int32)
    parts = [np.array([4, 1, 7]), np.array([0]), np.array([2, 3, 5, 6, 8, 9])]
    (xs, ys), counts = D.stack([X, y], parts)
    assert counts.dtype == np.int32
    np.testing.assert_array_equal(counts, [3, 1, 6])
    assert xs.shape == (3, 6, 3) and xs.dtype == np.float32
    assert ys.shape == (3, 6) and ys.dtype == np.int32
    for w, p in enumerate(parts):
        np.testing.assert_array_equal(xs[w, : len(p)], X[p])
        np.testing.assert_array_equal(ys[w, : len(p)], y[p])
        # padding rows are copies of the worker's first row (valid inputs, never used)
        np.testing.assert_array_equal(xs[w, len(p) :], np.broadcast_to(X[p[0]], (6 - len(p), 3)))
        np.testing.assert_array_equal(ys[w, len(p) :], np.full(6 - len(p), y[p[0]]))


def test_stack_of_a_partition(digits_labels):
    y = digits_labels
    parts = D.partition(y, 6, "dirichlet", alpha=0.5, seed=1)
    (ys,), counts = D.stack([y], parts)
    assert ys.shape == (6, max(len(p) for p in parts))
    assert int(counts.sum()) == len(y)
    merged = np.concatenate([ys[w, : counts[w]] for w in range(6)])
    np.testing.assert_array_equal(np.bincount(merged, minlength=10), np.bincount(y, minlength=10))


# ---------------------------------------------------------------------------------------------
# classification problems


def _numpy_xent(params, x, y, l2):
    logits = x.astype(np.float64) @ params["w"] + params["b"]
    logits -= logits.max(axis=1, keepdims=True)
    logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    return -logp[np.arange(len(y)), y].mean() + 0.5 * l2 * np.sum(params["w"] ** 2)


@pytest.mark.parametrize("dataset", ["digits", "breast_cancer"])
@pytest.mark.parametrize("model", ["logistic_regression", "mlp"])
def test_classification_problem_shapes(model, dataset):
    m, f, c = SIZES[dataset]
    n = 5
    n_test = math.ceil(0.2 * m)
    if model == "mlp":
        prob = P.mlp(n, dataset, hidden=(16, 8), partition="dirichlet", alpha=0.5, seed=2)
        expected = [(f, 16), (16, 8), (8, c)]
        assert [layer["w"].shape[1:] for layer in prob.params0] == expected
        assert [layer["b"].shape for layer in prob.params0] == [(n, o) for _, o in expected]
        for layer, (fan_in, fan_out) in zip(prob.params0, expected):
            assert np.all(np.abs(layer["w"]) <= np.sqrt(6.0 / (fan_in + fan_out)) + 1e-7)
            assert np.abs(layer["w"]).max() > 0
            np.testing.assert_array_equal(layer["b"], 0.0)
    else:
        prob = P.logistic_regression(n, dataset, partition="dirichlet", alpha=0.5, seed=2)
        assert prob.params0["w"].shape == (n, f, c) and prob.params0["b"].shape == (n, c)
        np.testing.assert_array_equal(prob.params0["w"], 0.0)
    for leaf in jax.tree.leaves(prob.params0):
        assert leaf.dtype == np.float32
        np.testing.assert_array_equal(leaf, np.broadcast_to(leaf[0], leaf.shape))  # same on all
    assert prob.n_workers == n
    assert prob.counts.shape == (n,) and prob.counts.dtype == np.int32
    assert prob.counts.min() >= 1
    assert int(prob.counts.sum()) == m - n_test == prob.info["n_train"]
    m_max = int(prob.counts.max())
    assert prob.data["x"].shape == (n, m_max, f) and prob.data["x"].dtype == np.float32
    assert prob.data["y"].shape == (n, m_max) and prob.data["y"].dtype == np.int32
    assert prob.data["y"].max() < c
    # test data exist, with test metrics
    assert prob.test_data["x"].shape == (n_test, f) and prob.test_data["y"].shape == (n_test,)
    assert prob.info["n_test"] == n_test
    assert prob.test_metrics is not None
    assert prob.info["n_features"] == f and prob.info["n_classes"] == c
    labels = prob.info["label_counts"]
    assert labels.shape == (n, c)
    np.testing.assert_array_equal(labels.sum(axis=1), prob.counts)
    assert prob.batch_size == 32


@pytest.mark.parametrize("dataset", ["digits", "breast_cancer"])
def test_logistic_full_loss_weighs_every_worker_equally(dataset):
    """f(x) = (1/n) Σ_i mean over worker i's own samples (padding never counted)."""
    prob = P.logistic_regression(4, dataset, partition="dirichlet", alpha=0.3, l2=1e-2, seed=1)
    assert len(set(prob.counts.tolist())) > 1  # unequal counts, so padding exists
    _, f, c = SIZES[dataset]
    rng = np.random.default_rng(0)
    params = {
        "w": rng.normal(size=(f, c)).astype(np.float32) * 0.3,
        "b": rng.normal(size=c).astype(np.float32),
    }
    expected = np.mean(
        [
            _numpy_xent(params, prob.data["x"][i, :k], prob.data["y"][i, :k], 1e-2)
            for i, k in enumerate(prob.counts)
        ]
    )
    got = float(P.full_loss(prob)(jax.tree.map(jnp.asarray, params)))
    assert got == pytest.approx(expected, rel=1e-4)
    # at zero parameters every sample costs log(c)
    zero = jax.tree.map(lambda a: jnp.asarray(a[0]), prob.params0)
    assert float(P.full_loss(prob)(zero)) == pytest.approx(np.log(c), rel=1e-5)


def test_classification_argument_errors():
    with pytest.raises(ValueError, match="n_workers must be an integer >= 1"):
        P.logistic_regression(0)
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        P.logistic_regression(2, batch_size=0)
    with pytest.raises(ValueError, match="activation must be 'tanh' or 'relu'"):
        P.mlp(2, activation="gelu")
    with pytest.raises(ValueError, match=r"hidden\[i\] must be an integer >= 1"):
        P.mlp(2, hidden=(8, 0))
    with pytest.raises(ValueError, match=re.escape("Did you mean 'iid'?")):
        P.logistic_regression(2, partition="idd")


# ---------------------------------------------------------------------------------------------
# quadratic and consensus


def _worker_grads(prob, x):
    """Stacked ∇f_i(x) (numpy float64), from the problem's own loss on each worker's rows."""
    grads = []
    for i in range(prob.n_workers):
        data_i = jax.tree.map(lambda a, i=i: jnp.asarray(a[i, : prob.counts[i]]), prob.data)
        grads.append(np.asarray(jax.grad(prob.loss_fn)(x, data_i), np.float64))
    return np.stack(grads)


@pytest.fixture(scope="module")
def quad():
    return P.quadratic(6, 5, mu=0.2, L=2.0, noise=0.3, heterogeneity=1.5, seed=3)


def test_quadratic_shapes(quad):
    assert quad.n_workers == 6
    assert quad.params0.shape == (6, 5) and quad.params0.dtype == np.float32
    np.testing.assert_array_equal(quad.counts, np.ones(6))
    assert quad.info["x_star"].shape == (5,)
    assert quad.info["sigma2"] == pytest.approx(0.09, rel=1e-12)
    assert quad.noise_std == pytest.approx(0.3, rel=1e-12)
    assert quad.info["dim"] == 5


def test_quadratic_x_star_is_the_minimizer(quad):
    f = P.full_loss(quad)
    x_star = jnp.asarray(quad.info["x_star"])
    g = np.asarray(jax.grad(f)(x_star))
    np.testing.assert_allclose(g, 0.0, rtol=0, atol=1e-5)
    assert float(f(x_star)) == pytest.approx(quad.info["f_star"], rel=1e-5)
    # and it is the minimum: moving away increases f
    for direction in np.eye(5, dtype=np.float32):
        assert float(f(x_star + 0.1 * direction)) > quad.info["f_star"]


def test_quadratic_zeta2(quad):
    rng = np.random.default_rng(1)
    for x in (quad.info["x_star"], rng.normal(size=5).astype(np.float32)):
        G = _worker_grads(quad, jnp.asarray(x))
        zeta2 = np.mean(np.sum((G - G.mean(axis=0)) ** 2, axis=1))
        assert quad.info["zeta2"] == pytest.approx(zeta2, rel=1e-4)
    assert quad.info["zeta2"] == pytest.approx(1.5**2, rel=1e-6)  # heterogeneity²
    # and the mean of the local gradients is the full gradient
    x = jnp.asarray(rng.normal(size=5).astype(np.float32))
    np.testing.assert_allclose(
        _worker_grads(quad, x).mean(axis=0),
        np.asarray(jax.grad(P.full_loss(quad))(x)),
        rtol=1e-5,
        atol=1e-5,
    )


def test_quadratic_mu_and_L_are_extreme_eigenvalues(quad):
    H = np.asarray(jax.hessian(P.full_loss(quad))(jnp.zeros(5, jnp.float32)), np.float64)
    eig = np.linalg.eigvalsh(0.5 * (H + H.T))
    assert eig.min() == pytest.approx(quad.info["mu"], rel=1e-5)
    assert eig.max() == pytest.approx(quad.info["L"], rel=1e-5)
    assert quad.info["mu"] == 0.2 and quad.info["L"] == 2.0


def test_quadratic_single_worker_and_isotropic():
    one = P.quadratic(1, 3, seed=0)
    assert one.info["zeta2"] == 0.0
    np.testing.assert_allclose(
        np.asarray(jax.grad(P.full_loss(one))(jnp.asarray(one.info["x_star"]))),
        0.0,
        rtol=0,
        atol=1e-6,
    )
    iso = P.quadratic(4, 3, mu=0.5, L=0.5, seed=0)
    H = np.asarray(jax.hessian(P.full_loss(iso))(jnp.zeros(3, jnp.float32)))
    np.testing.assert_allclose(H, 0.5 * np.eye(3), rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(n_workers=0, dim=3), "n_workers must be"),
        (dict(n_workers=2, dim=0), "dim must be an integer >= 1"),
        (dict(n_workers=2, dim=3, mu=0.0), "mu must be a finite positive number; got mu=0.0"),
        (dict(n_workers=2, dim=3, mu=2.0, L=1.0), "need 0 < mu <= L"),
        (
            dict(n_workers=2, dim=3, noise=-1.0),
            "noise must be a finite number >= 0; got noise=-1.0",
        ),
        (dict(n_workers=2, dim=3, heterogeneity="1"), "heterogeneity must be a finite number >= 0"),
    ],
)
def test_quadratic_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        P.quadratic(**kwargs)


def test_consensus_target_is_the_initial_mean():
    prob = P.consensus(5, 3, seed=1)
    assert prob.params0.shape == (5, 3)
    assert not np.allclose(prob.params0[0], prob.params0[1])  # workers start apart
    mean = prob.params0.astype(np.float64).mean(axis=0)
    np.testing.assert_allclose(prob.info["x_star"], mean, rtol=0, atol=1e-6)
    np.testing.assert_allclose(prob.aux, mean, rtol=0, atol=1e-6)
    f = P.full_loss(prob)
    x_star = jnp.asarray(prob.info["x_star"])
    np.testing.assert_allclose(np.asarray(jax.grad(f)(x_star)), 0.0, rtol=0, atol=1e-6)
    f_star = np.mean(0.5 * np.sum((prob.params0 - mean) ** 2, axis=1))
    assert prob.info["f_star"] == pytest.approx(f_star, rel=1e-5)
    assert float(f(x_star)) == pytest.approx(f_star, rel=1e-5)
    # consensus_error at the start is (1/n) Σ ||a_i − ā||²
    err = float(
        prob.extra_metrics(jnp.asarray(prob.params0), jnp.asarray(prob.aux))["consensus_error"]
    )
    assert err == pytest.approx(2 * f_star, rel=1e-5)


@pytest.mark.parametrize("dim", [0, -1, 2.5])
def test_consensus_validates_dim(dim):
    with pytest.raises(ValueError, match="dim must be an integer >= 1"):
        P.consensus(3, dim)


def test_custom_rejects_fractional_counts():
    data = {"x": np.zeros((2, 3, 1), np.float32)}
    with pytest.raises(ValueError, match="counts must be 2 whole numbers"):
        P.custom(lambda p, b: jnp.sum(p), np.zeros(1, np.float32), data, counts=[1.7, 2])


def test_optimum_recovers_quadratic_minimizer(quad):
    x, value = P.optimum(quad)
    np.testing.assert_allclose(x, quad.info["x_star"], rtol=0, atol=1e-3)
    assert value == pytest.approx(quad.info["f_star"], rel=1e-4, abs=1e-6)


def test_optimum_is_stationary_on_real_data():
    """L-BFGS on regularized logistic regression: the gradient at x* vanishes to float32 noise
    and no random nearby point is lower."""
    prob = P.logistic_regression(4, "digits", partition="dirichlet", alpha=0.5, l2=1e-2, seed=0)
    x, value = P.optimum(prob)
    f = P.full_loss(prob)
    grad = jax.grad(f)(jax.tree.map(jnp.asarray, x))
    assert max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(grad)) < 1e-4
    assert value < float(f(jax.tree.map(lambda a: jnp.asarray(a[0]), prob.params0))) - 0.5
    rng = np.random.default_rng(0)
    for _ in range(3):
        nearby = jax.tree.map(
            lambda a: jnp.asarray(a + 1e-2 * rng.normal(size=a.shape), jnp.float32), x
        )
        assert float(f(nearby)) >= value - 1e-6
    assert jax.tree.leaves(x)[0].dtype == np.float32


# ---------------------------------------------------------------------------------------------
# custom


def _mse(params, batch):
    return jnp.mean(jnp.square(batch["x"] @ params - batch["y"]))


def test_custom_problem():
    rng = np.random.default_rng(0)
    data = {
        "x": rng.normal(size=(4, 10, 3)).astype(np.float32),
        "y": rng.normal(size=(4, 10)).astype(np.float32),
    }
    prob = P.custom(_mse, np.zeros(3, np.float32), data)
    assert prob.n_workers == 4
    assert prob.params0.shape == (4, 3)
    np.testing.assert_array_equal(prob.counts, np.full(4, 10))
    assert prob.counts.dtype == np.int32
    assert prob.batch_size is None and prob.test_metrics is None
    with_test = P.custom(
        _mse,
        np.zeros(3, np.float32),
        data,
        counts=[10, 3, 1, 7],
        batch_size=2,
        test_data={"x": data["x"][0], "y": data["y"][0]},
    )
    np.testing.assert_array_equal(with_test.counts, [10, 3, 1, 7])
    assert with_test.batch_size == 2
    metrics = with_test.test_metrics(jnp.ones(3, jnp.float32), with_test.test_data)
    expected = np.mean((data["x"][0] @ np.ones(3) - data["y"][0]) ** 2)
    assert float(metrics["test_loss"]) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize(
    "worker_data",
    [
        {"x": np.zeros((4, 10, 3)), "y": np.zeros((4, 9))},
        {"x": np.zeros((4, 10, 3)), "y": np.zeros((3, 10))},
        {"x": np.zeros((4, 10, 3)), "y": np.zeros(4)},
    ],
)
def test_custom_rejects_mismatched_leading_shapes(worker_data):
    with pytest.raises(
        ValueError, match=r"every leaf of worker_data must have shape \[n_workers, m"
    ):
        P.custom(_mse, np.zeros(3), worker_data)


def test_custom_rejects_empty_data():
    with pytest.raises(ValueError, match="at least one array leaf"):
        P.custom(_mse, np.zeros(3), {})


@pytest.mark.parametrize("counts", [[10, 10, 0, 5], [10, 11, 1, 1], [10, 10, 10], 5])
def test_custom_rejects_bad_counts(counts):
    data = {"x": np.zeros((4, 10, 3), np.float32), "y": np.zeros((4, 10), np.float32)}
    with pytest.raises(ValueError, match=re.escape("counts must be 4 whole numbers in [1, 10]")):
        P.custom(_mse, np.zeros(3, np.float32), data, counts=counts)


def test_custom_rejects_bad_batch_size():
    data = {"x": np.zeros((2, 5, 3), np.float32), "y": np.zeros((2, 5), np.float32)}
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        P.custom(_mse, np.zeros(3, np.float32), data, batch_size=-1)


def test_public_names():
    assert ds.problems.quadratic is P.quadratic and ds.data.partition is D.partition


def _dense_case(seed=0):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.normal(size=(3, 5, 4)).astype(np.float32))  # [workers, batch, in]
    w = jnp.asarray(rng.normal(size=(3, 4, 2)).astype(np.float32))  # [workers, in, out]
    return x, w


def test_dense_value_and_reverse_mode_match_matmul():
    """`dense` differs from `x @ w` only in the layout XLA gets for the weight gradient."""
    x, w = _dense_case()

    def loss(dot, w_, x_):
        return jnp.sum(jnp.tanh(dot(x_, w_)) ** 2)

    matmul = lambda a, b: a @ b  # noqa: E731
    np.testing.assert_allclose(P.dense(x[0], w[0]), x[0] @ w[0], rtol=1e-6)
    # per-worker gradients with respect to both arguments, vmapped as the runner does
    g_dense = jax.vmap(jax.grad(lambda w_, x_: loss(P.dense, w_, x_), argnums=(0, 1)))(w, x)
    g_plain = jax.vmap(jax.grad(lambda w_, x_: loss(matmul, w_, x_), argnums=(0, 1)))(w, x)
    for a, b in zip(g_dense, g_plain):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        assert float(jnp.max(jnp.abs(a))) > 0


def test_dense_forward_mode_and_hessian_match_matmul():
    x, w = _dense_case(1)
    dx, dw = _dense_case(2)
    out, tan = jax.jvp(P.dense, (x[0], w[0]), (dx[0], dw[0]))
    np.testing.assert_allclose(out, x[0] @ w[0], rtol=1e-6)
    np.testing.assert_allclose(tan, dx[0] @ w[0] + x[0] @ dw[0], rtol=1e-5, atol=1e-6)
    hess = lambda dot: jax.hessian(lambda w_: jnp.sum(jnp.tanh(dot(x[0], w_))))(w[0])  # noqa: E731
    np.testing.assert_allclose(hess(P.dense), hess(lambda a, b: a @ b), rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the layout concern is XLA:CPU's")
def test_mlp_gradient_uses_only_library_matmuls():
    """The bundled MLP's per-worker backward pass compiles without a dot that contracts the batch
    axis of its input (the slow generic loop on XLA:CPU): every weight gradient sees a
    materialized transpose. Checked on the optimized HLO, on CPU only (CI runs on CPU)."""
    prob = P.mlp(4, "digits", hidden=(8,), batch_size=5, seed=0)
    X = jax.tree.map(jnp.asarray, prob.params0)
    batch = jax.tree.map(lambda a: jnp.asarray(a[:, :5]), prob.data)
    hlo = jax.jit(jax.vmap(jax.grad(prob.loss_fn))).lower(X, batch).compile().as_text()
    dots = re.findall(r"dot\([^)]*\), lhs_batch_dims=\{0\}, lhs_contracting_dims=\{(\d)\}", hlo)
    assert dots and "1" not in dots, dots  # contracting dim 1 of a [n, batch, features] operand
