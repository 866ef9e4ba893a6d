"""ds.compare / decsim compare (docs/reference/comparison.md): the scores, intervals and costs
against float64 numpy/scipy recomputations from the store, the choice, the warnings, resuming,
γ tuning, bad input before any compilation, the written tables and figures, the CLI and
the examples."""

import importlib
import math
import os
import pathlib

import numpy as np
import pytest
from scipy import stats

import decsim as ds
from decsim import cli
from decsim import config as _config
from decsim.study import compare_report as R
from decsim.study.compare import CompareWarning, best_point, compare_plan, default_grid, tail_score

ROOT = pathlib.Path(__file__).resolve().parents[1]
BASE = {"problem": {"name": "quadratic", "dim": 3, "noise": 0.1}, "topology": "ring",
        "n_workers": 4, "steps": 40, "eval_every": 10}
SPEC = {"compare": {"tuning_seeds": [0, 1], "eval_seeds": [5, 6, 7], "grid_points": 3,
                    "learning_rate": 0.2},
        "base": BASE,
        "algorithm": [{"name": "dsgd"}, {"name": "gradient_tracking"}]}


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("compare"))
    return out, ds.compare(SPEC, out, progress=False)


def _frame(out):
    return ds.load_results(os.path.join(out, "runs")).sort_values(["run", "step"])


def _reference_t(values):
    v = np.asarray(values, np.float64)
    k = v.size
    half = stats.t.ppf(0.975, k - 1) * np.sqrt(np.sum((v - v.mean()) ** 2) / (k - 1)) / np.sqrt(k)
    return v.mean(), v.mean() - half, v.mean() + half


# ---------------------------------------------------------------------------------------------
# the pieces


def test_tail_score_means_the_last_tenth_and_diverged_runs_lose():
    v = np.arange(30, dtype=np.float64)[::-1]  # 30 evaluations: the last ceil(3) = 3 count
    assert tail_score(v, 0.1) == pytest.approx(np.mean([2.0, 1.0, 0.0]))
    assert tail_score(v[:11], 0.1) == pytest.approx(np.mean(v[9:11]))  # ceil(1.1) = 2
    assert tail_score([5.0, 1.0, np.nan], 0.1) == math.inf
    assert tail_score([5.0, 1.0, np.inf], 0.5) == math.inf


def test_t_interval_is_the_student_t_interval():
    m, lo, hi = R.t_interval([1.0, 2.0, 3.0])
    q = 0.95 / np.sqrt(2 * 0.975 * 0.025)  # t quantile with 2 degrees of freedom, closed form
    assert (m, lo, hi) == pytest.approx((2.0, 2.0 - q / np.sqrt(3), 2.0 + q / np.sqrt(3)),
                                        rel=1e-12)
    rng = np.random.default_rng(0)
    x = rng.normal(size=6)
    assert R.t_interval(x) == pytest.approx(_reference_t(x), rel=1e-12)
    assert R.t_interval([np.inf, 1.0, 3.0]) == pytest.approx(_reference_t([1.0, 3.0]))
    m, lo, hi = R.t_interval([4.0])
    assert m == 4.0 and math.isnan(lo) and math.isnan(hi)


def test_default_grid_is_a_centred_factor_two_grid():
    g = default_grid(0.3, 7)
    assert len(g) == 7 and g[3] == 0.3
    np.testing.assert_allclose(np.diff(np.log2(g)), 1.0, rtol=1e-12)


def test_best_point_minimises_the_mean_and_inf_loses():
    assert best_point([{}, {}, {}], [[1.0, 3.0], [1.5, 1.6], [0.1, math.inf]]) == (1, False)
    assert best_point([{}, {}], [[math.inf], [math.inf]]) == (0, True)


