"""A text file's bytes to str, and what is not text.

- Encoding: a BOM, then strict UTF-8, then charset-normalizer (preferring cp1252 when it reads as cleanly as
  the best guess: short Western texts are otherwise often taken for a neighbouring code page).
- Binary is refused (`Unreadable`): NUL bytes (but in a BOM'd UTF-16/32 file), valid UTF-8 that is mostly
  control characters, bytes no encoding reads.
- `normalize`: "\\n" line ends and no trailing whitespace at the very end; line numbers stay those of the file.
"""

from __future__ import annotations

import codecs

import charset_normalizer

from parley.documents.document import READABLE, Unreadable

_WESTERN_MARGIN = 0.1  # chaos points cp1252 may be behind charset-normalizer's best guess and still win


def normalize(text: str) -> str:
    """"\\n" line ends, no trailing whitespace at the very end; earlier lines are kept as they are."""
    return text.replace("\r\n", "\n").replace("\r", "\n").rstrip()


def binary(label: str) -> Unreadable:
    return Unreadable(f"{label}: binary file (NUL bytes), not text; parley reads {READABLE}")


def has_utf16_32_bom(data: bytes) -> bool:
    return data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE))  # the UTF-32 BOMs start the same way


def decode_text(label: str, data: bytes) -> tuple[str, str]:
    """(text, encoding): a BOM, then strict UTF-8, then charset-normalizer; binary data is refused."""
    for bom, encoding in ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF32_LE, "utf-32"),
                          (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF16_LE, "utf-16"),
                          (codecs.BOM_UTF16_BE, "utf-16")):
        if data.startswith(bom):
            try:
                return data.decode(encoding), encoding
            except UnicodeDecodeError:
                break
    if b"\x00" in data:  # valid UTF-8, but no text file holds NUL bytes (a BOM'd UTF-16/32 file returned above)
        raise binary(label)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    else:
        if _mostly_control(text):
            raise binary(label)
        return text, "utf-8"
    best = _detect(data)
    if best is None:
        raise Unreadable(f"{label}: not text in any encoding parley can detect (binary?); parley reads {READABLE}")
    return str(best), best.encoding


def _mostly_control(text: str, sample: int = 8192) -> bool:
    """More than 10% control characters (other than tab, newlines, form feed) in the first `sample`: data."""
    head = text[:sample]
    n = sum(1 for ch in head if ord(ch) < 32 and ch not in "\t\n\r\f")
    return bool(head) and n > len(head) // 10


def _detect(data: bytes):
    best = charset_normalizer.from_bytes(data).best()
    western = charset_normalizer.from_bytes(data, cp_isolation=["cp1252"]).best()
    if western is not None and (best is None or western.chaos <= best.chaos + _WESTERN_MARGIN):
        return western
    return best


__all__ = ["binary", "decode_text", "has_utf16_32_bom", "normalize"]
