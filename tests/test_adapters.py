"""Model adapters (decsim.problems.adapters): Flax nnx / linen and Equinox models as the extended
problem contract, checked against numpy forward passes written here from the layers' formulas."""

import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from decsim.problems import adapters

equinox = pytest.importorskip("equinox")
flax = pytest.importorskip("flax")
from flax import linen, nnx  # noqa: E402

eqx = equinox
EPS = 1e-5
RNG = np.random.default_rng(0)
X = RNG.normal(size=(8, 8)).astype(np.float32)
Y = RNG.integers(0, 3, size=8).astype(np.int32)
BATCH = {"x": X, "y": Y}
KEY = jax.random.key(7)


# ----------------------------------------------------------------------------- numpy references


def np_cross_entropy(logits, y):
    z = logits - logits.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    return -np.mean(logp[np.arange(len(y)), y])


def np_bn(h, mean, var, scale, bias):
    return (h - mean) / np.sqrt(var + EPS) * scale + bias


def np_net(x, k1, b1, k2, b2, bn_scale, bn_bias, *, mean=None, var=None):
    """Linear -> BatchNorm -> relu -> Linear; ``mean=None``: batch statistics (training)."""
    h = x @ k1 + b1
    batch_mean, batch_var = h.mean(0), h.var(0)
    m, v = (batch_mean, batch_var) if mean is None else (mean, var)
    out = np.maximum(np_bn(h, m, v, bn_scale, bn_bias), 0) @ k2 + b2
    return out, batch_mean, batch_var


def allclose(a, b, tol=1e-5):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=tol, atol=tol)


# ----------------------------------------------------------------------------- flax nnx


class NnxNet(nnx.Module):
    def __init__(self, rate=0.5, *, rngs):
        self.l1 = nnx.Linear(8, 6, rngs=rngs)
        self.bn = nnx.BatchNorm(6, rngs=rngs)
        self.do = nnx.Dropout(rate, rngs=rngs)
        self.l2 = nnx.Linear(6, 3, rngs=rngs)

    def __call__(self, x):
        return self.l2(self.do(nnx.relu(self.bn(self.l1(x)))))


class NnxCNN(nnx.Module):
    def __init__(self, *, rngs):
        self.conv = nnx.Conv(1, 2, (3, 3), rngs=rngs)
        self.bn = nnx.BatchNorm(2, rngs=rngs)
        self.do = nnx.Dropout(0.3, rngs=rngs)
        self.out = nnx.Linear(6 * 6 * 2, 3, rngs=rngs)

    def __call__(self, x):
        h = self.do(nnx.relu(self.bn(self.conv(x))))
        return self.out(h.reshape(h.shape[0], -1))


def nnx_np_args(p):
    return (p["l1"]["kernel"], p["l1"]["bias"], p["l2"]["kernel"], p["l2"]["bias"],
            p["bn"]["scale"], p["bn"]["bias"])


def test_nnx_params_hold_only_params_and_state_only_batch_stats():
    model = NnxNet(rngs=nnx.Rngs(0))
    _, params0, state0, _ = adapters.flax_parts(model, X)
    assert jax.tree.structure(params0) == jax.tree.structure(
        {"bn": {"bias": 0, "scale": 0}, "l1": {"bias": 0, "kernel": 0},
         "l2": {"bias": 0, "kernel": 0}})
    assert jax.tree.structure(state0) == jax.tree.structure({"bn": {"mean": 0, "var": 0}})
    n_param = sum(np.size(a) for a in jax.tree.leaves(nnx.state(model, nnx.Param)))
    assert sum(np.size(a) for a in jax.tree.leaves(params0)) == n_param == 8 * 6 + 6 + 18 + 3 + 12
    assert all(jnp.issubdtype(a.dtype, jnp.floating) for a in jax.tree.leaves(params0 | state0))
    allclose(params0["l1"]["kernel"], model.l1.kernel.get_value())


