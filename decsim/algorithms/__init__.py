"""Decentralized algorithms: factories returning :class:`decsim.Algorithm` (ALGORITHMS.md).

One module per family; every factory is listed in :data:`REGISTRY`.
"""

from .baselines import centralized_sgd, d2, dpsgd, dsgd, exact_diffusion, gradient_tracking
from .detag import accelerated_gossip, detag
from .choco import choco_gossip, choco_sgd, dcd_psgd, deepsqueeze, naive_compressed_gossip
from .adaptive import ada_choco_sgd, dadagrad, dadam, damsgrad
from .malcom import malcom_psgd

REGISTRY = {
    "centralized_sgd": centralized_sgd,
    "dsgd": dsgd,
    "dpsgd": dpsgd,
    "gradient_tracking": gradient_tracking,
    "d2": d2,
    "exact_diffusion": exact_diffusion,
    "detag": detag,
    "accelerated_gossip": accelerated_gossip,
    "choco_sgd": choco_sgd,
    "choco_gossip": choco_gossip,
    "naive_compressed_gossip": naive_compressed_gossip,
    "dcd_psgd": dcd_psgd,
    "deepsqueeze": deepsqueeze,
    "dadam": dadam,
    "damsgrad": damsgrad,
    "dadagrad": dadagrad,
    "ada_choco_sgd": ada_choco_sgd,
    "malcom_psgd": malcom_psgd,
}

__all__ = list(REGISTRY) + ["REGISTRY"]
