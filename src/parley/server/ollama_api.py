"""Ollama's API on the same port (its docs/api.md; what the `ollama` client, Open WebUI and editor plugins speak),
with the same models, KV memory and limits as the OpenAI and TGI routes:

    POST   /api/chat       a chat reply: NDJSON lines as it comes ("stream": false: one object)
    POST   /api/generate   a completion through the chat template ("raw": true: the prompt as it is)
    GET    /api/tags       the models this server offers       POST /api/show    one, with its GGUF header
    GET    /api/ps         the loaded ones, and when they unload  GET /api/version parley's version
    POST   /api/pull       parley.models.pull, Ollama's status lines    DELETE /api/delete  parley.models.remove
    POST   /api/embed      a unit-length vector per text (/api/embeddings: Ollama's older one-text route)
    POST   /api/copy, /api/create, /api/push: refused by name (parley reads no Modelfiles and pushes nowhere)

The prompt goes through the same door as /v1/chat/completions (`door.chat_prompt`, the same template and
windowing), so a client that resends its growing history reads only its new tokens, on either API. Where
parley and Ollama differ, parley keeps its rules:
  - Overflow: Ollama truncates a prompt that does not fit silently; here it is a 400 naming the limit unless
    the request sends `"truncate": true` (then the oldest messages go, the system prompt stays, and `parley`
    says how many). `shift` (context shifting mid-reply) is refused: a reply that reaches the context's end
    stops with done_reason "length".
  - Options: the ones that sample (num_predict, temperature, top_k, top_p, min_p, repeat_penalty, repeat_last_n,
    presence/frequency_penalty, seed, stop) map onto SamplingParams within the server's caps (num_predict past
    --max-tokens-cap is a 400 naming it; -1 and -2 are "as many as allowed"); num_ctx past the model's context
    is a 400 naming it, a smaller one changes nothing (the model keeps its context; `parley.note` says so);
    Ollama's runner settings (num_thread, num_gpu, use_mmap, ...) are accepted and change nothing; samplers
    parley lacks (typical_p, tfs_z, mirostat) only at their off values. A name Ollama does not know is a 400
    naming it (Ollama logs and ignores it: a typo would silently change nothing).
  - Defaults: Ollama's own (temperature 0.8, top_k 40, top_p 0.9) where the server's defaults are the
    protocols' neutral ones; what `parley serve --temperature ...` sets, and the model's registry settings,
    win over them, as on every route. num_predict left out: as many as the server allows (Ollama's -1).
  - Structured output: `format` "json" (any JSON object) or a JSON Schema object constrains the reply, which
    ends (done_reason "stop") once its JSON is complete (structured.py). `logprobs: true` (+ `top_logprobs`
    0-20) adds Ollama's `logprobs` list ({token, logprob, bytes, top_logprobs}) to the reply, each streamed
    line carrying its own tokens'.
  - Not yet: `tools` and tool messages, `think`, `images`, `suffix`, a custom `template`: each a 400 naming
    the field.
  - Errors: Ollama's `{"error": "..."}` with the status (errors.py builds it for every /api/ path, the
    middlewares' 401/413/429/503 too), parley's `type`, `param` and `code` beside it; a stream that fails
    mid-way ends with an error line, as Ollama's does.
Every final line (or the one object) carries Ollama's counters, durations in nanoseconds: prompt_eval_count is
the whole prompt (cached tokens included, as Ollama over llama-server counts it: clients use it as context
used), prompt_eval_duration only the part that was computed; the cache shows in parley's own `parley` object
(cached_tokens, prefilled_tokens, cache_source, dropped_messages, note). A reply the server ended (shutdown)
has done_reason "cancelled" and `parley.note`. `context` (generate, not raw) is the prompt's and the reply's
token ids: sent back, they come first in the next prompt, where the KV cache finds them.

keep_alive ("5m", seconds, 0, -1) is the model's idle time until it next loads (ModelsService.keep_alive over
the pool): 0 unloads it once the request ends (while another request uses it, as soon as it is idle), -1 keeps
it loaded, left out the server's --model-idle; a request with no messages / an empty prompt only loads it
(done_reason "load") or, with 0, unloads it ("unload"), as `ollama stop` asks. Model names: the registry's,
with or without ":latest" (/api/tags lists "NAME:latest"); a pulled model takes `parley models pull`'s name.
Embeddings (/api/embed, /api/embeddings) come from the facade's `embed`, through /v1/embeddings' concurrency gate
and cancellation (embeddings_api.embedded), with the model loaded and kept alive as for a reply. Where they
differ from Ollama: a text over the model's embedding context is a 400 naming it unless the request sends
`"truncate": true` (Ollama's default true cuts silently); then it keeps its first tokens and
`parley.truncated_tokens` says how many each text lost. `dimensions` only as the model's own size (Ollama
shortens the vectors, which a model not trained for it cannot afford). The vectors are unit length on both
routes (Ollama's older route returns them unnormalized: the cosine is the same).
Handlers only translate; every facade call runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import os
import re
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

from fastapi import APIRouter, Request
from starlette.responses import Response

from parley import __version__
from parley.api import (
    CallArgs,
    Embeddings,
    Prompt,
    ReplyReader,
    Result,
    ToolPlan,
    read_plan,
    read_reply,
    read_tools,
)
from parley.errors import Conflict, InvalidRequest, LimitExceeded, NotFound, ParleyError, shorten
from parley.sampling import MAX_STOP_STRINGS, NEUTRAL, SamplingParams
from parley.server import params as P
from parley.server import structured
from parley.server.bounds import BoundedRoute, off_loop
from parley.server.embeddings_api import embedded
from parley.server.errors import NotSupported, error_body
from parley.server.prompts import TRUNCATE_HINT
from parley.server.responses import failure, finished, parley_ext
from parley.server.schemas import (
    OllamaChatRequest,
    OllamaEmbeddingsRequest,
    OllamaEmbedRequest,
    OllamaGenerateRequest,
    OllamaGenerating,
    OllamaModelRef,
    OllamaOptions,
    OllamaPullRequest,
    OllamaShowRequest,
)
from parley.server.state import ServerState, State
from parley.server.streaming import Generation, SSEResponse

router = APIRouter(tags=["Ollama"], route_class=BoundedRoute)

OLLAMA_DEFAULTS = {"temperature": 0.8, "top_k": 40, "top_p": 0.9}   # Ollama's DefaultOptions (api/types.go)
NEVER = timedelta(microseconds=(2**63 - 1) // 1000)      # Ollama's keep_alive -1: expires_at ~292 years on
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_NUMBER = re.compile(r"\d+(?:\.\d*)?|\.\d+")
# options parley cannot honour, accepted at their off value: (is it off?, why nothing else)
_OFF_ONLY: dict[str, tuple[Callable, str]] = {
    "typical_p": (lambda v: v == 1, "locally typical sampling is not implemented"),
    "tfs_z": (lambda v: v == 1, "tail-free sampling is not implemented"),
    "mirostat": (lambda v: v == 0, "Mirostat sampling is not implemented"),
    "logits_all": (lambda v: v is False, "logits are not returned"),
}


class NDJSONResponse(SSEResponse):
    """Ollama's stream: one JSON object per line, with the SSE response's disconnect watch and cleanup."""

    media_type = "application/x-ndjson"


def line(obj: dict) -> str:
    return json.dumps(obj) + "\n"


def now_iso() -> str:
    return iso(datetime.now(UTC))


def iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def ns(seconds: float) -> int:
    return max(0, int(seconds * 1e9))


# ---- request fields ---------------------------------------------------------------------------------------
def model_key(name: str | None) -> str:
    """The registry name a request's model means: Ollama's default tag ":latest" is the model itself."""
    if not name or not name.strip():
        raise InvalidRequest("model is required (GET /api/tags lists the models)", param="model")
    name = name.strip()
    return name[: -len(":latest")] if name.lower().endswith(":latest") else name


def shown_name(asked: str, door) -> str:
    """The name a response gives: the request's own spelling when it names the model that answered."""
    return asked if model_key(asked).lower() == door.name.lower() else door.name


