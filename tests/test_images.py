"""Tests of decsim.problems.images (file formats, splits, normalization, errors) and
decsim.problems.augment (crops and flips against numpy references).

The file tests write tiny files in every supported format into ``tmp_path`` with hand-chosen pixel
values, with writers that follow the published format descriptions (tests/_image_files.py), and
check that exactly those images and labels come back.
"""

import gzip
import pickle
import random
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from decsim import data as D
from decsim.problems import augment as A
from decsim.problems import images as I

from ._image_files import cifar_row, write_cifar_bin, write_cifar_py, write_cifar_py2, write_idx

# ---------------------------------------------------------------------------------------------
# helpers


def tiny_images(n, h, w, c, start):
    """Distinct uint8 images with hand-chosen values: pixel (i, r, col, ch) = start + i + 7r +
    3col + 101ch (mod 256)."""
    i, r, col, ch = np.meshgrid(np.arange(n), np.arange(h), np.arange(w), np.arange(c),
                                indexing="ij")
    return ((start + i + 7 * r + 3 * col + 101 * ch) % 256).astype(np.uint8)


MNIST_TRAIN = (tiny_images(3, 28, 28, 1, 0), np.array([3, 0, 9], np.uint8))
MNIST_TEST = (tiny_images(2, 28, 28, 1, 50), np.array([1, 7], np.uint8))


def write_mnist(folder, *, gz=False, dotted=False, train=MNIST_TRAIN, test=MNIST_TEST):
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, (X, y) in (("train", train), ("t10k", test)):
        for kind, arr in (("images-idx3", X[..., 0]), ("labels-idx1", y)):
            name = f"{prefix}-{kind}-ubyte".replace("-idx", ".idx" if dotted else "-idx")
            write_idx(folder / (name + (".gz" if gz else "")), arr, gz=gz)


def cifar_split(n_per_batch, start):
    """Five training batches and a test batch of hand-made 32x32x3 images and labels."""
    train = [(tiny_images(n_per_batch, 32, 32, 3, start + 10 * b),
              np.arange(b, b + n_per_batch) % 10) for b in range(5)]
    test = (tiny_images(2, 32, 32, 3, start + 200), np.array([8, 2]))
    return train, test


def write_cifar(folder, binary, train, test):
    """binary: True (the binary version), False (python, pickle protocol 2), "protocol5" or
    "py2" (as Python 2 pickled the published files)."""
    folder.mkdir(parents=True, exist_ok=True)
    if binary is True:
        write, ext = write_cifar_bin, ".bin"
    elif binary == "py2":
        write, ext = write_cifar_py2, ""
    else:
        protocol = 5 if binary == "protocol5" else 2
        ext = ""

        def write(path, X, y):
            write_cifar_py(path, X, y, protocol=protocol)

    for b, (X, y) in enumerate(train, start=1):
        write(folder / f"data_batch_{b}{ext}", X, y)
    write(folder / f"test_batch{ext}", *test)


def channel_normalize(X, reference):
    X, reference = np.asarray(X, np.float64), np.asarray(reference, np.float64)
    mean = reference.mean(axis=(0, 1, 2))
    std = reference.std(axis=(0, 1, 2))
    return (X - mean) / np.where(std > 0, std, 1.0)


# ---------------------------------------------------------------------------------------------
# IDX (MNIST, Fashion-MNIST)


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("layout", ["", "mnist", "MNIST/raw"])
def test_mnist_idx_files_round_trip(tmp_path, gz, layout):
    write_mnist(tmp_path / layout if layout else tmp_path, gz=gz)
    for split, (X, y) in (("train", MNIST_TRAIN), ("test", MNIST_TEST)):
        Xl, yl = I.load_images("mnist", data_dir=tmp_path, split=split, normalize=False)
        assert Xl.dtype == np.float32 and yl.dtype == np.int32
        assert Xl.shape == (len(y), 28, 28, 1)
        np.testing.assert_array_equal(Xl, X.astype(np.float32))
        np.testing.assert_array_equal(yl, y)
    # a hand-picked pixel: image 2, row 5, column 11 = 2 + 35 + 33
    assert I.load_images("mnist", data_dir=str(tmp_path), normalize=False)[0][2, 5, 11, 0] == 70


