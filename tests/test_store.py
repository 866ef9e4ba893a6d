"""The result store under damage, crafted files, concurrency and kills.

Every bad record is skipped with a warning naming the file and the reason (never fatal, bounded
memory); the whole record is checksummed; writers of one run lock it; a write killed at any
moment leaves the old or the new record; stale temporary files go; files follow the umask; a
user problem whose code or data changed is recomputed. Records are written from hand-made
Histories (no JAX run) except in the few sweep tests.
"""

import fcntl
import hashlib
import io
import json
import marshal
import multiprocessing
import os
import re
import stat
import struct
import subprocess
import sys
import textwrap
import threading
import time
import tracemalloc
import types
import warnings
import zipfile

import jax.numpy as jnp
import numpy as np
import pandas  # noqa: F401 - imported before memory is measured
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import decsim as ds
from decsim import study as S
from decsim.study import store

BASE = {"algorithm": {"name": "dsgd", "learning_rate": 0.1},
        "problem": {"name": "quadratic", "dim": 3, "mu": 0.5, "L": 1.0, "noise": 0.2, "seed": 0},
        "topology": "ring", "n_workers": 4, "steps": 20, "eval_every": 5}
RUNS = S.plan(BASE, {"seed": [0, 1]})
VICTIM, OTHER = RUNS
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def history(runs=RUNS, shift=0.0):
    """A seed-batched History of ``runs`` as ds.run returns it (5 evaluations of 20 steps)."""
    k, steps = len(runs), np.arange(0, 21, 5)
    loss = 1.0 / (1.0 + steps)[None] + shift + 0.1 * np.arange(k)[:, None]
    metrics = {"loss": loss, "grad_norm_sq": loss**2, "consensus": loss / 10,
               "bits": np.tile(steps * 96.0, (k, 1))}
    return ds.History(steps=steps, metrics=metrics, params=None, diverged=np.zeros(k, bool),
                      diverged_step=np.full(k, -1), seeds=[r.config["seed"] for r in runs],
                      config={"algorithm": "dsgd", "problem": "quadratic(d=3)",
                              "topology": "ring(4)", "n_workers": 4, "spectral_gap": 0.5,
                              "hparams": {"learning_rate": 0.1}},
                      compile_seconds=1.0, run_seconds=2.0)


def write(folder, shift=0.0, runs=RUNS, **kwargs):
    hist = history(runs, shift)
    for i, r in enumerate(runs):
        store.write_run(str(folder), r, hist, i, facts={"f_star": 0.25}, group_size=len(runs),
                        **kwargs)
    return folder


def json_path(folder, run):
    return os.path.join(str(folder), f"{run.id}.json")


def npz_path(folder, run):
    return os.path.join(str(folder), f"{run.id}.npz")


def record_of(folder, run):
    with open(json_path(folder, run)) as fh:
        return json.load(fh)


def reseal(record):
    """The documented checksum: SHA-256 of the canonical JSON of every other field."""
    body = {k: v for k, v in record.items() if k != "record_sha256"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False,
                      ensure_ascii=True)
    record["record_sha256"] = hashlib.sha256(text.encode()).hexdigest()
    return record


def put_record(folder, run, record, seal=True):
    with open(json_path(folder, run), "w") as fh:
        json.dump(reseal(record) if seal else record, fh)


def put_text(folder, run, data):
    with open(json_path(folder, run), "wb") as fh:
        fh.write(data if isinstance(data, bytes) else data.encode())


def put_npz(folder, run, data: bytes):
    """Replace a run's NPZ by ``data``, its JSON made to match (a crafted, consistent pair)."""
    with open(npz_path(folder, run), "wb") as fh:
        fh.write(data)
    record = record_of(folder, run)
    record["npz_sha256"] = hashlib.sha256(data).hexdigest()
    put_record(folder, run, record)


def npy(array, allow_pickle=False) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.asarray(array), allow_pickle=allow_pickle)
    return buf.getvalue()


def npy_header(shape, descr="<f8") -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False,
                                               "shape": shape})
    return buf.getvalue()


