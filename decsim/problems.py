"""Problem constructors: ``f(x) = (1/n) sum_i f_i(x)`` with worker i's data (ALGORITHMS.md §0).

Every constructor returns a :class:`decsim.Problem`. Loss functions are module-level (memoized per
static option such as the l2 weight), so problems that differ only in their data share one
compiled program in the runner.

Example:
    >>> import decsim as ds
    >>> prob = ds.problems.logistic_regression(8, dataset="digits", partition="dirichlet",
    ...                                        alpha=0.5, batch_size=32, seed=0)
    >>> prob.n_workers, bool(prob.counts.sum() > 1000)
    (8, True)
"""

from __future__ import annotations

import functools
from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.custom_derivatives import SymbolicZero

from . import data as _data
from . import tree
from ._types import Problem


def _check_workers(n_workers) -> int:
    if isinstance(n_workers, bool) or not isinstance(n_workers, (int, np.integer)) or n_workers < 1:
        raise ValueError(f"n_workers must be an integer >= 1; got n_workers={n_workers!r}.")
    return int(n_workers)


def _check_dim(dim) -> int:
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
        raise ValueError(f"dim must be an integer >= 1; got dim={dim!r}.")
    return int(dim)


def _check_batch_size(batch_size) -> Optional[int]:
    if batch_size is None:
        return None
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer or None (full local batch); got "
                         f"batch_size={batch_size!r}.")
    return int(batch_size)


# ---------------------------------------------------------------------------------------------
# quadratics and consensus


def _quadratic_loss(params, batch):
    """``mean_b ½ Σ_j a_bj (x_j − c_bj)²`` (batch leaves ``a``, ``c``: ``[b, d]``)."""
    return 0.5 * jnp.mean(jnp.sum(batch["a"] * jnp.square(params[None, :] - batch["c"]), axis=1))


def quadratic(n_workers: int, dim: int, *, mu: float = 0.1, L: float = 1.0, noise: float = 0.0,
              heterogeneity: float = 1.0, seed: int = 0) -> Problem:
    """Heterogeneous strongly convex quadratic with known optimum.

    ``f_i(x) = ½ (x − c_i)ᵀ A (x − c_i)`` with ``A = diag(linspace(mu, L, dim))`` shared by all
    workers (so f is μ-strongly convex and L-smooth, exactly), ``c_i = x* + heterogeneity · A⁻¹ e_i``
    with ``Σ_i e_i = 0`` and ``(1/n) Σ_i ||e_i||² = 1``. Hence ``x* = mean_i c_i``,
    ``∇f_i(x) − ∇f(x) = −heterogeneity · e_i`` and ``ζ² = heterogeneity²`` (for n > 1).
    Stochastic gradients add ``noise · N(0, I)``: variance ``σ² = noise²`` per coordinate.
    ``mu = L`` gives the isotropic quadratic of ALGORITHMS.md section 8.

    ``info`` holds ``x_star``, ``f_star``, ``L``, ``mu``, ``sigma2`` (per coordinate), ``zeta2``.
    """
    n = _check_workers(n_workers)
    _check_dim(dim)
    if not (mu > 0 and L >= mu):
        raise ValueError(f"need 0 < mu <= L; got mu={mu!r}, L={L!r}.")
    if noise < 0 or heterogeneity < 0:
        raise ValueError(f"noise and heterogeneity must be >= 0; got noise={noise!r}, "
                         f"heterogeneity={heterogeneity!r}.")
    rng = np.random.default_rng(seed)
    a = np.linspace(mu, L, dim)
    x_star = rng.normal(size=dim)
    e = rng.normal(size=(n, dim))
    e -= e.mean(axis=0, keepdims=True)
    if n > 1:
        e /= np.sqrt(np.mean(np.sum(e**2, axis=1)))
    else:
        e[:] = 0.0
    c = x_star[None, :] + heterogeneity * e / a[None, :]
    f_star = float(np.mean(0.5 * np.sum(a[None, :] * (x_star[None, :] - c) ** 2, axis=1)))
    zeta2 = float(np.mean(np.sum((heterogeneity * e) ** 2, axis=1)))
    data = {"a": np.broadcast_to(a, (n, 1, dim)).astype(np.float32).copy(),
            "c": c[:, None, :].astype(np.float32)}
    params0 = np.zeros((n, dim), np.float32)
    info = dict(x_star=x_star.astype(np.float32), f_star=f_star, L=float(L), mu=float(mu),
                sigma2=float(noise) ** 2, zeta2=zeta2, dim=int(dim))
    return Problem(name=f"quadratic(d={dim})", n_workers=n, params0=params0, data=data,
                   counts=np.ones(n, np.int32), loss_fn=_quadratic_loss, batch_size=None,
                   noise_std=float(noise), info=info)