def keep_alive_s(value) -> float | None:
    """keep_alive in seconds (None: not sent; math.inf: keep loaded), as Ollama reads it: a number of seconds,
    or a Go duration ("5m", "1h30m", "300ms"); negative is forever. A bare number in a string is seconds."""
    if value is None:
        return None
    seconds = None
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        text = value.strip()
        sign = -1.0 if text.startswith("-") else 1.0
        body = text.lstrip("+-")
        if _NUMBER.fullmatch(body):
            seconds = sign * float(body)
        elif body and "".join(m.group(0) for m in _PART.finditer(body)) == body:
            seconds = sign * sum(float(n) * _UNITS[u] for n, u in _PART.findall(body))
    if seconds is None or math.isnan(seconds):
        raise InvalidRequest(f"keep_alive must be a duration like \"5m\", \"1h30m\" or \"90s\", a number of seconds, "
                             f"0 (unload after this request) or -1 (keep loaded); got {shorten(repr(value))}",
                             param="keep_alive")
    return math.inf if seconds < 0 else seconds


def check_generating(body: OllamaGenerating) -> None:
    """400 naming the first field that asks for what parley does not do (yet)."""
    if body.think not in (None, False):
        raise NotSupported(f"think={shorten(repr(body.think))} is not supported: parley parses no thinking out of "
                           "the reply (send false or leave it out)", param="think")
    if body.shift:
        raise NotSupported("shift is not supported: parley never shifts the context (a reply that reaches its end "
                           "stops with done_reason \"length\"); send false or leave it out", param="shift")


