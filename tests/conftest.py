"""Shared test configuration: strict dtype and rank promotion, so silent upcasts and accidental
broadcasting fail loudly (docs/development.md#style), and the shared fixtures."""

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


@pytest.fixture(scope="session")
def ls():
    """Heterogeneous least squares ``(problem, A, y)`` (tests/_reference.py)."""
    from ._reference import least_squares

    return least_squares()


@pytest.fixture(scope="session")
def topo():
    """A ring of N = 5 workers (metropolis weights 1/3; lambda_min = -0.206 > -1/3)."""
    import decsim as ds

    from ._reference import N

    return ds.topology.ring(N)


@pytest.fixture(scope="session")
def two_leaf():
    from ._reference import two_leaf_problem

    return two_leaf_problem()