def _consensus_metrics(X, aux):
    return {"consensus_error": jnp.mean(tree.worker_sq_norms(X - aux[None, :]))}


def consensus(n_workers: int, dim: int, *, seed: int = 0) -> Problem:
    """Average consensus: worker i starts at its own ``a_i ~ N(0, I)``; ``f_i(x) = ½||x − a_i||²``.

    The target is ``x̄_0 = mean_i a_i``; the metric ``consensus_error`` is
    ``(1/n) Σ_i ||x_i − x̄_0||²``. Gossip-only algorithms never call the gradient oracle.
    """
    n = _check_workers(n_workers)
    _check_dim(dim)
    rng = np.random.default_rng(seed)
    a0 = rng.normal(size=(n, dim)).astype(np.float32)
    data = {"a": np.ones((n, 1, dim), np.float32), "c": a0[:, None, :].copy()}
    mean = a0.mean(axis=0)
    info = dict(x_star=mean, f_star=float(np.mean(0.5 * np.sum((a0 - mean) ** 2, axis=1))),
                L=1.0, mu=1.0, sigma2=0.0, dim=int(dim))
    return Problem(name=f"consensus(d={dim})", n_workers=n, params0=a0, data=data,
                   counts=np.ones(n, np.int32), loss_fn=_quadratic_loss, batch_size=None,
                   extra_metrics=_consensus_metrics, aux=mean, info=info)


# ---------------------------------------------------------------------------------------------
# classification on bundled real data


@jax.custom_jvp
def dense(x, w):
    """``x @ w`` for ``x [..., b, i]`` and ``w [i, o]``, with a weight gradient XLA:CPU runs fast.

    The value and every derivative are those of ``x @ w`` (the tangent rule is the product
    rule; forward mode, reverse mode and Hessians all work). The difference is the layout of the
    weight gradient ``xᵀ @ g``: plain autodiff hands XLA a dot that contracts the *batch* axis of
    ``x``, which XLA:CPU's fast matmul library does not take, so under the runner's per-worker
    ``vmap`` it falls back to a slow generic loop. Here ``xᵀ`` is materialized first (behind an
    optimization barrier, so XLA cannot fold the transpose back into the dot), which makes every
    dot of the backward pass a standard row-major matmul: about 1.25x faster per-worker gradients
    for the bundled MLP (``benchmarks/vs_loop.py``). Use it in custom models the same way.
    """
    return x @ w


def _dense_jvp(primals, tangents):
    x, w = primals
    dx, dw = tangents
    out = x @ w
    terms = []
    if not isinstance(dx, SymbolicZero):
        terms.append(dx @ w)
    if not isinstance(dw, SymbolicZero):
        # x, transposed into memory and back: the same values, but transposing this linear map
        # (reverse mode) gives dot(materialized xᵀ, g), which contracts xᵀ's minor axis.
        x_t = x if x.ndim < 2 else jnp.swapaxes(
            jax.lax.optimization_barrier(jnp.swapaxes(x, -1, -2)), -1, -2)
        terms.append(x_t @ dw)
    tangent = functools.reduce(jnp.add, terms) if terms else jnp.zeros_like(out)
    return out, tangent


dense.defjvp(_dense_jvp, symbolic_zeros=True)


def _linear_logits(params, x):
    return dense(x, params["w"]) + params["b"][None, :]


