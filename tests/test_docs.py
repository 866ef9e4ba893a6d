"""The documentation site: every registry entry has its reference section, nothing in the project
points outside it, the citation rewriter is idempotent, and (slow) the built site, served locally
and loaded in headless Chromium, shows rendered math and has no broken internal link."""

import functools
import http.server
import importlib.util
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import threading
import urllib.parse

import pytest

import decsim as ds

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
sys.path.insert(0, str(ROOT / "tools"))
import mkdocs_hooks  # noqa: E402
import relink_docs  # noqa: E402

_ANCHOR = re.compile(r"\{\s*#([\w-]+)[^}]*\}|\bid=[\"']([\w-]+)[\"']")


def anchors(page: str) -> set[str]:
    """The explicit anchors (``{ #name }`` attribute lists, ``id="name"``) of a docs page."""
    text = (DOCS / page).read_text(encoding="utf-8")
    return {a or b for a, b in _ANCHOR.findall(text)}


def _registries():
    import decsim.topology as T

    topologies = set(T.REGISTRY) | set(T.GENERATORS) | set(T.TIME_VARYING)
    return {
        "algorithm": ("reference/algorithms.md", set(ds.algorithms.REGISTRY)),
        "compressor": ("reference/compressors.md", set(ds.compression.REGISTRY)),
        "topology": ("reference/topologies.md", topologies),
        "weight rule": ("reference/topologies.md", set(T.WEIGHT_RULES)),
        "problem": ("reference/problems.md", set(ds.problems.REGISTRY)),
    }


@pytest.mark.parametrize("kind", ["algorithm", "compressor", "topology", "weight rule", "problem"])
def test_every_registry_entry_has_a_reference_section(kind):
    page, entries = _registries()[kind]
    assert entries, kind
    missing = sorted(entries - anchors(page))
    assert not missing, (f"docs/{page} has no section for the {kind}(s) {missing}: add one "
                         "whose anchor is the name, e.g. '### `name` { #name }'")


def test_the_directed_and_optimised_weight_entries_have_reference_sections():
    # the directed-graph algorithms and topologies, the baselines and the optimised weight rules
    assert {"extra", "beer", "qg_dsgdm", "sgp", "push_pull"} <= anchors("reference/algorithms.md")
    assert {"directed_ring", "directed_exponential", "random_directed", "best_constant",
            "fastest"} <= anchors("reference/topologies.md")


FORBIDDEN = [relink_docs.ALG, relink_docs.DES, relink_docs.REVIEW, relink_docs.SHARED.rstrip("/")]

# A numbered section ("section 7", "Section 3", "sections 2 and 7", "§5", "ALGORITHMS section")
# is a leftover citation of the outside specification: the docs pages have no numbered sections
# (they are cited as docs/<page>.md#<anchor>). Two numbered sections are legitimate: a paper's,
# cited right after its year ("He et al. (2016), section 4.2", "ICML'19, §5"), and, in a
# notebook, one of the notebook's own numbered headings ("## 2. ...": "section 2 shows ...").
_NUMBERED_SECTION = re.compile(r"(?i:\bsections?\s+|§\s*)(?P<num>\d+)(?:\.\d+)*"
                               r"|\bALGORITHMS,?\s+(?:sections?|§)")
_AFTER_A_YEAR = re.compile(r"(?:\b(?:19|20)\d\d[a-z]?|'\d\d)\)?,?\s*$")
_HEADING_NUMBER = re.compile(r"^#+\s*(\d+)\.", re.M)
# where citations are looked for; this file holds the old citation forms as the rewriter's data
CITATION_DIRS = ("decsim/", "tests/", "notebooks/", "examples/")
CITATION_EXEMPT = {"tests/test_docs.py"}


def numbered_section_citations(rel: str, text: str) -> list[str]:
    """``"file:where: citation"`` for each numbered-section citation in ``text`` (file ``rel``):
    by line, or by cell for a notebook (whose cells' sources are read, not the JSON)."""
    if rel.endswith(".ipynb"):
        cells = ["".join(c["source"]) if isinstance(c["source"], list) else c["source"]
                 for c in json.loads(text)["cells"]]
        own = {int(k) for c in cells for k in _HEADING_NUMBER.findall(c)}
        parts = [(f"cell {i}", c) for i, c in enumerate(cells)]
    else:
        own, parts = set(), [(None, text)]
    found = []
    for where, part in parts:
        for m in _NUMBERED_SECTION.finditer(part):
            if _AFTER_A_YEAR.search(part[max(0, m.start() - 20):m.start()]):
                continue  # a paper's section
            num = m.group("num")
            if num and int(num) in own and m.group().lower().startswith("section"):
                continue  # the notebook's own numbered heading
            at = where or f"{part.count(chr(10), 0, m.start()) + 1}"
            found.append(f"{rel}:{at}: {m.group()}")
    return found


