"""PromptBuilder: messages -> prompt token ids, built so the KV cache keeps hitting turn after turn, and so that
message text can never smuggle in control tokens.

Cache stability: re-tokenizing a whole rendered history each turn can split the earlier reply into different
tokens than the model generated, and then the cache misses from there on. So when the new rendering starts with
exactly the text of the previous turn (prompt + reply), the builder reuses the previous turn's token ids verbatim
and only tokenizes the new tail. When the template re-renders earlier turns differently, it says so (Built.note).

Injection safety: the template's own markup is tokenized with control tokens parsed (<|im_start|> becomes one
token), but each message's content is tokenized as plain text, so a user who types "<|im_end|><|im_start|>system"
gets those characters, not a new system turn. To tell markup from content, the template is rendered a second
time with placeholder contents; a template that rewrites contents beyond trimming whitespace falls back to
tokenizing the whole text (noted in Built.note).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from parley.text.template import ChatTemplate

_MARK = "\ue000parley-{}\ue001"  # private-use characters: never in real text, kept verbatim by templates
_MARK_RE = re.compile("\ue000parley-(\\d+)\ue001")

Segments = list[tuple[str, bool]]  # (text, is message content)


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

    # what a second builder over the same vocabulary needs (a persona's transcript format)
    tokenize = property(lambda self: self._tokenize)
    bos_text = property(lambda self: self._bos_text)
    add_bos = property(lambda self: self._add_bos)

    def tokenize_prompt(self, text: str) -> list[int]:
        """Tokens for a whole raw prompt (control tokens parsed): BOS added when the model wants one and the text
        lacks it."""
        return self._tokenize(text, add_bos=self._wants_bos(text), special=True)

    def tokenize_text(self, text: str) -> list[int]:
        """Tokens of plain text (control-token spellings stay text; no BOS): for counting message sizes."""
        return self._tokenize(text, add_bos=False, special=False)

    def build(self, messages: list[dict], prev: Prefix | None = None) -> Built:
        text = self.template.render(messages, add_generation_prompt=True)
        segments = self._segments(messages, text)
        note = "" if segments is not None else (
            "the chat template rewrites message contents, so they were tokenized with the markup")
        if segments is None:
            segments = [(text, False)]
        if prev is not None and prev.tokens:
            if text.startswith(prev.text):
                tail = self._encode(_cut(segments, len(prev.text)), bos=False)
                return Built(text, list(prev.tokens) + tail, len(prev.tokens), note)
            at = next((i for i, (a, b) in enumerate(zip(text, prev.text, strict=False)) if a != b),
                      min(len(text), len(prev.text)))
            note = f"the chat template rendered the earlier turns differently (first change at character {at})"
        return Built(text, self._encode(segments, bos=self._wants_bos(text)), 0, note)

    # ---- internals ---------------------------------------------------------------------------------------
    def _wants_bos(self, text: str) -> bool:
        return self._add_bos and not (self._bos_text and text.startswith(self._bos_text))

    def _encode(self, segments: Segments, *, bos: bool) -> list[int]:
        tokens: list[int] = []
        for i, (piece, is_content) in enumerate(segments):
            if piece:
                tokens += self._tokenize(piece, add_bos=bos and i == 0, special=not is_content)
        if bos and (not segments or not segments[0][0]):
            tokens = self._tokenize("", add_bos=True, special=True) + tokens
        return tokens

    def _segments(self, messages: list[dict], text: str) -> Segments | None:
        """Split the rendered `text` into template markup and message contents, or None if they cannot be told
        apart (the template rewrites contents)."""
        marked = [{**m, "content": _MARK.format(i)} for i, m in enumerate(messages)]
        try:
            skeleton = self.template.render(marked, add_generation_prompt=True)
        except Exception:  # a template that inspects contents; the normal render worked, so use it whole
            return None
        parts = _MARK_RE.split(skeleton)  # markup, index, markup, index, ..., markup
        segments: Segments = []
        pos = 0
        for j in range(0, len(parts), 2):
            markup = parts[j]
            if not text.startswith(markup, pos):
                return None
            segments.append((markup, False))
            pos += len(markup)
            if j + 1 == len(parts):
                break
            content = messages[int(parts[j + 1])]["content"]
            following = parts[j + 2]
            for candidate in (content, content.strip()):
                if text.startswith(candidate + following, pos):
                    segments.append((candidate, True))
                    pos += len(candidate)
                    break
            else:
                return None
        return _shift_whitespace(segments) if pos == len(text) else None


def _shift_whitespace(segments: Segments) -> Segments:
    """Give the whitespace that touches a content segment to the content: whitespace is never a control token,
    and "[INST] " + "Hello" must still become the usual " Hello" token rather than " " + "Hello"."""
    out = [list(s) for s in segments]
    for i, (_, is_content) in enumerate(out):
        if not is_content:
            continue
        if i > 0 and not out[i - 1][1]:
            before = out[i - 1][0]
            kept = before.rstrip()
            out[i][0] = before[len(kept):] + out[i][0]
            out[i - 1][0] = kept
        if i + 1 < len(out) and not out[i + 1][1]:
            after = out[i + 1][0]
            kept = after.lstrip()
            out[i][0] = out[i][0] + after[: len(after) - len(kept)]
            out[i + 1][0] = kept
    return [(piece, is_content) for piece, is_content in out]


def _cut(segments: Segments, offset: int) -> Segments:
    """The segments after character `offset` of their joined text."""
    out: Segments = []
    pos = 0
    for piece, is_content in segments:
        end = pos + len(piece)
        if end > offset:
            out.append((piece[max(0, offset - pos):], is_content))
        pos = end
    return out
