"""Bad input is refused up front, with a ValueError that names the argument, the value and the
fix, before anything compiles (regression tests of the reliability issue's probe)."""

import warnings

import jax.numpy as jnp
import numpy as np
import optax
import pytest

import decsim as ds
from decsim import runner

A = ds.algorithms
QUAD = ds.problems.quadratic(4, 3, noise=0.1)
RING = ds.topology.ring(4)


def _run(**kwargs):
    algo = kwargs.pop("algo", A.dsgd(0.1))
    return ds.run(algo, QUAD, RING, steps=kwargs.pop("steps", 4), eval_every=2, **kwargs)


BAD_RUNS = [
    # per-run hyperparameters pass the factory's checks
    (dict(hparams={"learning_rate": -0.1}), r"learning_rate must be a finite positive number; "
                                            r"got learning_rate=-0.1"),
    (dict(hparams={"learning_rate": float("nan")}), r"learning_rate must be a finite positive"),
    (dict(hparams={"learning_rate": float("inf")}), r"learning_rate must be a finite positive"),
    (dict(seeds=[0, 1], hparams={"learning_rate": [0.1, -0.2]}), r"got learning_rate=-0.2"),
    (dict(algo=A.choco_sgd(0.1, 0.5), hparams={"gamma": 1.5}),
     r"gamma must be a number in \(0, 1\]; got gamma=1.5.*tune_gamma"),
    (dict(algo=A.malcom_psgd(0.1, 0.5, 0.01), hparams={"l1": -1.0}), r"l1 must be a finite number"),
    # seeds are integers, never coerced
    (dict(seeds="01"), r"seeds must be a list of integers.*seeds='01'"),
    (dict(seeds=[0.7, 1.2]), r"seeds\[i\] must be an integer in \[0, 4294967295\]; got "
                             r"seeds\[i\]=0.7"),
    (dict(seed=2**32), r"seed must be an integer in \[0, 4294967295\]; got seed=4294967296"),
    (dict(seed=2**64), r"seed must be an integer in \[0, 4294967295\]"),
    (dict(seed=-1), r"seed must be an integer in \[0, 4294967295\]"),
]


@pytest.mark.parametrize("kwargs, match", BAD_RUNS)
def test_bad_run_arguments_are_refused_before_compiling(kwargs, match):
    before = runner.trace_count()
    with pytest.raises(ValueError, match=match):
        _run(**kwargs)
    assert runner.trace_count() == before


def _ls(x, batch):
    return 0.5 * jnp.mean(jnp.square(batch["A"] @ x - batch["y"]))


DATA = {"A": np.ones((2, 3, 4), np.float32), "y": np.ones((2, 3), np.float32)}

BAD_FACTORIES = [
    (lambda: A.dsgd(float("inf")), r"learning_rate must be a finite positive number"),
    (lambda: A.dsgd(True), r"learning_rate must be a positive number or an optax schedule"),
    (lambda: A.dsgd(local_optimizer=optax.sgd(-0.1)), r"gradient ascent.*learning rate negative"),
    (lambda: A.dsgd(local_optimizer=optax.adam(-1e-3)), r"gradient ascent"),
    (lambda: A.dsgd(local_optimizer=optax.sgd("0.1")), r"local_optimizer fails on a test update"),
    (lambda: ds.problems.mlp(4, hidden="32"), r"hidden must be a list of layer widths.*"
                                              r"hidden=\(32,\).*got hidden='32'"),
    (lambda: ds.problems.mlp(4, hidden=32), r"hidden must be a list.*got hidden=32"),
    (lambda: ds.problems.mlp(4, hidden=[32, 0]), r"hidden\[i\] must be an integer >= 1"),
    (lambda: ds.problems.quadratic(4, 3, noise="0.1"), r"noise must be a finite number >= 0; "
                                                       r"got noise='0.1'"),
    (lambda: ds.problems.custom(_ls, np.zeros(5, np.float32), DATA),
     r"fails on one sample of worker 0.*params0 shapes: \(5,\); batch shapes: .*\(1, 4\)"),
    (lambda: ds.problems.custom(lambda x, b: b["A"] @ x, np.zeros(4, np.float32), DATA),
     r"must return a scalar.*returned shape \(1,\)"),
    (lambda: ds.problems.custom(_ls, np.zeros(4, np.float32), DATA, counts=[0, 3]),
     r"counts must be 2 whole numbers in \[1, 3\]"),
]