def structure(body: OllamaGenerating, params: SamplingParams) -> SamplingParams:
    """params with the request's format (a grammar) and logprobs."""
    asked = structured.ollama_format(body.format)
    structured.check_top(body.top_logprobs, "top_logprobs")
    if body.top_logprobs and not body.logprobs:
        raise InvalidRequest("top_logprobs needs \"logprobs\": true", param="top_logprobs")
    k = (body.top_logprobs or 0) if body.logprobs else None
    return params.replace(grammar=asked and asked.grammar, logprobs=k) if asked or k is not None else params


def check_options(o: OllamaOptions, door) -> str:
    """400 naming an option parley cannot honour; returns a note for one that changes nothing it should say."""
    for name, (is_off, why) in _OFF_ONLY.items():
        value = getattr(o, name)
        if value is not None and not is_off(value):
            raise NotSupported(f"options.{name}={value!r} is not supported by parley: {why}",
                               param=f"options.{name}")
    if o.num_predict is not None and o.num_predict < 1 and o.num_predict not in (-1, -2):
        raise InvalidRequest(f"options.num_predict must be -1 (no limit), -2 (fill the context) or at least 1, "
                             f"got {o.num_predict}", param="options.num_predict")
    if o.repeat_last_n is not None and o.repeat_last_n < -1:
        raise InvalidRequest(f"options.repeat_last_n must be -1 (the whole context), 0 (none) or positive, got "
                             f"{o.repeat_last_n}", param="options.repeat_last_n")
    ctx = door.context_size
    if o.num_ctx is not None:
        if o.num_ctx < 1:
            raise InvalidRequest(f"options.num_ctx must be at least 1, got {o.num_ctx}", param="options.num_ctx")
        if o.num_ctx > ctx:
            raise LimitExceeded(f"options.num_ctx is {o.num_ctx}; model {door.name} runs with a context of {ctx} "
                                "tokens (its ctx_size in `parley models`, or `parley serve --ctx-size` / "
                                "--kv-size): send at most that", param="options.num_ctx",
                                code="context_length_exceeded")
        if o.num_ctx < ctx:
            return (f"options.num_ctx={o.num_ctx} changes nothing: model {door.name} keeps the context it was "
                    f"loaded with ({ctx} tokens)")
    return ""


def sampling(state: ServerState, door, o: OllamaOptions, *, chat: bool) -> SamplingParams:
    """The request's sampling: Ollama's defaults where the server's are neutral, the server's own, the model's
    registry settings over those, the request's options last; within the door's limits."""
    server = state.settings.sampling
    base = server.replace(**{k: v for k, v in OLLAMA_DEFAULTS.items() if getattr(server, k) == getattr(NEUTRAL, k)})
    limits = door.limits
    n = o.num_predict
    changes = {
        "temperature": o.temperature, "top_k": o.top_k, "top_p": o.top_p, "min_p": o.min_p,
        "repeat_penalty": o.repeat_penalty, "presence_penalty": o.presence_penalty,
        "frequency_penalty": o.frequency_penalty, "seed": None if o.seed == -1 else o.seed,
        "stop": o.stop,
        "max_tokens": limits.max_tokens if n is None or n < 0 else n,
        "penalty_last_n": door.context_size if o.repeat_last_n == -1 else o.repeat_last_n,
    }
    names = {k: f"options.{k}" for k in changes}
    names.update(max_tokens="options.num_predict", penalty_last_n="options.repeat_last_n")
    stops = door.chat_stops if chat else ()
    if o.stop and len(o.stop) > MAX_STOP_STRINGS - len(stops):
        raise InvalidRequest(f"options.stop takes at most {MAX_STOP_STRINGS - len(stops)} strings here, got "
                             f"{len(o.stop)}", param="options.stop")
    return P.build(door.sampling_over(base), changes, names, limits=limits, template_stops=stops)


# ---- prompts (in a worker thread: templates and tokenizers take a while on a long history) -----------------
def ollama_calls(i: int, calls: list[dict]) -> list[dict]:
    """An assistant message's Ollama tool_calls ({"function": {"name", "arguments": {...}}}) in OpenAI's shape
    (arguments as JSON text), for chat/tools.py to write back as the model wrote them."""
    out = []
    for k, c in enumerate(calls):
        f = c.get("function") if isinstance(c, dict) else None
        if not isinstance(f, dict) or not isinstance(f.get("name"), str):
            raise InvalidRequest(f"messages.{i}.tool_calls.{k} must be {{\"function\": {{\"name\": ..., "
                                 "\"arguments\": {...}}}", param=f"messages.{i}.tool_calls.{k}")
        args = f.get("arguments") or {}
        out.append({"id": c.get("id"), "type": "function",
                    "function": {"name": f["name"], "arguments": args if isinstance(args, str) else json.dumps(args)}})
    return out


