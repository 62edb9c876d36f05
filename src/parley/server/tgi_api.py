"""TGI-compatible routes (the API of Hugging Face text-generation-inference and its `text-generation` client):
POST /generate, POST /generate_stream, POST / (the client's route: either, by `stream`; the reply is a list),
GET /info, GET /health. Which model: the `x-model` header, or a path per model as a router in front of several
TGI servers gives (`/models/{name}` and `/models/{name}/generate`, `/generate_stream`, `/info`: the client's
`Client("http://host:8000/models/NAME")` works unchanged); neither: the default model.

Parameters follow TGI: sampling is on when do_sample is true or any of temperature != 1, top_k, top_p < 1 is
sent; otherwise decoding is greedy. Unset stages take the server's sampling defaults, which are TGI's (top_k
0, top_p 1, no penalties, temperature 1 when sampling) unless `parley serve --top-k ...` set others: the same
defaults as the OpenAI routes, so a greedy request gives the same tokens on both. finish_reason: "eos_token"
(end of turn), "stop_sequence" (a stop string: it is never in the output, unlike TGI's), "length". `truncate`
keeps the last N prompt tokens, as asked. TGI has no "cancelled": a reply the server ended (shutdown past its
grace period) ends with TGI's error event (or a 503 JSON error), never a broken connection.

Structured output: `grammar` {"type": "json", "value": schema} or {"type": "regex", "value": "..."}
(structured.py). Log-probabilities (the model's raw distribution, before the samplers): `details` lists every
generated token with its logprob, `top_n_tokens` (1-20) the most likely ones at each step (details.top_tokens);
a streamed token carries the log-probability of its event's text (the sum over its tokens, usually one) and the
top tokens of its last. `best_of` (2-16, sampling only, not streamed, as TGI): that many sequences of the
prompt side by side (read once, forked), the one with the highest sum of logprobs returned, the others in
details.best_of_sequences; their details' token texts are each token's own (a chunk's are the streamed text).
"""

from __future__ import annotations

from contextlib import nullcontext

from fastapi import APIRouter, Header, Request
from starlette.responses import Response

from parley import __version__
from parley.api import Chunk, Prompt, Result, TokenLogprob
from parley.api.facade import MAX_SAMPLES
from parley.errors import InvalidRequest, ShuttingDown
from parley.sampling import MAX_STOP_STRINGS, SamplingParams
from parley.server import params as P
from parley.server import structured
from parley.server.bounds import BoundedRoute, off_loop
from parley.server.errors import NotSupported, error_body, parley_error_response
from parley.server.responses import failure, finished, parley_ext
from parley.server.schemas import TGIParameters, TGIRequest
from parley.server.state import ServerState, State
from parley.server.streaming import Generation, SSEResponse, sse

router = APIRouter(tags=["TGI"], route_class=BoundedRoute)


def _unsupported(name: str, why: str) -> NotSupported:
    return NotSupported(f"{name} is not supported by parley: {why}", param=f"parameters.{name}")


def tgi_sampling(state: ServerState, door, p: TGIParameters) -> SamplingParams:
    if p.watermark:
        raise _unsupported("watermark", "send false")
    if p.typical_p is not None and p.typical_p < 1.0:
        raise _unsupported("typical_p", "typical sampling is not implemented (send null or 1.0)")
    if p.adapter_id is not None:
        raise _unsupported("adapter_id", "LoRA adapters are not available")
    if p.temperature is not None and p.temperature < 0:
        raise InvalidRequest(f"parameters.temperature must be positive, got {p.temperature}",
                             param="parameters.temperature")
    warpers = ((p.temperature is not None and p.temperature != 1.0) or bool(p.top_k)
               or (p.top_p is not None and p.top_p < 1.0))
    sample = (p.do_sample or warpers) and p.temperature != 0
    check_best_of(p, sample)
    changes = {   # None: the server's default (state.settings.sampling)
        "temperature": p.temperature if sample else 0.0,
        "top_k": p.top_k,
        "top_p": p.top_p,
        "repeat_penalty": p.repetition_penalty,
        "frequency_penalty": p.frequency_penalty,
        "seed": p.seed,
        "stop": p.stop or None,
        "max_tokens": p.max_new_tokens,
    }
    names = {k: f"parameters.{k}" for k in changes}
    names["repeat_penalty"] = "parameters.repetition_penalty"
    names["max_tokens"] = "parameters.max_new_tokens"
    if p.stop and len(p.stop) > MAX_STOP_STRINGS:
        raise InvalidRequest(f"parameters.stop takes at most {MAX_STOP_STRINGS} strings, got {len(p.stop)}",
                             param="parameters.stop")
    return P.build(door.sampling_over(state.settings.sampling), changes, names, limits=door.limits)