def _history(loss, extra=()):
    loss = np.asarray(loss, np.float64)
    steps = np.arange(loss.shape[1]) * 10
    ones = np.ones_like(loss)
    metrics = {"loss": loss, "grad_evals": np.cumsum(ones, 1) * 2,
               "comm_rounds": np.cumsum(ones, 1), "bits": np.cumsum(ones, 1) * 64.0}
    for name in extra:
        metrics[name] = np.cumsum(ones, 1) * 0.5 + np.arange(loss.shape[0])[:, None]
    return ds.History(steps=steps, metrics=metrics, params=None,
                      diverged=np.zeros(loss.shape[0], bool),
                      diverged_step=-np.ones(loss.shape[0], int), seeds=list(range(len(loss))),
                      config={})


def test_costs_to_target_against_a_loop_and_sim_time_when_recorded(tmp_path):
    rng = np.random.default_rng(1)
    loss = np.exp(-0.1 * np.arange(20))[None] + 0.2 * rng.random((4, 20))
    hist = _history(loss, extra=("sim_time",))
    target, w = 0.35, 2  # window ceil(0.1 * 20) = 2
    got = R.costs_to_target(hist, "loss", target, 0.1)
    for s in range(4):
        smooth = [np.mean(loss[s, max(0, i - w + 1):i + 1]) for i in range(20)]
        hit = next((i for i, v in enumerate(smooth) if v <= target), None)
        for c in ("steps", "grad_evals", "comm_rounds", "bits", "sim_time"):
            want = math.nan if hit is None else (
                hist.steps[hit] if c == "steps" else hist.metrics[c][s, hit])
            assert got[c][s] == pytest.approx(want, nan_ok=True)
        # a seed whose final score is within the target reaches it
        if tail_score(loss[s], 0.1) <= target:
            assert np.isfinite(got["steps"][s])

    # the summary and the figures use sim_time when the runs record it
    hists = {"a": hist, "b": _history(loss * 2, extra=("sim_time",))}
    settings = dict(ds.study.COMPARE_DEFAULTS, metric="loss", target="worst")
    table, tgt = R.summarise(hists, {"a": {"learning_rate": 0.1}, "b": {"learning_rate": 0.2}},
                             settings)
    assert tgt == pytest.approx(max(np.mean([tail_score(r) for r in loss * k]) for k in (1, 2)))
    assert "sim_time_to_target" in table.columns
    res = ds.study.CompareResult(table=table, tuning=table, chosen={}, target=tgt, warnings=[],
                                 files={}, store="", settings=settings, histories=hists)
    files = R.write_compare(res, str(tmp_path))
    assert os.path.getsize(files["curves_sim_time"]) > 0
    assert "sim time to target" in R.markdown_table(res)


# ---------------------------------------------------------------------------------------------
# the protocol, recomputed from the store


def test_the_choice_is_the_argmin_of_the_tuning_scores(done):
    out, res = done
    f = _frame(out)
    tuning = f[f["seed"].isin([0, 1])]
    assert tuning["run"].nunique() == 2 * 3 * 2
    for name in ("dsgd", "gradient_tracking"):
        runs = tuning[tuning["algorithm.name"] == name]
        finals = runs.groupby(["algorithm.learning_rate", "seed"])["loss"].last()  # window 1
        means = finals.groupby(level=0).mean()
        assert res.chosen[name] == {"learning_rate": float(means.idxmin())}
        rows = res.tuning[res.tuning["algorithm"] == name].set_index("learning_rate")
        np.testing.assert_allclose(rows.loc[means.index, "score"], means.values, rtol=1e-12)
        assert rows["chosen"].sum() == 1
    np.testing.assert_allclose(sorted(res.tuning["learning_rate"].unique()), [0.1, 0.2, 0.4])


