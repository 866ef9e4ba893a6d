"""The command line and the speedup study (small settings)."""

import json
import os

import numpy as np
import pandas as pd
import pytest

import decsim as ds
from decsim import cli


def test_topology_command_prints_spectra(capsys):
    assert cli.main(["topology", "ring", "8", "--weights", "uniform"]) == 0
    out = capsys.readouterr().out
    assert "ring(8), uniform: n = 8, edges = 8" in out
    assert "spectral_gap = 0.195262" in out
    assert "lambda_min   = -0.333333" in out


def test_topology_command_errors_are_clean(capsys):
    assert cli.main(["topology", "hypercube", "6"]) == 2
    assert "power of two" in capsys.readouterr().err
    assert cli.main(["topology", "rign", "8"]) == 2
    assert "Did you mean 'ring'" in capsys.readouterr().err


def test_speedup_study_small(tmp_path):
    res = ds.speedup_study(out_dir=str(tmp_path), progress=False, ns=(1, 2, 4),
                           topologies=("ring", "complete"), steps=400, eval_every=10, seeds=(0, 1))
    t = res.table
    assert len(t) == 6
    assert set(t["topology"]) == {"ring", "complete"} and set(t["algorithm"]) == {"dsgd"}
    one = t[t["n"] == 1]
    assert np.all(one["speedup"] == 1.0) and np.all(one["transient_steps"] == 0)
    # more workers reach the single worker's final error sooner
    four = t[t["n"] == 4]
    assert np.all(four["speedup"] > 1.5)
    np.testing.assert_allclose(t["efficiency"], t["speedup"] / t["n"])
    assert np.all(t["rate_ci_low"] <= t["rate_exponent"]) and np.all(
        t["rate_exponent"] <= t["rate_ci_high"]
    )
    assert np.all(np.isfinite(t["rate_exponent"]))
    # the complete graph is exact averaging: no transient against centralized SGD
    assert np.all(t[t["topology"] == "complete"]["transient_steps"] == 0)
    assert sorted(res.reference) == [2, 4]
    for name in (
        "speedup.csv",
        "speedup.json",
        "convergence.png",
        "speedup.png",
        "error_vs_nt.png",
        "topologies.png",
    ):
        assert os.path.getsize(tmp_path / name) > 0
    meta = json.loads((tmp_path / "speedup.json").read_text())
    assert meta["target"] == pytest.approx(res.target)
    assert not t["diverged"].any()
    # the runs are a sweep store that the same study finds finished (and resumes)
    base, grid, keys = ds.study.speedup_plan(
        ns=(1, 2, 4), topologies=("ring", "complete"), steps=400, eval_every=10, seeds=(0, 1)
    )
    report = ds.sweep(base, grid, str(tmp_path / "runs"), progress=False)
    assert report.ran == 0 and report.skipped == report.total == res.config["runs_computed"]
    assert len(set(keys.values())) == report.total // 2  # groups of two seeds
    frame = ds.load_results(str(tmp_path / "runs"), final=True)
    assert frame["run"].nunique() == report.total


