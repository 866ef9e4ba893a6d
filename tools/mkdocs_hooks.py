"""mkdocs hooks of the documentation site (listed under ``hooks:`` in mkdocs.yml).

What they do, in build order:

- ``on_config``: fill the two nav sections that follow the code rather than a hand-kept list:
  "Notebooks" (every ``notebooks/*.ipynb``, by file name) and "API reference" (one page for
  ``decsim`` and one for each module in ``decsim.__all__``).
- ``on_files``: add those notebooks (they live outside ``docs/``), the generated API pages and
  MathJax (from the ``django-static-mathjax`` package, so no page loads it from the network).
- ``on_pre_build``: warn about every public name whose function or class has no docstring.
- ``on_page_content``: drop the MathJax 2 and mermaid loaders that nbconvert puts into notebook
  pages (they point at a CDN; the site's own MathJax 3 typesets the notebooks), and turn the
  plain ``docs/<page>.md#anchor`` citations of docstrings and notebooks into links (a citation
  of a page that does not exist is a warning).
- ``on_post_page``: warn about any page that would load a script, style sheet or font from
  another host.

Each warning goes to the ``mkdocs`` logger, so ``mkdocs build --strict`` fails on it.
"""

from __future__ import annotations

import glob
import importlib
import inspect
import json
import logging
import os
import pkgutil
import posixpath
import re
import types

try:
    from mkdocs.plugins import event_priority
    from mkdocs.structure.files import File
except ImportError:  # importable without mkdocs (the tests use its helpers)
    File = None

    def event_priority(priority):
        return lambda fn: fn

log = logging.getLogger("mkdocs.hooks.decsim")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MATHJAX_FILE = "tex-svg-full.js"  # every TeX extension and the SVG fonts in one file
MATHJAX_DEST = "assets/mathjax/" + MATHJAX_FILE


def namespaces() -> list[str]:
    """``decsim`` and its public namespaces: the modules named in ``decsim.__all__`` and every
    top-level module or package of decsim whose name does not start with ``_`` (``ds.runner``,
    ``ds.cli``, and any added later)."""
    import decsim

    mods = {n for n in decsim.__all__ if isinstance(getattr(decsim, n, None), types.ModuleType)}
    mods |= {m.name for m in pkgutil.iter_modules(decsim.__path__) if not m.name.startswith("_")}
    return ["decsim"] + ["decsim." + n for n in sorted(mods)]


def api_path(module: str) -> str:
    return "api/index.md" if module == "decsim" else f"api/{module.split('.', 1)[1]}.md"


def notebooks() -> list[str]:
    """Paths (relative to the repository root) of the notebooks, by file name."""
    found = glob.glob(os.path.join(ROOT, "notebooks", "*.ipynb"))
    return sorted(os.path.relpath(p, ROOT) for p in found)


def notebook_title(path: str) -> str:
    """The first Markdown heading of the notebook, else its file name."""
    with open(os.path.join(ROOT, path), encoding="utf-8") as fh:
        nb = json.load(fh)
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "markdown":
            for line in "".join(cell.get("source", "")).splitlines():
                if line.startswith("#"):
                    return line.lstrip("#").strip()
    return os.path.basename(path)


def _api_markdown(module: str) -> str:
    title = "`decsim` (top level)" if module == "decsim" else f"`{module}`"
    return f"# {title}\n\n::: {module}\n    options:\n      show_root_heading: false\n"


def on_config(config):
    for i, item in enumerate(config["nav"]):
        if not isinstance(item, dict):
            continue
        (key, value), = item.items()
        if key == "Notebooks" and not value:
            config["nav"][i] = {key: [{notebook_title(p): p} for p in notebooks()]}
        elif key == "API reference" and not value:
            config["nav"][i] = {key: [{m if m != "decsim" else "decsim": api_path(m)}
                                      for m in namespaces()]}
    return config


