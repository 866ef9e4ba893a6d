"""Phase 1 of a run, in plain Python before anything is traced: the checks of every argument of
:func:`decsim.run`, the resolution of the hyperparameters per run, the choice of how the worker
axis is executed, and the memory check."""

from __future__ import annotations

import math
import time

import jax
import jax.numpy as jnp
import numpy as np

from ._checks import integer, number, one_of
from ._loop import algo_key, problem_key
from ._programs import device_data, float_dtype
from ._types import Algorithm, Problem
from .memory import available_bytes, memory_estimate
from .problems.objective import WORKERS, oracle_state
from .problems.objective import oracle as make_oracle
from .topology import Topology

__all__ = ["check_algorithm", "check_run_args", "check_checkpoint", "check_seeds",
           "resolve_hparams", "default_eval_every", "choose_workers", "check_workers",
           "check_fits", "check_graph_kind", "MEMORY_CHECKED", "WORKERS_CHOICE"]


def check_algorithm(algorithm):
    """Accept a decsim Algorithm or any object with ``init``, ``step``, ``params``, ``hparams``."""
    if isinstance(algorithm, Algorithm):
        return algorithm
    missing = [f for f in ("init", "step", "params") if not callable(getattr(algorithm, f, None))]
    hp = getattr(algorithm, "hparams", None)
    if missing or not (hp is None or hasattr(hp, "items")):
        raise ValueError(
            f"algorithm must be a decsim Algorithm (e.g. ds.algorithms.dsgd(0.1)) or "
            "a NamedTuple with init, step, params and an hparams dict; got "
            f"{type(algorithm).__name__}" + (f" without {', '.join(missing)}." if missing else ".")
        )
    return algorithm


