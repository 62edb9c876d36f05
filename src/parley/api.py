"""The Python API: load a model, chat, complete. The CLI and the server are built on these same objects.

    p = parley.load()                          # or load("model.gguf", chat_format="chatml", deterministic=True)
    chat = p.chat(system="You are terse.", temperature=0)
    for chunk in chat.send("Hello"):           # text chunks as they are generated
        print(chunk, end="")
    chat.last.result.stats                     # prompt/cached tokens, time to first token, tokens/s
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from parley.chat.conversation import Conversation, Turn
from parley.chat.prompt import PromptBuilder
from parley.engine.llamacpp import EngineConfig, LlamaCppEngine
from parley.errors import InvalidRequest
from parley.paths import data_dir
from parley.sampling import CHAT_PRESET, SamplingParams
from parley.scheduler.request import Result
from parley.scheduler.scheduler import MiB, Scheduler, SchedulerConfig, Stream
from parley.text.template import resolve_template


@dataclass
class Reply:
    text: str
    result: Result
    dropped: int = 0        # messages dropped to fit the context (truncate policy)
    note: str = ""          # why the cache did not cover the prompt, if it did not


class Parley:
    """One loaded model with its scheduler thread. Thread-safe: many chats may run at once."""

    def __init__(
        self,
        model: str | os.PathLike | None = None,
        *,
        chat_format: str | None = None,
        kv_size: int = 16384,
        context_size: int = 0,
        threads: int = 0,
        deterministic: bool = False,
        max_running: int = 8,
        batch_tokens: int = 512,
        prefill_chunk: int = 128,
        ram_cache_mb: int = 1024,
        idle_kv_cells: int = 2048,
        disk_cache_mb: int = 8192,
        cache_dir: str | os.PathLike | None | bool = None,
        n_seq_max: int = 64,
        gpu_layers: int | None = None,
    ):
        checks = (("threads", "--threads", threads, 0, ""), ("context_size", "--ctx-size", context_size, 0, ""),
                  ("ram_cache_mb", "--ram-cache-mb", ram_cache_mb, 0, ""),
                  ("disk_cache_mb", "--disk-cache-mb", disk_cache_mb, 0, ""),
                  ("batch_tokens", "--batch-tokens", batch_tokens, max_running,
                   " (--max-running: one token per running reply each step)"),
                  ("prefill_chunk", "--prefill-chunk", prefill_chunk, 1, ""))
        for name, flag, value, least, why in checks:
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise InvalidRequest(f"{name} ({flag}) must be an integer >= {least}{why}, got {value!r}", param=name)
        if gpu_layers is not None and (not isinstance(gpu_layers, int) or isinstance(gpu_layers, bool) or gpu_layers < 0):
            raise InvalidRequest(f"gpu_layers (--gpu-layers) must be an integer >= 0 (or None: every layer when "
                                 f"llama.cpp has a GPU backend), got {gpu_layers!r}", param="gpu_layers")
        self.engine = LlamaCppEngine(EngineConfig(
            model_path=model, n_ctx=kv_size, n_threads=threads, deterministic=deterministic, n_seq_max=n_seq_max,
            gpu_layers=gpu_layers,
            n_batch=max(batch_tokens, n_seq_max)))  # llama.cpp needs n_batch >= n_seq_max; the scheduler keeps to
                                                     # batch_tokens
        try:
            self.template = resolve_template(self.engine.chat_template, chat_format,
                                             bos_token=self.engine.bos_text, eos_token=self.engine.eos_text)
            self.builder = PromptBuilder(self.template, self.engine.tokenize, bos_text=self.engine.bos_text,
                                         add_bos=self.engine.add_bos)
            if cache_dir is None or cache_dir is True:
                cache_path: Path | None = data_dir()
            elif cache_dir is False:
                cache_path = None
            else:
                cache_path = Path(cache_dir)
            self.scheduler = Scheduler(self.engine, SchedulerConfig(
                max_running=max_running, max_batch_tokens=batch_tokens, prefill_chunk=prefill_chunk,
                context_size=context_size, ram_cache_bytes=ram_cache_mb * MiB,
                idle_kv_cells=idle_kv_cells, disk_cache_bytes=disk_cache_mb * MiB, cache_dir=cache_path))
        except BaseException:
            self.engine.close()
            raise
        self.name = self.engine.name
        self.context_size = self.scheduler.context_size

    # ---- chat --------------------------------------------------------------------------------------------
    def chat(self, system: str | None = None, *, overflow: str = "truncate", **sampling) -> Chat:
        """A new conversation. `sampling` sets its defaults (temperature=0.2, max_tokens=64, stop=[...], ...) over
        the chat preset (parley.sampling.CHAT_PRESET)."""
        params = CHAT_PRESET.replace(**sampling) if sampling else CHAT_PRESET
        stops = self.template.stops
        if stops:
            params = params.replace(stop=tuple(dict.fromkeys((*params.stop, *stops))))
        conv = Conversation(self.builder, self.context_size, params=params, system=system, overflow=overflow)
        return Chat(self, conv)

    def complete(self, prompt: str, **sampling) -> Stream:
        """Raw completion of `prompt` (no chat template): iterate the returned Stream for Chunks. `sampling` is
        applied over SamplingParams() (every stage off, temperature 1), as the HTTP completions API does."""
        if not isinstance(prompt, str) or not prompt:
            raise InvalidRequest("the prompt is empty", param="prompt")
        params = SamplingParams().replace(**sampling)
        return self.scheduler.stream(self.builder.tokenize_prompt(prompt), params)

    def tokenize(self, text: str) -> list[int]:
        return self.builder.tokenize_prompt(text)

    # ---- lifetime ----------------------------------------------------------------------------------------
    def close(self, *, save: bool = True) -> None:
        """Stop the scheduler (saving idle conversations' KV to disk when save) and free the model."""
        sched = getattr(self, "scheduler", None)
        if sched is not None:
            sched.close(save=save)
        self.engine.close()

    def __enter__(self) -> Parley:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Chat:
    """A conversation held in memory. send() and retry() yield text chunks; `last` holds the finished Reply."""

    def __init__(self, parley: Parley, conversation: Conversation):
        self.parley = parley
        self.conversation = conversation
        self.last: Reply | None = None
        self._stream: Stream | None = None

    @property
    def messages(self) -> list[dict]:
        return self.conversation.full_messages()

    @property
    def params(self) -> SamplingParams:
        return self.conversation.params

    def send(self, text: str, **sampling) -> Iterator[str]:
        turn = self.conversation.prepare(text, self._params(sampling))
        return self._run(turn)

    def retry(self, **sampling) -> Iterator[str]:
        """Generate the last reply again (with the same prompt: its KV is reused)."""
        turn = self.conversation.prepare_retry(self._params(sampling))
        return self._run(turn)

    def ask(self, text: str, **sampling) -> str:
        """send() and return the whole reply."""
        return "".join(self.send(text, **sampling))

    def stop(self) -> None:
        """Stop the reply being generated (from any thread, or a signal handler); what was said is kept."""
        stream = self._stream
        if stream is not None:
            stream.cancel()

    def clear(self) -> None:
        self.conversation.clear()

    def set_system(self, text: str | None) -> None:
        self.conversation.set_system(text)

    def _params(self, sampling: dict) -> SamplingParams:
        return self.conversation.params.replace(**sampling) if sampling else self.conversation.params

    def _run(self, turn: Turn) -> Iterator[str]:
        stream = self.parley.scheduler.stream(turn.tokens, turn.params)
        self._stream = stream
        try:
            for chunk in stream:
                yield chunk.text
        finally:
            if stream.result is None:  # stopped early (Ctrl-C, break): keep what was said, as it was said
                stream.cancel()
                stream.wait()
            self._stream = None
            result = stream.result
            self.conversation.record(turn, result)
            note = turn.built.note or result.cache_note
            self.last = Reply(result.text, result, turn.dropped, note)
            if result.finish_reason in ("stop", "length"):
                self.parley.scheduler.prefetch(self.conversation.next_prefix())


def load(model: str | os.PathLike | None = None, **options) -> Parley:
    """Load a GGUF model (default: the embedded SmolLM2-135M-Instruct). Options: see Parley."""
    return Parley(model, **options)
