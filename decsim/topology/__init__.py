"""Communication topologies: graph generators, weight rules, spectra and validation.

The package has three modules; every public name is re-exported here (``ds.topology.ring``):

* :mod:`~decsim.topology.graphs`: the :class:`Topology` class, weight rules, ``validate_matrix``
  and the static generators (ring, torus, grid, ..., ``from_networkx``, ``from_matrix``,
  ``by_name``);
* :mod:`~decsim.topology.structure`: facts about a matrix W (spectra, neighbour lists, circulant
  structure) that :mod:`decsim.gossip` builds its paths from;
* :mod:`~decsim.topology.time_varying`: :class:`TimeVaryingTopology` and its generators
  (``one_peer_exponential``, ``random_matching``, ``with_link_failures``);
* :mod:`~decsim.topology.directed`: :class:`DirectedTopology` (push and pull matrices of a
  digraph, for ``sgp`` and ``push_pull``) and its generators (``directed_ring``,
  ``directed_exponential``, ``random_directed``).

``REGISTRY`` maps the name of every generator that takes a size to the generator: the static ones
(``GENERATORS``) and the time-varying ones (``time_varying.GENERATORS``); ``with_link_failures``
wraps a topology instead (``TIME_VARYING`` lists all three time-varying names).

Example:
    >>> import decsim as ds
    >>> topo = ds.topology.ring(8, weights="uniform")
    >>> round(topo.spectral_gap, 4)
    0.1953
    >>> ds.topology.REGISTRY["torus"] is ds.topology.torus
    True
"""

from . import directed, graphs, structure, time_varying, weights
from .directed import (
    DirectedTopology,
    directed_exponential,
    directed_ring,
    from_matrix,
    from_networkx,
    random_directed,
)
from .graphs import (
    GENERATORS,
    MAX_EDGES,
    WEIGHT_RULES,
    Topology,
    by_name,
    complete,
    erdos_renyi,
    exponential,
    grid,
    hypercube,
    random_geometric,
    ring,
    social,
    star,
    torus,
    torus_shape,
    validate_matrix,
    weight_matrix,
)
from .structure import circulant_structure, neighbour_lists
from .time_varying import (
    TIME_VARYING,
    TimeVaryingTopology,
    one_peer_exponential,
    random_matching,
    with_link_failures,
)

# name -> generator of every generator that takes a size (each module lists its own in its
# ``GENERATORS``, which is part of its ``__all__``)
REGISTRY = {name: getattr(module, name)
            for module in (graphs, time_varying, directed) for name in module.GENERATORS}

__all__ = ["REGISTRY", "GENERATORS", "TIME_VARYING", "WEIGHT_RULES", "MAX_EDGES", "Topology",
           "TimeVaryingTopology", "ring", "torus", "grid", "complete", "star", "hypercube",
           "exponential", "erdos_renyi", "random_geometric", "social", "one_peer_exponential",
           "random_matching", "with_link_failures", "from_networkx", "from_matrix", "torus_shape",
           "by_name", "validate_matrix", "weight_matrix", "neighbour_lists", "circulant_structure",
           "graphs", "structure", "time_varying", "directed", "weights", "DirectedTopology",
           "directed_ring",
           "directed_exponential", "random_directed"]
