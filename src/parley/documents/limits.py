"""Named limits on what a document may be, and the budget that enforces them during one load.

`DocumentLimits` is the one place the defaults live; the CLI and the server build theirs from settings and pass
it down. A `Budget` is made per load (one `load_paths` call shares one across all its sources) and raises
`LimitExceeded` the moment a count passes its limit, before the rest is read. Every message names the file,
the limit by its field name (also in `param`) and the fix.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from parley.errors import InvalidRequest, LimitExceeded

MB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class DocumentLimits:
    """Sizes are bytes of source, before any text extraction; `max_chars` is the extracted text."""

    max_file_bytes: int = 50 * MB  # one file, or one archive member once uncompressed
    max_total_bytes: int = 200 * MB  # all files of one document together; also caps an archive's own size
    max_files: int = 5000  # files examined in a directory or an archive (loaded or skipped)
    max_expansion_ratio: float = 100.0  # uncompressed / compressed bytes of an archive or a member (zip bomb)
    ratio_grace_bytes: int = 1 * MB  # the ratio is checked once this much has expanded: tiny files compress well
    max_chars: int = 20_000_000  # characters of the document's text
    max_pdf_pages: int = 5000

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
                raise InvalidRequest(f"document limit {f.name} must be a positive number, got {value!r}",
                                     param=f.name)
        if self.max_expansion_ratio < 1:
            raise InvalidRequest(f"document limit max_expansion_ratio must be at least 1, got "
                                 f"{self.max_expansion_ratio!r}", param="max_expansion_ratio")


DEFAULT_LIMITS = DocumentLimits()


def human_bytes(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def over_limit(name: str, what: str, limit: str, value: str, fix: str) -> LimitExceeded:
    """`name: <what> is over <limit> (<value>); <fix>`: the one shape of every limit message."""
    return LimitExceeded(f"{name}: {what} is over {limit} ({value}); {fix}", param=limit)


def check_file_size(name: str, nbytes: int, limits: DocumentLimits) -> None:
    if nbytes > limits.max_file_bytes:
        raise over_limit(name, human_bytes(nbytes), "max_file_bytes", human_bytes(limits.max_file_bytes),
                         "split the file or raise the limit")


class Budget:
    """Counts files, bytes and characters of one load; each `add_*` raises as soon as a limit is passed."""

    def __init__(self, limits: DocumentLimits):
        self.limits = limits
        self.files = 0
        self.bytes = 0
        self.chars = 0

    def add_file(self, name: str) -> None:
        self.files += 1
        if self.files > self.limits.max_files:
            raise over_limit(name, f"file number {self.files}", "max_files", str(self.limits.max_files),
                             "load a subdirectory or fewer files, or raise the limit")

    def add_bytes(self, name: str, nbytes: int) -> None:
        check_file_size(name, nbytes, self.limits)
        self.bytes += nbytes
        if self.bytes > self.limits.max_total_bytes:
            raise over_limit(name, f"the total so far, {human_bytes(self.bytes)},", "max_total_bytes",
                             human_bytes(self.limits.max_total_bytes), "load fewer files or raise the limit")

    def add_chars(self, name: str, nchars: int) -> None:
        self.chars += nchars
        if self.chars > self.limits.max_chars:
            raise over_limit(name, f"the text so far, {self.chars:,} characters,", "max_chars",
                             f"{self.limits.max_chars:,}", "load fewer files or raise the limit")
