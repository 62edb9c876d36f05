"""A PDF's text layer via pypdf, page by page, each page's span in the text kept for citing.

Pages are joined by a blank line. Refused (`Unreadable`): a PDF without any text layer (scanned: run OCR
first), an encrypted one (decrypt it first), one pypdf cannot parse; more pages than `max_pdf_pages` is a
`LimitExceeded`. A page whose text cannot be extracted is left empty with a note, as are scanned pages among
text ones.
"""

from __future__ import annotations

import io

import pypdf

from parley.documents.document import PART_SEPARATOR, Page, Unreadable
from parley.documents.encoding import normalize
from parley.documents.limits import Budget, over_limit


def pdf_text(label: str, data: bytes, budget: Budget, notes: list[str]) -> tuple[str, tuple[Page, ...]]:
    """The text layer, pages joined by a blank line, each page's span kept."""
    reader = _open_pdf(label, data)
    if len(reader.pages) > budget.limits.max_pdf_pages:
        raise over_limit(label, f"{len(reader.pages)} pages", "max_pdf_pages", str(budget.limits.max_pdf_pages),
                         "split the PDF or raise the limit")
    texts, pages, pos, empty = [], [], 0, 0
    for number, page in enumerate(reader.pages, 1):
        text = _page_text(label, number, page, notes)
        budget.add_chars(label, len(text))
        pos += len(PART_SEPARATOR) if texts else 0
        pages.append(Page(number, pos, pos + len(text)))
        texts.append(text)
        pos += len(text)
        empty += not text.strip()
    if empty == len(texts):
        raise Unreadable(f"{label}: PDF without a text layer (scanned? run OCR first, e.g. `ocrmypdf in.pdf "
                          f"out.pdf`)")
    if empty:
        notes.append(f"{label}: {empty} of {len(texts)} pages have no text layer (scanned pages?)")
    return PART_SEPARATOR.join(texts), tuple(pages)


def _open_pdf(label: str, data: bytes) -> pypdf.PdfReader:
    try:
        reader = pypdf.PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise Unreadable(f"{label}: encrypted PDF (a password is needed); decrypt it first, e.g. "
                              f"`qpdf --decrypt --password=... in.pdf out.pdf`")
        len(reader.pages)  # parses the page tree now, inside this try
        return reader
    except Unreadable:
        raise
    except pypdf.errors.DependencyError:
        raise Unreadable(f"{label}: encrypted PDF (AES); decrypt it first, e.g. `qpdf --decrypt in.pdf "
                          f"out.pdf`") from None
    except Exception as e:  # pypdf raises many types on malformed input; none of them is the user's fix
        raise Unreadable(f"{label}: not a readable PDF ({type(e).__name__}: {e})") from None


def _page_text(label: str, number: int, page: pypdf.PageObject, notes: list[str]) -> str:
    try:
        return normalize(page.extract_text() or "").strip("\n")
    except Exception as e:  # one broken page costs that page, not the document
        notes.append(f"{label} p. {number}: text could not be extracted ({type(e).__name__}); left empty")
        return ""


__all__ = ["pdf_text"]
