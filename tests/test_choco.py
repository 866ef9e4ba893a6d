"""Choco-SGD, Choco-Gossip and the compressed baselines (docs/reference/algorithms.md#family-choco).

Trajectories are compared with plain-numpy (float64) implementations of the equations on the small
heterogeneous least-squares problem of tests/test_algorithms.py (full-batch gradients, so the only
randomness is the compressor's; deterministic compressors make the comparison exact).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import decsim as ds
import decsim.compression as C
from decsim import runner
from decsim.algorithms import choco
from decsim.gossip import Mixer
from decsim.runner import trajectory

from ._reference import D, N, np_grads, np_sign, np_top_k

STEPS = 20
ETA, GAMMA = 0.05, 0.4
TOP1 = C.top_k(0.34)  # k = 1 of D = 3


# ---------------------------------------------------------------------------------------------
# numpy references: each returns the list of (X_t, second state) for t = 0..T


def ref_choco(X, A, y, W, T, comp, order):
    I = np.eye(W.shape[0])
    Xh = np.zeros_like(X)
    out = [(X, Xh)]
    for _ in range(T):
        Xhalf = X - ETA * np_grads(X, A, y)
        if order == "paper":
            Xh = Xh + comp(Xhalf - Xh)
            X = Xhalf + GAMMA * (W - I) @ Xh
        else:
            X = Xhalf + GAMMA * (W - I) @ Xh
            Xh = Xh + comp(X - Xh)
        out.append((X, Xh))
    return out


def ref_choco_gossip(X, A, y, W, T, comp):
    I = np.eye(W.shape[0])
    Xh = np.zeros_like(X)
    out = [(X, Xh)]
    for _ in range(T):
        X = X + GAMMA * (W - I) @ Xh
        Xh = Xh + comp(X - Xh)
        out.append((X, Xh))
    return out


def ref_naive(X, A, y, W, T, comp, form):
    out = [(X, np.zeros_like(X))]
    for _ in range(T):
        CX = comp(X)
        X = X + GAMMA * (W @ CX - X) if form == "carli" else X + GAMMA * (W @ CX - CX)
        out.append((X, np.zeros_like(X)))
    return out


def ref_deepsqueeze(X, A, y, W, T, comp):
    I = np.eye(W.shape[0])
    E = np.zeros_like(X)
    out = [(X, E)]
    for _ in range(T):
        Xhalf = X - ETA * np_grads(X, A, y)
        V = Xhalf + E
        Q = comp(V)
        E = V - Q
        X = Xhalf + GAMMA * (W - I) @ Q
        out.append((X, E))
    return out


def ref_dcd(X, A, y, W, T, comp):
    out = [(X, X)]
    for _ in range(T):
        X = X + comp(W @ X - ETA * np_grads(X, A, y) - X)
        out.append((X, X))
    return out


_X_and_hat = lambda s: (s.X, s.X_hat)  # noqa: E731
top1 = lambda Z: np_top_k(Z, 1)  # noqa: E731
exact = lambda Z: Z  # noqa: E731

# name -> (algorithm, numpy reference, what to record besides X)
TRAJECTORIES = {
    "choco_sgd_paper_top_k": (
        lambda: choco.choco_sgd(ETA, GAMMA, TOP1),
        lambda *a: ref_choco(*a, top1, "paper"),
        _X_and_hat,
    ),
    "choco_sgd_parallel_top_k": (
        lambda: choco.choco_sgd(ETA, GAMMA, TOP1, order="parallel"),
        lambda *a: ref_choco(*a, top1, "parallel"),
        _X_and_hat,
    ),
    "choco_sgd_paper_sign": (
        lambda: choco.choco_sgd(ETA, GAMMA, C.sign()),
        lambda *a: ref_choco(*a, np_sign, "paper"),
        _X_and_hat,
    ),
    "choco_sgd_parallel_sign": (
        lambda: choco.choco_sgd(ETA, GAMMA, C.sign(), order="parallel"),
        lambda *a: ref_choco(*a, np_sign, "parallel"),
        _X_and_hat,
    ),
    "choco_gossip_top_k": (
        lambda: choco.choco_gossip(GAMMA, TOP1),
        lambda *a: ref_choco_gossip(*a, top1),
        _X_and_hat,
    ),
    "naive_carli_top_k": (
        lambda: choco.naive_compressed_gossip(GAMMA, TOP1),
        lambda *a: ref_naive(*a, top1, "carli"),
        _X_and_hat,
    ),
    "naive_aysal_top_k": (
        lambda: choco.naive_compressed_gossip(GAMMA, TOP1, form="aysal"),
        lambda *a: ref_naive(*a, top1, "aysal"),
        _X_and_hat,
    ),
    "deepsqueeze_top_k": (
        lambda: choco.deepsqueeze(ETA, GAMMA, TOP1),
        lambda *a: ref_deepsqueeze(*a, top1),
        lambda s: (s.X, s.E),
    ),
    "dcd_psgd_identity": (
        lambda: choco.dcd_psgd(ETA, C.identity()),
        lambda *a: ref_dcd(*a, exact),
        lambda s: (s.X, s.X),
    ),
}


@pytest.mark.parametrize("name", list(TRAJECTORIES))
def test_trajectory_matches_equations(name, ls, topo):
    prob, A, y = ls
    make, ref, record = TRAJECTORIES[name]
    if name.startswith(("choco_gossip", "naive")):  # consensus from distinct starting points
        X0 = np.random.default_rng(1).normal(size=(N, D))
        prob = prob._replace(params0=X0.astype(np.float32))
    else:
        X0 = np.zeros((N, D))
    X0 = np.asarray(np.float32(X0), np.float64)
    got_X, got_2 = trajectory(make(), prob, topo, STEPS, record=record)
    want = ref(X0, A, y, topo.W, STEPS)
    want_X = np.stack([w[0] for w in want])
    want_2 = np.stack([w[1] for w in want])
    assert got_X.shape == want_X.shape == (STEPS + 1, N, D)
    scale = np.max(np.abs(want_X))
    np.testing.assert_allclose(got_X, want_X, rtol=2e-4, atol=2e-5 * scale)
    np.testing.assert_allclose(got_2, want_2, rtol=2e-4, atol=2e-5 * scale)
    assert np.abs(want_X[-1] - want_X[1]).max() > 1e-2  # the run actually moved


# every compressor of the registry, in both orders
COMPRESSORS = {
    "identity": C.identity(),
    "top_k": TOP1,
    "rand_k": C.rand_k(0.34),
    "rand_k_unbiased": C.rand_k(0.34, unbiased=True),
    "qsgd": C.qsgd(4),
    "qsgd_unbiased": C.qsgd(4, unbiased=True),
    "sign": C.sign(),
    "dithered": C.dithered(4),
}


def test_compressor_table_covers_the_registry():
    names = {c.name.split("(")[0] for c in COMPRESSORS.values()}
    assert set(C.REGISTRY) <= names


_DSGD = {}


def dsgd_10(prob, topo):
    """D-SGD's first 10 steps on the least-squares problem (computed once)."""
    if "X" not in _DSGD:
        _DSGD["X"] = trajectory(ds.algorithms.dsgd(ETA), prob, topo, 10)
    return _DSGD["X"]