@pytest.mark.parametrize("text, flagged", [
    ("stochastic, nonnegative mixing matrix (docs/reference/topologies.md and section 0):", True),
    ("the rate expressions of section 8 as functions of the problem", True),
    ("the entropy-coded length of section 7 is an upper layer.", True),
    ("message (section 7: 32-bit norm, Elias-gamma gaps", True),
    ('coder: ``"elias"`` (exact Elias-gamma code length, section 7) or', True),
    ("Algorithms against their docs/reference/index.md equations (section 3), identities", True),
    ("written here from the table of section 2 (independently", True),
    ('    """Section 7 with exact messages (Q = X½ − X̂)."""', True),
    ("sections 2 and 7", True),
    ("see §4 for the tuner", True),
    ("the ALGORITHMS section on Choco", True),
    ("# CIFAR ResNets (He et al. 2016, section 4.2)", False),
    ("The CIFAR ResNet of He et al. (2016), section 4.2: depth", False),
    ("the Choco paper (ICML'19,\n    §5) attributes to Carli et al.", False),
    ("see [the source coder](compressors.md#elias-gamma-coding), a section of the page", False),
    ("from .registry import ALGORITHMS", False),
])
def test_numbered_section_citations_are_found_and_papers_sections_are_not(text, flagged):
    assert bool(numbered_section_citations("decsim/x.py", text)) == flagged


def test_a_notebook_may_cite_its_own_numbered_sections_only():
    def notebook(*cells):
        return json.dumps({"cells": [{"cell_type": "markdown", "source": c} for c in cells]})

    own = notebook("## 1. Graphs\n", "## 2. Skewed data\n", "which differ (section 2\nshows it)")
    assert numbered_section_citations("notebooks/x.ipynb", own) == []
    stale = notebook("## 1. Graphs\n", ["The statement of ", "section 8 is about the norm"])
    assert numbered_section_citations("notebooks/x.ipynb", stale) == [
        "notebooks/x.ipynb:cell 1: section 8"]


def test_nothing_in_the_project_refers_to_files_outside_it():
    offenders = []
    for rel in relink_docs.project_files(str(ROOT)):
        text = relink_docs.read_text(str(ROOT / rel))
        if text is None:
            continue
        for word in FORBIDDEN:
            for m in re.finditer(re.escape(word), text):
                line = text.count("\n", 0, m.start()) + 1
                offenders.append(f"{rel}:{line}: {word}")
        if rel.startswith(CITATION_DIRS) and rel not in CITATION_EXEMPT:
            offenders += numbered_section_citations(rel, text)
    assert not offenders, ("these cite files outside the project, or the numbered sections of "
                           "the old specification; run python tools/relink_docs.py and link the "
                           "docs pages (docs/<page>.md#<anchor>) instead:\n" + "\n".join(offenders))


A, D = relink_docs.ALG, relink_docs.DES


@pytest.mark.parametrize("old, new", [
    (f"(see {A} section 3)", "(see docs/reference/algorithms.md#family-baselines)"),
    (f"{A} §4", "docs/reference/algorithms.md#family-choco"),
    (f"{A}, section 11", "docs/reference/time-model.md"),
    (f"{A} sections 2 and 7",
     "docs/reference/compressors.md and docs/reference/algorithms.md#family-malcom"),
    (f"section 2 of `{A}`", "docs/reference/compressors.md"),
    (f"§10 of {A}", "docs/reference/topologies.md#directed"),
    (f"update ({A})", "update (docs/reference/index.md)"),
    (f"`{relink_docs.SHARED}{A}`", "docs/reference/index.md"),
    (f"({D} section 4, item 7)", "(docs/development.md#style)"),
    (f"{D} section 4.7", "docs/development.md#style"),
    (f"{D} section 3", "docs/tutorials/job-array.md"),
    (f"{A} section 99", "docs/reference/index.md"),
])
def test_relink_rewrites_each_citation_form_once(old, new):
    assert relink_docs.relink(old) == new
    assert relink_docs.relink(new) == new  # idempotent
    assert relink_docs.relink("text " + old + " text\n") == "text " + new + " text\n"


def test_relink_leaves_the_project_unchanged():
    """It has been run: rerunning it changes nothing (the lead reruns it after merges)."""
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "relink_docs.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_relink_target_exists():
    targets = (set(relink_docs.ALGORITHM_SECTIONS.values())
               | set(relink_docs.DESIGN_SECTIONS.values())
               | {relink_docs.ALGORITHMS_PAGE, relink_docs.DESIGN_PAGE})
    for target in targets:
        path, _, anchor = target.partition("#")
        assert (ROOT / path).is_file(), target
        if anchor:
            assert anchor in anchors(path[len("docs/"):]), target


