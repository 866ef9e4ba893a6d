"""Writers of tiny image files in the published formats, for tests/test_images.py.

* IDX (MNIST, Fashion-MNIST): bytes 0, 0, 0x08 (unsigned byte data), ndim; then ndim big-endian
  int32 sizes; then the data in row-major order.
* CIFAR-10 binary: records of 1 label byte followed by 3072 pixel bytes.
* CIFAR-10 python: a pickled dict with b"data" (uint8 [N, 3072]) and b"labels" (N ints);
  :func:`write_cifar_py2` writes it the way Python 2 did (the published files).
* A CIFAR row: the 1024 red values (row-major over the 32x32 image), then green, then blue.
"""

import gzip
import io
import pickle

import numpy as np


def write_idx(path, arr, *, gz=False):
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    payload = header + arr.tobytes()
    path.write_bytes(gzip.compress(payload) if gz else payload)


def cifar_row(image):
    """One [32, 32, 3] uint8 image as a CIFAR row of 3072 bytes (channel planes in turn)."""
    image = np.asarray(image, dtype=np.uint8)
    return np.concatenate([image[:, :, ch].reshape(-1) for ch in range(3)])


def write_cifar_bin(path, images, labels):
    records = [np.concatenate([[np.uint8(lab)], cifar_row(img)]) for img, lab in
               zip(images, labels)]
    path.write_bytes(np.stack(records).astype(np.uint8).tobytes())


def write_cifar_py(path, images, labels, protocol=2):
    batch = {b"batch_label": b"testing batch",
             b"labels": [int(v) for v in labels],
             b"data": np.stack([cifar_row(img) for img in images]),
             b"filenames": [f"img_{i}.png".encode() for i in range(len(labels))]}
    with open(path, "wb") as f:
        pickle.dump(batch, f, protocol=protocol)


class _Py2StylePickler(pickle._Pickler):
    """Writes ``bytes`` and ``str`` as Python 2 ``str`` opcodes (SHORT_BINSTRING / BINSTRING), as
    the pickles of the CIFAR-10 python version (made with Python 2) do; read back with
    ``encoding="bytes"`` they become ``bytes``, dtype descriptors included."""

    dispatch = pickle._Pickler.dispatch.copy()

    def _save_py2_str(self, obj):
        raw = obj.encode("latin1") if isinstance(obj, str) else obj
        if len(raw) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
        else:
            self.write(pickle.BINSTRING + len(raw).to_bytes(4, "little") + raw)
        self.memoize(obj)

    dispatch[bytes] = _save_py2_str
    dispatch[str] = _save_py2_str


def write_cifar_py2(path, images, labels):
    """A python batch as Python 2 pickled it (protocol 2, str opcodes)."""
    batch = {b"batch_label": b"testing batch", b"labels": [int(v) for v in labels],
             b"data": np.stack([cifar_row(img) for img in images])}
    buf = io.BytesIO()
    _Py2StylePickler(buf, protocol=2).dump(batch)
    # the numpy of that time named the module numpy.core.multiarray (GLOBAL opcodes are text)
    path.write_bytes(buf.getvalue().replace(b"cnumpy._core.multiarray\n",
                                            b"cnumpy.core.multiarray\n"))