@pytest.mark.parametrize("order", choco.ORDERS)
@pytest.mark.parametrize("cname", list(COMPRESSORS))
def test_mean_preservation(cname, order, ls, topo):
    """mean(X_{t+1}) = mean(X_t) − η mean(G_t), whatever the compressor (its error cancels in the
    mean because the columns of W − I sum to zero)."""
    prob, A, y = ls
    X = trajectory(
        choco.choco_sgd(ETA, GAMMA, COMPRESSORS[cname], order=order), prob, topo, 10, seed=2
    ).astype(np.float64)
    for t in range(10):
        want = X[t].mean(0) - ETA * np_grads(X[t], A, y).mean(0)
        np.testing.assert_allclose(X[t + 1].mean(0), want, rtol=1e-5, atol=1e-5 * np.abs(X).max())
    # the compressor did matter: the iterates are not those of exact D-SGD
    if cname != "identity":
        assert np.abs(X - dsgd_10(prob, topo)).max() > 1e-3


def test_identity_gamma_one_paper_order_is_dsgd(ls, topo):
    """Exactly D-SGD, minibatches included (the oracle gets the same keys)."""
    prob, _, _ = ls
    stoch = prob._replace(batch_size=2)
    got = trajectory(choco.choco_sgd(ETA, 1.0, C.identity()), stoch, topo, STEPS, seed=3)
    want = trajectory(ds.algorithms.dsgd(ETA), stoch, topo, STEPS, seed=3)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # the defaults (identity, gamma = 1) are that, too
    default = choco.choco_sgd(ETA)
    assert default.args["compressor"] is C.identity() and default.args["gamma"] == 1.0


