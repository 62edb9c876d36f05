"""The page's controls read back as facade arguments: the advanced options (sampling) and the skill.

Options: the sliders start at the conversation's own defaults (a new conversation's: the chat preset,
parley.sampling.CHAT_PRESET, with the picked model's sampling over it); max tokens ends at the picked model's
limit. A message carries only the values the user moved, so a skill's own sampling (translate's temperature 0.3,
say) applies unless a slider says otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

from parley.sampling import SamplingParams

OPTIONS = ("temperature", "top_p", "top_k", "min_p", "repeat_penalty", "max_tokens", "seed", "stop")
MAX_TOKENS = OPTIONS.index("max_tokens")
SKILL_SLOTS = 4          # parameter boxes under the skill picker (a skill with more keeps the rest's defaults)


def option_values(params: SamplingParams, max_tokens_cap: int) -> list:
    """The slider values for a conversation's defaults, in OPTIONS order."""
    return [params.temperature, params.top_p, params.top_k, params.min_p, params.repeat_penalty,
            min(params.max_tokens, max_tokens_cap), params.seed, "\n".join(params.stop)]


def kept_options(values: list, started: list, fresh: list, max_tokens_cap: int) -> list:
    """The options after the page's model or conversation changed: each one the user did not move (still at
    `started`, where it began) takes its new default (`fresh`), the others stay; max tokens at most the cap."""
    out = [new if value == start else value for value, start, new in zip(values, started, fresh, strict=True)]
    out[MAX_TOKENS] = min(int(out[MAX_TOKENS]), max_tokens_cap)
    return out


def overrides(defaults: SamplingParams, values: list) -> dict:
    """The options that differ from the conversation's defaults (what conversations.send(params=...) takes)."""
    out = {}
    for name, value in zip(OPTIONS, values, strict=True):
        if name == "stop":
            value = tuple(line for line in (value or "").splitlines() if line)
        elif name == "seed":
            value = None if value is None or value == "" else int(value)
        elif name in ("top_k", "max_tokens"):
            value = int(value)
        else:
            value = float(value)
        if value != getattr(defaults, name):
            out[name] = value
    if out.get("seed", 0) is None:   # cleared: back to random
        out.pop("seed")
    return out


@dataclass(frozen=True)
class SkillView:
    """How the skill picker shows one skill: its description, its parameter boxes, its examples."""

    description: str
    params: list[tuple[str, str, str]]      # (name, description, default) of the first SKILL_SLOTS params
    examples: list[list[str]]               # rows of [text, *param values in slot order]


def skill_view(skill) -> SkillView:
    params = [(name, p.description, p.default or "") for name, p in list(skill.params.items())[:SKILL_SLOTS]]
    names = [name for name, _, _ in params]
    examples = [[ex.text, *(ex.params.get(n, "") for n in names)] for ex in skill.examples]
    return SkillView(skill.description, params, examples)


def skill_params(skill, values: list[str]) -> dict[str, str]:
    """The parameters to send: the boxes the user filled, in the skill's parameter order."""
    names = list(skill.params)[:SKILL_SLOTS]
    return {n: v.strip() for n, v in zip(names, values, strict=False) if v and v.strip()}