@pytest.mark.parametrize("layout", ["", "fashion_mnist", "fashion-mnist", "FashionMNIST/raw"])
def test_fashion_mnist_layouts(tmp_path, layout):
    write_mnist(tmp_path / layout if layout else tmp_path, gz=layout == "FashionMNIST/raw")
    X, y = I.load_images("fashion-mnist", data_dir=tmp_path, split="test", normalize=False)
    np.testing.assert_array_equal(X[..., 0], MNIST_TEST[0][..., 0])
    np.testing.assert_array_equal(y, MNIST_TEST[1])


def test_idx_dotted_names_and_raw_beside_gz(tmp_path):
    write_mnist(tmp_path, dotted=True)
    X, _ = I.load_images("mnist", data_dir=tmp_path, normalize=False)
    np.testing.assert_array_equal(X[..., 0], MNIST_TRAIN[0][..., 0])


def test_normalization_uses_training_statistics_per_channel(tmp_path):
    write_mnist(tmp_path)
    Xtr, _ = I.load_images("mnist", data_dir=tmp_path)
    Xte, _ = I.load_images("mnist", data_dir=tmp_path, split="test")
    np.testing.assert_allclose(Xtr, channel_normalize(MNIST_TRAIN[0], MNIST_TRAIN[0]), atol=1e-5)
    np.testing.assert_allclose(Xte, channel_normalize(MNIST_TEST[0], MNIST_TRAIN[0]), atol=1e-5)
    np.testing.assert_allclose(Xtr.mean(), 0.0, atol=1e-5)
    np.testing.assert_allclose(Xtr.std(), 1.0, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# CIFAR-10


@pytest.mark.parametrize("binary", [False, True, "protocol5", "py2"])
@pytest.mark.parametrize("sub", ["", "cifar-10-batches-py", "cifar-10-batches-bin"])
def test_cifar_both_formats_round_trip(tmp_path, binary, sub):
    train, test = cifar_split(2, 0)
    write_cifar(tmp_path / sub if sub else tmp_path, binary, train, test)
    X, y = I.load_images("cifar10", data_dir=tmp_path, normalize=False)
    assert X.shape == (10, 32, 32, 3) and X.dtype == np.float32 and y.dtype == np.int32
    np.testing.assert_array_equal(X, np.concatenate([t[0] for t in train]).astype(np.float32))
    np.testing.assert_array_equal(y, np.concatenate([t[1] for t in train]))
    Xt, yt = I.load_images("cifar10", data_dir=tmp_path, split="test", normalize=False)
    np.testing.assert_array_equal(Xt, test[0].astype(np.float32))
    np.testing.assert_array_equal(yt, test[1])
    # normalized: per channel with the statistics of all five training batches
    Xn, _ = I.load_images("cifar10", data_dir=tmp_path, split="test")
    np.testing.assert_allclose(Xn, channel_normalize(test[0], X), atol=1e-4)


def test_cifar_row_layout_is_channel_planes():
    """The published layout: the first 1024 bytes are the red plane row by row, then green, then
    blue; checked on single bytes of a hand-made row."""
    row = np.zeros(3072, np.uint8)
    row[0], row[1024 + 32 * 4 + 5], row[2048 + 32 * 31 + 30] = 11, 22, 33
    img = np.zeros((32, 32, 3), np.uint8)
    img[0, 0, 0], img[4, 5, 1], img[31, 30, 2] = 11, 22, 33
    np.testing.assert_array_equal(cifar_row(img), row)


def test_cifar_hand_set_pixels(tmp_path):
    train, test = cifar_split(1, 0)
    img = np.zeros((32, 32, 3), np.uint8)
    img[4, 5, 1], img[31, 30, 2] = 22, 33
    test = (img[None], np.array([6]))
    write_cifar(tmp_path, True, train, test)
    X, y = I.load_images("cifar10", data_dir=tmp_path, split="test", normalize=False)
    assert X[0, 4, 5, 1] == 22 and X[0, 31, 30, 2] == 33 and X.sum() == 55 and y[0] == 6


def test_cifar_python_refuses_foreign_pickles(tmp_path):
    train, test = cifar_split(1, 0)
    write_cifar(tmp_path, False, train, test)
    with open(tmp_path / "test_batch", "wb") as f:
        pickle.dump({b"data": Exploit(), b"labels": [0]}, f)
    with pytest.raises(ValueError, match="test_batch.*not a CIFAR-10 python batch"):
        I.load_images("cifar10", data_dir=tmp_path, split="test", normalize=False)
    assert not EXPLOITED


EXPLOITED = []


def _side_effect():
    EXPLOITED.append(1)
    return 0


class Exploit:
    def __reduce__(self):
        return (_side_effect, ())


# ---------------------------------------------------------------------------------------------
# errors


def test_missing_files_name_data_dir_files_and_source(tmp_path):
    with pytest.raises(ValueError, match="data_dir=None"):
        I.load_images("mnist")
    with pytest.raises(ValueError, match="not an existing folder"):
        I.load_images("cifar10", data_dir=tmp_path / "nope")
    with pytest.raises(ValueError) as err:
        I.load_images("mnist", data_dir=tmp_path)
    msg = str(err.value)
    assert str(tmp_path) in msg and "train-images-idx3-ubyte" in msg and "MNIST" in msg
    assert "torchvision" in msg
    with pytest.raises(ValueError, match="data_batch_1.*cs.toronto.edu"):
        I.load_images("cifar10", data_dir=tmp_path)
    # one batch missing: it is named
    train, test = cifar_split(1, 0)
    write_cifar(tmp_path / "cifar-10-batches-py", False, train, test)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(ValueError, match=r"missing .*: data_batch_3\. "):
        I.load_images("cifar10", data_dir=tmp_path)
    # but the test split alone loads without normalization (no training statistics needed)
    assert I.load_images("cifar10", data_dir=tmp_path, split="test", normalize=False)[0].shape \
        == (2, 32, 32, 3)


def test_missing_test_labels_named(tmp_path):
    write_mnist(tmp_path, gz=True)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(ValueError, match="t10k-labels-idx1-ubyte"):
        I.load_images("mnist", data_dir=tmp_path)  # normalize: reads train and test
    I.load_images("mnist", data_dir=tmp_path, normalize=False)  # train alone is fine


def test_bad_idx_files(tmp_path):
    write_mnist(tmp_path)
    images = tmp_path / "train-images-idx3-ubyte"
    labels = tmp_path / "train-labels-idx1-ubyte"
    good = images.read_bytes()
    # swapped files: wrong magic numbers
    shutil.copy(labels, images)
    with pytest.raises(ValueError, match="train-images-idx3-ubyte.*magic number 0x00000801"):
        I.load_images("mnist", data_dir=tmp_path, normalize=False)
    images.write_bytes(good[:-5])
    with pytest.raises(ValueError, match="train-images-idx3-ubyte is truncated"):
        I.load_images("mnist", data_dir=tmp_path, normalize=False)
    images.write_bytes(good + b"\0")
    with pytest.raises(ValueError, match="longer than its header"):
        I.load_images("mnist", data_dir=tmp_path, normalize=False)
    images.write_bytes(good[:6])
    with pytest.raises(ValueError, match="truncated"):
        I.load_images("mnist", data_dir=tmp_path, normalize=False)
    images.write_bytes(good)
    write_idx(labels, np.array([1, 2], np.uint8))
    with pytest.raises(ValueError, match="3 images but .*2 labels"):
        I.load_images("mnist", data_dir=tmp_path, normalize=False)
    write_idx(labels, np.array([1, 2, 10], np.uint8))
    with pytest.raises(ValueError, match="label 10"):
        I.load_images("mnist", data_dir=tmp_path, normalize=False)


def test_bad_gzip_idx(tmp_path):
    write_mnist(tmp_path, gz=True)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:30])
    with pytest.raises(ValueError, match="train-images-idx3-ubyte.gz cannot be read as gzip"):
        I.load_images("mnist", data_dir=tmp_path, normalize=False)
    path.write_bytes(b"not gzip at all")
    with pytest.raises(ValueError, match="train-images-idx3-ubyte.gz"):
        I.load_images("mnist", data_dir=tmp_path, normalize=False)