def chat_prompt(state: ServerState, door, body: OllamaChatRequest) -> tuple[Prompt, SamplingParams, ToolPlan | None]:
    """The prompt, the sampling and the tools (Ollama's are OpenAI's, always "auto": it has no tool_choice)."""
    options = body.options or OllamaOptions()
    note = check_options(options, door)
    plan = read_plan(read_tools(body.tools), None) if body.tools else None
    messages = []
    for i, m in enumerate(body.messages):
        where = f"messages.{i}"
        if m.images:
            raise NotSupported(f"{where}.images: images are not supported: the models parley serves read text",
                               param=f"{where}.images")
        d = {"role": m.role, "content": m.content}
        if m.tool_calls:
            if m.role != "assistant":
                raise InvalidRequest(f"{where}.tool_calls: only an assistant message makes tool calls",
                                     param=f"{where}.tool_calls")
            d["tool_calls"] = ollama_calls(i, m.tool_calls)
        messages.append(d)
    params = sampling(state, door, options, chat=True)
    prompt = door.chat_prompt(messages, max_tokens=params.max_tokens, truncate=bool(body.truncate),
                              hint="" if body.truncate else TRUNCATE_HINT, tools=plan)
    return prompt.add_note(note), params, plan


def generate_prompt(state: ServerState, door, body: OllamaGenerateRequest) -> tuple[Prompt, SamplingParams]:
    options = body.options or OllamaOptions()
    note = check_options(options, door)
    if body.images:
        raise NotSupported("images are not supported: the models parley serves read text", param="images")
    if body.suffix:
        raise NotSupported("suffix is not supported: fill-in-the-middle is not available", param="suffix")
    if body.template_:
        raise NotSupported("template is not supported: parley renders with the model's own chat template (or its "
                           "registry chat_format); send the prompt with \"raw\": true to format it yourself",
                           param="template")
    if body.raw:
        for field, value in (("system", body.system), ("context", body.context)):
            if value:
                raise InvalidRequest(f"raw mode does not take {field}: the prompt is sent as it is", param=field)
        params = sampling(state, door, options, chat=False)
        tokens = door.tokenize(body.prompt)
        door.limits.check_prompt(len(tokens), param="prompt")     # before a concurrency slot is taken
        return Prompt(tokens).add_note(note), params, None
    params = sampling(state, door, options, chat=True)
    messages = ([{"role": "system", "content": body.system}] if body.system else []) + \
        [{"role": "user", "content": body.prompt}]
    prompt = door.chat_prompt(messages, max_tokens=params.max_tokens, param="prompt")
    if body.context:
        try:
            door.check_tokens(body.context, "context")
        except InvalidRequest as e:        # the engine's message names no field
            raise InvalidRequest(f"context: {e.message}", param="context") from None
        prompt = Prompt(list(body.context) + prompt.tokens, prompt.dropped, prompt.note)
        door.limits.check_prompt(len(prompt.tokens), param="context",
                                 hint=" (the context of the earlier replies and this prompt)")
    return prompt.add_note(note), params, None


