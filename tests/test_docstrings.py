"""The runnable examples in docstrings run and print what they say."""

import doctest
import importlib

import pytest

MODULES = ["decsim", "decsim.topology", "decsim.topology.graphs", "decsim.topology.structure",
           "decsim.topology.time_varying", "decsim.problems", "decsim.runner", "decsim.sweep",
           "decsim.algorithms.baselines", "decsim.config", "decsim.compression",
           "decsim.compression.operators", "decsim.compression._quantizer",
           "decsim.compression.coding", "decsim.compression.tuning", "decsim.algorithms.choco"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
    if name != "decsim.algorithms.baselines":
        assert result.attempted > 0
