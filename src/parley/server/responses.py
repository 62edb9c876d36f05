"""OpenAI response shapes, shared by /v1/chat/completions, /v1/completions and the conversations API.

Every response carries `usage` (with prompt_tokens_details.cached_tokens) and a `parley` object: how many
messages were dropped to fit the context, how much of the prompt the KV cache covered and from where, and why
it did not cover the rest. Streams put it on the chunk that carries finish_reason.

A reply the server ended early (shutdown past its grace period, a deleted conversation) is still a reply:
finish_reason "cancelled", the text so far, and `parley.note` saying why. Only a generation that failed is an
error (500, or 400 `kv_budget_exceeded` for a limit).

Log-probabilities (when asked): `chat_completion(..., logprobs=)` puts each choice's in its own shape (a function
of its Result); `openai_events(..., logprobs=)` puts each chunk's on the delta that carries its text (a token whose
text a tool reader holds back travels on the next delta, or on the closing one).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator, Callable

from starlette.responses import Response

from parley import __version__
from parley.api import CallStart, Chunk, Prompt, ReplyReader, Result, TokenLogprob, ToolPlan, read_reply
from parley.errors import EngineUnavailable, LimitExceeded, ParleyError
from parley.server.errors import error_body, parley_error_response
from parley.server.streaming import Generation, client_gone, sse

FINGERPRINT = f"parley-{__version__}"


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(12)}"


def usage(r: Result | list[Result]) -> dict:
    """OpenAI's usage: the prompt once, the completion tokens of every choice."""
    rs = r if isinstance(r, list) else [r]
    completion = sum(x.generated_tokens for x in rs)
    return {
        "prompt_tokens": rs[0].prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": rs[0].prompt_tokens + completion,
        "prompt_tokens_details": {"cached_tokens": rs[0].cached_tokens},
    }


def parley_ext(r: Result, prompt: Prompt, note: str = "", **extra) -> dict:
    out = {
        "dropped_messages": prompt.dropped,
        "cached_tokens": r.cached_tokens,
        "cache_source": r.cache_source,
        "cache_note": r.cache_note,
        "stop_string": r.stop_string,
        "seed": r.seed,
        "ttft_s": round(r.ttft_s, 4),
        "decode_tps": round(r.decode_tps, 2),
    }
    notes = "; ".join(n for n in (prompt.note, note) if n)
    if notes:
        out["note"] = notes
    out.update(extra)
    return out


class GenerationFailed(ParleyError):
    """The generation ended in error."""

    status = 500
    type = "server_error"
    code = "generation_failed"


def failure(r: Result | None) -> ParleyError | None:
    """None when the result is a reply; else the error to answer with."""
    if r is None:
        return GenerationFailed("the generation ended without a result (the scheduler stopped)")
    if r.finish_reason == "error":
        if r.error_code == "kv_budget_exceeded":  # a limit, not a fault: say which one
            return LimitExceeded(r.error or "the request does not fit the KV budget", param="max_tokens",
                                 code="kv_budget_exceeded")
        if r.error_code in ("upstream_unavailable", "replica_unavailable"):    # nothing to generate on, for now
            return EngineUnavailable(r.error or "no engine is reachable", code=r.error_code)
        return GenerationFailed(f"the generation failed: {r.error or 'unknown error'}")
    return None


async def finished(gen: Generation, request, on_chunk=None) -> Result | Response:
    """Wait for a non-streamed reply: its Result, or the response to send instead (499 when the client left,
    the error in the OpenAI shape when the generation failed)."""
    result = await gen.result(request, on_chunk)
    if result is None and gen.client_gone:
        return client_gone()
    for r in [result] if result is None else [st.result for st in gen.streams]:
        err = failure(r)
        if err is not None:
            return parley_error_response(err, request.url.path)
    return result


async def finished_all(gen: Generation, request) -> list[Result] | Response:
    """finished() for n choices: every Result, in order."""
    first = await finished(gen, request)
    return first if isinstance(first, Response) else [st.result for st in gen.streams]


