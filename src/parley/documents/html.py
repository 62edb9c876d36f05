"""HTML to its visible text: script, style and the like dropped, whitespace collapsed as a browser would (kept
inside <pre>), paragraph-like blocks a blank line apart, list items, rows and divs on lines of their own. Line
numbers of an HTML part are those of this text, not of the markup."""

from __future__ import annotations

import re
from collections.abc import Iterator

from bs4 import BeautifulSoup, NavigableString

_DROP = frozenset({"script", "style", "noscript", "template", "svg", "iframe", "object"})
_PARAGRAPHS = ("address", "article", "aside", "blockquote", "details", "dialog", "dl", "fieldset", "figure",
               "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "main", "nav", "ol", "p", "pre",
               "section", "table", "ul")  # a blank line around each
_LINES = ("caption", "dd", "div", "dt", "figcaption", "li", "summary", "title", "tr")  # a line break around each
_NBSP = "\u00a0"
_PARA, _LINE = "\x1e", "\x1f"  # gap markers, resolved once the text is out: the widest gap in a run wins
_GAPS = {**{name: _PARA for name in _PARAGRAPHS}, **{name: _LINE for name in _LINES}}
_GAP_RUN = re.compile(r"[ \t\n\x1e\x1f]*[\x1e\x1f][ \t\n\x1e\x1f]*")
_PRE_IN, _PRE_OUT = object(), object()


def html_to_text(html: str) -> str:
    """The visible text: script/style dropped, whitespace collapsed as a browser would (kept inside <pre>),
    paragraph-like blocks apart by a blank line, list items, rows and divs on lines of their own."""
    soup = BeautifulSoup(html.replace(_PARA, " ").replace(_LINE, " "), "html.parser")
    text = _GAP_RUN.sub(lambda m: "\n\n" if _PARA in m.group() else "\n", "".join(_html_pieces(soup)))
    lines = [line.strip(" \t") for line in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).replace(_NBSP, " ").strip("\n")


def _html_pieces(soup: BeautifulSoup) -> Iterator[str]:
    """The tree's text in document order with gap markers around blocks; a stack, not recursion, so deep
    nesting is fine, and the tree is never modified (each bs4 insert is linear in the siblings)."""
    pre = 0
    stack: list = [soup]
    while stack:
        node = stack.pop()
        if node is _PRE_IN or node is _PRE_OUT:
            pre += 1 if node is _PRE_IN else -1
        elif isinstance(node, NavigableString):
            if type(node) is NavigableString:  # not a comment, doctype or processing instruction
                yield node.replace(" ", _NBSP).replace("\t", _NBSP * 4) if pre else re.sub(r"\s+", " ", node)
        elif isinstance(node, str):
            yield node
        elif node.name == "br":
            yield "\n"
        elif node.name not in _DROP:
            gap = _GAPS.get(node.name, "")
            inner = [_PRE_IN, *node.contents, _PRE_OUT] if node.name == "pre" else node.contents
            after = " " if node.name in ("td", "th") else gap
            stack.extend(reversed([gap, *inner, after]))


__all__ = ["html_to_text"]
