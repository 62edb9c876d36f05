"""PDFs written at test time: the text layer by page, page numbers in chunks and citations, refusals."""

from __future__ import annotations

import io

import pypdf
import pytest

from parley.documents import DocumentLimits, chunk, load_bytes, load_path
from parley.errors import InvalidRequest, LimitExceeded

PAGES = [
    "Apples grow in orchards. The orchard on the hill has forty apple trees.",
    "Bananas ripen in the sun. A banana plant is not a tree but a giant herb.",
    "Cherries bloom in spring. The cherry festival takes place every April.",
]


def test_three_pages_keep_their_numbers(make_pdf):
    doc = load_bytes("paper.pdf", make_pdf(PAGES))
    (part,) = doc.parts
    assert part.kind == "pdf" and part.encoding is None
    assert [p.number for p in part.pages] == [1, 2, 3]
    for page, text in zip(part.pages, PAGES, strict=True):
        assert part.text[page.start:page.end] == text
    assert part.page_at(part.text.index("giant herb")) == 2
    assert doc.locate(doc.text.index("festival")).page == 3


def test_chunks_and_citations_carry_pages(make_pdf):
    doc = load_bytes("paper.pdf", make_pdf(PAGES))
    small = chunk(doc, target_chars=80, overlap_chars=0)
    assert [c.cite() for c in small] == ["paper.pdf p. 1", "paper.pdf p. 2", "paper.pdf p. 3"]
    assert "banana plant" in small[1].text
    whole = chunk(doc)
    assert len(whole) == 1 and whole[0].cite() == "paper.pdf pp. 1-3"
    two = chunk(doc, target_chars=160, overlap_chars=0)
    assert two[0].cite() == "paper.pdf pp. 1-2"


def test_pdf_without_text_layer_is_refused(image_pdf):
    with pytest.raises(InvalidRequest) as e:
        load_bytes("scan.pdf", image_pdf)
    assert str(e.value).startswith("scan.pdf: PDF without a text layer (scanned? run OCR first")
    writer = pypdf.PdfWriter()
    writer.add_blank_page(612, 792)
    buf = io.BytesIO()
    writer.write(buf)
    with pytest.raises(InvalidRequest, match="blank.pdf: PDF without a text layer"):
        load_bytes("blank.pdf", buf.getvalue())


def test_some_pages_without_text_are_noted(make_pdf):
    doc = load_bytes("mixed.pdf", make_pdf([PAGES[0], "", PAGES[2]]))
    assert doc.notes == ("mixed.pdf: 1 of 3 pages have no text layer (scanned pages?)",)
    assert [p.number for p in doc.parts[0].pages] == [1, 2, 3]
    assert doc.locate(doc.text.index("Cherries")).page == 3


def _encrypted(data: bytes, user_password: str) -> bytes:
    writer = pypdf.PdfWriter()
    writer.append(pypdf.PdfReader(io.BytesIO(data)))
    writer.encrypt(user_password=user_password, owner_password="owner", algorithm="RC4-128")
    buf = io.BytesIO()
    writer.write(buf)
    return buf.getvalue()


def test_encrypted_pdf_is_refused_unless_it_opens_without_a_password(make_pdf):
    data = make_pdf(PAGES)
    with pytest.raises(InvalidRequest, match=r"^locked.pdf: encrypted PDF \(a password is needed\); decrypt"):
        load_bytes("locked.pdf", _encrypted(data, "secret"))
    assert "orchard" in load_bytes("open.pdf", _encrypted(data, "")).text


def test_corrupt_pdf_is_refused():
    with pytest.raises(InvalidRequest, match=r"^broken.pdf: not a readable PDF"):
        load_bytes("broken.pdf", b"%PDF-1.7\n this is not really a pdf \n%%EOF")


def test_page_limit(make_pdf):
    with pytest.raises(LimitExceeded, match=r"^paper.pdf: 3 pages is over max_pdf_pages \(2\)"):
        load_bytes("paper.pdf", make_pdf(PAGES), DocumentLimits(max_pdf_pages=2))


def test_scanned_pdf_in_a_directory_is_skipped_with_a_note(tmp_path, make_pdf, image_pdf):
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "paper.pdf").write_bytes(make_pdf(PAGES))
    (tmp_path / "lib" / "scan.pdf").write_bytes(image_pdf)
    doc = load_path(tmp_path / "lib")
    assert [p.name for p in doc.parts] == ["paper.pdf"]
    assert doc.notes[0].startswith("lib/scan.pdf: PDF without a text layer")
    assert doc.text.startswith("Apples")  # one part left: no header, as for the file on its own
