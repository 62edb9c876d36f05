"""OpenAI-compatible routes: POST /v1/chat/completions, POST /v1/completions (/v1/models: models_api.py).

Streams are SSE ending with `data: [DONE]`; `stream_options.include_usage` adds a last chunk with usage.
Chat requests get the chat format's end-of-turn strings as extra stop strings. `model` picks one of the models
the server offers by name (left out, "default" or "parley": the default one), loaded on demand; an unknown name
is a 404 listing them; every response names the model that answered. llama-server's own fields are taken as
llama_compat.py says. Prompts are built (template, tokenizer) in a worker thread, never on the event loop.

Structured output: `response_format` (json_object, json_schema) or llama-server's `grammar` / `json_schema`
(one per request; not beside tools) constrain every choice, which then ends "stop" once its JSON is complete
(structured.py). Log-probabilities: chat's `logprobs: true` + `top_logprobs` (0-20) in choices[i].logprobs.content
(and on each streamed delta), completions' `logprobs: k` in the legacy shape; llama-server's `n_probs` is either.
"""

from __future__ import annotations

import time
from contextlib import nullcontext

from fastapi import APIRouter, Request
from starlette.responses import Response

from parley.api import Prompt, Result, ToolPlan
from parley.errors import InvalidRequest
from parley.sampling import SamplingParams
from parley.server import llama_compat, structured
from parley.server import params as P
from parley.server.bounds import BoundedRoute, off_loop
from parley.server.errors import NotSupported
from parley.server.prompts import TRUNCATE_HINT, chat_messages, tool_plan
from parley.server.responses import (
    FINGERPRINT,
    chat_completion,
    chat_events,
    finished_all,
    new_id,
    openai_events,
    parley_ext,
    usage,
)
from parley.server.schemas import ChatCompletionRequest, CompletionRequest, OpenAICommon
from parley.server.state import ServerState, State
from parley.server.streaming import Generation, SSEResponse
from parley.server.structured import Asked

router = APIRouter(tags=["OpenAI"], route_class=BoundedRoute)


def _unsupported(name: str, why: str) -> NotSupported:
    return NotSupported(f"{name} is not supported by parley: {why}", param=name)


def check_common(body: OpenAICommon) -> None:
    if body.logit_bias:
        raise _unsupported("logit_bias", "send an empty object or leave it out")
    if body.stream_options is not None and not body.stream:
        raise InvalidRequest("stream_options is only allowed with \"stream\": true", param="stream_options")


def check_chat(body: ChatCompletionRequest) -> None:
    check_common(body)
    if body.functions:
        raise _unsupported("functions", "the deprecated functions API: send the same functions as tools")
    if body.function_call is not None and body.function_call not in ("none", "auto"):
        raise _unsupported("function_call", "the deprecated functions API: send tool_choice")
    if body.modalities is not None and list(body.modalities) != ["text"]:
        raise _unsupported("modalities", "only [\"text\"]")
    for name in ("audio", "prediction", "web_search_options", "reasoning_effort", "verbosity"):
        if getattr(body, name) is not None:
            raise _unsupported(name, "this model has no such option")


def constraint(body) -> Asked | None:
    """The request's grammar: response_format's, or llama-server's grammar / json_schema; None: plain text."""
    asked = structured.response_format(body.response_format)
    llama = llama_compat.grammar(body)
    if asked is not None and llama is not None:
        raise InvalidRequest(f"send response_format or {llama.param}, not both: a reply matches one constraint",
                             param=llama.param)
    return asked or llama


def with_n_probs(name: str, k: int | None, body) -> int | None:
    """k alternatives asked for by `name`, or by llama-server's n_probs; both, they must agree."""
    n = llama_compat.n_probs(body)
    if n is not None and k not in (None, 0, n):
        raise InvalidRequest(f"{name} and n_probs are the same setting and differ ({k} vs {n}): send one",
                             param="n_probs")
    return k if n is None else n


def chat_logprobs(body: ChatCompletionRequest) -> int | None:
    """How many alternatives per token (0: only the chosen token's logprob; None: no logprobs)."""
    structured.check_top(body.top_logprobs, "top_logprobs")
    if body.top_logprobs and not body.logprobs:
        raise InvalidRequest("top_logprobs needs \"logprobs\": true", param="top_logprobs")
    return with_n_probs("top_logprobs", (body.top_logprobs or 0) if body.logprobs else None, body)


def completion_logprobs(body: CompletionRequest) -> int | None:
    structured.check_top(body.logprobs, "logprobs")
    return with_n_probs("logprobs", body.logprobs, body)


