"""Run configs (decsim.config): building objects, canonical forms and hashes, and errors that name
the valid choices and the closest match, raised before anything is compiled."""

import pathlib

import numpy as np
import pytest

import decsim as ds
from decsim import config, runner

ROOT = pathlib.Path(__file__).resolve().parents[1]


def base(**changes):
    cfg = {"algorithm": {"name": "dsgd", "learning_rate": 0.1},
           "problem": {"name": "quadratic", "dim": 3, "noise": 0.1, "seed": 1},
           "topology": "ring", "n_workers": 4, "steps": 20, "eval_every": 10}
    cfg.update(changes)
    return cfg


def test_build_makes_the_objects_and_runs_like_ds_run():
    built = config.build(base(seeds=[0, 1]))
    assert built.algorithm.name == "dsgd"
    assert built.algorithm.hparams == {"learning_rate": pytest.approx(0.1)}
    assert built.problem.n_workers == 4 and built.problem.name == "quadratic(d=3)"
    assert built.topology.name == "ring(4)"
    assert (built.steps, built.eval_every, built.seeds, built.seed) == (20, 10, [0, 1], None)
    hist = built.run(progress=False)
    direct = ds.run(ds.algorithms.dsgd(0.1), ds.problems.quadratic(4, 3, noise=0.1, seed=1),
                    ds.topology.ring(4), steps=20, eval_every=10, seeds=[0, 1])
    np.testing.assert_array_equal(hist.metrics["loss"], direct.metrics["loss"])


def test_canonical_fills_defaults_so_spellings_hash_alike():
    a = base()
    b = base(algorithm={"name": "dsgd", "learning_rate": 0.1, "gossip_every": 1},
             topology={"name": "ring", "weights": "metropolis"}, seed=0)
    assert config.canonical(a) == config.canonical(b)
    assert config.config_hash(a) == config.config_hash(b)
    c = config.canonical(a)
    assert c["problem"]["mu"] == 0.1 and c["problem"]["heterogeneity"] == 1.0  # defaults filled
    assert list(c["algorithm"]) == ["name", "learning_rate", "gossip_every", "local_optimizer"]
    # an integer learning rate is the same number as its float
    one = base(algorithm={"name": "dsgd", "learning_rate": 1})
    assert config.config_hash(one) == config.config_hash(
        base(algorithm={"name": "dsgd", "learning_rate": 1.0})
    )
    assert config.config_hash(
        base(algorithm={"name": "dsgd", "learning_rate": 0.2})
    ) != config.config_hash(a)
    assert config.config_hash(base(seed=1)) != config.config_hash(a)
    assert config.build_algorithm(a).hparams == {"learning_rate": 0.1}


def _error(cfg):
    before = runner.trace_count()
    with pytest.raises(ValueError) as info:
        config.build(cfg)
    assert runner.trace_count() == before  # nothing was compiled
    return str(info.value)


