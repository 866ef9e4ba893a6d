"""Theory used to read measurements (ALGORITHMS.md section 8). numpy only; never imports the runner.

Linear speedup is measured, not assumed: ``T(eps, n)`` is the first step at which the smoothed
error reaches ``eps``; ``speedup(n) = T(eps, 1) / T(eps, n)``; ``efficiency = speedup / n``. The
O(1/sqrt(nT)) check fits ``log err = a + b log(n T)`` on the tail and reports ``b`` (theory −1/2).
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
        raise ValueError(f"need 0 < eta*mu < 2 for a stationary distribution; got eta*mu={eta * mu!r}.")
    return d * eta * sigma2 / (n * mu * (2.0 - eta * mu))


def dsgd_iterations(eps: float, *, L: float, F0: float, sigma2: float, zeta2: float, p: float,
                    n: int) -> dict:
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


def choco_rate(T: float, *, L: float, F0: float, sigma2: float, n: int, G: float, gap: float,
               omega: float) -> float:
    """Choco-SGD (ICLR 2020) non-convex rate up to constants:
    ``sqrt(L F0 σ²/(n T)) + (G L F0 / (c T))^{2/3} + L F0 / T`` with ``c = gap² ω / 82``."""
    c = gap**2 * omega / 82.0
    return math.sqrt(L * F0 * sigma2 / (n * T)) + (G * L * F0 / (c * T)) ** (2.0 / 3.0) + L * F0 / T


def detag_lower_bound(eps: float, *, Delta: float, L: float, sigma2: float, n: int, B: int,
                      gap: float) -> float:
    """Lu & De Sa (2021) lower bound on iterations, up to constants:
    ``Δ L σ² / (n B ε⁴) + Δ L / (ε² sqrt(gap))``."""
    return Delta * L * sigma2 / (n * B * eps**4) + Delta * L / (eps**2 * math.sqrt(gap))


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
        out[..., i] = np.mean(v[..., lo:i + 1], axis=-1)
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
        half = stats.t.ppf(0.5 + confidence / 2, good.sum() - 1) * np.std(slopes[good], ddof=1) / math.sqrt(good.sum())
    else:
        b = float(slopes[good][0]) if good.any() else float("nan")
        se = float(fits[good][0, 2]) if good.any() else float("nan")
        half = stats.norm.ppf(0.5 + confidence / 2) * se
    a = float(np.nanmean(fits[:, 1]))
    return RateFit(b=b, a=a, ci_low=b - half, ci_high=b + half, per_seed=slopes)


def transient_time(steps, err_decentralized, err_centralized, *, tol: float = 0.1,
                   window: int = 5) -> float:
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


__all__ = ["stationary_error", "dsgd_iterations", "choco_rate", "detag_lower_bound", "smooth",
           "steps_to_target", "speedup", "efficiency", "fit_rate", "RateFit", "transient_time",
           "reference_curve"]

