"""The bodies of the compiled programs a run is made of (traced once per structure and shapes).

``make_step`` is one algorithm step with its oracle, mixer and key; ``make_init`` the initial
state; ``make_segment`` chunks of ``lax.scan`` over steps with a params snapshot after each chunk;
``make_metrics`` the metrics of the snapshots, a program that depends on the problem alone (so
every algorithm run on one problem shares it). ``algo_key``/``problem_key``/``metrics_key`` say
what each program closes over: the program cache keys on them (:mod:`decsim._programs`).

Randomness: step t uses ``fold_in(run_key, t)``, which the gradient oracle splits into one key per
worker; the initial state uses ``fold_in(run_key, 2**31 - 1)``, the epoch permutations of
``sampling="epoch"`` ``fold_in(run_key, 2**31 - 2)``.

The carry of a run is ``(state, ostate)``: the algorithm's state and the oracle's
(:class:`decsim.problems.objective.Oracle`: the model state of a stateful problem, the epoch
cursor), ``{}`` when there is none. Algorithms never see ``ostate``; the oracle they call does.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ._programs import TRACE_COUNTS, float_dtype
from ._types import Problem
from .gossip import GossipPlan
from .network import TIME_STREAM, step_seconds
from .problems import evaluate
from .problems.objective import EPOCH_STREAM, oracle_state
from .problems.objective import oracle as make_oracle

__all__ = ["INIT_STREAM", "init_key", "make_step", "snapshot", "make_init", "make_segment",
           "make_metrics", "metrics_args", "problem_key", "metrics_key", "algo_key",
           "model_state_bits"]

INIT_STREAM = 2**31 - 1

def init_key(run_key):
    """The key an algorithm's ``init`` receives (disjoint from every step key
    ``fold_in(run_key, t)``)."""
    return jax.random.fold_in(run_key, INIT_STREAM)


def model_state_bits(problem: Problem) -> float:
    """Bits per worker per step of gossiped model state (its floating leaves, float32)."""
    if not problem.stateful or problem.model_state_mixing != "gossip":
        return 0.0
    leaves = [a for a in jax.tree.leaves(problem.model_state0)
              if jnp.issubdtype(jnp.asarray(a).dtype, jnp.floating)]
    return float(32 * sum(int(a[0].size) for a in leaves))


def _mix_model_state(mixer, S):
    """One gossip round of the floating leaves of the stacked model state (integer leaves, such
    as counters, stay local)."""
    return jax.tree.map(
        lambda a: mixer(a) if jnp.issubdtype(a.dtype, jnp.floating) else a, S)


def make_step(algo, problem: Problem, gplan: GossipPlan, workers="vmap"):
    """``step(hparams, carry, t, run_key, args) -> (carry, StepCost)``: one algorithm step with
    the oracle, the mixer of step t and the key ``fold_in(run_key, t)``; ``carry`` is
    ``(state, ostate)``. Shared by :func:`run` and :func:`trajectory`, so both use exactly the
    same randomness."""
    extra_bits = model_state_bits(problem)

    def step(hparams, carry, t, run_key, args):
        state, ostate = carry
        oracle = make_oracle(problem, args["data"], args["counts"], args["noise_std"],
                             state=ostate, workers=workers,
                             perm_key=jax.random.fold_in(run_key, EPOCH_STREAM))
        mixer = gplan.mixer(args["topology"], args["lam"], t)
        state, cost = algo.step(state, hparams, oracle, mixer, jax.random.fold_in(run_key, t))
        ostate = oracle.state
        if extra_bits:
            ostate = dict(ostate, model=_mix_model_state(mixer, ostate["model"]))
            cost = cost._replace(bits=cost.bits + extra_bits)
        return (state, ostate), cost

    return step


def snapshot(algo, carry):
    """What an evaluation needs of a carry: the stacked params, the stacked model state (``{}``
    without one) and the algorithm's own metrics."""
    state, ostate = carry
    extra_fn = getattr(algo, "extra_metrics", None)
    extra = extra_fn(state) if extra_fn is not None else {}
    return (algo.params(state), ostate.get("model", {}),
            {k: jnp.asarray(v, float_dtype()) for k, v in extra.items()})


def init_carry(algo, problem: Problem, run_key, args):
    """``(algo.init(params0, init_key), the oracle's initial state)``."""
    state = algo.init(args["params0"], init_key(run_key))
    return state, oracle_state(problem, args["model_state0"])


def make_init(algo, problem: Problem, constrain):
    def init(run_key, args):
        TRACE_COUNTS["init"] += 1
        return constrain(init_carry(algo, problem, run_key, args))

    return init