# ---- replies ----------------------------------------------------------------------------------------------
class Turn:
    """One /api/chat or /api/generate request: its model, its clock, and what the reply's lines say."""

    def __init__(self, state: ServerState, body: OllamaGenerating | EmbedBody, *, chat: bool):
        self.state = state
        self.body = body
        self.chat = chat
        self.started = time.monotonic()
        self.keep_alive = keep_alive_s(body.keep_alive)   # a 400 before the model loads
        self.door = None
        self.load_s = 0.0

    async def open(self) -> None:
        """The door to the model (loaded first if need be: Ollama's load_duration), its keep_alive set."""
        key = model_key(self.body.model)
        t0 = time.monotonic()
        self.door = await off_loop(self.state.parley.using, key)
        self.load_s = time.monotonic() - t0
        if self.keep_alive != 0:           # 0 acts once the request ends
            await off_loop(self.state.parley.models.keep_alive, self.door.name, self.keep_alive)

    async def close(self) -> str:
        """keep_alive 0: unload the model now, or once the other requests using it end. Returns done_reason."""
        if self.keep_alive != 0:
            return "load"
        models = self.state.parley.models
        try:
            await off_loop(models.unload, self.door.name)
        except Conflict:                   # another request generates on it: the reaper unloads it when idle
            await off_loop(models.keep_alive, self.door.name, 0.0)
        return "unload"

    @property
    def model(self) -> str:
        return shown_name(self.body.model, self.door)

    def head(self, text: str, *, done: bool, calls=()) -> dict:
        out = {"model": self.model, "created_at": now_iso()}
        if self.chat:
            out["message"] = {"role": "assistant", "content": text}
            if calls:       # Ollama's shape: arguments as an object, no id
                out["message"]["tool_calls"] = [{"function": {"index": c_i, "name": c.name,
                                                              "arguments": json.loads(c.arguments)}}
                                                for c_i, c in calls]
        else:
            out["response"] = text
        out["done"] = done
        return out

    def final(self, gen: Generation, r: Result, prompt: Prompt, text: str, calls=()) -> dict:
        out = self.head(text, done=True, calls=calls)
        prefill_s = max(0.0, r.ttft_s - r.queue_s)
        out.update(done_reason=gen.finish_reason(r), total_duration=ns(time.monotonic() - self.started),
                   load_duration=ns(self.load_s), prompt_eval_count=r.prompt_tokens,
                   prompt_eval_duration=ns(prefill_s), eval_count=r.generated_tokens,
                   eval_duration=ns(max(0.0, r.total_s - r.ttft_s)))
        if not self.chat and not getattr(self.body, "raw", False):
            out["context"] = [*prompt.tokens, *r.token_ids]
        out["parley"] = parley_ext(r, prompt, gen.note, prompt_tokens=r.prompt_tokens,
                                   prefilled_tokens=r.prefilled_tokens)
        return out

    def error_line(self, err: ParleyError) -> str:
        return line(error_body(err.message, type=err.type, param=err.param, code=err.code, status=err.status,
                               path="/api/"))


async def _reply(state: ServerState, request: Request, body: OllamaGenerating, *, chat: bool):
    check_generating(body)
    turn = Turn(state, body, chat=chat)
    await turn.open()
    door = turn.door
    if (chat and not body.messages) or (not chat and not body.prompt):
        reason = await turn.close()        # Ollama's "load" / "unload" request: no reply
        return {**turn.head("", done=True), "done_reason": reason}
    build = chat_prompt if chat else generate_prompt
    prompt, params, plan = await off_loop(build, state, door, body)
    params = structure(body, params)
    if plan is not None and body.format:
        raise NotSupported("format beside tools is not supported by parley: a reply either matches the format "
                           "or may call a tool; send one of them", param="format")

    def begin(loop):
        with structured.grammar_errors("format"):
            return door.generate(prompt, params, loop=loop, param="messages" if chat else "prompt")
    gen = await Generation.start(state, begin)
    if body.stream:
        return NDJSONResponse(_lines(turn, gen, prompt, plan), gen.close)
    result = await finished(gen, request)
    if isinstance(result, Response):
        return result
    await turn.close()
    content, calls = (result.text, []) if plan is None else read_reply(result.text, plan)
    out = turn.final(gen, result, prompt, content, list(enumerate(calls)))
    if result.logprobs is not None:
        out["logprobs"] = structured.openai_content(door, structured.shown(door, result))
    return out


async def _lines(turn: Turn, gen: Generation, prompt: Prompt, plan: ToolPlan | None) -> AsyncIterator[str]:
    """A line per chunk; with tools, content as it comes (never call markup) and a line per call once whole,
    as Ollama streams them."""
    reader = ReplyReader(plan) if plan is not None else None

    def lines(events):
        for e in events:
            if isinstance(e, str):
                yield line(turn.head(e, done=False))
            elif isinstance(e, CallArgs):      # a free reply's call comes whole: its start, then all its arguments
                yield line(turn.head("", done=False, calls=[(e.index, reader.calls[e.index])]))

    try:
        pending: list = []     # logprobs of tokens whose text has not come yet
        async for c in gen.chunks():
            pending += c.logprobs or []
            if c.text:
                if reader is None:
                    out = turn.head(c.text, done=False)
                    if c.logprobs is not None:
                        out["logprobs"], pending = structured.openai_content(turn.door, pending), []
                    yield line(out)
                else:
                    for out in lines(reader.feed(c.text)):
                        yield out
        if reader is not None:
            for out in lines(reader.flush()):
                yield out
        r = gen.stream.result
        err = failure(r)
        if err is not None:
            yield turn.error_line(err)
            return
        await turn.close()                 # before the last line: a client that read it sees the model unloaded
        yield line(turn.final(gen, r, prompt, ""))
    finally:
        gen.close()


@router.post("/api/chat", summary="Chat reply (Ollama), streamed as NDJSON unless \"stream\": false")
async def chat(body: OllamaChatRequest, request: Request, state: State):
    return await _reply(state, request, body, chat=True)


