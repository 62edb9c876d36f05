"""Fixtures for the document tests: PDFs written at test time (fpdf2, pypdf) and archives built in memory.
No model is loaded here."""

from __future__ import annotations

import io
import tarfile
import zipfile

import pytest


@pytest.fixture
def make_pdf():
    """make_pdf(["page 1 text", "page 2 text", ...]) -> PDF bytes with a text layer, one page per string."""
    from fpdf import FPDF

    def make(pages: list[str]) -> bytes:
        pdf = FPDF()
        pdf.set_font("Helvetica", size=12)
        for text in pages:
            pdf.add_page()
            pdf.multi_cell(0, 8, text)
        return bytes(pdf.output())

    return make


@pytest.fixture
def image_pdf() -> bytes:
    """A 'scanned' page: one image, no text layer."""
    from fpdf import FPDF
    from PIL import Image

    pdf = FPDF()
    pdf.add_page()
    pdf.image(Image.new("RGB", (200, 100), (200, 30, 30)), x=10, y=10, w=100)
    return bytes(pdf.output())


@pytest.fixture
def make_zip():
    """make_zip({"name": bytes, ...}) -> zip bytes (deflated)."""

    def make(files: dict[str, bytes]) -> bytes:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            for name, data in files.items():
                zf.writestr(name, data)
        return buf.getvalue()

    return make


@pytest.fixture
def make_tar():
    """make_tar({"name": bytes | TarInfo, ...}, "gz" | "") -> tar bytes; a TarInfo value is added as is."""

    def make(files: dict, compression: str = "gz") -> bytes:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode=f"w:{compression}") as tf:
            for name, data in files.items():
                if isinstance(data, tarfile.TarInfo):
                    tf.addfile(data)
                    continue
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
        return buf.getvalue()

    return make