def _mlp_logits(activation: str, params, x):
    act = {"tanh": jnp.tanh, "relu": jax.nn.relu}[activation]
    h = x
    for layer in params[:-1]:
        h = act(dense(h, layer["w"]) + layer["b"][None, :])
    return dense(h, params[-1]["w"]) + params[-1]["b"][None, :]


def _xent(logits, y):
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1))


def _weight_sq_norm(params):
    return sum(jnp.sum(jnp.square(leaf)) for path, leaf in
               jax.tree_util.tree_flatten_with_path(params)[0] if "w" in jax.tree_util.keystr(path))


@functools.lru_cache(maxsize=None)
def _classifier_fns(model: str, l2: float):
    """(loss_fn, test_metrics) for a model ("linear" or "mlp:<activation>") and l2 weight.
    Memoized so that equal options give the same function objects (one compiled program)."""
    logits_fn = _linear_logits if model == "linear" else functools.partial(_mlp_logits, model[4:])

    def loss_fn(params, batch):
        data_loss = _xent(logits_fn(params, batch["x"]), batch["y"])
        return data_loss + 0.5 * l2 * _weight_sq_norm(params) if l2 else data_loss

    def test_metrics(params, test):
        logits = logits_fn(params, test["x"])
        return {"test_loss": _xent(logits, test["y"]),
                "test_accuracy": jnp.mean((jnp.argmax(logits, axis=1) == test["y"]).astype(jnp.float32))}

    return loss_fn, test_metrics


def _classification(name, n, dataset, partition, alpha, shards_per_worker, batch_size, test_fraction,
                    seed, model, l2, params0):
    X, y, _ = _data.load_dataset(dataset)
    Xtr, ytr, Xte, yte = _data.train_test(X, y, test_fraction=test_fraction, seed=seed)
    parts = _data.partition(ytr, n, partition, alpha=alpha, shards_per_worker=shards_per_worker,
                            seed=seed)
    (xs, ys), counts = _data.stack([Xtr, ytr], parts)
    loss_fn, test_metrics = _classifier_fns(model, float(l2))
    test = {"x": Xte, "y": yte} if len(yte) else None
    stacked0 = jax.tree.map(lambda a: np.broadcast_to(a[None], (n,) + a.shape).copy(), params0)
    label_hist = np.stack([np.bincount(ys[w, :counts[w]], minlength=int(y.max()) + 1)
                           for w in range(n)])
    info = dict(dataset=dataset, partition=partition, n_train=int(len(ytr)), n_test=int(len(yte)),
                n_features=int(X.shape[1]), n_classes=int(y.max()) + 1, l2=float(l2),
                label_counts=label_hist)
    return Problem(name=name, n_workers=n, params0=stacked0, data={"x": xs, "y": ys}, counts=counts,
                   loss_fn=loss_fn, batch_size=_check_batch_size(batch_size), test_data=test,
                   test_metrics=test_metrics if test is not None else None, info=info)


def logistic_regression(n_workers: int, dataset: str = "digits", *, partition: str = "iid",
                        alpha: float = 0.5, shards_per_worker: int = 2, batch_size: Optional[int] = 32,
                        l2: float = 1e-4, test_fraction: float = 0.2, seed: int = 0) -> Problem:
    """Multinomial (softmax) logistic regression on a bundled scikit-learn data set.

    ``f_i(w, b) = mean over worker i's samples of cross-entropy + (l2/2) ||w||²``.
    Features are standardized on the training split; ``test_fraction`` of the data (stratified)
    is held out for ``test_loss`` and ``test_accuracy``. Parameters start at zero.

    Args:
      n_workers: number of workers.
      dataset: ``"digits"`` (64 features, 10 classes) or ``"breast_cancer"`` (30 features, 2 classes).
      partition: ``"iid"``, ``"dirichlet"`` (with ``alpha``), ``"sorted"``, ``"shards"``.
      batch_size: samples per stochastic gradient per worker; ``None`` for full local gradients.
      l2: weight of the ridge penalty on ``w``.
    """
    n = _check_workers(n_workers)
    X, y, n_classes = _data.load_dataset(dataset)
    params0 = {"w": np.zeros((X.shape[1], n_classes), np.float32), "b": np.zeros(n_classes, np.float32)}
    return _classification(f"logistic_regression/{dataset}", n, dataset, partition, alpha,
                           shards_per_worker, batch_size, test_fraction, seed, "linear", l2, params0)


