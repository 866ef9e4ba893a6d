"""The pure-JAX image models (decsim.problems.nets) and the convolution helper (conv)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from decsim.problems import conv, nets


@pytest.mark.parametrize("impl", conv.IMPLS)
@pytest.mark.parametrize("stride,padding", [(1, "SAME"), (2, "SAME"), (1, "VALID"),
                                            (2, "VALID")])
def test_conv2d_equals_lax_conv(impl, stride, padding):
    kx, kw, kg = jax.random.split(jax.random.PRNGKey(0), 3)
    x = jax.random.normal(kx, (2, 7, 6, 3))
    w = jax.random.normal(kw, (3, 3, 3, 4))

    def ref(x, w):
        return jax.lax.conv_general_dilated(x, w, (stride, stride), padding,
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"))

    y = conv.conv2d(x, w, stride=stride, padding=padding, impl=impl)
    np.testing.assert_allclose(y, ref(x, w), rtol=1e-5, atol=1e-5)
    g = jax.random.normal(kg, y.shape)
    got = jax.vjp(lambda x, w: conv.conv2d(x, w, stride=stride, padding=padding, impl=impl),
                  x, w)[1](g)
    want = jax.vjp(ref, x, w)[1](g)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_resnet20_has_the_papers_parameter_count():
    params, state = nets.resnet20().init(jax.random.PRNGKey(0), (32, 32, 3), 10)
    # 3x3 convolutions without bias (16, 32, 64 channels), BatchNorm scale and bias, option-A
    # shortcuts (no parameters), a dense layer 64 -> 10
    convs = (27 * 16 + 6 * 9 * 16 * 16 + 9 * 16 * 32 + 5 * 9 * 32 * 32 + 9 * 32 * 64
             + 5 * 9 * 64 * 64)
    bn = 2 * (16 * 7 + 32 * 6 + 64 * 6)
    assert nets.num_params(params) == convs + bn + 64 * 10 + 10 == 269_722


def test_batchnorm_train_and_eval():
    x = jax.random.normal(jax.random.PRNGKey(1), (6, 4, 4, 3)) * 3.0 + 2.0
    p = {"scale": jnp.ones(3), "bias": jnp.zeros(3)}
    s = {"mean": jnp.zeros(3), "var": jnp.ones(3)}
    y, s2 = nets.batchnorm(p, s, x, train=True, momentum=0.1)
    flat = np.asarray(y).reshape(-1, 3)
    np.testing.assert_allclose(flat.mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(flat.var(0), 1.0, rtol=1e-3)
    xs = np.asarray(x).reshape(-1, 3)
    np.testing.assert_allclose(s2["mean"], 0.1 * xs.mean(0), rtol=1e-5)
    np.testing.assert_allclose(s2["var"], 0.9 + 0.1 * xs.var(0, ddof=1), rtol=1e-5)
    # eval mode: running statistics, the state itself back, each example independent of the rest
    y_eval, s3 = nets.batchnorm(p, s2, x, train=False)
    assert s3 is s2
    alone, _ = nets.batchnorm(p, s2, x[:1], train=False)
    np.testing.assert_allclose(alone, y_eval[:1], rtol=1e-6)
    mean, var = np.asarray(s2["mean"]), np.asarray(s2["var"])
    np.testing.assert_allclose(y_eval, (np.asarray(x) - mean) / np.sqrt(var + 1e-5), rtol=1e-5,
                               atol=1e-6)


def test_dropout_only_with_a_key_and_reproducible():
    model = nets.lenet(dropout=0.5)
    params, state = model.init(jax.random.PRNGKey(0), (8, 8, 1), 10)
    x = jax.random.normal(jax.random.PRNGKey(2), (4, 8, 8, 1))
    plain, s = model.apply(params, state, x)
    assert s is state
    again, _ = model.apply(params, state, x)
    np.testing.assert_array_equal(plain, again)
    k = jax.random.PRNGKey(3)
    a, _ = model.apply(params, state, x, key=k)
    b, _ = model.apply(params, state, x, key=k)
    c, _ = model.apply(params, state, x, key=jax.random.PRNGKey(4))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, plain) and not np.allclose(a, c)


def test_models_agree_under_vmap_and_map_over_workers():
    model = nets.resnet20()
    params, state = model.init(jax.random.PRNGKey(0), (8, 8, 3), 10)
    n = 3
    P = jax.tree.map(lambda a: jnp.stack([a] * n), params)
    S = jax.tree.map(lambda a: jnp.stack([a] * n), state)
    x = jax.random.normal(jax.random.PRNGKey(5), (n, 4, 8, 8, 3))
    y = jnp.zeros((n, 4), jnp.int32)
    loss = nets.classifier_loss(model.apply)
    keys = jax.random.split(jax.random.PRNGKey(6), n)

    def grad(p, s, x, y, k):
        return jax.grad(loss, has_aux=True)(p, s, {"x": x, "y": y}, k)

    gv, sv = jax.jit(jax.vmap(grad))(P, S, x, y, keys)
    gm, sm = jax.jit(lambda *a: jax.lax.map(lambda b: grad(*b), a))(P, S, x, y, keys)
    for a, b in zip(jax.tree.leaves((gv, sv)), jax.tree.leaves((gm, sm))):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)


def test_a_few_sgd_steps_lower_the_loss_and_bf16_keeps_float32_params():
    for dtype in (jnp.float32, jnp.bfloat16):
        model = nets.lenet(dtype=dtype)
        params, state = model.init(jax.random.PRNGKey(0), (8, 8, 1), 3)
        assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(params))
        batch = {"x": jax.random.normal(jax.random.PRNGKey(7), (8, 8, 8, 1)),
                 "y": jnp.arange(8, dtype=jnp.int32) % 3}
        loss = nets.classifier_loss(model.apply)
        vg = jax.jit(jax.value_and_grad(
            lambda p, loss=loss, state=state, batch=batch: loss(p, state, batch, None)[0]))
        first, _ = vg(params)
        for _ in range(20):
            _, g = vg(params)
            assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(g))
            params = jax.tree.map(lambda p, g: p - 0.1 * g, params, g)
        assert vg(params)[0] < 0.5 * first
