"""tune_gamma's proxy leaves: which compressors admit them, at which sizes, and that the proxy
picks the γ (and follows the error curve) of the full-size run."""

import numpy as np
import pytest

import decsim as ds
from decsim.algorithms.tuning import PROXY_MIN_KEPT, PROXY_SIZE, proxy_sizes

C = ds.compression


def test_which_compressors_admit_a_proxy_and_at_which_size():
    big = 272474
    assert proxy_sizes(C.identity(), [big, 50]) == (PROXY_SIZE, 50)
    assert proxy_sizes(C.sign(), [big]) == (PROXY_SIZE,)
    # top_k / rand_k: at least PROXY_MIN_KEPT entries kept, the same fraction
    assert proxy_sizes(C.top_k(0.01), [big, 16]) == (10_000, 16)
    assert proxy_sizes(C.top_k(0.001), [big]) == (PROXY_MIN_KEPT * 1000,)
    assert proxy_sizes(C.rand_k(0.05, unbiased=True), [big]) == (PROXY_SIZE,)
    assert proxy_sizes(C.top_k(0.0001), [big]) == (big,)  # 1e6 > big: full size
    # the quantizers' quality depends on d: never shrunk; nor are user compressors
    for comp in (C.qsgd(16), C.qsgd(4, unbiased=True), C.dithered(16)):
        assert proxy_sizes(comp, [big]) == (big,)
    mine = C.top_k(0.01)._replace(compress=lambda key, x: x)
    assert proxy_sizes(mine, [big]) == (big,)
    # a fraction the name does not show exactly is not guessed
    assert proxy_sizes(C.top_k(0.0123456789), [big]) == (big,)
    assert proxy_sizes(C.top_k(0.01), [big], None) == (big,)


def test_the_proxy_picks_the_full_size_gamma(ring8):
    comp, sizes = C.top_k(0.1), [4000, 7]
    assert proxy_sizes(comp, sizes, 1000) == (1000, 7)
    full = ds.algorithms.tune_gamma(ring8, comp, sizes, rounds=200, proxy_size=None,
                                    full_output=True)
    proxy = ds.algorithms.tune_gamma(ring8, comp, sizes, rounds=200, proxy_size=1000,
                                     full_output=True)
    assert proxy[0] == full[0]
    # the error curve over gamma, scaled to the full size, is the full run's up to the chosen
    # gamma (beyond it, at the onset of instability, the growth is sensitive to the draw)
    start = 8 * sum(sizes)  # about the initial error per unit (Gaussian entries)
    rel_full, rel_proxy = full[2] / start, proxy[2] / start
    live = (full[1] <= full[0]) & (rel_full > 1e-9)
    assert live.sum() >= 10 and rel_full[live].max() > 0.1
    np.testing.assert_allclose(np.log10(rel_proxy[live]), np.log10(rel_full[live]), atol=0.05)


def test_leaves_up_to_the_proxy_size_are_unchanged(ring8):
    a = ds.algorithms.tune_gamma(ring8, C.top_k(0.1), [300, 40], rounds=100, full_output=True)
    b = ds.algorithms.tune_gamma(ring8, C.top_k(0.1), [300, 40], rounds=100, full_output=True,
                                 proxy_size=None)
    assert a[0] == b[0]
    np.testing.assert_array_equal(a[2], b[2])


@pytest.mark.parametrize("bad", [0, -5, 2.5, "big"])
def test_bad_proxy_size(bad, ring8):
    with pytest.raises(ValueError, match="proxy_size"):
        ds.algorithms.tune_gamma(ring8, C.top_k(0.1), 10, proxy_size=bad)


@pytest.fixture(scope="module")
def ring8():
    return ds.topology.ring(8, weights="uniform")
