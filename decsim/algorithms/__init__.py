"""Decentralized algorithms: factories returning :class:`decsim.Algorithm`
(docs/reference/algorithms.md).

One module per family; a factory listed in its module's ``__all__`` is registered in
:data:`REGISTRY` (config files and the command line find it there by name).
"""

from . import adaptive, baselines, choco, directed, heterogeneity, malcom, tuning
from . import beer as _beer_family  # the module; the name ``beer`` is its factory
from . import detag as _detag_family  # the module; the name ``detag`` is its factory
from .adaptive import ada_choco_sgd, dadagrad, dadam, damsgrad
from .baselines import centralized_sgd, d2, dpsgd, dsgd, exact_diffusion, gradient_tracking
from .beer import beer
from .choco import (
                    choco_gossip,
                    choco_sgd,
                    compressed_sgd,
                    dcd_psgd,
                    deepsqueeze,
                    naive_compressed_gossip,
)
from .detag import accelerated_gossip, detag
from .directed import push_pull, sgp
from .heterogeneity import extra, qg_dsgdm
from .malcom import malcom_psgd
from .tuning import proxy_sizes, tune_gamma

REGISTRY = {name: getattr(module, name)
            for module in (baselines, heterogeneity, directed, _detag_family, choco, _beer_family,
                           adaptive, malcom)
            for name in module.__all__}

__all__ = [  # spelled out (a test checks it holds every REGISTRY entry)
    "centralized_sgd", "dsgd", "dpsgd", "gradient_tracking", "d2", "exact_diffusion", "detag",
    "accelerated_gossip", "choco_sgd", "choco_gossip", "naive_compressed_gossip", "dcd_psgd",
    "deepsqueeze", "extra", "qg_dsgdm", "beer", "dadam", "damsgrad", "dadagrad", "ada_choco_sgd",
    "malcom_psgd", "sgp", "push_pull",
    "REGISTRY", "compressed_sgd", "tune_gamma", "proxy_sizes", "tuning", "adaptive", "baselines",
    "choco", "malcom", "heterogeneity", "directed",
]