def check_best_of(p: TGIParameters, sample: bool) -> None:
    """best_of as TGI takes it: 1 to the most sequences of one prompt, more than one only when sampling."""
    if p.best_of is None or p.best_of == 1:
        return
    if not 1 <= p.best_of <= MAX_SAMPLES:
        raise InvalidRequest(f"parameters.best_of must be 1 to {MAX_SAMPLES}, got {p.best_of}",
                             param="parameters.best_of")
    if not sample:
        raise InvalidRequest("parameters.best_of > 1 needs sampling (do_sample: true): greedy sequences would all "
                             "be the same", param="parameters.best_of")


def top_n(p: TGIParameters) -> int | None:
    """top_n_tokens as a number of alternatives (None or 0: none)."""
    if p.top_n_tokens is not None and not 0 <= p.top_n_tokens <= 20:
        raise InvalidRequest(f"parameters.top_n_tokens must be 0 to 20, got {p.top_n_tokens}",
                             param="parameters.top_n_tokens")
    return p.top_n_tokens or None


def tgi_failure(gen: Generation, r: Result | None):
    """The error a TGI reply ends with instead of its last token: a failure, or a reply the server ended."""
    err = failure(r)
    if err is None and r.finish_reason == "cancelled":
        err = ShuttingDown(f"the generation was ended by the server: {gen.note or 'cancelled'}")
    return err


def tgi_finish(r: Result) -> str:
    if r.finish_reason == "length":
        return "length"
    return "stop_sequence" if r.stop_string is not None else "eos_token"


class _Prepared:
    def __init__(self, state: ServerState, door, body: TGIRequest, *, stream: bool):
        p = body.parameters or TGIParameters()
        if stream and p.decoder_input_details:
            raise InvalidRequest("parameters.decoder_input_details is not supported when streaming",
                                 param="parameters.decoder_input_details")
        if stream and (p.best_of or 1) > 1:    # TGI refuses it too: which sequence to stream is not known yet
            raise InvalidRequest("parameters.best_of > 1 is not supported when streaming",
                                 param="parameters.best_of")
        self.p = p
        self.door = door
        self.n = p.best_of or 1
        self.top_n = top_n(p)
        self.asked = structured.tgi_grammar(p.grammar)
        params = tgi_sampling(state, door, p)
        # logprobs whenever they are shown (details, a stream's tokens) or choose (best_of)
        wanted = p.details or stream or self.n > 1
        self.params = params.replace(grammar=self.asked and self.asked.grammar, logprobs=(self.top_n or 0) if wanted else None)
        if not body.inputs:
            raise InvalidRequest("inputs is empty", param="inputs")
        tokens = door.tokenize(body.inputs)
        self.truncated = 0
        if p.truncate is not None:
            if p.truncate < 1:
                raise InvalidRequest(f"parameters.truncate must be at least 1, got {p.truncate}",
                                     param="parameters.truncate")
            if len(tokens) > p.truncate:
                self.truncated = len(tokens) - p.truncate
                tokens = tokens[-p.truncate:]
        door.limits.check_prompt(len(tokens), param="inputs")   # before a concurrency slot is taken
        self.prompt = Prompt(tokens)
        if self.truncated:
            self.prompt.note = f"the first {self.truncated} prompt tokens were cut (parameters.truncate)"
        self.prefix = body.inputs if p.return_full_text else ""
        self.greedy = self.params.greedy

    def details(self, r: Result, tokens: list[dict], others: list[Result] = ()) -> dict:
        out = self.sequence(r, tokens)
        del out["generated_text"]
        out["best_of_sequences"] = [self.sequence(o, self.tokens(o)) for o in others] if others else None
        return out

    def sequence(self, r: Result, tokens: list[dict]) -> dict:
        """One sequence's details (TGI's BestOfSequence: the details of a reply, with its text)."""
        out = {
            "generated_text": self.prefix + r.text,
            "finish_reason": tgi_finish(r),
            "generated_tokens": r.generated_tokens,
            "seed": None if self.greedy else r.seed,
            "prefill": [],
            "tokens": tokens,
            "top_tokens": [self.top(lp) for lp in r.logprobs or []] if self.top_n else None,
        }
        if self.p.decoder_input_details:
            text = self.door.token_text
            out["prefill"] = [{"id": t, "text": text(t), "logprob": None} for t in self.prompt.tokens]
        return out

    def tokens(self, r: Result) -> list[dict]:
        """A reply's generated tokens, each with its own text and logprob."""
        lps = r.logprobs or []
        return [_token(t, self.door.token_text(t), logprob=lps[i].logprob if i < len(lps) else None,
                       special=t == self.door.eos_id) for i, t in enumerate(r.token_ids)]

    def top(self, lp: TokenLogprob) -> list[dict]:
        text = self.door.token_text
        return [_token(t, text(t), logprob=p, special=t == self.door.eos_id) for t, p in lp.top]

    def ext(self, r: Result) -> dict:
        return parley_ext(r, self.prompt, truncated_tokens=self.truncated)


