"""Host-side data loading and partitioning (numpy only, nothing downloaded).

Real data come from the sets bundled inside scikit-learn (``digits``: 1797 8x8 images, 10 classes;
``breast_cancer``: 569 samples, 30 features, 2 classes). Partitions (``partition=``):

* ``"iid"``: a random permutation split into near-equal parts;
* ``"dirichlet"``: per class, proportions over workers drawn from ``Dirichlet(alpha · 1_n)``
  (small alpha = strong label skew);
* ``"sorted"``: sorted by label and cut into contiguous parts (the unshuffled case);
* ``"shards"``: sorted by label, cut into ``n · shards_per_worker`` shards dealt at random.

Workers end up with unequal sample counts; :func:`stack` pads them to a common length and returns
the counts, so that sampling and losses never see padding.
"""

from __future__ import annotations

import numpy as np

from ._checks import closest, integer

DATASETS = ("digits", "breast_cancer")
PARTITIONS = ("iid", "dirichlet", "sorted", "shards")


def load_dataset(name: str):
    """Return ``(features float32 [m, f], labels int32 [m], n_classes)`` of a bundled data set."""
    key = str(name).replace("-", "_")
    if key not in DATASETS:
        raise ValueError(f"dataset={name!r} is not bundled; choose one of {DATASETS}."
                         f"{closest(key, DATASETS)}")
    from sklearn import datasets

    loader = datasets.load_digits if key == "digits" else datasets.load_breast_cancer
    bunch = loader()
    X = np.asarray(bunch.data, dtype=np.float32)
    y = np.asarray(bunch.target, dtype=np.int32)
    return X, y, int(y.max()) + 1


def train_test(X, y, *, test_fraction: float, seed: int):
    """Stratified split, features standardized with statistics of the training part."""
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1); got {test_fraction!r}.")
    if test_fraction == 0.0:
        Xtr, ytr, Xte, yte = X, y, X[:0], y[:0]
    else:
        Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=test_fraction, random_state=seed,
                                              stratify=y)
    scaler = StandardScaler().fit(Xtr)
    Xtr = scaler.transform(Xtr).astype(np.float32)
    Xte = scaler.transform(Xte).astype(np.float32) if len(Xte) else Xte.astype(np.float32)
    return Xtr, ytr.astype(np.int32), Xte, yte.astype(np.int32)


def partition(labels, n_workers: int, scheme: str = "iid", *, alpha: float = 0.5,
              shards_per_worker: int = 2, seed: int = 0) -> list:
    """Split sample indices among workers; returns a list of ``n_workers`` int arrays.

    Every worker receives at least one sample.
    """
    labels = np.asarray(labels)
    m = labels.shape[0]
    if scheme not in PARTITIONS:
        raise ValueError(f"partition={scheme!r} is unknown; choose one of {PARTITIONS}."
                         f"{closest(scheme, PARTITIONS)}")
    n_workers = integer("n_workers", n_workers)
    if n_workers > m:
        raise ValueError(f"n_workers={n_workers} exceeds the {m} training samples; every worker "
                         "needs at least one. Use fewer workers or a larger data set.")
    rng = np.random.default_rng(seed)
    if scheme == "iid":
        return [np.sort(p) for p in np.array_split(rng.permutation(m), n_workers)]
    order = np.argsort(labels, kind="stable")
    if scheme == "sorted":
        return list(np.array_split(order, n_workers))
    if scheme == "shards":
        shards_per_worker = integer("shards_per_worker", shards_per_worker)
        n_shards = n_workers * shards_per_worker
        if n_shards > m:
            raise ValueError(f"n_workers * shards_per_worker = {n_shards} exceeds the {m} samples; "
                             "use fewer shards per worker.")
        shards = np.array_split(order, n_shards)
        deal = rng.permutation(n_shards).reshape(n_workers, shards_per_worker)
        return [np.sort(np.concatenate([shards[s] for s in row])) for row in deal]
    # dirichlet
    if not float(alpha) > 0.0:
        raise ValueError(
            f"alpha must be positive for the dirichlet partition; got alpha={alpha!r}."
        )
    parts = [[] for _ in range(n_workers)]
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        props = rng.dirichlet(np.full(n_workers, float(alpha)))
        cuts = (np.cumsum(props)[:-1] * len(idx)).astype(np.int64)
        for w, chunk in enumerate(np.split(idx, cuts)):
            parts[w].extend(chunk.tolist())
    parts = [np.array(sorted(p), dtype=np.int64) for p in parts]
    # Guarantee a sample per worker: move one from the largest worker to each empty one.
    for w in range(n_workers):
        if parts[w].size == 0:
            big = int(np.argmax([p.size for p in parts]))
            take = rng.integers(parts[big].size)
            parts[w] = parts[big][take : take + 1]
            parts[big] = np.delete(parts[big], take)
    return parts