def tool_finish(reason: str, calls) -> str:
    """A reply that made calls and ended on its own finishes with "tool_calls" (what agent loops check)."""
    return "tool_calls" if calls and reason == "stop" else reason


def reply_message(text: str, plan: ToolPlan | None, ids=None) -> tuple[dict, list]:
    """An assistant message in OpenAI's shape, its tool calls read out of the text (content null when it holds
    only calls; `ids`: a stored reply's call ids, api.call_ids), and the calls."""
    if plan is None:
        return {"role": "assistant", "content": text}, []
    content, calls = read_reply(text, plan, ids)
    message = {"role": "assistant", "content": content or None}
    if calls:
        message["tool_calls"] = [{"id": c.id, "type": "function",
                                  "function": {"name": c.name, "arguments": c.arguments}} for c in calls]
    return message, calls


def chat_completion(cid: str, model: str, gen: Generation, r: Result | list[Result], prompt: Prompt,
                    plan: ToolPlan | None = None, logprobs: Callable[[Result], dict] | None = None,
                    call_ids=None, **extra) -> dict:
    """A chat.completion: one choice per Result (n > 1: several, in order); with tools, each reply's calls;
    `logprobs(result)`: a choice's logprobs object, when the request asked for them."""
    rs = r if isinstance(r, list) else [r]
    choices = []
    for i, x in enumerate(rs):
        message, calls = reply_message(x.text, plan, call_ids)
        choices.append({"index": i, "message": message, "logprobs": None if logprobs is None else logprobs(x),
                        "finish_reason": tool_finish(gen.finish_reason(x), calls)})
    return {
        "id": cid,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": FINGERPRINT,
        "choices": choices,
        "usage": usage(rs),
        "parley": parley_ext(rs[0], prompt, gen.note, **extra),
    }


async def openai_events(gen: Generation, *, obj: str, cid: str, opening: dict | None, piece: Callable[[str], dict],
                        closing: dict, model: str, prompt: Prompt, include_usage: bool,
                        reader: Callable[[int], Pieces] | None = None,
                        logprobs: Callable[[int], LogprobShape] | None = None, **extra) -> AsyncIterator[str]:
    """OpenAI stream events: `opening` (if any), a `piece` per text chunk, `closing` with the finish_reason (+ parley),
    [usage], [DONE]; an error event instead of the closing one when the generation failed. `reader(i)` (tools)
    turns choice i's text into its deltas instead of `piece`, and says its finish_reason; `logprobs(i)` gives
    choice i's logprobs shape (a function of a chunk's TokenLogprobs), when the request asked for them."""
    created = int(time.time())
    readers = [_Choice(reader(i) if reader is not None else Pieces(piece), None if logprobs is None else logprobs(i))
               for i in range(len(gen.streams))]

    def event(choices: list, **more) -> dict:
        out = {"id": cid, "object": obj, "created": created, "model": model, "system_fingerprint": FINGERPRINT,
               "choices": choices}
        if include_usage:
            out["usage"] = None
        out.update(more)
        return out

    def chunk(choice: dict, finish: str | None = None, index: int = 0, **more) -> dict:
        return event([{"index": index, "logprobs": None, **choice, "finish_reason": finish}], **more)

    try:
        n = len(gen.streams)
        if opening is not None:
            for i in range(n):
                yield sse(chunk(opening, index=i))
        if n == 1:
            async for c in gen.chunks():
                for d in readers[0].feed(c):
                    yield sse(chunk(d))
        else:           # n choices side by side: each chunk names its choice, each choice closes when it ends
            async for i, c in gen.indexed():
                if c is None:
                    r = gen.streams[i].result
                    if failure(r) is None:
                        for d in readers[i].flush():
                            yield sse(chunk(d, index=i))
                        yield sse(chunk(readers[i].closing(closing), readers[i].finish(gen.finish_reason(r)),
                                        index=i))
                else:
                    for d in readers[i].feed(c):
                        yield sse(chunk(d, index=i))
        results = [st.result for st in gen.streams]
        err = next((e for e in map(failure, results) if e is not None), None)
        if err is not None:
            yield sse(error_body(err.message, type=err.type, code=err.code, status=err.status))
        else:
            ext = parley_ext(results[0], prompt, gen.note, **extra)
            if n == 1:
                for d in readers[0].flush():
                    yield sse(chunk(d))
                yield sse(chunk(readers[0].closing(closing), readers[0].finish(gen.finish_reason(results[0])),
                                parley=ext))
            else:
                yield sse(event([], parley=ext))
            if include_usage:
                yield sse(event([], usage=usage(results)))
        yield sse("[DONE]")
    finally:
        gen.close()


