"""BM25 ranking: a planted fact is found and cited among varied filler; order is deterministic; sizes 1 to 10,000."""

from __future__ import annotations

import random
import textwrap
import time

import pytest

from parley.documents import Chunk, Retriever, chunk, load_bytes, tokenize
from parley.errors import InvalidRequest

SUBJECTS = ["The committee", "Our team", "The north office", "A supplier", "The new intern", "The auditor",
            "The marketing group", "The warehouse crew", "The finance desk", "The night shift", "The report generator",
            "The building manager"]
VERBS = ["reviewed", "postponed", "approved", "discussed", "rewrote", "archived", "questioned", "summarised",
         "printed", "shipped", "measured", "ignored"]
OBJECTS = ["the quarterly budget", "a shipment of chairs", "the holiday rota", "the parking policy",
           "the coffee machine contract", "three pallets of paper", "the onboarding slides", "the floor plan",
           "the travel claims", "the server inventory", "the lunch menu", "the fire drill notes",
           "the building's heating schedule", "a PDF of last year's figures"]
TAILS = ["before the deadline", "after a long debate", "with little enthusiasm", "on Monday morning",
         "in the east wing", "without telling anyone", "for the second time", "late on Friday",
         "during the quiet hours", "at the request of the board"]
NEEDLE = ("Safety note: the emergency diesel generator behind building seven is load-tested every Thursday "
          "at 06:30 by the facilities contractor Voltaris.")


def _paragraph(rng: random.Random) -> str:
    sentences = [f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)} {rng.choice(TAILS)}."
                 for _ in range(rng.randint(3, 6))]
    return textwrap.fill(" ".join(sentences), 88)


def _handbook(needle_at: int = 137, paragraphs: int = 200) -> str:
    rng = random.Random(11)
    paras = [_paragraph(rng) for _ in range(paragraphs)]
    paras[needle_at] = textwrap.fill(paras[needle_at] + " " + NEEDLE, 88)
    return "\n\n".join(paras) + "\n"


def test_a_planted_fact_is_found_and_cited_at_its_lines():
    text = _handbook()
    doc = load_bytes("handbook.txt", text.encode())
    assert len(doc.text) > 60_000
    needle_lines = {i + 1 for i, line in enumerate(text.split("\n")) if any(w in line for w in ("diesel", "Voltaris"))}
    chunks = chunk(doc)
    retriever = Retriever(chunks)
    for question in ("When is the emergency generator behind building seven tested?",
                     "Which contractor load-tests the diesel generator?",
                     "what happens on thursday at 06:30"):
        top = retriever.rank(question, k=3)
        assert top, question
        hit = next((c for c, _ in top if "Voltaris" in c.text), None)
        assert hit is not None, (question, [c.cite() for c, _ in top])
        assert needle_lines <= set(range(hit.line_start, hit.line_end + 1))
        assert hit.cite() == f"handbook.txt lines {hit.line_start}-{hit.line_end}"
    best, score = retriever.rank("emergency diesel generator Voltaris", k=1)[0]
    assert "Voltaris" in best.text and score > 0


def test_ranking_is_deterministic_on_ties_and_scores_descend():
    chunks = chunk(load_bytes("d.txt", ("same words here\n\n" * 30).encode()), target_chars=20, overlap_chars=0)
    ranked = Retriever(chunks).rank("same words", k=10)
    assert [c.index for c, _ in ranked] == list(range(10))
    assert len({s for _, s in ranked}) == 1
    varied = Retriever(chunk(load_bytes("h.txt", _handbook().encode()))).rank("budget chairs", k=8)
    scores = [s for _, s in varied]
    assert scores == sorted(scores, reverse=True)
    assert varied == Retriever(chunk(load_bytes("h.txt", _handbook().encode()))).rank("budget chairs", k=8)


def test_one_chunk_no_match_and_no_chunks():
    (only,) = chunk(load_bytes("a.txt", b"A single small note about otters."))
    assert Retriever([only]).rank("otters?", k=4) == [(only, pytest.approx(Retriever([only]).rank("otters")[0][1]))]
    assert Retriever([only]).rank("giraffes") == []
    assert Retriever([only]).rank("what is the?") == []  # only stopwords
    assert Retriever([]).rank("anything") == []
    with pytest.raises(InvalidRequest, match="k must be at least 1"):
        Retriever([only]).rank("otters", k=0)


def test_code_identifiers_match_plain_words():
    code = b"def prepare_data(rows):\n    return [r for r in rows if r]\n\n\nclass ModelLoader:\n    pass\n"
    chunks = chunk(load_bytes("src/pipeline.py", code), target_chars=60, overlap_chars=0)
    (top, _), *_ = Retriever(chunks).rank("which function does prepare data?")
    assert "prepare_data" in top.text
    (top, _), *_ = Retriever(chunks).rank("the model loader")
    assert "ModelLoader" in top.text


def test_tokenize():
    assert tokenize("What does loadConfig do with prepare_data in HTTPServer v2? 7481 café") == [
        "loadconfig", "load", "config", "prepar", "data", "httpserver", "http", "server", "v2", "7481", "café"]
    assert tokenize("They camped by the lake") == tokenize("camp lakes")  # stemmed: the words still meet


def test_ten_thousand_chunks():
    rng = random.Random(5)
    chunks = [Chunk(i, "big.txt", 0, 1, i + 1, i + 1, None, None, _paragraph(rng)) for i in range(10_000)]
    chunks[7777] = Chunk(7777, "big.txt", 0, 1, 7778, 7778, None, None, NEEDLE)
    start = time.perf_counter()
    retriever = Retriever(chunks)
    top = retriever.rank("diesel generator building seven", k=4)
    assert time.perf_counter() - start < 10
    assert top[0][0].index == 7777 and len(top) == 4