def test_identity_gamma_one_parallel_order_is_dpsgd_from_step_one(ls, topo):
    """Step 0 is local (X̂_0 = 0): X_1 = X_0 − η G_0. From X_1 on it is D-PSGD."""
    prob, A, y = ls
    got = trajectory(choco.choco_sgd(ETA, 1.0, C.identity(), order="parallel"), prob, topo, STEPS)
    X0 = np.asarray(prob.params0, np.float64)
    np.testing.assert_allclose(got[1], X0 - ETA * np_grads(X0, A, y), rtol=1e-5, atol=1e-6)
    from_one = trajectory(ds.algorithms.dpsgd(ETA), prob._replace(params0=got[1]), topo, STEPS - 1)
    np.testing.assert_allclose(got[1:], from_one, rtol=1e-5, atol=1e-5)
    # and it is not D-SGD (the orders differ)
    assert np.abs(got - trajectory(ds.algorithms.dsgd(ETA), prob, topo, STEPS)).max() > 1e-3


def test_more_identities(ls, topo):
    """DeepSqueeze with exact messages and γ = 1 is D-SGD (its error memory stays 0); DCD-PSGD
    with exact messages is D-PSGD."""
    prob, _, _ = ls
    np.testing.assert_allclose(
        trajectory(choco.deepsqueeze(ETA, 1.0, C.identity()), prob, topo, STEPS),
        trajectory(ds.algorithms.dsgd(ETA), prob, topo, STEPS),
        rtol=1e-5,
        atol=1e-6,
    )
    np.testing.assert_allclose(
        trajectory(choco.dcd_psgd(ETA, C.identity()), prob, topo, STEPS),
        trajectory(ds.algorithms.dpsgd(ETA), prob, topo, STEPS),
        rtol=1e-5,
        atol=1e-6,
    )


# ---------------------------------------------------------------------------------------------
# contract: shapes, dtypes, jit, rebuild, costs (on a two-leaf model, random compressor)

TK = C.top_k(0.5)
GOSSIP_ONLY = {
    "choco_gossip": lambda: choco.choco_gossip(0.3, TK),
    "naive_compressed_gossip": lambda: choco.naive_compressed_gossip(0.3, TK),
}


@pytest.mark.parametrize("name", ["choco_gossip", "naive_compressed_gossip"])
def test_gossip_never_calls_the_oracle(name, topo):
    algo = GOSSIP_ONLY[name]()

    def oracle(X, key):
        raise AssertionError("gossip-only algorithms must not ask for gradients")

    mixer = Mixer(W=jnp.asarray(topo.W, jnp.float32), lam=jnp.float32(topo.lam))
    X0 = {"w": jnp.ones((N, 3, 2)), "b": jnp.zeros((N, 2))}
    state, cost = jax.jit(
        lambda s: algo.step(s, algo.hparams, oracle, mixer, jax.random.PRNGKey(0))
    )(algo.init(X0, None))
    assert float(cost.grad_evals) == 0.0 and float(cost.comm_rounds) == 1.0


