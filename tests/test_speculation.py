"""Speculative decoding from the context: n-gram drafts verified in one batched decode.

The unit tests pin the lookup and the cost rule; the model tests run the embedded model in deterministic mode
(batch-invariant logits), where verifying a draft must give exactly the tokens one decode per token gives,
greedy and seeded sampling alike, and leave the KV holding exactly what the reply says."""

from __future__ import annotations

import pytest

from parley.sampling import SamplingParams
from parley.scheduler.ngram import NgramIndex
from parley.scheduler.speculation import Acceptance, BatchCost, draft_length
from tests.conftest import chatml


def test_the_index_proposes_what_followed_the_latest_earlier_occurrence():
    idx = NgramIndex([1, 2, 3, 4, 5, 9, 1, 2, 3])
    assert idx.propose(3) == ([4, 5, 9], 3)
    assert idx.propose(1) == ([4], 3)
    idx.append(7)                      # suffix 2 3 7: never seen
    assert idx.propose(4) == ([], 0)
    for t in (1, 2, 3):
        idx.append(t)                  # 7 1 2 3: "1 2 3" last seen followed by 7 now
    assert idx.propose(2) == ([7, 1], 3)   # 9 before that "1 2 3", 7 before this one: a match of 3
    assert NgramIndex([5, 5]).propose(3) == ([], 0)   # shorter than any gram


def test_the_longest_gram_wins_and_the_match_is_measured_back():
    # the 4-gram "0 1 2 3" points at the early occurrence, though "1 2 3" occurred later
    idx = NgramIndex([0, 1, 2, 3, 4, 6, 1, 2, 3, 8, 0, 1, 2, 3])
    assert idx.propose(1) == ([4], 4)
    assert NgramIndex([6, 1, 2, 3, 4, 7, 1, 2, 3, 8, 5, 1, 2, 3]).propose(1) == ([8], 3)  # 3-gram: the latest
    run = list(range(40, 60))
    copying = NgramIndex([*run, 99, *run[:12]])   # a reply 12 tokens into copying a run
    assert copying.propose(3) == ([52, 53, 54], 12)


def test_the_cost_interpolates_and_extrapolates_measured_sizes():
    c = BatchCost()
    acc = Acceptance()
    assert c(1) is None and draft_length(c, 1, 1.0, acc, 30, 8) == 0   # nothing measured: never draft
    c.record(1, 10.0)
    assert c(1) == 10.0 and c(5) == pytest.approx(10.0 + 4 * 3.5)  # the prior slope
    c.record(9, 50.0)
    assert c(5) == pytest.approx(30.0) and c(13) == pytest.approx(50.0 + 4 * 3.5)  # optimistic past 9
    c.record(1, 20.0)                                  # an average, not the last value
    assert 10.0 < c(1) < 20.0


def _learned(short_right: bool, long_right: bool) -> Acceptance:
    """An Acceptance that has seen drafts after 3-token matches always (or never) come true, and after 30-token
    matches the same."""
    acc = Acceptance()
    for _ in range(400):
        acc.record(3, int(short_right), 1)
        acc.record(30, int(long_right), 1)
    return acc


def test_drafting_only_where_it_pays():
    sure = _learned(True, True)
    linear = BatchCost()
    for n in (1, 2, 4, 8, 16):
        linear.record(n, float(n))
    # every row costs what a decode of one costs: even drafts that always come true only break even
    assert draft_length(linear, 1, 1.0, sure, 30, 16) == 0
    flat = BatchCost()
    for n in (1, 17):
        flat.record(n, 1.0)
    assert draft_length(flat, 1, 1.0, sure, 30, 16) == 16
    assert draft_length(flat, 1, 1.0, sure, 30, 5) == 5
    q8 = BatchCost()                                   # about what a Q8_0 copy measures: 8 rows cost 3x one
    for n, t in ((1, 1.0), (4, 2.0), (8, 3.0), (16, 5.0)):
        q8.record(n, t)
    chance = _learned(False, True)                        # short matches never come true, long ones always
    assert draft_length(q8, 1, 1.0, chance, 3, 16) == 0
    assert draft_length(q8, 1, 1.0, chance, 30, 16) >= 8
    assert Acceptance().expected(3, 2) == pytest.approx(1 + 0.25 + 0.25 * 0.35)   # the priors: 3, then 4


def test_acceptance_learns_by_match_length_and_forgets():
    acc = Acceptance()
    acc.record(9, right=4, tried=4)        # matches 9..12 came true
    assert acc.rate(9) > acc.rate(3)
    acc.record(3, right=0, tried=1)
    assert acc.rate(3) < 0.25
    for _ in range(1000):                  # a long run of misses, then the tide turns
        acc.record(25, 0, 1)
    assert acc.rate(25) < 0.01
    for _ in range(300):
        acc.record(25, 1, 1)
    assert acc.rate(25) > 0.5