def test_bad_cifar_files(tmp_path):
    train, test = cifar_split(1, 0)
    write_cifar(tmp_path, True, train, test)
    path = tmp_path / "test_batch.bin"
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(ValueError, match="test_batch.bin is truncated.*3073"):
        I.load_images("cifar10", data_dir=tmp_path, split="test", normalize=False)
    write_cifar_bin(path, test[0], np.array([12, 0]))
    with pytest.raises(ValueError, match="test_batch.bin holds label 12"):
        I.load_images("cifar10", data_dir=tmp_path, split="test", normalize=False)
    py = tmp_path / "py"
    write_cifar(py, False, train, test)
    (py / "test_batch").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="test_batch is not a CIFAR-10 python batch"):
        I.load_images("cifar10", data_dir=py, split="test", normalize=False)
    with open(py / "test_batch", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, f)
    with pytest.raises(ValueError, match=r"uint8 \[N, 3072\].*\(2, 100\)"):
        I.load_images("cifar10", data_dir=py, split="test", normalize=False)
    with open(py / "test_batch", "wb") as f:
        pickle.dump({"something": 1}, f)
    with pytest.raises(ValueError, match="keys b'data' and b'labels'"):
        I.load_images("cifar10", data_dir=py, split="test", normalize=False)


def test_argument_errors():
    with pytest.raises(ValueError, match=r"name='cifar' .*Did you mean 'cifar10'"):
        I.load_images("cifar")
    with pytest.raises(ValueError, match="split"):
        I.load_images("digits", split="valid")
    with pytest.raises(ValueError, match="size must be an integer >= 1; got size=0"):
        I.load_images("digits", size=0)
    with pytest.raises(ValueError, match="size=5000 exceeds the 1437"):
        I.load_images("digits", size=5000)
    with pytest.raises(ValueError, match="seed"):
        I.load_images("digits", seed=-1)
    with pytest.raises(ValueError, match="normalize"):
        I.load_images("digits", normalize="yes")
    with pytest.raises(ValueError, match="mnist2"):
        I.image_shape("mnist2")