def test_speedup_command(tmp_path, capsys):
    # same steps and seeds as test_speedup_study_small, so D-SGD's compiled programs are reused
    code = cli.main(
        [
            "speedup",
            "--out",
            str(tmp_path / "out"),
            "--ns",
            "1,2",
            "--topologies",
            "ring",
            "--steps",
            "400",
            "--eval-every",
            "10",
            "--seeds",
            "2",
            "--quiet",
            "--algorithms",
            "dsgd,gradient_tracking",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    for part in (
        "steps_to_target",
        "efficiency",
        "exponent [95% CI]",
        "transient_steps",
        "runs computed",
        "dsgd, gradient_tracking on logistic regression",
    ):
        assert part in out, part
    table = pd.read_csv(tmp_path / "out" / "speedup.csv")
    assert list(table["algorithm"]) == ["dsgd", "dsgd", "gradient_tracking", "gradient_tracking"]
    assert list(table["n"]) == [1, 2, 1, 2]
    assert (tmp_path / "out" / "speedup.png").exists()


@pytest.mark.parametrize(
    "argv, match",
    [
        (["speedup", "--ns", "2,4", "--quiet"], "ns must include 1"),
        (["speedup", "--topologies", "ring,social", "--quiet"], "not usable in the speedup study"),
        (["speedup", "--algorithms", "adam", "--quiet"], "unknown algorithm 'adam'; valid names:"),
        (
            ["speedup", "--algorithms", "dsgd,gradient_trackng", "--quiet"],
            "Did you mean 'gradient_tracking'",
        ),
    ],
)
def test_speedup_command_validates_before_running(argv, match, capsys):
    from decsim import runner

    before = runner.trace_count()
    assert cli.main(argv) == 2
    assert match in capsys.readouterr().err
    assert runner.trace_count() == before


RUN_TOML = """
n_workers = 4
steps = 20
eval_every = 10
seeds = [0, 1]
topology = "ring"

[algorithm]
name = "dsgd"
learning_rate = 0.1

[problem]
name = "quadratic"
dim = 3
noise = 0.1
"""

SWEEP_TOML = """
[base]
n_workers = 4
steps = 20
eval_every = 10
topology = "ring"
algorithm = { name = "dsgd", learning_rate = 0.1 }
problem = { name = "quadratic", dim = 3, noise = 0.1 }

[grid]
seed = [0, 1]
algorithm.learning_rate = [0.05, 0.1]
"""


def test_run_command(tmp_path, capsys):
    path = tmp_path / "run.toml"
    path.write_text(RUN_TOML)
    assert cli.main(["run", str(path), "--out", str(tmp_path / "store"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "dsgd on quadratic(d=3) over ring(4)" in out and "final metrics" in out
    frame = ds.load_results(str(tmp_path / "store"), final=True)
    assert sorted(frame["seed"]) == [0, 1] and (frame["status"] == "ok").all()
    # the stored run is the one a sweep of the same config would find finished
    base = ds.config.load(path)
    assert ds.sweep(base, None, str(tmp_path / "store"), progress=False).skipped == 2
    path.write_text(RUN_TOML.replace('"dsgd"', '"dsgdd"'))
    assert cli.main(["run", str(path)]) == 2
    assert "Did you mean 'dsgd'" in capsys.readouterr().err
    assert cli.main(["run", str(tmp_path / "nope.toml")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_sweep_and_plot_commands(tmp_path, capsys):
    spec = tmp_path / "grid.toml"
    spec.write_text(SWEEP_TOML)
    out = str(tmp_path / "res")
    assert cli.main(["sweep", str(spec), "--out", out, "--quiet", "--shard", "0/2"]) == 0
    first = capsys.readouterr().out
    assert "(shard 0/2): 2 runs, 0 already finished, 2 computed" in first
    assert cli.main(["sweep", str(spec), "--out", out, "--quiet"]) == 0
    assert "4 runs, 2 already finished, 2 computed (0 diverged)" in capsys.readouterr().out
    assert cli.main(["plot", out]) == 0
    printed = capsys.readouterr().out
    assert "4 runs in" in printed
    for name in ("convergence.png", "final_vs_algorithm.learning_rate.png"):
        assert os.path.getsize(os.path.join(out, name)) > 0
    assert cli.main(["sweep", str(spec), "--out", out, "--shard", "2/2"]) == 2
    assert "0 <= i < k" in capsys.readouterr().err
    assert cli.main(["plot", str(tmp_path / "empty")]) == 2
    assert "not a folder" in capsys.readouterr().err
    spec.write_text("[base]\nsteps = 3\n[grd]\nseed = [0]\n")
    assert cli.main(["sweep", str(spec), "--out", out]) == 2
    assert "[base] table" in capsys.readouterr().err


def test_import_does_not_import_matplotlib():
    import subprocess
    import sys

    code = "import sys, decsim; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ---------------------------------------------------------------------------------------------
# user errors: exit status 2, one line on stderr, before any computation

_RUN_TOML = """
n_workers = 4
steps = 4
eval_every = 2
topology = "ring"
algorithm = {name = "dsgd", learning_rate = 0.1}
problem = {name = "quadratic", dim = 3, noise = NOISE}
"""


def _bad_cli_cases(tmp_path):
    good = tmp_path / "good.toml"
    good.write_text(_RUN_TOML.replace("NOISE", "0.1"))
    bad_type = tmp_path / "bad_type.toml"
    bad_type.write_text(_RUN_TOML.replace("NOISE", '"0.1"'))
    bad_lr = tmp_path / "bad_lr.toml"
    bad_lr.write_text(_RUN_TOML.replace("NOISE", "0.1").replace("0.1}", '"fast"}', 1))
    sweep = tmp_path / "sweep.toml"
    sweep.write_text("[base]\n" + _RUN_TOML.replace("NOISE", "0.1") + "\n[grid]\nseed = [0, 1]\n")
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    return [
        (["run", str(bad_type)], "noise must be a finite number >= 0"),
        (["run", str(bad_lr)], "learning_rate must be a positive number"),
        (["run", str(good), "--out", str(a_file)], "is a file, not a folder"),
        (["run", str(good), "--out", str(a_file / "under")], "cannot be written"),
        (["sweep", str(tmp_path)], "is a folder; give the path of a SWEEP.toml file"),
        (["sweep", str(sweep), "--shard", "0/0"], "shard must be 'i/k'"),
        (["sweep", str(sweep), "--shard=-1/4"], "shard must be 'i/k'"),
        (["sweep", str(sweep), "--shard", "4/4"], "shard must be 'i/k'"),
        (["sweep", str(sweep), "--shard", "x"], "shard must be 'i/k'"),
        (["sweep", str(sweep), "--out", str(a_file)], "is a file, not a folder"),
        (["run", str(tmp_path / "missing.toml")], "no such file"),
    ]


def test_user_errors_exit_2_with_one_line(tmp_path, capsys):
    from decsim import cli, runner

    before = runner.trace_count()
    for argv, part in _bad_cli_cases(tmp_path):
        assert cli.main(argv + ["--quiet"] if argv[0] == "sweep" else argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and part in err, (argv, err)
        assert "Traceback" not in err
    assert runner.trace_count() == before  # refused before anything compiled


def test_user_error_in_a_subprocess_has_no_traceback(tmp_path):
    import subprocess
    import sys

    bad = tmp_path / "bad.toml"
    bad.write_text(_RUN_TOML.replace("NOISE", '"0.1"'))
    proc = subprocess.run(
        [sys.executable, "-m", "decsim.cli", "run", str(bad)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