@pytest.mark.parametrize(
    "changes, expected",
    [
        (
            dict(algorithm={"name": "dsdg", "learning_rate": 0.1}),
            ["unknown algorithm 'dsdg'", "gradient_tracking", "Did you mean 'dsgd'?"],
        ),
        (
            dict(algorithm={"name": "dsgd", "lerning_rate": 0.1}),
            [
                "unknown argument 'lerning_rate' for algorithm dsgd",
                "gossip_every",
                "Did you mean 'learning_rate'?",
            ],
        ),
        (
            dict(problem={"name": "quadratc", "dim": 3}),
            ["unknown problem 'quadratc'", "logistic_regression", "Did you mean 'quadratic'?"],
        ),
        (
            dict(problem={"name": "quadratic", "dim": 3, "nosie": 0.1}),
            [
                "unknown argument 'nosie' for problem quadratic",
                "heterogeneity",
                "Did you mean 'noise'?",
            ],
        ),
        (dict(problem={"name": "quadratic"}), ["problem quadratic needs dim"]),
        (dict(topology="rign"), ["unknown topology 'rign'", "torus", "Did you mean 'ring'?"]),
        (
            dict(topology={"name": "ring", "weigths": "uniform"}),
            ["unknown argument 'weigths' for topology ring", "Did you mean 'weights'?"],
        ),
        (dict(stpes=3), ["unknown config key 'stpes'", "eval_every", "Did you mean 'steps'?"]),
        (
            dict(
                algorithm={
                    "name": "dsgd",
                    "learning_rate": {"schedule": "inverse_tim", "init_value": 1.0},
                }
            ),
            ["unknown schedule 'inverse_tim'", "exponential_decay", "Did you mean 'inverse_time'?"],
        ),
        (
            dict(
                algorithm={
                    "name": "dsgd",
                    "learning_rate": None,
                    "local_optimizer": {"optax": "sgd", "learning_rat": 0.1},
                }
            ),
            [
                "unknown argument 'learning_rat' for optax.sgd",
                "momentum",
                "Did you mean 'learning_rate'?",
            ],
        ),
        (
            dict(algorithm={"name": "dsgd", "learning_rate": {"init_value": 1.0}}),
            ["needs a 'schedule'"],
        ),
        (dict(steps=25), ["steps=25 is not a multiple of eval_every=10", "steps=20 or 30"]),
        (dict(n_workers=0), ["'n_workers' must be an integer >= 1"]),
        (dict(seed=0, seeds=[1, 2]), ["either seed", "not both"]),
        (
            dict(topology={"name": "torus", "rows": 3, "cols": 3}),
            ["rows * cols = 9 but n_workers = 4"],
        ),
        (dict(topology="social"), ["has 32 workers but n_workers = 4", "set n_workers = 32"]),
        (
            dict(algorithm={"name": "d2", "learning_rate": 0.1}, n_workers=6),  # λ_min(W) = −1/3
            ["d2 requires the smallest eigenvalue"],
        ),
        (
            dict(algorithm={"name": "dsgd", "learning_rate": -1.0}),
            ["learning_rate must be a finite positive number"],
        ),
    ],
)
def test_bad_configs_fail_before_compilation_with_the_valid_names(changes, expected):
    message = _error(base(**changes))
    for part in expected:
        assert part in message, message


def test_missing_keys_are_named():
    cfg = base()
    del cfg["problem"], cfg["steps"]
    message = _error(cfg)
    assert "'problem', 'steps'" in message


def test_compressor_tables_and_short_form(monkeypatch):
    from decsim import compression

    seen = []

    def fake_algorithm(learning_rate, *, compressor=None):
        seen.append(compressor)
        return ds.algorithms.dsgd(learning_rate)

    monkeypatch.setattr(config, "algorithms", lambda: {"fake": fake_algorithm})
    monkeypatch.setattr(
        config, "compressors", lambda: {"top_k": compression.top_k, "sign": compression.sign}
    )
    table = base(
        algorithm={
            "name": "fake",
            "learning_rate": 0.1,
            "compressor": {"name": "top_k", "fraction": 0.5},
        }
    )
    short = base(algorithm={"name": "fake", "learning_rate": 0.1, "compressor": "top_k(0.5)"})
    keyword = base(
        algorithm={"name": "fake", "learning_rate": 0.1, "compressor": "top_k(fraction=0.5)"}
    )
    assert config.canonical(table) == config.canonical(short) == config.canonical(keyword)
    assert config.canonical(table)["algorithm"]["compressor"] == {"name": "top_k", "fraction": 0.5}
    config.build(table)
    config.build(short)
    assert seen[0] is seen[1] and seen[0].name == compression.top_k(0.5).name
    for bad, part in [
        ("top_kk(0.5)", "Did you mean 'top_k'?"),
        ("top_k(0.5, 1, 2)", "at most 1 positional"),
        ("top_k(x)", "cannot read the arguments"),
        ({"name": "top_k", "fractoin": 0.5}, "Did you mean 'fraction'?"),
    ]:
        cfg = base(algorithm={"name": "fake", "learning_rate": 0.1, "compressor": bad})
        with pytest.raises(ValueError, match="compressor") as info:
            config.canonical(cfg)
        assert part in str(info.value)