def test_nnx_eval_mode_matches_numpy_and_returns_the_state_unchanged():
    model = NnxNet(rngs=nnx.Rngs(0))
    loss_fn, p, s, metrics = adapters.flax_parts(model, X)
    s = {"bn": {"mean": np.full(6, 0.3, np.float32), "var": np.full(6, 2.0, np.float32)}}
    loss, s_out = jax.jit(lambda p, s, b: loss_fn(p, s, b, None))(p, s, BATCH)
    ref, _, _ = np_net(X, *nnx_np_args(jax.tree.map(np.asarray, p)), mean=0.3, var=2.0)
    allclose(loss, np_cross_entropy(ref, Y))
    assert s_out is s or jax.tree.all(jax.tree.map(np.array_equal, s_out, s))
    m = metrics(p, s, BATCH)
    allclose(m["test_loss"], loss)
    allclose(m["test_accuracy"], np.mean(ref.argmax(-1) == Y))
    # evaluation does not depend on the batch's composition (running statistics, no dropout)
    singles = [loss_fn(p, s, {"x": X[i:i + 1], "y": Y[i:i + 1]}, None)[0] for i in range(8)]
    allclose(np.mean(singles), loss)


def test_nnx_train_mode_uses_batch_statistics_and_updates_them():
    model = NnxNet(rate=0.0, rngs=nnx.Rngs(1))
    loss_fn, p, s, _ = adapters.flax_parts(model, X)
    loss, s1 = jax.jit(loss_fn)(p, s, BATCH, KEY)
    ref, bm, bv = np_net(X, *nnx_np_args(jax.tree.map(np.asarray, p)))
    allclose(loss, np_cross_entropy(ref, Y))
    allclose(s1["bn"]["mean"], 0.99 * 0.0 + 0.01 * bm)
    allclose(s1["bn"]["var"], 0.99 * 1.0 + 0.01 * bv)
    # the user's model object and a numpy state given in are untouched by the pure calls
    allclose(model.bn.mean.get_value(), np.zeros(6))
    s_np = jax.tree.map(np.array, s)
    loss_fn(p, s_np, BATCH, KEY)
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b), s_np, s)


def test_nnx_dropout_only_with_a_key_and_reproducible_per_key():
    loss_fn, p, s, _ = adapters.flax_parts(NnxNet(rate=0.5, rngs=nnx.Rngs(2)), X)
    f = jax.jit(loss_fn)
    a, b, c = (f(p, s, BATCH, k)[0] for k in (KEY, KEY, jax.random.key(8)))
    assert a == b and a != c
    # raw uint32 key data gives the same masks as the typed key
    assert f(p, s, BATCH, jax.random.key_data(KEY))[0] == a
    # with no dropout and key=None twice: identical; with rate 0.5 and a key, differs from eval
    e1, e2 = (loss_fn(p, s, BATCH, None)[0] for _ in range(2))
    assert e1 == e2
    loss_nodrop, _ = adapters.flax_parts(NnxNet(rate=0.0, rngs=nnx.Rngs(2)), X)[0](
        p, s, BATCH, KEY)
    assert loss_nodrop != a


def test_nnx_gradient_is_with_respect_to_params_only():
    loss_fn, p, s, _ = adapters.flax_parts(NnxNet(rngs=nnx.Rngs(3)), X)
    g = jax.grad(lambda p: loss_fn(p, s, BATCH, None)[0])(p)
    assert jax.tree.structure(g) == jax.tree.structure(p)

    def ref(p):  # the same forward in jnp, eval mode, from the formulas
        row = lambda v: v[None]
        h = X @ p["l1"]["kernel"] + row(p["l1"]["bias"])
        h = (h - row(s["bn"]["mean"])) / row(jnp.sqrt(s["bn"]["var"] + EPS) / p["bn"]["scale"])
        h = jax.nn.relu(h + row(p["bn"]["bias"])) @ p["l2"]["kernel"] + row(p["l2"]["bias"])
        return -jnp.mean(jax.nn.log_softmax(h)[jnp.arange(8), Y])

    jax.tree.map(lambda a, b: allclose(a, b), g, jax.grad(ref)(p))