def mlp(n_workers: int, dataset: str = "digits", *, hidden: Sequence[int] = (32,),
        activation: str = "tanh", partition: str = "iid", alpha: float = 0.5,
        shards_per_worker: int = 2, batch_size: Optional[int] = 32, l2: float = 0.0,
        test_fraction: float = 0.2, seed: int = 0) -> Problem:
    """A multilayer perceptron classifier on a bundled data set (same data handling as
    :func:`logistic_regression`). Weights start Glorot-uniform from ``seed`` (the same on every
    worker), biases at zero.
    """
    n = _check_workers(n_workers)
    if activation not in ("tanh", "relu"):
        raise ValueError(f"activation must be 'tanh' or 'relu'; got {activation!r}.")
    hidden = tuple(int(h) for h in hidden)
    if any(h < 1 for h in hidden):
        raise ValueError(f"hidden sizes must be positive integers; got {hidden!r}.")
    X, y, n_classes = _data.load_dataset(dataset)
    rng = np.random.default_rng(seed + 7919)
    sizes = (X.shape[1],) + hidden + (n_classes,)
    params0 = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        bound = np.sqrt(6.0 / (fan_in + fan_out))
        params0.append({"w": rng.uniform(-bound, bound, (fan_in, fan_out)).astype(np.float32),
                        "b": np.zeros(fan_out, np.float32)})
    return _classification(f"mlp{list(hidden)}/{dataset}", n, dataset, partition, alpha,
                           shards_per_worker, batch_size, test_fraction, seed, f"mlp:{activation}", l2,
                           params0)


# ---------------------------------------------------------------------------------------------
# custom


def custom(loss_fn: Callable, params0, worker_data, *, batch_size: Optional[int] = None,
           test_data=None, counts=None, test_metrics: Optional[Callable] = None,
           name: str = "custom") -> Problem:
    """Any JAX loss on any per-worker data.

    Args:
      loss_fn: ``loss_fn(params, batch) -> scalar``, the *mean* loss over a batch whose leaves are
        ``[b, ...]`` (it must be a mean of per-example terms, plus any data-independent penalty).
      params0: initial parameters of one model (the same on every worker).
      worker_data: pytree with leaves ``[n_workers, m, ...]``.
      batch_size: samples per stochastic gradient per worker; ``None``: every gradient is the full
        local batch (deterministic).
      test_data: optional pytree with leaves ``[m_test, ...]``; ``test_loss`` is reported.
      counts: optional int ``[n_workers]``, valid rows per worker (rows past it are padding).
      test_metrics: optional ``(params, test_data) -> dict``; default ``{"test_loss": loss_fn}``.
    """
    leaves = jax.tree.leaves(worker_data)
    if not leaves:
        raise ValueError("worker_data must be a pytree with at least one array leaf [n_workers, m, ...].")
    shapes = {np.shape(a)[:2] for a in leaves}
    if any(np.ndim(a) < 2 for a in leaves) or len(shapes) != 1:
        raise ValueError("every leaf of worker_data must have shape [n_workers, m, ...] with the same "
                         f"n_workers and m; got leading shapes {sorted(shapes)}.")
    n, m = shapes.pop()
    if counts is None:
        counts = np.full(n, m, np.int32)
    raw = np.asarray(counts)
    if raw.shape != (n,) or not np.all(np.mod(raw, 1) == 0):
        raise ValueError(f"counts must be {n} whole numbers in [1, {m}]; got {counts!r}.")
    counts = raw.astype(np.int32)
    if counts.min() < 1 or counts.max() > m:
        raise ValueError(f"counts must be {n} whole numbers in [1, {m}]; got {counts!r}.")
    if test_data is not None and test_metrics is None:
        test_metrics = _default_test_metrics(loss_fn)
    params0 = jax.tree.map(np.asarray, params0)
    stacked0 = jax.tree.map(lambda a: np.broadcast_to(a[None], (n,) + a.shape).copy(), params0)
    return Problem(name=name, n_workers=int(n), params0=stacked0,
                   data=jax.tree.map(np.asarray, worker_data), counts=counts, loss_fn=loss_fn,
                   batch_size=_check_batch_size(batch_size), test_data=test_data,
                   test_metrics=test_metrics, info={})


