"""The command line and the speedup study (small settings)."""

import json
import os

import numpy as np
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
    res = ds.sweep.speedup_study(out_dir=str(tmp_path), progress=False, ns=(1, 2, 4),
                                 topologies=("ring", "complete"), steps=400, eval_every=10,
                                 seeds=(0, 1))
    t = res.table
    assert len(t) == 6
    assert set(t["topology"]) == {"ring", "complete"}
    one = t[t["n"] == 1]
    assert np.all(one["speedup"] == 1.0)
    # more workers reach the single worker's final error sooner
    four = t[t["n"] == 4]
    assert np.all(four["speedup"] > 1.5)
    np.testing.assert_allclose(t["efficiency"], t["speedup"] / t["n"])
    for name in ("speedup.csv", "speedup.json", "convergence.png", "speedup.png"):
        assert os.path.getsize(tmp_path / name) > 0
    meta = json.loads((tmp_path / "speedup.json").read_text())
    assert meta["target"] == pytest.approx(res.target)
    assert not t["diverged"].any()


def test_speedup_command(tmp_path, capsys):
    code = cli.main(["speedup", "--out", str(tmp_path / "out"), "--ns", "1,2", "--topologies", "ring",
                     "--steps", "200", "--eval-every", "10", "--seeds", "1", "--quiet"])
    assert code == 0
    out = capsys.readouterr().out
    assert "steps_to_target" in out and "efficiency" in out
    assert (tmp_path / "out" / "speedup.png").exists()


@pytest.mark.parametrize("argv, match", [
    (["speedup", "--ns", "2,4", "--quiet"], "ns must include 1"),
    (["speedup", "--topologies", "ring,social", "--quiet"], "not usable in the speedup study"),
    (["speedup", "--algorithm", "adam", "--quiet"], "algorithm='adam' is not available"),
])
def test_speedup_command_validates_before_running(argv, match, capsys):
    assert cli.main(argv) == 2
    assert match in capsys.readouterr().err


def test_import_does_not_import_matplotlib():
    import subprocess
    import sys

    code = "import sys, decsim; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
