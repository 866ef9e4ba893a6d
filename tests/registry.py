"""One table of example constructions, one row per registered algorithm, for the shared contract
tests. Adding an algorithm = one factory + one row here (a test checks the table is complete)."""

import decsim as ds

A = ds.algorithms
C = ds.compression

# name -> (constructor, numeric hyperparameters it was built with, uses gradients)
ALGORITHM_EXAMPLES = {
    "centralized_sgd": (lambda lr=0.05: A.centralized_sgd(lr), True),
    "dsgd": (lambda lr=0.05: A.dsgd(lr), True),
    "dpsgd": (lambda lr=0.05: A.dpsgd(lr), True),
    "gradient_tracking": (lambda lr=0.05: A.gradient_tracking(lr), True),
    "d2": (lambda lr=0.05: A.d2(lr), True),
    "exact_diffusion": (lambda lr=0.05: A.exact_diffusion(lr), True),
    "detag": (lambda lr=0.05: A.detag(lr, 3), True),
    "accelerated_gossip": (lambda lr=None: A.accelerated_gossip(3), False),
    "choco_sgd": (lambda lr=0.05: A.choco_sgd(lr, 0.5, C.top_k(0.5)), True),
    "choco_gossip": (lambda lr=None: A.choco_gossip(0.3, C.top_k(0.5)), False),
    "naive_compressed_gossip": (lambda lr=None: A.naive_compressed_gossip(0.3, C.top_k(0.5)), False),
    "dcd_psgd": (lambda lr=0.05: A.dcd_psgd(lr, C.qsgd(16, unbiased=True)), True),
    "deepsqueeze": (lambda lr=0.05: A.deepsqueeze(lr, 0.5, C.top_k(0.5)), True),
    "dadam": (lambda lr=0.05: A.dadam(lr), True),
    "damsgrad": (lambda lr=0.05: A.damsgrad(lr), True),
    "dadagrad": (lambda lr=0.05: A.dadagrad(lr), True),
    "ada_choco_sgd": (lambda lr=0.05: A.ada_choco_sgd(lr, 0.5, C.top_k(0.5)), True),
    "malcom_psgd": (lambda lr=0.05: A.malcom_psgd(lr, 0.5, 0.01, levels=16), True),
}