def make_segment(
    algo,
    problem: Problem,
    gplan: GossipPlan,
    eval_every: int,
    chunks: int,
    constrain,
    constrain_stacked,
    workers="vmap",
    timing=None,
):
    """``chunks`` chunks of ``eval_every`` steps. Returns the new state, the cost of each chunk
    (grad_evals, comm_rounds, bits and, with ``timing`` (a time model's ``static``), the simulated
    seconds of :func:`decsim.network.step_seconds`, read from ``args["time"]``) and
    ``chunks + 1`` snapshots (:func:`snapshot`, stacked): the incoming state's, then the state
    after each chunk. The metrics program evaluates them (all of them on a run's first call, the
    incoming one, evaluated by the previous call, being skipped afterwards)."""
    step = make_step(algo, problem, gplan, workers)

    def segment(hparams, state, t0, run_key, args):
        TRACE_COUNTS["segment"] += 1

        def one_step(state, t):
            state, cost = step(hparams, state, t, run_key, args)
            row = list(cost)
            if timing is not None:
                key = jax.random.fold_in(jax.random.fold_in(run_key, TIME_STREAM), t)
                row.append(step_seconds(timing, args["time"], cost, key, problem.n_workers))
            return state, jnp.stack([jnp.asarray(c, float_dtype()) for c in row])

        def chunk(state, c):
            ts = t0 + c * eval_every + jnp.arange(eval_every, dtype=jnp.int32)
            state, costs = jax.lax.scan(one_step, state, ts)
            return state, (jnp.sum(costs, axis=0), snapshot(algo, state))

        first = snapshot(algo, state)
        state, (costs, snaps) = jax.lax.scan(chunk, state, jnp.arange(chunks, dtype=jnp.int32))
        snaps = jax.tree.map(lambda s0, s: jnp.concatenate([s0[None], s]), first, snaps)
        ncost = 3 if timing is None else 4
        return constrain(state), costs.reshape(chunks, ncost), constrain_stacked(snaps)

    return segment


def problem_metrics(problem: Problem, X, S, margs):
    """The metrics of the stacked params ``X`` and model state ``S``: everything that depends on
    the problem alone (:mod:`decsim.problems.evaluate`)."""
    out = evaluate.metrics(problem, X, S, margs)
    if problem.extra_metrics is not None:
        out.update(problem.extra_metrics(X, margs["aux"]))
    return {k: jnp.asarray(v, float_dtype()) for k, v in out.items()}


def make_metrics(problem: Problem):
    """``(Xs, Ss, start, margs) -> metrics``: the problem's metrics of the snapshots ``Xs`` (params,
    leaves ``[k, n, ...]``) and ``Ss`` (model states) from index ``start`` on (entries before it
    are 0). It depends on the problem alone, so every algorithm run on one problem (with the same
    shapes) shares one compiled program; the metrics are most of the compile time of a run."""

    def metrics(Xs, Ss, start, margs):
        TRACE_COUNTS["metrics"] += 1
        k = jax.tree.leaves(Xs)[0].shape[0]

        def one(c):
            pick = lambda a: jax.lax.dynamic_index_in_dim(a, c, keepdims=False)  # noqa: E731
            return problem_metrics(problem, jax.tree.map(pick, Xs), jax.tree.map(pick, Ss), margs)

        out = jax.tree.map(lambda v: jnp.zeros((k,) + v.shape, v.dtype), jax.eval_shape(one, 0))
        body = lambda c, out: jax.tree.map(lambda o, v: o.at[c].set(v), out, one(c))  # noqa: E731
        return jax.lax.fori_loop(start, k, body, out)

    return metrics


def metrics_args(args: dict) -> dict:
    """The program arguments the metrics read (not the graph: one metrics program serves all)."""
    return {k: args[k] for k in ("data", "counts", "test", "aux", "eval_data", "eval_counts")}


def problem_key(problem: Problem) -> tuple:
    return (problem.loss_fn, problem.batch_size, problem.noise_std > 0, problem.sampling,
            problem.model_state_mixing) + metrics_key(problem)


def metrics_key(problem: Problem) -> tuple:
    """What the metrics program depends on besides shapes (not the batch size, noise or graph)."""
    return (
        problem.loss_fn,
        problem.stateful,
        evaluate.static_key(problem),
        problem.test_metrics if problem.test_data is not None else None,
        problem.extra_metrics,
    )


def algo_key(algo) -> tuple:
    """The functions a program closes over. Factories memoize them per structure, so equal
    structure gives equal keys (one program for every value of the hyperparameters)."""
    return (algo.init, algo.step, algo.params, getattr(algo, "extra_metrics", None))