def test_final_metrics_and_costs_match_the_store(done):
    out, res = done
    f = _frame(out)
    ev = f[f["seed"].isin([5, 6, 7])]
    finals = {}
    for name in ("dsgd", "gradient_tracking"):
        lr = res.chosen[name]["learning_rate"]
        runs = ev[(ev["algorithm.name"] == name) & (ev["algorithm.learning_rate"] == lr)]
        assert sorted(runs["seed"].unique()) == [5, 6, 7]  # disjoint from the tuning seeds
        finals[name] = runs.groupby("seed")["loss"].last().values
    target = max(v.mean() for v in finals.values())
    assert res.target == pytest.approx(target, rel=1e-12)
    for name, v in finals.items():
        row = res.table.set_index("algorithm").loc[name]
        assert (row["loss"], row["loss_ci_low"], row["loss_ci_high"]) == pytest.approx(
            _reference_t(v), rel=1e-12)
        lr = res.chosen[name]["learning_rate"]
        runs = ev[(ev["algorithm.name"] == name) & (ev["algorithm.learning_rate"] == lr)]
        hits = [g[g["loss"] <= target].head(1) for _, g in runs.groupby("seed")]
        hits = [h for h in hits if len(h)]
        assert row["reached"] == len(hits)
        if v.mean() == target:
            assert len(hits) >= 1  # the worst algorithm reaches its own final mean
        for c, col in (("steps", "step"), ("bits", "bits"), ("comm_rounds", "comm_rounds")):
            want = np.mean([float(h[col].iloc[0]) for h in hits])
            assert row[f"{c}_to_target"] == pytest.approx(want, rel=1e-12)


def test_the_files_hold_the_tables(done):
    out, res = done
    import pandas as pd

    for kind in ("csv", "tuning_csv", "markdown", "latex", "json", "curves_steps", "curves_bits"):
        assert os.path.getsize(res.files[kind]) > 0
    assert "curves_sim_time" not in res.files  # these runs record no sim_time
    csv = pd.read_csv(res.files["csv"])
    np.testing.assert_allclose(csv["loss"], res.table["loss"], rtol=1e-12)
    md = open(res.files["markdown"]).read()
    assert sum(line.startswith("| ") for line in md.splitlines()) == 3  # header + 2 rows
    assert "| gradient_tracking |" in md
    tex = open(res.files["latex"]).read()
    assert tex.index(r"\toprule") < tex.index(r"\midrule") < tex.index(r"\bottomrule")
    assert r"gradient\_tracking" in tex and tex.count(r"\\") == 3


def test_a_second_compare_reuses_every_run(done):
    out, res = done
    again = ds.compare(SPEC, out, progress=False)
    assert (again.runs_computed, again.runs_reused) == (0, 18)
    assert again.chosen == res.chosen
    np.testing.assert_array_equal(again.table["loss"], res.table["loss"])