def test_run_records_bits_and_shares_programs_across_gamma(two_leaf, topo):
    """ds.run accumulates the per-step payload; runs differing in gamma reuse one program."""
    rk = C.rand_k(0.5)  # k = 3 of 6 and 1 of 2: (32·3 + 32) + (32·1 + 32) bits
    rk_bits = (32 * 3 + 32) + (32 * 1 + 32)
    h = ds.run(choco.choco_sgd(0.05, 0.3, rk), two_leaf, topo, steps=20, eval_every=10)
    np.testing.assert_array_equal(h.metrics["bits"], [0, 10 * rk_bits, 20 * rk_bits])
    np.testing.assert_array_equal(h.metrics["grad_evals"], [0, 10, 20])
    np.testing.assert_array_equal(h.metrics["comm_rounds"], [0, 10, 20])
    before = runner.trace_count()
    h2 = ds.run(choco.choco_sgd(0.05, 0.1, C.rand_k(0.5)), two_leaf, topo, steps=20, eval_every=10)
    assert runner.trace_count() == before
    assert not np.allclose(h.params["w"], h2.params["w"])  # gamma did change the run


@pytest.mark.parametrize(
    "bad, match",
    [
        (
            lambda: choco.choco_sgd(0.1, 0.0, TOP1),
            r"gamma must be a number in \(0, 1\]; got gamma=0.0",
        ),
        (
            lambda: choco.choco_sgd(0.1, 1.5, TOP1),
            r"gamma must be a number in \(0, 1\]; got gamma=1.5.*tune_gamma",
        ),
        (
            lambda: choco.choco_sgd(0.1, "big", TOP1),
            r"gamma must be a number in \(0, 1\]; got gamma=\'big\'",
        ),
        (lambda: choco.choco_sgd(0.1, lambda t: 0.1, TOP1), r"gamma must be a number in \(0, 1\]"),
        (
            lambda: choco.choco_sgd(-0.1, 0.3, TOP1),
            r"learning_rate must be a finite positive number",
        ),
        (lambda: choco.choco_sgd(0.1, 0.3, "top_k"), r"compressor must be a decsim Compressor"),
        (
            lambda: choco.choco_sgd(0.1, 0.3, TOP1, order="serial"),
            r"unknown choco_sgd order 'serial'; order must be one of 'paper', 'parallel'",
        ),
        (lambda: choco.choco_gossip(2.0, TOP1), r"gamma must be a number in \(0, 1\]"),
        (
            lambda: choco.choco_gossip(0.5, None),
            r"compressor must be a decsim Compressor.*got None",
        ),
        (
            lambda: choco.naive_compressed_gossip(0.5, TOP1, form="q1"),
            r"form must be 'carli'.*'aysal'",
        ),
        (
            lambda: choco.dcd_psgd(0.1, C.top_k(0.01)),
            r"dcd_psgd requires an unbiased compressor.*top_k\(0.01\).*unbiased=True",
        ),
        (lambda: choco.dcd_psgd(0.1, C.qsgd(16)), r"unbiased compressor"),
        (
            lambda: choco.deepsqueeze(0.1, -1.0, TOP1),
            r"gamma must be a number in \(0, 1\]; got gamma=-1.0",
        ),
    ],
)
def test_factory_validation(bad, match):
    with pytest.raises(ValueError, match=match):
        bad()


# ---------------------------------------------------------------------------------------------
# behaviour: linear consensus vs an error floor