def test_nnx_cnn_eval_is_independent_of_batch_composition():
    x = RNG.normal(size=(6, 6, 6, 1)).astype(np.float32)
    y = np.array([0, 1, 2, 0, 1, 2], np.int32)
    loss_fn, p, s, _ = adapters.flax_parts(NnxCNN(rngs=nnx.Rngs(0)), x)
    _, s = loss_fn(p, s, {"x": x, "y": y}, KEY)  # some non-trivial running statistics
    whole = loss_fn(p, s, {"x": x, "y": y}, None)[0]
    halves = [loss_fn(p, s, {"x": x[i:i + 3], "y": y[i:i + 3]}, None)[0] for i in (0, 3)]
    allclose(np.mean(halves), whole)
    assert not np.allclose(loss_fn(p, s, {"x": x[:3], "y": y[:3]}, KEY)[0], halves[0])


# ----------------------------------------------------------------------------- flax linen


class LinenNet(linen.Module):
    rate: float = 0.5

    @linen.compact
    def __call__(self, x, train):
        x = linen.Dense(6)(x)
        x = linen.BatchNorm(use_running_average=not train, epsilon=EPS)(x)
        x = linen.Dropout(self.rate, deterministic=not train)(linen.relu(x))
        return linen.Dense(3)(x)


class LinenMLP(linen.Module):
    @linen.compact
    def __call__(self, x):
        return linen.Dense(3)(linen.tanh(linen.Dense(5)(x)))


def linen_np_args(p):
    return (p["Dense_0"]["kernel"], p["Dense_0"]["bias"], p["Dense_1"]["kernel"],
            p["Dense_1"]["bias"], p["BatchNorm_0"]["scale"], p["BatchNorm_0"]["bias"])


def test_linen_parts_match_apply_and_numpy():
    model = LinenNet(rate=0.0)
    loss_fn, p, s, metrics = adapters.flax_parts(model, X, seed=3)
    assert set(s) == {"batch_stats"} and "batch_stats" not in p
    ref_vars = model.init(jax.random.split(jax.random.key(3))[0], X, train=False)
    jax.tree.map(lambda a, b: allclose(a, b), p, ref_vars["params"])
    npp = jax.tree.map(np.asarray, p)
    loss, s1 = jax.jit(loss_fn)(p, s, BATCH, KEY)
    ref, bm, bv = np_net(X, *linen_np_args(npp))
    allclose(loss, np_cross_entropy(ref, Y))
    allclose(s1["batch_stats"]["BatchNorm_0"]["mean"], 0.01 * bm)
    allclose(s1["batch_stats"]["BatchNorm_0"]["var"], 0.99 + 0.01 * bv)
    loss_e, s_e = loss_fn(p, s1, BATCH, None)
    assert s_e is s1
    out = model.apply({"params": p, **s1}, X, train=False)
    allclose(loss_e, np_cross_entropy(np.asarray(out), Y))
    allclose(metrics(p, s1, BATCH)["test_accuracy"], np.mean(np.asarray(out).argmax(-1) == Y))


def test_linen_dropout_needs_a_key_and_is_reproducible():
    loss_fn, p, s, _ = adapters.flax_parts(LinenNet(rate=0.5), X)
    f = jax.jit(loss_fn)
    a, b, c = (f(p, s, BATCH, k)[0] for k in (KEY, KEY, jax.random.key(9)))
    assert a == b and a != c
    assert loss_fn(p, s, BATCH, None)[0] == loss_fn(p, s, BATCH, None)[0]


def test_linen_without_train_kwarg_and_mse():
    model = LinenMLP()
    y = RNG.normal(size=(8, 3)).astype(np.float32)
    loss_fn, p, s, metrics = adapters.flax_parts(model, X, train_kwarg=None, loss="mse")
    assert s == {}
    out = np.asarray(model.apply({"params": p}, X))
    loss, s1 = loss_fn(p, s, {"x": X, "y": y}, KEY)
    allclose(loss, np.mean((out - y) ** 2))
    assert s1 == {}
    assert set(metrics(p, s, {"x": X, "y": y})) == {"test_loss"}


# ----------------------------------------------------------------------------- equinox


