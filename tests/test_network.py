"""The time model (decsim.network, docs/reference/time-model.md): closed forms on hand-computed
cases, the identity sim_time = c·grad_evals + latency·rounds + deg·bits/bandwidth for every
registered algorithm, stragglers (their mean, their seeds), other metrics bitwise unchanged, the
config and sweep paths, bad input, and a case where the winner by bits loses by time."""

import math

import numpy as np
import pytest

import decsim as ds

from .registry import ALGORITHMS

A, C, N = ds.algorithms, ds.compression, ds.network
TM = N.TimeModel(compute=0.01, latency=1e-3, bandwidth=1e6)
QUAD = ds.problems.quadratic(4, 8)  # d = 8: a dense message is 256 bits
RING = ds.topology.ring(4)  # degree 2


def _sim(algo, model=TM, problem=QUAD, topology=RING, steps=10, **kw):
    return ds.run(algo, problem, topology, steps=steps, eval_every=5, time_model=model, **kw)


def test_dsgd_closed_form_shared_nic():
    h = _sim(A.dsgd(0.1))
    per_step = 0.01 + 1e-3 + 2 * 256 / 1e6
    np.testing.assert_allclose(h.metrics["sim_time"], [0, 5 * per_step, 10 * per_step],
                               rtol=1e-6)
    assert h.config["time_model"] == {"compute": 0.01, "latency": 1e-3, "nic": "shared",
                                      "bandwidth": 1e6}


def test_per_link_and_all_reduce_closed_forms():
    per_link = N.TimeModel(compute=0.01, latency=1e-3, bandwidth=1e6, nic="per_link")
    h = _sim(A.dsgd(0.1), per_link)
    np.testing.assert_allclose(h.metrics["sim_time"][-1], 10 * (0.01 + 1e-3 + 256 / 1e6),
                               rtol=1e-6)
    # ring all-reduce over n = 4: 2 (n - 1) latencies and 2 (n - 1)/n · 256 bits per step
    h = _sim(A.centralized_sgd(0.1))
    np.testing.assert_allclose(h.metrics["sim_time"][-1],
                               10 * (0.01 + 6 * 1e-3 + 1.5 * 256 / 1e6), rtol=1e-6)


def test_compressed_bits_enter_the_time():
    h = _sim(A.choco_sgd(0.1, gamma=0.3, compressor=C.top_k(0.25)))
    m = h.metrics
    np.testing.assert_allclose(m["sim_time"], 0.011 * h.steps + 2 * m["bits"] / 1e6, rtol=1e-6)
    assert m["bits"][-1] == 10 * 2 * (32 + 3)  # k = 2 of 8 entries, 32 + log2(8) bits each


def test_one_peer_rounds_send_to_one_neighbour():
    topo = ds.topology.one_peer_exponential(8)
    assert N.round_degree(topo) == 1
    assert N.round_degree(ds.topology.exponential(8)) == 5  # offsets ±1, ±2, 4
    h = _sim(A.dsgd(0.1), problem=ds.problems.quadratic(8, 8), topology=topo)
    np.testing.assert_allclose(h.metrics["sim_time"][-1], 10 * (0.011 + 256 / 1e6), rtol=1e-6)


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_every_algorithm_gets_the_time_of_its_costs(name):
    make, hparams, _ = ALGORITHMS[name]
    model = N.TimeModel(compute=0.02, latency=1e-3, bandwidth=1e7)
    h = ds.run(make(**hparams), ds.problems.quadratic(5, 8), ds.topology.ring(5), steps=4,
               eval_every=2, time_model=model)
    m = h.metrics
    lat = 2 * 4 * 1e-3 if name == "centralized_sgd" else 1e-3
    deg = 1 if name == "centralized_sgd" else 2
    expect = 0.02 * m["grad_evals"] + lat * m["comm_rounds"] + deg * m["bits"] / 1e7
    np.testing.assert_allclose(m["sim_time"], expect, rtol=1e-5, atol=1e-9)
    assert m["sim_time"][-1] > 0