@router.post("/api/generate", summary="Completion (Ollama), through the chat template unless \"raw\": true")
async def generate(body: OllamaGenerateRequest, request: Request, state: State):
    return await _reply(state, request, body, chat=False)


# ---- embeddings -------------------------------------------------------------------------------------------
EmbedBody = OllamaEmbedRequest | OllamaEmbeddingsRequest
EMBED_HINT = ', or send "truncate": true to embed its first tokens'


async def _embedding(state: ServerState, request: Request, body: EmbedBody, texts: list[str],
                     **embed) -> tuple[Turn, Embeddings | Response | None, str]:
    """The model loaded and its keep_alive applied as for a reply (Turn), the options checked as there, the
    texts embedded through /v1/embeddings' gate and cancellation (embeddings_api.embedded): (the turn, the
    Embeddings, None when there were no texts (a load request) or the response for a client that left, a note
    the options call for)."""
    turn = Turn(state, body, chat=False)
    await turn.open()
    try:
        note = check_options(body.options or OllamaOptions(), turn.door)
        result = await embedded(state, request, turn.door, texts, **embed) if texts else None
    finally:
        reason = await turn.close()        # keep_alive 0: unloaded after an error too
    if result is None:
        done = "unloaded" if reason == "unload" else "loaded"
        note = "; ".join(n for n in (note, f"no input: the model was only {done}") if n)
    return turn, result, note


def truncation_note(r: Embeddings) -> str:
    """What truncate: true cut, input by input ("" when nothing was)."""
    cuts = [f"input[{i}] lost its last {n} tokens" for i, n in enumerate(r.truncated) if n]
    if not cuts:
        return ""
    # a cut text holds exactly the limit, the longest any text may be
    return f"{'; '.join(cuts)} (cut to the {max(r.tokens)} tokens {r.model} embeds per text)"


def embed_extension(r: Embeddings | None, note: str) -> dict:
    """parley's own fields beside Ollama's: the pooling, the tokens truncate: true cut per input, a note."""
    out: dict = {}
    if r is not None:
        out = {"pooling": r.pooling, "truncated_tokens": list(r.truncated)}
        note = "; ".join(n for n in (note, truncation_note(r)) if n)
    if note:
        out["note"] = note
    return out


@router.post("/api/embed", summary="Embeddings (Ollama): a unit-length vector per input text")
async def embed(body: OllamaEmbedRequest, request: Request, state: State):
    texts = ([body.input] if body.input else []) if isinstance(body.input, str) else list(body.input)
    turn, r, note = await _embedding(state, request, body, texts, dimensions=body.dimensions,
                                     truncate=bool(body.truncate), hint="" if body.truncate else EMBED_HINT)
    if isinstance(r, Response):
        return r
    return {"model": turn.model, "embeddings": [] if r is None else r.vectors.tolist(),
            "total_duration": ns(time.monotonic() - turn.started), "load_duration": ns(turn.load_s),
            "prompt_eval_count": 0 if r is None else r.prompt_tokens, "parley": embed_extension(r, note)}


@router.post("/api/embeddings", summary="One text's embedding (Ollama's older route; /api/embed takes a list)")
async def embeddings(body: OllamaEmbeddingsRequest, request: Request, state: State):
    texts = [body.prompt] if body.prompt else []
    _, r, note = await _embedding(state, request, body, texts, param="prompt")
    if isinstance(r, Response):
        return r
    return {"embedding": [] if r is None else r.vectors[0].tolist(), "parley": embed_extension(r, note)}


# ---- models ---------------------------------------------------------------------------------------------
def parameter_size(meta: dict) -> str:
    """"135M", "7.6B": the header's size label, else its parameter count as Ollama writes it."""
    label = meta.get("general.size_label")
    if isinstance(label, str) and label.strip():
        return label.strip()
    n = meta.get("general.parameter_count")
    if not isinstance(n, int) or n <= 0:
        return ""
    for unit, size, digits in (("B", 10**9, 1), ("M", 10**6, 2), ("K", 10**3, 0)):
        if n >= size:
            value = n / size
            return f"{value:.0f}{unit}" if value == int(value) or unit == "K" else f"{value:.{digits}f}{unit}"
    return str(n)


def details(v, meta: dict) -> dict:
    family = v.architecture or str(meta.get("general.architecture", ""))
    return {"parent_model": v.quantized.get("from", ""), "format": "gguf", "family": family,
            "families": [family] if family else None, "parameter_size": parameter_size(meta),
            "quantization_level": v.file_type}


