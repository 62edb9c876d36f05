"""Documents: files to text with positions, safe archive reading (archives), named limits (limits), chunks
that cite their file, lines and pages (chunks), BM25 ranking of chunks for a question (retrieval).

Files to text: the walker and its refusals (load), the decoder a file's name picks (formats: text and its
encoding, HTML, PDF in encoding, html, pdf), and what comes out (document: `LoadedDocument` of `Part`s).

Nothing here knows about models or tokens, and nothing is written anywhere: the store, the prompts and the
edges (`parley ask`, the HTTP API) build on `load_*` -> `LoadedDocument` -> `chunk` -> `Retriever.rank`.
"""

from parley.documents.archives import ARCHIVE_SUFFIXES, is_archive
from parley.documents.chunks import Chunk, chunk
from parley.documents.document import READABLE, LoadedDocument, Location, Page, Part, header
from parley.documents.limits import DEFAULT_LIMITS, DocumentLimits
from parley.documents.load import load_bytes, load_path, load_paths
from parley.documents.retrieval import Retriever, tokenize

__all__ = [
    "ARCHIVE_SUFFIXES",
    "DEFAULT_LIMITS",
    "READABLE",
    "Chunk",
    "DocumentLimits",
    "LoadedDocument",
    "Location",
    "Page",
    "Part",
    "Retriever",
    "chunk",
    "header",
    "is_archive",
    "load_bytes",
    "load_path",
    "load_paths",
    "tokenize",
]
