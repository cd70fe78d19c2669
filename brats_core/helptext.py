"""Help texts of the command-line tools: docstrings are reStructuredText (for the docs), ``--help`` is plain text.

:func:`description` turns a module docstring into the description of a parser (its whole first paragraph, so
it never ends mid-sentence); :class:`PlainHelpFormatter` removes reStructuredText markup from every text a
parser prints (description, epilog, option help).
"""

from __future__ import annotations

import argparse
import re

#: ``:mod:`a.b```, ``:func:`~a.b.c```: a role, optional ``~`` (show the last part only) and its target.
_ROLE = re.compile(r":[a-z]+(?::[a-z]+)?:`(~?)([^`]+)`")


def plain(text: str) -> str:
    """``text`` without reStructuredText markup: roles become their target, double backticks go."""
    text = _ROLE.sub(lambda m: m[2].rsplit(".", 1)[-1] if m[1] else m[2], text)
    return text.replace("``", "")


def description(doc: str | None) -> str:
    """The first paragraph of a docstring, as one plain line."""
    first = (doc or "").strip().split("\n\n", 1)[0]
    return plain(" ".join(first.split()))


class PlainHelpFormatter(argparse.HelpFormatter):
    """The default help layout, with :func:`plain` applied to every text."""

    def _format_text(self, text: str) -> str:
        return super()._format_text(plain(text))

    def _expand_help(self, action: argparse.Action) -> str:
        return plain(super()._expand_help(action))