def test_an_interrupted_compare_resumes(tmp_path, monkeypatch):
    module = importlib.import_module("decsim.study.sweep")
    real, calls = module.run, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(module, "run", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ds.compare(SPEC, str(tmp_path), progress=False)
    monkeypatch.setattr(module, "run", real)
    res = ds.compare(SPEC, str(tmp_path), progress=False)
    assert (res.runs_computed, res.runs_reused) == (12, 6)  # the first batch: 3 rates x 2 seeds


def test_each_algorithm_is_tuned_by_one_compiled_program(tmp_path, monkeypatch):
    """The grid (3 learning rates) x the tuning seeds (2) of an algorithm is one vmapped run that
    traces one segment program; the evaluation seeds are one more per algorithm."""
    module = importlib.import_module("decsim.study.sweep")
    real, calls = module.run, []

    def counted(algorithm, *args, **kwargs):
        before = ds.runner.trace_count("segment")
        hist = real(algorithm, *args, **kwargs)
        calls.append((algorithm.name, kwargs["seeds"], kwargs["hparams"]["learning_rate"],
                      ds.runner.trace_count("segment") - before))
        return hist

    monkeypatch.setattr(module, "run", counted)
    ds.runner.clear_cache()  # the programs of other tests would otherwise be reused
    start = ds.runner.trace_count("segment")
    res = ds.compare(SPEC, str(tmp_path), progress=False)
    grid = sorted((lr, seed) for lr in default_grid(0.2, 3) for seed in (0, 1))
    assert [c[0] for c in calls] == ["dsgd", "gradient_tracking"] * 2
    for name, seeds, rates, traces in calls[:2]:  # tuning
        assert sorted(zip(rates, seeds)) == grid and traces == 1, name
    for name, seeds, rates, traces in calls[2:]:  # evaluation
        assert seeds == [5, 6, 7] and set(rates) == {res.chosen[name]["learning_rate"]}, name
        assert traces == 1, name
    assert ds.runner.trace_count("segment") - start == 4 and res.runs_computed == 18


def test_edges_and_divergence_warn_and_diverged_settings_lose(tmp_path):
    spec = {"compare": {"tuning_seeds": [0, 1], "eval_seeds": [2, 3]}, "base": BASE,
            "algorithm": [{"name": "dsgd", "label": "wide", "learning_rate": [0.1, 0.2, 50.0]},
                          {"name": "dsgd", "label": "low", "learning_rate": [0.01, 0.02]},
                          {"name": "dsgd", "label": "huge", "learning_rate": [50.0, 100.0]}]}
    with pytest.warns(CompareWarning) as record:
        res = ds.compare(spec, str(tmp_path), progress=False)
    text = [str(w.message) for w in record]
    assert any("low: the best learning_rate = 0.02 is the largest" in t and "add 0.04" in t
               for t in text)
    assert any("huge: every setting" in t for t in text)
    assert not any(t.startswith("decsim compare: wide") for t in text)
    wide = res.tuning[res.tuning["algorithm"] == "wide"].set_index("learning_rate")
    assert wide.loc[50.0, "score"] == math.inf and res.chosen["wide"]["learning_rate"] != 50.0
    row = res.table.set_index("algorithm").loc["huge"]
    assert row["diverged"] == 2 and math.isnan(row["loss"])
    assert np.isfinite(res.target) and len(res.warnings) == 2


def test_gamma_of_a_compressed_method_comes_from_tune_gamma(tmp_path, monkeypatch):
    top = {"name": "top_k", "fraction": 0.34}
    spec = {"compare": {"tuning_seeds": [0], "eval_seeds": [1], "grid_points": 1},
            "base": BASE, "algorithm": [{"name": "choco_sgd", "compressor": top,
                                         "learning_rate": 0.2}]}
    res = ds.compare(spec, str(tmp_path), progress=False)
    prob = _config.build_problem(dict(BASE, algorithm={"name": "dsgd", "learning_rate": 0.1}))
    want = ds.algorithms.tune_gamma(ds.topology.ring(4), ds.compression.top_k(0.34),
                                    ds.tree.leaf_sizes(prob.params0))
    assert res.chosen["choco_sgd"] == {"learning_rate": 0.2, "gamma": pytest.approx(want)}

    def no_tuning(*args, **kwargs):
        raise AssertionError("tune_gamma ran again")

    monkeypatch.setattr(ds.algorithms, "tune_gamma", no_tuning)  # resumed: γ read back
    again = ds.compare(spec, str(tmp_path), progress=False)
    assert again.runs_computed == 0 and again.chosen == res.chosen


def test_bias_correction_wins_the_comparison(tmp_path):
    # label-sorted digits, full gradients: D-SGD keeps a heterogeneity bias that gradient
    # tracking removes
    base = {"problem": {"name": "logistic_regression", "dataset": "digits", "partition": "sorted",
                        "batch_size": None, "l2": 1e-2},
            "topology": {"name": "ring", "weights": "lazy"}, "n_workers": 8, "steps": 200,
            "eval_every": 20}
    spec = {"compare": {"tuning_seeds": [0], "eval_seeds": [1, 2, 3], "grid_points": 5,
                        "learning_rate": 0.4},
            "base": base, "algorithm": [{"name": "dsgd"}, {"name": "gradient_tracking"}]}
    res = ds.compare(spec, str(tmp_path), progress=False)
    t = res.table.set_index("algorithm")
    assert t.loc["gradient_tracking", "loss"] < 0.9 * t.loc["dsgd", "loss"]
    assert res.target == t.loc["dsgd", "loss"]
    assert t.loc["gradient_tracking", "reached"] == 3
    assert t.loc["gradient_tracking", "steps_to_target"] < t.loc["dsgd", "steps_to_target"]


# ---------------------------------------------------------------------------------------------
# bad input, before any compilation


@pytest.mark.parametrize("change, match", [
    (lambda s: s["algorithm"].append({"name": "dsdg"}), r"'dsdg' is not a registered.*dsgd"),
    (lambda s: s["algorithm"].append({"name": "dsgd", "label": "b", "learning_rate": ["0.1"]}),
     r"must be a finite number; got '0.1'"),
    (lambda s: s["compare"].update(eval_seeds=[1, 5]), r"share \[1\] with tuning_seeds"),
    (lambda s: s["compare"].update(grid_point=3), r"unknown \[compare\] key 'grid_point'"),
    (lambda s: s.update(grid={}), r"unknown comparison key 'grid'"),
    (lambda s: s["compare"].update(grid_points=4), r"grid_points must be an odd integer"),
    (lambda s: s["base"].update(seeds=[0]), r"\[base\] must not set seeds"),
    (lambda s: s["algorithm"].append({"name": "detag", "rounds": [1, 2]}),
     r"rounds = .* only numeric hyperparameters"),
    (lambda s: s["algorithm"].append({"name": "gradient_tracking", "label": "g", "gamma": "tune"}),
     r"gamma = 'tune' needs"),
    (lambda s: s["algorithm"].append({"name": "dsgd"}), r"both labelled 'dsgd'"),
    (lambda s: s["base"].update(topology="rign"), r"unknown topology 'rign'"),
])
def test_bad_specs_fail_before_anything_compiles(tmp_path, change, match):
    import copy

    spec = copy.deepcopy(SPEC)
    spec["compare"]["tuning_seeds"] = [0, 1]
    change(spec)
    traces = ds.runner.trace_count()
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=match):
        ds.compare(spec, str(out), progress=False)
    assert ds.runner.trace_count() == traces and not out.exists()


