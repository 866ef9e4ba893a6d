"""Shared test configuration: strict dtype and rank promotion, so silent upcasts and accidental
broadcasting fail loudly (DESIGN.md section 4, item 7)."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_numpy_dtype_promotion", "strict")


@pytest.fixture(autouse=True)
def _no_float64():
    # decsim runs in float32; make sure no test silently enables x64
    assert not jax.config.jax_enable_x64
    yield
