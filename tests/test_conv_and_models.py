"""conv2d (every impl) against lax.conv_general_dilated and a numpy loop; the LeNet and ResNet
models (parameter counts, BatchNorm train/eval semantics, dropout and keys, vmap against lax.map
over a worker axis, bf16 policy); the classifier loss and metrics. Tiny inputs (8x8, batch 4)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from decsim.problems import nets
from decsim.problems.conv import DEFAULT_IMPL, IMPLS, conv2d, conv_padding

DN = ("NHWC", "HWIO", "NHWC")


def _rand(seed, shape, dtype=jnp.float32):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), dtype)


def _close(a, b, tol=1e-4):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol * max(1.0, float(np.abs(b).max())))


def _init(model, shape, n_classes, seed=0):
    """``model.init``, compiled."""
    return jax.jit(model.init, static_argnums=(1, 2))(jax.random.key(seed), shape, n_classes)


def _shapes(model, shape, n_classes):
    """The shapes and dtypes ``model.init`` would give, without computing anything."""
    return jax.eval_shape(lambda k: model.init(k, shape, n_classes), jax.random.key(0))


def _same(a, b):
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(u, v)


def _jit(model):
    """``model.apply``, compiled (eager execution of a whole network is slow)."""
    return jax.jit(model.apply, static_argnames="train")


# ---------------------------------------------------------------------------------------------
# conv2d


def _numpy_conv(x, w, stride, pads):
    xp = np.pad(np.asarray(x, np.float64), ((0, 0), pads[0], pads[1], (0, 0)))
    w = np.asarray(w, np.float64)
    kh, kw = w.shape[:2]
    ho = (xp.shape[1] - kh) // stride + 1
    wo = (xp.shape[2] - kw) // stride + 1
    out = np.zeros((x.shape[0], ho, wo, w.shape[3]))
    for i in range(ho):
        for j in range(wo):
            patch = xp[:, i * stride: i * stride + kh, j * stride: j * stride + kw, :]
            out[:, i, j, :] = np.einsum("bhwc,hwco->bo", patch, w)
    return out


CASES = [(stride, padding, h, k) for stride in (1, 2)
         for padding in ("SAME", "VALID", ((1, 1), (1, 1)))
         for h, k in ((8, 3), (7, 3), (6, 5))] + [(1, "SAME", 7, 1), (2, "VALID", 7, 1)]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("stride,padding,h,k", CASES)
def test_conv2d_matches_lax_values_and_gradients(impl, stride, padding, h, k):
    x = _rand(0, (2, h, h + 1, 3))
    w = _rand(1, (k, k, 3, 4))
    pads = conv_padding(x.shape[1:3], w.shape[:2], stride, padding)
    if isinstance(padding, str):
        assert lax.padtype_to_pads(x.shape[1:3], w.shape[:2], (stride, stride), padding) == \
            list(pads)

    def ref(x, w):
        return lax.conv_general_dilated(x, w, (stride, stride), pads, dimension_numbers=DN)

    def mine(x, w):
        return conv2d(x, w, stride=stride, padding=padding, impl=impl)

    y = mine(x, w)
    _close(y, ref(x, w))
    _close(y, _numpy_conv(x, w, stride, pads))
    r = _rand(2, y.shape)  # a random cotangent: every entry of the gradient matters

    def grads(f):
        return jax.grad(lambda x, w: jnp.sum(jnp.sin(f(x, w)) * r), (0, 1))(x, w)

    got, want = jax.jit(lambda: (grads(mine), grads(ref)))()
    for a, b in zip(got, want):
        _close(a, b)


@pytest.mark.parametrize("impl", IMPLS)
def test_conv2d_in_bfloat16_is_close_to_float32(impl):
    x, w = _rand(0, (2, 8, 8, 4)), _rand(1, (3, 3, 4, 5))
    y16 = conv2d(x.astype(jnp.bfloat16), w.astype(jnp.bfloat16), stride=2, impl=impl)
    assert y16.dtype == jnp.bfloat16
    _close(y16.astype(jnp.float32), conv2d(x, w, stride=2, impl="lax"), tol=5e-2)
    g = jax.grad(lambda w: jnp.sum(conv2d(x.astype(jnp.bfloat16), w, impl=impl)
                                   .astype(jnp.float32)))(w.astype(jnp.bfloat16))
    assert g.dtype == jnp.bfloat16


def test_default_impl_is_listed():
    assert DEFAULT_IMPL in IMPLS


@pytest.mark.parametrize("stride", [1, 2])
def test_forward_impl_keeps_every_convolution_in_forward_form_inside_a_scan(stride):
    # what makes "forward" fast inside a decsim run (a performance property, checked on the
    # optimized HLO instead of a clock): every convolution of a training step compiled in a
    # lax.scan body has the NHWC x HWIO -> NHWC labels of XLA:CPU's fast library kernel, while
    # autodiff of lax.conv leaves its backward convolutions with transposed labels there
    x, w = _rand(0, (4, 8, 8, 3)), _rand(1, (3, 3, 3, 5))

    def scanned(impl):
        # both operands trained, so both gradients are computed (a hidden layer's case)
        loss = lambda xw: jnp.sum(conv2d(*xw, stride=stride, impl=impl) ** 2)  # noqa: E731
        body = lambda xw, _: (jax.tree.map(lambda a, g: a - 1e-3 * g, xw,  # noqa: E731
                                           jax.grad(loss)(xw)), None)
        step = jax.jit(lambda xw: jax.lax.scan(body, xw, None, length=2)[0])
        hlo = step.lower((x, w)).compile()
        return [line for line in hlo.as_text().splitlines() if " convolution(" in line]

    convs = scanned("forward")
    assert len(convs) == 3  # forward, input gradient, weight gradient
    assert all("dim_labels=b01f_01io->b01f" in line for line in convs), convs
    assert any("dim_labels=b01f_01io->b01f" not in line for line in scanned("lax"))


@pytest.mark.parametrize("kwargs,fragment", [
    ({"impl": "fast"}, "impl must be one of"),
    ({"padding": "same"}, "padding must be"),
    ({"padding": ((1, 1),)}, "padding must be"),
    ({"stride": 0}, "stride must be an integer >= 1"),
    ({"stride": 1.5}, "stride must be"),
])
def test_conv2d_bad_arguments(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        conv2d(jnp.ones((1, 4, 4, 2)), jnp.ones((3, 3, 2, 1)), **kwargs)


def test_conv2d_bad_shapes():
    with pytest.raises(ValueError, match=r"x\[None\]"):
        conv2d(jnp.ones((4, 4, 2)), jnp.ones((3, 3, 2, 1)))
    with pytest.raises(ValueError, match="channels"):
        conv2d(jnp.ones((1, 4, 4, 3)), jnp.ones((3, 3, 2, 1)))
    with pytest.raises(ValueError, match="at least as large as the kernel"):
        conv2d(jnp.ones((1, 2, 2, 2)), jnp.ones((3, 3, 2, 1)), padding="VALID")
    with pytest.raises(ValueError, match="same dtype"):
        conv2d(jnp.ones((1, 4, 4, 2)), jnp.ones((3, 3, 2, 1), jnp.bfloat16))


# ---------------------------------------------------------------------------------------------
# parameter counts


def _resnet_count(k, shortcut, width=16, n_classes=10, c_in=3):
    convs = 9 * c_in * width
    bns = 2 * width
    c = width
    for stage in range(3):
        cout = width * 2 ** stage
        for _ in range(k):
            convs += 9 * c * cout + 9 * cout * cout
            bns += 2 * 2 * cout
            if shortcut == "B" and c != cout:
                convs += c * cout
                bns += 2 * cout
            c = cout
    return convs + bns + c * n_classes + n_classes


def test_resnet20_parameter_counts():
    assert _resnet_count(3, "A") == 269722 and _resnet_count(3, "B") == 272474
    for shortcut, count in (("A", 269722), ("B", 272474)):
        params, state = _shapes(nets.resnet20(shortcut=shortcut), (8, 8, 3), 10)
        assert nets.num_params(params) == count
        assert all(a.dtype == jnp.float32 for a in jax.tree.leaves((params, state)))
        # running mean and var for every BN: one pair of [C] per BN scale/bias pair
        assert nets.num_params(state) == 2 * sum(
            p["scale"].size for p in _bn_params(params))
    params, _ = _shapes(nets.resnet(32), (8, 8, 3), 100)
    assert nets.num_params(params) == _resnet_count(5, "A", n_classes=100)


def _bn_params(params):
    out = [params["stem"]["bn"]]
    for stage in params["stages"]:
        for block in stage:
            out += [v for name, v in block.items() if name.startswith("bn")]
    return out


def test_lenet_parameter_count_and_shapes():
    model = nets.lenet(channels=(6, 16), kernel_sizes=(5, 5), hidden=(120, 84))
    params, state = _init(model, (8, 8, 1), 10)
    want = (25 * 6 + 6) + (25 * 6 * 16 + 16) + (2 * 2 * 16 * 120 + 120) + (120 * 84 + 84) + \
        (84 * 10 + 10)
    assert state == {} and nets.num_params(params) == want
    logits, new_state = _jit(model)(params, state, _rand(0, (4, 8, 8, 1)))
    assert logits.shape == (4, 10) and logits.dtype == jnp.float32 and new_state == {}


# ---------------------------------------------------------------------------------------------
# BatchNorm


def test_batchnorm_train_normalizes_and_updates_running_stats():
    x = _rand(0, (4, 3, 3, 5)) * 3.0 + 2.0
    p = {"scale": jnp.ones(5), "bias": jnp.zeros(5)}
    s = {"mean": _rand(1, (5,)), "var": jnp.abs(_rand(2, (5,))) + 0.5}
    y, s2 = nets.batchnorm(p, s, x, train=True, momentum=0.1, eps=1e-5)
    yn = np.asarray(y).reshape(-1, 5)
    np.testing.assert_allclose(yn.mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(yn.var(0), 1.0, atol=1e-3)  # var/(var + eps)
    xn = np.asarray(x, np.float64).reshape(-1, 5)
    np.testing.assert_allclose(s2["mean"], 0.9 * np.asarray(s["mean"]) + 0.1 * xn.mean(0),
                               rtol=1e-5)
    np.testing.assert_allclose(s2["var"], 0.9 * np.asarray(s["var"]) + 0.1 * xn.var(0, ddof=1),
                               rtol=1e-5)
    # scale and shift are applied after normalization
    p2 = {"scale": _rand(3, (5,)), "bias": _rand(4, (5,))}
    y2, _ = nets.batchnorm(p2, s, x, train=True)
    _close(y2, np.asarray(y) * np.asarray(p2["scale"]) + np.asarray(p2["bias"]), tol=1e-5)


def test_batchnorm_eval_uses_running_stats_and_returns_state():
    x = _rand(0, (4, 2, 2, 3))
    p = {"scale": _rand(1, (3,)), "bias": _rand(2, (3,))}
    s = {"mean": _rand(3, (3,)), "var": jnp.abs(_rand(4, (3,))) + 0.5}
    y, s2 = nets.batchnorm(p, s, x, train=False, eps=1e-3)
    assert s2 is s
    want = (np.asarray(x) - np.asarray(s["mean"])) / np.sqrt(np.asarray(s["var"]) + 1e-3) * \
        np.asarray(p["scale"]) + np.asarray(p["bias"])
    _close(y, want, tol=1e-5)


@pytest.fixture(scope="module")
def r20():
    model = nets.resnet20()
    params, state = _init(model, (8, 8, 3), 10)
    # non-trivial running statistics, so eval mode differs from train mode
    state = jax.tree.map(lambda a: a + 0.1 * jnp.abs(_rand(a.size, a.shape)), state)
    return model, params, state


def test_resnet_train_mode_updates_running_stats_by_the_formula(r20):
    model, params, state = r20
    apply = _jit(model)
    x = _rand(5, (4, 8, 8, 3))
    _, new = apply(params, state, x, key=jax.random.key(1))
    assert jax.tree.structure(new) == jax.tree.structure(state)
    # the stem BN sees conv(x, w): its statistics, by numpy
    h = _numpy_conv(x, params["stem"]["w"], 1, ((1, 1), (1, 1))).reshape(-1, 16)
    np.testing.assert_allclose(new["stem"]["mean"],
                               0.9 * np.asarray(state["stem"]["mean"]) + 0.1 * h.mean(0),
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(new["stem"]["var"],
                               0.9 * np.asarray(state["stem"]["var"]) + 0.1 * h.var(0, ddof=1),
                               rtol=1e-4)
    for a, b in zip(jax.tree.leaves(new), jax.tree.leaves(state)):
        assert not np.allclose(a, b)  # every BN's running stats moved
    # train=True without a key: training mode too (same statistics, no randomness in ResNet)
    _, same = apply(params, state, x, train=True)
    for a, b in zip(jax.tree.leaves(same), jax.tree.leaves(new)):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_resnet_eval_mode_is_per_example(r20):
    model, params, state = r20
    apply = _jit(model)
    x = _rand(6, (4, 8, 8, 3))
    logits, out_state = apply(params, state, x)
    _same(out_state, state)
    alone = jnp.concatenate([apply(params, state, x[i:i + 1])[0] for i in range(4)])
    _close(logits, alone, tol=1e-4)
    # a different batch composition: example 0 next to other examples
    other = jnp.concatenate([x[:1], _rand(7, (3, 8, 8, 3))])
    _close(apply(params, state, other)[0][0], logits[0], tol=1e-4)
    # train mode does depend on the batch (batch statistics)
    train0 = apply(params, state, other, key=jax.random.key(0))[0][0]
    train1 = apply(params, state, x, key=jax.random.key(0))[0][0]
    assert not np.allclose(train0, train1, atol=1e-3)
    # eval mode uses the running stats: changing them changes the output
    shifted = jax.tree.map(lambda a: a * 2.0, state)
    assert not np.allclose(apply(params, shifted, x)[0], logits, atol=1e-3)


# ---------------------------------------------------------------------------------------------
# dropout and keys


def test_dropout_only_with_a_key_and_reproducible():
    model = nets.lenet(dropout=0.5, hidden=(64, 32))
    params, state = _init(model, (8, 8, 2), 5)
    apply = _jit(model)
    x = _rand(0, (4, 8, 8, 2))
    eval_a, s_a = apply(params, state, x)
    eval_b, _ = apply(params, state, x, train=False, key=jax.random.key(3))
    np.testing.assert_array_equal(eval_a, eval_b)
    assert s_a == {} and model.apply(params, state, x)[1] is state  # eager: passed through
    no_dropout = _jit(nets.lenet(dropout=0.0, hidden=(64, 32)))(params, state, x,
                                                                key=jax.random.key(3))[0]
    np.testing.assert_allclose(eval_a, no_dropout, rtol=1e-6)
    k1, k2 = jax.random.key(1), jax.random.key(2)
    d1 = apply(params, state, x, key=k1)[0]
    assert not np.allclose(d1, eval_a, atol=1e-4)
    np.testing.assert_array_equal(d1, apply(params, state, x, key=k1)[0])
    assert not np.allclose(d1, apply(params, state, x, key=k2)[0], atol=1e-4)


def test_classifier_loss_eval_and_train():
    model = nets.lenet(dropout=0.5)
    params, state = _init(model, (8, 8, 1), 3)
    batch = {"x": _rand(0, (4, 8, 8, 1)), "y": jnp.array([0, 1, 2, 1], jnp.int32)}
    loss_fn = nets.classifier_loss(model.apply)
    assert loss_fn is nets.classifier_loss(model) is nets.classifier_loss(nets.lenet(dropout=0.5))
    loss, new_state = loss_fn(params, state, batch, None)  # eager: state passes through as is
    assert new_state is state
    loss, new_state = jax.jit(loss_fn)(params, state, batch, None)
    assert new_state == {} and loss.shape == () and loss.dtype == jnp.float32
    logits = np.asarray(_jit(model)(params, state, batch["x"])[0], np.float64)
    logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    np.testing.assert_allclose(loss, -logp[np.arange(4), np.asarray(batch["y"])].mean(),
                               rtol=1e-5)
    train_loss, _ = jax.jit(loss_fn)(params, state, batch, jax.random.key(1))
    assert not np.isclose(train_loss, loss)
    metrics = jax.jit(nets.classifier_metrics(model.apply))(params, state, batch)
    np.testing.assert_allclose(metrics["test_loss"], loss, rtol=1e-6)
    np.testing.assert_allclose(metrics["test_accuracy"],
                               np.mean(logits.argmax(1) == np.asarray(batch["y"])))


# ---------------------------------------------------------------------------------------------
# the worker axis: vmap and lax.map agree


@pytest.mark.parametrize("model", [nets.lenet(dropout=0.3), nets.resnet(8)],
                         ids=["lenet", "resnet8"])
def test_vmap_and_lax_map_over_workers_agree(model):
    n = 2
    keys = jax.random.split(jax.random.key(0), n)
    params, state = jax.vmap(lambda k: model.init(k, (8, 8, 3), 4))(keys)
    batch = {"x": _rand(1, (n, 4, 8, 8, 3)), "y": jnp.asarray(np.arange(4 * n).reshape(n, 4) % 4,
                                                             jnp.int32)}
    step_keys = jax.random.split(jax.random.key(1), n)
    grad = jax.grad(nets.classifier_loss(model), has_aux=True)
    by_vmap = jax.jit(jax.vmap(grad))(params, state, batch, step_keys)
    by_map = jax.jit(lambda *a: lax.map(lambda b: grad(*b), a))(params, state, batch, step_keys)
    for a, b in zip(jax.tree.leaves(by_vmap), jax.tree.leaves(by_map)):
        _close(a, b, tol=1e-4)
    one = jax.jit(grad)(jax.tree.map(lambda a: a[1], params), jax.tree.map(lambda a: a[1], state),
               jax.tree.map(lambda a: a[1], batch), step_keys[1])
    for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(by_map)):
        _close(a, b[1], tol=1e-4)


# ---------------------------------------------------------------------------------------------
# training behaviour and precision


@pytest.mark.parametrize("model", [nets.lenet(), nets.resnet20()], ids=["lenet", "resnet20"])
def test_loss_decreases_after_a_few_sgd_steps(model):
    params, state = _init(model, (8, 8, 3), 4)
    batch = {"x": _rand(0, (4, 8, 8, 3)), "y": jnp.array([0, 1, 2, 3], jnp.int32)}
    loss_fn = nets.classifier_loss(model)

    @jax.jit
    def step(params, state, key):
        (loss, state), g = jax.value_and_grad(loss_fn, has_aux=True)(params, state, batch, key)
        return jax.tree.map(lambda p, g: p - 0.05 * g, params, g), state, loss

    losses = []
    for t in range(8):
        params, state, loss = step(params, state, jax.random.key(t))
        losses.append(float(loss))
    assert all(np.isfinite(losses))
    assert losses[-1] < 0.7 * losses[0], losses


def test_bfloat16_policy_keeps_params_float32():
    model = nets.resnet(8, dtype=jnp.bfloat16)
    params, state = _init(model, (8, 8, 3), 10)
    apply = _jit(model)
    assert all(a.dtype == jnp.float32 for a in jax.tree.leaves((params, state)))
    batch = {"x": _rand(0, (4, 8, 8, 3)), "y": jnp.array([0, 1, 2, 3], jnp.int32)}
    logits, new_state = apply(params, state, batch["x"], key=jax.random.key(0))
    assert logits.dtype == jnp.float32
    assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(new_state))
    g, _ = jax.jit(jax.grad(nets.classifier_loss(model), has_aux=True))(params, state, batch,
                                                                        jax.random.key(0))
    assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(g))
    ref = _jit(nets.resnet(8))(params, state, batch["x"], key=jax.random.key(0))[0]
    _close(logits, ref, tol=0.1)
    lenet_logits = _jit(nets.lenet(dtype="bfloat16"))(
        *_init(nets.lenet(), (8, 8, 3), 10), batch["x"])[0]
    assert lenet_logits.dtype == jnp.float32


# ---------------------------------------------------------------------------------------------
# factories: memoized, checked


def test_factories_are_memoized():
    assert nets.lenet(channels=[16, 32]) is nets.lenet()
    assert nets.resnet20() is nets.resnet(20)
    assert nets.resnet20(dtype=jnp.bfloat16) is nets.resnet20(dtype="bfloat16")
    assert nets.resnet20(impl="lax") is not nets.resnet20()


@pytest.mark.parametrize("factory,kwargs,fragment", [
    (nets.lenet, {"dropout": 1.0}, "dropout must be"),
    (nets.lenet, {"channels": (16, 0)}, "channels must be"),
    (nets.lenet, {"kernel_sizes": (5,)}, "one size per convolution"),
    (nets.lenet, {"dtype": jnp.int32}, "dtype must be one of"),
    (nets.lenet, {"impl": "cudnn"}, "impl must be one of"),
    (nets.resnet, {"depth": 18}, "6k \\+ 2"),
    (nets.resnet, {"shortcut": "C"}, "shortcut must be"),
    (nets.resnet, {"momentum": 0.0}, "momentum must be"),
    (nets.resnet, {"width": 15}, "width must be"),
])
def test_factory_errors(factory, kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        factory(**kwargs)


def test_init_and_apply_errors():
    model = nets.lenet()
    with pytest.raises(ValueError, match=r"\(H, W, C\)"):
        model.init(jax.random.key(0), (4, 8, 8, 1), 10)
    with pytest.raises(ValueError, match="too small"):
        model.init(jax.random.key(0), (2, 2, 1), 10)
    with pytest.raises(ValueError, match="n_classes"):
        model.init(jax.random.key(0), (8, 8, 1), 1)
    params, state = model.init(jax.random.key(0), (8, 8, 1), 10)
    with pytest.raises(ValueError, match=r"x\[None\]"):
        model.apply(params, state, jnp.ones((8, 8, 1)))
    with pytest.raises(ValueError, match="train must be"):
        model.apply(params, state, jnp.ones((1, 8, 8, 1)), train=1)
    with pytest.raises(ValueError, match="apply must be"):
        nets.classifier_loss("lenet")


def test_num_params_counts_scalars():
    assert nets.num_params({"a": jnp.zeros((2, 3)), "b": [jnp.zeros(4)]}) == 10
    assert math.prod(()) == 1 and nets.num_params({"s": jnp.zeros(())}) == 1
