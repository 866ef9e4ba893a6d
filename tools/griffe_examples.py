"""A griffe extension for the API reference, listed under the mkdocstrings options in mkdocs.yml.
The docstrings themselves stay as they are (they read well in ``help()``); this adapts them to
the Markdown renderer:

- decsim heads its runnable examples ``Example:`` (singular), which griffe's Google parser reads
  as a plain admonition; the heading becomes ``Examples:`` so the ``>>>`` lines render as code
  (and are not read as Markdown, where ``x[-1][0]`` looks like a reference link);
- Sphinx roles (``:func:`decsim.run```, ``:class:`~decsim.Problem```) become inline code;
- a paragraph ending in reST's literal-block marker ``::`` ends in one colon (the indented
  block after it renders as code in Markdown too).
"""

from __future__ import annotations

import re

import griffe

_HEADING = re.compile(r"^(\s*)Example:[ \t]*$", re.M)
_LITERAL = re.compile(r"(?<=\S)::[ \t]*$", re.M)
_ROLE = re.compile(r":(?:func|class|mod|meth|attr|data|obj|exc):`~?([^`]+)`")


class ExampleSections(griffe.Extension):
    """Rewrite each docstring (headings, roles) before griffe parses it."""

    def on_instance(self, *, obj, **kwargs):
        if obj.docstring is not None:
            text = _HEADING.sub(r"\1Examples:", obj.docstring.value)
            text = _LITERAL.sub(":", _ROLE.sub(r"`\1`", text))
            obj.docstring.value = text
