"""The documents service (`parley.documents`): files loaded once into model memory, asked many questions.

    info = parley.documents.add(["paper.pdf"])             # a DocumentInfo (plain values)
    stream = parley.documents.ask([info.id], "Who wrote it?", loop=loop)    # a Stream; meta: sources, mode
    parley.documents.owned_by(owner)                       # one browser's documents only

Everything here blocks (loading files, tokenizing, the first read of a document): an edge that serves an event
loop calls it in a worker thread (api/guard.py checks). Scoped to an owner, another owner's document looks like
none at all (404). The rules (what fits whole, retrieval, pinning) are the chat stage's: chat/documents.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path

from parley.api.guard import LoopGuard, blocking
from parley.chat.documents import DocumentInfo, Documents
from parley.documents import DocumentLimits
from parley.errors import InvalidRequest, NotFound
from parley.sampling import SamplingParams
from parley.scheduler.request import Result
from parley.scheduler.stream import Stream


class DocumentsService:
    """Over the door's model (`door`: api.facade.Parley): documents are store rows every model shares, and each
    model keeps its own memory of them (their KV, pinned), made when it first reads them."""

    def __init__(self, door, guard: LoopGuard, owner: str | None = None):
        self._door = door
        self._guard = guard
        self._owner = owner

    @property
    def _docs(self) -> Documents:
        return self._door._loaded().documents

    @property
    def limits(self) -> DocumentLimits:
        """How large a document may be (--docs-max-mb, --docs-max-files)."""
        return self._door.settings.documents.limits

    def owned_by(self, owner: str) -> DocumentsService:
        if not isinstance(owner, str) or not owner:
            raise InvalidRequest("owner must be a non-empty string", param="owner")
        return DocumentsService(self._door, self._guard, owner)

    @blocking
    def add(self, paths: Sequence[str | Path], *, name: str | None = None, root: str | Path | None = None
            ) -> DocumentInfo:
        """Files, directories or archives as one document (`root`: every path must be inside it)."""
        if isinstance(paths, (str, Path)):
            paths = [paths]
        for p in paths:
            if "\x00" in str(p):
                raise InvalidRequest("a path holds a NUL character; name a file", param="path")
        return self._docs.add(paths, name=name, owner=self._owner, root=Path(root) if root is not None else None)

    @blocking
    def add_bytes(self, name: str, data: bytes) -> DocumentInfo:
        """An upload (a file or an archive)."""
        return self._docs.add_bytes(name, data, owner=self._owner)

    @blocking
    def list(self) -> list[DocumentInfo]:
        return self._docs.list(owner=self._owner)

    @blocking
    def get(self, document_id: str) -> DocumentInfo:
        return self._mine(document_id)

    @blocking
    def delete(self, document_id: str) -> None:
        """Forget it and unpin its KV; refused (409) while a conversation pins it."""
        self._mine(document_id)
        self._docs.delete(document_id, owner=self._owner)

    @blocking
    def warm(self, document_ids: Sequence[str]) -> Result:
        """Read the documents' shared prefix into the cache now (or restore it from disk), pinned and written to
        the disk tier; returns how the read went (cached_tokens = what was restored)."""
        for d in document_ids:
            self._mine(d)
        return self._docs.warm(document_ids)

    @blocking
    def ask(self, document_ids: Sequence[str], question: str, *, params: SamplingParams | None = None,
            loop: asyncio.AbstractEventLoop | None = None, watch: Callable | None = None) -> Stream:
        """One question, its own prompt after the documents' shared, pinned prefix (read once). `watch` gets the
        Stream of that first read, if this question starts it (its progress() counts the tokens read)."""
        return self.ask_many(document_ids, [question], params=params, loop=loop, watch=watch)[0]

    @blocking
    def ask_many(self, document_ids: Sequence[str], questions: Sequence[str], *,
                 params: SamplingParams | None = None, loop: asyncio.AbstractEventLoop | None = None,
                 watch: Callable | None = None) -> list[Stream]:
        """Independent questions side by side: they fork the shared prefix and run in the same batches."""
        for d in document_ids:
            self._mine(d)
        with self._door._serving(None) as (loaded, limits):    # held while the questions are submitted
            return loaded.documents.ask_many(document_ids, questions, params=params, loop=loop, watch=watch,
                                             limits=limits)

    @blocking
    def pinned_text(self, document_ids: Sequence[str]) -> str:
        """What a conversation's system message carries for these documents: the instructions and their text
        (or, for a long one, its beginning)."""
        for d in document_ids:
            self._mine(d)
        return self._docs.pinned_text(document_ids)

    @blocking
    def prompt_for(self, document_ids: Sequence[str], question: str) -> list[int]:
        """The prompt token ids ask() would send for `question` (benchmarks give them to their baselines)."""
        return self._docs.prompt_for(document_ids, question)

    def _mine(self, document_id: str) -> DocumentInfo:
        info = self._docs.info(document_id)
        if self._owner is not None and info.owner != self._owner:
            raise NotFound(f"no document {str(document_id)[:64]} here", param="document_id")
        return info
