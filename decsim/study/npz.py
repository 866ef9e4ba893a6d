"""The checks of a run's untrusted NPZ file, all done before any array is read.

The NPZ holds the evaluation ``steps``, one ``metric/<name>`` array per metric and, with
``save_params``, the final parameters (``param/<path>``); no pickle. :func:`read_npz` checks
its zip directory (at most :data:`~decsim.study.records.MAX_MEMBERS` members), that every
member is an ``.npy`` array of the format whose declared uncompressed size is within what the
record allows (``steps`` and metrics: 8 bytes per evaluation of the run's ``steps`` plus a
header; parameters: :data:`~decsim.study.records.MAX_PARAM_BYTES` in all) and matches its
``.npy`` header, that ``steps`` are increasing evaluation steps and that every metric is as long
as ``steps``. The zip bomb and the header that claims 10^12 entries are refused. What fails
raises :class:`~decsim.study.records.BadRecord`. The limits are read from
:mod:`decsim.study.records` when a check runs.
"""

from __future__ import annotations

import functools
import io
import math
import re
import struct
import zipfile

import numpy as np

from . import records
from .records import MAX_SERIES, BadRecord, result_columns

__all__ = ["read_npz"]

_NPY_HEADER_MAX = 10_000  # bytes of an .npy header (numpy's own limit for untrusted files)
_NPY_PREFIX_MAX = _NPY_HEADER_MAX + 16  # magic, version, header length and header
_MAX_ZIP_DIRECTORY = 4 * 2**20  # bytes of the zip central directory


_EOCD = struct.Struct("<4s4H2LH")  # end of central directory
_EOCD64_LOCATOR = struct.Struct("<4sLQL")
_EOCD64 = struct.Struct("<4sQ2H2L4Q")


def _zip_directory(fh, size: int, path: str) -> None:
    """Check the zip's end-of-central-directory record (found as :mod:`zipfile` finds it) before
    :mod:`zipfile` reads the directory: at most :data:`~decsim.study.records.MAX_MEMBERS`
    entries and a directory of bounded size, so a header that claims 10^12 entries is refused
    without reading them."""
    if size < _EOCD.size:
        raise BadRecord(path, "the NPZ is too short to be a zip file")
    fh.seek(size - _EOCD.size)
    tail = fh.read(_EOCD.size)
    if tail[:4] == b"PK\x05\x06" and tail[-2:] == b"\0\0":
        pos = size - _EOCD.size
    else:
        start = max(size - (1 << 16) - _EOCD.size, 0)
        fh.seek(start)
        tail = fh.read(size - start)
        found = tail.rfind(b"PK\x05\x06")
        if found < 0 or found + _EOCD.size > len(tail):
            raise BadRecord(path, "the NPZ is not a zip file (no end of central directory)")
        pos = start + found
        tail = tail[found:found + _EOCD.size]
    entries, dir_size = _EOCD.unpack(tail)[4:6]
    if pos >= _EOCD64_LOCATOR.size + _EOCD64.size:
        fh.seek(pos - _EOCD64_LOCATOR.size)
        if fh.read(4) == b"PK\x06\x07":
            fh.seek(pos - _EOCD64_LOCATOR.size - _EOCD64.size)
            rec = _EOCD64.unpack(fh.read(_EOCD64.size))
            if rec[0] == b"PK\x06\x06":
                entries, dir_size = max(entries, rec[7]), rec[8]
    if entries > records.MAX_MEMBERS:
        raise BadRecord(path, f"the NPZ's zip directory claims {entries} members, more than "
                              f"the limit of {records.MAX_MEMBERS}")
    if dir_size > _MAX_ZIP_DIRECTORY:
        raise BadRecord(path, f"the NPZ's zip directory claims {dir_size} bytes, more than the "
                              f"limit of {_MAX_ZIP_DIRECTORY}")


def _npy_prefix(fp, name: str, path: str) -> bytes:
    """The magic, version, length and header of an .npy member (at most
    :data:`_NPY_PREFIX_MAX` bytes read)."""
    head = fp.read(10)
    if len(head) < 10 or head[:6] != b"\x93NUMPY" or head[6] not in (1, 2):
        raise BadRecord(path, f"member {name!r} is not an .npy array of format version 1 or 2")
    if head[6] == 1:
        length = struct.unpack("<H", head[8:10])[0]
    else:
        head += fp.read(2)
        length = struct.unpack("<I", head[8:12])[0]
    if length > _NPY_HEADER_MAX:
        raise BadRecord(path, f"member {name!r} has a header of {length} bytes, more than "
                              f"{_NPY_HEADER_MAX}")
    header = fp.read(length)
    if len(header) != length:
        raise BadRecord(path, f"member {name!r} ends inside its header")
    return head + header