def default_eval_every(steps: int) -> int:
    """Largest divisor of ``steps`` that gives at least ~50 evaluations."""
    if steps <= 50:
        return 1
    target = max(1, steps // 50)
    return max(d for d in range(1, target + 1) if steps % d == 0)


def check_graph_kind(algorithm, topology) -> None:
    """A directed topology only for an algorithm built for one (``Algorithm.directed``)."""
    if getattr(topology, "directed", False) and not getattr(algorithm, "directed", False):
        name = getattr(algorithm, "name", type(algorithm).__name__)
        raise ValueError(
            f"{name} needs an undirected topology (a symmetric, doubly stochastic W); "
            f"{topology.name} is directed. On a directed graph use ds.algorithms.sgp (push-sum) "
            "or ds.algorithms.push_pull (gradient tracking), or pick an undirected topology."
        )


def check_run_args(algorithm, problem, topology, steps, eval_every) -> int:
    check_algorithm(algorithm)
    if not isinstance(problem, Problem):
        raise ValueError(
            f"problem must be a decsim Problem (e.g. ds.problems.quadratic(8, 10)); "
            f"got {type(problem).__name__}."
        )
    if not isinstance(topology, Topology):
        raise ValueError(
            f"topology must be a decsim Topology (e.g. ds.topology.ring(8)); got "
            f"{type(topology).__name__}."
        )
    if topology.n != problem.n_workers:
        raise ValueError(
            f"topology {topology.name} has n={topology.n} workers but the problem "
            f"has n_workers={problem.n_workers}; build both with the same n."
        )
    steps = integer("steps", steps, min=0)
    if eval_every is None:
        eval_every = default_eval_every(steps)
    eval_every = integer("eval_every", eval_every)
    if steps % eval_every:
        lo = steps // eval_every * eval_every
        raise ValueError(
            f"steps={steps} is not a multiple of eval_every={eval_every}; use "
            f"steps={lo if lo else eval_every} or {lo + eval_every}, or an "
            f"eval_every that divides {steps}."
        )
    check_graph_kind(algorithm, topology)
    validate = getattr(algorithm, "validate", None)
    if validate is not None:
        validate(topology)
    return eval_every


def check_checkpoint(checkpoint):
    from pathlib import Path

    if not isinstance(checkpoint, (str, Path)) or not str(checkpoint):
        raise ValueError(f"checkpoint must be a file path (str or pathlib.Path); got "
                         f"{checkpoint!r}.")
    path = Path(checkpoint)
    if path.is_dir():
        raise ValueError(f"checkpoint={str(path)!r} is a folder; give a file path such as "
                         f"{str(path / 'run.ckpt.npz')!r}.")
    return path


def check_seeds(seed, seeds) -> list:
    if seeds is None:
        return [integer("seed", seed, min=0, max=2**32 - 1)]
    if isinstance(seeds, (str, bytes)) or not hasattr(seeds, "__len__"):
        raise ValueError(
            f"seeds must be a list of integers, e.g. seeds=[0, 1, 2]; got seeds={seeds!r}."
        )
    out = [integer("seeds[i]", s, min=0, max=2**32 - 1) for s in seeds]
    if not out:
        raise ValueError("seeds must hold at least one seed; got an empty list.")
    return out


def resolve_hparams(algorithm, hparams: dict | None, n_runs: int | None) -> dict:
    """``algorithm.hparams`` updated by ``hparams``, each value a scalar or (batched) a
    ``[n_runs]`` array (in the run's float dtype); every run's value goes through the algorithm's
    own checks."""
    hp = dict(getattr(algorithm, "hparams", None) or {})
    name = getattr(algorithm, "name", type(algorithm).__name__)
    if hparams:
        unknown = set(hparams) - set(hp)
        if unknown:
            raise ValueError(
                f"hparams {sorted(unknown)} are not numeric hyperparameters of "
                f"{name}; valid: {sorted(hp)}."
            )
        hp.update(hparams)
    check = getattr(algorithm, "check_hparams", None)
    out = {}
    for k, v in hp.items():
        arr = np.asarray(v)
        numeric = np.issubdtype(arr.dtype, np.number) and not np.issubdtype(arr.dtype, np.bool_)
        if (
            not numeric
            or arr.ndim > 1
            or (arr.ndim == 1 and (n_runs is None or arr.shape[0] != n_runs))
        ):
            per_run = (
                f"a number or a list of {n_runs} numbers, one per seed in seeds"
                if n_runs is not None
                else "a number (a list of values, one per run, needs seeds=[...] of the same "
                "length, e.g. seeds=[0] * len(values))"
            )
            raise ValueError(f"hparams[{k!r}] must be {per_run}; got {v!r}.")
        for value in np.atleast_1d(arr).tolist():
            if check is not None:
                check({k: value})
            else:
                number(f"hparams[{k!r}]", value)
        if n_runs is not None:  # batched: every value per run, so one program serves both forms
            arr = np.broadcast_to(arr, (n_runs,))
        out[k] = jnp.asarray(arr, float_dtype())
    return out


WORKERS_CHOICE: dict = {}


def choose_workers(problem: Problem):
    """``"vmap"`` for the simple loss form; for a model with state or randomness, whichever of
    ``"vmap"`` and ``"map"`` evaluates the stacked gradient faster here (best of three calls each
    after compiling; remembered per problem structure and shapes for the process)."""
    if not problem.stateful:
        return "vmap"
    shapes = jax.tree.map(np.shape, (problem.params0, problem.data, problem.model_state0))
    key = (problem_key(problem), str(shapes), float_dtype().name, jax.default_backend())
    if key in WORKERS_CHOICE:
        return WORKERS_CHOICE[key]
    args = device_data(problem)
    times = {}
    for mode in WORKERS:
        def grads(X, st, k, mode=mode):
            o = make_oracle(problem, args["data"], args["counts"], args["noise_std"], state=st,
                            workers=mode, perm_key=k)
            return o(X, k), o.state

        fn = jax.jit(grads)
        st = oracle_state(problem, args["model_state0"])
        k = jax.random.PRNGKey(0)
        jax.block_until_ready(fn(args["params0"], st, k))
        best = math.inf
        for _ in range(3):
            tic = time.perf_counter()
            jax.block_until_ready(fn(args["params0"], st, k))
            best = min(best, time.perf_counter() - tic)
        times[mode] = best
    WORKERS_CHOICE[key] = min(times, key=times.get)
    return WORKERS_CHOICE[key]


MEMORY_CHECKED: set = set()


def check_fits(algorithm, problem, workers, n_runs: int) -> None:
    """Refuse a run whose estimated peak memory (:func:`decsim.memory_estimate`) exceeds what the
    device has, before compiling. The estimate traces the loss (no compilation), so it runs for
    models with state (deep networks) and for problems whose data and parameters alone take a
    tenth of the memory; others are far below any limit."""
    avail = available_bytes()
    if avail is None:
        return
    size = lambda t: sum(int(np.size(a)) * 4 for a in jax.tree.leaves(t))  # noqa: E731
    floor = size(problem.data) + 4 * n_runs * size(problem.params0)
    if not problem.stateful and floor < avail / 10:
        return
    key = (algo_key(algorithm), problem_key(problem), str(jax.tree.map(np.shape, (
        problem.params0, problem.data))), str(workers), n_runs, avail // 2**28)
    if key in MEMORY_CHECKED:
        return
    est = memory_estimate(algorithm, problem, workers=workers, seeds=n_runs)
    if est.total > avail:
        raise ValueError(
            f"this run needs about {est.total / 2**30:.1f} GiB but {avail / 2**30:.1f} GiB are "
            f"available ({est}). Use fewer workers or seeds, workers=\"map\" or a chunk size "
            "(fewer gradient evaluations in flight), a smaller batch_size or "
            "eval_batch_size, a bfloat16 compute dtype for the model, or rematerialization "
            "(jax.checkpoint) inside the loss; or pass check_memory=False to run anyway.")
    MEMORY_CHECKED.add(key)


def check_workers(workers, problem):
    """``"vmap"``, ``"map"`` or a chunk size (an int in [1, n]); ``"auto"`` resolved."""
    if isinstance(workers, str):
        one_of("workers", workers, ("auto",) + WORKERS)
        if workers == "auto":
            return choose_workers(problem)
        return workers
    n = problem.n_workers
    chunk = integer("workers", workers, min=1, max=n,
                    hint='Use "vmap", "map" or a chunk size that divides n_workers.')
    if n % chunk:
        raise ValueError(f"workers={chunk} (workers per vmapped chunk) must divide "
                         f"n_workers={n}; use a divisor of {n}, \"vmap\" or \"map\".")
    return chunk
