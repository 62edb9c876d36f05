"""Documents in model memory: loaded once, pinned, asked many independent questions.

    info = documents.add([Path("paper.pdf")])          # text + positions (parley.documents), a row in the store
    answers = documents.ask_many([info.id], ["Who wrote it?", "What is it about?"])   # side by side: Streams
    for a in answers: a.wait(); print(a.result.text, a.meta.sources)       # meta: chat.meta.AnswerMeta

A document that fits the context (with room for a question and its answer) is the system message of the chat
template: instructions, then its text. Every question is its own prompt after that prefix, so the prefix's KV
is computed once, pinned, and forked zero-copy by each question (questions never see each other), and it is
written to the disk tier at once, keyed by the model and its exact tokens: the same text after a restart, or
uploaded again under another name (a lone document's name is not in its prompt), is ready without being read.

A document that does not fit is split into chunks with positions (file, lines, pages). Its prompt keeps a fixed
part first (the instructions and the document's beginning: pinned, shared by every question), then the chunks
BM25 ranks highest for the question, then the question; the answer cites the chunks it was given.
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from parley.chat.limits import Limits
from parley.chat.meta import AnswerMeta
from parley.chat.prompt import Built
from parley.documents import (
    Chunk,
    DocumentLimits,
    LoadedDocument,
    Page,
    Part,
    Retriever,
    chunk,
    load_bytes,
    load_paths,
)
from parley.errors import Conflict, InvalidRequest, LimitExceeded
from parley.sampling import SamplingParams
from parley.scheduler.request import Result
from parley.scheduler.stream import Stream
from parley.store import Document, Store

INSTRUCTIONS = ("Answer the user's questions about the document below from what it says. When it does not "
                "say, answer that the document does not say.")
RETRIEVAL_INSTRUCTIONS = ("Answer the user's question about the document below. Its beginning is here; the "
                          "passages most relevant to each question come with the question, numbered: cite them "
                          "by number.")
ANSWER_ROOM = 768           # tokens kept for a question and its answer when deciding whether a document fits
HEAD_SHARE = 0.25           # of the context: a long document's fixed part (its beginning)
EXCERPT_SHARE = 0.45        # of the context: the passages retrieved for one question
LIKELY_SOURCES = 3          # a whole document's answer names its parts that best match the question
PIN_SHARE = 0.5             # pinned documents together hold at most this share of the KV cells
CACHED_DOCS = 8             # loaded documents kept in memory (text, chunks, index)


@dataclass(frozen=True, slots=True)
class DocumentInfo:
    id: str
    name: str
    content_hash: str
    size_bytes: int
    chars: int
    tokens: int                # prompt tokens of the document's prefix (instructions + text)
    fits: bool                 # whole in the context; else retrieval
    parts: tuple[str, ...]     # file names inside it
    notes: tuple[str, ...]     # what loading skipped, and why
    created: float
    owner: str | None = None   # whose it is (a browser's, on the web page); None: anyone's

    @property
    def mode(self) -> str:
        return "whole" if self.fits else "retrieval"


@dataclass(frozen=True, slots=True)
class Source:
    """A part of a document an answer used: a chunk given with the question (retrieval), or, for a whole
    document, one of its parts that best matches the question."""

    document_id: str
    cite: str                  # "paper.pdf p. 3", "src/main.py lines 10-42"
    chunk: int | None = None
    score: float | None = None
    given: bool = True         # in the prompt as an excerpt (retrieval); False: the whole document was

    def as_dict(self) -> dict:
        return {"document_id": self.document_id, "cite": self.cite, "chunk": self.chunk,
                "score": None if self.score is None else round(self.score, 3), "given": self.given}


@dataclass
class _Loaded:
    row: Document
    doc: LoadedDocument
    chunks: list[Chunk] | None = None
    retriever: Retriever | None = None
    head: str | None = None


@dataclass
class _Pin:
    slot: object
    cells: int
    used: float = 0.0


@dataclass
class _Plan:
    built: Built
    prefix: list[int]
    sources: list[Source] = field(default_factory=list)
    mode: str = "whole"


def _parts_meta(doc: LoadedDocument) -> list[dict]:
    return [{"name": p.name, "kind": p.kind, "start": s, "end": e, "encoding": p.encoding,
             "pages": [list(pg) for pg in p.pages]} for p, (s, e) in zip(doc.parts, doc.spans, strict=True)]


def _rebuild(row: Document) -> LoadedDocument:
    parts = tuple(Part(name=m["name"], kind=m["kind"], text=row.text[m["start"]:m["end"]],
                       pages=tuple(Page(*pg) for pg in m["pages"]), encoding=m.get("encoding"))
                  for m in row.parts)
    doc = LoadedDocument(name=row.name, parts=parts, size_bytes=row.size_bytes, notes=tuple(row.notes))
    if doc.content_hash != row.content_hash:
        raise InvalidRequest(f"document {row.id} does not rebuild to its stored text (content hash differs)",
                             param="document_id")
    return doc


class Documents:
    def __init__(self, model, store: Store, limits: DocumentLimits | None = None,
                 docs_root: Path | None = None):
        self.model = model          # chat.model.Model
        self.store = store
        self.limits = limits or DocumentLimits()
        self.docs_root = docs_root
        self._loaded: OrderedDict[str, _Loaded] = OrderedDict()
        self._pins: dict[tuple[int, ...], _Pin] = {}
        self._lock = threading.RLock()

    # ---- documents ---------------------------------------------------------------------------------------
    def add(self, paths: Sequence[str | Path], *, name: str | None = None, owner: str | None = None,
            root: Path | None = None) -> DocumentInfo:
        """Files, directories or archives as one document (`root`: every path must be inside it)."""
        doc = load_paths([Path(p) for p in paths], self.limits, name=name, root=root)
        return self._add(doc, owner)

    def add_bytes(self, name: str, data: bytes, *, owner: str | None = None) -> DocumentInfo:
        """An upload (a file or an archive)."""
        return self._add(load_bytes(name, data, self.limits), owner)

    def _add(self, doc: LoadedDocument, owner: str | None) -> DocumentInfo:
        if not doc.text.strip():
            raise InvalidRequest(f"{doc.name}: no text to read", param="document")
        same = self.store.find_document(name=doc.name, content_hash=doc.content_hash, owner=owner)
        if same is not None:  # the same file again: the same row (and the same KV)
            return self._info(same)
        loaded = _Loaded(row=None, doc=doc)  # type: ignore[arg-type]
        tokens = len(self._whole_prefix([loaded]))
        row = self.store.add_document(name=doc.name, content_hash=doc.content_hash, size_bytes=doc.size_bytes,
                                      text=doc.text, parts=_parts_meta(doc), notes=list(doc.notes),
                                      tokens=tokens, tokens_key=self.model.tokens_key, owner=owner)
        loaded.row = row
        self._remember(row.id, loaded)
        return self._info(row)

    def _info(self, row: Document) -> DocumentInfo:
        tokens = row.tokens
        if tokens is None or row.tokens_key != self.model.tokens_key:  # stored under another model
            tokens = len(self._whole_prefix([self._get(row.id)]))
            self.store.set_document_tokens(row.id, tokens, self.model.tokens_key)
        return DocumentInfo(id=row.id, name=row.name, content_hash=row.content_hash, size_bytes=row.size_bytes,
                            chars=sum(p["end"] - p["start"] for p in row.parts), tokens=tokens,
                            fits=self._fits(tokens), parts=tuple(p["name"] for p in row.parts),
                            notes=tuple(row.notes), created=row.created, owner=row.owner)

    def info(self, document_id: str) -> DocumentInfo:
        return self._info(self._get(document_id).row)

    def list(self, *, owner: str | None = None) -> list[DocumentInfo]:
        return [self._info(r) for r in self.store.list_documents(owner=owner)]

    def delete(self, document_id: str, *, owner: str | None = None) -> None:
        """Forget a document and unpin its KV. Refused (409) while conversations pin it: change their
        document_ids first (PATCH), or delete them. `owner`: whose conversations the refusal may name."""
        loaded = self._get(document_id)
        users = self.store.delete_document(document_id)
        if users:
            named = [cid for cid, who in users if owner is None or who == owner]
            shown = ", ".join(named[:5]) + (f" and {len(named) - 5} more" if len(named) > 5 else "")
            others = len(users) - len(named)
            whose = f"{shown}{' and ' if shown and others else ''}{f'{others} of others' if others else ''}"
            raise Conflict(f"document {document_id} is pinned by {len(users)} conversation"
                           f"{'' if len(users) == 1 else 's'} ({whose}): remove it from their document_ids "
                           "(PATCH /v1/conversations/{id}) or delete them first", param="document_id",
                           code="document_in_use")
        with self._lock:
            self._loaded.pop(document_id, None)
        key = tuple(self._whole_prefix([loaded])) if self._fits(loaded.row.tokens or 0) else None
        if key is not None:
            self._unpin(key)

    # ---- questions ---------------------------------------------------------------------------------------
    def ask(self, document_ids: Sequence[str], question: str, *, params: SamplingParams | None = None,
            loop: asyncio.AbstractEventLoop | None = None, watch: Callable | None = None) -> Stream:
        """One question about the documents: its own prompt after their shared, pinned prefix."""
        return self.ask_many(document_ids, [question], params=params, loop=loop, watch=watch)[0]

    def ask_many(self, document_ids: Sequence[str], questions: Sequence[str], *,
                 params: SamplingParams | None = None, loop: asyncio.AbstractEventLoop | None = None,
                 watch: Callable | None = None, limits: Limits | None = None) -> list[Stream]:
        """Independent questions side by side: the prefix is read (or restored) once, then every question is
        submitted at once and forks it, so they run in the same batches. `watch` gets the Stream of the
        prefix's first read, if there is one (its progress() counts the tokens read: a page shows it).
        `limits`: the door's (a prompt over them is refused before anything is read, max_tokens held to them)."""
        if not questions:
            raise InvalidRequest("ask at least one question", param="question")
        for i, q in enumerate(questions):
            if not isinstance(q, str) or not q.strip():
                raise InvalidRequest(f"question {i + 1} is empty", param="question")
        ids = tuple(dict.fromkeys(document_ids))
        if not ids:
            raise InvalidRequest("name at least one document", param="document_ids")
        loaded = [self._get(i) for i in ids]
        base = (params or SamplingParams(temperature=0.0)).with_stops(self.model.stops)
        plans = [self._plan(loaded, q) for q in questions]
        if limits is not None:
            for plan in plans:
                limits.check_prompt(len(plan.built.tokens), param="question")
            if base.max_tokens > limits.max_tokens:
                base = base.replace(max_tokens=limits.max_tokens)
        self.warm_prefix(plans[0].prefix, watch=watch)
        sched = self.model.scheduler
        out = []
        for q, plan in zip(questions, plans, strict=True):
            meta = AnswerMeta(question=q, document_ids=ids, prompt_tokens=len(plan.built.tokens), mode=plan.mode,
                              prefix_tokens=len(plan.prefix), sources=plan.sources)
            out.append(sched.stream(plan.built.tokens, base, loop=loop, param="question", meta=meta))
        return out

    def prompt_for(self, document_ids: Sequence[str], question: str) -> list[int]:
        """The prompt token ids ask() would send for `question` (benchmarks give them to their baselines)."""
        loaded = [self._get(i) for i in dict.fromkeys(document_ids)]
        return list(self._plan(loaded, question).built.tokens)

    def warm(self, document_ids: Sequence[str]) -> Result:
        """Read the documents' shared prefix into the cache now (or restore it from disk), pinned and written to
        the disk tier; returns how the read went (cached_tokens = what was restored)."""
        loaded = [self._get(i) for i in dict.fromkeys(document_ids)]
        return self.warm_prefix(self._plan(loaded, "?").prefix)

    # ---- for conversations -------------------------------------------------------------------------------
    def pinned_text(self, document_ids: Sequence[str]) -> str:
        """What a conversation's system message carries for its documents: instructions and the text (whole),
        or instructions and the beginning (retrieval: the passages come with each message, see excerpts)."""
        loaded = [self._get(i) for i in document_ids]
        if self._fits_all(loaded):
            return INSTRUCTIONS + "\n\n" + self._joined(loaded)
        return RETRIEVAL_INSTRUCTIONS + "\n\n" + self._head(loaded)

    def excerpts(self, document_ids: Sequence[str], question: str) -> tuple[str, list[Source]]:
        """For a long document: the passages for `question` and the question, as the new message shows them
        ("" and [] when the documents fit whole)."""
        loaded = [self._get(i) for i in document_ids]
        if self._fits_all(loaded):
            return "", []
        text, sources = self._excerpt_block(loaded, question)
        return text, sources

    # ---- internals ---------------------------------------------------------------------------------------
    def _get(self, document_id: str) -> _Loaded:
        with self._lock:
            hit = self._loaded.get(document_id)
            if hit is not None:
                self._loaded.move_to_end(document_id)
                return hit
        row = self.store.get_document(document_id)
        loaded = _Loaded(row=row, doc=_rebuild(row))
        self._remember(document_id, loaded)
        return loaded

    def _remember(self, document_id: str, loaded: _Loaded) -> None:
        with self._lock:
            self._loaded[document_id] = loaded
            while len(self._loaded) > CACHED_DOCS:
                self._loaded.popitem(last=False)

    def _fits(self, tokens: int) -> bool:
        return tokens + ANSWER_ROOM <= self.model.context_size

    def _fits_all(self, loaded: list[_Loaded]) -> bool:
        return self._fits(len(self._whole_prefix(loaded)))

    @staticmethod
    def _joined(loaded: list[_Loaded]) -> str:
        if len(loaded) == 1:
            return loaded[0].doc.text  # no name: the same text under another name is the same prompt
        return "\n\n".join(f"=== document: {x.doc.name} ===\n{x.doc.text}" for x in loaded)

    def _messages(self, system: str, user: str) -> list[dict]:
        return [{"role": "system", "content": system}, {"role": "user", "content": user}]

    def _prefix_of(self, system: str) -> list[int]:
        """The tokens every question's prompt starts with: the common start of two renders with different
        questions (the system turn and the next user header)."""
        b = self.model.builder
        a = b.build(self._messages(system, "a")).tokens
        c = b.build(self._messages(system, "b")).tokens
        n = 0
        while n < min(len(a), len(c)) and a[n] == c[n]:
            n += 1
        return a[:n]

    def _whole_prefix(self, loaded: list[_Loaded]) -> list[int]:
        return self._prefix_of(INSTRUCTIONS + "\n\n" + self._joined(loaded))

    def _plan(self, loaded: list[_Loaded], question: str) -> _Plan:
        b = self.model.builder
        whole = INSTRUCTIONS + "\n\n" + self._joined(loaded)
        prefix = self._prefix_of(whole)
        if self._fits(len(prefix)):
            built = b.build(self._messages(whole, question))
            return _Plan(built, prefix, self._likely(loaded, question), "whole")
        system = RETRIEVAL_INSTRUCTIONS + "\n\n" + self._head(loaded)
        block, sources = self._excerpt_block(loaded, question)
        built = b.build(self._messages(system, block))
        if len(built.tokens) + ANSWER_ROOM // 2 > self.model.context_size:
            raise LimitExceeded(f"the question and its passages are {len(built.tokens)} tokens; the context holds "
                                f"{self.model.context_size} with room for the answer: ask a shorter question",
                                param="question", code="context_length_exceeded")
        return _Plan(built, self._prefix_of(system), sources, "retrieval")

    def _chunks(self, x: _Loaded) -> tuple[list[Chunk], Retriever]:
        if x.chunks is None:
            x.chunks = chunk(x.doc)
            x.retriever = Retriever(x.chunks)
        return x.chunks, x.retriever

    def _likely(self, loaded: list[_Loaded], question: str) -> list[Source]:
        ranked = []
        for x in loaded:
            _, retriever = self._chunks(x)
            ranked += [(score, x, c) for c, score in retriever.rank(question, k=LIKELY_SOURCES)]
        ranked.sort(key=lambda t: -t[0])
        best = [Source(x.row.id, c.cite(), c.index, score, given=False) for score, x, c in ranked[:LIKELY_SOURCES]]
        # no part matches the question's words: the answer still came from the whole text of every file
        return best or [Source(x.row.id, part.name, given=False) for x in loaded for part in x.doc.parts]

    def _head(self, loaded: list[_Loaded]) -> str:
        """The beginning of the documents that fits HEAD_SHARE of the context, cut at a line break."""
        first = loaded[0]
        if first.head is not None and len(loaded) == 1:
            return first.head
        text = self._joined(loaded)
        budget = int(self.model.context_size * HEAD_SHARE)
        lo, hi = 0, len(text)
        count = self.model.count
        while lo < hi:  # the longest prefix (in characters) whose tokens fit the budget
            mid = (lo + hi + 1) // 2
            if count(text[:mid]) <= budget:
                lo = mid
            else:
                hi = mid - 1
        cut = text.rfind("\n", 0, lo)
        head = text[: cut if cut > lo // 2 else lo].rstrip() + "\n[... the document continues ...]"
        if len(loaded) == 1:
            first.head = head
        return head

    def _excerpt_block(self, loaded: list[_Loaded], question: str) -> tuple[str, list[Source]]:
        head_chars = len(self._head(loaded))
        ranked = []
        for x in loaded:
            chunks, retriever = self._chunks(x)
            skip_below = head_chars if len(loaded) == 1 else 0
            ranked += [(score, x, c) for c, score in retriever.rank(question, k=12) if c.end > skip_below]
        ranked.sort(key=lambda t: -t[0])
        budget = int(self.model.context_size * EXCERPT_SHARE)
        count = self.model.count
        pieces, sources, used = [], [], 0
        for score, x, c in ranked:
            piece = f"[{len(pieces) + 1}] {c.cite()}\n{c.text.strip()}"
            n = count(piece) + 4
            if used + n > budget:
                continue
            pieces.append(piece)
            sources.append(Source(x.row.id, c.cite(), c.index, score))
            used += n
        passages = "\n\n".join(pieces) if pieces else "(no passage of the document matches the question)"
        return f"Passages:\n{passages}\n\nQuestion: {question}", sources

    def warm_prefix(self, prefix: list[int], watch: Callable | None = None) -> Result | None:
        """Pin `prefix` (reading or restoring it once) and write it to the disk tier; None when it is pinned.
        `watch`: Scheduler.pin's."""
        key = tuple(prefix)
        with self._lock:
            pin = self._pins.get(key)
            if pin is not None:
                return None
            self._make_pin_room(len(prefix))
            slot, result = self.model.scheduler.pin(prefix, persist=True, watch=watch)
            self._pins[key] = _Pin(slot, len(prefix))
            return result

    def _make_pin_room(self, cells: int) -> None:
        """Unpin the oldest documents while pinned ones would hold more than PIN_SHARE of the KV cells."""
        limit = int(self.model.kv_cells * PIN_SHARE)
        while self._pins and sum(p.cells for p in self._pins.values()) + cells > limit:
            oldest = next(iter(self._pins))
            self._unpin(oldest)

    def _unpin(self, key: tuple[int, ...]) -> None:
        with self._lock:
            pin = self._pins.pop(key, None)
        if pin is not None:
            self.model.scheduler.unpin(pin.slot)