@event_priority(100)  # before mkdocs-jupyter's on_files, which claims the .ipynb files
def on_files(files, config):
    for path in notebooks():
        files.append(File(path, ROOT, config["site_dir"], config["use_directory_urls"]))
    for module in namespaces():
        files.append(File.generated(config, api_path(module), content=_api_markdown(module)))
    try:
        import mathjax  # the django-static-mathjax package: MathJax 3 as static files
    except ImportError:
        log.warning("MathJax is not installed: pip install -e \".[docs]\" (django-static-mathjax)")
        return files
    es5 = os.path.join(os.path.dirname(mathjax.__file__), "static", "mathjax", "es5")
    source = os.path.join(es5, MATHJAX_FILE)
    files.append(File.generated(config, MATHJAX_DEST, abs_src_path=source))
    return files


def undocumented() -> list[str]:
    """``module.name`` for each public function or class without a docstring."""
    out = []
    for module in namespaces():
        mod = importlib.import_module(module)
        names = getattr(mod, "__all__", None)
        if names is None:  # no __all__: the public names the module defines itself
            names = [n for n in vars(mod) if not n.startswith("_")
                     and getattr(getattr(mod, n), "__module__", None) == module]
        for name in names:
            obj = getattr(mod, name)
            if (inspect.isfunction(obj) or inspect.isclass(obj)) and not inspect.getdoc(obj):
                out.append(f"{module}.{name}")
    return out


def on_pre_build(config):
    for name in undocumented():
        log.warning(f"the public name {name} has no docstring: write one (the API reference "
                    "is generated from docstrings)")


_NB_MATHJAX = re.compile(
    r"<!-- Load mathjax -->.*?<!-- End of mathjax configuration -->", re.S)
# nbconvert's loader of mermaid (from a CDN, only for notebooks with diagrams; ours have none)
_NB_MERMAID = re.compile(
    r"<script type=\"module\">(?:(?!</script>).)*?mermaid(?:(?!</script>).)*</script>", re.S)
_CITATION = re.compile(r"(?<![\w/\"'=#.-])docs/((?:[\w-]+/)*[\w-]+\.md)(#[\w-]+)?")


def _link_citations(html: str, page, files) -> str:
    here = posixpath.dirname(page.file.src_uri)

    def link(m):
        if files.get_file_from_path(m.group(1)) is None:
            log.warning(f"{page.file.src_uri} cites docs/{m.group(1)}, which does not exist")
            return m.group(0)
        target = posixpath.relpath(m.group(1), here or ".").replace(".md", ".html")
        return f'<a href="{target}{m.group(2) or ""}">{m.group(0)}</a>'

    # only outside tags and outside <pre> blocks: split on them and rewrite the text parts
    parts = re.split(r"(<pre.*?</pre>|<[^>]+>)", html, flags=re.S)
    return "".join(p if p.startswith("<") else _CITATION.sub(link, p) for p in parts)


def on_page_content(html, page, config, files):
    if page.file.src_uri.endswith(".ipynb"):
        html = _NB_MERMAID.sub("", _NB_MATHJAX.sub("", html))
    if page.file.src_uri.startswith("api/") or page.file.src_uri.endswith(".ipynb"):
        html = _link_citations(html, page, files)
    return html


_REMOTE = re.compile(
    r"<(?:script|img|iframe)\b[^>]*\bsrc=[\"']((?:https?:)?//[^\"']+)"
    r"|<link\b[^>]*\bhref=[\"']((?:https?:)?//[^\"']+)"
    r"|\bimport\(\s*[\"']((?:https?:)?//[^\"']+)"
    r"|@import\s+(?:url\()?[\"']?((?:https?:)?//[^\"')]+)", re.I)


def remote_loads(html: str) -> list[str]:
    """The URLs on other hosts that a page would load when viewed (scripts, style sheets, fonts,
    images, module imports)."""
    return [next(g for g in m if g) for m in _REMOTE.findall(html)]


def on_post_page(output, page, config):
    for url in remote_loads(output):
        log.warning(f"{page.file.src_uri} loads {url} from the network when viewed: bundle it")
    return output
