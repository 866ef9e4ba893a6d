"""Notebooks execute top to bottom (nbclient); example scripts run on small settings."""

import concurrent.futures
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


@pytest.fixture(scope="session")
def executed_notebooks(request, tmp_path_factory):
    """The notebooks this session selected, executed top to bottom, several kernels at a time.

    Executing the notebooks is the longest part of the suite, mostly compilation in each kernel's
    own process, so they run in parallel (one kernel per core) and each test reads its result.
    Returns ``{path: (notebook, error or None)}``."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    paths = [item.callspec.params["path"] for item in request.session.items
             if getattr(item, "originalname", None) == "test_notebook_executes"]

    cwds = {path: str(tmp_path_factory.mktemp(path.stem)) for path in paths}  # not thread-safe

    def execute(path):
        nb = nbformat.read(path, as_version=4)
        client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                         resources={"metadata": {"path": cwds[path]}})
        try:
            client.execute()
        except Exception as err:  # reported by the notebook's own test
            return nb, err
        return nb, None

    workers = max(1, min(len(paths), os.cpu_count() or 1))
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        return dict(zip(paths, pool.map(execute, paths)))


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_executes(path, executed_notebooks):
    saved = pytest.importorskip("nbformat").read(path, as_version=4)
    assert any(c.cell_type == "code" and c.outputs for c in saved.cells), "saved without outputs"
    nb, error = executed_notebooks[path]
    if error is not None:
        raise error
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]
    assert not errors


def test_there_are_notebooks():
    assert NOTEBOOKS


@pytest.mark.slow
def test_bias_example(tmp_path):
    out = tmp_path / "bias.png"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "bias_on_sorted_data.py"),
            "--steps",
            "1000",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"MPLBACKEND": "Agg", "PATH": "/usr/bin:/bin"},
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    lines = {l.split()[0]: l.split() for l in proc.stdout.splitlines() if l.split()}
    # bias-corrected methods end far below D-SGD's heterogeneity bias
    assert float(lines["gradient_tracking"][1]) < 0.1 * float(lines["dsgd"][1])
    assert float(lines["exact_diffusion"][1]) < 0.1 * float(lines["dsgd"][1])
    assert out.stat().st_size > 0
