"""DocumentSettings: the documents' section of parley's settings (parley.settings assembles the sections): how
large a document may be, and the DocumentLimits (limits.py) the loaders enforce from it."""

from __future__ import annotations

from dataclasses import dataclass

from parley.config import MiB, check, setting
from parley.documents.limits import DEFAULT_LIMITS, DocumentLimits


@dataclass(frozen=True, slots=True)
class DocumentSettings:
    docs_max_mb: int = setting(200, "--docs-max-mb", metavar="MB", least=1,
                               help="largest document parley loads, all its files together (default 200; one "
                                    "file at most 50)")
    docs_max_files: int = setting(5000, "--docs-max-files", metavar="N", least=1,
                                  help="most files read from one directory or archive (default 5000)")

    def __post_init__(self) -> None:
        check(self)

    @property
    def limits(self) -> DocumentLimits:
        total = self.docs_max_mb * MiB
        return DocumentLimits(max_file_bytes=min(DEFAULT_LIMITS.max_file_bytes, total), max_total_bytes=total,
                              max_files=self.docs_max_files)