@functools.lru_cache(maxsize=None)
def _default_test_metrics(loss_fn):
    def test_metrics(params, test):
        return {"test_loss": loss_fn(params, test)}

    return test_metrics


# ---------------------------------------------------------------------------------------------
# reference optimum


def full_loss(problem: Problem) -> Callable:
    """``f(x) = (1/n) Σ_i f_i(x)`` for one (unstacked) model, as a jittable function of x."""
    from .runner import _full_objective

    data = jax.tree.map(jnp.asarray, problem.data)
    counts = jnp.asarray(problem.counts)
    objective = _full_objective(problem)
    return lambda x: objective(x, data, counts)


def optimum(problem: Problem, *, max_steps: int = 5000, tol: float = 1e-9):
    """Minimize the full objective with L-BFGS (scipy's L-BFGS-B on the jitted value and
    gradient of f, in float64 on the host) from the initial point.

    Returns ``(x_star, f_star)`` (numpy pytree, float). For convex problems this is the reference
    for suboptimality ``f(x̄) − f*``; for non-convex ones, a local minimum. It stops after
    ``max_steps`` iterations, when the largest gradient entry falls below ``tol``, or when the
    line search cannot improve f any more at float32 resolution (the usual end on real data).

    Only ``value_and_grad`` of f is compiled (well under a second), not an optimizer loop.
    """
    from jax.flatten_util import ravel_pytree
    from scipy.optimize import minimize

    f = full_loss(problem)
    x0 = jax.tree.map(lambda a: jnp.asarray(a[0]), problem.params0)
    flat0, unravel = ravel_pytree(x0)
    value_and_grad = jax.jit(jax.value_and_grad(lambda v: f(unravel(v))))

    def fun(v):
        value, grad = value_and_grad(jnp.asarray(v, flat0.dtype))
        return float(value), np.asarray(grad, np.float64)

    res = minimize(fun, np.asarray(flat0, np.float64), jac=True, method="L-BFGS-B",
                   options={"maxiter": int(max_steps), "ftol": 0.0, "gtol": float(tol)})
    flat = jnp.asarray(res.x, flat0.dtype)
    return tree.to_numpy(unravel(flat)), float(value_and_grad(flat)[0])


# ---------------------------------------------------------------------------------------------
# factorization machines on sparse categorical data


def _fm_score(params, idx):
    """FM score (plus DeepFM's MLP when ``params`` has one) of global category indices
    ``idx`` int32 ``[b, F]``: ``w0 + Σ_f w[i_f] + ½ Σ_k ((Σ_f v_fk)² − Σ_f v_fk²)`` (+ MLP of the
    concatenated embeddings). Embeddings are gathered by index (no one-hot matmul)."""
    emb = params["embed"][idx]  # [b, F, k]
    summed = jnp.sum(emb, axis=1)  # [b, k]
    inter = 0.5 * jnp.sum(jnp.square(summed) - jnp.sum(jnp.square(emb), axis=1), axis=1)
    score = params["bias"] + jnp.sum(params["linear"][idx], axis=1) + inter
    if "mlp" in params:
        h = emb.reshape(emb.shape[0], -1)
        for layer in params["mlp"][:-1]:
            h = jax.nn.relu(dense(h, layer["w"]) + layer["b"][None, :])
        last = params["mlp"][-1]
        score = score + (dense(h, last["w"]) + last["b"][None, :])[:, 0]
    return score


def _log_loss(score, y):
    """Mean logistic loss of logits ``score`` and labels ``y`` in {0, 1}, computed stably."""
    return jnp.mean(jax.nn.softplus(score) - y * score)