class _Flat(BatchCost):
    """A cost under which every draft pays (as on a GPU): the model tests must verify drafts whatever this CPU
    measures; whether drafting pays here is the bench's question."""

    def record(self, n: int, seconds: float) -> None:
        pass

    def __call__(self, n: int) -> float:
        return 1.0


COPY = ("Repeat this sentence exactly: the quick brown fox jumps over the lazy dog and runs into the old forest "
        "behind the farm.")
LIST = ("Copy this list exactly, one per line:\nalpha beacon cedar delta ember fjord granite harbor iris juniper "
        "kestrel lantern meadow nectar orchid")  # greedy, the model repeats its own sentences instead


def _run(det, prompts, params, *, draft: int):
    sched = det.scheduler
    sched.drop_cached(save=False)
    sched.tune(draft_max=draft)
    return [sched.generate(p, params) for p in prompts]


@pytest.fixture
def spec(det):
    sched = det.scheduler
    before = sched.cost
    sched.cost = _Flat()
    try:
        yield det
    finally:
        sched.tune(draft_max=0)
        sched.cost = before


@pytest.mark.parametrize("params", [
    SamplingParams(temperature=0, max_tokens=40),
    SamplingParams(temperature=0.9, seed=7, max_tokens=40),
    SamplingParams(temperature=0.3, seed=3, repeat_penalty=1.05, max_tokens=40, logprobs=2),
], ids=["greedy", "sampled", "penalised-logprobs"])
def test_verified_drafts_give_the_tokens_plain_decoding_gives(spec, params):
    eng = spec.engine
    prompts = [eng.tokenize(chatml(COPY)), eng.tokenize(chatml(LIST))]
    t0 = spec.scheduler.stats().totals
    plain = _run(spec, prompts, params, draft=0)
    t1 = spec.scheduler.stats().totals
    assert t1.drafted_tokens == t0.drafted_tokens
    drafted = _run(spec, prompts, params, draft=16)
    t2 = spec.scheduler.stats().totals
    assert t2.drafted_tokens > t1.drafted_tokens, "nothing was drafted: the test shows nothing"
    assert t2.accepted_tokens > t1.accepted_tokens
    for a, b in zip(plain, drafted, strict=True):
        assert b.token_ids == a.token_ids
        assert b.text == a.text and b.finish_reason == a.finish_reason
        if params.logprobs is not None:
            assert [x.logprob for x in b.logprobs] == [x.logprob for x in a.logprobs]
            assert len(b.logprobs) == len(b.token_ids)


def test_after_drafts_the_kv_holds_what_the_reply_says(spec):
    """A stop string and max_tokens end replies mid-draft; the next turn reuses the cached sequence, so a cell
    left from a rejected draft would change what it reads. Each turn must equal the same turn decoded plainly."""
    eng = spec.engine
    greedy = SamplingParams(temperature=0, max_tokens=24, stop=("forest",))

    def turns(draft: int) -> list[list[int]]:
        sched = spec.scheduler
        sched.drop_cached(save=False)
        sched.tune(draft_max=draft)
        prompt = eng.tokenize(chatml(COPY))
        before = sched.stats().totals
        out = []
        for follow in ("Again, please.", "Once more, the same list."):
            r = sched.generate(prompt, greedy)
            out.append(r.token_ids)
            prompt = prompt + r.token_ids + eng.tokenize(f"<|im_end|>\n{chatml(follow)}")
        r = sched.generate(prompt, SamplingParams(temperature=0, max_tokens=24))
        out.append(r.token_ids)
        assert r.cached_tokens > len(prompt) // 2   # the sequence was reused, not re-read
        after = sched.stats().totals
        if draft:   # some drafts were right and some wrong: both kinds of cells were there to get wrong
            assert after.accepted_tokens > before.accepted_tokens
            assert after.drafted_tokens - after.accepted_tokens > before.drafted_tokens - before.accepted_tokens
        return out

    assert turns(16) == turns(0)


def test_a_grammar_request_never_drafts(spec):
    from parley.sampling import Grammar

    eng = spec.engine
    before = spec.scheduler.stats().totals.drafted_tokens
    r = _run(spec, [eng.tokenize(chatml("Give the list as JSON: " + COPY))],
             SamplingParams(temperature=0, max_tokens=24, grammar=Grammar("json_object", "")), draft=16)[0]
    assert r.finish_reason in ("stop", "length")
    assert spec.scheduler.stats().totals.drafted_tokens == before
