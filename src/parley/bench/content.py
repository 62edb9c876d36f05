"""Deterministic made-up text for the benchmarks: personas of a given token length, story prompts, user turns.

Everything is generated from a seed with word lists (no data files, nothing downloaded), so every run and
every side of a comparison reads exactly the same tokens. Different seeds differ from their first word, so
no cache (parley's or llama-cpp-python's) can reuse one repetition's tokens in the next.
"""

from __future__ import annotations

import random
from collections.abc import Callable

Tokenize = Callable[[str], list[int]]

NAMES = ["Mira", "Tobin", "Asha", "Corvin", "Lena", "Idris", "Petra", "Oskar", "Yara", "Ned", "Sela", "Bram",
         "Ines", "Kasimir", "Olga", "Rafe", "Dagny", "Emil", "Farah", "Gideon", "Hanne", "Ivo", "Jora", "Kestrel"]
PLACES = ["the salt marsh", "the glass harbour", "the northern orchards", "the copper mine", "the river ferry",
          "the old observatory", "the lantern market", "the cliff monastery", "the clockmakers' street",
          "the flooded library", "the wind farm", "the border fort", "the tea terraces", "the iron bridge"]
ADJS = ["quiet", "stubborn", "patient", "clever", "weathered", "cheerful", "careful", "restless", "gentle",
        "curious", "honest", "tired", "proud", "hopeful"]
NOUNS = ["map", "lantern", "letter", "compass", "ledger", "boat", "garden", "bell", "key", "song", "storm",
         "bridge", "harvest", "promise", "recipe", "workshop"]
VERBS = ["repaired", "found", "lost", "traded", "painted", "guarded", "measured", "carried", "remembered",
         "rebuilt", "studied", "hid", "shared", "questioned"]
TIMES = ["before dawn", "in the dry season", "after the flood", "during the festival", "every winter",
         "on the longest night", "when the ships came back", "in the year of the comet"]
TOPICS = ["the lighthouse keeper", "a lost cat", "the first snow", "a broken clock", "the village baker",
          "a river journey", "an old violin", "the midnight train", "a secret garden", "the last dragon"]


def _sentence(rng: random.Random) -> str:
    who = rng.choice(NAMES)
    pattern = rng.randrange(4)
    if pattern == 0:
        return (f"{who} {rng.choice(VERBS)} the {rng.choice(ADJS)} {rng.choice(NOUNS)} of "
                f"{rng.choice(PLACES)} {rng.choice(TIMES)}.")
    if pattern == 1:
        return (f"In {rng.choice(PLACES)}, the {rng.choice(ADJS)} {rng.choice(NOUNS)} was {rng.choice(VERBS)} "
                f"by {who}, who never told anyone why.")
    if pattern == 2:
        return (f"People say that {who} once {rng.choice(VERBS)} a {rng.choice(NOUNS)} and a "
                f"{rng.choice(NOUNS)} {rng.choice(TIMES)}.")
    return (f"{who} keeps a {rng.choice(ADJS)} {rng.choice(NOUNS)} near {rng.choice(PLACES)} and visits it "
            f"{rng.choice(TIMES)}.")


def narrative(seed: int, n_sentences: int) -> str:
    rng = random.Random(seed)
    opening = f"{NAMES[seed % len(NAMES)]} {seed}."  # the seed itself leads: prompts differ from token 0
    return " ".join([opening] + [_sentence(rng) for _ in range(n_sentences)])


def persona(seed: int, n_tokens: int, tokenize: Tokenize) -> str:
    """A system prompt of about n_tokens tokens: who the assistant is, then a made-up chronicle to draw on."""
    rng = random.Random(seed)
    name = NAMES[seed % len(NAMES)]
    head = (f"You are {name} (persona {seed}), the {rng.choice(ADJS)} keeper of {rng.choice(PLACES)}. "
            "Answer in one or two short sentences, in character, using the chronicle below when it helps.\n\n"
            "Chronicle:\n")
    sentences: list[str] = []
    text = head
    while len(tokenize(text)) < n_tokens:
        # add sentences in small steps and re-count (tokens per sentence vary)
        sentences.extend(_sentence(rng) for _ in range(max(1, (n_tokens - len(tokenize(text))) // 25)))
        text = head + " ".join(sentences)
    while sentences and len(tokenize(text)) > n_tokens:
        sentences.pop()
        text = head + " ".join(sentences)
    return text


def story_tokens(seed: int, n_tokens: int, tokenize: Tokenize) -> list[int]:
    """Exactly n_tokens tokens of narrative (raw text, no chat template): a prompt to continue."""
    n_sentences = max(4, n_tokens // 12)
    while True:
        toks = tokenize(narrative(seed, n_sentences))
        if len(toks) >= n_tokens:
            return toks[:n_tokens]
        n_sentences *= 2


def user_turns(seed: int, n: int) -> list[str]:
    """Short user messages for a conversation (each ~15-25 tokens)."""
    rng = random.Random(seed * 7919 + 1)
    out = []
    for _ in range(n):
        kind = rng.randrange(4)
        if kind == 0:
            out.append(f"What happened to the {rng.choice(NOUNS)} of {rng.choice(PLACES)}?")
        elif kind == 1:
            out.append(f"Tell me one thing {rng.choice(NAMES)} did {rng.choice(TIMES)}.")
        elif kind == 2:
            out.append(f"Why would anyone keep a {rng.choice(ADJS)} {rng.choice(NOUNS)}? Answer briefly.")
        else:
            out.append(f"Describe {rng.choice(PLACES)} in one sentence.")
    return out


def story_request(i: int) -> str:
    """A user message that asks for a long answer (for throughput runs)."""
    return f"Write a long, detailed story about {TOPICS[i % len(TOPICS)]}. Story number {i}."