def test_choco_gossip_converges_linearly_while_naive_gossip_stalls():
    n, d = 9, 100
    prob = ds.problems.consensus(n, d, seed=0)
    topo = ds.topology.ring(n, weights="uniform")
    comp = C.top_k(0.1)
    gamma = ds.algorithms.tune_gamma(topo, comp, d)
    steps, every = 400, 10
    hc = ds.run(choco.choco_gossip(gamma, comp), prob, topo, steps=steps, eval_every=every)
    hn = ds.run(
        choco.naive_compressed_gossip(gamma, comp), prob, topo, steps=steps, eval_every=every
    )
    ec, en = hc.metrics["consensus_error"], hn.metrics["consensus_error"]
    e0 = ec[0]
    # linear rate: log(error) is a straight line in t until float32 round-off (~1e-12 e0)
    window = ec > 1e-9 * e0
    t, logs = hc.steps[window], np.log(ec[window])
    assert ec[window][-1] < 1e-7 * e0 and t.size >= 10
    slope, intercept = np.polyfit(t, logs, 1)
    resid = logs - (slope * t + intercept)
    r2 = 1 - np.sum(resid**2) / np.sum((logs - logs.mean()) ** 2)
    assert slope < 0 and r2 > 0.97, (slope, r2)
    # the mean is kept exactly
    np.testing.assert_allclose(hc.params.mean(0), prob.params0.mean(0), atol=1e-5)
    # naive gossip: a floor, reached early, far above Choco's error
    assert en[-1] > 0.05 * e0
    assert en[-1] > 0.9 * en[len(en) // 2]
    assert ec[-1] < 1e-6 * en[-1]
    # both report bits of what they send: top-10% of 100 = 10 entries of (32 + 7) bits per round
    np.testing.assert_array_equal(hc.metrics["bits"], hc.steps * 10 * (32 + 7))
    np.testing.assert_array_equal(hn.metrics["bits"], hn.steps * 10 * (32 + 7))
    assert np.all(hc.metrics["grad_evals"] == 0)


# ---------------------------------------------------------------------------------------------
# the headline claim on real data


@pytest.fixture(scope="module")
def ring9_logistic():
    prob = ds.problems.logistic_regression(9, "digits", partition="iid", batch_size=32, l2=1e-3)
    topo = ds.topology.ring(9, weights="uniform")
    _, f_star = ds.problems.optimum(prob)
    return prob, topo, f_star


@pytest.mark.slow
def test_choco_top1_matches_dsgd_with_at_most_twice_the_steps_and_a_thirtieth_of_the_bits(
    ring9_logistic,
):
    """Ring of 9, digits, iid split, batch 32, same learning rate 0.1 for both; gamma from
    tune_gamma on the model's leaf sizes; mean of 3 seeds. D-SGD runs T = 500 steps; Choco-SGD
    (top-1%) must reach D-SGD's final suboptimality f(x̄) − f* within 2T steps, having sent at
    most 1/30 of D-SGD's bits by then."""
    prob, topo, f_star = ring9_logistic
    comp = C.top_k(0.01)
    gamma = ds.algorithms.tune_gamma(topo, comp, ds.tree.leaf_sizes(prob.params0))
    T, every, seeds = 500, 25, [0, 1, 2]
    hd = ds.run(ds.algorithms.dsgd(0.1), prob, topo, steps=T, eval_every=every, seeds=seeds)
    hc = ds.run(
        choco.choco_sgd(0.1, gamma, comp), prob, topo, steps=2 * T, eval_every=every, seeds=seeds
    )
    assert not hd.diverged.any() and not hc.diverged.any()
    target = hd.metrics["loss"][:, -1].mean() - f_star
    sub = hc.metrics["loss"].mean(axis=0) - f_star
    reached = np.flatnonzero(sub <= target)
    assert reached.size, (
        f"Choco-SGD did not reach {target:.4g} in {2 * T} steps (best {sub.min():.4g})"
    )
    first = reached[0]
    assert hc.steps[first] <= 2 * T
    assert hc.metrics["bits"][0, first] <= hd.metrics["bits"][0, -1] / 30


@pytest.mark.slow
def test_dcd_psgd_with_rand_1_percent_diverges_where_choco_converges(ring9_logistic):
    """The Choco papers' observation: unbiased rand-1% has variance 99||x||², and DCD-PSGD at the
    learning rate where Choco-SGD (rand-1%, biased) converges blows up."""
    prob, topo, _ = ring9_logistic
    hd = ds.run(
        choco.dcd_psgd(0.1, C.rand_k(0.01, unbiased=True)), prob, topo, steps=200, eval_every=20
    )
    hc = ds.run(choco.choco_sgd(0.1, 0.006, C.rand_k(0.01)), prob, topo, steps=200, eval_every=20)
    assert hd.diverged and 0 < hd.diverged_step <= 200
    assert not hc.diverged and hc.metrics["loss"][-1] < hc.metrics["loss"][0]