# ---------------------------------------------------------------------------------------------
# bundled and generated sets


def sorted_rows(X):
    flat = np.asarray(X).reshape(len(X), -1)
    return flat[np.lexsort(flat.T[::-1])]


def test_digits_split_shapes_and_disjointness():
    from sklearn.datasets import load_digits

    Xtr, ytr = I.load_images("digits", seed=3, normalize=False)
    Xte, yte = I.load_images("digits", split="test", seed=3, normalize=False)
    assert Xtr.shape == (1437, 8, 8, 1) and Xte.shape == (360, 8, 8, 1)
    assert Xtr.dtype == np.float32 and ytr.dtype == np.int32
    assert I.image_shape("digits") == Xtr.shape[1:]
    # train + test is exactly the bundled set (as a multiset of (image, label) rows): the
    # two splits are disjoint and cover it
    bunch = load_digits()
    both = np.concatenate([np.concatenate([Xtr.reshape(-1, 64), ytr[:, None]], 1),
                           np.concatenate([Xte.reshape(-1, 64), yte[:, None]], 1)])
    ref = np.concatenate([bunch.data, bunch.target[:, None]], 1)
    np.testing.assert_array_equal(sorted_rows(both), sorted_rows(ref))
    # stratified 20 %, the same rows as decsim.data.train_test with the same seed
    np.testing.assert_allclose(np.bincount(yte) / np.bincount(bunch.target), 0.2, atol=0.02)
    _, ytr_ref, _, yte_ref = D.train_test(bunch.data, bunch.target, test_fraction=0.2, seed=3)
    np.testing.assert_array_equal(ytr, ytr_ref)
    np.testing.assert_array_equal(yte, yte_ref)


def test_digits_determinism_and_normalization():
    a = I.load_images("digits", seed=1)
    b = I.load_images("digits", seed=1)
    c = I.load_images("digits", seed=2)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])
    raw = I.load_images("digits", seed=1, normalize=False)[0]
    np.testing.assert_allclose(a[0], channel_normalize(raw, raw), atol=1e-5)
    assert raw.min() == 0 and raw.max() == 16


def test_size_keeps_a_seeded_training_subset_and_the_first_test_examples():
    full, yfull = I.load_images("digits", seed=0, normalize=False)
    sub, ysub = I.load_images("digits", seed=0, size=50, normalize=False)
    again, _ = I.load_images("digits", seed=0, size=50, normalize=False)
    np.testing.assert_array_equal(sub, again)
    rows = {r.tobytes(): y for r, y in zip(full.reshape(len(full), -1), yfull)}
    assert all(rows[r.tobytes()] == y for r, y in zip(sub.reshape(50, -1), ysub))
    assert not np.array_equal(sub, full[:50])  # shuffled, not the first rows
    # normalization statistics are those of the whole training split, whatever the size
    np.testing.assert_allclose(I.load_images("digits", seed=0, size=50)[0],
                               channel_normalize(sub, full), atol=1e-5)
    test, _ = I.load_images("digits", split="test", seed=0, normalize=False)
    np.testing.assert_array_equal(
        I.load_images("digits", split="test", seed=0, size=7, normalize=False)[0], test[:7])