@functools.lru_cache(maxsize=512)
def _npy_header(prefix: bytes) -> tuple:
    """``(shape, fortran_order, dtype)`` of an .npy prefix (parsed by numpy; equal headers, as
    every metric of a store has, are parsed once)."""
    fp = io.BytesIO(prefix)
    version = np.lib.format.read_magic(fp)
    read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
            else np.lib.format.read_array_header_2_0)
    return read(fp, max_header_size=_NPY_HEADER_MAX)


def read_npz(fh, size: int, path: str, record: dict, want_arrays: bool) -> dict:
    """The arrays of an NPZ (``steps`` only, unless ``want_arrays``), every member checked
    against the record before it is read."""
    _zip_directory(fh, size, path)
    fh.seek(0)
    steps_cfg = record["config"]["steps"]
    series_cap = _NPY_PREFIX_MAX + 8 * (steps_cfg + 1)
    out, lengths, params = {}, {}, 0
    with zipfile.ZipFile(fh) as zf:
        infos = zf.infolist()
        if len(infos) > records.MAX_MEMBERS:
            raise BadRecord(path, f"the NPZ has {len(infos)} members, more than "
                                  f"{records.MAX_MEMBERS}")
        series = 0
        for info in infos:
            name = info.filename
            key = name[:-4] if name.endswith(".npy") else None
            if key is None or not (key == "steps" or re.fullmatch(r"(metric|param)/.+", key)):
                raise BadRecord(path, f"the NPZ holds {name!r}, which is no member of the format")
            if key in out or key in lengths:
                raise BadRecord(path, f"the NPZ holds member {name!r} twice")
            if info.flag_bits & 0x1 or info.compress_type not in (zipfile.ZIP_STORED,
                                                                 zipfile.ZIP_DEFLATED):
                raise BadRecord(path, f"member {name!r} is encrypted or uses a compression the "
                                      f"store never writes")
            if key.startswith("param/"):
                params += info.file_size
                if params > records.MAX_PARAM_BYTES:
                    raise BadRecord(path, f"the NPZ's parameters declare more than "
                                          f"MAX_PARAM_BYTES = {records.MAX_PARAM_BYTES} bytes")
            else:
                series += 1
                if series > MAX_SERIES:
                    raise BadRecord(path, f"the NPZ has more than {MAX_SERIES} metrics")
                if info.file_size > series_cap:
                    raise BadRecord(path, f"member {name!r} declares {info.file_size} bytes "
                                          f"uncompressed; a run of {steps_cfg} steps stores at "
                                          f"most {series_cap}")
            with zf.open(info) as fp:
                prefix = _npy_prefix(fp, name, path)
                shape, fortran, dtype = _npy_header(prefix)
                if any(d < 0 for d in shape) or dtype.hasobject:
                    raise BadRecord(path, f"member {name!r} holds Python objects or has a "
                                          f"negative dimension")
                nbytes = math.prod(shape) * dtype.itemsize
                if len(prefix) + nbytes != info.file_size:
                    raise BadRecord(path, f"member {name!r}: its header says {shape} {dtype} "
                                          f"({len(prefix) + nbytes} bytes) but it holds "
                                          f"{info.file_size}")
                if key == "steps" and (len(shape) != 1 or dtype.kind not in "iu"
                                       or not 1 <= shape[0] <= steps_cfg + 1):
                    raise BadRecord(path, f"steps is {shape} {dtype}, not 1 to {steps_cfg + 1} "
                                          f"integers")
                if key.startswith("metric/") and (len(shape) != 1 or dtype.kind != "f"):
                    raise BadRecord(path, f"metric {key[7:]!r} is {shape} {dtype}, not a "
                                          f"vector of floats")
                lengths[key] = shape[0] if shape else None
                if key == "steps" or (want_arrays and not key.startswith("param/")):
                    data = fp.read(nbytes)  # a few bytes per evaluation (bounded above)
                    if len(data) != nbytes:
                        raise BadRecord(path, f"member {name!r} ends early")
                    out[key] = np.frombuffer(data, dtype).reshape(
                        shape, order="F" if fortran else "C").copy()
            if want_arrays and key.startswith("param/"):
                with zf.open(info) as fp:  # streamed into the array (up to MAX_PARAM_BYTES)
                    out[key] = np.lib.format.read_array(fp, allow_pickle=False,
                                                        max_header_size=_NPY_HEADER_MAX)
    if "steps" not in lengths:
        raise BadRecord(path, "the NPZ has no steps")
    for key, n in lengths.items():
        if key.startswith("metric/") and n != lengths["steps"]:
            raise BadRecord(path, f"metric {key[7:]!r} has {n} values for {lengths['steps']} "
                                  f"evaluations")
    clash = sorted({k[len("metric/"):] for k in lengths if k.startswith("metric/")}
                   & result_columns(record["config"]))
    if clash:
        raise BadRecord(path, f"metric {clash[0]!r} has the name of a column of the results")
    steps = out["steps"]
    if steps[0] < 0 or steps[-1] > steps_cfg or np.any(steps[1:] < steps[:-1]):
        raise BadRecord(path, f"steps are not increasing evaluation steps in [0, {steps_cfg}]")
    return out
