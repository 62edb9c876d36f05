"""Request bodies (pydantic). Strict: wrong JSON types are refused, not coerced ("5" is not 5), and unknown fields
are refused by name. Every documented field of the OpenAI, TGI and Ollama requests is accepted; fields parley does not
implement are refused with a 400 when they ask for something (logit_bias, suffix, images, ...), never ignored
in a way that changes the answer. Ranges are checked once, by parley.sampling (the errors name the field and range).

parley extensions: `truncate` (chat completions, conversation messages): when the prompt does not fit the
context, drop the oldest messages (the system prompt stays) and say how many in the response's `parley` object.

Sampling defaults: a field not sent takes the server's default, which is the protocol's (temperature 1, top_p 1,
no top-k, no min-p, no penalty) unless `parley serve --temperature ... --repeat-penalty ...` set others.

llama-server's own fields (`LlamaServerFields`, on /v1/chat/completions and /v1/completions) are accepted
where parley does what they mean (n_predict, ignore_eos, repeat_last_n, samplers, t_max_predict_ms, ...) or
they change nothing (cache_prompt: always on; id_slot; n_keep), and refused by name with the reason where
parley cannot (mirostat, DRY, XTC, ...); see server/llama_compat.py.

Structured output (response_format, llama-server's grammar / json_schema, TGI's parameters.grammar, Ollama's
format) and log-probabilities (logprobs, top_logprobs, n_probs, details / top_n_tokens) are read by
server/structured.py.
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
    temperature: float | None = Field(None, description="0 = greedy. Default 1 (OpenAI's), or the server's "
                                                        "`parley serve --temperature`.")
    top_p: float | None = Field(None, description="Default 1 = off, or the server's `--top-p`.")
    top_k: int | None = Field(None, description="parley/vLLM/llama.cpp extension. Default 0 = off, or the "
                                                "server's `--top-k`.")
    min_p: float | None = Field(None, description="parley/vLLM/llama.cpp extension. Default 0 = off, or the "
                                                  "server's `--min-p`.")
    repetition_penalty: float | None = Field(None, description="vLLM/TGI name. Default 1 = off, or the server's "
                                                               "`--repeat-penalty`.")
    repeat_penalty: float | None = Field(None, description="llama.cpp name for repetition_penalty.")
    presence_penalty: float | None = Field(None, description="Default 0 = off, or the server's "
                                                             "`--presence-penalty`.")
    frequency_penalty: float | None = Field(None, description="Default 0 = off, or the server's "
                                                              "`--frequency-penalty`.")
    seed: int | None = Field(None, description="Same seed and parameters: the same text. -1 = random "
                                               "(llama-server's convention), as when it is left out.")
    stop: Stop | None = Field(None, description="A string or a list of strings; never part of the output.")
    max_tokens: int | None = None


class StreamOptions(Strict):
    include_usage: bool | None = None
    include_obfuscation: bool | None = None


# ---- llama-server's own fields (/v1/chat/completions and /v1/completions) --------------------------------
OFF = "Accepted while it is off (its default); parley has no such sampler."


class LlamaServerFields(Strict):
    n_predict: int | None = Field(None, description="llama-server: max_tokens (-1 = as many as the server allows).")
    cache_prompt: bool | None = Field(None, description="llama-server: always on in parley (the prefix cache is "
                                                        "automatic and cannot be turned off; false changes "
                                                        "nothing, and the response says so).")
    id_slot: int | None = Field(None, description="llama-server: accepted and ignored: parley has no slots; its "
                                                  "prefix cache finds a conversation's KV by its tokens.")
    n_keep: int | None = Field(None, description="llama-server: accepted; parley never discards context "
                                                 "mid-reply (no context shift), so every token is kept.")
    n_cache_reuse: int | None = Field(None, description="llama-server: accepted; the prefix cache reuses every "
                                                        "cached prefix without KV shifting.")
    samplers: list[Text] | Text | None = Field(
        None, description="llama-server: which samplers run (names, or letters like \"kpmt\"). A sampler left "
                          "out is off; penalties always run first when asked for; parley's order is top_k, "
                          "top_p, min_p, temperature (another order is refused).")
    t_max_predict_ms: int | None = Field(None, description="llama-server: end the reply once this many ms have "
                                                           "passed since its first token and it holds a newline "
                                                           "(finish_reason \"length\"); 0 = no limit.")
    ignore_eos: bool | None = Field(None, description="llama-server: do not end at the end-of-turn token.")
    repeat_last_n: int | None = Field(None, description="llama-server: tokens the penalties look back over "
                                                        "(default 64; 0 = none; -1 = the whole context).")
    n_probs: int | None = Field(None, description="llama-server: the k most likely tokens (0-20) beside each "
                                                  "generated token's log-probability, in the OpenAI shape (as "
                                                  "logprobs: true, top_logprobs: k on chat; logprobs: k on "
                                                  "completions).")
    typical_p: float | None = Field(None, description="llama-server: only 1 (typical sampling is not implemented).")
    min_keep: int | None = Field(None, description="llama-server: only 0 or 1.")
    top_n_sigma: float | None = Field(None, description="llama-server: only -1 (off).")
    dynatemp_range: float | None = Field(None, description="llama-server: only 0 (dynamic temperature is not "
                                                           "implemented).")
    dynatemp_exponent: float | None = Field(None, description=OFF)
    dry_multiplier: float | None = Field(None, description="llama-server: only 0 (DRY is not implemented).")
    dry_base: float | None = Field(None, description=OFF)
    dry_allowed_length: int | None = Field(None, description=OFF)
    dry_penalty_last_n: int | None = Field(None, description=OFF)
    dry_sequence_breakers: list[Text] | None = Field(None, description=OFF)
    mirostat: int | None = Field(None, description="llama-server: only 0 (Mirostat is not implemented).")
    mirostat_tau: float | None = Field(None, description=OFF)
    mirostat_eta: float | None = Field(None, description=OFF)
    xtc_probability: float | None = Field(None, description="llama-server: only 0 (XTC is not implemented).")
    xtc_threshold: float | None = Field(None, description=OFF)
    n_indent: int | None = Field(None, description="llama-server: only 0.")
    n_cmpl: int | None = Field(None, description="llama-server: only 1 (one completion per request).")
    grammar: Text | None = Field(None, description="llama-server: a GBNF grammar the reply matches (root is "
                                                   "the first rule); \"\": none.")
    json_schema: dict[str, Any] | None = Field(None, description="llama-server: a JSON Schema the reply matches "
                                                                 "(as response_format json_schema).")
    return_tokens: bool | None = Field(None, description="llama-server: only false.")
    timings_per_token: bool | None = Field(None, description="llama-server: only false (each response's `parley` "
                                                             "object has ttft_s and decode_tps).")
    return_progress: bool | None = Field(None, description="llama-server: only false.")
    post_sampling_probs: bool | None = Field(None, description="llama-server: only false.")
    response_fields: list[Text] | None = Field(None, description="llama-server: only empty.")
    lora: list[dict[str, Any]] | None = Field(None, description="llama-server: only empty (no LoRA adapters).")


# ---- OpenAI: chat completions ---------------------------------------------------------------------------
class TextPart(Strict):
    type: Literal["text"]
    text: Text


class ToolCallFunction(Strict):
    name: Text
    arguments: Text = Field(description="The call's arguments: a JSON object, as text (OpenAI's shape).")


class ToolCallItem(Strict):
    id: Text | None = None
    type: Literal["function"] = "function"
    function: ToolCallFunction


class ChatMessage(Strict):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Text | list[TextPart] | None = Field(None, description="Required, except on an assistant message "
                                                                     "that makes tool calls.")
    name: Text | None = None
    tool_calls: list[ToolCallItem] | None = Field(None, description="An assistant message's calls, as a reply gave "
                                                                    "them: written back in the tool convention, so "
                                                                    "the KV of that reply is reused.")
    tool_call_id: Text | None = Field(None, description="A tool message: the call it answers.")
    refusal: Text | None = Field(None, description="Accepted as the OpenAI client sends it back (null).")
    annotations: list[dict[str, Any]] | None = Field(None, description="Accepted as the OpenAI client sends it back.")
    function_call: dict[str, Any] | None = Field(None, description="Only null (the deprecated functions API).")
    audio: dict[str, Any] | None = Field(None, description="Only null.")


class OpenAICommon(SamplingFields):
    model: Text | None = Field(None, description="One of the models this server offers (GET /v1/models), loaded on "
                                                 "demand; left out, \"default\" or \"parley\": the default one.")
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int | None = Field(None, description="Choices of the one prompt, 1 to 16: read once, forked, decoded side by "
                                            "side in one batch; a seed gives choice i the seed + i.")
    user: Text | None = None
    logit_bias: dict[str, Any] | None = Field(None, description="Not supported (only empty).")
    metadata: dict[str, Any] | None = None
    store: bool | None = None
    service_tier: Text | None = None
    response_format: dict[str, Any] | None = Field(
        None, description="{\"type\": \"text\"} (default), {\"type\": \"json_object\"} (any JSON object) or "
                          "{\"type\": \"json_schema\", \"json_schema\": {\"name\", \"schema\", \"strict\"}}: "
                          "the reply matches the schema (always enforced; a feature that cannot be enforced, such as "
                          "not or if/then, is a 400 naming it) and ends when it is complete.")


class ToolFields(Strict):
    tools: list[dict[str, Any]] | None = Field(None, description="Functions the model may call (OpenAI's shape, "
                                                                 "at most 128), described to it in the system "
                                                                 "message in parley's tool convention.")
    tool_choice: Text | dict[str, Any] | None = Field(
        None, description="\"auto\" (default with tools: answer or call), \"none\" (tools not offered), "
                          "\"required\" or {\"type\": \"function\", \"function\": {\"name\": ...}}: one call, "
                          "constrained to the function's parameters schema, so its arguments always parse.")
    parallel_tool_calls: bool | None = Field(None, description="false: at most one call per reply (a forced "
                                                               "reply always makes one).")


class ChatCompletionRequest(LlamaServerFields, ToolFields, OpenAICommon):
    messages: list[ChatMessage]
    max_completion_tokens: int | None = None
    logprobs: bool | None = Field(None, description="true: each generated token's log-probability (of the "
                                                    "model's raw distribution) in choices[i].logprobs.content, "
                                                    "per delta when streaming.")
    top_logprobs: int | None = Field(None, description="0 to 20: the most likely tokens beside each one (needs "
                                                       "logprobs: true).")
    functions: list[dict[str, Any]] | None = Field(None, description="Not supported (the deprecated form): send "
                                                                     "tools.")
    function_call: Text | dict[str, Any] | None = Field(None, description="Not supported: send tool_choice.")
    modalities: list[Text] | None = Field(None, description="Only [\"text\"].")
    audio: dict[str, Any] | None = Field(None, description="Not supported.")
    prediction: dict[str, Any] | None = Field(None, description="Not supported.")
    reasoning_effort: Text | None = None
    verbosity: Text | None = None
    web_search_options: dict[str, Any] | None = Field(None, description="Not supported.")
    prompt_cache_key: Text | None = Field(None, description="Ignored: the prefix cache is automatic.")
    safety_identifier: Text | None = None
    truncate: bool = Field(False, description="parley: drop the oldest messages when the prompt does not fit.")
    skill: Text | None = Field(None, description="parley: wrap the last (user) message in a skill's recipe, its "
                               "sampling settings under the request's own (GET /v1/skills lists them).")
    skill_params: dict[str, Text] | None = Field(None, description="parley: the skill's parameters, e.g. "
                                                 "{\"to\": \"German\"}.")
    chat_template_kwargs: dict[str, Any] | None = Field(None, description="llama-server: only empty.")
    reasoning_format: Text | None = Field(None, description="llama-server: only \"none\" (the text as generated).")


# ---- OpenAI: completions --------------------------------------------------------------------------------
class CompletionRequest(LlamaServerFields, OpenAICommon):
    prompt: Text | list[Text] | list[int] = Field(
        description="A string (one), or token ids. A list of several strings is not supported.")
    echo: bool | None = None
    suffix: Text | None = Field(None, description="Not supported.")
    best_of: int | None = Field(None, description="Equal to n, or left out: every choice generated is returned.")
    logprobs: int | None = Field(None, description="0 to 20 (OpenAI: 5): each generated token's log-probability "
                                                   "and the k most likely tokens beside it (tokens, "
                                                   "token_logprobs, top_logprobs, text_offset).")


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
    best_of: int | None = Field(None, description="2 to 16 with do_sample: that many sequences side by side, "
                                                  "the one with the highest sum of logprobs returned (the others "
                                                  "in details.best_of_sequences); not when streaming.")
    watermark: bool = Field(False, description="Not supported.")
    details: bool = Field(False, description="details.tokens (id, text, logprob, special) and counters.")
    decoder_input_details: bool = False
    top_n_tokens: int | None = Field(None, description="1 to 20: the most likely tokens at each step "
                                                       "(details.top_tokens; top_tokens on each streamed token).")
    grammar: dict[str, Any] | None = Field(None, description="{\"type\": \"json\", \"value\": a JSON Schema "
                                                             "(an object or its JSON text)} or {\"type\": "
                                                             "\"regex\", \"value\": \"...\"}: the reply "
                                                             "matches it.")
    adapter_id: Text | None = Field(None, description="Not supported.")


class TGIRequest(Strict):
    inputs: Text
    parameters: TGIParameters | None = None
    stream: bool = False


# ---- conversations --------------------------------------------------------------------------------------
class ConversationCreate(SamplingFields):
    model: Text | None = Field(None, description="The model it is served with (GET /v1/models; default: the "
                                                 "default one); it keeps it, unless a message names another.")
    system: Text | None = Field(None, description="The system prompt, kept first and never dropped.")
    persona: Text | None = Field(None, description="A persona by name (GET /v1/personas lists them): its "
                                                   "narrative is pinned first and the model speaks as it.")
    user_name: Text | None = Field(None, description="Who the user is in a persona's scene ({{user}}).")
    overflow: Literal["error", "truncate"] = Field(
        "truncate", description="When the history outgrows the context: drop the oldest turns in blocks and say "
                                "so (truncate), or answer 400 (error).")
    max_messages: int | None = Field(None, description="Keep at most this many earlier messages in the prompt "
                                                       "(cut in blocks of half as many; 0: no cap).")
    title: Text | None = Field(None, description="Default: the first user message's first line.")
    metadata: dict[str, Text] | None = None
    document_ids: list[Text] | None = Field(None, description="Documents (POST /v1/documents) pinned in the "
                                                              "conversation's prompt after the system prompt.")


class ConversationPatch(Strict):
    title: Text | None = None
    system: Text | None = None
    overflow: Literal["error", "truncate"] | None = None
    max_messages: int | None = None
    metadata: dict[str, Text] | None = None
    leaf_id: Text | None = Field(None, description="Switch the current branch to the one ending at this message.")
    defaults: SamplingFields | None = Field(None, description="Sampling defaults to change (the others stay).")
    document_ids: list[Text] | None = Field(None, description="The documents pinned in the prompt, replacing "
                                                              "the current ones ([]: none).")


class ConversationMessage(ToolFields, SamplingFields):
    content: Text
    role: Literal["user", "tool"] = Field("user", description="\"tool\": content is the result of the call "
                                                               "tool_call_id names (made by a reply on this "
                                                               "branch); the reply continues from it.")
    tool_call_id: Text | None = Field(None, description="With role \"tool\": the call this is the result of.")
    response_format: dict[str, Any] | None = Field(None, description="As on /v1/chat/completions (json_object, "
                                                                     "json_schema): this turn's reply matches it.")
    ignore_eos: bool | None = Field(None, description="Do not end at the end-of-turn token (max_tokens or a stop "
                                                      "string ends the reply).")
    parent_id: Text | None = Field(None, description="Continue from this message instead of the current leaf "
                                                     "(a new branch).")
    skill: Text | None = Field(None, description="Wrap this message in a skill's recipe (GET /v1/skills).")
    skill_params: dict[str, Text] | None = Field(None, description="The skill's parameters, e.g. {\"to\": "
                                                                   "\"German\"}.")
    speaker: Text | None = Field(None, description="In a persona's group scene: who answers.")
    model: Text | None = Field(None, description="Continue on another model: the history is read again for it "
                                                 "(the reply's note says so), and the conversation keeps it.")
    stream: bool = False
    stream_options: StreamOptions | None = None
    truncate: bool | None = Field(None, description="Override the conversation's overflow policy for this turn.")


class ConversationRetry(ToolFields, SamplingFields):
    response_format: dict[str, Any] | None = Field(None, description="As on /v1/chat/completions (json_object, "
                                                                     "json_schema): this turn's reply matches it.")
    message_id: Text | None = Field(None, description="The user message to answer again (or a reply: answer "
                                                      "its user message again). Default: the current leaf's.")
    model: Text | None = Field(None, description="Answer with another model (the conversation keeps it).")
    stream: bool = False
    stream_options: StreamOptions | None = None
    truncate: bool | None = None


class ConversationEdit(SamplingFields):
    response_format: dict[str, Any] | None = Field(None, description="As on /v1/chat/completions (json_object, "
                                                                     "json_schema): this turn's reply matches it.")
    message_id: Text = Field(description="The user message to say differently (a sibling under its parent).")
    content: Text
    model: Text | None = Field(None, description="Answer with another model (the conversation keeps it).")
    stream: bool = False
    stream_options: StreamOptions | None = None
    truncate: bool | None = None


class ConversationFork(Strict):
    at: Text = Field(description="The message the new conversation ends at.")


# ---- Ollama (/api/..., server/ollama_api.py) ------------------------------------------------------------
KEPT = "Accepted; changes nothing here (a setting of Ollama's model runner: parley's engine has its own flags)."


class OllamaOptions(Strict):
    """Ollama's `options` (its Modelfile parameters). A name Ollama does not know is refused by name: Ollama
    logs and ignores it, so a misspelt option would silently change nothing."""

    num_predict: int | None = Field(None, description="Most tokens to generate (-1 or -2, Ollama's \"no limit\" "
                                                      "and \"fill the context\": as many as the server allows).")
    temperature: float | None = Field(None, description="0 = greedy. Default 0.8 (Ollama's), or the server's "
                                                        "`parley serve --temperature`.")
    top_k: int | None = Field(None, description="Default 40 (Ollama's), or the server's `--top-k`.")
    top_p: float | None = Field(None, description="Default 0.9 (Ollama's), or the server's `--top-p`.")
    min_p: float | None = None
    repeat_penalty: float | None = None
    repeat_last_n: int | None = Field(None, description="Tokens the penalties look back over (default 64; 0 = "
                                                        "none; -1 = the whole context).")
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    seed: int | None = Field(None, description="Same seed and options: the same text; -1 = random.")
    stop: list[Text] | None = Field(None, description="Stop strings; never part of the output.")
    num_ctx: int | None = Field(None, description="At most the model's context (a 400 names it past that); the "
                                                  "model keeps the context it was loaded with.")
    num_keep: int | None = Field(None, description="Accepted; parley never shifts the context, so every token "
                                                   "is kept.")
    num_batch: int | None = Field(None, description=KEPT)
    num_gpu: int | None = Field(None, description=KEPT)
    main_gpu: int | None = Field(None, description=KEPT)
    num_thread: int | None = Field(None, description=KEPT)
    use_mmap: bool | None = Field(None, description=KEPT)
    use_mlock: bool | None = Field(None, description=KEPT)
    numa: bool | None = Field(None, description=KEPT)
    low_vram: bool | None = Field(None, description=KEPT)
    f16_kv: bool | None = Field(None, description=KEPT)
    vocab_only: bool | None = Field(None, description=KEPT)
    embedding_only: bool | None = Field(None, description=KEPT)
    draft_num_predict: int | None = Field(None, description=KEPT)
    penalize_newline: bool | None = Field(None, description="Accepted; changes nothing (Ollama ignores it too).")
    typical_p: float | None = Field(None, description="Only 1 (typical sampling is not implemented).")
    tfs_z: float | None = Field(None, description="Only 1 (tail-free sampling is not implemented).")
    mirostat: int | None = Field(None, description="Only 0 (Mirostat is not implemented).")
    mirostat_tau: float | None = Field(None, description=OFF)
    mirostat_eta: float | None = Field(None, description=OFF)
    logits_all: bool | None = Field(None, description="Only false.")


class OllamaMessage(Strict):
    role: Literal["system", "user", "assistant", "tool"]
    content: Text = ""
    thinking: Text | None = Field(None, description="Accepted; not rendered (the chat template gets role and "
                                                    "content).")
    images: list[Text] | None = Field(None, description="Not supported (only empty): the models read text.")
    tool_calls: list[dict[str, Any]] | None = Field(None, description="Not supported yet (only empty).")
    tool_name: Text | None = Field(None, description="Not supported yet.")
    tool_call_id: Text | None = Field(None, description="Not supported yet.")


KEEP_ALIVE = ("How long the model stays loaded after this request: a duration (\"5m\", \"1h30m\", \"90s\"), a number "
              "of seconds, 0 (unload it once this request ends) or -1 (keep it loaded). Left out: the server's "
              "--model-idle.")


class OllamaGenerating(Strict):
    model: Text = Field(description="A model this server offers (GET /api/tags; \"NAME\" or \"NAME:latest\"), "
                                    "loaded on demand.")
    stream: bool = Field(True, description="NDJSON lines as the reply comes (default), or false for one object.")
    options: OllamaOptions | None = None
    keep_alive: float | Text | None = Field(None, description=KEEP_ALIVE)
    format: Text | dict[str, Any] | None = Field(None, description="\"json\" (any JSON object) or a JSON Schema "
                                                                   "object: the reply matches it.")
    think: bool | Text | None = Field(None, description="Only false (no thinking mode is parsed out).")
    logprobs: bool | None = Field(None, description="true: each generated token's log-probability in "
                                                    "`logprobs` (each streamed line: its own tokens').")
    top_logprobs: int | None = Field(None, description="0 to 20: the most likely tokens beside each one.")
    truncate: bool | None = Field(None, description="Drop the oldest messages when the prompt does not fit, and "
                                                    "say so in `parley` (default false: a 400 naming the limit; "
                                                    "Ollama's default true truncates silently).")
    shift: bool | None = Field(None, description="Only false: parley never shifts the context (a reply that "
                                                 "reaches its end stops with done_reason \"length\").")


class OllamaChatRequest(OllamaGenerating):
    messages: list[OllamaMessage] = Field(default_factory=list, description="None: only load (or, with "
                                                                             "keep_alive 0, unload) the model.")
    tools: list[dict[str, Any]] | None = Field(None, description="Functions the model may call (OpenAI's shape; "
                                                                   "Ollama has no tool_choice: always auto).")


class OllamaGenerateRequest(OllamaGenerating):
    prompt: Text = Field("", description="Empty: only load (or, with keep_alive 0, unload) the model.")
    system: Text = Field("", description="The system prompt (default: the model's own, if its entry has one).")
    template_: Text = Field("", alias="template", description="Only empty: the model's own chat template.")
    raw: bool = Field(False, description="The prompt as it is, no chat template.")
    suffix: Text = Field("", description="Only empty (fill-in-the-middle is not available).")
    context: list[int] | None = Field(None, description="The `context` of an earlier reply: its tokens come "
                                                        "first, so its KV is read from the cache.")
    images: list[Text] | None = Field(None, description="Not supported (only empty): the models read text.")


class OllamaModelRef(Strict):
    model: Text | None = None
    name: Text | None = Field(None, description="Ollama's older name for `model`.")


class OllamaShowRequest(OllamaModelRef):
    verbose: bool = Field(False, description="Read the header's arrays whole (the vocabulary, ...) into "
                                             "model_info, instead of [].")


class OllamaPullRequest(OllamaModelRef):
    stream: bool = True
    insecure: bool | None = Field(None, description="Accepted and ignored, as Ollama does.")


class OllamaEmbedRequest(Strict):
    model: Text = Field(description="A model this server offers (GET /api/tags), loaded on demand; an embedding "
                                    "GGUF in the registry the same way.")
    input: Text | list[Text] = Field("", description="A text or a list of texts; none (\"\" or []): only load "
                                                     "(or, with keep_alive 0, unload) the model.")
    truncate: bool | None = Field(None, description="Cut a text over the model's embedding context to its first "
                                                    "tokens, and say how many went in `parley.truncated_tokens` "
                                                    "(default false: a 400 naming the limit; Ollama's default "
                                                    "true cuts silently).")
    dimensions: int | None = Field(None, description="Only the model's own vector size (Ollama shortens the "
                                                     "vectors; a model not trained for it loses meaning).")
    keep_alive: float | Text | None = Field(None, description=KEEP_ALIVE)
    options: OllamaOptions | None = Field(None, description="Checked as on /api/chat; none changes the vectors "
                                                            "(num_ctx past the model's context is a 400).")


class OllamaEmbeddingsRequest(Strict):
    """Ollama's older /api/embeddings: one text, one vector."""

    model: Text = Field(description="As on /api/embed.")
    prompt: Text = Field("", description="The text; empty: only load (or, with keep_alive 0, unload) the model.")
    keep_alive: float | Text | None = Field(None, description=KEEP_ALIVE)
    options: OllamaOptions | None = Field(None, description="As on /api/embed.")
