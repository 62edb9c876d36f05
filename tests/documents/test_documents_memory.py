"""Documents in model memory, with the real model: questions are independent (the same greedy answer whatever
was asked before, one by one or side by side), the document's KV is held once however many questions share
it, a restart (or the same text under another name) reads none of it again, and a document ten times longer
than the context is answered from the passages BM25 finds, citing where they are."""

from __future__ import annotations

import random

import pytest

import parley
from parley.sampling import SamplingParams

G = SamplingParams(temperature=0.0, max_tokens=12)
QUESTIONS = ["Who wrote the report?", "Which function prepares the data?", "What colour is the roof?"]


def report(n: int = 12) -> str:
    lines = ["# Report on the harbour survey", "", "Written by Ada Lovelace and Charles Babbage.", ""]
    for i in range(n):
        lines += [f"## Section {i}", f"The survey team measured tide level {i} at the north pier and wrote it "
                  f"down in the log book, page {i + 3}.", ""]
    lines += ["## Method", "We prepare the data with the function load_rows, then clean it with scrub.", "",
              "The roof of the harbour office is green."]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def det_home(tmp_path_factory):
    return tmp_path_factory.mktemp("docs-home")


@pytest.fixture(scope="module")
def p(det_home):
    model = parley.load(deterministic=True, kv_size=4096, home=str(det_home), disk_cache_mb=256)
    yield model
    model.close()


@pytest.fixture(scope="module")
def doc(p, det_home):
    path = det_home / "report.md"
    path.write_text(report())
    return p.documents.add([path])


def test_a_document_that_fits_is_read_once_and_forked(p, doc):
    assert doc.fits and doc.mode == "whole" and doc.tokens > 200
    p.documents.warm([doc.id])
    before = p.stats()
    answers = p.documents.ask_many([doc.id], QUESTIONS, params=G)
    results = [a.wait() for a in answers]
    for r in results:
        assert r.finish_reason in ("stop", "length") and r.cached_tokens >= doc.tokens
        assert r.prefilled_tokens == r.prompt_tokens - r.cached_tokens < 40  # only the question was read
    after = p.stats()
    assert after.totals.prefilled_tokens - before.totals.prefilled_tokens < 40 * len(QUESTIONS)
    assert after.pinned_sequences >= 1


def test_the_documents_kv_is_held_once(p, doc):
    p.documents.warm([doc.id])
    used = []
    answers = p.documents.ask_many([doc.id], [f"Question number {i}: who wrote it?" for i in range(5)],
                                   params=SamplingParams(temperature=0.0, max_tokens=40, ignore_eos=True))
    for _chunk in answers[0]:  # while all five are generating
        used.append(p.stats().kv_cells_used)
        if len(used) > 5:
            break
    for a in answers:
        a.wait()
    # five forks of the prefix: the document's cells once, plus each question's own few dozen
    assert max(used) < doc.tokens + 5 * 120, (max(used), doc.tokens)


def test_questions_are_independent(p, doc):
    """Question 2's greedy answer is the same token for token whether or not question 1 came first, and
    whether the questions run one by one or side by side."""
    alone = p.documents.ask([doc.id], QUESTIONS[1], params=G).wait().token_ids
    p.documents.ask([doc.id], QUESTIONS[0], params=G).wait()
    after_q1 = p.documents.ask([doc.id], QUESTIONS[1], params=G).wait().token_ids
    together = [a.wait().token_ids for a in p.documents.ask_many([doc.id], QUESTIONS, params=G)]
    assert alone == after_q1 == together[1]


def test_same_text_under_another_name_reads_nothing(p, doc, det_home):
    copy = det_home / "copy-of-the-report.txt"
    copy.write_text(report())
    again = p.documents.add([copy])
    assert again.id != doc.id and again.content_hash == doc.content_hash
    assert p.documents.warm([again.id]) is None  # its prefix is the very same tokens: already pinned


def test_a_restart_reads_none_of_the_document_again(det_home):
    """The document's KV went to the disk tier when it was loaded: the next process restores it."""
    path = det_home / "restart.md"
    path.write_text(report(20))
    first = parley.load(deterministic=True, kv_size=4096, home=str(det_home), disk_cache_mb=256)
    try:
        info = first.documents.add([path])
        first.documents.warm([info.id])
    finally:
        first.close(save=False)  # even without the shutdown save, the disk tier already has it
    second = parley.load(deterministic=True, kv_size=4096, home=str(det_home), disk_cache_mb=256)
    try:
        r = second.documents.warm([info.id])
        assert r.cache_source == "disk" and r.prefilled_tokens == 0, r
        answer = second.documents.ask([info.id], QUESTIONS[0], params=G).wait()
        assert answer.cached_tokens >= info.tokens and answer.prefilled_tokens < 40
    finally:
        second.close()


def test_retrieval_finds_a_planted_fact_in_a_document_ten_times_the_context(tmp_path):
    rng = random.Random(7)
    topics = ["weather", "trains", "bread", "rivers", "music", "chess", "gardens", "bridges", "lamps", "ships"]
    paragraphs = [f"Paragraph {i} is about {rng.choice(topics)}. " + " ".join(
        rng.choice(["The", "A", "Every", "Some"]) + " " + rng.choice(topics) + " " +
        rng.choice(["moved slowly", "was noted", "looked old", "changed colour", "stayed put"]) + "."
        for _ in range(6)) for i in range(260)]
    needle = "The secret code of the vault is PELICAN-4417, written on the back of the lighthouse map."
    paragraphs.insert(177, needle)
    path = tmp_path / "long.txt"
    path.write_text("\n\n".join(paragraphs) + "\n")
    small = parley.load(kv_size=2048, ctx_size=1024, disk_cache_mb=0, home=str(tmp_path))
    try:
        info = small.documents.add([path])
        assert not info.fits and info.tokens > 10 * small.context_size
        answer = small.documents.ask([info.id], "What is the secret code of the vault?", params=G)
        r = answer.wait()
        assert answer.meta.mode == "retrieval" and r.finish_reason in ("stop", "length")
        assert answer.meta.sources and r.prompt_tokens < small.context_size
        line = next(i for i, text in enumerate(path.read_text().splitlines(), 1) if "PELICAN" in text)
        top = answer.meta.sources[0]
        start, end = [int(x) for x in top.cite.split("lines ")[1].split("-")] if "-" in top.cite else \
            (int(top.cite.split("line ")[1]),) * 2
        assert start <= line <= end, (top.cite, line)
        assert "PELICAN-4417" in small.detokenize(answer.request.prompt)  # the planted passage is in the prompt
    finally:
        small.close()


def test_a_conversation_with_a_document_pins_it(p, doc):
    conv = p.conversations.create(document_ids=[doc.id], defaults=G)
    p.documents.warm([doc.id])
    reply = p.conversations.send(conv.id, "Who wrote the report?")
    r = reply.wait()
    assert r.cached_tokens >= doc.tokens - 8  # the document's system turn came from the pinned prefix
    second = p.conversations.send(conv.id, "And the roof?").wait()
    assert second.cached_tokens >= r.prompt_tokens