class EqxNet(eqx.Module):
    l1: eqx.nn.Linear
    bn: eqx.nn.BatchNorm
    do: eqx.nn.Dropout
    l2: eqx.nn.Linear

    def __init__(self, key, rate=0.5, mode="ema"):
        k1, k2 = jax.random.split(key)
        self.l1 = eqx.nn.Linear(8, 6, key=k1)
        self.bn = eqx.nn.BatchNorm(6, axis_name="batch", mode=mode, eps=EPS)
        self.do = eqx.nn.Dropout(rate)
        self.l2 = eqx.nn.Linear(6, 3, key=k2)

    def __call__(self, x, state, *, key=None):
        h, state = self.bn(self.l1(x), state)
        return self.l2(self.do(jax.nn.relu(h), key=key)), state


def eqx_np_args(m):
    return (np.asarray(m.l1.weight).T, np.asarray(m.l1.bias), np.asarray(m.l2.weight).T,
            np.asarray(m.l2.bias), np.asarray(m.bn.weight), np.asarray(m.bn.bias))


def test_equinox_stateful_parts_match_numpy():
    model, state = eqx.nn.make_with_state(EqxNet)(jax.random.key(0), rate=0.0)
    loss_fn, p, s, metrics = adapters.equinox_parts((model, state), X)
    # params0: the 4 weights and biases of the linears and the 2 BN affine vectors, no statistics
    assert sum(np.size(a) for a in jax.tree.leaves(p)) == 8 * 6 + 6 + 18 + 3 + 12
    assert sorted(s) == ["EqxNet.bn.ema_first_time_index", "EqxNet.bn.ema_state_index"]
    loss, s1 = jax.jit(loss_fn)(p, s, BATCH, KEY)
    ref, bm, bv = np_net(X, *eqx_np_args(model))
    allclose(loss, np_cross_entropy(ref, Y))
    # first training call of an "ema" BatchNorm: the running statistics are the batch's
    mean, var = s1["EqxNet.bn.ema_state_index"]
    assert bool(s["EqxNet.bn.ema_first_time_index"]) and not s1["EqxNet.bn.ema_first_time_index"]
    allclose(mean, bm)
    allclose(var, bv)
    loss_e, s_e = loss_fn(p, s1, BATCH, None)
    ref_e, _, _ = np_net(X, *eqx_np_args(model), mean=bm, var=bv)
    allclose(loss_e, np_cross_entropy(ref_e, Y))
    assert jax.tree.all(jax.tree.map(np.array_equal, s_e, s1))
    allclose(metrics(p, s1, BATCH)["test_accuracy"], np.mean(ref_e.argmax(-1) == Y))
    singles = [loss_fn(p, s1, {"x": X[i:i + 1], "y": Y[i:i + 1]}, None)[0] for i in range(8)]
    allclose(np.mean(singles), loss_e)


def test_equinox_state_detected_and_built_and_dropout_per_key():
    raw = EqxNet(jax.random.key(1), rate=0.5)  # not through make_with_state
    loss_fn, p, s, _ = adapters.equinox_parts(raw, X)
    assert set(s) == {"EqxNet.bn.ema_first_time_index", "EqxNet.bn.ema_state_index"}
    assert sum(np.size(a) for a in jax.tree.leaves(p)) == 87  # no initial statistics (99 with them)
    f = jax.jit(loss_fn)
    a, b, c = (f(p, s, BATCH, k)[0] for k in (KEY, KEY, jax.random.key(5)))
    assert a == b and a != c
    assert loss_fn(p, s, BATCH, None)[0] == loss_fn(p, s, BATCH, None)[0]
    # a worker average turns the boolean "first time" flag into a float: it is cast back
    averaged = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), s)
    allclose(f(p, averaged, BATCH, KEY)[0], a)
    out_state = f(p, averaged, BATCH, KEY)[1]
    assert [a.dtype for a in jax.tree.leaves(out_state)] == [a.dtype for a in jax.tree.leaves(s)]
    assert jnp.bool_ in [a.dtype for a in jax.tree.leaves(s)]


def test_equinox_stateless_mlp_matches_vmap_and_gradient():
    model = eqx.nn.MLP(8, 3, 5, 1, key=jax.random.key(2))
    loss_fn, p, s, metrics = adapters.equinox_parts(model, X)
    assert s == {}
    out = jax.vmap(model)(X)
    loss, s1 = loss_fn(p, s, BATCH, KEY)
    allclose(loss, np_cross_entropy(np.asarray(out), Y))
    assert s1 == {}
    g = jax.grad(lambda p: loss_fn(p, s, BATCH, None)[0])(p)
    assert jax.tree.structure(g) == jax.tree.structure(p)
    g_ref = eqx.filter_grad(
        lambda m: -jnp.mean(jax.nn.log_softmax(jax.vmap(m)(X))[jnp.arange(8), Y]))(model)
    jax.tree.map(lambda a, b: allclose(a, b), g, eqx.filter(g_ref, eqx.is_inexact_array))


