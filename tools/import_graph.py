"""The import graph of a package's modules, and its cycles.

Reads every ``.py`` file under the package directory with :mod:`ast` (nothing is imported or
run) and collects every ``import``/``from ... import`` statement, at module level and inside
functions, classes or ``if`` blocks alike (a lazy import inside a function still closes a cycle
when that function runs). Edges go from module to module inside the package; imports of other
packages (jax, numpy, ...) are left out.

An import of ``a.b.c`` runs the ``__init__`` of every package above it, so it also counts as an
edge to ``a.b`` (unless the importing module sits inside ``a.b`` itself: that package is
already being imported). ``from a.b import name`` is an edge to ``a.b.name`` when that is a
module, and an edge to ``a.b`` otherwise.

Usage::

    python tools/import_graph.py [PACKAGE_DIR]      # default: decsim

Prints one line per edge (``lazy`` marks imports inside a function), then either ``no cycles``
or every cycle found (one per strongly connected component, with the import lines that close
it), and exits with status 1 if there is a cycle.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path


def module_names(root: Path) -> dict:
    """``{dotted module name: path}`` for every ``.py`` file under the package ``root``."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _ancestors(name: str) -> list:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _is_lazy(stack: list) -> bool:
    return any(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)) for n in stack)


def _imports(tree: ast.AST):
    """``(node, lazy)`` for every import statement, ``lazy`` if it sits inside a function."""
    stack = []

    def visit(node):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node, _is_lazy(stack)
        stack.append(node)
        for child in ast.iter_child_nodes(node):
            yield from visit(child)
        stack.pop()

    yield from visit(tree)


def edges(root: Path) -> list:
    """``(importer, imported, line, lazy)`` for every import between modules of the package."""
    modules = module_names(root)
    found = []
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        inside = set(_ancestors(name)) | {name}
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node, lazy in _imports(tree):
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                if node.level:
                    base = package.split(".")
                    base = base[:len(base) - (node.level - 1)]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                targets = [source]
                targets += [f"{source}.{alias.name}" for alias in node.names
                            if f"{source}.{alias.name}" in modules]
            for target in targets:
                for hit in _ancestors(target) + [target]:
                    if hit in modules and hit not in inside:
                        found.append((name, hit, node.lineno, lazy))
    return sorted(set(found))


def cycles(graph: dict) -> list:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index, low, on_stack, stack, out = {}, {}, set(), [], []
    counter = [0]

    def strongconnect(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph.get(v, ()):
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    return sorted(out)


def _cycle_path(graph: dict, component: list) -> list:
    """A shortest closed path through the component from its first module (breadth-first)."""
    start, members = component[0], set(component)
    previous, frontier = {start: None}, [start]
    while frontier:
        following = []
        for v in frontier:
            for w in sorted(graph.get(v, ())):
                if w == start:
                    path = [v]
                    while previous[path[-1]] is not None:
                        path.append(previous[path[-1]])
                    return path[::-1] + [start]
                if w in members and w not in previous:
                    previous[w] = v
                    following.append(w)
        frontier = following
    return component + [start]


def main(argv: list) -> int:
    root = Path(argv[1] if len(argv) > 1 else "decsim").resolve()
    found = edges(root)
    graph, where = {}, {}
    for a, b, line, lazy in found:
        graph.setdefault(a, set()).add(b)
        where.setdefault((a, b), []).append(f"{line}{' lazy' if lazy else ''}")
    print(f"{len(where)} import edges between the modules of {root.name}/ "
          "(importer -> imported  [lines; lazy = inside a function]):")
    for (a, b), lines in sorted(where.items()):
        print(f"  {a} -> {b}  [{', '.join(lines)}]")
    found_cycles = cycles(graph)
    if not found_cycles:
        print("no cycles")
        return 0
    print(f"{len(found_cycles)} cycle(s):")
    for component in found_cycles:
        path = _cycle_path(graph, component)
        steps = [f"{a} -> {b} [{', '.join(where[(a, b)])}]" for a, b in zip(path, path[1:])]
        print(f"  cycle among {', '.join(component)}:")
        for step in steps:
            print(f"    {step}")
        inner = [(a, b) for (a, b) in sorted(where) if a in component and b in component]
        print(f"    (the component's {len(inner)} edges: "
              + "; ".join(f"{a} -> {b}" for a, b in inner) + ")")
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