def file_facts(v) -> tuple[str, str]:
    """(modified_at, digest) of a model's file. The digest is its SHA-256 for a pulled model (checked against
    the hub's at the pull); for any other, hashing gigabytes on every listing is too slow, so it is the SHA-256
    of the file's path, size and modification time: stable while the file is unchanged, new when it changes."""
    try:
        st = os.stat(v.path)
    except OSError:
        return iso(datetime.now(UTC)), hashlib.sha256(v.path.encode()).hexdigest()
    modified = iso(datetime.fromtimestamp(st.st_mtime, UTC))
    digest = v.pulled.get("sha256") or hashlib.sha256(f"{v.path}\0{st.st_size}\0{st.st_mtime_ns}".encode()).hexdigest()
    return modified, digest


def _headers(state: ServerState, views) -> dict[str, dict]:
    out = {}
    for v in views:
        try:
            out[v.name] = state.parley.models.header(v.name).metadata
        except ParleyError:                # its file is missing or unreadable: listed with what is known
            out[v.name] = {}
    return out


def tags(state: ServerState) -> dict:
    views = state.parley.models.list()
    headers = _headers(state, views)
    models = []
    for v in views:
        modified, digest = file_facts(v)
        models.append({"name": f"{v.name}:latest", "model": f"{v.name}:latest", "modified_at": modified,
                       "size": v.size_bytes, "digest": digest, "details": details(v, headers[v.name])})
    return {"models": models}


def running(state: ServerState) -> dict:
    views = [v for v in state.parley.models.list() if v.state == "loaded"]
    headers = _headers(state, views)
    now = datetime.now(UTC)
    models = []
    for v in views:
        _, digest = file_facts(v)
        size = v.memory_bytes or v.size_bytes
        expires = now + (NEVER if v.unloads_in is None else timedelta(seconds=v.unloads_in))
        models.append({"name": f"{v.name}:latest", "model": f"{v.name}:latest", "size": size, "digest": digest,
                       "details": details(v, headers[v.name]), "expires_at": iso(expires),
                       "size_vram": size if v.device.startswith("gpu") else 0, "context_length": v.context_size})
    return {"models": models}


_OLLAMA_PARAMS = {"max_tokens": "num_predict", "penalty_last_n": "repeat_last_n"}


def show(state: ServerState, body: OllamaShowRequest) -> dict:
    name = model_key(body.model or body.name)
    models = state.parley.models
    v = models.show(name)
    header = models.header(v.name, arrays=body.verbose)
    meta = header.metadata
    params = {_OLLAMA_PARAMS.get(k, k): value for k, value in sorted(v.sampling.items())}
    params["num_ctx"] = v.context_size
    parameters = "\n".join(f"{k:<30} {json.dumps(value) if isinstance(value, str) else value}"
                           for k, value in params.items())
    system = v.settings.get("system", "")
    modelfile = [f"# Modelfile generated by parley from the registry entry of {v.name} (parley reads no "
                 "Modelfiles: `parley models` changes its settings)", f"FROM {v.path}"]
    if header.chat_template:
        modelfile.append(f'TEMPLATE """{header.chat_template}"""')
    if system:
        modelfile.append(f'SYSTEM """{system}"""')
    modelfile += [f"PARAMETER {row}" for row in parameters.splitlines()]
    modified, _ = file_facts(v)
    out = {"modelfile": "\n".join(modelfile) + "\n", "parameters": parameters, "template": header.chat_template,
           "details": details(v, meta),
           "model_info": {k: value for k, value in meta.items()
                          if not k.startswith("gguf.") and k != "tokenizer.chat_template"},
           "capabilities": ["completion"], "modified_at": modified}
    if system:
        out["system"] = system
    return out


@router.get("/api/tags", summary="The models this server offers (Ollama)")
async def list_models(state: State):
    return await off_loop(tags, state)


@router.get("/api/ps", summary="The loaded models and when they unload (Ollama)")
async def list_running(state: State):
    return await off_loop(running, state)


@router.post("/api/show", summary="One model: its details, GGUF header, chat template and parameters (Ollama)")
async def show_model(body: OllamaShowRequest, state: State):
    return await off_loop(show, state, body)


@router.get("/api/version", summary="parley's version (Ollama)")
async def version():
    return {"version": __version__}


def delete(state: ServerState, name: str) -> None:
    """Forget the model registered under exactly `name`. The registry also answers to a file's stem or header
    name (its get()), and after a pull that stem is often the pulled model's own name: deleting that name twice
    must be a 404, not the removal of another model whose file has the same stem."""
    models = state.parley.models
    views = models.list()
    if not any(v.name.lower() == name.lower() for v in views):
        raise NotFound(f"unknown model '{shorten(name)}'; this server offers: {', '.join(v.name for v in views)}",
                       param="model")
    models.remove(name)


