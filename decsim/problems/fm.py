"""Factorization machines (FM, DeepFM) on synthetic sparse categorical (CTR-like) data."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from .. import data as _data
from .._checks import closest
from .._types import Evaluation, Problem
from ._common import batch_size as check_batch_size
from ._common import workers as check_workers
from .classification import dense

__all__ = ["factorization_machine", "auc"]


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


@functools.cache
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
                          test_fraction: float = 0.25, batch_size: int | None = 32,
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
    n = check_workers(n_workers)
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
        raise ValueError(
            f"partition={partition!r} is unknown for factorization_machine; choose one "
            f"of {FM_PARTITIONS}.{closest(partition, FM_PARTITIONS)}"
        )
    if not 0.0 < float(test_fraction) < 1.0:
        raise ValueError(
            f"test_fraction must be in (0, 1) (AUC needs a test split); got "
            f"test_fraction={test_fraction!r}."
        )
    if (
        isinstance(n_samples, bool)
        or not isinstance(n_samples, (int, np.integer))
        or n_samples * (1.0 - test_fraction) < 2 * n
    ):
        raise ValueError(
            f"n_samples must be an integer large enough to leave every worker at least "
            f"2 training samples after the test split; got n_samples={n_samples!r} "
            f"for n_workers={n}, test_fraction={test_fraction}."
        )
    if not float(l2) >= 0.0:
        raise ValueError(f"l2 must be >= 0; got l2={l2!r}.")
    if not float(init_scale) > 0.0:
        raise ValueError(
            f"init_scale must be positive (an FM started at zero embeddings never "
            f"learns interactions); got init_scale={init_scale!r}."
        )
    hidden = tuple(int(h) for h in hidden)
    if deep and (not hidden or min(hidden) < 1):
        raise ValueError(f"hidden must be positive layer sizes for deep=True; got {hidden!r}.")

    skew_used = float(skew) if partition == "skewed" else 0.0
    gen = _data.synthetic_ctr(
        int(n_samples),
        vocab_sizes,
        embed_dim=int(embed_dim),
        n_groups=n,
        skew=skew_used,
        exponent=exponent,
        signal=signal,
        seed=seed,
    )
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
        raise ValueError(
            "a worker received no training sample; increase n_samples or lower test_fraction."
        )
    (idx, y), counts = _data.stack([gen["idx"], gen["y"]], parts)
    test = {"idx": gen["idx"][is_test], "y": gen["y"][is_test]}
    if test["y"].min() == test["y"].max():
        raise ValueError(
            "the test split holds a single class, so AUC is undefined; increase "
            "n_samples or test_fraction."
        )

    V = int(sum(vocab_sizes))
    prng = np.random.default_rng(seed + 7919)
    params0 = {
        "bias": np.zeros((), np.float32),
        "linear": np.zeros(V, np.float32),
        "embed": (init_scale * prng.normal(size=(V, int(embed_dim)))).astype(np.float32),
    }
    if deep:
        sizes = (int(fields) * int(embed_dim),) + hidden + (1,)
        layers = []
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            bound = np.sqrt(6.0 / (fan_in + fan_out))
            layers.append(
                {
                    "w": prng.uniform(-bound, bound, (fan_in, fan_out)).astype(np.float32),
                    "b": np.zeros(fan_out, np.float32),
                }
            )
        params0["mlp"] = layers
    stacked0 = jax.tree.map(lambda a: np.broadcast_to(a[None], (n,) + a.shape).copy(), params0)
    loss_fn, test_metrics = _fm_fns(float(l2))

    bayes = gen["score"][is_test]
    yt = test["y"].astype(np.float64)
    bayes_loss = float(np.mean(np.logaddexp(0.0, bayes) - yt * bayes))
    category_counts = np.stack(
        [np.bincount(idx[w, : counts[w]].ravel(), minlength=V) for w in range(n)]
    )
    info = dict(
        partition=partition,
        skew=skew_used,
        exponent=float(exponent),
        fields=int(fields),
        vocab_sizes=vocab_sizes,
        offsets=gen["offsets"],
        embed_dim=int(embed_dim),
        deep=bool(deep),
        n_train=int(counts.sum()),
        n_test=int(is_test.sum()),
        l2=float(l2),
        positive_rate=float(gen["y"].mean()),
        bayes_test_loss=bayes_loss,
        bayes_test_auc=float(auc(jnp.asarray(bayes, jnp.float32), jnp.asarray(test["y"]))),
        category_counts=category_counts,
        rare_fraction=float(np.mean(category_counts.sum(0) < 5)),
        truth=gen["truth"],
    )
    name = f"{'deepfm' if deep else 'fm'}(F={fields}, V={V}, k={embed_dim})/{partition}"
    return Problem(
        name=name,
        n_workers=n,
        params0=stacked0,
        data={"idx": idx, "y": y},
        counts=counts,
        loss_fn=loss_fn,
        batch_size=check_batch_size(batch_size),
        test_data=test,
        test_metrics=test_metrics,
        info=info,
        evaluation=Evaluation(batch_size=None),  # AUC is not a mean over chunks: one piece
    )
