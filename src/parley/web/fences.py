"""Fenced code blocks in a message's Markdown: whether the text ends inside one, and the line that closes it.

    close_fences("Sure:\\n\\n```python\\nx = 1\\n")   ->  "Sure:\\n\\n```python\\nx = 1\\n```"

A reply cut off in the middle of code ("```python ..." and then max tokens, or Stop) would swallow whatever the
page puts under it, the reply's numbers, into its code block; chat UIs close the fence first, and so does
view.with_footer.

CommonMark's rules, as far as fences need them: an opening fence is three or more backticks or tildes after at
most three spaces (a backtick fence's info string has no backtick); it is closed by a line of the same
character, at least as long, with nothing but spaces after it; a longer fence holds shorter ones as content.
Containers: block quotes ("> " prefixes) and list items (a fence in an item is indented to the item's content);
a line that falls out of its container ends the fence with it, and the closing line this returns is written
inside the same container (quote markers, then the item's indent).

The text is looked at as Gradio's Chatbot hands it to its Markdown renderer: inspect.cleandoc expands tabs and
strips the first line's indent (a footer at the left margin keeps it from dedenting the rest).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

OPENER = re.compile(r"( {0,3})(`{3,}|~{3,})(.*)$")
ITEM = re.compile(r" {0,3}(?:[-+*]|\d{1,9}[.)])(?: {1,4}(?=\S)| *$)")    # a list item's marker and gap
QUOTE = re.compile(r" {0,3}> ?")
BLOCK_START = re.compile(r" {0,3}(?:[-+*] |\d{1,9}[.)] |#{1,6}(?: |$)|>|```|~~~|(?:[-*_] *){3,}$)")


@dataclass(frozen=True)
class Fence:
    quotes: int      # block quotes around it
    indent: int      # its list item's content column (after the quote markers); 0 outside lists
    marks: str       # the opening run: "```", "~~~~", ...

    def closes(self, line: str) -> bool:
        run = re.match(r" {0,3}(`+|~+) *$", line)
        return bool(run) and run.group(1)[0] == self.marks[0] and len(run.group(1)) >= len(self.marks)

    def line(self) -> str:
        return "> " * self.quotes + " " * self.indent + self.marks


def strip_quotes(line: str, most: int | None = None) -> tuple[int, str]:
    """(how many block-quote markers open the line, the rest), counting at most `most`."""
    depth = 0
    while most is None or depth < most:
        m = QUOTE.match(line)
        if not m:
            break
        depth, line = depth + 1, line[m.end():]
    return depth, line


def indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def open_fence(text: str) -> Fence | None:
    """The fence `text` ends inside, None when it ends outside every fence."""
    lines = text.expandtabs().split("\n")
    lines[0] = lines[0].lstrip()
    fence: Fence | None = None
    items: list[int] = []          # content columns of the open list items, outermost first
    quotes, para = 0, False        # quote depth of the lines being read; whether the last line was paragraph text
    for raw in lines:
        if fence is not None:
            depth, line = strip_quotes(raw, fence.quotes)
            if depth == fence.quotes and not line.strip():
                continue                                   # a blank line is code
            if depth == fence.quotes and indent(line) >= fence.indent:
                if fence.closes(line[fence.indent:]):
                    fence = None
                continue                                   # code, or its closing line
            fence = None                                   # the line left the fence's container: it ends there
        depth, line = strip_quotes(raw)
        if depth != quotes:
            quotes, items = depth, []
        if not line.strip():
            para = False
            continue
        while items and indent(line) < items[-1]:
            if para and not BLOCK_START.match(line):
                break                                      # a lazy continuation of the item's paragraph
            items.pop()
        column = items[-1] if items and indent(line) >= items[-1] else 0
        rest = line[column:]
        while m := ITEM.match(rest):                       # list items opened here ("- ", "1. ", "- - ")
            column += len(m.group()) if m.group().rstrip() != m.group() else len(m.group()) + 1
            items.append(column)
            rest = rest[m.end():]
        opener = OPENER.match(rest)
        if opener and not (opener.group(2)[0] == "`" and "`" in opener.group(3)):
            fence = Fence(quotes, column, opener.group(2))
        para = fence is None
    return fence


def closing(text: str) -> str | None:
    """The line that closes the fence `text` ends inside, None when there is none to close."""
    fence = open_fence(text)
    return None if fence is None else fence.line()


def close_fences(text: str) -> str:
    """`text` with the fence it ends inside closed (unchanged when it ends outside every fence)."""
    line = closing(text)
    if line is None:
        return text
    return f"{text}{'' if text.endswith(chr(10)) else chr(10)}{line}"
