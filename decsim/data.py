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

DATASETS = ("digits", "breast_cancer")
PARTITIONS = ("iid", "dirichlet", "sorted", "shards")


def _closest(name, valid):
    import difflib

    close = difflib.get_close_matches(str(name), valid, n=1)
    return f" Did you mean {close[0]!r}?" if close else ""


def load_dataset(name: str):
    """Return ``(features float32 [m, f], labels int32 [m], n_classes)`` of a bundled data set."""
    key = str(name).replace("-", "_")
    if key not in DATASETS:
        raise ValueError(f"dataset={name!r} is not bundled; choose one of {DATASETS}."
                         f"{_closest(key, DATASETS)}")
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
                         f"{_closest(scheme, PARTITIONS)}")
    if isinstance(n_workers, bool) or not isinstance(n_workers, (int, np.integer)) or n_workers < 1:
        raise ValueError(f"n_workers must be an integer >= 1; got {n_workers!r}.")
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
        if isinstance(shards_per_worker, bool) or not isinstance(shards_per_worker, (int, np.integer)) \
                or shards_per_worker < 1:
            raise ValueError(f"shards_per_worker must be an integer >= 1; got {shards_per_worker!r}.")
        n_shards = n_workers * shards_per_worker
        if n_shards > m:
            raise ValueError(f"n_workers * shards_per_worker = {n_shards} exceeds the {m} samples; "
                             "use fewer shards per worker.")
        shards = np.array_split(order, n_shards)
        deal = rng.permutation(n_shards).reshape(n_workers, shards_per_worker)
        return [np.sort(np.concatenate([shards[s] for s in row])) for row in deal]
    # dirichlet
    if not float(alpha) > 0.0:
        raise ValueError(f"alpha must be positive for the dirichlet partition; got alpha={alpha!r}.")
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
            parts[w] = parts[big][take:take + 1]
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
            padded[w, :len(p)] = a[p]
            padded[w, len(p):] = a[p[0]]
        out.append(padded)
    return out, counts
