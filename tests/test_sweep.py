"""Sweeps: grids, grouping into vmapped programs, one compilation for seeds x learning rates, the
resumable result store (interruption, truncated and corrupt files), divergence, sharding."""

import importlib
import json
import os

import numpy as np
import pytest

import decsim as ds
from decsim import runner
from decsim import study as S
from decsim.study import store

# the module decsim.study.sweep (the attribute of that name is the function ds.sweep): tests swap
# the runner's run() it calls
SWEEP = importlib.import_module("decsim.study.sweep")

BASE = {"algorithm": {"name": "dsgd", "learning_rate": 0.1},
        "problem": {"name": "quadratic", "dim": 3, "mu": 0.5, "L": 1.0, "noise": 0.2, "seed": 0},
        "topology": "ring", "n_workers": 4, "steps": 20, "eval_every": 5}


class CountingRun:
    """Wraps the run() that decsim.study.sweep calls: counts calls and seeds; optionally fails on
    call number ``fail_on``."""

    def __init__(self, fail_on=None):
        self.calls, self.seeds, self.hparams, self.fail_on = 0, [], [], fail_on

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.fail_on is not None and self.calls == self.fail_on:
            raise KeyboardInterrupt("simulated interruption")
        self.seeds.append(list(kwargs["seeds"]))
        self.hparams.append(kwargs.get("hparams"))
        return runner.run(*args, **kwargs)


def test_grid_expansion_grouping_and_dotted_paths():
    grid = {"algorithm.learning_rate": [0.05, 0.1], "topology.name": ["ring", "complete"],
            "seed": [0, 1, 2]}
    runs = S.plan(BASE, grid)
    assert len(runs) == 12 and len({r.id for r in runs}) == 12
    assert len({r.group for r in runs}) == 4  # seeds share a group
    # TOML's nested form of dotted keys is the same grid
    nested = {"algorithm": {"learning_rate": [0.05, 0.1]},
              "topology": {"name": ["ring", "complete"]},
              "seed": [0, 1, 2]}
    assert [r.id for r in S.plan(BASE, nested)] == [r.id for r in runs]
    # base seeds expand; a list of grids is a union; duplicates appear once
    assert len(S.plan(dict(BASE, seeds=[0, 1]), None)) == 2
    union = S.plan(BASE, [{"seed": [0, 1]}, {"seed": [1, 2]}])
    assert [r.config["seed"] for r in union] == [0, 1, 2]
    # whole tables as grid values
    tables = S.plan(BASE, {"algorithm": [{"name": "dsgd", "learning_rate": 0.1},
                                         {"name": "gradient_tracking", "learning_rate": 0.1}]})
    assert [r.config["algorithm"]["name"] for r in tables] == ["dsgd", "gradient_tracking"]
    for bad, match in [({"seed": 3}, "must map to a list"), ({"seed": []}, "has no values"),
                       ({"algorithm.lerning_rate": [0.1]}, "Did you mean 'learning_rate'")]:
        with pytest.raises(ValueError, match=match):
            S.plan(BASE, bad)


def test_four_seeds_times_three_learning_rates_are_one_call(tmp_path, monkeypatch):
    counting = CountingRun()
    monkeypatch.setattr(SWEEP, "run", counting)
    # shapes no other test uses (5 workers, dim 7), so the programs are surely not cached yet
    cfg = dict(BASE, n_workers=5, problem=dict(BASE["problem"], dim=7), steps=40, eval_every=10)
    before = dict(runner.TRACE_COUNTS)
    grid = {"seed": [0, 1, 2, 3], "algorithm.learning_rate": [0.05, 0.1, 0.2]}
    report = ds.sweep(cfg, grid, str(tmp_path), progress=False)
    traced = {k: runner.TRACE_COUNTS[k] - before.get(k, 0) for k in runner.TRACE_COUNTS}
    assert traced == {"init": 1, "segment": 1, "metrics": 1}  # one program of each kind, 12 runs
    assert counting.calls == 1 and sorted(counting.seeds[0]) == sorted([0, 1, 2, 3] * 3)
    lrs = counting.hparams[0]["learning_rate"]  # one value per run, paired with its seed
    assert sorted(zip(counting.seeds[0], lrs)) == sorted((s, lr) for s in range(4)
                                                         for lr in (0.05, 0.1, 0.2))
    assert (report.total, report.ran, report.skipped, report.diverged) == (12, 12, 0, 0)
    frame = ds.load_results(str(tmp_path), final=True)
    assert len(frame) == 12
    assert sorted(frame.groupby("algorithm.learning_rate")["seed"].nunique()) == [4, 4, 4]
    # the stored curves are those of a direct run, and each record holds its own learning rate
    direct = ds.run(ds.algorithms.dsgd(0.2), ds.config.build_problem(cfg), ds.topology.ring(5),
                    steps=40, eval_every=10, seeds=[0, 1, 2, 3])
    hists = ds.study.load_histories(str(tmp_path))
    assert sorted(h.config["hparams"]["learning_rate"] for h in hists.values()) == pytest.approx(
        [0.05, 0.1, 0.2])
    mine = [h for h in hists.values() if h.config["hparams"]["learning_rate"] == pytest.approx(0.2)]
    assert len(mine) == 1 and mine[0].seeds == [0, 1, 2, 3]
    np.testing.assert_allclose(mine[0].metrics["loss"], direct.metrics["loss"], rtol=2e-6)
    # a run's share of the call's time: the groups' seconds add up to the one call's
    record = json.loads(open(os.path.join(str(tmp_path), f"{S.plan(cfg, grid)[0].id}.json")).read())
    assert record["group_size"] == 12
    total = sum(h.run_seconds for h in hists.values())
    assert total == pytest.approx(record["run_seconds"], rel=1e-9)


