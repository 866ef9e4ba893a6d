"""Problem constructors: ``f(x) = (1/n) sum_i f_i(x)`` with worker i's data
(docs/reference/problems.md).

Every constructor returns a :class:`decsim.Problem`. Loss functions are module-level (memoized per
static option such as the l2 weight), so problems that differ only in their data share one
compiled program in the runner. :mod:`decsim.problems.objective` says what a Problem means (the
local and global objectives and the gradient oracle). Constructors listed in a submodule's
``__all__`` whose first argument is ``n_workers`` are registered in :data:`REGISTRY`.

Example:
    >>> import decsim as ds
    >>> prob = ds.problems.logistic_regression(8, dataset="digits", partition="dirichlet",
    ...                                        alpha=0.5, batch_size=32, seed=0)
    >>> prob.n_workers, bool(prob.counts.sum() > 1000)
    (8, True)
"""

from . import (
            adapters,
            augment,
            classification,
            conv,
            evaluate,
            fm,
            images,
            nets,
            objective,
            synthetic,
            vision,
)
from .adapters import equinox_parts, flax_parts, from_equinox, from_flax
from .classification import dense, logistic_regression, mlp
from .custom import custom
from .evaluate import with_evaluation
from .fm import FM_PARTITIONS, auc, factorization_machine
from .images import IMAGE_DATASETS, image_shape, load_images
from .objective import full_loss, optimum, oracle
from .synthetic import consensus, quadratic
from .vision import cnn, resnet20

# name -> constructor of the problems a config can name (first argument n_workers)
REGISTRY = {name: getattr(module, name)
            for module in (synthetic, classification, fm, vision)
            for name in module.__all__ if name not in ("dense", "auc")}

__all__ = [  # spelled out (a test checks it holds every REGISTRY entry)
    "quadratic", "consensus", "logistic_regression", "mlp", "factorization_machine", "cnn",
    "resnet20", "vision", "nets", "conv",
    "REGISTRY", "custom", "dense", "auc", "full_loss", "optimum", "oracle", "objective",
    "FM_PARTITIONS", "classification", "fm", "synthetic", "evaluate", "with_evaluation",
    "from_flax", "from_equinox", "flax_parts", "equinox_parts", "adapters",
    "augment", "images", "IMAGE_DATASETS", "image_shape", "load_images",
]