def structure(params: SamplingParams, con: Asked | None, k: int | None) -> SamplingParams:
    """params with the request's grammar and logprobs."""
    return params.replace(grammar=con and con.grammar, logprobs=k) if con or k is not None else params


def sampling(state: ServerState, door, body, *, max_tokens: int | None, max_tokens_name: str,
             chat: bool, skill=None) -> SamplingParams:
    """The request's sampling: the server's defaults, the model's own over them (its registry settings), a
    skill's over those, the request's fields last; within the door's limits."""
    llama_compat.check(body)
    limits = door.limits
    max_tokens_name, max_tokens = P.pick(max_tokens_name, max_tokens, "n_predict",
                                         llama_compat.n_predict(body, limits.max_tokens))
    changes, names = P.openai_changes(body, max_tokens_name=max_tokens_name, max_tokens=max_tokens)
    llama_compat.apply(body, changes, names, context_size=limits.context_size)
    stops = door.chat_stops if chat else ()
    base = door.sampling_over(state.settings.sampling)
    base = base if skill is None else skill.sampling_params(base)
    return P.build(base, changes, names, limits=limits, template_stops=stops)


def chat_skill(state: ServerState, body: ChatCompletionRequest):
    """The request's skill (parley's extension), or None; an unknown one is a 400 listing those there are
    (in a worker thread: skills are files)."""
    if body.skill is None:
        if body.skill_params:
            raise InvalidRequest("skill_params needs a skill", param="skill_params")
        return None
    return state.parley.skills.get(body.skill)


def chat_prompt(door, body: ChatCompletionRequest, params: SamplingParams, skill=None,
                plan: ToolPlan | None = None) -> Prompt:
    """The chat prompt's token ids (in a worker thread: rendering thousands of messages takes a while). A skill
    wraps the last message only, so the history before it renders as it did on the previous request."""
    messages = chat_messages(body.messages)
    if skill is not None:
        if messages[-1]["role"] != "user":
            raise InvalidRequest(f"a skill wraps the last message, which must be the user's (it is "
                                 f"{messages[-1]['role']!r})", param="skill")
        messages[-1] = {**messages[-1], "content": skill.wrap(messages[-1]["content"], body.skill_params)}
    prompt = door.chat_prompt(messages, max_tokens=params.max_tokens, truncate=bool(body.truncate),
                              hint="" if body.truncate else TRUNCATE_HINT, tools=plan)
    return prompt.add_note(llama_compat.note(body))


async def generation(state: ServerState, door, prompt: Prompt, params: SamplingParams, body, param: str,
                     n: int = 1, con: Asked | None = None) -> Generation:
    """The request's generation: one Stream, or `n` choices of the prompt side by side (one concurrency slot).
    The grammar compiles at submit: its errors name the field `con` came from."""
    def begin(loop):
        with structured.grammar_errors(con.param) if con is not None else nullcontext():
            if n == 1:
                return door.generate(prompt, params, loop=loop, param=param)
            return door.samples(prompt, params, n, loop=loop, param=param)
    return await Generation.start(state, begin, time_limit_s=llama_compat.time_limit_s(body))


async def model_door(state: ServerState, model: str | None):
    """The door to the model a request names (loaded first, in a worker thread; a 404 lists the models)."""
    return await off_loop(state.parley.using, model)


@router.post("/v1/chat/completions", summary="Chat completion (OpenAI; llama-server's own fields accepted)")
async def chat_completions(body: ChatCompletionRequest, request: Request, state: State):
    check_chat(body)
    name, max_tokens = P.pick("max_tokens", body.max_tokens, "max_completion_tokens", body.max_completion_tokens)
    door = await model_door(state, body.model)
    skill = await off_loop(chat_skill, state, body)
    params = sampling(state, door, body, max_tokens=max_tokens, max_tokens_name=name, chat=True, skill=skill)
    plan = tool_plan(body)
    con, k = constraint(body), chat_logprobs(body)
    if con is not None and plan is not None:
        field = con.param.split(".")[0]
        raise NotSupported(f"{field} beside tools is not supported by parley: a reply either matches the format "
                           "or may call a tool; send one of them", param=field)
    params = structure(params, con, k)
    if plan is not None and plan.forced:     # the call's JSON: the function's name, then its parameters' schema
        params = params.replace(grammar=plan.grammar())
    prompt = await off_loop(chat_prompt, door, body, params, skill, plan)
    gen = await generation(state, door, prompt, params, body, "messages", n=body.n or 1, con=con)
    model = door.name
    shape = None if k is None else (lambda lps: structured.chat_logprobs(door, lps))
    if body.stream:
        include = bool(body.stream_options and body.stream_options.include_usage)
        return SSEResponse(chat_events(gen, model=model, prompt=prompt, include_usage=include, plan=plan,
                                       logprobs=shape), gen.close)
    results = await finished_all(gen, request)
    if isinstance(results, Response):
        return results
    choice_logprobs = None if k is None else (lambda r: structured.chat_logprobs(door, structured.shown(door, r)))
    return chat_completion(new_id("chatcmpl"), model, gen, results, prompt, plan=plan, logprobs=choice_logprobs)