def stack(arrays: list, parts: list):
    """Gather each worker's rows from every array in ``arrays`` and pad to a common length.

    Returns ``(stacked, counts)``: ``stacked[k]`` has shape ``[n, m_max, ...]`` (padding rows are
    copies of the worker's first row, so they are valid inputs that are simply never used), and
    ``counts`` is int32 ``[n]``.
    """
    counts = np.array([len(p) for p in parts], dtype=np.int32)
    m_max = int(counts.max())
    out = []
    for a in arrays:
        a = np.asarray(a)
        padded = np.empty((len(parts), m_max) + a.shape[1:], dtype=a.dtype)
        for w, p in enumerate(parts):
            padded[w, : len(p)] = a[p]
            padded[w, len(p) :] = a[p[0]]
        out.append(padded)
    return out, counts


# ---------------------------------------------------------------------------------------------
# synthetic sparse categorical (click-log style) data


def zipf_weights(size: int, exponent: float) -> np.ndarray:
    """Probabilities ``p_r ∝ (r + 1)^(−exponent)`` of ranks ``r = 0 .. size−1`` (a truncated
    Zipf law: a few categories are frequent, most are rare, as in click logs)."""
    p = (np.arange(size, dtype=np.float64) + 1.0) ** (-float(exponent))
    return p / p.sum()


def category_popularity(
    n_groups: int, vocab_sizes, *, exponent: float = 1.1, skew: float = 0.0, seed: int = 0
) -> list:
    """Per-group category distributions of every field.

    Every field has a population-wide popularity ranking (a random permutation of its
    categories) with Zipf probabilities. Group ``g`` (a worker) draws categories from
    ``(1 − skew) · p_shared + skew · p_g``, where ``p_g`` uses the same Zipf probabilities over the
    group's own random ranking: ``skew = 0`` gives identical groups; ``skew = 1`` gives each group
    its own popular categories, which the other groups see rarely.

    Returns a list (one entry per field) of float64 arrays ``[n_groups, vocab_size]`` whose rows
    sum to 1.
    """
    if not 0.0 <= float(skew) <= 1.0:
        raise ValueError(
            f"skew must be in [0, 1] (0: identical workers, 1: each worker its own "
            f"popular categories); got skew={skew!r}."
        )
    if not float(exponent) > 0.0:
        raise ValueError(f"exponent must be positive (Zipf exponent, e.g. 1.1); got {exponent!r}.")
    rng = np.random.default_rng(seed)
    tables = []
    for size in vocab_sizes:
        base = zipf_weights(int(size), exponent)
        shared = base[rng.permutation(int(size))]
        own = np.stack([base[rng.permutation(int(size))] for _ in range(n_groups)])
        tables.append((1.0 - skew) * shared[None, :] + skew * own)
    return tables


def sample_categories(tables: list, owners, *, seed: int = 0) -> np.ndarray:
    """Draw one category per field for every sample: ``idx[s, f] ~ tables[f][owners[s]]``.

    Returns int32 ``[m, fields]`` of per-field category indices (0 .. vocab_size−1).
    """
    owners = np.asarray(owners)
    rng = np.random.default_rng(seed)
    out = np.empty((owners.shape[0], len(tables)), np.int32)
    for f, table in enumerate(tables):
        for g in range(table.shape[0]):  # host-side data generation, once per group
            rows = np.flatnonzero(owners == g)
            out[rows, f] = rng.choice(table.shape[1], size=rows.size, p=table[g])
    return out


