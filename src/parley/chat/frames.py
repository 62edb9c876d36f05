"""Frame: what a conversation's prompts look like, besides its turns: the pinned blocks, the format that
renders them, the stop strings its replies need, and whose voice the next reply is in.

    no persona           the model's chat template; the system prompt pinned first
    persona "template"   the chat template; one pinned system message: the system prompt, the persona's own
                         system prompt, its narrative (description, personality, characters, scenario) and its
                         example dialogue (dropped first when the context runs short)
    persona "transcript" no chat template: the narrative and example lines, then "Name: text" lines; the reply is
                         written after "Speaker:" and ends at a newline or at another character's "Name:"

Post-history instructions go at the end of each new user message, never into earlier turns, so the history
stays byte-identical and its KV keeps hitting. Group scenes: the user names who speaks next, else the
character named in the user's message, else the one who has been silent longest.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from parley.chat.personas import Persona
from parley.chat.prompt import PromptBuilder
from parley.chat.transcript import TranscriptTemplate
from parley.store.rows import Message


def _same(text: str) -> str:
    return text


@dataclass(frozen=True)
class Frame:
    builder: PromptBuilder
    pinned: tuple[list[dict], list[dict]]      # (without the example dialogue, with it)
    stops: tuple[str, ...]                     # stop strings every reply needs
    key: str                                   # which stored token ids are valid with this frame
    speaker: str | None = None                 # who the reply speaks as (transcript personas)
    user_name: str | None = None               # who the user is (transcript personas)
    wrap: Callable[[str], str] = field(default=_same)     # the new user message as the prompt shows it
    clean: Callable[[str], str] = field(default=_same)    # a generated reply as it is stored and shown

    def named(self, m: dict) -> dict:
        """A message with the speaker's name the transcript needs (unchanged for chat templates)."""
        if self.user_name is None or "name" in m:
            return m
        return {**m, "name": self.user_name} if m["role"] == "user" else m


def _examples_text(p: Persona, user: str) -> str:
    blocks = p.examples(user)
    if not blocks:
        return ""
    lines = ["Example dialogue:"] if p.format == "template" else []
    for block in blocks:
        lines += [f"{name}: {line}" for name, line in block]
    return "\n".join(lines)


def persona_frame(p: Persona, system: str | None, speaker: str, model) -> Frame:
    """The frame of a conversation with persona `p` (`model`: chat.model.Model)."""
    user = p.user_name
    head = [t for t in (system, p.substitute(p.system_prompt, user), p.narrative(user)) if t and t.strip()]
    examples = _examples_text(p, user)
    without = "\n\n".join(head)
    with_examples = "\n\n".join(head + ([examples] if examples else []))
    post = p.substitute(p.post_history_instructions, user).strip()
    wrap = (lambda text: f"{text}\n\n{post}") if post else _same
    pinned = ([{"role": "system", "content": without}] if without else [],
              [{"role": "system", "content": with_examples}] if with_examples else [])
    if p.format == "template":
        return Frame(builder=model.builder, pinned=pinned, stops=model.stops, key=model.tokens_key, wrap=wrap)
    builder = model.builder
    template = TranscriptTemplate(speaker, user_name=user, characters=p.speakers(), bos_token=builder.bos_text)
    transcript = PromptBuilder(template, builder.tokenize, bos_text=builder.bos_text, add_bos=builder.add_bos)
    key = hashlib.sha256(f"{model.tokens_key}:transcript".encode()).hexdigest()[:16]
    return Frame(builder=transcript, pinned=pinned, stops=template.stops, key=key, speaker=speaker,
                 user_name=user, wrap=wrap, clean=template.reply_content)


def next_speaker(p: Persona, branch: list[Message], said: str = "") -> str:
    """Who answers next in a group scene: a character the user's message (`said`, else the branch's last user
    message) names, else whoever has been silent longest (in the order the persona lists them)."""
    speakers = p.speakers()
    if len(speakers) == 1:
        return speakers[0]
    last_user = said or next((m.content for m in reversed(branch) if m.role == "user"), "")
    named = [s for s in speakers if re.search(rf"\b{re.escape(s)}\b", last_user, re.IGNORECASE)]
    if len(named) == 1:
        return named[0]
    spoke: dict[str, int] = {}
    for i, m in enumerate(branch):
        if m.role == "assistant":
            spoke[m.meta.get("speaker", p.name)] = i
    return min(speakers, key=lambda s: (spoke.get(s, -1), speakers.index(s)))
