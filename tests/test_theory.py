"""Theory helpers (docs/theory.md), checked against closed forms and against simulation."""

import numpy as np
import pytest

import decsim as ds
from decsim import theory


def test_stationary_error_formula_and_validation():
    assert theory.stationary_error(10, 0.1, 0.04, 4, 1.0) == pytest.approx(
        10 * 0.1 * 0.04 / (4 * 1.9)
    )
    with pytest.raises(ValueError, match="eta\\*mu"):
        theory.stationary_error(10, 3.0, 1.0, 1, 1.0)


@pytest.mark.slow
def test_stationary_error_matches_centralized_sgd_on_noisy_quadratic():
    """Minibatch SGD with n workers: the stationary E||x̄ − x*||² falls as 1/n, as the formula says
    (within 10% for n = 1, 4, 16), and D-SGD on the complete graph (W = J) matches it.

    On this quadratic every f_i has the same Hessian, so x̄ under D-SGD follows centralized SGD on
    any graph; the check is about averaging the noise of n workers, not about the topology."""
    d, eta, mu, noise = 20, 0.2, 1.0, 1.0
    for n in (1, 4, 16):
        prob = ds.problems.quadratic(n, d, mu=mu, L=mu, noise=noise, heterogeneity=0.0, seed=1)
        want = theory.stationary_error(d, eta, noise**2, n, mu)
        errs = {}
        for algo in (ds.algorithms.centralized_sgd(eta), ds.algorithms.dsgd(eta)):
            hist = ds.run(
                algo, prob, ds.topology.complete(n), steps=4000, eval_every=10, seeds=list(range(8))
            )
            # f(x̄) − f* = (μ/2)||x̄ − x*||² for this isotropic quadratic; skip the first 1000 steps
            err = 2.0 / mu * (hist.metrics["loss"][:, 100:] - prob.info["f_star"])
            errs[algo.name] = float(np.mean(err))
            assert errs[algo.name] == pytest.approx(want, rel=0.1), (n, algo.name)
        assert errs["dsgd"] == pytest.approx(errs["centralized_sgd"], rel=1e-3)


@pytest.mark.slow
def test_fitted_exponent_of_dsgd_with_tuned_steps_is_minus_one_half():
    """D-SGD on an iid problem (logistic regression, breast cancer, iid split, batch 1) on a torus,
    constant step η = c sqrt(n/T) within each run: the average squared gradient norm
    (1/T) Σ_{t<T} ||∇f(x̄_t)||² is O(1/sqrt(nT)). Fitting log err = a + b log(nT) across runs with
    n ∈ {1, 4, 16} and T ∈ {256, 1024, 4096} gives b with a 95% interval over 6 seeds containing
    −1/2.

    One run of T_max steps per (n, η) gives every shorter T as a prefix (the step is constant), and
    the three learning rates of an n reuse one compiled program."""
    ns, Ts, c = (1, 4, 16), (256, 1024, 4096), 0.5
    seeds = list(range(6))
    runs_n, runs_T, errors = [], [], []
    for n in ns:
        prob = ds.problems.logistic_regression(
            n, "breast_cancer", partition="iid", batch_size=1, l2=1e-2, seed=0
        )
        topo = ds.topology.torus(*ds.topology.torus_shape(n))
        algo = ds.algorithms.dsgd(0.1)
        for T in Ts:
            hist = ds.run(
                algo,
                prob,
                topo,
                steps=max(Ts),
                eval_every=1,
                seeds=seeds,
                hparams={"learning_rate": theory.tuned_step(n, T, c)},
            )
            errors.append(hist.metrics["grad_norm_sq"][:, :T].mean(axis=1))  # steps 0 .. T-1
            runs_n.append(n)
            runs_T.append(T)
    fit = theory.fit_rate_over_runs(runs_n, runs_T, np.stack(errors, axis=1))
    assert fit.ci_low < -0.5 < fit.ci_high, fit
    assert fit.ci_high - fit.ci_low < 0.15  # the interval is informative
    assert np.all(np.isfinite(fit.per_seed)) and len(fit.per_seed) == len(seeds)


def test_steps_to_target_speedup_efficiency():
    steps = np.arange(0, 100, 10)
    err = 1.0 / (1.0 + steps)
    assert theory.steps_to_target(steps, err, 0.05, window=1) == 20
    assert np.isnan(theory.steps_to_target(steps, err, 1e-4, window=1))
    # seeds are averaged first
    two = np.stack([err, err * 3])
    assert theory.steps_to_target(steps, two, 0.1, window=1) == 20
    assert theory.speedup(100, 25) == 4
    assert theory.efficiency(100, 25, 8) == 0.5
    assert np.isnan(theory.speedup(100, float("nan")))


def test_smooth_is_trailing_mean():
    v = np.array([4.0, 2.0, 0.0, 2.0])
    np.testing.assert_allclose(theory.smooth(v, 2), [4.0, 3.0, 1.0, 1.0])


def test_fit_rate_recovers_exponent_and_interval():
    rng = np.random.default_rng(0)
    nT = np.logspace(1, 4, 40)
    errs = np.stack([3.0 * nT**-0.5 * np.exp(0.05 * rng.normal(size=nT.size)) for _ in range(5)])
    fit = theory.fit_rate(nT, errs, tail=1.0)
    assert fit.ci_low < -0.5 < fit.ci_high
    assert fit.b == pytest.approx(-0.5, abs=0.02)
    assert fit.ci_high - fit.ci_low < 0.05
    single = theory.fit_rate(nT, errs[0], tail=1.0)
    assert single.ci_low < single.b < single.ci_high


