"""Decentralized algorithms: factories returning :class:`decsim.Algorithm` (ALGORITHMS.md).

One module per family; every factory is listed in :data:`REGISTRY`.
"""

from .baselines import centralized_sgd, d2, dpsgd, dsgd, exact_diffusion, gradient_tracking
from .detag import accelerated_gossip, detag

REGISTRY = {
    "centralized_sgd": centralized_sgd,
    "dsgd": dsgd,
    "dpsgd": dpsgd,
    "gradient_tracking": gradient_tracking,
    "d2": d2,
    "exact_diffusion": exact_diffusion,
    "detag": detag,
    "accelerated_gossip": accelerated_gossip,
}

__all__ = list(REGISTRY) + ["REGISTRY"]