# ----------------------------------------------------------------------------- errors


def test_bad_inputs_fail_with_the_argument_named():
    with pytest.raises(ValueError, match="loss must be one of"):
        adapters.flax_parts(nnx.Linear(8, 3, rngs=nnx.Rngs(0)), X, loss="hinge")
    with pytest.raises(ValueError, match="model must be a flax"):
        adapters.flax_parts(lambda x: x, X)
    with pytest.raises(ValueError, match="model must be an equinox"):
        adapters.equinox_parts(nnx.Linear(8, 3, rngs=nnx.Rngs(0)), X)
    with pytest.raises(ValueError, match="fails in evaluation mode on sample_x of shape"):
        adapters.flax_parts(nnx.Linear(8, 3, rngs=nnx.Rngs(0)), np.zeros((2, 5), np.float32))
    with pytest.raises(ValueError, match="fails in training mode"):  # dropout without a stream
        adapters.flax_parts(nnx.Sequential(nnx.Linear(8, 3, rngs=nnx.Rngs(0)), nnx.Dropout(0.5)),
                            X)
    with pytest.raises(ValueError, match="model.init fails .* train_kwarg"):
        adapters.flax_parts(LinenMLP(), X)  # takes no `train` keyword
    with pytest.raises(ValueError, match="fails in evaluation mode on sample_x"):
        adapters.equinox_parts(eqx.nn.MLP(8, 3, 5, 1, key=KEY), np.zeros((2, 5), np.float32))
    with pytest.raises(ValueError, match="keys 'x' and 'y'"):
        adapters.from_flax(nnx.Linear(8, 3, rngs=nnx.Rngs(0)), {"x": np.zeros((4, 16, 8))})
    with pytest.raises(ValueError, match="stateful=True"):
        adapters.equinox_parts(eqx.nn.MLP(8, 3, 5, 1, key=KEY), X, stateful=True)


def test_missing_library_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "flax", None)
    with pytest.raises(ImportError, match=r"pip install decsim\[flax\]"):
        adapters.flax_parts(None, X)
    monkeypatch.setitem(sys.modules, "equinox", None)
    with pytest.raises(ImportError, match=r"pip install decsim\[equinox\]"):
        adapters.equinox_parts(None, X)


# ----------------------------------------------------------------------------- end to end