def test_other_metrics_are_bitwise_unchanged():
    algo = A.choco_sgd(0.1, gamma=0.3, compressor=C.rand_k(0.5))
    prob = ds.problems.quadratic(4, 8, noise=0.5)
    slow = N.TimeModel(compute=0.01, stragglers=("exponential", 0.5))
    with_model = _sim(algo, slow, problem=prob, seeds=[0, 1])
    without = ds.run(algo, prob, RING, steps=10, eval_every=5, seeds=[0, 1])
    for k, v in without.metrics.items():
        np.testing.assert_array_equal(with_model.metrics[k], v)
    assert set(with_model.metrics) - set(without.metrics) == {"sim_time"}


def test_exponential_stragglers_wait_for_the_slowest():
    n, mean, steps, c = 8, 0.2, 2000, 0.01
    model = N.TimeModel(compute=c, stragglers=("exponential", mean))
    h = ds.run(A.dsgd(0.1), ds.problems.quadratic(n, 2), ds.topology.ring(n), steps=steps,
               eval_every=steps, time_model=model)
    # E max of n unit exponentials = H_n; the mean of 2000 steps has a standard error of
    # sqrt(sum 1/k^2) / sqrt(2000) = 0.027, so 0.15 is more than five of them
    slowest = (h.metrics["sim_time"][-1] / (steps * c) - 1) / mean
    assert abs(slowest - sum(1 / k for k in range(1, n + 1))) < 0.15


def test_stragglers_follow_the_seed():
    model = N.TimeModel(compute=0.01, stragglers={"name": "lognormal", "sigma": 0.5})
    a = _sim(A.dsgd(0.1), model, seed=3).metrics["sim_time"]
    b = _sim(A.dsgd(0.1), model, seed=3).metrics["sim_time"]
    c = _sim(A.dsgd(0.1), model, seed=4).metrics["sim_time"]
    batched = _sim(A.dsgd(0.1), model, seeds=[3, 4]).metrics["sim_time"]
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    # the slowest of 4 lognormal workers: its median is above c, so 10 steps take > 10 c
    assert a[-1] > 10 * 0.01 and np.all(np.diff(a) > 0)
    np.testing.assert_array_equal(batched, np.stack([a, c]))


def test_lognormal_with_small_sigma_is_no_straggler():
    tiny = _sim(A.dsgd(0.1), N.TimeModel(compute=0.01, stragglers=("lognormal", 1e-6)))
    np.testing.assert_allclose(tiny.metrics["sim_time"][-1], 10 * 0.01, rtol=1e-4)


def test_compute_from_flops():
    model = N.TimeModel(flops_per_second=1e9)
    c = N.compute_seconds(model, QUAD)
    assert 0 < c < 1e-3
    h = _sim(A.dsgd(0.1), model)
    np.testing.assert_allclose(h.metrics["sim_time"][-1], 10 * c, rtol=1e-6)


@pytest.mark.parametrize("kwargs, words", [
    ({"latency": -1.0}, "latency"),
    ({"bandwidth": 0}, "bandwidth must be > 0"),
    ({"compute": "fast"}, "compute"),
    ({"nic": "shard"}, "nic"),
    ({"stragglers": ("weibull", 1.0)}, "weibull"),
    ({"stragglers": ("exponential", -0.1)}, "straggler mean"),
    ({"stragglers": {"name": "lognormal", "mean": 1.0}}, "sigma"),
    ({"compute": 0.1, "flops_per_second": 1e9}, "not both"),
])
def test_bad_time_models(kwargs, words):
    with pytest.raises(ValueError, match=words):
        N.TimeModel(**kwargs)


def test_bad_time_model_argument_and_config_keys():
    with pytest.raises(ValueError, match="time_model"):
        ds.run(A.dsgd(0.1), QUAD, RING, steps=5, time_model=0.5)
    with pytest.raises(ValueError, match="unknown time_model key 'latncy'.*latency"):
        N.from_config({"latncy": 1e-3})


def _config(**extra):
    return {"algorithm": {"name": "dsgd", "learning_rate": 0.1},
            "problem": {"name": "quadratic", "dim": 8}, "topology": "ring", "n_workers": 4,
            "steps": 10, "eval_every": 5, **extra}


