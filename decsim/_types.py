"""Core types shared by every module.

The axis contract, written once: every per-worker quantity is a pytree whose leaves have a leading
worker axis ``[n_workers, ...]`` (a ``Stacked`` pytree). Workers interact only through the mixer;
everything else is ``jax.vmap`` over axis 0.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Callable
from typing import Any, NamedTuple

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
    """A compression operator (docs/reference/compressors.md), applied per worker and per leaf.

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
    omega: Callable | None
    name: str
    unbiased: bool = False
    deterministic: bool = False
    encode: Callable | None = None


class Algorithm(NamedTuple):
    """A decentralized algorithm: a NamedTuple of pure functions built by a factory.

    The factory runs once, on the host, with concrete values (so it validates with plain Python)
    and closes over the algorithm's structure (which compressor, how many rounds); the numbers one
    sweeps travel as data in ``hparams`` (optax's ``inject_hyperparams`` idea). The structural part
    is memoized, so equal structure gives the very same ``step`` and one compiled program serves
    every value of the hyperparameters. Any NamedTuple (or object) with ``init``, ``step``,
    ``params`` and ``hparams`` works with :func:`decsim.run`; the other fields are optional.

    Attributes:
      init: ``(params0_stacked, key) -> state``.
      step: ``(state, hparams, oracle, mixer, key) -> (state, StepCost)``. ``hparams`` is a dict
        like :attr:`hparams` whose values may be traced float32 scalars; ``oracle(X, key)`` returns
        the stacked stochastic gradients at ``X`` (one key per worker is derived from ``key``);
        ``mixer(Z)`` is one gossip round ``W Z``.
      params: ``state -> stacked params`` (the point at which metrics are taken).
      hparams: the numeric hyperparameters and their values, e.g. ``{"learning_rate": 0.1}``:
        traced and vmappable (``ds.run(..., hparams={"learning_rate": [0.1, 0.2]})``).
      name: the factory's name, e.g. ``"dsgd"``.
      args: the arguments the factory was called with (a record for results; not used to run).
      validate: optional ``topology -> None`` check run by the runner before compiling (raises
        ``ValueError``), e.g. D²'s condition on the smallest eigenvalue of W.
      check_hparams: optional ``dict -> None``: checks concrete hyperparameter values (raises
        ``ValueError``); the runner applies it to every run's values before compiling.
      extra_metrics: optional ``state -> dict`` of additional scalar metrics.
      directed: whether it runs on directed topologies (``mixer.push``/``mixer.pull``); the
        runner refuses a directed topology for an algorithm without it.
    """

    init: Callable
    step: Callable
    params: Callable
    hparams: Any = types.MappingProxyType({})
    name: str = "algorithm"
    args: Any = None
    validate: Callable | None = None
    check_hparams: Callable | None = None
    extra_metrics: Callable | None = None
    directed: bool = False


class Problem(NamedTuple):
    """A distributed optimization problem ``f(x) = (1/n) sum_i f_i(x)``.

    Worker ``i`` holds ``counts[i]`` samples in rows ``0 .. counts[i]-1`` of every leaf of ``data``
    (leaves ``[n_workers, m_max, ...]``); rows past the count are padding that sampling and losses
    never see. ``f_i`` is the mean of ``loss_fn`` over worker i's own samples, so every worker
    weighs the same whatever its sample count.

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
      aux: pytree of arrays that ``extra_metrics`` reads (passed as data, not baked into the
        program).
      info: host-side facts: ``x_star``, ``f_star``, ``L``, ``mu``, ``sigma2``, ``zeta2``, ...
      model_state0: ``None`` for the simple loss form; otherwise the stacked model state
        (leaves ``[n, ...]``; ``{}`` for a stochastic model without state) and ``loss_fn`` is the
        extended form ``(params, model_state, batch, key) -> (loss, new_model_state)``, with
        ``key is None`` meaning evaluation mode (no dropout, BatchNorm on running statistics).
        ``test_metrics`` is then ``(params, model_state, test_batch) -> dict``.
      model_state_mixing: ``"local"`` (each worker keeps its own model state) or ``"gossip"``
        (one extra gossip round of the model state per step, in the same messages).
      evaluation: how metrics are computed (an :class:`Evaluation`).
      sampling: ``"replacement"`` (each minibatch drawn uniformly with replacement) or
        ``"epoch"`` (each worker walks through a fresh random permutation of its samples per
        epoch).
    """

    name: str
    n_workers: int
    params0: Stacked
    data: Any
    counts: np.ndarray
    loss_fn: Callable
    batch_size: int | None = None
    noise_std: float = 0.0
    test_data: Any = None
    test_metrics: Callable | None = None
    extra_metrics: Callable | None = None
    aux: Any = None
    info: Any = None
    model_state0: Any = None
    model_state_mixing: str = "local"
    evaluation: Any = None
    sampling: str = "replacement"

    @property
    def stateful(self) -> bool:
        """The loss has the extended form ``(params, model_state, batch, key)``."""
        return self.model_state0 is not None