def test_schedules_and_optax_tables_build_shared_objects():
    sched = {"schedule": "inverse_time", "init_value": 0.5, "decay_steps": 100.0}
    a = config.build_algorithm(base(algorithm={"name": "dsgd", "learning_rate": sched}))
    b = config.build_algorithm(base(algorithm={"name": "dsgd", "learning_rate": dict(sched)}))
    lr = a.args["learning_rate"]
    assert float(lr(0)) == pytest.approx(0.5) and float(lr(100)) == pytest.approx(0.25)
    assert lr is b.args["learning_rate"] and a.step is b.step  # one compiled program
    opt = {
        "optax": "sgd",
        "learning_rate": {
            "schedule": "exponential_decay",
            "init_value": 0.1,
            "transition_steps": 10,
            "decay_rate": 0.5,
        },
        "momentum": 0.9,
    }
    cfg = base(algorithm={"name": "dsgd", "learning_rate": None, "local_optimizer": opt})
    one, two = config.build_algorithm(cfg), config.build_algorithm(cfg)
    assert one.step is two.step
    assert hasattr(one.args["local_optimizer"], "update")


def test_topology_sizes_and_time_varying_modifiers():
    assert config.build_topology(base(topology="torus", n_workers=12)).name == "torus(3x4)"
    assert (
        config.build_topology(
            base(topology={"name": "torus", "rows": 2, "cols": 6}, n_workers=12)
        ).name
        == "torus(2x6)"
    )
    assert (
        config.build_topology(
            base(topology={"name": "erdos_renyi", "p": 0.5, "seed": 3}, n_workers=8)
        ).n
        == 8
    )
    assert config.build_topology(base(topology="social", n_workers=32)).n == 32
    if "link_failures" in config.topology_modifiers():
        topo = config.build_topology(
            base(topology={"name": "ring", "link_failures": {"p_drop": 0.2}})
        )
        assert topo.time_varying and "p_drop=0.2" in topo.name


def test_toml_files(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text(
        'n_workers = 4\nsteps = 20\neval_every = 10\nseeds = [0, 1]\ntopology = "ring"\n'
        '[algorithm]\nname = "dsgd"\nlearning_rate = 0.1\n'
        '[problem]\nname = "quadratic"\ndim = 3\nnoise = 0.1\nseed = 1\n'
    )
    assert config.canonical(config.load(path)) == config.canonical(base(seeds=[0, 1]))
    (tmp_path / "bad.toml").write_text("steps = = 3\n")
    with pytest.raises(ValueError, match="not valid TOML"):
        config.load(tmp_path / "bad.toml")
    with pytest.raises(ValueError, match="no such file"):
        config.load(tmp_path / "missing.toml")


def test_registries_follow_the_modules():
    assert set(ds.algorithms.REGISTRY) == set(config.algorithms())
    assert {"quadratic", "logistic_regression", "mlp", "consensus"} <= set(config.problems())
    assert "custom" not in config.problems() and "optimum" not in config.problems()
    assert set(ds.topology.GENERATORS) <= set(config.topologies())


# the sweep files; examples/compare_*.toml are comparison specs (tests/test_compare.py checks them)
EXAMPLES = sorted(p for p in (ROOT / "examples").glob("*.toml")
                  if not p.name.startswith("compare_"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_sweeps_are_valid(path):
    spec = config.load(path)
    assert set(spec) <= {"base", "grid"}
    runs = ds.study.plan(spec["base"], spec.get("grid"))
    assert len(runs) >= 2
    for r in runs[:50]:
        assert config.config_hash(r.config) == r.id
    # every distinct problem/topology builds (cheap; nothing is compiled)
    seen = set()
    for r in runs:
        key = repr((r.config["problem"], r.config["topology"], r.config["n_workers"]))
        if key not in seen:
            seen.add(key)
            config.build(r.config)


def test_there_are_example_sweeps():
    assert len(EXAMPLES) >= 2