def test_config_and_sweep_carry_the_time_model(tmp_path):
    table = {"compute": 0.01, "latency": 1e-3, "bandwidth": 1e6,
             "stragglers": {"name": "exponential", "mean": 0.1}}
    built = ds.config.build(_config(time_model=table))
    assert built.time_model == N.TimeModel(**table)
    assert built.config["time_model"]["stragglers"] == {"name": "exponential", "mean": 0.1}
    assert "time_model" not in ds.config.canonical(_config())  # absent: run ids unchanged
    assert ds.config.config_hash(_config()) != ds.config.config_hash(_config(time_model=table))
    hist = built.run()
    ds.sweep(_config(time_model=table), {"seed": [0, 1]}, str(tmp_path), progress=False)
    frame = ds.load_results(str(tmp_path))
    assert "sim_time" in frame.columns
    last = frame[(frame["seed"] == 0) & (frame["step"] == 10)]["sim_time"]
    np.testing.assert_allclose(last.to_numpy(), [hist.metrics["sim_time"][-1]], rtol=1e-6)


def test_the_winner_by_bits_can_lose_by_time():
    """Top-5% Choco needs fewer bits than D-SGD to reach a loss target on label-sorted digits,
    but more steps; with a 10 ms latency per round and plenty of bandwidth, D-SGD gets there
    first in simulated seconds."""
    prob = ds.problems.logistic_regression(8, partition="sorted", batch_size=None)
    topo = ds.topology.ring(8)
    model = N.TimeModel(compute=1e-3, latency=1e-2, bandwidth=1e10)
    at = {}
    for name, algo in [("dsgd", A.dsgd(0.5)),
                       ("choco", A.choco_sgd(0.5, gamma=0.1, compressor=C.top_k(0.05)))]:
        h = ds.run(algo, prob, topo, steps=300, eval_every=5, time_model=model)
        i = int(np.argmax(h.metrics["loss"] <= 0.25))
        assert h.metrics["loss"][i] <= 0.25
        at[name] = {k: h.metrics[k][i] for k in ("bits", "sim_time")} | {"step": h.steps[i]}
    assert at["choco"]["bits"] < at["dsgd"]["bits"] / 2
    assert at["choco"]["sim_time"] > 2 * at["dsgd"]["sim_time"]
    assert at["choco"]["step"] > at["dsgd"]["step"]
    assert math.isfinite(at["dsgd"]["sim_time"])


def test_plots_against_simulated_time(tmp_path):
    pytest.importorskip("matplotlib")
    h = _sim(A.dsgd(0.1))
    fig = ds.plot.convergence([h], x="sim_time")
    assert fig.axes[0].get_xlabel() == "sim time"
    line = fig.axes[0].get_lines()[0]
    np.testing.assert_allclose(line.get_xdata(), h.metrics["sim_time"])
    ds.sweep(_config(time_model={"compute": 0.01}), {"seed": [0, 1]}, str(tmp_path),
             progress=False)
    figs = ds.plot.sweep_figures(ds.load_results(str(tmp_path)))
    assert "convergence_sim_time" in figs


def test_compare_reports_the_time_to_target(tmp_path):
    spec = {"compare": {"tuning_seeds": [0], "eval_seeds": [5, 6], "grid_points": 3,
                        "learning_rate": 0.2},
            "base": {"problem": {"name": "quadratic", "dim": 3, "noise": 0.1},
                     "topology": "ring", "n_workers": 4, "steps": 20, "eval_every": 10,
                     "time_model": {"compute": 0.01, "latency": 1e-3, "bandwidth": 1e6}},
            "algorithm": [{"name": "dsgd"}, {"name": "gradient_tracking"}]}
    result = ds.compare(spec, str(tmp_path), progress=False)
    assert "sim_time_to_target" in result.table.columns
    assert "curves_sim_time" in result.files
    frame = ds.load_results(str(tmp_path / "runs"))
    # gradient tracking sends two vectors per round: its time per step is longer
    per_step = frame[frame["step"] == 20].groupby("algorithm")["sim_time"].mean() / 20
    np.testing.assert_allclose(per_step["dsgd"], 0.011 + 2 * 96 / 1e6, rtol=1e-6)
    np.testing.assert_allclose(per_step["gradient_tracking"], 0.011 + 2 * 192 / 1e6, rtol=1e-6)