def make_data(shape, n=4, m=16, seed=0):
    """n workers x m samples of a 3-class linear teacher, and 32 test samples."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n * m + 32,) + shape).astype(np.float32)
    w = rng.normal(size=(int(np.prod(shape)), 3))
    y = (x.reshape(len(x), -1) @ w).argmax(-1).astype(np.int32)
    train = {"x": x[:n * m].reshape((n, m) + shape), "y": y[:n * m].reshape(n, m)}
    return train, {"x": x[n * m:], "y": y[n * m:]}


def run20(prob):
    import decsim as ds

    hist = ds.run(ds.algorithms.dsgd(0.1), prob, ds.topology.ring(4), steps=20, eval_every=10)
    loss = hist.metrics["loss"]
    assert loss.shape == (3,) and np.all(np.isfinite(loss)), loss
    assert loss[-1] < loss[0], loss
    assert 0 <= hist.metrics["test_accuracy"][-1] <= 1
    return hist


def test_end_to_end_nnx_cnn_with_batchnorm_and_dropout():
    train, test = make_data((6, 6, 1))
    prob = adapters.from_flax(NnxCNN(rngs=nnx.Rngs(0)), train, test_data=test, batch_size=8)
    assert prob.name == "flax/NnxCNN"
    hist = run20(prob)
    mean = np.asarray(hist.model_state["bn"]["mean"])
    assert mean.shape == (4, 2) and np.all(mean != 0)  # updated, per worker
    assert not np.allclose(mean[0], mean[1])  # kept local by default


def test_end_to_end_nnx_builder_with_independent_init():
    train, test = make_data((8,))
    prob = adapters.from_flax(lambda rngs: NnxNet(rngs=rngs), train, test_data=test,
                              batch_size=8, init="independent", seed=1)
    k = np.asarray(prob.params0["l1"]["kernel"])
    assert k.shape == (4, 8, 6) and not np.allclose(k[0], k[1])
    run20(prob)
    with pytest.raises(ValueError, match='init="independent"'):
        adapters.from_flax(NnxNet(rngs=nnx.Rngs(0)), train, init="independent")


def test_end_to_end_linen_with_batchnorm_and_dropout():
    train, test = make_data((8,))
    prob = adapters.from_flax(LinenNet(), train, test_data=test, batch_size=8)
    assert prob.name == "flax/LinenNet"
    run20(prob)
    prob = adapters.from_flax(LinenNet(), train, batch_size=8, init="independent")
    k = np.asarray(prob.params0["Dense_0"]["kernel"])
    assert not np.allclose(k[0], k[1])


@pytest.mark.parametrize("mode, mixing", [("ema", "gossip"), ("batch", "local")])
def test_end_to_end_equinox_stateful(mode, mixing):
    # mode="batch" computes `momentum ** counter` (float ** int32): standard promotion only
    with jax.numpy_dtype_promotion("standard" if mode == "batch" else "strict"):
        equinox_stateful_run(mode, mixing)


def equinox_stateful_run(mode, mixing):
    train, test = make_data((8,))
    prob = adapters.from_equinox(eqx.nn.make_with_state(EqxNet)(jax.random.key(0), mode=mode),
                                 train, test_data=test, batch_size=8, model_state_mixing=mixing)
    assert prob.name == "equinox/EqxNet"
    hist = run20(prob)
    # the boolean / integer entries (first-time flag, batch counter) keep their dtypes
    dtypes = {k: [a.dtype for a in jax.tree.leaves(v)] for k, v in hist.model_state.items()}
    assert dtypes == {k: [np.asarray(a).dtype for a in jax.tree.leaves(v)]
                      for k, v in adapters.equinox_parts(
                          eqx.nn.make_with_state(EqxNet)(jax.random.key(0), mode=mode),
                          train["x"][0])[2].items()}


def test_end_to_end_equinox_stateless_independent():
    train, test = make_data((8,))
    prob = adapters.from_equinox(lambda key: eqx.nn.MLP(8, 3, 6, 1, key=key), train,
                                 test_data=test, batch_size=8, init="independent")
    assert not np.allclose(prob.params0.layers[0].weight[0], prob.params0.layers[0].weight[1])
    run20(prob)


class NnxMLP(nnx.Module):
    def __init__(self, *, rngs):
        self.l1 = nnx.Linear(8, 5, rngs=rngs)
        self.l2 = nnx.Linear(5, 3, rngs=rngs)

    def __call__(self, x):
        return self.l2(nnx.tanh(self.l1(x)))


@pytest.mark.parametrize("batch_size", [None, 4])
def test_stateless_flax_mlp_matches_the_same_mlp_as_a_plain_custom_loss(batch_size):
    import decsim as ds

    train, test = make_data((8,))
    prob = adapters.from_flax(NnxMLP(rngs=nnx.Rngs(0)), train, batch_size=batch_size)
    p0 = jax.tree.map(lambda a: a[0], prob.params0)

    def plain(p, batch):
        h = jnp.tanh(batch["x"] @ p["l1"]["kernel"] + p["l1"]["bias"][None])
        logits = h @ p["l2"]["kernel"] + p["l2"]["bias"][None]
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), batch["y"][:, None], 1))

    ref = ds.problems.custom(plain, p0, train, batch_size=batch_size)
    runs = [ds.run(ds.algorithms.dsgd(0.1), q, ds.topology.ring(4), steps=20, eval_every=5)
            for q in (prob, ref)]
    allclose(runs[0].metrics["loss"], runs[1].metrics["loss"], tol=1e-5)
    jax.tree.map(lambda a, b: allclose(a, b, tol=1e-5), runs[0].params, runs[1].params)