def npz(members: dict) -> bytes:
    """An NPZ from ``{name: array or .npy bytes}`` (names without .npy)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, value in members.items():
            zf.writestr(name + ".npy", value if isinstance(value, bytes) else npy(value))
    return buf.getvalue()


def good_members(n=5, **changes):
    members = {"steps": np.arange(0, 21, 5)[:n], "metric/loss": np.linspace(1, 0, n)}
    members.update(changes)
    return members


def bomb(size=64 * 2**20, lie=False) -> bytes:
    """A zip bomb: ``metric/loss.npy`` is a valid header and ``size`` zero bytes, deflated (about
    a thousandth of ``size``); ``lie=True`` also claims a tiny uncompressed size in the zip."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("steps.npy", npy(np.arange(0, 21, 5)))
        with zf.open("metric/loss.npy", "w") as fh:
            fh.write(npy_header((size // 8,)))
            chunk = bytes(2**20)
            for _ in range(size // len(chunk)):
                fh.write(chunk)
    data = bytearray(buf.getvalue())
    if lie:  # the member's uncompressed size, in its local header and its directory entry
        info = zipfile.ZipFile(io.BytesIO(bytes(data))).getinfo("metric/loss.npy")
        struct.pack_into("<L", data, info.header_offset + 22, 208)
        directory = struct.unpack("<L", data[-6:-2])[0]
        second = data.index(b"PK\x01\x02", data.index(b"PK\x01\x02", directory) + 1)
        struct.pack_into("<L", data, second + 24, 208)
    return bytes(data)


def zip_claiming_entries(count: int) -> bytes:
    """A valid NPZ whose zip64 end record claims ``count`` members and a directory to match."""
    data = npz(good_members())
    body, _ = data[:-22], data[-22:]
    cd_offset = struct.unpack("<L", data[-6:-2])[0]
    zip64 = struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, count, count,
                        46 * count, cd_offset)
    locator = struct.pack("<4sLQL", b"PK\x06\x07", 0, len(body), 1)
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF,
                      0)
    return body + zip64 + locator + end


def load_both(folder):
    """``load_results``, ``load_histories`` and the StoreWarning messages they gave, with the
    peak of memory traced while they ran."""
    tracemalloc.start()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            frame = ds.load_results(str(folder), final=True)
            hists = S.load_histories(str(folder))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    messages = [str(w.message) for w in caught if issubclass(w.category, UserWarning)
                and str(folder) in str(w.message)]
    assert all(issubclass(w.category, store.StoreWarning) for w in caught
               if str(folder) in str(w.message))
    return frame, hists, messages, peak


def edit(change):
    """A case that edits the victim's record with ``change(record)`` and reseals it."""
    def apply(folder):
        record = record_of(folder, VICTIM)
        change(record)
        put_record(folder, VICTIM, record)
    return apply


def nested(depth):
    value = []
    for _ in range(depth - 1):
        value = [value]
    return value


def _make_folder(path):
    os.remove(path)
    os.mkdir(path)


CASES = {
    # name: (damage(folder), the file named, the reason)
    "json without status": (edit(lambda r: r.pop("status")), "json", "status is None"),
    "json without group": (edit(lambda r: r.pop("group")), "json", "group is None"),
    "json without seed": (edit(lambda r: r["config"].pop("seed")), "json", "config.seed is None"),
    "status not a string": (edit(lambda r: r.update(status=["ok"])), "json", "status is"),
    "bad diverged_step": (edit(lambda r: r.update(diverged_step="7")), "json", "diverged_step"),
    "info not a table": (edit(lambda r: r.update(info=[1])), "json", "no info table"),
    "f_star not a number": (edit(lambda r: r["info"].update(f_star="0")), "json", "info.f_star"),
    "seconds not numbers": (edit(lambda r: r.update(run_seconds=None)), "json", "run_seconds"),
    "group_size 0": (edit(lambda r: r.update(group_size=0)), "json", "group_size"),
    "another run's id": (edit(lambda r: r.update(id=OTHER.id)), "json", "names id"),
    "config edited": (edit(lambda r: r["config"].update(steps=40)), "json", "does not hash"),
    "group of another config": (edit(lambda r: r.update(group="0" * 16)), "json", "group is"),
    "not a table": (lambda f: put_text(f, VICTIM, "[1, 2]"), "json", "not a record"),
    "100000 nested lists": (lambda f: put_text(f, VICTIM, "[" * 100_000 + "]" * 100_000),
                            "json", "nested too deeply"),
    "deeply nested value": (edit(lambda r: r["info"].update(extra=nested(300))), "json",
                            "nested deeper than 64"),
    "NaN literal": (lambda f: put_text(f, VICTIM, json.dumps(record_of(f, VICTIM)).replace(
        '"run_seconds": 2.0', '"run_seconds": NaN')), "json", "NaN"),
    "huge integer": (lambda f: put_text(f, VICTIM, json.dumps(record_of(f, VICTIM)).replace(
        '"diverged_step": -1', '"diverged_step": ' + "9" * 5000)), "json", "does not parse"),
    "not utf-8": (lambda f: put_text(f, VICTIM, b"\xff\xfe{}"), "json", "does not parse"),
    "json of 17 MB": (edit(lambda r: r["info"].update(pad="x" * 17 * 2**20)), "json",
                      "more than the limit"),
    "json is a folder": (lambda f: _make_folder(json_path(f, VICTIM)), "json",
                         "not a regular file"),
    "npz missing": (lambda f: os.remove(npz_path(f, VICTIM)), "npz", "NPZ is missing"),
    "npz truncated": (lambda f: os.truncate(npz_path(f, VICTIM), 100), "npz",
                      "does not match the checksum"),
    "npz is a folder": (lambda f: _make_folder(npz_path(f, VICTIM)), "npz", "not a regular file"),
    "npz not a zip": (lambda f: put_npz(f, VICTIM, b"not a zip file at all" * 3), "npz",
                      "not a zip file"),
    "npy header claims 10^12 entries": (
        lambda f: put_npz(f, VICTIM, npz(good_members(**{
            "metric/loss": npy_header((10**12,)) + bytes(40)}))), "npz",
        r"header says \(1000000000000,\)"),
    "zip directory claims 10^12 members": (
        lambda f: put_npz(f, VICTIM, zip_claiming_entries(10**12)), "npz",
        "claims 1000000000000 members"),
    "metric of the wrong length": (
        lambda f: put_npz(f, VICTIM, npz(good_members(**{"metric/loss": np.ones(3)}))), "npz",
        "has 3 values for 5 evaluations"),
    "more steps than the run has": (
        lambda f: put_npz(f, VICTIM, npz(good_members(steps=np.arange(100)))), "npz",
        r"steps is \(100,\)"),
    "no steps": (lambda f: put_npz(f, VICTIM, npz({"metric/loss": np.ones(5)})), "npz",
                 "no steps"),
    "object array": (
        lambda f: put_npz(f, VICTIM, npz(good_members(**{
            "metric/loss": npy(np.array([1.0, "x"], dtype=object), allow_pickle=True)}))),
        "npz", "Python objects"),
    "metric named like a column": (
        lambda f: put_npz(f, VICTIM, npz(good_members(**{"metric/run": np.ones(5)}))), "npz",
        "has the name of a column"),
    "unknown member": (lambda f: put_npz(f, VICTIM, npz(good_members(evil=np.ones(2)))), "npz",
                       "no member of the format"),
    "zip bomb": (lambda f: put_npz(f, VICTIM, bomb()), "npz",
                 "declares 67108992 bytes uncompressed; a run of 20 steps stores at most"),
    "zip bomb that lies about its size": (lambda f: put_npz(f, VICTIM, bomb(lie=True)), "npz",
                                          r"Bad CRC-32|header says"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_bad_record_is_skipped_with_a_warning(tmp_path, case):
    damage, which, reason = CASES[case]
    write(tmp_path)
    damage(str(tmp_path))
    frame, hists, messages, peak = load_both(tmp_path)
    assert list(frame["run"]) == [OTHER.id]  # the intact run is read, the victim skipped
    (h,) = hists.values()
    assert h.seeds == [OTHER.config["seed"]]
    assert len(messages) == 2, messages  # one per reader
    named = json_path(tmp_path, VICTIM) if which == "json" else npz_path(tmp_path, VICTIM)
    for message in messages:
        assert named in message and VICTIM.id in message
        assert re.search(reason, message), message
    assert peak < 24 * 2**20  # no bomb went off, no huge array was allocated
    assert not S.is_complete(str(tmp_path), VICTIM.id) and S.is_complete(str(tmp_path), OTHER.id)
    assert S.read_run(str(tmp_path), VICTIM.id) is None
    with pytest.raises(store.BadRecord, match=reason):
        store.verify_run(str(tmp_path), VICTIM.id)


def test_stored_parameters_are_read_back_and_bounded(tmp_path, monkeypatch):
    import dataclasses

    params = {"b": np.arange(8.0).reshape(2, 4, 1), "w": np.ones((2, 4, 3), np.float32)}
    hist = dataclasses.replace(history(), params=params)
    for i, r in enumerate(RUNS):
        store.write_run(str(tmp_path), r, hist, i, facts={}, save_params=True)
    _, arrays = store.verify_run(str(tmp_path), OTHER.id)
    np.testing.assert_array_equal(arrays["param/['b']"], params["b"][1])
    assert arrays["param/['w']"].dtype == np.float32 and arrays["param/['w']"].flags.writeable
    assert arrays["metric/loss"].flags.writeable
    monkeypatch.setattr(ds.study.records, "MAX_PARAM_BYTES", 40)  # < 32 + 48 bytes stored
    with pytest.raises(store.BadRecord, match="MAX_PARAM_BYTES"):
        store.verify_run(str(tmp_path), OTHER.id)
    with pytest.raises(ValueError, match="MAX_PARAM_BYTES"):  # never written, so never rerun
        store.write_run(str(tmp_path), OTHER, hist, 1, facts={}, save_params=True)


def test_devices_fifos_and_links_to_them_are_refused_unread(tmp_path):
    # in a child process with a time and memory limit: reading /dev/zero or opening a FIFO used
    # to read forever or block forever
    write(tmp_path)
    os.remove(npz_path(tmp_path, VICTIM))
    os.symlink("/dev/zero", npz_path(tmp_path, VICTIM))
    os.remove(npz_path(tmp_path, OTHER))
    os.mkfifo(npz_path(tmp_path, OTHER))
    code = textwrap.dedent(f"""
        import resource, warnings
        resource.setrlimit(resource.RLIMIT_DATA, (2 * 2**30, 2 * 2**30))
        import decsim as ds
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            frame = ds.load_results({str(tmp_path)!r})
        print(len(frame))
        for w in caught:
            print(w.message)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "0"
    assert any(npz_path(tmp_path, VICTIM) in m and "not a regular file" in m for m in lines)
    assert any(npz_path(tmp_path, OTHER) in m and "not a regular file" in m for m in lines)


def test_a_folder_that_does_not_exist_is_an_error_naming_it(tmp_path):
    missing = str(tmp_path / "no-such-store")
    for load in (ds.load_results, S.load_histories):
        with pytest.raises(FileNotFoundError, match="no-such-store"):
            load(missing)
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(NotADirectoryError, match="a-file"):
        ds.load_results(str(tmp_path / "a-file"))
    assert len(ds.load_results(str(tmp_path))) == 0  # an empty store is no error


def test_files_that_are_no_records_are_left_alone(tmp_path):
    write(tmp_path)
    (tmp_path / "notes.json").write_text("{}")  # not named like a run
    open(os.path.join(str(tmp_path), "0123456789abcdef.npz"), "wb").close()  # NPZ, no JSON yet
    frame, _, messages, _ = load_both(tmp_path)
    assert sorted(frame["run"]) == sorted(r.id for r in RUNS) and messages == []


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(which=st.sampled_from(["json", "npz"]),
       flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)),
                      min_size=0, max_size=3),
       keep=st.floats(0, 1))
def test_damaged_bytes_are_never_fatal(which, flips, keep):
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        write(folder)
        want = ds.load_results(folder, final=True)
        path = json_path(folder, VICTIM) if which == "json" else npz_path(folder, VICTIM)
        with open(path, "rb") as fh:
            data = bytearray(fh.read())
        for where, byte in flips:
            data[int(where * len(data))] = byte
        data = data[:max(1, int(keep * len(data)))] if keep < 0.5 else data
        with open(path, "wb") as fh:
            fh.write(bytes(data))
        frame, _, messages, _ = load_both(folder)
        if VICTIM.id in set(frame["run"]):  # the bytes still say the same (e.g. a space)
            assert messages == []
            pd_equal = frame.sort_values("run").reset_index(drop=True)
            assert pd_equal.equals(want.sort_values("run").reset_index(drop=True))
        else:
            assert list(frame["run"]) == [OTHER.id] and len(messages) == 2


# ---------------------------------------------------------------------------------------------
# item 2: the whole record is checksummed


EDITS = {
    "status": lambda r: r.update(status="diverged"),
    "diverged_step": lambda r: r.update(diverged_step=7),
    "info.f_star": lambda r: r["info"].update(f_star=-1.0),
    "final loss": lambda r: r["final"].update(loss=0.0),
    "run_seconds": lambda r: r.update(run_seconds=1e-3),
    "learning rate in info": lambda r: r["info"]["hparams"].update(learning_rate=9.0),
    "problem_sha256": lambda r: r.update(problem_sha256="0" * 64),
    "record_sha256": lambda r: r.update(record_sha256="f" * 64),
}


@pytest.mark.parametrize("field", list(EDITS))
def test_an_edited_record_is_not_finished(tmp_path, field):
    write(tmp_path)
    record = record_of(tmp_path, VICTIM)
    EDITS[field](record)
    put_record(tmp_path, VICTIM, record, seal=False)
    assert not S.is_complete(str(tmp_path), VICTIM.id)
    frame, _, messages, _ = load_both(tmp_path)
    assert list(frame["run"]) == [OTHER.id]
    assert len(messages) == 2 and all("own checksum" in m for m in messages)


def test_the_record_checksum_is_the_documented_one(tmp_path):
    write(tmp_path)
    record = record_of(tmp_path, VICTIM)
    assert record["record_sha256"] == reseal(dict(record))["record_sha256"]
    assert record["format"] == S.FORMAT == "decsim-run/1"
    # the ids of existing configs are unchanged
    assert [r.id for r in RUNS] == ["792e264c0f34212c", "8b6b6e01bb9bfb78"]


def test_an_older_record_without_the_record_checksum_still_counts(tmp_path):
    # what decsim wrote before record_sha256 and problem_sha256: the same fields but those two
    write(tmp_path)
    for run in RUNS:
        record = record_of(tmp_path, run)
        record.pop("record_sha256", None)
        put_record(tmp_path, run, record, seal=False)
    frame, _, messages, _ = load_both(tmp_path)
    assert sorted(frame["run"]) == sorted(r.id for r in RUNS) and messages == []


def test_a_sweep_recomputes_an_edited_record(tmp_path):
    out = str(tmp_path)
    cfg = dict(BASE, steps=10)
    assert ds.sweep(cfg, None, out, progress=False).ran == 1
    (run,) = S.plan(cfg)
    record = record_of(out, run)
    record["status"] = "diverged"
    put_record(out, run, record, seal=False)
    with pytest.warns(UserWarning, match="own checksum") as caught:
        report = ds.sweep(cfg, None, out, progress=False)
    assert all(issubclass(w.category, store.StoreWarning) for w in caught)
    assert (report.ran, report.skipped) == (1, 0)
    assert record_of(out, run)["status"] == "ok" and S.is_complete(out, run.id)
    # an older record (no record_sha256, no problem_sha256) of a built-in problem is reused
    record = record_of(out, run)
    del record["record_sha256"], record["problem_sha256"]
    put_record(out, run, record, seal=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ds.sweep(cfg, None, out, progress=False).skipped == 1


# ---------------------------------------------------------------------------------------------
# item 3: concurrent writers


def test_a_writer_that_starts_in_the_middle_of_another_waits_for_it(tmp_path, monkeypatch):
    # A pauses right after moving its NPZ into place; B writes the same run meanwhile. Without a
    # lock the JSON of A ends up next to the NPZ of B and the run fails its check.
    out = str(tmp_path)
    moved = threading.Event()
    real_replace = os.replace

    def replace(src, dst, *args, **kwargs):
        real_replace(src, dst, *args, **kwargs)
        if threading.current_thread().name == "A" and str(dst).endswith(".npz"):
            moved.set()
            time.sleep(0.3)

    monkeypatch.setattr(os, "replace", replace)
    hist_a, hist_b = history([VICTIM], 0.0), history([VICTIM], 5.0)

    def writer_a():
        store.write_run(out, VICTIM, hist_a, 0, facts={})

    def writer_b():
        moved.wait(5)
        store.write_run(out, VICTIM, hist_b, 0, facts={})

    threads = [threading.Thread(target=writer_a, name="A"), threading.Thread(target=writer_b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = S.read_run(out, VICTIM.id)
    assert got is not None  # the run passes its check
    record, arrays = got
    np.testing.assert_allclose(arrays["metric/loss"], hist_b.metrics["loss"][0])  # B came last
    assert record["final"]["loss"] == pytest.approx(hist_b.metrics["loss"][0, -1])
    assert sorted(os.listdir(out)) == sorted([f"{VICTIM.id}.json", f"{VICTIM.id}.npz"])


def _write_repeatedly(out, shift, times, ready, go):
    hists = [history([VICTIM], shift + i) for i in range(times)]
    ready.set()
    go.wait(60)
    for hist in hists:
        store.write_run(out, VICTIM, hist, 0, facts={})


def test_two_processes_writing_one_run_and_a_reader(tmp_path):
    out = str(tmp_path)
    store.write_run(out, VICTIM, history([VICTIM]), 0, facts={})
    ctx = multiprocessing.get_context("spawn")
    go, ready = ctx.Event(), [ctx.Event(), ctx.Event()]
    procs = [ctx.Process(target=_write_repeatedly, args=(out, 100.0 * (p + 1), 15, ready[p], go))
             for p in range(2)]
    for p in procs:
        p.start()
    for r in ready:
        assert r.wait(60)
    go.set()  # both write at once
    checks = bad = 0
    while any(p.is_alive() for p in procs):
        bad += not S.is_complete(out, VICTIM.id)  # a reader never sees a broken run
        checks += 1
        time.sleep(0.001)
    for p in procs:
        p.join()
        assert p.exitcode == 0
    assert checks > 0 and bad == 0
    record, arrays = store.verify_run(out, VICTIM.id)
    assert record["final"]["loss"] == pytest.approx(arrays["metric/loss"][-1])
    left = sorted(n for n in os.listdir(out) if n.startswith("."))
    assert all(n.endswith(".lock") for n in left), left  # at most a reader's lock file


# ---------------------------------------------------------------------------------------------
# item 4: stale temporary files, permissions, kills


def test_stale_temporary_files_are_removed_by_the_next_sweep(tmp_path):
    out = str(tmp_path)
    write(out, runs=S.plan(BASE))  # the sweep below finds its run finished: nothing to compute
    (run,) = S.plan(BASE)
    stale = os.path.join(out, f".{run.id}.npz.k1ll3d.tmp")
    fresh = os.path.join(out, f".{run.id}.json.wr1t1ng.tmp")
    locked = os.path.join(out, f".{OTHER.id}.npz.b4sy.tmp")
    old_lock = os.path.join(out, f".{VICTIM.id}.lock")  # a killed writer's lock file
    foreign = os.path.join(out, ".someone-elses.tmp")
    for path in (stale, fresh, locked, old_lock, foreign):
        with open(path, "wb") as fh:
            fh.write(b"partial")
    hour_ago = time.time() - 3600
    for path in (stale, locked, foreign):
        os.utime(path, (hour_ago, hour_ago))
    # another writer is writing OTHER right now: it holds the lock of that run
    fd = os.open(os.path.join(out, f".{OTHER.id}.lock"), os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        report = ds.sweep(BASE, None, out, progress=False)
        assert report.skipped == 1
        names = set(os.listdir(out))
        assert os.path.basename(stale) not in names and os.path.basename(old_lock) not in names
        assert {os.path.basename(p) for p in (fresh, locked, foreign)} <= names
    finally:
        os.close(fd)
    removed = store.tidy(out, older_than=0)
    assert set(removed) >= {fresh, locked}
    assert foreign in [os.path.join(out, n) for n in os.listdir(out)]  # not a store file


@pytest.mark.parametrize("umask", [0o022, 0o007])
def test_store_files_follow_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        write(tmp_path)
    finally:
        os.umask(old)
    for run in RUNS:
        for path in (json_path(tmp_path, run), npz_path(tmp_path, run)):
            assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~umask


KILL_SCRIPT = """
import json, os, signal, sys
import numpy as np
sys.path.insert(0, {root!r})
from tests.test_store import VICTIM, history
from decsim.study import store

for folder, name, count in json.loads(sys.argv[1]):
    pid = os.fork()
    if pid == 0:  # the writer, killed at the count-th call of os.<name>
        real, calls = getattr(os, name), [0]

        def deadly(*args, **kwargs):
            calls[0] += 1
            if calls[0] == count:
                os.kill(os.getpid(), signal.SIGKILL)
            return real(*args, **kwargs)

        setattr(os, name, deadly)
        store.write_run(folder, VICTIM, history([VICTIM], 5.0), 0, facts={{}})
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    print(folder, os.WIFSIGNALED(status))
"""


def test_a_write_killed_at_any_moment_leaves_the_old_or_the_new_record(tmp_path):
    old, new = history([VICTIM], 0.0), history([VICTIM], 5.0)
    # the moments: before the hard link to the old NPZ, before each move, before the link goes
    points = [("link", 1), ("replace", 1), ("replace", 2), ("unlink", 1)]
    jobs = []
    for name, count in points:
        folder = str(tmp_path / f"{name}{count}")
        os.mkdir(folder)
        store.write_run(folder, VICTIM, old, 0, facts={})
        jobs.append((folder, name, count))
    out = subprocess.run([sys.executable, "-c", KILL_SCRIPT.format(root=ROOT), json.dumps(jobs)],
                         capture_output=True, text=True, timeout=120, cwd=ROOT,
                         env=dict(os.environ, PYTHONPATH=ROOT))
    assert out.returncode == 0, out.stderr
    assert out.stdout.split().count("True") == len(points)  # every writer was killed

    def loss_of(folder):
        got = store.verify_run(folder, VICTIM.id)[1]["metric/loss"]
        return "old" if np.allclose(got, old.metrics["loss"][0]) else "new"

    want = {"link1": "old", "replace1": "old", "replace2": "old", "unlink1": "new"}
    for folder, name, count in jobs:
        assert loss_of(folder) == want[f"{name}{count}"]
        store.tidy(folder, older_than=0)  # the next sweep's tidy-up settles what the kill left
        assert loss_of(folder) == want[f"{name}{count}"]
        assert sorted(os.listdir(folder)) == [f"{VICTIM.id}.json", f"{VICTIM.id}.npz"]
        store.write_run(folder, VICTIM, new, 0, facts={})
        assert loss_of(folder) == "new"


# ---------------------------------------------------------------------------------------------
# item 5: problem fingerprints


def toy_loss(params, batch):
    return jnp.mean((batch["x"] @ params - batch["y"]) ** 2)


def toy_loss_same_code(params, batch):
    return jnp.mean((batch["x"] @ params - batch["y"]) ** 2)


def toy_loss_changed(params, batch):
    return jnp.mean(jnp.abs(batch["x"] @ params - batch["y"]))


def toy_data(n_workers, dim, seed, offset=0.0):
    rng = np.random.default_rng(seed)
    return {"x": rng.normal(size=(n_workers, 6, dim)).astype(np.float32),
            "y": (rng.normal(size=(n_workers, 6)) + offset).astype(np.float32)}


def toy(n_workers, dim=3, seed=0):
    """A user's problem constructor, registered in decsim.problems.REGISTRY by the tests."""
    return ds.problems.custom(toy_loss, np.zeros(dim, np.float32), toy_data(n_workers, dim, seed))


def toy_new_code(n_workers, dim=3, seed=0):
    return ds.problems.custom(toy_loss_changed, np.zeros(dim, np.float32),
                              toy_data(n_workers, dim, seed))


def toy_new_data(n_workers, dim=3, seed=0):
    return ds.problems.custom(toy_loss_changed, np.zeros(dim, np.float32),
                              toy_data(n_workers, dim, seed, offset=1.0))


def test_fingerprints_see_code_and_data_not_names():
    fp = store.problem_fingerprint
    a = fp(toy(2))
    assert fp(toy(2)) == a  # built twice
    assert fp(ds.problems.custom(toy_loss_same_code, np.zeros(3, np.float32), toy_data(2, 3, 0))) \
        == a  # the same code under another name
    assert fp(toy_new_code(2)) != a
    assert fp(toy(2, seed=1)) != a
    data = toy_data(2, 3, 0)
    data["y"][0, 0] += 1e-3  # one value
    assert fp(ds.problems.custom(toy_loss, np.zeros(3, np.float32), data)) != a
    assert fp(ds.problems.custom(toy_loss, np.ones(3, np.float32), toy_data(2, 3, 0))) != a

    # closures, defaults and the functions of the loss's own module count too
    src = textwrap.dedent("""
        import jax.numpy as jnp
        SCALE = {scale}
        def helper(r):
            return jnp.mean(r ** {power})
        def make(w):
            def loss(params, batch, k=2):
                return SCALE * w * helper(batch["x"] @ params - batch["y"])
            return loss
    """)

    def loss_from(scale=1.0, power=2, w=1.0, roundtrip=False):
        code = compile(src.format(scale=scale, power=power), "user_problem.py", "exec")
        if roundtrip:  # what importing from a .pyc gives
            code = marshal.loads(marshal.dumps(code))
        module = types.ModuleType("user_problem")
        exec(code, module.__dict__)
        return ds.problems.custom(module.make(w), np.zeros(3, np.float32), toy_data(2, 3, 0))

    b = fp(loss_from())
    assert fp(loss_from(roundtrip=True)) == b
    assert fp(loss_from(scale=2.0)) != b
    assert fp(loss_from(power=4)) != b
    assert fp(loss_from(w=3.0)) != b


def test_fingerprints_are_the_same_in_another_process():
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {ROOT!r})
        import decsim as ds
        from tests.test_store import toy
        from decsim.study import store
        print(store.problem_fingerprint(toy(2)))
        print(store.problem_fingerprint(ds.problems.quadratic(4, 3, noise=0.1)))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, cwd=ROOT,
                         env=dict(os.environ, PYTHONPATH=ROOT, PYTHONHASHSEED="12345"))
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [store.problem_fingerprint(toy(2)), store.problem_fingerprint(
        ds.problems.quadratic(4, 3, noise=0.1))]


def test_a_user_problem_whose_code_or_data_changed_is_recomputed(tmp_path, monkeypatch):
    out = str(tmp_path)
    base = {"algorithm": {"name": "dsgd", "learning_rate": 0.05},
            "problem": {"name": "toy", "dim": 3}, "topology": "ring", "n_workers": 2,
            "steps": 10, "eval_every": 5}

    def sweep():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            report = ds.sweep(base, None, out, progress=False)
        mine = [w for w in caught if "decsim sweep" in str(w.message)]
        assert all(issubclass(w.category, store.StoreWarning) for w in mine)
        return report, [str(w.message) for w in mine]

    monkeypatch.setitem(ds.problems.REGISTRY, "toy", toy)
    first, _ = sweep()
    assert first.ran == 1
    loss_first = ds.load_results(out)["loss"].to_numpy()
    again, messages = sweep()
    assert (again.ran, again.skipped, messages) == (0, 1, [])

    monkeypatch.setitem(ds.problems.REGISTRY, "toy", toy_new_code)  # the same name and config
    changed, messages = sweep()
    assert changed.run_ids == first.run_ids  # the run's id does not change
    assert changed.ran == 1 and len(messages) == 1 and "code or data changed" in messages[0]
    assert not np.allclose(ds.load_results(out)["loss"].to_numpy(), loss_first)
    assert sweep()[0].skipped == 1

    monkeypatch.setitem(ds.problems.REGISTRY, "toy", toy_new_data)
    report, messages = sweep()
    assert report.ran == 1 and len(messages) == 1
    assert sweep()[0].skipped == 1

    # an older record of a user problem (no fingerprint) cannot be trusted: recomputed
    (run,) = S.plan(base)
    record = record_of(out, run)
    del record["problem_sha256"], record["record_sha256"]
    put_record(out, run, record, seal=False)
    report, messages = sweep()
    assert report.ran == 1 and len(messages) == 1