def test_interrupted_sweep_resumes_and_reruns_damaged_files(tmp_path, monkeypatch):
    out = str(tmp_path)
    # four batches of two seeds (data seeds differ, so each is its own call)
    grid = {"problem.seed": [0, 1, 2, 3], "seed": [0, 1]}
    monkeypatch.setattr(SWEEP, "run", CountingRun(fail_on=3))
    with pytest.raises(KeyboardInterrupt):
        ds.sweep(BASE, grid, out, progress=False)
    finished = [p for p in os.listdir(out) if p.endswith(".json")]
    assert len(finished) == 4  # two batches of two seeds were stored before the interruption
    assert not [p for p in os.listdir(out) if p.endswith(".tmp")]

    counting = CountingRun()
    monkeypatch.setattr(SWEEP, "run", counting)
    report = ds.sweep(BASE, grid, out, progress=False)
    assert (report.skipped, report.ran) == (4, 4)
    assert counting.calls == 2  # only the two unfinished batches

    # a truncated NPZ and a garbled JSON are detected and rerun, and only those
    runs = S.plan(BASE, grid)
    victim, other = runs[0], runs[5]
    npz = os.path.join(out, f"{victim.id}.npz")
    with open(npz, "r+b") as fh:
        fh.truncate(os.path.getsize(npz) // 2)
    with open(os.path.join(out, f"{other.id}.json"), "w") as fh:
        fh.write('{"format": "decsim-run/1", "id": ')
    assert not S.is_complete(out, victim.id) and not S.is_complete(out, other.id)
    with pytest.warns(store.StoreWarning) as caught:  # damaged runs are skipped when reading
        assert len(ds.load_results(out, final=True)) == 6
    assert sorted(str(w.message) for w in caught) == sorted(
        [f"decsim store: skipped run {victim.id}: {npz}: the NPZ does not match the checksum "
         f"npz_sha256 in its JSON",
         f"decsim store: skipped run {other.id}: {out}/{other.id}.json: the JSON does not parse "
         f"(Expecting value: line 1 column 34 (char 33))"])
    counting = CountingRun()
    monkeypatch.setattr(SWEEP, "run", counting)
    with pytest.warns(store.StoreWarning, match="decsim sweep: recomputing run") as caught:
        report = ds.sweep(BASE, grid, out, progress=False)
    assert len(caught) == 2
    assert (report.skipped, report.ran) == (6, 2)
    assert sorted(counting.seeds) == sorted([[victim.config["seed"]], [other.config["seed"]]])
    assert all(S.is_complete(out, r.id) for r in runs)
    # a record whose config was edited no longer matches its id
    path = os.path.join(out, f"{victim.id}.json")
    record = json.loads(open(path).read())
    record["config"]["steps"] = 999
    open(path, "w").write(json.dumps(record))
    assert not S.is_complete(out, victim.id)


def test_diverged_run_is_recorded_and_the_sweep_goes_on(tmp_path):
    grid = {"algorithm.learning_rate": [0.1, 50.0], "seed": [0, 1]}
    report = ds.sweep(BASE, grid, str(tmp_path), progress=False)
    assert (report.ran, report.diverged) == (4, 2)
    final = ds.load_results(str(tmp_path), final=True).set_index(
        ["algorithm.learning_rate", "seed"])
    assert list(final.loc[50.0, "status"]) == ["diverged", "diverged"]
    assert list(final.loc[0.1, "status"]) == ["ok", "ok"]
    assert (final.loc[50.0, "diverged_step"] > 0).all()
    assert (final.loc[0.1, "diverged_step"] == -1).all()
    assert np.isfinite(final.loc[0.1, "loss"]).all()
    # diverged runs are finished
    assert ds.sweep(BASE, grid, str(tmp_path), progress=False).skipped == 4


def test_shards_split_the_grid_by_group(tmp_path):
    grid = {"algorithm.learning_rate": [0.02, 0.05, 0.1], "topology.name": ["ring", "complete"],
            "seed": [0, 1]}
    full = S.plan(BASE, grid)
    shards = [S.plan(BASE, grid, shard=f"{i}/3") for i in range(3)]
    assert sorted(r.id for part in shards for r in part) == sorted(r.id for r in full)
    assert [len(p) for p in shards] == [4, 4, 4]
    groups = [{r.group for r in part} for part in shards]
    assert not (groups[0] & groups[1]) and not (groups[1] & groups[2])
    # deterministic
    assert [r.id for r in S.plan(BASE, grid, shard=(1, 3))] == [r.id for r in shards[1]]
    for i in range(3):
        ds.sweep(BASE, grid, str(tmp_path), shard=f"{i}/3", progress=False)
    assert ds.load_results(str(tmp_path), final=True)["run"].nunique() == 12
    for bad in ["3/3", "-1/2", "a/b", "1"]:
        with pytest.raises(ValueError, match="i/k"):
            S.parse_shard(bad)


def test_load_results_columns_and_histories(tmp_path):
    cfg = dict(BASE, problem=dict(BASE["problem"], noise=0.0))
    ds.sweep(cfg, {"seed": [0, 1], "topology.name": ["ring", "complete"]}, str(tmp_path),
             progress=False)
    frame = ds.load_results(str(tmp_path))
    for col in ("run", "group", "seed", "step", "loss", "grad_norm_sq", "consensus", "bits",
                "algorithm.name", "algorithm.learning_rate", "topology.name", "n_workers", "status",
                "spectral_gap", "suboptimality", "f_star"):
        assert col in frame.columns, col
    assert len(frame) == 4 * 5  # 4 runs, evaluations at steps 0, 5, 10, 15, 20
    np.testing.assert_allclose(frame["suboptimality"], frame["loss"] - frame["f_star"])
    assert (frame["suboptimality"] >= -1e-6).all()
    final = ds.load_results(str(tmp_path), final=True)
    assert len(final) == 4 and (final["step"] == 20).all()
    hists = ds.study.load_histories(str(tmp_path))
    assert len(hists) == 2
    for h in hists.values():
        assert h.seeds == [0, 1] and h.metrics["loss"].shape == (2, 5)
    # without noise the two seeds coincide (full local gradients)
    h = next(iter(hists.values()))
    np.testing.assert_allclose(h.metrics["loss"][0], h.metrics["loss"][1], rtol=1e-6)
    (tmp_path / "empty").mkdir()
    assert len(ds.load_results(str(tmp_path / "empty"))) == 0
    with pytest.raises(FileNotFoundError, match="missing"):
        ds.load_results(str(tmp_path / "missing"))


def test_store_files_are_plain_json_and_npz(tmp_path):
    ds.sweep(BASE, None, str(tmp_path), progress=False, save_params=True)
    (run_id,) = [p[:-5] for p in os.listdir(tmp_path) if p.endswith(".json")]
    record = json.loads((tmp_path / f"{run_id}.json").read_text())
    assert record["id"] == run_id == ds.config.config_hash(record["config"])
    assert record["status"] == "ok" and record["info"]["topology"] == "ring(4)"
    with np.load(tmp_path / f"{run_id}.npz", allow_pickle=False) as npz:
        assert "steps" in npz.files and "metric/loss" in npz.files
        params = [k for k in npz.files if k.startswith("param/")]
        assert params and npz[params[0]].shape == (4, 3)


def test_sweep_errors_before_any_compilation(tmp_path):
    before = runner.trace_count()
    grid = {"algorithm.name": ["dsgd", "gradient_trakcing"]}
    with pytest.raises(ValueError, match="Did you mean 'gradient_tracking'"):
        ds.sweep(BASE, grid, str(tmp_path), progress=False)
    grid = {"algorithm.learning_rate": [0.1, -0.1]}  # the factory rejects the second value
    with pytest.raises(ValueError, match="learning_rate must be a finite positive number"):
        ds.sweep(BASE, grid, str(tmp_path), progress=False)
    assert runner.trace_count() == before
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".json")]
