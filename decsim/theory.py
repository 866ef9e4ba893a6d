"""Theory used to read measurements (docs/theory.md). numpy only; never imports the runner.

Linear speedup is measured, not assumed: ``T(eps, n)`` is the first step at which the smoothed
error reaches ``eps``; ``speedup(n) = T(eps, 1) / T(eps, n)``; ``efficiency = speedup / n``. The
O(1/sqrt(nT)) check fits ``log err = a + b log(n T)`` and reports ``b`` (theory −1/2) with a
confidence interval over seeds; :func:`transient_time` is the number of steps until a
decentralized run stays within 10% of centralized SGD.

Closed forms: the stationary error of SGD on the noisy quadratic (:func:`stationary_error`), and
the rate expressions of docs/theory.md as functions of the problem and topology constants
(:func:`problem_constants` collects L, μ, σ², ζ², p, gap from a Problem and a Topology):
:func:`dsgd_iterations` / :func:`dsgd_rate` / :func:`dsgd_transient_iterations` (Koloskova et al.
2020), :func:`choco_rate` (Koloskova et al. 2020, Choco-SGD) and :func:`detag_lower_bound`
(Lu & De Sa 2021). All hold up to constants: compare their *scaling* with measurements.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

# ---------------------------------------------------------------------------------------------
# closed forms


def stationary_error(d: int, eta: float, sigma2: float, n: int, mu: float) -> float:
    """Stationary ``E ||x̄ − x*||²`` of minibatch SGD with constant step η on the μ-strongly convex
    isotropic quadratic with per-coordinate gradient-noise variance σ² on each of n workers:
    ``d η σ² / (n μ (2 − η μ))``. Falls as 1/n (linear speedup in its plainest form)."""
    if not 0 < eta * mu < 2:
        raise ValueError(
            f"need 0 < eta*mu < 2 for a stationary distribution; got eta*mu={eta * mu!r}."
        )
    return d * eta * sigma2 / (n * mu * (2.0 - eta * mu))


def dsgd_iterations(
    eps: float, *, L: float, F0: float, sigma2: float, zeta2: float, p: float, n: int
) -> dict:
    """Koloskova et al. (2020), τ = 1, non-convex: iterations to reach average squared gradient
    norm ``eps``, up to constants: ``L F0 [σ²/(n ε²) + (ζ + σ sqrt(p))/(p ε^{3/2}) + 1/(p ε)]``.

    Returns the three terms and their sum: ``centralized`` (the O(1/sqrt(nT)) rate), ``transient``
    (heterogeneity and noise the topology adds), ``topology`` (the 1/(p ε) term)."""
    sigma, zeta = math.sqrt(sigma2), math.sqrt(zeta2)
    terms = {
        "centralized": L * F0 * sigma2 / (n * eps**2),
        "transient": L * F0 * (zeta + sigma * math.sqrt(p)) / (p * eps**1.5),
        "topology": L * F0 / (p * eps),
    }
    terms["total"] = sum(terms.values())
    return terms


def dsgd_rate(
    T: float, *, L: float, F0: float, sigma2: float, zeta2: float, p: float, n: int
) -> dict:
    """The same bound as :func:`dsgd_iterations` read the other way: the average squared gradient
    norm ``(1/T) Σ_t E||∇f(x̄_t)||²`` after T iterations, up to constants, term by term:

    ``centralized = sqrt(L F0 σ² / (n T))`` (the O(1/sqrt(nT)) rate of minibatch SGD),
    ``transient = (L F0 (ζ + σ sqrt(p)) / (p T))^{2/3}``, ``topology = L F0 / (p T)``, and
    ``total``.
    Each term is the ε at which the matching term of :func:`dsgd_iterations` equals T.
    """
    if not T > 0:
        raise ValueError(f"T must be positive; got T={T!r}.")
    sigma, zeta = math.sqrt(sigma2), math.sqrt(zeta2)
    terms = {
        "centralized": math.sqrt(L * F0 * sigma2 / (n * T)),
        "transient": (L * F0 * (zeta + sigma * math.sqrt(p)) / (p * T)) ** (2.0 / 3.0),
        "topology": L * F0 / (p * T),
    }
    terms["total"] = sum(terms.values())
    return terms


def dsgd_transient_iterations(
    *, L: float, F0: float, sigma2: float, zeta2: float, p: float, n: int
) -> float:
    """Iterations after which D-SGD's centralized term dominates: the T at which
    ``sqrt(L F0 σ²/(nT))`` equals the sum of the two topology terms of :func:`dsgd_rate` (up to
    constants). Past it D-SGD runs at the speed of minibatch SGD with n workers (linear speedup).

    Term by term the crossings are ``T = n³ L F0 (ζ + σ sqrt(p))⁴ / (p⁴ σ⁶)``
    (the ``T^{-2/3}`` term;
    ``n³ L F0 / (p² σ²)`` when ζ = 0) and ``T = n L F0 / (p² σ²)`` (the ``1/(pT)`` term): the
    transient grows like n³ on a fixed graph and explodes as the gap closes. Solved numerically
    for the sum (the log-ratio of the terms increases with log T, so the crossing is unique).
    Returns ``inf`` when σ = 0 (no stochastic term to reach).
    """
    from scipy.optimize import brentq

    def gap(logT):
        t = dsgd_rate(math.exp(logT), L=L, F0=F0, sigma2=sigma2, zeta2=zeta2, p=p, n=n)
        return math.log(t["centralized"]) - math.log(t["transient"] + t["topology"])

    if sigma2 <= 0:
        return float("inf")
    lo, hi = -50.0, 200.0
    if gap(lo) > 0:
        return 0.0
    if gap(hi) < 0:
        return float("inf")
    return float(math.exp(brentq(gap, lo, hi, xtol=1e-10)))


def choco_rate(
    T: float, *, L: float, F0: float, sigma2: float, n: int, G: float, gap: float, omega: float
) -> float:
    """Choco-SGD (ICLR 2020) non-convex rate up to constants:
    ``sqrt(L F0 σ²/(n T)) + (G L F0 / (c T))^{2/3} + L F0 / T`` with ``c = gap² ω / 82``."""
    c = gap**2 * omega / 82.0
    return math.sqrt(L * F0 * sigma2 / (n * T)) + (G * L * F0 / (c * T)) ** (2.0 / 3.0) + L * F0 / T


def detag_lower_bound(
    eps: float, *, Delta: float, L: float, sigma2: float, n: int, B: int, gap: float
) -> float:
    """Lu & De Sa (2021) lower bound on iterations, up to constants:
    ``Δ L σ² / (n B ε⁴) + Δ L / (ε² sqrt(gap))``."""
    return Delta * L * sigma2 / (n * B * eps**4) + Delta * L / (eps**2 * math.sqrt(gap))


def problem_constants(problem, topology) -> dict:
    """The constants the rate expressions take, from a Problem (its ``info``) and a Topology:
    ``n``, ``L``, ``mu``, ``sigma2`` (gradient-noise variance per coordinate), ``zeta2``
    (heterogeneity), ``d`` (problem dimension when known), and the topology's ``lam``,
    ``spectral_gap``, ``p = 1 − lam²`` and ``beta``. Missing facts are left out (the classifiers
    do not know their L or σ²)."""
    info = dict(getattr(problem, "info", None) or {})
    out = {"n": int(topology.n)}
    for key in ("L", "mu", "sigma2", "zeta2"):
        if isinstance(info.get(key), (int, float, np.floating, np.integer)):
            out[key] = float(info[key])
    if "dim" in info:
        out["d"] = int(info["dim"])
    out.update(
        lam=float(topology.lam),
        spectral_gap=float(topology.spectral_gap),
        p=float(topology.p),
        beta=float(topology.beta),
    )
    return out


def tuned_step(n: int, T: int, c: float) -> float:
    """The constant step ``η = c · sqrt(n / T)`` that balances ``F0/(ηT)`` against ``η σ²/n`` in the
    non-convex SGD bound, so that ``(1/T) Σ E||∇f||² = O(1/sqrt(nT))``: the step of the exponent
    fit."""
    if not (n >= 1 and T >= 1 and c > 0):
        raise ValueError(f"need n >= 1, T >= 1 and c > 0; got n={n!r}, T={T!r}, c={c!r}.")
    return float(c * math.sqrt(n / T))


# ---------------------------------------------------------------------------------------------
# measurement


def smooth(values, window: int = 5) -> np.ndarray:
    """Trailing moving average over the last ``window`` evaluations (NaN-aware at the start)."""
    v = np.asarray(values, dtype=np.float64)
    if window <= 1:
        return v.copy()
    out = np.empty_like(v)
    for i in range(v.shape[-1]):
        lo = max(0, i - window + 1)
        out[..., i] = np.mean(v[..., lo : i + 1], axis=-1)
    return out


def steps_to_target(steps, errors, eps: float, *, window: int = 5) -> float:
    """First step at which the smoothed error is ``<= eps`` (NaN if never).

    ``errors`` may carry a leading seed axis; seeds are averaged before smoothing."""
    e = np.asarray(errors, dtype=np.float64)
    if e.ndim > 1:
        e = np.nanmean(e, axis=0)
    s = smooth(e, window)
    hits = np.flatnonzero(s <= eps)
    return float(np.asarray(steps)[hits[0]]) if hits.size else float("nan")


def speedup(T1: float, Tn: float) -> float:
    """``T(eps, 1) / T(eps, n)``."""
    return float(T1) / float(Tn) if Tn and np.isfinite(Tn) and np.isfinite(T1) else float("nan")


def efficiency(T1: float, Tn: float, n: int) -> float:
    """``speedup / n`` (1 is perfect linear speedup)."""
    return speedup(T1, Tn) / n


class RateFit(NamedTuple):
    b: float  # fitted exponent (theory: −1/2)
    a: float  # intercept
    ci_low: float
    ci_high: float
    per_seed: np.ndarray


def fit_rate(nT, errors, *, tail: float = 0.5, confidence: float = 0.95) -> RateFit:
    """Fit ``log err = a + b log(n T)`` on the last ``tail`` fraction of the points.

    ``errors`` is ``[n_evals]`` or ``[n_seeds, n_evals]``; with several seeds, ``b`` is the mean
    of per-seed fits and the interval is a Student-t interval over seeds; with one curve it is the
    least-squares standard-error interval."""
    from scipy import stats

    x = np.asarray(nT, dtype=np.float64)
    e = np.atleast_2d(np.asarray(errors, dtype=np.float64))
    start = int(np.floor((1.0 - tail) * x.shape[-1]))
    keep = np.arange(x.shape[-1]) >= start
    fits = []
    for row in e:
        m = keep & np.isfinite(row) & (row > 0) & (x > 0)
        if m.sum() < 3:
            fits.append((np.nan, np.nan, np.nan))
            continue
        res = stats.linregress(np.log(x[m]), np.log(row[m]))
        fits.append((res.slope, res.intercept, res.stderr))
    fits = np.array(fits)
    slopes = fits[:, 0]
    good = np.isfinite(slopes)
    if good.sum() >= 2:
        b = float(np.mean(slopes[good]))
        half = (
            stats.t.ppf(0.5 + confidence / 2, good.sum() - 1)
            * np.std(slopes[good], ddof=1)
            / math.sqrt(good.sum())
        )
    else:
        b = float(slopes[good][0]) if good.any() else float("nan")
        se = float(fits[good][0, 2]) if good.any() else float("nan")
        half = stats.norm.ppf(0.5 + confidence / 2) * se
    a = float(np.nanmean(fits[:, 1]))
    return RateFit(b=b, a=a, ci_low=b - half, ci_high=b + half, per_seed=slopes)


def fit_rate_over_runs(n, T, errors, *, confidence: float = 0.95) -> RateFit:
    """Fit ``log err = a + b log(n T)`` across runs with different n and T.

    Args:
      n, T: per-run worker counts and step counts (``[n_runs]``).
      errors: ``[n_seeds, n_runs]`` (or ``[n_runs]``): one error per run and seed, e.g. the average
        squared gradient norm ``(1/T) Σ_t ||∇f(x̄_t)||²`` of a run with the step ``η ∝ sqrt(n/T)``.

    Returns:
      A :class:`RateFit`; ``b`` is the mean of the per-seed slopes and ``[ci_low, ci_high]`` its
      Student-t interval over seeds (theory for the tuned step: ``b = −1/2``).
    """
    x = np.asarray(n, dtype=np.float64) * np.asarray(T, dtype=np.float64)
    e = np.atleast_2d(np.asarray(errors, dtype=np.float64))
    if e.shape[-1] != x.size:
        raise ValueError(
            f"errors must be [n_seeds, {x.size}] (one column per run); got shape {e.shape}."
        )
    order = np.argsort(x, kind="stable")
    return fit_rate(x[order], e[:, order], tail=1.0, confidence=confidence)


def transient_time(
    steps, err_decentralized, err_centralized, *, tol: float = 0.1, window: int = 5
) -> float:
    """First step from which the (smoothed) decentralized error stays within ``1 + tol`` of the
    centralized one (NaN if it never settles)."""
    d = smooth(np.nanmean(np.atleast_2d(err_decentralized), axis=0), window)
    c = smooth(np.nanmean(np.atleast_2d(err_centralized), axis=0), window)
    ok = d <= (1.0 + tol) * c
    for i in range(len(ok)):
        if ok[i:].all():
            return float(np.asarray(steps)[i])
    return float("nan")


def reference_curve(nT, anchor_nT: float, anchor_err: float, exponent: float = -0.5) -> np.ndarray:
    """``err = anchor_err · (nT / anchor_nT)^exponent``: the O(1/sqrt(nT)) reference line."""
    return anchor_err * (np.asarray(nT, dtype=np.float64) / anchor_nT) ** exponent


__all__ = [
    "stationary_error",
    "dsgd_iterations",
    "dsgd_rate",
    "dsgd_transient_iterations",
    "choco_rate",
    "detag_lower_bound",
    "problem_constants",
    "tuned_step",
    "smooth",
    "steps_to_target",
    "speedup",
    "efficiency",
    "fit_rate",
    "fit_rate_over_runs",
    "RateFit",
    "transient_time",
    "reference_curve",
]