def auc(scores, labels):
    """Area under the ROC curve, rank-based (Mann–Whitney), in JAX; ties get average ranks.

    ``AUC = (Σ_{positives} rank − n₊(n₊+1)/2) / (n₊ n₋)``, with ranks 1..m of ``scores`` and tied
    scores sharing the mean of their ranks (so a constant predictor scores exactly 0.5). NaN when
    one class is absent.

    Example:
        >>> import jax.numpy as jnp
        >>> float(auc(jnp.array([0.1, 0.4, 0.35, 0.8]), jnp.array([0.0, 0.0, 1.0, 1.0])))
        0.75
    """
    scores = jnp.asarray(scores)
    s = jnp.sort(scores)
    lo = jnp.searchsorted(s, scores, side="left")
    hi = jnp.searchsorted(s, scores, side="right")
    m = scores.shape[0]
    # mean of the 1-based ranks lo+1 .. hi, centred on (m+1)/2 (keeps float32 sums small):
    # AUC = 0.5 + mean over positives of (rank − (m+1)/2), divided by n₋
    centred = 0.5 * (lo + hi - m).astype(jnp.float32)
    pos = jnp.asarray(labels) > 0.5
    n_pos = jnp.sum(pos).astype(jnp.float32)
    n_neg = jnp.float32(m) - n_pos
    return 0.5 + jnp.sum(jnp.where(pos, centred, jnp.zeros_like(centred))) / (n_pos * n_neg)


def _fm_penalty(params):
    """``||θ||²`` of everything but the global bias and the MLP biases."""
    total = jnp.sum(jnp.square(params["linear"])) + jnp.sum(jnp.square(params["embed"]))
    for layer in params.get("mlp", ()):
        total = total + jnp.sum(jnp.square(layer["w"]))
    return total


@functools.lru_cache(maxsize=None)
def _fm_fns(l2: float):
    """(loss_fn, test_metrics) of the FM / DeepFM model (the pytree says which); memoized so that
    equal options share one compiled program."""

    def loss_fn(params, batch):
        data_loss = _log_loss(_fm_score(params, batch["idx"]), batch["y"])
        return data_loss + 0.5 * l2 * _fm_penalty(params) if l2 else data_loss

    def test_metrics(params, test):
        score = _fm_score(params, test["idx"])
        y = test["y"]
        return {"test_loss": _log_loss(score, y), "test_auc": auc(score, y),
                "test_accuracy": jnp.mean(((score > 0.0) == (y > 0.5)).astype(jnp.float32))}

    return loss_fn, test_metrics


FM_PARTITIONS = ("iid", "skewed")


