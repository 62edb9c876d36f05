"""`parley ask FILES... -q QUESTION [-q QUESTION ...]`: load documents once into model memory and answer
independent questions about them, side by side (one batch, each question forking the document's KV).

Files, directories and archives (.zip, .tar, .tar.gz) of text, Markdown, code, LaTeX, HTML and PDF make one
document, kept in the store: asking again (even after a restart) reads only the new question, since the
document's KV is on disk. Each answer ends with the parts it used (file, lines, pages) and its token counts.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading

from parley.cli.options import add_model_options, load_settings
from parley.errors import InvalidRequest
from parley.sampling import SamplingParams


def add_parser(sub) -> None:
    p = sub.add_parser("ask", help="answer questions about files (loaded once into model memory)",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("paths", nargs="+", metavar="FILE_OR_DIR_OR_ARCHIVE")
    p.add_argument("-q", "--question", action="append", default=[], metavar="QUESTION",
                   help="a question (repeatable: they run side by side)")
    p.add_argument("--name", help="the document's name (default: the file's)")
    p.add_argument("-n", "--max-tokens", type=int, default=256, help="most tokens per answer (default 256)")
    p.add_argument("--temperature", type=float, default=0.0, help="default 0: the same answer every time")
    p.add_argument("--json", action="store_true", help="one JSON document: answers, sources, numbers")
    add_model_options(p)
    p.set_defaults(func=run)


def _sources(meta) -> str:
    """An answer's sources (its Stream's meta, an AnswerMeta) in one line."""
    if meta.mode == "whole":
        likely = ", ".join(s.cite for s in meta.sources)
        return "the whole document" + (f" (closest parts: {likely})" if likely else "")
    return "; ".join(f"[{i}] {s.cite}" for i, s in enumerate(meta.sources, 1)) or "no passage matched"


def run(args: argparse.Namespace) -> int:
    if not args.question:
        raise InvalidRequest("ask at least one question: -q QUESTION", param="question")
    err = sys.stderr
    from parley.api import Parley  # (the model-loading stack: only when a question is asked)

    with Parley(settings=load_settings(args)) as parley:
        info = parley.documents.add(args.paths, name=args.name)
        how = "fits the context: read whole" if info.fits else \
            f"longer than the context ({parley.info.context_size}): the best passages go with each question"
        print(f"parley: {info.name}: {len(info.parts)} file(s), {info.tokens} tokens; {how}", file=err)
        for note in info.notes:
            print(f"parley: note: {note}", file=err)
        params = SamplingParams(temperature=args.temperature, max_tokens=args.max_tokens)
        with _ReadProgress(err) as progress:
            answers = parley.documents.ask_many([info.id], args.question, params=params, watch=progress.watch)
        out = []
        for i, stream in enumerate(answers, 1):
            r, a = stream.wait(), stream.meta
            if r.finish_reason == "error":
                print(f"parley: error: question {i}: {r.error}", file=err)
            out.append({"question": a.question, "answer": r.text, "finish_reason": r.finish_reason,
                        "mode": a.mode, "sources": [s.as_dict() for s in a.sources],
                        "prompt_tokens": r.prompt_tokens, "cached_tokens": r.cached_tokens,
                        "prefilled_tokens": r.prefilled_tokens, "generated_tokens": r.generated_tokens,
                        "ttft_s": round(r.ttft_s, 4), "decode_tps": round(r.decode_tps, 2)})
            if not args.json:
                print(f"Q{i}. {a.question}\n{r.text.strip()}")
                print(f"  [{_sources(a)} | {r.prompt_tokens} prompt tokens, {r.cached_tokens} cached, "
                      f"{r.prefilled_tokens} read; first token {r.ttft_s * 1000:.0f} ms]\n")
        if args.json:
            print(json.dumps({"document": {"id": info.id, "name": info.name, "tokens": info.tokens,
                                           "mode": info.mode, "parts": list(info.parts)}, "answers": out},
                             indent=1, ensure_ascii=False))
    return 0


class _ReadProgress:
    """While a document is read for the first time, its count of tokens read on a terminal's stderr (one line,
    rewritten twice a second); nothing when the document's KV came from the cache or stderr is not a terminal."""

    def __init__(self, err):
        self.err = err
        self.done = threading.Event()
        self.thread: threading.Thread | None = None
        self.shown = False

    def watch(self, stream) -> None:
        if self.err.isatty():
            self.thread = threading.Thread(target=self._show, args=(stream,), daemon=True)
            self.thread.start()

    def _show(self, stream) -> None:
        while not self.done.wait(0.5):
            read, total = stream.progress()
            self.err.write(f"\rparley: reading the document: {read:,} of {total:,} tokens")
            self.err.flush()
            self.shown = True

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        if self.thread is not None:
            self.thread.join()
            if self.shown:
                self.err.write("\n")