@router.delete("/api/delete", summary="Forget a model (Ollama); a file parley pulled goes with it")
async def delete_model(body: OllamaModelRef, state: State):
    await off_loop(delete, state, model_key(body.model or body.name))
    return Response(status_code=200)


def pull_spec(name: str | None) -> str:
    """An Ollama pull name as parley's spec: hf.co/OWNER/REPO:QUANT and OWNER/REPO:QUANT (huggingface.co/
    too), or hf://OWNER/REPO/FILE.gguf. Ollama's own library is not parley's to reach."""
    spec = (name or "").strip()
    if not spec:
        raise InvalidRequest("model is required: hf.co/OWNER/REPO:QUANT", param="model")
    return re.sub(r"^(https?://)?huggingface\.co/", "hf.co/", spec)


def _pull_error(e: ParleyError) -> ParleyError:
    """parley's pull names its argument `spec`; here the field is `model`."""
    if e.param == "spec":
        e.param = "model"
        e.message += (" (parley pulls GGUF files from a Hugging Face hub, $HF_ENDPOINT: name one as "
                      "hf.co/OWNER/REPO:QUANT; Ollama's own library is not reachable from parley)")
    return e


@router.post("/api/pull", summary="Download a model from a hub (Ollama), status lines as NDJSON")
async def pull(body: OllamaPullRequest, state: State):
    spec = pull_spec(body.model or body.name)
    models = state.parley.models
    if not body.stream:
        try:
            v = await off_loop(models.pull, spec, progress=False)
        except ParleyError as e:
            raise _pull_error(e) from None
        return {"status": "success", "parley": {"model": v.name}}
    loop = asyncio.get_running_loop()
    progress: asyncio.Queue = asyncio.Queue()

    def report(done: int, total: int | None) -> None:   # on the pull's thread
        loop.call_soon_threadsafe(progress.put_nowait, (done, total))

    task = asyncio.ensure_future(off_loop(models.pull, spec, progress=report))
    task.add_done_callback(lambda t: t.cancelled() or t.exception())   # read, even after the client left
    first = asyncio.ensure_future(progress.get())
    await asyncio.wait({task, first}, return_when=asyncio.FIRST_COMPLETED)
    if task.done() and task.exception() is not None:   # a bad name, no such repo or file: a status, not a line
        first.cancel()
        e = task.exception()
        raise (_pull_error(e) if isinstance(e, ParleyError) else e) from None
    return NDJSONResponse(_pull_lines(spec, task, first, progress), lambda: None)


async def _pull_lines(spec: str, task: asyncio.Future, first: asyncio.Future,
                      progress: asyncio.Queue) -> AsyncIterator[str]:
    """Ollama's status lines: the download's progress (a line per percent), then the checks, then success. A
    client that leaves does not stop the pull (its partial file is continued by the next pull anyway)."""
    yield line({"status": "pulling manifest"})
    shown = -1
    waiting = first
    try:
        while True:
            await asyncio.wait({task, waiting}, return_when=asyncio.FIRST_COMPLETED)
            if not waiting.done():
                break
            done, total = waiting.result()
            percent = int(100 * done / total) if total else -1
            if percent != shown or done == total:
                shown = percent
                yield line({"status": f"pulling {spec}", "digest": spec, "total": total or 0, "completed": done})
            waiting = asyncio.ensure_future(progress.get())
    finally:
        waiting.cancel()
    try:
        v = task.result()
    except ParleyError as e:
        e = _pull_error(e)
        yield line(error_body(e.message, type=e.type, param=e.param, code=e.code, status=e.status, path="/api/"))
        return
    for status in ("verifying sha256 digest", "writing manifest"):
        yield line({"status": status})
    yield line({"status": "success", "parley": {"model": v.name}})


def _refused(route: str, why: str) -> NotSupported:
    return NotSupported(f"{route} is not supported by parley: {why}", param=None)


@router.post("/api/copy", summary="Not supported: register the file again under another name")
async def copy():
    raise _refused("POST /api/copy", "register the model's file again under another name with `parley models add "
                                     "PATH --name NEW` (GET /api/show gives its path in the modelfile's FROM line)")


@router.post("/api/create", summary="Not supported: parley reads no Modelfiles")
async def create():
    raise _refused("POST /api/create", "parley reads no Modelfiles; register a GGUF file with `parley models add "
                                       "PATH` (its settings: ctx_size, chat_format, system, sampling), or make a "
                                       "quantized copy with `parley models quantize`")


@router.post("/api/push", summary="Not supported: parley pushes models nowhere")
async def push():
    raise _refused("POST /api/push", "parley pushes models nowhere; upload the GGUF file to a hub yourself")

