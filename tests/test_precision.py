"""Precision follows JAX: float32 by default, float64 end to end with ``jax_enable_x64`` (W,
params, state, hyperparameters, metrics). x64 is switched on in a subprocess, since the test
session itself runs in float32 (tests/conftest.py)."""

import json
import subprocess
import sys

import numpy as np

import decsim as ds

X64_SCRIPT = r"""
import json
import jax
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp
import numpy as np
import decsim as ds

prob = ds.problems.quadratic(4, 5, mu=0.5, L=1.0, heterogeneity=1.0, seed=0)
topo = ds.topology.ring(4)
out = {}
for algo in (ds.algorithms.gradient_tracking(0.2), ds.algorithms.exact_diffusion(0.5)):
    h = ds.run(algo, prob, topo, steps=400, eval_every=100)
    state = algo.init(jnp.asarray(prob.params0, jnp.float64), jax.random.PRNGKey(0))
    out[algo.name] = {
        "params_dtype": str(h.params.dtype),
        "state_dtypes": sorted({str(a.dtype) for a in jax.tree.leaves(state)}),
        "gap": float(h.metrics["loss"][-1] - prob.info["f_star"]),
        "err": float(np.abs(h.params - prob.info["x_star"]).max()),
        "traj_dtype": str(ds.runner.trajectory(algo, prob, topo, 3).dtype),
    }
print(json.dumps(out))
"""


def test_float64_end_to_end_reaches_the_optimum_to_1e_12():
    proc = subprocess.run([sys.executable, "-c", X64_SCRIPT], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    for name, r in out.items():
        assert r["params_dtype"] == r["traj_dtype"] == "float64", name
        assert set(r["state_dtypes"]) <= {"float64", "int32"}, name
        assert 0.0 <= r["gap"] < 1e-12, (name, r["gap"])  # f(x̄) − f* to 1e-12
        assert r["err"] < 1e-6, (name, r["err"])


def test_float32_by_default(ls, topo):
    prob, _, _ = ls
    h = ds.run(ds.algorithms.dsgd(0.05), prob, topo, steps=4, eval_every=2)
    assert h.params.dtype == np.float32
