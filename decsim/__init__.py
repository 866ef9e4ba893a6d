"""decsim: a single-process, multi-worker simulator for decentralized training research, on JAX.

All n workers are stacked along a leading axis; a gossip round is one product with the mixing
matrix W; a whole run is one compiled ``lax.scan``.

Example:
    >>> import decsim as ds
    >>> topo = ds.topology.ring(8)
    >>> prob = ds.problems.logistic_regression(8, dataset="digits", batch_size=16)
    >>> hist = ds.run(ds.algorithms.dsgd(0.5), prob, topo, steps=200, eval_every=20)
    >>> hist.metrics["loss"].shape
    (11,)
"""

from . import (
    algorithms,
    compression,
    config,
    data,
    gossip,
    memory,
    network,
    plot,
    problems,
    study,
    theory,
    topology,
    tree,
)
from ._types import Algorithm, Compressor, Evaluation, History, Problem, StepCost
from .memory import memory_estimate
from .runner import run
from .study import compare, load_results, speedup_study, sweep

# ``ds.sweep(base, grid, out_dir)`` is a plain function (docs/tutorials/job-array.md); the
# rest of the sweep machinery (grids, the result store, the speedup study) is the package
# ``ds.study``.

__version__ = "0.1.0"

__all__ = [
    "Algorithm",
    "Compressor",
    "Evaluation",
    "History",
    "compression",
    "Problem",
    "StepCost",
    "algorithms",
    "compare",
    "config",
    "data",
    "gossip",
    "load_results",
    "memory",
    "memory_estimate",
    "network",
    "plot",
    "problems",
    "run",
    "speedup_study",
    "study",
    "sweep",
    "theory",
    "topology",
    "tree",
    "__version__",
]
