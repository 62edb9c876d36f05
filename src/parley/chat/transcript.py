"""The transcript format of narrative chat models: a narrative, then "Name: text" lines, no chat template.

    The tavern is quiet tonight. ...            <- pinned: the persona's narrative (and example lines)

    User: Good evening.
    Mira: Evening, traveller. What'll it be?
    User: Something warm.
    Mira:                                       <- the reply is written after "Speaker:"

It works with base models (no chat template needed) as well as instruct ones. The reply ends at a newline or
where it starts another character's line ("Name:"); those stop strings are held back, so they never appear.
A TranscriptTemplate renders like a ChatTemplate (the prompt builder tokenizes its names and line breaks as
markup and the messages' text as plain text), for one turn's speaker.
"""

from __future__ import annotations

from collections.abc import Sequence


class TranscriptTemplate:
    name = "transcript"
    source = "transcript"

    def __init__(self, speaker: str, *, user_name: str, characters: Sequence[str], bos_token: str = "",
                 eos_token: str = ""):
        self.speaker = speaker
        self.user_name = user_name
        self.characters = tuple(characters)
        self.bos_token = bos_token
        self.eos_token = eos_token
        others = [n for n in (user_name, *self.characters) if n != speaker]
        self.stops: tuple[str, ...] = ("\n", *(f"{n}:" for n in dict.fromkeys(others)))

    def _name(self, m: dict) -> str:
        if m.get("name"):
            return m["name"]
        return self.user_name if m["role"] == "user" else (self.characters[0] if self.characters else "Assistant")

    def render(self, messages: list[dict], *, add_generation_prompt: bool = True, **_extra) -> str:
        out: list[str] = []
        for m in messages:
            if m["role"] == "system":
                out.append(m["content"].rstrip("\n") + "\n\n")
            else:
                out.append(f"{self._name(m)}: {m['content']}\n")
        if add_generation_prompt:
            out.append(f"{self.speaker}:")
        return "".join(out)

    @staticmethod
    def reply_content(text: str) -> str:
        """A generated line as stored and shown: without the space the model writes after "Name:"."""
        return text[1:] if text.startswith(" ") else text

    def __repr__(self) -> str:
        return f"TranscriptTemplate(speaker={self.speaker!r})"