def fm_scores(idx, bias, linear, embed) -> np.ndarray:
    """Factorization-machine scores ``w0 + Σ_f w[i_f] + Σ_{f<g} <v[i_f], v[i_g]>`` (numpy, float64)
    of global category indices ``idx [m, fields]``; the pairwise sum uses
    ``½ Σ_k ((Σ_f v_fk)² − Σ_f v_fk²)``."""
    e = np.asarray(embed, np.float64)[idx]  # [m, F, k]
    inter = 0.5 * np.sum(np.sum(e, axis=1) ** 2 - np.sum(e**2, axis=1), axis=1)
    return float(bias) + np.sum(np.asarray(linear, np.float64)[idx], axis=1) + inter


def synthetic_ctr(
    n_samples: int,
    vocab_sizes,
    *,
    embed_dim: int = 4,
    n_groups: int = 1,
    skew: float = 0.0,
    exponent: float = 1.1,
    signal: float = 2.0,
    base_logit: float = -1.0,
    seed: int = 0,
) -> dict:
    """CTR-style binary data from a hidden ground-truth factorization machine.

    Samples are spread evenly over ``n_groups`` groups (workers), each drawing its categorical
    fields from :func:`category_popularity` (Zipf frequencies, worker-specific with ``skew > 0``).
    The hidden model has a Gaussian weight per category and a Gaussian ``embed_dim``-dimensional
    embedding per category; its linear part and its pairwise-interaction part are each
    standardized over the generated samples and mixed with equal variance, then scaled so that the
    score has standard deviation ``signal``, and shifted by ``base_logit``. Labels are
    ``Bernoulli(sigmoid(score))``: learnable, but noisy (the Bayes log-loss is well above 0).

    Returns a dict of numpy arrays: ``idx`` int32 ``[m, fields]`` global category indices (field
    f's categories are ``offsets[f] .. offsets[f] + vocab_sizes[f] − 1``), ``y`` float32 ``[m]``
    in {0, 1}, ``owner`` int32 ``[m]`` (the group of each sample), ``score`` float64 ``[m]`` (the
    true logit), ``offsets`` int ``[fields]``, ``truth`` (``bias``, ``linear [V]``,
    ``embed [V, embed_dim]`` with ``V = sum(vocab_sizes)``: the hidden FM, whose
    :func:`fm_scores` are ``score``), and ``tables`` (the per-field popularity tables).
    """
    vocab_sizes = [int(v) for v in vocab_sizes]
    if not vocab_sizes or min(vocab_sizes) < 2:
        raise ValueError(
            f"vocab_sizes must be a non-empty list of integers >= 2; got {vocab_sizes!r}."
        )
    n_groups = integer("n_groups", n_groups)
    n_samples = integer(
        "n_samples", n_samples, min=2 * n_groups, hint="At least two samples per group."
    )
    if not float(signal) > 0.0:
        raise ValueError(f"signal must be positive (std of the true logit); got signal={signal!r}.")
    rng = np.random.default_rng(seed)
    tables = category_popularity(
        n_groups, vocab_sizes, exponent=exponent, skew=skew, seed=int(rng.integers(2**31))
    )
    owner = rng.permutation(np.arange(n_samples) % n_groups).astype(np.int32)
    local = sample_categories(tables, owner, seed=int(rng.integers(2**31)))
    offsets = np.concatenate([[0], np.cumsum(vocab_sizes)[:-1]]).astype(np.int64)
    idx = (local + offsets[None, :]).astype(np.int32)
    V = int(sum(vocab_sizes))
    linear = rng.normal(size=V)
    embed = rng.normal(size=(V, int(embed_dim)))
    lin_part = fm_scores(idx, 0.0, linear, np.zeros((V, 1)))
    int_part = fm_scores(idx, 0.0, np.zeros(V), embed)
    # Rescale the hidden model itself (not only the scores), so `truth` reproduces `score` exactly.
    a = np.sqrt(0.5) * signal / max(lin_part.std(), 1e-12)
    b = np.sqrt(0.5) * signal / max(int_part.std(), 1e-12)
    linear *= a
    embed *= np.sqrt(b)
    bias = base_logit - a * lin_part.mean() - b * int_part.mean()
    score = fm_scores(idx, bias, linear, embed)
    y = (rng.random(n_samples) < 1.0 / (1.0 + np.exp(-score))).astype(np.float32)
    return dict(
        idx=idx,
        y=y,
        owner=owner,
        score=score,
        offsets=offsets,
        truth=dict(bias=float(bias), linear=linear, embed=embed),
        tables=tables,
    )