class Evaluation(NamedTuple):
    """How a run evaluates its metrics (``ds.problems.with_evaluation`` sets it).

    Attributes:
      batch_size: rows per evaluation chunk (training and test data are evaluated chunk by chunk,
        so the memory of an evaluation does not grow with the data set); ``None``: all at once.
      subsample: evaluate the training metrics on a fixed random subset of this many rows per
        worker (``None``: all rows). The test set is always evaluated whole.
      grad_norm: compute ``grad_norm_sq`` (a backward pass over the evaluated data); ``None``:
        only for the simple loss form, where it is cheap.
      per_worker: also report, for every test metric ``m``, ``worker_mean_m``, ``worker_min_m``
        and ``worker_max_m`` over the workers' own models (n test evaluations).
      seed: the seed of the subsample.
    """

    batch_size: int | None = 4096
    subsample: int | None = None
    grad_norm: bool | None = None
    per_worker: bool = False
    seed: int = 0


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
      model_state: final stacked model state (numpy, leaves ``[n, ...]``) of a problem with
        model state, else ``None``.
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
    model_state: Any = None

    @property
    def batched(self) -> bool:
        """True when the run had a leading seed axis."""
        return isinstance(self.seeds, (list, tuple))

    @property
    def n_runs(self) -> int:
        """How many runs this History holds (1 unless run with ``seeds=``)."""
        return len(self.seeds) if self.batched else 1

    def select(self, i: int) -> History:
        """Run ``i`` of a batched History as a History of its own (unbatched: metrics
        ``[n_evals]``, params ``[n, ...]``, its own seed and hyperparameter values). On an
        unbatched History, ``select(0)`` is the run itself; so consumers never branch on
        ``batched``."""
        n = self.n_runs
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not -n <= i < n:
            raise ValueError(f"select(i) needs an integer run index in [0, {n}); got i={i!r}.")
        if not self.batched:
            return dataclasses.replace(self, config=dict(self.config))
        i = int(i) % n
        import jax

        config = dict(self.config)
        if isinstance(config.get("hparams"), dict):
            config["hparams"] = {
                k: (v[i] if isinstance(v, (list, tuple)) and len(v) == n else v)
                for k, v in config["hparams"].items()
            }
        return History(
            steps=self.steps,
            metrics={k: np.asarray(v)[i] for k, v in self.metrics.items()},
            params=jax.tree.map(lambda a: np.asarray(a)[i], self.params),
            model_state=jax.tree.map(lambda a: np.asarray(a)[i], self.model_state),
            diverged=bool(np.asarray(self.diverged)[i]),
            diverged_step=int(np.asarray(self.diverged_step)[i]),
            seeds=self.seeds[i],
            config=config,
            compile_seconds=self.compile_seconds,
            run_seconds=self.run_seconds,
        )

    @staticmethod
    def stack(histories) -> History:
        """One batched History from several runs (each batched or not) with the same
        evaluation steps: the inverse of :meth:`select`. Hyperparameter values become one list
        entry per run; times add up."""
        runs = [r for h in histories for r in (h.select(j) for j in range(h.n_runs))]
        if not runs:
            raise ValueError("History.stack needs at least one History; got none.")
        steps = runs[0].steps
        for r in runs[1:]:
            if r.steps.shape != steps.shape or np.any(r.steps != steps):
                raise ValueError(
                    "History.stack needs runs evaluated at the same steps; got "
                    f"{len(steps)} and {len(r.steps)} evaluations."
                )
            if set(r.metrics) != set(runs[0].metrics):
                raise ValueError(
                    "History.stack needs runs with the same metrics; got "
                    f"{sorted(runs[0].metrics)} and {sorted(r.metrics)}."
                )
        import jax

        config = dict(runs[0].config)
        hp = [r.config.get("hparams") or {} for r in runs]
        if hp and all(isinstance(h, dict) for h in hp):
            config["hparams"] = {k: [h.get(k) for h in hp] for k in hp[0]}
        return History(
            steps=steps,
            metrics={
                k: np.stack([np.asarray(r.metrics[k]) for r in runs]) for k in runs[0].metrics
            },
            params=jax.tree.map(
                lambda *a: np.stack([np.asarray(x) for x in a]), *[r.params for r in runs]
            ),
            model_state=jax.tree.map(
                lambda *a: np.stack([np.asarray(x) for x in a]), *[r.model_state for r in runs]
            ),
            diverged=np.array([r.diverged for r in runs], dtype=bool),
            diverged_step=np.array([r.diverged_step for r in runs], dtype=np.int64),
            seeds=[r.seeds for r in runs],
            config=config,
            compile_seconds=sum(h.compile_seconds for h in histories),
            run_seconds=sum(h.run_seconds for h in histories),
        )

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
