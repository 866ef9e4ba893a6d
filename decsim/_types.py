"""Core types shared by every module.

The axis contract, written once: every per-worker quantity is a pytree whose leaves have a leading
worker axis ``[n_workers, ...]`` (a ``Stacked`` pytree). Workers interact only through the mixer;
everything else is ``jax.vmap`` over axis 0.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple, Optional

import numpy as np

Stacked = Any  # pytree, every leaf [n_workers, ...]
Params = Any  # pytree of one model's parameters (no worker axis)
PRNGKey = Any  # jax.random.PRNGKey (uint32[2])


class StepCost(NamedTuple):
    """What one algorithm step used, per worker (float32 scalars, traced).

    Attributes:
      grad_evals: stochastic gradient evaluations per worker in this step.
      comm_rounds: gossip rounds in this step (a round in which X and a tracker are sent together
        counts once).
      bits: payload bits one worker broadcasts in this step (counted once per message, not per edge;
        mean over workers when it differs between workers).
    """

    grad_evals: Any
    comm_rounds: Any
    bits: Any


class Compressor(NamedTuple):
    """A compression operator (ALGORITHMS.md section 2), applied per worker and per leaf.

    Attributes:
      compress: ``(key, x) -> x_hat``: one worker's leaf ``x`` (any shape) to the value the
        receiver reconstructs (same shape and dtype). Pure and jittable.
      bits: ``(x_hat) -> float32 scalar``: payload bits of that leaf's message.
      omega: ``d -> float``: quality ω in ``E||C(x) − x||² <= (1 − ω)||x||²`` for a leaf of size d
        (``None`` when no such bound is claimed).
      name: e.g. ``"top_k(0.01)"``.
      unbiased: ``E C(x) = x``.
      deterministic: ``compress`` ignores its key.
      encode: optional ``(key, x) -> (x_hat, bits)`` for compressors whose payload is only known
        while compressing (entropy-coded messages); ``compress_stacked`` prefers it.
    """

    compress: Callable
    bits: Callable
    omega: Optional[Callable]
    name: str
    unbiased: bool = False
    deterministic: bool = False
    encode: Optional[Callable] = None


class Algorithm(NamedTuple):
    """A decentralized algorithm: a NamedTuple of pure functions built by a factory.

    Attributes:
      init: ``(params0_stacked, key) -> state``.
      step: ``(state, oracle, mixer, key) -> (state, StepCost)``. ``oracle(X, key)`` returns the
        stacked stochastic gradients at ``X`` (one key per worker is derived from ``key``);
        ``mixer(Z)`` is one gossip round ``W Z``.
      params: ``state -> stacked params`` (the point at which metrics are taken).
      name: the factory's name, e.g. ``"dsgd"``.
      config: every argument the factory was called with (for records and sweeps).
      validate: optional ``topology -> None`` check run by the runner before compiling (raises
        ``ValueError``), e.g. D²'s condition on the smallest eigenvalue of W.
      extra_metrics: optional ``state -> dict`` of additional scalar metrics.
      rebuild: ``numeric_hparams -> Algorithm``: the same algorithm with its numeric hyperparameters
        replaced (possibly by traced arrays). The runner uses it so that runs differing only in
        learning rate or gamma share one compiled program.
      hparams: the numeric hyperparameters (name -> float), the part that ``rebuild`` takes.
      structure: a hashable key of everything that is not in ``hparams`` (compiled-program cache key).
    """

    init: Callable
    step: Callable
    params: Callable
    name: str = "algorithm"
    config: Any = None
    validate: Optional[Callable] = None
    extra_metrics: Optional[Callable] = None
    rebuild: Optional[Callable] = None
    hparams: Any = None
    structure: Any = None


class Problem(NamedTuple):
    """A distributed optimization problem ``f(x) = (1/n) sum_i f_i(x)``.

    Worker ``i`` holds ``counts[i]`` samples in rows ``0 .. counts[i]-1`` of every leaf of ``data``
    (leaves ``[n_workers, m_max, ...]``); rows past the count are padding that sampling and losses
    never see. ``f_i`` is the mean of ``loss_fn`` over worker i's own samples, so every worker weighs
    the same whatever its sample count.

    Attributes:
      name: short name, e.g. ``"logistic_regression/digits"``.
      n_workers: number of workers n.
      params0: initial parameters, stacked ``[n, ...]`` (all rows equal unless the problem says so).
      data: pytree, leaves ``[n, m_max, ...]`` (numpy); ``None`` is not allowed (use m = 1).
      counts: numpy int32 ``[n]``, samples per worker.
      loss_fn: ``(params, batch) -> scalar``, the mean loss over a batch (leaves ``[b, ...]``).
      batch_size: minibatch size per worker per gradient, or ``None`` for the full local batch.
      noise_std: standard deviation of additive Gaussian gradient noise per coordinate (0 = none).
      test_data: pytree, leaves ``[m_test, ...]``, or ``None``.
      test_metrics: ``(params, test_data) -> dict`` of scalars (``test_loss``, ``test_accuracy``).
      extra_metrics: optional ``(stacked_params, aux) -> dict`` of scalars (e.g. consensus error).
      aux: pytree of arrays that ``extra_metrics`` reads (passed as data, not baked into the program).
      info: host-side facts: ``x_star``, ``f_star``, ``L``, ``mu``, ``sigma2``, ``zeta2``, ...
    """

    name: str
    n_workers: int
    params0: Stacked
    data: Any
    counts: np.ndarray
    loss_fn: Callable
    batch_size: Optional[int] = None
    noise_std: float = 0.0
    test_data: Any = None
    test_metrics: Optional[Callable] = None
    extra_metrics: Optional[Callable] = None
    aux: Any = None
    info: Any = None


@dataclasses.dataclass
class History:
    """The record of one run (or of several seeds run as one vmapped program).

    Attributes:
      steps: numpy ``[n_evals]``, the step index of each evaluation (0 is the initial point).
      metrics: name -> numpy ``[n_evals]`` (or ``[n_seeds, n_evals]`` when run with ``seeds=``).
        Always ``loss`` (f at the worker average), ``grad_norm_sq``, ``consensus``, ``grad_evals``,
        ``comm_rounds``, ``bits``; ``test_loss``/``test_accuracy`` when the problem has test data.
        After a divergence the remaining entries are NaN.
      params: final stacked parameters, numpy pytree, leaves ``[n, ...]`` (``[n_seeds, n, ...]``).
      diverged: whether the run produced NaN/inf (numpy bool array ``[n_seeds]`` with ``seeds=``).
      diverged_step: first evaluated step at which NaN/inf was seen, or -1.
      seeds: the seeds (list) or a single int.
      config: names and arguments of algorithm, problem and topology, steps, eval_every.
      compile_seconds: time spent tracing and compiling (0 when the program came from the cache).
      run_seconds: wall-clock time of the run excluding compilation.
    """

    steps: np.ndarray
    metrics: dict
    params: Any
    diverged: Any
    diverged_step: Any
    seeds: Any
    config: dict
    compile_seconds: float = 0.0
    run_seconds: float = 0.0

    @property
    def batched(self) -> bool:
        """True when the run had a leading seed axis."""
        return isinstance(self.seeds, (list, tuple))

    def final(self, name: str):
        """Last finite value of a metric (per seed when batched)."""
        values = np.asarray(self.metrics[name], dtype=np.float64)

        def last(v):
            finite = np.isfinite(v)
            return float(v[finite][-1]) if finite.any() else float("nan")

        if values.ndim == 1:
            return last(values)
        return np.array([last(v) for v in values])

    def to_dataframe(self):
        """A tidy pandas DataFrame, one row per evaluation (and seed)."""
        import pandas as pd

        seeds = list(self.seeds) if self.batched else [self.seeds]
        diverged = np.atleast_1d(self.diverged)
        frames = []
        for s, seed in enumerate(seeds):
            cols = {"step": self.steps}
            for name, values in self.metrics.items():
                values = np.asarray(values)
                cols[name] = values[s] if self.batched else values
            frame = pd.DataFrame(cols)
            frame.insert(0, "seed", seed)
            frame["diverged"] = bool(diverged[s])
            frames.append(frame)
        out = pd.concat(frames, ignore_index=True)
        for key in ("algorithm", "topology", "problem"):
            if key in self.config:
                out.insert(0, key, self.config[key])
        out["n_workers"] = self.config.get("n_workers")
        return out
