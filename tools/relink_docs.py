"""Rewrite citations of the old out-of-tree specification into citations of this project's docs.

Docstrings, comments, tests and notebooks once cited "<spec> section N" (or "§N", "sections 2 and
7", "section 4 of `<spec>`", a bare "<spec>", or a path into the sibling folder that held it),
where <spec> was the algorithm specification or the design notes kept outside the repository.
Each citation becomes the source path of the matching page of the documentation site, with an
anchor where one section of a page is meant:

    (<spec> section 3)      ->  (docs/reference/algorithms.md#family-baselines)
    <spec> sections 2 and 7 ->  docs/reference/compressors.md and
                                docs/reference/algorithms.md#family-malcom

This is the one citation form of the project ("docs/<page>.md#<anchor>", readable in a terminal
and on GitHub; the API pages of the site turn it into a link). The script is idempotent: text
already in that form is left alone, so it can be rerun after merging branches that still use the
old forms.

Usage:
    python tools/relink_docs.py            # rewrite every tracked text file in place
    python tools/relink_docs.py --check    # list what would change; exit 1 if anything would
    python tools/relink_docs.py FILE ...   # only these files
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# the old names, spelled in pieces so that this file does not itself contain a citation
ALG = "ALGORITHMS" + ".md"
DES = "DESIGN" + ".md"
REVIEW = "architecture-review" + ".md"
SHARED = ".." + "/shared/"

# section number of the algorithm specification -> docs page (and anchor)
ALGORITHM_SECTIONS = {
    0: "docs/concepts.md#notation",
    1: "docs/reference/topologies.md",
    2: "docs/reference/compressors.md",
    3: "docs/reference/algorithms.md#family-baselines",
    4: "docs/reference/algorithms.md#family-choco",
    5: "docs/reference/algorithms.md#family-detag",
    6: "docs/reference/algorithms.md#family-adaptive",
    7: "docs/reference/algorithms.md#family-malcom",
    8: "docs/theory.md",
    9: "docs/reference/algorithms.md#family-more-baselines",
    10: "docs/reference/topologies.md#directed",
    11: "docs/reference/time-model.md",
    12: "docs/reference/comparison.md",
}
ALGORITHMS_PAGE = "docs/reference/index.md"  # a bare citation of the specification

# section number of the design notes -> docs page
DESIGN_SECTIONS = {
    1: "docs/concepts.md",
    2: "docs/concepts.md",
    3: "docs/tutorials/job-array.md",
    4: "docs/development.md#style",
}
DESIGN_PAGE = "docs/development.md"

TARGETS = {ALG: (ALGORITHM_SECTIONS, ALGORITHMS_PAGE), DES: (DESIGN_SECTIONS, DESIGN_PAGE)}

_NAME = rf"(?:`?(?:\.\./)?(?:shared/)?(?P<name>{re.escape(ALG)}|{re.escape(DES)})`?)"
_NUM = r"\d+(?:\.\d+)*"
_SECTION = r"(?:sections?|§)\s*"
_LIST = rf"{_NUM}(?:\s*(?:,|and|&)\s*(?:§\s*)?{_NUM})*"
_ITEM = r"(?:,\s*item\s+\d+)?"

# "<spec> section 3", "<spec> §4", "<spec>, section 4.7", "<spec> sections 2 and 7", "... item 7"
_AFTER = re.compile(rf"{_NAME},?\s+{_SECTION}(?P<nums>{_LIST}){_ITEM}")
# "section 2 of <spec>", "§8 of `<spec>`"
_BEFORE = re.compile(rf"{_SECTION}(?P<nums>{_LIST}){_ITEM}\s+of\s+(?:the\s+)?{_NAME}")
# a bare citation, with or without the sibling-folder path
_BARE = re.compile(_NAME)
_REVIEW = re.compile(r"`?(?:\.\./)?(?:shared/)?" + re.escape(REVIEW) + "`?")


def _pages(name: str, nums: str) -> str:
    sections, page = TARGETS[name]
    out = []
    for num in re.findall(_NUM, nums):
        target = sections.get(int(num.split(".")[0]), page)
        if target not in out:
            out.append(target)
    return " and ".join(out)


def relink(text: str) -> str:
    """``text`` with every citation of the old specification rewritten (idempotent)."""
    text = _AFTER.sub(lambda m: _pages(m.group("name"), m.group("nums")), text)
    text = _BEFORE.sub(lambda m: _pages(m.group("name"), m.group("nums")), text)
    text = _BARE.sub(lambda m: TARGETS[m.group("name")][1], text)
    text = _REVIEW.sub(DESIGN_PAGE, text)
    return text


def project_files(root: str = ROOT) -> list[str]:
    """The project's files (tracked or new, not ignored), relative to ``root``."""
    try:
        out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                             cwd=root, capture_output=True, text=True, check=True).stdout
        files = [f for f in out.splitlines() if f]
    except (OSError, subprocess.CalledProcessError):
        skip = {".git", ".venv", "venv", "site", "__pycache__", "build", "dist"}
        files = []
        for here, dirs, names in os.walk(root):
            dirs[:] = [d for d in dirs if d not in skip and not d.endswith(".egg-info")]
            files += [os.path.relpath(os.path.join(here, n), root) for n in names]
    return sorted(f for f in files if os.path.isfile(os.path.join(root, f)))


def read_text(path: str) -> str | None:
    """The file's text, or ``None`` for a binary (non-UTF-8) file."""
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except (UnicodeDecodeError, OSError):
        return None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", help="files to rewrite (default: the whole project)")
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 on changes")
    args = parser.parse_args(argv)
    files = args.files or [os.path.join(ROOT, f) for f in project_files()]
    changed = []
    for path in files:
        text = read_text(path)
        if text is None:
            continue
        new = relink(text)
        if new != text:
            changed.append(os.path.relpath(path, ROOT))
            if not args.check:
                with open(path, "w", encoding="utf-8") as fh:
                    fh.write(new)
    for path in changed:
        print(("would rewrite " if args.check else "rewrote ") + path)
        if not args.check and path.endswith(".py"):  # a longer citation may pass ruff's limit
            with open(os.path.join(ROOT, path), encoding="utf-8") as fh:
                for number, line in enumerate(fh, 1):
                    if len(line.rstrip("\n")) > 100 and "docs/" in line:
                        print(f"  {path}:{number}: longer than 100 characters now: rewrap it")
    return 1 if (args.check and changed) else 0


if __name__ == "__main__":
    sys.exit(main())
