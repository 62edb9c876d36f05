"""TemplateSettings: the chat format's section of parley's settings (parley.settings assembles the sections):
which chat template renders the prompts, by a name template.py knows."""

from __future__ import annotations

from dataclasses import dataclass

from parley.config import check, setting
from parley.errors import InvalidRequest
from parley.text.template import KNOWN_FORMATS


@dataclass(frozen=True, slots=True)
class TemplateSettings:
    chat_format: str | None = setting(
        None, "--chat-format", metavar="NAME",
        help="chat template: 'model' (the file's own, default) or a named format: chatml, llama2, llama3, gemma, "
             "user-assistant, raw")

    def __post_init__(self) -> None:
        check(self)
        if self.chat_format is not None and self.chat_format not in KNOWN_FORMATS:
            raise InvalidRequest(f"unknown chat_format (--chat-format) {self.chat_format!r}; known: "
                                 f"{', '.join(KNOWN_FORMATS)}", param="chat_format")
