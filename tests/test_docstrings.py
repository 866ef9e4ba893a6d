"""The runnable examples in docstrings run and print what they say: every module of the package,
found by walking it (a new module's examples run without editing this file)."""

import doctest
import importlib
import pkgutil

import pytest

import decsim

MODULES = ["decsim"] + sorted(m.name for m in pkgutil.walk_packages(decsim.__path__, "decsim."))
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=FLAGS)
    assert result.failed == 0


def test_the_walk_finds_the_documented_modules():
    found = {name: doctest.DocTestFinder().find(importlib.import_module(name)) for name in MODULES}
    with_examples = {name for name, tests in found.items() if any(t.examples for t in tests)}
    # the modules whose docstrings carry examples today; a module may gain some, never lose them
    assert {"decsim", "decsim.runner", "decsim.config", "decsim.algorithms.choco",
            "decsim.algorithms.adaptive", "decsim.algorithms.detag", "decsim.algorithms.malcom",
            "decsim.algorithms.baselines", "decsim._checks"} <= with_examples
