"""Gossip paths (dense, sparse gathers, circulant rolls) agree; sharded runs equal unsharded "
"ones."""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import networkx as nx
import numpy as np
import pytest

import decsim as ds
from decsim import gossip
from decsim import topology as T

GENERATORS = {
    "ring": lambda w: T.ring(40, weights=w),
    "torus": lambda w: T.torus(5, 8, weights=w),
    "torus_thin": lambda w: T.torus(2, 20, weights=w),
    "grid": lambda w: T.grid(5, 8, weights=w),
    "complete": lambda w: T.complete(12, weights=w),
    "star": lambda w: T.star(40, weights=w),
    "hypercube": lambda w: T.hypercube(64, weights=w),
    "exponential": lambda w: T.exponential(40, weights=w),
    "erdos_renyi": lambda w: T.erdos_renyi(40, 0.15, seed=1, weights=w),
    "random_geometric": lambda w: T.random_geometric(40, 0.3, seed=1, weights=w),
    "social": lambda w: T.social(weights=w),
    "from_networkx": lambda w: T.from_networkx(nx.barbell_graph(10, 3), weights=w),
}
CIRCULANT = {"ring", "torus", "torus_thin", "complete", "exponential"}


def _X(n, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "a": jnp.asarray(rng.normal(size=(n, 7)), jnp.float32),
        "b": jnp.asarray(rng.normal(size=(n, 2, 3)), jnp.float32),
    }


def _apply(plan, X, tau=0):
    args = {k: jnp.asarray(v) for k, v in plan.args.items()}
    return jax.jit(lambda X, args: plan.mixer(args, jnp.float32(0.0), jnp.int32(tau))(X))(X, args)


@pytest.mark.parametrize("weights", ["metropolis", "uniform", "lazy"])
@pytest.mark.parametrize("name", list(GENERATORS))
def test_paths_agree_for_every_generator(name, weights):
    topo = GENERATORS[name](weights)
    X = _X(topo.n)
    want = jax.tree.map(lambda a: np.tensordot(topo.W, np.asarray(a, np.float64), axes=1), X)
    paths = ["dense", "sparse", "auto"] + (["roll"] if name in CIRCULANT else [])
    for path in paths:
        got = _apply(gossip.plan(topo, path), X)
        for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5, err_msg=f"{name} {path}")
    if name not in CIRCULANT:
        with pytest.raises(ValueError, match="needs a circulant W"):
            gossip.plan(topo, "roll")


def test_auto_choices():
    assert gossip.plan(T.ring(16), "auto").path == "dense"
    assert gossip.plan(T.ring(100), "auto").path == "roll"
    assert gossip.plan(T.torus(10, 10), "auto").path == "roll"
    assert gossip.plan(T.star(100), "auto").path == "sparse"
    assert gossip.plan(T.complete(100), "auto").path == "dense"
    assert gossip.plan(T.one_peer_exponential(64), "auto").path == "sparse"
    with pytest.raises(ValueError, match="not a gossip path"):
        gossip.plan(T.ring(8), "fast")


@pytest.mark.parametrize(
    "make",
    [
        lambda: T.one_peer_exponential(64),
        lambda: T.random_matching(50, seed=2),
        lambda: T.with_link_failures(T.ring(48), 0.3, seed=4),
    ],
    ids=["one_peer", "matching", "link_failures"],
)
def test_time_varying_sparse_equals_dense(make):
    topo = make()
    X = _X(topo.n, seed=1)
    for tau in (0, 1, 5):
        W = topo.W_at(tau)
        for path in ("sparse", "dense"):
            got = _apply(gossip.plan(topo, path), X, tau)
            for g, a in zip(jax.tree.leaves(got), jax.tree.leaves(X)):
                np.testing.assert_allclose(
                    g, np.tensordot(W, np.asarray(a, np.float64), axes=1), rtol=1e-5, atol=1e-5
                )


def test_runs_agree_across_paths():
    prob = ds.problems.quadratic(48, 6, mu=0.5, L=1.0, noise=0.1, heterogeneity=1.0, seed=0)
    topo = T.ring(48)
    hists = {
        p: ds.run(
            ds.algorithms.gradient_tracking(0.1), prob, topo, steps=40, eval_every=20, gossip=p
        )
        for p in ("dense", "sparse", "roll")
    }
    for p in ("sparse", "roll"):
        np.testing.assert_allclose(hists[p].params, hists["dense"].params, rtol=1e-5, atol=1e-6)
        assert hists[p].config["gossip"] == p


def _dense_mix_case():
    rng = np.random.default_rng(3)
    W = jnp.asarray(T.torus(3, 3).W, jnp.float32)
    X = {
        "a": jnp.asarray(rng.normal(size=(4, 9, 2, 3)), jnp.float32),  # [seeds, n, ...]
        "b": jnp.asarray(rng.normal(size=(4, 9)), jnp.float32),
    }
    return W, X


def test_dense_mix_under_vmap_equals_each_seed():
    """The dense round's batching rule (a batched matmul, no transposes) gives each seed's W X."""
    W, X = _dense_mix_case()
    batched = jax.jit(jax.vmap(gossip.mix, in_axes=(None, 0)))(W, X)
    for s in range(4):
        for k in X:
            expected = np.tensordot(
                np.asarray(W, np.float64), np.asarray(X[k][s], np.float64), axes=1
            )
            np.testing.assert_allclose(batched[k][s], expected, rtol=1e-5, atol=1e-6)
    # a batched W (one per seed) as well
    Ws = jnp.stack([W, jnp.eye(9, dtype=jnp.float32)] * 2)
    both = jax.vmap(gossip.mix)(Ws, X)
    np.testing.assert_allclose(both["b"][1], X["b"][1], rtol=1e-6)
    np.testing.assert_allclose(both["b"][0], W @ X["b"][0], rtol=1e-5, atol=1e-6)


