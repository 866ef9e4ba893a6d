"""Figures: convergence from Histories and from sweep frames, error against nT with the reference
and the fitted exponent, topology drawings, the figures of a sweep folder."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

import decsim as ds  # noqa: E402

BASE = {"algorithm": {"name": "dsgd", "learning_rate": 0.1},
        "problem": {"name": "quadratic", "dim": 3, "mu": 0.5, "L": 1.0, "noise": 0.2, "seed": 0},
        "topology": "ring", "n_workers": 4, "steps": 20, "eval_every": 5}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("store"))
    ds.sweep(
        BASE, {"algorithm.learning_rate": [0.05, 0.1, 0.2], "seed": [0, 1]}, out, progress=False
    )
    return out


def _labels(ax):
    return [t.get_text() for t in ax.get_legend().get_texts()]


def test_convergence_from_histories_and_from_a_frame(store):
    hists = list(ds.study.load_histories(store).values())
    fig = ds.plot.convergence(hists, x="grad_evals", y="loss", labels=["a", "b", "c"])
    ax = fig.axes[0]
    assert _labels(ax) == ["a", "b", "c"]
    assert ax.get_yscale() == "log" and ax.get_xlabel() == "grad evals"
    np.testing.assert_allclose(ax.lines[0].get_ydata(), hists[0].metrics["loss"].mean(axis=0))
    assert len(ax.collections) == 3  # one band per curve (two seeds each)
    plt.close(fig)
    frame = ds.load_results(store)
    fig = ds.plot.convergence(frame, y="suboptimality")
    labels = _labels(fig.axes[0])
    assert labels == ["learning_rate=0.05", "learning_rate=0.1", "learning_rate=0.2"]
    mean = frame[frame["algorithm.learning_rate"] == 0.05].groupby("step")["suboptimality"].mean()
    np.testing.assert_allclose(fig.axes[0].lines[0].get_ydata(), mean.to_numpy())
    plt.close(fig)


def test_error_vs_nt_curves_and_points():
    steps = np.arange(0, 1001, 10)
    curves = {
        n: (steps, np.stack([5.0 / np.sqrt(1 + n * steps) * (1 + 0.01 * s) for s in range(3)]))
        for n in (1, 4, 16)
    }
    fig = ds.plot.error_vs_nt(curves, tail=0.5)
    labels = _labels(fig.axes[0])
    assert labels[-1] == "O(1/sqrt(nT)) reference"
    for label in labels[:3]:  # n = 1, 4, 16
        b = float(label.split("b = ")[1].rstrip(")"))
        assert b == pytest.approx(-0.5, abs=0.02), label
    assert fig.axes[0].get_xscale() == "log" and fig.axes[0].get_yscale() == "log"
    plt.close(fig)

    rng = np.random.default_rng(0)
    rows = [
        dict(n=n, T=T, nT=n * T, seed=s, error=2.0 * (n * T) ** -0.5 * np.exp(0.02 * rng.normal()))
        for n in (1, 4, 16)
        for T in (100, 400, 1600)
        for s in range(4)
    ]
    fig = ds.plot.error_vs_nt(pd.DataFrame(rows), reference_exponent=-0.5)
    fit_label = [l for l in _labels(fig.axes[0]) if l.startswith("fit")][0]
    b, lo, hi = (
        float(v)
        for v in fit_label.replace("fit: b = ", "")
        .replace("[", "")
        .replace("]", "")
        .replace(",", "")
        .split()
    )
    assert lo < -0.5 < hi and b == pytest.approx(-0.5, abs=0.02)
    plt.close(fig)


def test_topology_drawing_shows_the_spectral_gap():
    topo = ds.topology.torus(3, 4)
    fig = ds.plot.topology(topo)
    ax = fig.axes[0]
    assert f"spectral gap {topo.spectral_gap:.4g}" in ax.get_title()
    assert "torus(3x4)" in ax.get_title()
    offsets = np.concatenate([c.get_offsets() for c in ax.collections if len(c.get_offsets())])
    assert len(offsets) == 12  # one marker per worker
    plt.close(fig)
    fig = ds.plot.topology(ds.topology.ring(8))
    assert "spectral gap 0.1953" in fig.axes[0].get_title()  # docs/reference/topologies.md#spectra
    plt.close(fig)


def test_speedup_plot_has_the_ideal_line_and_one_line_per_series():
    table = pd.DataFrame(
        {
            "algorithm": ["a"] * 3 + ["b"] * 3,
            "topology": ["ring"] * 6,
            "n": [1, 2, 4] * 2,
            "speedup": [1, 1.9, 3.5, 1, 1.5, 2.0],
        }
    )
    fig = ds.plot.speedup(table)
    assert _labels(fig.axes[0]) == ["ideal (linear)", "a · ring", "b · ring"]
    np.testing.assert_allclose(fig.axes[0].lines[0].get_ydata(), [1, 2, 4])
    plt.close(fig)


def test_sweep_figures(store):
    frame = ds.load_results(store)
    figs = ds.plot.sweep_figures(frame)
    assert set(figs) == {"convergence", "final_vs_algorithm.learning_rate"}
    ax = figs["final_vs_algorithm.learning_rate"].axes[0]
    final = (
        frame[frame["step"] == frame["step"].max()]
        .groupby("algorithm.learning_rate")["suboptimality"]
        .mean()
    )
    np.testing.assert_allclose(ax.lines[0].get_ydata(), final.to_numpy())
    for fig in figs.values():
        plt.close(fig)
    with pytest.raises(ValueError, match="no finished runs"):
        ds.plot.sweep_figures(frame.iloc[:0])
    with pytest.raises(ValueError, match="no metric 'accuracy'"):
        ds.plot.sweep_figures(frame, y="accuracy")
