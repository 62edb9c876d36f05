"""Request bodies (pydantic). Strict: wrong JSON types are refused, not coerced ("5" is not 5), and unknown fields
are refused by name. Every documented field of the OpenAI and TGI requests is accepted; fields parley does not
implement are refused with a 400 when they ask for something (n=2, logprobs, tools, ...), never ignored in a
way that changes the answer. Ranges are checked once, by parley.sampling (the errors name the field and range).

parley extensions: `truncate` (chat completions, conversation messages): when the prompt does not fit the
context, drop the oldest messages (the system prompt stays) and say how many in the response's `parley` object.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field


def _valid_text(value: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(
            f"holds an unpaired UTF-16 surrogate (U+{ord(value[e.start]):04X} at character {e.start}); "
            "send valid Unicode text") from None
    return value


Text = Annotated[str, AfterValidator(_valid_text)]
Stop = Text | list[Text]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


# ---- sampling fields shared by the OpenAI-style requests ------------------------------------------------
class SamplingFields(Strict):
    temperature: float | None = Field(None, description="0 = greedy. Default: parley's (0.7).")
    top_p: float | None = None
    top_k: int | None = Field(None, description="parley/vLLM extension; 0 = off.")
    min_p: float | None = Field(None, description="parley/vLLM extension; 0 = off.")
    repetition_penalty: float | None = Field(None, description="vLLM/TGI name; 1 = off.")
    repeat_penalty: float | None = Field(None, description="llama.cpp name for repetition_penalty.")
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    seed: int | None = Field(None, description="Same seed and parameters: the same text.")
    stop: Stop | None = Field(None, description="A string or a list of strings; never part of the output.")
    max_tokens: int | None = None


class StreamOptions(Strict):
    include_usage: bool | None = None
    include_obfuscation: bool | None = None


# ---- OpenAI: chat completions ---------------------------------------------------------------------------
class TextPart(Strict):
    type: Literal["text"]
    text: Text


class ChatMessage(Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: Text | list[TextPart]
    name: Text | None = None


class OpenAICommon(SamplingFields):
    model: Text | None = Field(None, description="Ignored: this server runs one model (see /v1/models).")
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int | None = Field(None, description="Only 1 is supported.")
    user: Text | None = None
    logit_bias: dict[str, Any] | None = Field(None, description="Not supported (only empty).")
    metadata: dict[str, Any] | None = None
    store: bool | None = None
    service_tier: Text | None = None


class ChatCompletionRequest(OpenAICommon):
    messages: list[ChatMessage]
    max_completion_tokens: int | None = None
    logprobs: bool | None = Field(None, description="Not supported (only false).")
    top_logprobs: int | None = Field(None, description="Not supported (only 0).")
    response_format: dict[str, Any] | None = Field(None, description="Only {\"type\": \"text\"}.")
    tools: list[dict[str, Any]] | None = Field(None, description="Not supported (only empty).")
    tool_choice: Text | dict[str, Any] | None = Field(None, description="Only \"none\" or \"auto\" without tools.")
    parallel_tool_calls: bool | None = None
    functions: list[dict[str, Any]] | None = Field(None, description="Not supported (only empty).")
    function_call: Text | dict[str, Any] | None = None
    modalities: list[Text] | None = Field(None, description="Only [\"text\"].")
    audio: dict[str, Any] | None = Field(None, description="Not supported.")
    prediction: dict[str, Any] | None = Field(None, description="Not supported.")
    reasoning_effort: Text | None = None
    verbosity: Text | None = None
    web_search_options: dict[str, Any] | None = Field(None, description="Not supported.")
    prompt_cache_key: Text | None = Field(None, description="Ignored: the prefix cache is automatic.")
    safety_identifier: Text | None = None
    truncate: bool = Field(False, description="parley: drop the oldest messages when the prompt does not fit.")


# ---- OpenAI: completions --------------------------------------------------------------------------------
class CompletionRequest(OpenAICommon):
    prompt: Text | list[Text] | list[int] = Field(
        description="A string (one), or token ids. A list of several strings is not supported.")
    echo: bool | None = None
    suffix: Text | None = Field(None, description="Not supported.")
    best_of: int | None = Field(None, description="Only 1.")
    logprobs: int | None = Field(None, description="Not supported (only 0).")


# ---- TGI ------------------------------------------------------------------------------------------------
class TGIParameters(Strict):
    do_sample: bool = False
    max_new_tokens: int | None = None
    repetition_penalty: float | None = None
    frequency_penalty: float | None = None
    return_full_text: bool | None = False
    stop: list[Text] | None = None
    seed: int | None = None
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    truncate: int | None = Field(None, description="Keep only the last N prompt tokens (asked for, so not silent).")
    typical_p: float | None = Field(None, description="Not supported (only 1 or null).")
    best_of: int | None = Field(None, description="Only 1.")
    watermark: bool = Field(False, description="Not supported.")
    details: bool = False
    decoder_input_details: bool = False
    top_n_tokens: int | None = Field(None, description="Not supported.")
    grammar: dict[str, Any] | None = Field(None, description="Not supported.")
    adapter_id: Text | None = Field(None, description="Not supported.")


class TGIRequest(Strict):
    inputs: Text
    parameters: TGIParameters | None = None
    stream: bool = False


# ---- conversations --------------------------------------------------------------------------------------
class ConversationCreate(SamplingFields):
    system: Text | None = Field(None, description="The system prompt, kept first and never dropped.")
    persona: Text | None = Field(None, description="A persona by name (none exist yet).")
    skill: Text | None = Field(None, description="A skill by name (none exist yet).")
    overflow: Literal["error", "truncate"] = Field(
        "truncate", description="When the history outgrows the context: drop the oldest turns and say so "
                                "(truncate), or answer 400 (error).")
    title: Text | None = None
    metadata: dict[str, Text] | None = None


class ConversationMessage(SamplingFields):
    content: Text
    stream: bool = False
    stream_options: StreamOptions | None = None
    truncate: bool | None = Field(None, description="Override the conversation's overflow policy for this turn.")


class ConversationRetry(SamplingFields):
    stream: bool = False
    stream_options: StreamOptions | None = None
    truncate: bool | None = None