LogprobShape = Callable[[list[TokenLogprob]], dict]


class _Choice:
    """One choice of a stream: its reader (text -> deltas) and, when asked, its chunks' logprobs, each put on
    the first delta made from its chunk's text (or a later one, when the reader held that text back)."""

    def __init__(self, reader: Pieces, shape: LogprobShape | None):
        self._reader = reader
        self._shape = shape
        self._pending: list[TokenLogprob] = []

    def feed(self, c: Chunk) -> list[dict]:
        if self._shape is not None and c.logprobs:
            self._pending.extend(c.logprobs)
        return self._tagged(self._reader.feed(c.text)) if c.text else []

    def flush(self) -> list[dict]:
        return self._tagged(self._reader.flush())

    def closing(self, closing: dict) -> dict:
        return self._tagged([closing])[0]

    def finish(self, reason: str) -> str:
        return self._reader.finish(reason)

    def _tagged(self, deltas: list[dict]) -> list[dict]:
        if deltas and self._pending:
            deltas[0] = {**deltas[0], "logprobs": self._shape(self._pending)}
            self._pending = []
        return deltas


class Pieces:
    """A choice's text -> its stream deltas, one per chunk (`piece`), nothing held back."""

    def __init__(self, piece: Callable[[str], dict]):
        self._piece = piece

    def feed(self, text: str) -> list[dict]:
        return [self._piece(text)]

    def flush(self) -> list[dict]:
        return []

    def finish(self, reason: str) -> str:
        return reason


class ToolDeltas(Pieces):
    """A choice's text -> content deltas and tool_calls deltas as OpenAI streams them: a call's first delta
    carries its index, id, type and name with arguments "", the next ones pieces of its arguments."""

    def __init__(self, plan: ToolPlan, ids=None):
        self._reader = ReplyReader(plan, ids)

    def feed(self, text: str) -> list[dict]:
        return [self._delta(e) for e in self._reader.feed(text)]

    def flush(self) -> list[dict]:
        return [self._delta(e) for e in self._reader.flush()]

    def finish(self, reason: str) -> str:
        return tool_finish(reason, self._reader.calls)

    @staticmethod
    def _delta(e) -> dict:
        if isinstance(e, str):
            return {"delta": {"content": e}}
        if isinstance(e, CallStart):
            call = {"index": e.index, "id": e.id, "type": "function", "function": {"name": e.name, "arguments": ""}}
        else:
            call = {"index": e.index, "function": {"arguments": e.text}}
        return {"delta": {"tool_calls": [call]}}


def chat_events(gen: Generation, *, model: str, prompt: Prompt, include_usage: bool, plan: ToolPlan | None = None,
                logprobs: LogprobShape | None = None, call_ids=None, **extra) -> AsyncIterator[str]:
    """chat.completion.chunk events: the role first, then content deltas (and tool_calls deltas, with tools)."""
    return openai_events(gen, obj="chat.completion.chunk", cid=new_id("chatcmpl"),
                         opening={"delta": {"role": "assistant", "content": ""}},
                         piece=lambda text: {"delta": {"content": text}}, closing={"delta": {}},
                         model=model, prompt=prompt, include_usage=include_usage,
                         reader=None if plan is None else (lambda _i: ToolDeltas(plan, call_ids)),
                         logprobs=None if logprobs is None else (lambda _i: logprobs), **extra)
