"""MALCOM-PSGD and its source coder against docs/reference/compressors.md and
docs/reference/algorithms.md#family-malcom."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import decsim as ds
from decsim import compression as C
from decsim.algorithms.choco import choco_sgd
from decsim.algorithms.malcom import malcom_psgd, soft_threshold
from decsim.runner import trajectory

from ._reference import D, N, np_grads


def _sparse_vector(rng, d, density):
    x = rng.normal(size=d).astype(np.float32)
    x[rng.random(d) >= density] = 0.0
    return x


@pytest.mark.parametrize("d", [1, 7, 64, 1000])
@pytest.mark.parametrize("density", [0.0, 0.05, 0.5, 1.0])
@pytest.mark.parametrize("levels", [1, 4, 16])
def test_round_trip_is_bit_exact(d, density, levels):
    rng = np.random.default_rng(d * 31 + levels)
    x = _sparse_vector(rng, d, density)
    key = jax.random.PRNGKey(d + levels)
    norm, level, negative = C.quantize_message(key, x, levels)
    bits = C.encode_message(norm, level, negative)
    assert set(bits) <= {"0", "1"}
    assert len(bits) == float(C.elias_bits(level))  # the jittable count is the measured length
    norm2, level2, negative2 = C.decode_message(bits, d)
    assert np.asarray(norm2).view(np.uint32) == np.asarray(norm).view(np.uint32)
    np.testing.assert_array_equal(level2, level)
    np.testing.assert_array_equal(negative2[level > 0], negative[level > 0])
    # and the decoded message is exactly what the compressor hands the receiver
    x_hat, b = C.dithered(levels, coder="elias").encode(key, jnp.asarray(x))
    s = np.float32(levels)
    rebuilt = np.where(negative2, -1.0, 1.0).astype(np.float32) * (
        (norm2 / s) * level2.astype(np.float32)
    )
    np.testing.assert_array_equal(np.asarray(x_hat), rebuilt.astype(np.float32))
    assert float(b) == len(bits)


def test_elias_gamma_lengths():
    g = np.array([1, 2, 3, 4, 7, 8, 1000, 2**20])
    want = [2 * math.floor(math.log2(v)) + 1 for v in g]
    np.testing.assert_array_equal(np.asarray(C.elias_gamma_length(g)), want)
    assert all(len(C.coding._gamma_code(v)) == w for v, w in zip(g, want))


def test_entropy_coded_bits_beat_fixed_length_on_sparse_messages_and_shrink_with_sparsity():
    d, levels = 2000, 16
    fixed = d * (1 + math.ceil(math.log2(levels + 1))) + 32
    rng = np.random.default_rng(0)
    previous = np.inf
    for density in (0.5, 0.2, 0.05, 0.01, 0.0):
        counts = []
        for trial in range(5):
            x = _sparse_vector(rng, d, density)
            _, level, _ = C.quantize_message(jax.random.PRNGKey(trial), x, levels)
            counts.append(float(C.elias_bits(level)))
        mean = float(np.mean(counts))
        assert max(counts) <= fixed
        assert mean < previous
        previous = mean
    assert previous == 32.0  # an all-zero message is just its norm


def test_zero_message_and_fixed_coder():
    x_hat, bits = C.dithered(8, coder="elias").encode(jax.random.PRNGKey(0), jnp.zeros(5))
    np.testing.assert_array_equal(np.asarray(x_hat), 0.0)
    assert float(bits) == 32.0
    fixed = C.dithered(8)
    assert float(fixed.bits(jnp.zeros(5))) == 5 * (1 + 4) + 32
    with pytest.raises(ValueError, match="coder="):
        C.dithered(8, coder="huffman")


def ref_malcom_exact(A, y, W, eta, gamma, mu, T):
    """docs/reference/algorithms.md#malcom_psgd with exact messages (Q = X½ − X̂)."""
    X, X_hat = np.zeros((N, D)), np.zeros((N, D))
    out = [X]
    for _ in range(T):
        X_half = X - eta * np_grads(X, A, y)
        X_hat = X_hat + (X_half - X_hat)
        Y = X_half + gamma * (W @ X_hat - X_hat)
        X = np.sign(Y) * np.maximum(np.abs(Y) - eta * mu, 0.0)
        out.append(X)
    return np.stack(out)


def test_trajectory_matches_equations(ls, topo):  # noqa: F811
    prob, A, y = ls
    got = trajectory(malcom_psgd(0.05, 0.6, 0.5, levels=None), prob, topo, 20)
    want = ref_malcom_exact(A, y, topo.W, 0.05, 0.6, 0.5, 20)
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-5 * np.abs(want).max())
    assert np.any(got[-1] == 0.0)  # the soft threshold produces exact zeros


def test_l1_zero_exact_quantization_is_choco_sgd(ls, topo):  # noqa: F811
    prob, _, _ = ls
    stoch = prob._replace(batch_size=2)
    a = trajectory(malcom_psgd(0.05, 0.4, 0.0, levels=None), stoch, topo, 15, seed=2)
    b = trajectory(choco_sgd(0.05, 0.4, C.identity(), order="paper"), stoch, topo, 15, seed=2)
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("levels", [1, 4, 64])
def test_l1_zero_keeps_the_mean_for_any_quantization(ls, topo, levels):  # noqa: F811
    prob, A, y = ls
    X = trajectory(malcom_psgd(0.05, 0.4, 0.0, levels=levels), prob, topo, 15, seed=1)
    for t in range(15):
        want = X[t].mean(0) - 0.05 * np_grads(X[t].astype(np.float64), A, y).mean(0)
        np.testing.assert_allclose(X[t + 1].mean(0), want, rtol=1e-4, atol=1e-5)


def test_sparsity_grows_with_l1():
    prob = ds.problems.logistic_regression(8, "digits", batch_size=16, l2=0.0, seed=0)
    topo = ds.topology.ring(8)
    algo = malcom_psgd(0.2, 0.5, 0.0, levels=16)
    sparsity = []
    for l1 in (0.0, 1e-2, 5e-2, 2e-1):
        hist = ds.run(algo, prob, topo, steps=300, eval_every=300, hparams={"l1": l1})
        assert not hist.diverged
        sparsity.append(hist.metrics["sparsity"][-1])
        assert hist.metrics["bits"][-1] > 0
    # without l1 only the weights of constant (always-zero) pixels stay exactly zero
    assert sparsity[0] < 0.1
    assert all(a < b for a, b in zip(sparsity, sparsity[1:])), sparsity
    assert sparsity[-1] > sparsity[0] + 0.2, sparsity


def test_soft_threshold_and_validation():
    out = soft_threshold({"a": jnp.array([-2.0, -0.5, 0.0, 0.3, 1.5])}, 0.5)["a"]
    np.testing.assert_allclose(out, [-1.5, 0.0, 0.0, 0.0, 1.0])
    with pytest.raises(ValueError, match="l1 must be a finite number >= 0; got l1=-1.0"):
        malcom_psgd(0.1, 0.5, -1.0)
    with pytest.raises(ValueError, match=r"gamma must be a number in \(0, 1\]; got gamma=1.5"):
        malcom_psgd(0.1, 1.5, 0.1)
    with pytest.raises(
        ValueError, match="unknown MALCOM coder 'zip'; coder must be one of 'elias', 'fixed'"
    ):
        malcom_psgd(0.1, 0.5, 0.1, coder="zip")
    with pytest.raises(ValueError, match="levels must be an integer"):
        malcom_psgd(0.1, 0.5, 0.1, levels=0)
