"""Shared numpy references and small problems for the tests (imported by test modules; never a
test module itself).

The workhorse is a heterogeneous least-squares problem: worker i has its own (A_i, y_i), so its own
Hessian, with full-batch gradients, so a trajectory is deterministic and can be compared with a
float64 numpy implementation of an algorithm's equations.
"""

import jax.numpy as jnp
import numpy as np

import decsim as ds

N, M, D = 5, 6, 3
STEPS = 25
TWO_LEAF = {"w": (3, 2), "b": (2,)}


def ls_loss(x, batch):
    r = batch["A"] @ x - batch["y"]
    return 0.5 * jnp.mean(jnp.square(r))


def least_squares(scales=None, seed: int = 0):
    """``(problem, A, y)``: A, y float64 copies of the float32 data the problem holds."""
    rng = np.random.default_rng(seed)
    if scales is None:
        A = rng.normal(size=(N, M, D)).astype(np.float32)
        A *= (1.0 + np.arange(N))[:, None, None].astype(np.float32) ** 0.5  # different curvatures
        y = (rng.normal(size=(N, M)).astype(np.float32)
             + 2.0 * np.arange(N)[:, None].astype(np.float32))
    else:
        A = rng.normal(size=(N, M, D)) * scales[:, None, None]
        y = (rng.normal(size=(N, M)) + 2.0 * np.arange(N)[:, None]) * scales[:, None]
        A, y = A.astype(np.float32), y.astype(np.float32)
    prob = ds.problems.custom(ls_loss, np.zeros(D, np.float32), {"A": A, "y": y})
    return prob, A.astype(np.float64), y.astype(np.float64)


def np_grads(X, A, y):
    """Stacked full local gradients: g_i = A_iᵀ (A_i x_i − y_i) / m."""
    r = np.einsum("imd,id->im", A, X) - y
    return np.einsum("imd,im->id", A, r) / A.shape[1]


def np_top_k(X, k):
    """Row-wise top-k of a [n, d] array (float64), ties broken by position."""
    out = np.zeros_like(X)
    idx = np.argsort(-np.abs(X), axis=1, kind="stable")[:, :k]
    np.put_along_axis(out, idx, np.take_along_axis(X, idx, axis=1), axis=1)
    return out


def np_sign(X):
    return np.abs(X).mean(axis=1, keepdims=True) * np.sign(X)


def two_leaf_loss(p, batch):
    z = batch["x"] @ p["w"] + p["b"][None, :]
    return 0.5 * jnp.mean(jnp.sum(jnp.square(z - batch["t"]), axis=1))


def two_leaf_problem(seed: int = 5):
    """A model with two leaves (a [3, 2] weight and a [2] bias, d = 8) on N workers."""
    rng = np.random.default_rng(seed)
    data = {"x": rng.normal(size=(N, 4, 3)).astype(np.float32),
            "t": rng.normal(size=(N, 4, 2)).astype(np.float32)}
    params0 = {k: rng.normal(size=s).astype(np.float32) for k, s in TWO_LEAF.items()}
    return ds.problems.custom(two_leaf_loss, params0, data)


def run_x64(script: str) -> dict:
    """Run ``script`` in a fresh interpreter with ``jax_enable_x64`` on (the test session itself
    stays float32, tests/conftest.py) and return the float64 arrays it puts in its dict ``out``.

    The script sees ``np``, ``ds``, ``trajectory`` and this module's names (``least_squares``,
    ``N``, ``D``, ...) already imported.
    """
    import os
    import subprocess
    import sys
    import tempfile

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    header = ("import sys\nimport jax\njax.config.update('jax_enable_x64', True)\n"
              "import numpy as np\nimport decsim as ds\nfrom decsim.runner import trajectory\n"
              "from tests._reference import *\nout = {}\n")
    footer = "\nnp.savez(sys.argv[1], **out)\n"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [root] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "out.npz")
        proc = subprocess.run([sys.executable, "-c", header + script + footer, path], cwd=root,
                              env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        with np.load(path) as data:
            return {k: data[k] for k in data.files}