def factorization_machine(n_workers: int, *, fields: int = 8, vocab_sizes=None, embed_dim: int = 4,
                          deep: bool = False, hidden: Sequence[int] = (16,), partition: str = "iid",
                          skew: float = 1.0, exponent: float = 1.1, n_samples: int = 20000,
                          test_fraction: float = 0.25, batch_size: Optional[int] = 32,
                          l2: float = 0.0, signal: float = 2.0, init_scale: float = 0.01,
                          seed: int = 0) -> Problem:
    """Click-through-rate prediction with a factorization machine (or DeepFM) on synthetic sparse
    categorical data (:func:`decsim.data.synthetic_ctr`).

    Every sample has ``fields`` categorical fields; field f takes one of ``vocab_sizes[f]``
    categories with power-law (Zipf, ``exponent``) frequencies, so most categories are rare. The
    label is ``Bernoulli(sigmoid(s))`` with ``s`` the score of a hidden ground-truth FM of the same
    embedding size (standard deviation ``signal``, mean −1: about a third of the labels are 1).

    The model (Rendle 2010) is ``s(x) = w0 + Σ_f w[i_f] + Σ_{f<g} <v[i_f], v[i_g]>`` with the
    pairwise sum computed in ``O(k F)`` as ``½ Σ_k ((Σ_f v_fk)² − Σ_f v_fk²)``; the one-hot
    fields are index lookups into the ``[V, k]`` embedding table (``V = sum(vocab_sizes)``), never
    a dense one-hot product. ``deep=True`` gives DeepFM (Guo et al. 2017): the FM score plus a
    ReLU MLP (``hidden`` sizes) of the concatenated field embeddings, which it shares with the FM.
    Loss: mean logistic loss ``+ (l2/2)(||w||² + ||v||² + ||MLP weights||²)``.

    Heterogeneity (``partition``): ``"iid"``: every worker draws from the same distribution;
    ``"skewed"``: each worker draws its fields from its own popularity ranking, mixed with the
    shared one by ``skew`` (``1``: fully worker-specific), so categories popular at one worker are
    rare at the others and the workers' gradients differ in scale coordinate by coordinate, the
    regime that per-coordinate adaptive methods are for. The label model is the same everywhere
    (covariate shift only). The test split
    (``test_fraction`` of every worker's samples) is the equal-weight mixture of all workers'
    distributions, matching ``f = (1/n) Σ_i f_i``.

    Parameters start at zero except the embeddings, ``N(0, init_scale²)`` (and Glorot-uniform MLP
    weights), the same on every worker. Data: ``{"idx": int32 [n, m, fields] global category
    indices, "y": float32 [n, m] labels}`` padded per worker (``counts``). Test metrics:
    ``test_loss`` (log-loss), ``test_auc`` (:func:`auc`), ``test_accuracy`` (threshold 0.5).
    ``info`` holds ``bayes_test_loss`` and ``bayes_test_auc`` (the hidden model's own test
    metrics: the best any model can do), ``positive_rate``, ``vocab_sizes``, ``offsets``,
    ``category_counts`` (``[n, V]``, training occurrences of every category at every worker),
    ``rare_fraction`` (share of categories seen fewer than 5 times in the training data) and the
    hidden model ``truth``.

    Example:
        >>> import decsim as ds
        >>> prob = ds.problems.factorization_machine(4, partition="skewed", n_samples=2000, seed=0)
        >>> prob.data["idx"].shape[0], prob.data["idx"].shape[2], str(prob.data["idx"].dtype)
        (4, 8, 'int32')
        >>> hist = ds.run(ds.algorithms.dsgd(0.5), prob, ds.topology.ring(4), steps=200)
        >>> bool(hist.metrics["test_auc"][-1] > 0.6)
        True
    """
    n = _check_workers(n_workers)
    if isinstance(fields, bool) or not isinstance(fields, (int, np.integer)) or fields < 2:
        raise ValueError(f"fields must be an integer >= 2 (an FM needs pairs of fields); got "
                         f"fields={fields!r}.")
    if vocab_sizes is None:
        vocab_sizes = tuple(int(round(v)) for v in np.geomspace(8, 320, int(fields)))
    elif isinstance(vocab_sizes, (int, np.integer)) and not isinstance(vocab_sizes, bool):
        vocab_sizes = (int(vocab_sizes),) * int(fields)
    vocab_sizes = tuple(vocab_sizes)
    if len(vocab_sizes) != fields or any(isinstance(v, bool) or not isinstance(v, (int, np.integer))
                                         or v < 2 for v in vocab_sizes):
        raise ValueError(f"vocab_sizes must be one integer >= 2 or {fields} of them (one per "
                         f"field); got vocab_sizes={vocab_sizes!r}.")
    vocab_sizes = tuple(int(v) for v in vocab_sizes)
    if isinstance(embed_dim, bool) or not isinstance(embed_dim, (int, np.integer)) or embed_dim < 1:
        raise ValueError(f"embed_dim must be an integer >= 1; got embed_dim={embed_dim!r}.")
    if partition not in FM_PARTITIONS:
        raise ValueError(f"partition={partition!r} is unknown for factorization_machine; choose one "
                         f"of {FM_PARTITIONS}.{_data._closest(partition, FM_PARTITIONS)}")
    if not 0.0 < float(test_fraction) < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1) (AUC needs a test split); got "
                         f"test_fraction={test_fraction!r}.")
    if isinstance(n_samples, bool) or not isinstance(n_samples, (int, np.integer)) or \
            n_samples * (1.0 - test_fraction) < 2 * n:
        raise ValueError(f"n_samples must be an integer large enough to leave every worker at least "
                         f"2 training samples after the test split; got n_samples={n_samples!r} "
                         f"for n_workers={n}, test_fraction={test_fraction}.")
    if not float(l2) >= 0.0:
        raise ValueError(f"l2 must be >= 0; got l2={l2!r}.")
    if not float(init_scale) > 0.0:
        raise ValueError(f"init_scale must be positive (an FM started at zero embeddings never "
                         f"learns interactions); got init_scale={init_scale!r}.")
    hidden = tuple(int(h) for h in hidden)
    if deep and (not hidden or min(hidden) < 1):
        raise ValueError(f"hidden must be positive layer sizes for deep=True; got {hidden!r}.")

    skew_used = float(skew) if partition == "skewed" else 0.0
    gen = _data.synthetic_ctr(int(n_samples), vocab_sizes, embed_dim=int(embed_dim), n_groups=n,
                              skew=skew_used, exponent=exponent, signal=signal, seed=seed)
    # Test split stratified by worker (the same share of every worker's samples), so the test set
    # is the equal-weight mixture of the workers' distributions and, when n divides n_samples,
    # every worker keeps the same number of training samples.
    rng = np.random.default_rng(seed + 104729)
    owner = gen["owner"]
    is_test = np.zeros(int(n_samples), bool)
    for w in range(n):
        mine = np.flatnonzero(owner == w)
        is_test[rng.choice(mine, size=int(round(test_fraction * mine.size)), replace=False)] = True
    parts = [np.flatnonzero((owner == w) & ~is_test) for w in range(n)]
    if min(p.size for p in parts) < 1:
        raise ValueError("a worker received no training sample; increase n_samples or lower "
                         "test_fraction.")
    (idx, y), counts = _data.stack([gen["idx"], gen["y"]], parts)
    test = {"idx": gen["idx"][is_test], "y": gen["y"][is_test]}
    if test["y"].min() == test["y"].max():
        raise ValueError("the test split holds a single class, so AUC is undefined; increase "
                         "n_samples or test_fraction.")

    V = int(sum(vocab_sizes))
    prng = np.random.default_rng(seed + 7919)
    params0 = {"bias": np.zeros((), np.float32), "linear": np.zeros(V, np.float32),
               "embed": (init_scale * prng.normal(size=(V, int(embed_dim)))).astype(np.float32)}
    if deep:
        sizes = (int(fields) * int(embed_dim),) + hidden + (1,)
        layers = []
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            bound = np.sqrt(6.0 / (fan_in + fan_out))
            layers.append({"w": prng.uniform(-bound, bound, (fan_in, fan_out)).astype(np.float32),
                           "b": np.zeros(fan_out, np.float32)})
        params0["mlp"] = layers
    stacked0 = jax.tree.map(lambda a: np.broadcast_to(a[None], (n,) + a.shape).copy(), params0)
    loss_fn, test_metrics = _fm_fns(float(l2))

    bayes = gen["score"][is_test]
    yt = test["y"].astype(np.float64)
    bayes_loss = float(np.mean(np.logaddexp(0.0, bayes) - yt * bayes))
    category_counts = np.stack([np.bincount(idx[w, :counts[w]].ravel(), minlength=V) for w in range(n)])
    info = dict(partition=partition, skew=skew_used, exponent=float(exponent), fields=int(fields),
                vocab_sizes=vocab_sizes, offsets=gen["offsets"], embed_dim=int(embed_dim),
                deep=bool(deep), n_train=int(counts.sum()), n_test=int(is_test.sum()), l2=float(l2),
                positive_rate=float(gen["y"].mean()), bayes_test_loss=bayes_loss,
                bayes_test_auc=float(auc(jnp.asarray(bayes, jnp.float32), jnp.asarray(test["y"]))),
                category_counts=category_counts,
                rare_fraction=float(np.mean(category_counts.sum(0) < 5)), truth=gen["truth"])
    name = f"{'deepfm' if deep else 'fm'}(F={fields}, V={V}, k={embed_dim})/{partition}"
    return Problem(name=name, n_workers=n, params0=stacked0, data={"idx": idx, "y": y},
                   counts=counts, loss_fn=loss_fn, batch_size=_check_batch_size(batch_size),
                   test_data=test, test_metrics=test_metrics, info=info)