def completion_prompt(door, prompt) -> tuple[list[int], str]:
    """(tokens, text) of a completions `prompt`: a string, a list of one string, or token ids."""
    if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        if len(prompt) > 1:
            raise NotSupported(f"prompt holds {len(prompt)} strings; parley completes one prompt per request",
                               param="prompt")
        prompt = prompt[0]
    if isinstance(prompt, str):
        if not prompt:
            raise InvalidRequest("prompt is empty", param="prompt")
        return door.tokenize(prompt), prompt
    if not prompt:
        raise InvalidRequest("prompt is empty", param="prompt")
    door.check_tokens(prompt, "prompt")
    return list(prompt), door.detokenize(prompt)


def check_completion(body: CompletionRequest) -> None:
    check_common(body)
    if body.suffix:
        raise _unsupported("suffix", "fill-in-the-middle is not available")


def text_prompt(door, body: CompletionRequest) -> tuple[Prompt, str]:
    """(the prompt that fits, the prompt's text) in a worker thread: tokenizing 2 MB of text takes a while."""
    tokens, text = completion_prompt(door, body.prompt)
    door.limits.check_prompt(len(tokens), param="prompt")   # a 400 before a concurrency slot is taken
    return Prompt(tokens).add_note(llama_compat.note(body)), text


def completion_body(model: str, gen: Generation, results: list, prompt: Prompt, echo: str,
                    logprobs=None) -> dict:
    """A text_completion; `logprobs(result)`: a choice's legacy logprobs, when asked for."""
    return {
        "id": new_id("cmpl"),
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": FINGERPRINT,
        "choices": [{"index": i, "text": echo + r.text, "logprobs": None if logprobs is None else logprobs(r),
                     "finish_reason": gen.finish_reason(r)}
                    for i, r in enumerate(results)],
        "usage": usage(results),
        "parley": parley_ext(results[0], prompt, gen.note),
    }


@router.post("/v1/completions", summary="Text completion (OpenAI legacy; llama-server's own fields accepted)")
async def completions(body: CompletionRequest, request: Request, state: State):
    check_completion(body)
    door = await model_door(state, body.model)
    params = sampling(state, door, body, max_tokens=body.max_tokens, max_tokens_name="max_tokens", chat=False)
    con, k = constraint(body), completion_logprobs(body)
    params = structure(params, con, k)
    prompt, text = await off_loop(text_prompt, door, body)
    n = body.n or 1
    if body.best_of not in (None, 1, n):
        raise NotSupported(f"best_of must equal n ({n}) here: parley returns every choice it generates "
                           f"(got best_of={body.best_of})", param="best_of")
    gen = await generation(state, door, prompt, params, body, "prompt", n=n, con=con)
    model = door.name
    echo = text if body.echo else ""
    if body.stream:
        include = bool(body.stream_options and body.stream_options.include_usage)
        shape = None if k is None else (lambda _i: structured.LegacyLogprobs(door, len(echo)).take)
        return SSEResponse(_completion_events(gen, model, prompt, include, echo, shape), gen.close)
    results = await finished_all(gen, request)
    if isinstance(results, Response):
        return results
    return completion_body(model, gen, results, prompt, echo,
                           None if k is None else (lambda r: legacy_logprobs(door, r, echo)))


def legacy_logprobs(door, r: Result, echo: str) -> dict:
    """A choice's legacy logprobs: its text's tokens (the echoed prompt's are not scored: offsets start after it)."""
    return structured.LegacyLogprobs(door, len(echo)).take(structured.shown(door, r))


def _completion_events(gen: Generation, model: str, prompt: Prompt, include_usage: bool, echo: str, shape=None):
    return openai_events(gen, obj="text_completion", cid=new_id("cmpl"), opening={"text": echo} if echo else None,
                         piece=lambda text: {"text": text}, closing={"text": ""}, model=model, prompt=prompt,
                         include_usage=include_usage, logprobs=shape)
