"""Theory helpers (ALGORITHMS.md section 8), checked against closed forms and against simulation."""

import numpy as np
import pytest

import decsim as ds
from decsim import theory


def test_stationary_error_formula_and_validation():
    assert theory.stationary_error(10, 0.1, 0.04, 4, 1.0) == pytest.approx(10 * 0.1 * 0.04 / (4 * 1.9))
    with pytest.raises(ValueError, match="eta\\*mu"):
        theory.stationary_error(10, 3.0, 1.0, 1, 1.0)


def test_stationary_error_matches_centralized_sgd_on_noisy_quadratic():
    """Minibatch SGD with n workers: the stationary E||x̄ − x*||² falls as 1/n, as the formula says."""
    d, eta, mu, noise = 20, 0.2, 1.0, 1.0
    for n in (1, 4):
        prob = ds.problems.quadratic(n, d, mu=mu, L=mu, noise=noise, heterogeneity=0.0, seed=1)
        hist = ds.run(ds.algorithms.centralized_sgd(eta), prob, ds.topology.complete(n),
                      steps=4000, eval_every=10, seeds=list(range(8)))
        # f(x̄) − f* = (μ/2)||x̄ − x*||² for this isotropic quadratic
        err = 2.0 / mu * (hist.metrics["loss"][:, 100:] - prob.info["f_star"])
        want = theory.stationary_error(d, eta, noise**2, n, mu)
        assert np.mean(err) == pytest.approx(want, rel=0.1)


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