def test_mnist1d_is_generated_not_downloaded(monkeypatch):
    import mnist1d.data

    def no_download(*args, **kwargs):
        raise AssertionError("get_dataset (the downloader) was called")

    monkeypatch.setattr(mnist1d.data, "get_dataset", no_download)
    I._MNIST1D_CACHE.clear()  # generate now, whatever ran before
    np_state, py_state = np.random.get_state(), random.getstate()  # noqa: NPY002
    Xtr, ytr = I.load_images("mnist1d", normalize=False)
    # the global generators are left alone
    assert random.getstate() == py_state
    np_after = np.random.get_state()  # noqa: NPY002
    assert np_after[0] == np_state[0] and np.array_equal(np_after[1], np_state[1])
    assert np_after[2:] == np_state[2:]
    Xte, yte = I.load_images("mnist1d", split="test", normalize=False)
    assert Xtr.shape == (4000, 40, 1, 1) and Xte.shape == (1000, 40, 1, 1)
    assert I.image_shape("mnist1d") == (40, 1, 1)
    assert Xtr.dtype == np.float32 and ytr.dtype == np.int32 and set(ytr) == set(range(10))
    ref = mnist1d.data.make_dataset(mnist1d.data.get_dataset_args())
    np.testing.assert_allclose(Xtr[:, :, 0, 0], ref["x"], rtol=1e-6)
    np.testing.assert_array_equal(yte, ref["y_test"])
    # disjoint splits (continuous noise: no sample occurs twice)
    train_rows = {r.tobytes() for r in Xtr.reshape(4000, -1)}
    assert not any(r.tobytes() in train_rows for r in Xte.reshape(1000, -1))
    # deterministic, normalized with training statistics
    Xn, _ = I.load_images("mnist1d", split="test")
    np.testing.assert_allclose(Xn, channel_normalize(Xte, Xtr), atol=1e-5)
    np.testing.assert_array_equal(I.load_images("mnist1d", split="test")[0], Xn)
    a = I.load_images("mnist1d", size=10, seed=4)[0]
    np.testing.assert_array_equal(a, I.load_images("mnist1d", size=10, seed=4)[0])
    assert not np.array_equal(a, I.load_images("mnist1d", size=10, seed=5)[0])


def test_synthetic_cifar():
    X, y = I.load_images("synthetic_cifar", size=64, seed=0)
    assert X.shape == (64, 32, 32, 3) and X.dtype == np.float32 and y.dtype == np.int32
    assert set(np.unique(y)) <= set(range(10))
    np.testing.assert_array_equal(X, I.load_images("synthetic_cifar", size=64, seed=0)[0])
    assert not np.array_equal(X, I.load_images("synthetic_cifar", size=64, seed=1)[0])
    assert not np.array_equal(X, I.load_images("synthetic_cifar", size=64, split="test")[0])
    assert abs(float(X.mean())) < 0.05 and abs(float(X.std()) - 1) < 0.05
    # one signal per class: images of a class correlate with each other
    same = X[y == y[0]].reshape(-1, 3072)
    assert np.corrcoef(same[0], same[1])[0, 1] > 0.1


def test_names_and_shapes():
    assert set(I.IMAGE_DATASETS) == {"digits", "mnist1d", "mnist", "fashion_mnist", "cifar10",
                                     "synthetic_cifar"}
    assert I.image_shape("fashion_mnist") == I.image_shape("mnist") == (28, 28, 1)
    assert I.image_shape("synthetic_cifar") == I.image_shape("cifar10") == (32, 32, 3)


# ---------------------------------------------------------------------------------------------
# augmentation


def images_batch(b=6, h=5, w=7, c=2, seed=0):
    return jnp.asarray(np.random.default_rng(seed).standard_normal((b, h, w, c)), jnp.float32)


def crop_offsets(out, images, p):
    """The offset (dy, dx) of every image's crop in its zero-padded image, found by comparing
    with all (2p+1)^2 numpy crops; fails if an output is none of them."""
    out, images = np.asarray(out), np.asarray(images)
    h, w = images.shape[1:3]
    padded = np.pad(images, ((0, 0), (p, p), (p, p), (0, 0)))
    found = []
    for i in range(len(images)):
        hits = [(dy, dx) for dy in range(2 * p + 1) for dx in range(2 * p + 1)
                if np.array_equal(out[i], padded[i, dy : dy + h, dx : dx + w])]
        assert len(hits) == 1, f"image {i}: output is not one crop of the padded image"
        found.append(hits[0])
    return found


def test_crop_padding_zero_is_identity():
    x = images_batch()
    np.testing.assert_array_equal(A.random_crop(jax.random.key(0), x, padding=0), x)
    np.testing.assert_array_equal(A.augment(jax.random.key(0), x, crop_padding=0, flip=False), x)


