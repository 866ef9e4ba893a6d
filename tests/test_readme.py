"""The README names every registry entry (algorithms, compressors, topologies, problems), so a new
entry cannot land undocumented."""

import os
import re

import pytest

import decsim as ds

README = open(os.path.join(os.path.dirname(__file__), "..", "README.md"), encoding="utf-8").read()
NAMED = set(re.findall(r"`([A-Za-z_][A-Za-z0-9_]*)", README))


def _registries():
    import decsim.topology as T

    topologies = getattr(T, "REGISTRY", None) or {n: getattr(T, n) for n in T.GENERATORS}
    return {"algorithm": ds.algorithms.REGISTRY, "compressor": ds.compression.REGISTRY,
            "topology": topologies, "problem": ds.problems.REGISTRY}


@pytest.mark.parametrize("kind", ["algorithm", "compressor", "topology", "problem"])
def test_readme_names_every_registry_entry(kind):
    entries = set(_registries()[kind])
    assert entries, kind
    missing = sorted(entries - NAMED)
    assert not missing, f"README.md does not name the {kind}(s) {missing} (write them as `name`)"


@pytest.mark.parametrize("kind", ["algorithm", "compressor", "topology", "problem"])
def test_every_registry_entry_is_in_its_package_all(kind):
    package = {"algorithm": ds.algorithms, "compressor": ds.compression,
               "topology": ds.topology, "problem": ds.problems}[kind]
    assert set(_registries()[kind]) <= set(package.__all__)
