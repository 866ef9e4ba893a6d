"""The algorithm contract, once, over every row of tests/registry.py (docs/development.md#style).

For each algorithm: one step from a generic mid-run state keeps the state's structure, shapes and
dtypes (so lax.scan can carry it); jit equals eager; the StepCost is exact; every numeric
hyperparameter travels through one traced program, and another value of each changes the result
without a retrace; equal structure gives the very same step (one compiled program).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import decsim as ds
from decsim.gossip import Mixer
from decsim.runner import make_oracle

from .registry import ALGORITHMS, VARIANTS


def test_table_covers_the_registry():
    assert set(ALGORITHMS) == set(ds.algorithms.REGISTRY)


def _generic_state(state):
    """Every float leaf moved by a positive offset (second moments stay positive), so public
    copies, error memories and trackers are nonzero as they are mid-run."""
    leaves, treedef = jax.tree.flatten(state)
    keys = jax.random.split(jax.random.PRNGKey(9), len(leaves))
    return jax.tree.unflatten(treedef, [
        a + 0.1 * jnp.abs(jax.random.normal(k, a.shape, a.dtype))
        if jnp.issubdtype(a.dtype, jnp.floating) else a for a, k in zip(leaves, keys)])


def _max_diff(a, b):
    return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_variants_are_of_registered_algorithms():
    assert {v.split("+")[0] for v in VARIANTS} <= set(ALGORITHMS)


@pytest.mark.parametrize("name", sorted(ALGORITHMS) + sorted(VARIANTS))
def test_contract(name, two_leaf, topo):
    make, kwargs, (grads, rounds, bits) = {**ALGORITHMS, **VARIANTS}[name]
    algo = make(**kwargs)
    assert algo.name == name.split("+")[0]
    # a schedule's traced multiplier is hyperparameter learning_rate, 1.0 as built
    hparams = {"learning_rate": 1.0, **kwargs} if "+schedule" in name else kwargs
    assert algo.hparams == hparams
    assert make(**kwargs).step is algo.step  # memoized structure: one compiled program
    prob = two_leaf
    oracle = make_oracle(prob, jax.tree.map(jnp.asarray, prob.data), jnp.asarray(prob.counts),
                         jnp.float32(0.0))
    mixer = Mixer(W=jnp.asarray(topo.W, jnp.float32), lam=jnp.float32(topo.lam))
    X0 = jax.tree.map(jnp.asarray, prob.params0)
    key = jax.random.PRNGKey(0)
    state = _generic_state(algo.init(X0, key))

    traces = []

    def one_step(hp, s):
        traces.append(1)
        return algo.step(s, hp, oracle, mixer, key)

    program = jax.jit(one_step)
    f32 = {k: jnp.float32(v) for k, v in hparams.items()}
    jit_state, jit_cost = program(f32, state)
    # structure, shapes and dtypes are kept
    assert jax.tree.structure(jit_state) == jax.tree.structure(state)
    for before, after in zip(jax.tree.leaves(state), jax.tree.leaves(jit_state)):
        assert before.shape == after.shape and before.dtype == after.dtype
    assert jax.tree.structure(algo.params(jit_state)) == jax.tree.structure(X0)
    # the exact cost
    assert isinstance(jit_cost, ds.StepCost)
    np.testing.assert_allclose(np.array(jit_cost, np.float64), [grads, rounds, bits], rtol=1e-6)
    # eager (hyperparameters as Python floats) equals the jitted step with traced float32 values
    eager_state, eager_cost = algo.step(state, dict(hparams), oracle, mixer, key)
    assert _max_diff(eager_state, jit_state) <= 1e-5 * max(1.0, _max_diff(jit_state, state))
    np.testing.assert_array_equal(np.array(eager_cost), np.array(jit_cost))
    # every hyperparameter through the same program: another value changes the result, no retrace
    for k in hparams:
        other = program(dict(f32, **{k: f32[k] * 0.5}), state)[0]
        assert _max_diff(other, jit_state) > 1e-6, f"{name}: {k} has no effect"
    assert len(traces) == 1