def test_rate_expressions():
    terms = theory.dsgd_iterations(0.01, L=1.0, F0=1.0, sigma2=1.0, zeta2=0.0, p=0.1, n=4)
    assert terms["centralized"] == pytest.approx(1.0 / (4 * 1e-4))
    assert terms["total"] == pytest.approx(sum(v for k, v in terms.items() if k != "total"))
    # the centralized term shrinks as 1/n, the topology terms do not depend on n
    more = theory.dsgd_iterations(0.01, L=1.0, F0=1.0, sigma2=1.0, zeta2=0.0, p=0.1, n=8)
    assert more["centralized"] == pytest.approx(terms["centralized"] / 2)
    assert more["topology"] == terms["topology"]
    assert theory.choco_rate(100.0, L=1, F0=1, sigma2=1, n=4, G=1, gap=0.5, omega=1.0) > 0
    lb = theory.detag_lower_bound(0.1, Delta=1, L=1, sigma2=1, n=4, B=1, gap=0.25)
    assert lb == pytest.approx(1 / (4 * 1e-4) + 1 / (0.01 * 0.5))
    ref = theory.reference_curve([10, 40], 10, 2.0)
    np.testing.assert_allclose(ref, [2.0, 1.0])


def test_transient_time():
    steps = np.arange(10)
    central = np.ones(10)
    dec = np.array([5, 4, 3, 2, 1.05, 1.0, 1.02, 1.0, 1.0, 1.0])
    assert theory.transient_time(steps, dec, central, tol=0.1, window=1) == 4


def test_dsgd_rate_inverts_the_iteration_count():
    k = dict(L=2.0, F0=3.0, sigma2=0.5, zeta2=0.1, p=0.2, n=8)
    eps = 0.01
    iters = theory.dsgd_iterations(eps, **k)
    for term in ("centralized", "transient", "topology"):
        # after the number of iterations a term asks for, that term of the rate is eps
        assert theory.dsgd_rate(iters[term], **k)[term] == pytest.approx(eps, rel=1e-9)
    rate = theory.dsgd_rate(1e4, **k)
    assert rate["total"] == pytest.approx(
        rate["centralized"] + rate["transient"] + rate["topology"]
    )
    with pytest.raises(ValueError, match="T must be positive"):
        theory.dsgd_rate(0.0, **k)


def test_dsgd_transient_grows_like_n_cubed_and_with_the_gap():
    k = dict(L=1.0, F0=1.0, sigma2=1.0, zeta2=0.0, p=0.01)
    T = {n: theory.dsgd_transient_iterations(n=n, **k) for n in (16, 64, 256)}
    # at the transient the centralized term equals the two topology terms; before it, it is smaller
    r = theory.dsgd_rate(T[16], n=16, **k)
    assert r["centralized"] == pytest.approx(r["transient"] + r["topology"], rel=1e-8)
    r = theory.dsgd_rate(0.5 * T[16], n=16, **k)
    assert r["centralized"] < r["transient"] + r["topology"]
    # for large n the T^(-2/3) term sets it: T = n³ L F0 / (p² σ²) (ζ = 0)
    assert T[256] / T[64] == pytest.approx(64, rel=0.1)
    assert T[256] == pytest.approx(256**3 / 0.01**2, rel=0.1)
    assert (
        T[64] > T[16] > theory.dsgd_transient_iterations(n=16, **dict(k, p=0.1))
    )  # smaller gap, longer
    assert theory.dsgd_transient_iterations(n=16, **dict(k, sigma2=0.0)) == float("inf")


def test_problem_constants_and_tuned_step():
    prob = ds.problems.quadratic(8, 5, mu=0.2, L=2.0, noise=0.3, heterogeneity=0.5, seed=0)
    topo = ds.topology.ring(8)
    c = theory.problem_constants(prob, topo)
    assert c["n"] == 8 and c["d"] == 5 and c["L"] == 2.0 and c["mu"] == 0.2
    assert c["sigma2"] == pytest.approx(0.09) and c["zeta2"] == pytest.approx(0.25)
    assert c["spectral_gap"] == pytest.approx(0.1953, abs=1e-4) and c["p"] == pytest.approx(
        1 - c["lam"] ** 2
    )
    terms = theory.dsgd_iterations(
        0.1, F0=1.0, **{k: c[k] for k in ("L", "sigma2", "zeta2", "p", "n")}
    )
    assert terms["total"] > terms["centralized"] > 0
    assert theory.tuned_step(4, 400, 0.5) == pytest.approx(0.05)
    with pytest.raises(ValueError, match="c > 0"):
        theory.tuned_step(4, 400, 0.0)


def test_fit_rate_over_runs_orders_points_and_checks_shapes():
    rng = np.random.default_rng(1)
    n = np.array([16, 1, 4, 1, 16, 4])
    T = np.array([100, 1000, 100, 100, 1000, 1000])
    errs = np.stack(
        [3.0 * (n * T) ** -0.5 * np.exp(0.03 * rng.normal(size=n.size)) for _ in range(5)]
    )
    fit = theory.fit_rate_over_runs(n, T, errs)
    assert fit.ci_low < -0.5 < fit.ci_high and fit.b == pytest.approx(-0.5, abs=0.03)
    assert fit.a == pytest.approx(np.log(3.0), abs=0.1)
    with pytest.raises(ValueError, match="one column per run"):
        theory.fit_rate_over_runs(n, T, errs[:, :4])