def test_dense_mix_gradients_equal_the_plain_product():
    W, X = _dense_mix_case()
    x0 = X["a"][0]

    def loss(mix_fn, W_, x_):
        return jnp.sum(jnp.sin(mix_fn(W_, x_)))

    plain = lambda W_, x_: jnp.tensordot(W_, x_, axes=1)  # noqa: E731
    ours = lambda W_, x_: gossip.mix(W_, {"x": x_})["x"]  # noqa: E731
    got = jax.grad(lambda W_, x_: loss(ours, W_, x_), argnums=(0, 1))(W, x0)
    want = jax.grad(lambda W_, x_: loss(plain, W_, x_), argnums=(0, 1))(W, x0)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
    # and per seed under vmap
    per_seed = jax.vmap(jax.grad(lambda x_: loss(ours, W, x_)))(X["a"])
    np.testing.assert_allclose(
        per_seed[2], jax.grad(lambda x_: loss(plain, W, x_))(X["a"][2]), rtol=1e-5, atol=1e-6
    )


def test_sparse_gossip_needs_no_n_squared_memory():
    """A ring of 20 000 workers: the roll and sparse plans hold O(n) arrays, and one round runs."""
    topo = T.ring(20000)
    assert topo.spectral_gap == pytest.approx(2 / 3 * (1 - np.cos(2 * np.pi / 20000)), rel=1e-6)
    assert topo.matrix.nnz == 3 * topo.n
    for path in ("roll", "sparse"):
        plan = gossip.plan(topo, path)
        assert sum(np.asarray(v).size for v in plan.args.values()) <= 6 * topo.n  # O(n), not n²
        out = _apply(plan, {"x": jnp.ones((topo.n, 4), jnp.float32)})
        np.testing.assert_allclose(out["x"], 1.0, rtol=1e-6)


@pytest.mark.slow
def test_sharded_run_equals_unsharded():
    """Four forced CPU devices (in a subprocess, since the device count is fixed at start-up)."""
    code = textwrap.dedent("""
        import jax, numpy as np, decsim as ds
        assert len(jax.devices()) == 4, jax.devices()
        prob = ds.problems.logistic_regression(8, "digits", batch_size=8, seed=0)
        for topo, algo in [(ds.topology.ring(8), ds.algorithms.dsgd(0.2)),
                           (ds.topology.torus(2, 4), ds.algorithms.gradient_tracking(0.1))]:
            a = ds.run(algo, prob, topo, steps=30, eval_every=10, seed=3)
            b = ds.run(algo, prob, topo, steps=30, eval_every=10, seed=3, devices=jax.devices())
            assert b.config["devices"] == 4
            for k in a.metrics:
                np.testing.assert_allclose(a.metrics[k], b.metrics[k], rtol=2e-5, atol=1e-6)
            for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
                np.testing.assert_allclose(x, y, rtol=2e-5, atol=1e-6)
        c = ds.run(ds.algorithms.dsgd(0.2), prob, ds.topology.ring(8), steps=20, eval_every=10,
                   seeds=[0, 1], devices=jax.devices())
        d = ds.run(ds.algorithms.dsgd(0.2), prob, ds.topology.ring(8), steps=20, eval_every=10,
                   seeds=[0, 1])
        np.testing.assert_allclose(c.metrics["loss"], d.metrics["loss"], rtol=2e-5)
        try:
            ds.run(ds.algorithms.dsgd(0.2), ds.problems.quadratic(6, 3), ds.topology.ring(6),
                   steps=10, devices=jax.devices())
        except ValueError as err:
            assert "not a multiple of the 4 devices" in str(err)
        else:
            raise AssertionError("expected a ValueError")
        print("SHARDED-OK")
    """)
    env = dict(
        os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "SHARDED-OK" in proc.stdout


@pytest.mark.slow
def test_run_sharded_over_two_processes_equals_one_device():
    """Two processes of two CPU devices each, joined by ``jax.distributed.initialize()`` (as hosts
    would be): a run sharded over all four devices equals the same run on one local device, in
    both processes, for one seed and for vmapped seeds."""
    import socket

    with socket.socket() as sock:  # a free port on this machine for the coordinator
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    code = textwrap.dedent(f"""
        import sys, jax, numpy as np
        jax.distributed.initialize(coordinator_address="127.0.0.1:{port}", num_processes=2,
                                   process_id=int(sys.argv[1]))
        import decsim as ds
        assert len(jax.devices()) == 4 and len(jax.local_devices()) == 2, jax.devices()
        prob = ds.problems.logistic_regression(8, "digits", batch_size=8, seed=0)
        topo, algo = ds.topology.ring(8), ds.algorithms.dsgd(0.2)
        for seeds in (None, [0, 1]):
            kw = dict(steps=20, eval_every=10, seed=3, seeds=seeds)
            a = ds.run(algo, prob, topo, devices=jax.local_devices()[:1], **kw)
            b = ds.run(algo, prob, topo, devices=jax.devices(), **kw)
            assert b.config["devices"] == 4
            for k in a.metrics:
                np.testing.assert_allclose(a.metrics[k], b.metrics[k], rtol=2e-5, atol=1e-6)
            for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
                np.testing.assert_allclose(x, y, rtol=2e-5, atol=1e-6)
        print("PROCESSES-OK")
    """)
    env = dict(
        os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(i)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for i in range(2)
    ]
    try:
        outs = [p.communicate(timeout=600) for p in procs]
    finally:
        for p in procs:
            p.kill()
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
        assert "PROCESSES-OK" in out