@pytest.mark.parametrize("p", [1, 2, 4])
def test_every_crop_is_a_crop_of_the_padded_image(p):
    x = images_batch(b=40)
    out = A.random_crop(jax.random.key(p), x, padding=p)
    assert out.shape == x.shape and out.dtype == x.dtype
    offsets = crop_offsets(out, x, p)
    assert len(set(offsets)) > 1  # drawn per image


def test_crop_offsets_are_uniform():
    x = images_batch(b=450, h=3, w=3, c=1, seed=1)
    offsets = crop_offsets(A.random_crop(jax.random.key(7), x, padding=1), x, 1)
    counts = np.array([offsets.count((dy, dx)) for dy in range(3) for dx in range(3)])
    assert counts.sum() == 450 and counts.min() >= 25 and counts.max() <= 80  # mean 50


def test_flip_is_identity_or_mirror_and_its_own_inverse():
    x = images_batch(b=400, h=2, w=3, c=1)
    key = jax.random.key(11)
    out = np.asarray(A.random_flip(key, x))
    xn = np.asarray(x)
    flipped = np.array([np.array_equal(o, xi[:, ::-1]) for o, xi in zip(out, xn)])
    kept = np.array([np.array_equal(o, xi) for o, xi in zip(out, xn)])
    assert np.all(flipped ^ kept)
    assert 150 < flipped.sum() < 250
    np.testing.assert_array_equal(A.random_flip(key, A.random_flip(key, x)), x)


def test_augment_composes_crop_then_flip_and_keeps_dtype():
    x = images_batch()
    key = jax.random.key(5)
    k1, k2 = jax.random.split(key)
    np.testing.assert_array_equal(A.augment(key, x, crop_padding=2),
                                  A.random_flip(k2, A.random_crop(k1, x, padding=2)))
    np.testing.assert_array_equal(A.augment(key, x, crop_padding=0),
                                  A.random_flip(k2, x))
    xb = x.astype(jnp.bfloat16)
    assert A.augment(key, xb).dtype == jnp.bfloat16
    assert A.random_crop(jax.random.PRNGKey(0), x, 1).shape == x.shape  # raw uint32 keys too


def test_jit_equals_eager():
    x = images_batch()
    key = jax.random.key(2)
    for f in (lambda k, v: A.random_crop(k, v, 3), A.random_flip,
              lambda k, v: A.augment(k, v, crop_padding=1)):
        np.testing.assert_array_equal(jax.jit(f)(key, x), f(key, x))


def test_vmap_over_workers_uses_each_workers_key():
    xs = jnp.stack([images_batch(seed=s) for s in range(3)])
    keys = jax.random.split(jax.random.key(0), 3)
    out = jax.vmap(A.augment)(keys, xs)
    for i in range(3):
        np.testing.assert_array_equal(out[i], A.augment(keys[i], xs[i]))


def test_per_image_independence():
    """Identical images in one batch get different crops and flips (the draws are per image)."""
    x = jnp.broadcast_to(images_batch(b=1), (32, 5, 7, 2))
    out = np.asarray(A.augment(jax.random.key(9), x, crop_padding=2))
    assert len({o.tobytes() for o in out}) > 8


def test_augment_argument_errors():
    x = images_batch()
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="padding must be an integer >= 0; got padding=-1"):
        A.random_crop(key, x, padding=-1)
    with pytest.raises(ValueError, match="padding=1.5"):
        A.random_crop(key, x, padding=1.5)
    with pytest.raises(ValueError, match=r"images must be one batch \[b, H, W, C\]"):
        A.random_flip(key, x[0])
    with pytest.raises(ValueError, match="flip must be True or False"):
        A.augment(key, x, flip="yes")
    with pytest.raises(ValueError, match="key must be one PRNG key"):
        A.augment(jax.random.split(key, 2), x)
    with pytest.raises(ValueError, match="crop_padding"):
        A.augment(key, x, crop_padding=-2)


def test_gzip_helper_writes_real_gzip(tmp_path):
    """The test writer's .gz files are ordinary gzip streams (read back with the gzip module)."""
    write_idx(tmp_path / "a.gz", np.array([1, 2, 3], np.uint8), gz=True)
    raw = gzip.decompress((tmp_path / "a.gz").read_bytes())
    assert raw == bytes([0, 0, 8, 1, 0, 0, 0, 3, 1, 2, 3])
