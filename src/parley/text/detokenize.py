"""Turn a stream of token ids into text, one token at a time, never splitting a UTF-8 character."""

from __future__ import annotations

import codecs
from collections.abc import Callable


class IncrementalDetokenizer:
    """Feed token ids with `add`; get back only completed text. A token may carry part of a multi-byte
    character: its bytes are held until the character is complete. `flush` at the end returns what is
    held, with invalid or incomplete bytes as U+FFFD."""

    __slots__ = ("_piece", "_decoder", "text_len", "byte_len")

    def __init__(self, piece: Callable[[int], bytes]):
        self._piece = piece
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.text_len = 0  # characters returned so far
        self.byte_len = 0  # bytes taken from tokens so far

    def add(self, token_id: int) -> str:
        data = self._piece(token_id)
        self.byte_len += len(data)
        text = self._decoder.decode(data)
        self.text_len += len(text)
        return text

    def flush(self) -> str:
        text = self._decoder.decode(b"", final=True)
        self.text_len += len(text)
        return text