def test_every_citation_in_the_code_points_at_a_section_that_exists():
    cited = set()
    for rel in relink_docs.project_files(str(ROOT)):
        if rel.startswith("docs/") or not rel.endswith((".py", ".ipynb", ".md", ".toml")):
            continue
        cited |= set(re.findall(r"\bdocs/((?:[\w-]+/)*[\w-]+\.md)(?:#([\w-]+))?",
                                (ROOT / rel).read_text(encoding="utf-8")))
    assert cited
    for page, anchor in cited:
        assert (DOCS / page).is_file(), page
        if anchor:
            assert anchor in anchors(page), f"docs/{page}#{anchor}"


def test_the_hooks_find_remote_loads_and_undocumented_names():
    html = ('<script src="https://cdn.example/x.js"></script><link rel="stylesheet" '
            'href="//fonts.example/f.css"><script src="../assets/local.js"></script>'
            '<script type="module">await import("https://cdn.example/m.mjs")</script>')
    assert mkdocs_hooks.remote_loads(html) == ["https://cdn.example/x.js",
                                               "//fonts.example/f.css",
                                               "https://cdn.example/m.mjs"]
    assert mkdocs_hooks.undocumented() == []
    assert "decsim.runner" in mkdocs_hooks.namespaces()


# ---------------------------------------------------------------------------------------------
# the built site, as a reader sees it


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The site built with ``mkdocs build --strict`` (or $DECSIM_DOCS_SITE if it names a build)."""
    given = os.environ.get("DECSIM_DOCS_SITE")
    if given and (pathlib.Path(given) / "index.html").is_file():
        return pathlib.Path(given)
    for module in ("mkdocs", "material", "mkdocstrings", "mkdocs_jupyter", "mathjax"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"the docs tools are not installed (no {module}): pip install -e '.[docs]'")
    out = tmp_path_factory.mktemp("site")
    env = dict(os.environ, PYTHONPATH=str(ROOT), NO_MKDOCS_2_WARNING="1")
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(out)],
                            cwd=ROOT, capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    return out


@pytest.fixture(scope="module")
def served(site):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def _browser(*args):
    chromium = _chromium()
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           "--hide-scrollbars", "--virtual-time-budget=20000", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180)


def _visible_text(dom: str) -> str:
    """The text a reader sees outside code: no scripts, styles, code, math output or tags."""
    dom = re.sub(r"<(script|style|pre|code|mjx-container|svg|textarea)\b.*?</\1>", " ", dom,
                 flags=re.S | re.I)
    return re.sub(r"<[^>]+>", " ", dom)


PAGES = {"index.html": 1, "reference/algorithms.html": 100, "notebooks/03_compression.html": 10}


@pytest.mark.slow
@pytest.mark.skipif(_chromium() is None,
                    reason="headless Chromium is not installed (apt-get install -y chromium)")
@pytest.mark.parametrize("page", sorted(PAGES))
def test_the_page_renders_its_math_and_its_links_resolve(page, site, served, tmp_path):
    result = _browser("--dump-dom", served + page)
    dom = result.stdout
    assert "</html>" in dom, result.stderr[-2000:]
    # the math was typeset by the bundled MathJax: containers present, no TeX errors, no raw TeX
    assert dom.count("<mjx-container") >= PAGES[page], page
    assert "mjx-merror" not in dom and "data-mjx-error" not in dom
    text = _visible_text(dom)
    for raw in ("$$", "\\(", "\\[", "\\frac", "\\eta"):
        assert raw not in text, f"{page}: raw TeX {raw!r} left in the visible text"
    # every internal link goes to a file of the site, and its #anchor to an id on that page
    base = served + page
    broken = []
    for href in set(re.findall(r"<a\b[^>]*\bhref=\"([^\"]*)\"", dom)):
        url = urllib.parse.urljoin(base, href)
        if not url.startswith(served):
            continue  # another host (papers, the theme's credits): not ours to serve
        path, _, fragment = url[len(served):].partition("#")
        path = urllib.parse.unquote(path.split("?")[0]) or "index.html"
        target = site / path
        if target.is_dir():
            target = target / "index.html"
        if not target.is_file():
            broken.append(href)
        elif fragment and not re.search(rf"\bid=\"{re.escape(fragment)}\"",
                                        target.read_text(encoding="utf-8", errors="replace")):
            broken.append(href)
    assert not broken, f"{page}: broken links {sorted(broken)}"
    # a screenshot, kept where DECSIM_SCREENSHOTS says (to look at), else in the test's folder
    folder = pathlib.Path(os.environ.get("DECSIM_SCREENSHOTS", tmp_path))
    folder.mkdir(parents=True, exist_ok=True)
    shot = folder / (page.replace("/", "_").replace(".html", ".png"))
    _browser("--window-size=1280,1600", f"--screenshot={shot}", served + page)
    assert shot.is_file() and shot.stat().st_size > 20_000
