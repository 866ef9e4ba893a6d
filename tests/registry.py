"""One table of example constructions, one row per registered algorithm, for the shared contract
tests. Adding an algorithm = one factory + one row here (a test checks the table is complete)."""

import decsim as ds

A = ds.algorithms

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
}
