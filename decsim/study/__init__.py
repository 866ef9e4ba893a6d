"""Studies over many runs: grids, sweeps, the result store and the linear-speedup study.

- :mod:`decsim.study.grid`: a grid -> canonical run configs (:func:`expand`), planned runs with
  their ids and groups (:func:`plan`), shards (:func:`parse_shard`).
- :mod:`decsim.study.store`: the on-disk result format (:data:`FORMAT`, :func:`write_run`,
  :func:`read_run`, :func:`verify_run`, :func:`is_complete`, :func:`tidy`) and reading a store
  back (:func:`load_results`, :func:`load_histories`); its layers, each re-exported by it:
  :mod:`decsim.study.records` (the record format and the checks of untrusted JSON,
  :class:`BadRecord`, :class:`StoreWarning`, the limits), :mod:`decsim.study.npz` (the checks of
  untrusted NPZ files), :mod:`decsim.study.files` (a run's file names and locks),
  :mod:`decsim.study.writing` (crash-safe writes, :func:`tidy`) and
  :mod:`decsim.study.fingerprint` (:func:`problem_facts`, :func:`problem_fingerprint`).
- :mod:`decsim.study.sweep`: :func:`sweep` and :func:`sweep_file`, which run a grid into a store
  (``ds.sweep`` is this function).
- :mod:`decsim.study.compare`: :func:`compare`, the fair tuned comparison of algorithms
  (``ds.compare``, ``decsim compare``), with its spec checks (:mod:`decsim.study.compare_spec`)
  and its tables and figures (:mod:`decsim.study.compare_report`).
- :mod:`decsim.study.speedup`: the linear-speedup study (:func:`speedup_study`, ``decsim
  speedup``).

The names below are re-exported here. ``decsim.study.sweep`` is the function (the same as
``decsim.sweep``); the module of that name is ``importlib.import_module("decsim.study.sweep")``.

Example:
    >>> import decsim as ds
    >>> base = {"algorithm": {"name": "dsgd", "learning_rate": 0.1},
    ...         "problem": {"name": "quadratic", "dim": 4}, "topology": "ring", "n_workers": 4,
    ...         "steps": 50, "eval_every": 10}
    >>> runs = ds.study.plan(base, {"algorithm.learning_rate": [0.05, 0.1], "seed": [0, 1, 2]})
    >>> len(runs), len({r.group for r in runs})
    (6, 2)
    >>> [len(ds.study.plan(base, {"seed": [0, 1, 2]}, shard=f"{i}/2")) for i in range(2)]
    [3, 0]
"""

from .compare import COMPARE_DEFAULTS, CompareResult, CompareWarning, compare, compare_plan
from .grid import PlannedRun, digest, expand, flatten, group_id, parse_shard, plan, run_id
from .speedup import (
                      SPEEDUP_DEFAULTS,
                      SpeedupResult,
                      reference_optimum,
                      speedup_plan,
                      speedup_study,
                      write_speedup,
)
from .store import (
                      FORMAT,
                      BadRecord,
                      StoreWarning,
                      is_complete,
                      json_safe,
                      load_histories,
                      load_results,
                      problem_facts,
                      problem_fingerprint,
                      read_run,
                      tidy,
                      verify_run,
                      write_run,
)
from .sweep import SweepReport, sweep, sweep_file

__all__ = [
    # grid
    "PlannedRun", "expand", "plan", "parse_shard", "flatten", "digest", "run_id", "group_id",
    # store
    "FORMAT", "write_run", "read_run", "verify_run", "is_complete", "load_results",
    "load_histories", "problem_facts", "problem_fingerprint", "json_safe", "tidy", "BadRecord",
    "StoreWarning",
    # sweep
    "sweep", "sweep_file", "SweepReport",
    # compare
    "compare", "compare_plan", "CompareResult", "CompareWarning", "COMPARE_DEFAULTS",
    # speedup
    "SPEEDUP_DEFAULTS", "SpeedupResult", "speedup_plan", "speedup_study", "write_speedup",
    "reference_optimum",
]