def _token(tid: int, text: str, special: bool = False, logprob: float | None = None) -> dict:
    return {"id": tid, "text": text, "logprob": logprob, "special": special}


def best(results: list[Result]) -> int:
    """The index of the sequence with the highest sum of logprobs (TGI's best_of)."""
    return max(range(len(results)), key=lambda i: sum(lp.logprob for lp in results[i].logprobs or []))


async def _door(state: ServerState, model: str | None):
    """The model a TGI request names (the x-model header, or the /models/{name}/ path), loaded in a worker
    thread; an unknown name is a 404 listing the models."""
    return await off_loop(state.parley.using, model)


async def _generate(state: ServerState, request: Request, body: TGIRequest, model: str | None) -> dict | object:
    prep = await off_loop(_Prepared, state, await _door(state, model), body, stream=False)
    gen = await _start(state, prep)
    if prep.n > 1:
        return await _best_of(request, prep, gen)
    tokens: list[dict] = []   # one per generated token; a chunk's text goes on its first token

    def on_chunk(c: Chunk) -> None:
        for i, tid in enumerate(c.token_ids):
            tokens.append(_token(tid, c.text if i == 0 else ""))
        if not c.token_ids and c.text and tokens:
            tokens[-1]["text"] += c.text

    result = await finished(gen, request, on_chunk)
    if isinstance(result, Response):
        return result
    err = tgi_failure(gen, result)
    if err is not None:
        return parley_error_response(err, request.url.path)
    # tokens generated but never shown: the ones that spelled the stop string
    for tid in result.token_ids[len(tokens):]:
        tokens.append(_token(tid, ""))
    for token, lp in zip(tokens, result.logprobs or [], strict=False):
        token["logprob"] = lp.logprob
    out = {"generated_text": prep.prefix + result.text}
    if prep.p.details:
        out["details"] = prep.details(result, tokens)
    out["parley"] = prep.ext(result)
    return out


async def _best_of(request: Request, prep: _Prepared, gen: Generation):
    """best_of sequences side by side; the most likely one answers, the others are its details' best_of_sequences."""
    first = await finished(gen, request)
    if isinstance(first, Response):
        return first
    results = [st.result for st in gen.streams]
    for r in results:
        err = tgi_failure(gen, r)
        if err is not None:
            return parley_error_response(err, request.url.path)
    i = best(results)
    result, others = results[i], results[:i] + results[i + 1:]
    out = {"generated_text": prep.prefix + result.text}
    if prep.p.details:
        out["details"] = prep.details(result, prep.tokens(result), others)
    out["parley"] = prep.ext(result)
    return out


async def _stream_events(state: ServerState, prep: _Prepared, gen: Generation):
    eos_id = prep.door.eos_id
    held: dict | None = None
    index = 0
    last_id = eos_id

    def event(held: tuple[dict, list | None], final: dict | None = None) -> str:
        nonlocal index
        index += 1
        token, top = held
        out = {"index": index, "token": token, "top_tokens": top, "generated_text": None, "details": None}
        if final:
            out.update(final)
        return sse(out)

    try:
        async for c in gen.chunks():
            if not c.text:
                continue
            if c.token_ids:
                last_id = c.token_ids[-1]
            if held is not None:
                yield event(held)
            held = _streamed(prep, last_id, c)
        r = gen.stream.result
        err = tgi_failure(gen, r)
        if err is not None:
            if held is not None:
                yield event(held)
            yield sse(error_body(err.message, type=err.type, code=err.code, status=err.status, path="/generate"))
            return
        final = {"generated_text": prep.prefix + r.text}
        if prep.p.details:
            final["details"] = {"finish_reason": tgi_finish(r), "generated_tokens": r.generated_tokens,
                                "seed": None if prep.greedy else r.seed, "input_length": r.prompt_tokens}
        final["parley"] = prep.ext(r)
        if tgi_finish(r) == "eos_token":
            if held is not None:
                yield event(held)
            yield event((_token(eos_id, "", special=True), None), final)
        elif held is not None:
            yield event(held, final)
        else:
            yield event((_token(last_id, "", special=True), None), final)
    finally:
        gen.close()


