"""PromptBuilder: messages -> prompt token ids, built so the KV cache keeps hitting turn after turn.

Re-tokenizing a whole rendered history each turn can split the earlier reply into different tokens than the
model generated, and then the cache misses from there on. So when the new rendering starts with exactly the
text of the previous turn (prompt + reply), the builder reuses the previous turn's token ids verbatim and only
tokenizes the new tail. When the template re-renders earlier turns differently, it says so (Built.note).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from parley.text.template import ChatTemplate


@dataclass(frozen=True, slots=True)
class Prefix:
    """Text and the exact token ids the sequence holds for it (the previous turn's prompt plus its reply)."""

    text: str
    tokens: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Built:
    text: str
    tokens: list[int]
    reused: int          # leading tokens taken verbatim from the previous turn
    note: str            # why the previous turn's tokens could not be reused ("" when they were)


class PromptBuilder:
    def __init__(self, template: ChatTemplate, tokenize: Callable[..., list[int]], *, bos_text: str, add_bos: bool):
        self.template = template
        self._tokenize = tokenize
        self._bos_text = bos_text
        self._add_bos = add_bos

    def tokenize_prompt(self, text: str) -> list[int]:
        """Tokens for a whole prompt: BOS added only when the model wants one and the text lacks it."""
        add = self._add_bos and not (self._bos_text and text.startswith(self._bos_text))
        return self._tokenize(text, add_bos=add, special=True)

    def build(self, messages: list[dict], prev: Prefix | None = None) -> Built:
        text = self.template.render(messages, add_generation_prompt=True)
        if prev is not None and prev.tokens:
            if text.startswith(prev.text):
                tail = self._tokenize(text[len(prev.text):], add_bos=False, special=True)
                return Built(text, list(prev.tokens) + tail, len(prev.tokens), "")
            at = next((i for i, (a, b) in enumerate(zip(text, prev.text, strict=False)) if a != b),
                      min(len(text), len(prev.text)))
            note = f"the chat template rendered the earlier turns differently (first change at character {at})"
            return Built(text, self.tokenize_prompt(text), 0, note)
        return Built(text, self.tokenize_prompt(text), 0, "")