@pytest.mark.parametrize("make, match", BAD_FACTORIES)
def test_bad_factory_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_good_optax_optimizers_pass_the_probe():
    for opt in (optax.sgd(0.1, momentum=0.9, nesterov=True), optax.adamw(1e-3),
                optax.sgd(optax.exponential_decay(0.1, 10, 0.5))):
        assert A.dsgd(local_optimizer=opt).hparams == {"learning_rate": 1.0}  # the multiplier


def test_too_many_workers_for_the_data_warns():
    with pytest.warns(UserWarning, match=r"holds only \d+ samples, fewer than batch_size=32"):
        ds.problems.logistic_regression(1024, "digits", batch_size=32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds.problems.logistic_regression(8, "digits", batch_size=32)  # plenty: no warning


# ---------------------------------------------------------------------------------------------
# a run's numbers do not depend on how it was batched


def _choco_digits():
    prob = ds.problems.logistic_regression(8, "digits", batch_size=16, seed=0)
    return prob, ds.topology.ring(8), A.choco_sgd(0.1, 0.3, ds.compression.top_k(0.1))


def test_batched_runs_equal_the_run_alone_bitwise():
    """Choco with top-k amplifies any rounding difference (a different entry gets selected); the
    default batching computes every run exactly as alone, whatever the batch size."""
    prob, topo, algo = _choco_digits()
    alone = ds.run(algo, prob, topo, steps=60, eval_every=30, seed=3)
    for k in (1, 2, 4, 5):
        hist = ds.run(algo, prob, topo, steps=60, eval_every=30, seeds=[3] * k)
        for i in (0, k - 1):
            run = hist.select(i)
            for a, b in zip(jax_leaves(run.params), jax_leaves(alone.params)):
                np.testing.assert_array_equal(a, b)
            np.testing.assert_array_equal(run.metrics["loss"], alone.metrics["loss"])


def test_a_sweep_gives_the_same_numbers_however_it_grouped_the_runs(tmp_path):
    base = {"algorithm": {"name": "choco_sgd", "learning_rate": 0.1, "gamma": 0.3,
                          "compressor": "top_k(0.1)"},
            "problem": {"name": "logistic_regression", "dataset": "digits", "batch_size": 16},
            "topology": "ring", "n_workers": 8, "steps": 40, "eval_every": 20}
    grid = {"seed": [0, 1, 2], "algorithm.learning_rate": [0.05, 0.1]}
    ds.sweep(base, grid, str(tmp_path / "all"), progress=False)  # one call of 6 runs
    ds.sweep(base, {"seed": [1], "algorithm.learning_rate": [0.1]}, str(tmp_path / "one"),
             progress=False)  # the same config alone
    ds.sweep(base, {"seed": [0, 1], "algorithm.learning_rate": [0.1]}, str(tmp_path / "resume"),
             progress=False)
    ds.sweep(base, grid, str(tmp_path / "resume"), progress=False)  # resumed: 4 runs remain
    for run in ds.study.plan(base, grid):
        got = {k: ds.study.read_run(str(tmp_path / k), run.id) for k in ("all", "resume")}
        for name in ("all", "resume"):
            assert got[name] is not None, (name, run.config)
        for m in got["all"][1]:
            np.testing.assert_array_equal(got["all"][1][m], got["resume"][1][m])
        if run.config["seed"] == 1 and run.config["algorithm"]["learning_rate"] == 0.1:
            alone = ds.study.read_run(str(tmp_path / "one"), run.id)[1]
            assert set(alone) == set(got["all"][1])
            for m in alone:
                np.testing.assert_array_equal(got["all"][1][m], alone[m])


def jax_leaves(tree):
    import jax

    return jax.tree.leaves(tree)
