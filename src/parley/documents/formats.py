"""Which decoder reads a file, by its name, and one file's bytes to a `Part`.

Kinds: plain text, Markdown, source code, LaTeX (all read as text and kept as they are), HTML (its visible
text: html.py), PDF (the text layer: pdf.py). A file with an unknown suffix is read as text if it decodes as
text (encoding.py). A text part that is empty once normalised is `Unreadable`; every kind's characters count
against the budget's `max_chars`.
"""

from __future__ import annotations

from pathlib import PurePosixPath

from parley.documents.document import Part, Unreadable
from parley.documents.encoding import decode_text, normalize
from parley.documents.html import html_to_text
from parley.documents.limits import Budget
from parley.documents.pdf import pdf_text

_KINDS = {
    "markdown": ".md .markdown .mdown .mkd .mdx",
    "latex": ".tex .latex .ltx .sty .cls .bib",
    "html": ".html .htm .xhtml",
    "pdf": ".pdf",
    "text": ".txt .text .log .rst .adoc .org .csv .tsv",
    "code": ".py .pyi .pyx .ipynb .c .h .cc .cpp .cxx .hpp .hh .cu .rs .go .java .kt .kts .scala .groovy "
            ".gradle .swift .m .mm .cs .fs .vb .js .mjs .cjs .jsx .ts .tsx .vue .svelte .css .scss .sass "
            ".less .rb .php .pl .pm .lua .r .jl .hs .ml .mli .ex .exs .erl .clj .dart .zig .nim .sh .bash "
            ".zsh .fish .ps1 .bat .sql .proto .graphql .json .jsonl .yaml .yml .toml .ini .cfg .conf .xml "
            ".cmake .mk .s .asm .f90 .v .sv .vhd .tf .nix",
}
_SUFFIX_KIND = {suffix: kind for kind, suffixes in _KINDS.items() for suffix in suffixes.split()}
_NAME_KIND = {n: "code" for n in ("makefile", "dockerfile", "containerfile", "rakefile", "gemfile", "justfile",
                                  "cmakelists.txt", "build", "workspace")}


def kind_of(name: str) -> str | None:
    base = PurePosixPath(name.rsplit(":", 1)[-1]).name.lower()
    return _NAME_KIND.get(base) or _SUFFIX_KIND.get(PurePosixPath(base).suffix)


def to_part(name: str, label: str, data: bytes, budget: Budget, notes: list[str]) -> Part:
    """`name` goes into the Part, `label` into messages; `notes` gets what is worth saying about the file."""
    kind = kind_of(label) or "text"
    if kind == "pdf":
        text, pages = pdf_text(label, data, budget, notes)
        return Part(name, "pdf", text, pages, None)
    text, encoding = decode_text(label, data)
    if kind == "html":
        text = html_to_text(text)
    text = normalize(text)
    if not text.strip():
        raise Unreadable(f"{label}: empty, nothing to read")
    budget.add_chars(label, len(text))
    return Part(name, kind, text, (), encoding)


__all__ = ["kind_of", "to_part"]
