"""One table per concept, one row per registry entry, read by the shared contract tests
(tests/test_contract.py). Adding an algorithm = one factory + one row here (a test checks the table
covers the registry).

ALGORITHMS: name -> (make, hparams, cost); VARIANTS: the same for other structures of an entry
(``"name+what"``: a local optimizer, a schedule), run through the same contract.
``make(**hparams)`` builds the algorithm with those numeric hyperparameters (its structural
arguments fixed in the lambda); ``cost`` is the exact ``(grad_evals, comm_rounds, bits)`` of one
step on the two-leaf model of tests/_reference.py (d = 8: a [3, 2] weight and a [2] bias) on a
ring of N = 5 workers.
"""

import optax

import decsim as ds

A = ds.algorithms
C = ds.compression

D = 8  # parameters of the two-leaf model
DENSE = 32 * D  # one dense float32 vector
TK = C.top_k(0.5)  # deterministic: k = 3 of 6 and 1 of 2
TK_BITS = 3 * (32 + 3) + 1 * (32 + 1)  # values + indices of each kept entry, per leaf
LR = {"learning_rate": 0.05}
LR_G = {"learning_rate": 0.05, "gamma": 0.3}

ALGORITHMS = {
    "centralized_sgd": (lambda **h: A.centralized_sgd(**h), LR, (1, 1, 2 * 4 / 5 * DENSE)),
    "dsgd": (lambda **h: A.dsgd(**h), LR, (1, 1, DENSE)),
    "dpsgd": (lambda **h: A.dpsgd(**h), LR, (1, 1, DENSE)),
    "gradient_tracking": (lambda **h: A.gradient_tracking(**h), LR, (1, 1, 2 * DENSE)),
    "d2": (lambda **h: A.d2(**h), LR, (1, 1, DENSE)),
    "exact_diffusion": (lambda **h: A.exact_diffusion(**h), LR, (1, 1, DENSE)),
    "extra": (lambda **h: A.extra(**h), LR, (1, 1, DENSE)),
    "qg_dsgdm": (lambda **h: A.qg_dsgdm(**h), {"learning_rate": 0.05, "beta": 0.9}, (1, 1, DENSE)),
    # the contract steps from t = 0, where BEER sends the model only (both messages from t = 1 on:
    # tests/test_beer.py checks the bits of every step)
    "beer": (lambda **h: A.beer(compressor=TK, **h), LR_G, (1, 1, TK_BITS)),
    "detag": (lambda **h: A.detag(rounds=3, **h), LR, (3, 3, 3 * 2 * DENSE)),
    "accelerated_gossip": (lambda **h: A.accelerated_gossip(3, **h), {}, (0, 3, 3 * DENSE)),
    "choco_sgd": (lambda **h: A.choco_sgd(compressor=TK, **h), LR_G, (1, 1, TK_BITS)),
    "choco_gossip": (lambda **h: A.choco_gossip(compressor=TK, **h), {"gamma": 0.3},
                     (0, 1, TK_BITS)),
    "naive_compressed_gossip": (lambda **h: A.naive_compressed_gossip(compressor=TK, **h),
                                {"gamma": 0.3}, (0, 1, TK_BITS)),
    "dcd_psgd": (lambda **h: A.dcd_psgd(compressor=C.identity(), **h), LR, (1, 1, DENSE)),
    "deepsqueeze": (lambda **h: A.deepsqueeze(compressor=TK, **h), LR_G, (1, 1, TK_BITS)),
    "dadam": (lambda **h: A.dadam(**h), LR, (1, 1, DENSE)),
    "damsgrad": (lambda **h: A.damsgrad(**h), LR, (1, 1, 2 * DENSE)),
    "dadagrad": (lambda **h: A.dadagrad(**h), LR, (1, 1, 2 * DENSE)),
    "ada_choco_sgd": (lambda **h: A.ada_choco_sgd(compressor=TK, **h), LR_G, (1, 1, TK_BITS)),
    "sgp": (lambda **h: A.sgp(**h), LR, (1, 1, DENSE + 32)),
    "push_pull": (lambda **h: A.push_pull(**h), LR, (1, 1, 2 * DENSE)),
    # exact messages (levels=None) make the bits exact; the coded bits are tested in test_malcom
    "malcom_psgd": (lambda **h: A.malcom_psgd(levels=None, **h),
                    {"learning_rate": 0.05, "gamma": 0.3, "l1": 0.01}, (1, 1, DENSE)),
}

MOMENTUM = optax.sgd(1.0, momentum=0.9)  # one object, so equal structure is the same step
SCHEDULE = optax.exponential_decay(0.05, transition_steps=1, decay_rate=0.9)
MOM = {"local_optimizer": MOMENTUM}

# every algorithm that takes a local optimizer, with momentum SGD (learning_rate multiplies it)
VARIANTS = {
    f"{name}+momentum": ((lambda make: lambda **h: make(**MOM, **h))(ALGORITHMS[name][0]),
                         ALGORITHMS[name][1], ALGORITHMS[name][2])
    for name in ("centralized_sgd", "dsgd", "dpsgd", "gradient_tracking", "d2", "exact_diffusion",
                 "extra", "detag", "choco_sgd", "dcd_psgd", "deepsqueeze", "malcom_psgd", "sgp",
                 "push_pull")
}
# a schedule: learning_rate is its traced multiplier (1.0 as built)
VARIANTS["dsgd+schedule"] = (lambda **h: A.dsgd(SCHEDULE, **h), {}, (1, 1, DENSE))
VARIANTS["d2+schedule"] = (lambda **h: A.d2(SCHEDULE, **h), {}, (1, 1, DENSE))
VARIANTS["dadam+schedule"] = (lambda **h: A.dadam(SCHEDULE, **h), {}, (1, 1, DENSE))
VARIANTS["extra+schedule"] = (lambda **h: A.extra(SCHEDULE, **h), {}, (1, 1, DENSE))
VARIANTS["qg_dsgdm+schedule"] = (lambda **h: A.qg_dsgdm(SCHEDULE, **h), {"beta": 0.9},
                                 (1, 1, DENSE))
VARIANTS["beer+schedule"] = (lambda **h: A.beer(SCHEDULE, compressor=TK, **h), {"gamma": 0.3},
                             (1, 1, TK_BITS))