# ---------------------------------------------------------------------------------------------
# the command line and the examples


TOML = """
[compare]
tuning_seeds = [0, 1]
eval_seeds = [5, 6, 7]
grid_points = 3
learning_rate = 0.2

[base]
topology = "ring"
n_workers = 4
steps = 40
eval_every = 10
problem = { name = "quadratic", dim = 3, noise = 0.1 }

[[algorithm]]
name = "dsgd"

[[algorithm]]
name = "gradient_tracking"
"""


def test_cli_prints_the_table_and_the_files(done, tmp_path, capsys):
    out, res = done
    path = tmp_path / "spec.toml"
    path.write_text(TOML)
    assert cli.main(["compare", str(path), "--out", out, "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "| dsgd |" in text and "0 runs computed, 18 reused" in text
    assert os.path.join(out, "compare.tex") in text
    path.write_text(TOML.replace('"dsgd"', '"dsdg"'))
    assert cli.main(["compare", str(path), "--out", str(tmp_path / "o")]) == 2
    assert "valid names" in capsys.readouterr().err and not (tmp_path / "o").exists()


EXAMPLES = sorted((ROOT / "examples").glob("compare_*.toml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_specs_are_valid(path):
    spec = _config.load(path)
    assert {a["name"] for a in spec["algorithm"]} <= set(_config.algorithms())
    settings, base, entries = compare_plan(spec)
    assert len(entries) >= 3 and set(settings["tuning_seeds"]).isdisjoint(settings["eval_seeds"])
    _config.build(dict(base, algorithm={"name": "dsgd", "learning_rate": 0.1}, seed=0))


def test_there_are_two_example_comparisons():
    assert {p.name for p in EXAMPLES} >= {"compare_heterogeneity.toml", "compare_compressed.toml"}