def _streamed(prep: _Prepared, tid: int, c: Chunk) -> tuple[dict, list | None]:
    """A stream event's token (its text: the chunk's; its logprob: that of the chunk's tokens together) and the
    top tokens of the chunk's last token (None unless top_n_tokens)."""
    lps = c.logprobs or []
    token = _token(tid, c.text, logprob=sum(lp.logprob for lp in lps) if lps else None)
    return token, (prep.top(lps[-1]) if prep.top_n and lps else None)


async def _start(state: ServerState, prep: _Prepared) -> Generation:
    door = prep.door

    def begin(loop):
        with structured.grammar_errors(prep.asked.param) if prep.asked else nullcontext():
            if prep.n == 1:
                return door.generate(prep.prompt, prep.params, loop=loop, param="inputs")
            return door.samples(prep.prompt, prep.params, prep.n, loop=loop, param="inputs")
    return await Generation.start(state, begin)


async def _stream(state: ServerState, body: TGIRequest, model: str | None) -> SSEResponse:
    prep = await off_loop(_Prepared, state, await _door(state, model), body, stream=True)
    gen = await _start(state, prep)
    return SSEResponse(_stream_events(state, prep, gen), gen.close)


async def _compat(state: ServerState, request: Request, body: TGIRequest, model: str | None):
    if body.stream:
        return await _stream(state, body, model)
    out = await _generate(state, request, body, model)
    return [out] if isinstance(out, dict) else out


MODEL_HEADER = Header(None, alias="x-model", description="Which model (GET /v1/models); default: the default one")


@router.post("/generate", summary="Generate (TGI)")
async def generate(body: TGIRequest, request: Request, state: State, x_model: str | None = MODEL_HEADER):
    return await _generate(state, request, body, x_model)


@router.post("/generate_stream", summary="Generate, streamed as server-sent events (TGI)")
async def generate_stream(body: TGIRequest, state: State, x_model: str | None = MODEL_HEADER):
    return await _stream(state, body, x_model)


@router.post("/", summary="TGI compatibility route: /generate_stream if stream, else [/generate]")
async def compat(body: TGIRequest, request: Request, state: State, x_model: str | None = MODEL_HEADER):
    return await _compat(state, request, body, x_model)


# one model by path, as a router in front of several TGI servers offers them: Client("http://host/models/NAME")
@router.post("/models/{name}", summary="TGI compatibility route of one model")
async def model_compat(name: str, body: TGIRequest, request: Request, state: State):
    return await _compat(state, request, body, name)


@router.post("/models/{name}/generate", summary="Generate (TGI) with one model")
async def model_generate(name: str, body: TGIRequest, request: Request, state: State):
    return await _generate(state, request, body, name)


@router.post("/models/{name}/generate_stream", summary="Generate, streamed (TGI), with one model")
async def model_generate_stream(name: str, body: TGIRequest, state: State):
    return await _stream(state, body, name)


@router.get("/models/{name}/info", summary="One model and its limits (TGI)")
async def model_info(name: str, state: State):
    return _info(state, await _door(state, name))


@router.get("/info", summary="Model and limits (TGI)")
async def info(state: State, x_model: str | None = MODEL_HEADER):
    return _info(state, await _door(state, x_model))


def _info(state: ServerState, parley) -> dict:
    s = state.settings
    ctx, limits = parley.context_size, parley.limits
    limit = limits.prompt_tokens
    return {
        "model_id": parley.name,
        "model_sha": None,
        "model_dtype": "gguf",
        "model_device_type": "cuda" if parley.info.device.startswith("gpu") else "cpu",
        "model_pipeline_tag": "text-generation",
        "max_concurrent_requests": s.max_concurrent,
        "max_best_of": MAX_SAMPLES,
        "max_stop_sequences": MAX_STOP_STRINGS,
        "max_input_tokens": limit,
        "max_input_length": limit,
        "max_total_tokens": ctx,
        "max_new_tokens": limits.max_tokens,
        "max_batch_total_tokens": parley.info.kv_size,
        "max_batch_size": parley.info.max_running,
        "max_client_batch_size": 1,
        "validation_workers": 1,
        "router": "parley",
        "version": __version__,
        "sha": None,
        "docker_label": None,
        "chat_template": parley.info.chat_format,
    }


@router.get("/health", summary="Liveness (no API key needed)")
async def health(state: State):
    return {"status": "ok", "model": state.parley.name}
