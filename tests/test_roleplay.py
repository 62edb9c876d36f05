"""Personas on the real models. The transcript format on the base Gemma 3 270M (no chat template): replies end at
a newline or at another character's "Name:" and the stop text never shows (Python and `parley chat -p`; HTTP in
tests/server/test_server_personas.py); the narrative stays first in every prompt while a 10-message window
rolls in blocks; group scenes; {{char}} / {{user}}; a persona longer than the context. On the deterministic
SmolLM2: a turn answered from the cache after the window rolled equals a cold full prefill of the same prompt;
skills. And `parley bench roleplay --quick --json` on tiny sizes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import parley
from parley.api import Persona
from parley.chat.personas import persona_toml
from parley.cli.main import main
from parley.errors import InvalidRequest, LimitExceeded
from parley.sampling import SamplingParams
from tests.conftest import SCENE_OTHERS as OTHERS
from tests.conftest import lighthouse_scene

SCENE = lighthouse_scene("Maren")
QUESTIONS = ("Who lives here?", "Is there any soup?", "Can I sleep here?", "What was that noise?")
GREEDY = {"temperature": 0, "repeat_penalty": 1.0}


def leaked(text: str) -> list[str]:
    return [s for s in ("\n", *OTHERS) if s in text]


def test_transcript_replies_stop_at_a_newline_and_at_another_characters_name(gemma):
    stops = {}
    for q in QUESTIONS:
        chat = gemma.chat(persona=SCENE, max_tokens=40, **GREEDY)
        shown = "".join(chat.send(q))
        r = chat.last.result
        assert r.finish_reason == "stop" and r.stop_string in ("\n", *OTHERS), (q, r.text)
        for text in (shown, r.text, chat.messages[-1]["content"]):
            assert not leaked(text), (q, text)
        assert chat.messages[-1] == {"role": "assistant", "content": shown} == {"role": "assistant",
                                                                                "content": chat.last.text}
        assert not shown.startswith(" ")           # the space after "Maren:" is the prompt's, not the reply's
        stops.setdefault(r.stop_string, q)
    assert "\n" in stops and set(stops) & set(OTHERS), stops   # both kinds of ending were seen


def test_parley_chat_prints_the_line_and_never_the_stop_text(gemma_path, tmp_path):
    card = tmp_path / "scene.toml"
    card.write_text(persona_toml(SCENE))
    env = {**os.environ, "PARLEY_HOME": str(tmp_path / "home")}
    flags = ["-m", str(gemma_path), "--chat-format", "raw", "--persona", str(card), "--temperature", "0",
             "--repeat-penalty", "1", "-n", "40", "--kv-size", "1024", "--disk-cache-mb", "0", "-t", "1",
             "--deterministic", "--stats"]
    for q in QUESTIONS[:3]:
        out = subprocess.run([sys.executable, "-m", "parley.cli.main", "chat", "-p", q, *flags], env=env,
                             capture_output=True, text=True, timeout=180)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() and out.stdout.count("\n") == 1, out.stdout   # one line, then the newline
        assert not leaked(out.stdout.rstrip("\n")), out.stdout
        assert ", stop]" in out.stderr or ", stop," in out.stderr, out.stderr    # a stop ended it, not -n


def test_narrative_stays_first_while_the_window_rolls_in_blocks(gemma):
    lighthouse = gemma.personas.get("lighthouse")
    head = gemma.tokenize(lighthouse.narrative())[:-1]   # its last token may merge with what follows
    chat = gemma.chat(persona="lighthouse", max_tokens=6, max_messages=10, **GREEDY)
    starts, prev = [], None
    for i in range(16):
        text = f"Question {i}: what do you see now?"
        prompt = chat.prompt_for(text)
        assert prompt[:len(head)] == head, f"turn {i + 1}: the prompt does not start with the narrative"
        chat.ask(text)
        r, start = chat.last.result, chat.last.dropped
        history = 1 + 2 * i                        # the greeting, then two messages a turn
        assert r.prompt_tokens == len(prompt) and history - start + 1 <= 10
        if prev is not None and start == starts[-1]:
            assert r.cached_tokens >= prev.prompt_tokens, f"turn {i + 1} only appended, yet missed the cache"
        elif prev is not None:
            assert r.cached_tokens >= len(head), f"turn {i + 1}: the narrative's KV was not reused"
        starts.append(start)
        prev = r
    moves = [b - a for a, b in zip(starts, starts[1:], strict=False) if b != a]
    assert starts == sorted(starts) and len(moves) >= 3
    assert all(m >= 5 for m in moves), starts          # whole blocks of max_messages / 2, never one at a time


def test_rolled_window_reply_equals_a_cold_full_prefill(det):
    det.scheduler.drop_cached(save=False)   # a tidy cache: see docs/ARCHITECTURE.md, Determinism
    chat = det.chat(persona="lighthouse", max_tokens=8, max_messages=10, **GREEDY)
    turns = []
    for i in range(12):
        text = f"Question {i}: what do you see now?"
        prompt = chat.prompt_for(text)
        chat.ask(text)
        turns.append((prompt, chat.last.result, chat.last.dropped))
    rolled = [(p, r) for p, r, start in turns if start > 0 and r.cached_tokens > len(p) // 2]
    assert len(rolled) >= 4 and any(r.generated_tokens >= 3 for _, r in rolled)
    cold = parley.load(deterministic=True, disk_cache_mb=0, kv_size=4096)
    try:
        for prompt, warm in rolled[-3:]:          # the latest windows, rolled furthest from the start
            fresh = cold.generate(prompt, SamplingParams(temperature=0, max_tokens=8)).wait()
            cold.scheduler.drop_cached(save=False)
            assert fresh.cached_tokens == 0
            assert fresh.token_ids[:len(warm.token_ids)] == warm.token_ids   # the warm one stopped at a newline
    finally:
        cold.close(save=False)


def test_group_scene_the_user_names_the_speaker_else_the_named_or_longest_silent(gemma):
    chat = gemma.chat(persona="lighthouse", max_tokens=8, **GREEDY)   # Maren greets
    store = gemma.store

    def ask(text, expected, speaker=None):
        if speaker is None:
            assert gemma.detokenize(chat.prompt_for(text)).endswith(f"\nTraveller: {text}\n{expected}:")
        chat.ask(text, speaker=speaker)
        last = store.branch(chat.conversation.leaf_id)[-1]
        assert last.meta["speaker"] == expected, (text, last.meta)

    ask("Good evening.", "Tobias")              # nobody named: never spoke yet, first in the persona's order
    ask("Go on.", "Ines")
    ask("And then?", "Maren")                   # the greeting was longest ago
    ask("Ines, is there any soup?", "Ines")     # named
    ask("Ines and Maren, what now?", "Tobias")  # two named: the longest silent
    ask("Anyone?", "Maren", speaker="Maren")    # the user's choice
    with pytest.raises(InvalidRequest, match="unknown speaker 'Bob'; this scene's characters: Maren, Tobias, Ines"):
        chat.send("Hello?", speaker="Bob")


def test_char_and_user_are_filled_in_every_prompt(gemma):
    chat = gemma.chat(persona="lighthouse", user_name="Ash", max_tokens=4, **GREEDY)
    assert "{{" not in chat.messages[0]["content"]
    text = gemma.detokenize(chat.prompt_for("Hello there."))
    assert "{{" not in text and "<USER>" not in text.upper()
    assert "Maren, the keeper" in text and "Ash has rowed across" in text     # description, scenario
    assert "\nAsh: Is it true the lamp has never gone out?\nMaren:" in text     # the example dialogue
    assert text.endswith("\nAsh: Hello there.\nTobias:")
    chat.ask("Hello there.")
    assert "Ash:" not in chat.last.result.text            # the user's name ends a reply like the others'
    nxt = gemma.detokenize(chat.prompt_for("Who are you?"))
    assert nxt.count("Ash: Hello there.") == 1 and "{{user}}" not in nxt


def test_persona_longer_than_the_context_is_a_clear_error(gemma):
    big = Persona(name="Archivist", format="transcript", description="The archive holds " + "old letters and " * 2000)
    before = gemma.store.count_conversations()
    with pytest.raises(LimitExceeded) as err:
        gemma.chat(persona=big)
    e = err.value
    assert e.param == "persona" and e.code == "context_length_exceeded"
    assert "the persona and system prompt are" in e.message and f"the context holds {gemma.context_size}" in e.message
    assert gemma.store.count_conversations() == before   # nothing stored


def test_skills_wrap_the_new_message_and_their_errors_list_what_exists(det):
    chat = det.chat(temperature=0, max_tokens=8)
    chat.ask("Good morning.", skill="translate", skill_params={"to": "German"})
    first = chat.last.result
    held = det.detokenize(chat.held_tokens())
    assert "Translate the text delimited by triple backticks to German" in held and "```Good morning.```" in held
    assert chat.messages[0] == {"role": "user", "content": "Good morning."}   # stored as written
    chat.ask("Good night.")                    # the wrapped message stays in the history as it was: cache hits
    assert chat.last.result.cached_tokens >= first.prompt_tokens
    with pytest.raises(InvalidRequest, match="unknown skill 'juggle'; known: chat, explain-code, proofread"):
        chat.send("x", skill="juggle")
    with pytest.raises(InvalidRequest, match=r"needs the parameter 'to' .*its parameters: to \(required\)"):
        chat.send("x", skill="translate")
    with pytest.raises(InvalidRequest, match="has no parameter 'lang'; its parameters: sentences=2"):
        chat.send("x", skill="summarize", skill_params={"lang": "en"})
    assert len(chat.messages) == 4             # the refused ones left nothing behind


@pytest.mark.model
def test_bench_roleplay_quick_json_is_well_formed(monkeypatch, capsys):
    from parley.bench import roleplay

    monkeypatch.setattr(roleplay, "QUICK", roleplay.Sizes(narrative=120, turns=7, window=4, max_tokens=3,
                                                          naive_every=3, first_twins=False))
    assert main(["bench", "roleplay", "--quick", "--json", "--threads", "1"]) == 0
    doc = json.loads(capsys.readouterr().out)
    res = doc["scenarios"]["roleplay"]
    assert res["error"] is None and res["config"]["turns"] == 7
    data = res["data"]
    turns = data["per_turn"]
    assert [t["turn"] for t in turns] == list(range(1, 8)) and data["narrative_kept_every_turn"] is True
    assert [t["turn"] for t in turns if "naive_ttft_s" in t] == [4, 7]
    assert sum(t["prefilled"] for t in turns) == data["prefilled_tokens"]["parley"]
    assert data["prefilled_tokens"]["recipe"] == sum(t["recipe_tokens"] for t in turns)
    assert data["window_moves"] >= 1 and turns[0]["request_prefilled"] == turns[0]["prompt_tokens"]
    assert all(t["prefilled"] >= t["request_prefilled"] for t in turns)   # + the read-ahead after the reply
    assert [r["target"] is not None for r in res["rows"]] == [True, True, False, False, False]
    assert doc["summary"]["targets"] == 2


def test_a_persona_far_too_long_is_refused_before_it_is_tokenized(gemma):
    """A 10 MB narrative used to take 12-17 s to be refused (tokenized whole first): its size alone proves it
    cannot fit (no token is longer than the vocabulary's longest), so it is refused from that, naming a lower
    bound."""
    big = Persona(name="Archivist", format="transcript", description="x" * 10_000_000)
    with pytest.raises(LimitExceeded) as err:
        gemma.chat(persona=big)
    e = err.value
    assert e.param == "persona" and "are at least" in e.message and f"the context holds {gemma.context_size}" \
        in e.message
