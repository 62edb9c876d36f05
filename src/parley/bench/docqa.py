"""docqa: questions about one document loaded into model memory, before and after a process restart (issue #11).

A made-up ~6,000-token Markdown document (document(): sections of content.py sentences with facts planted at
even intervals, each fact the answer to one question) is written under the run's temporary PARLEY_HOME. One
shared PARLEY_HOME and two processes in turn, each holding three sides on the same model and threads:
    parley     Parley.documents (default tiers: RAM, and disk under $PARLEY_HOME/kv): add(file), then per
               question ask(id, question); the first question of each process is warm(id) + ask, timed together
               (warm pins the document's prefix: read once in process 1, and written to the disk tier at once)
    naive (a)  the very same prompt ids (the document's system turn + the question) on a second parley whose
               idle sequences are dropped before every request: the document is re-read for every question
    Llama (b)  the same prompt ids to llama-cpp-python's Llama (live context + a 1 GiB LlamaRAMCache); its cache
               lives in RAM, so after the restart it starts cold like any new process
    first   `questions` questions, the sides one after another per question (order rotating); then the process
            ends with Parley.close() (save=True, as `parley ask` does on exit)
    second  a new process: add(the same file) again, warm() (must restore the document from disk: cache_source
            "disk", ~0 tokens prefilled), `questions` more questions as above; then, with the baselines closed,
            `side_by_side` new questions asked one after another (ask + wait) and side by side (ask_many), the
            idle question sequences dropped before each run so both start from the pinned document alone, in
            alternating order `reps` times; last, one more side-by-side run while Parley.stats() is sampled for
            the KV cells in use (parley's ledger): the document's cells should be held once
Sampling: greedy, no penalties, ignore_eos, `max_tokens` per answer (Llama: logit_bias -inf on the model's
end-of-generation tokens), so every side generates the same number of tokens.
Run as `python -m parley.bench.docqa first|second SPEC OUT` by the scenario itself.
"""

from __future__ import annotations

import json
import os
import random
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path

from parley.bench.common import (
    WORKER_LOG_PREFIX,
    BenchContext,
    NaiveRunner,
    Row,
    ScenarioResult,
    Timed,
    greedy,
    make_llama,
    median,
    now,
    rotate,
    run_worker,
    settle,
    timed_stream,
    warm_up_llama,
    warm_up_parley,
)
from parley.bench.content import ADJS, NAMES, NOUNS, PLACES, Tokenize, _sentence
from parley.bench.multiturn import LLAMA_CACHE_BYTES

WHAT = ("TTFT per question about a ~6,000-token document, before and after a process restart, vs re-prefill and "
        "Llama's prompt cache; questions side by side vs one after another; the document's KV held once")
N_CTX = 8192
WORKER_TIMEOUT_S = 900
LOG_PREFIX = WORKER_LOG_PREFIX
KV_BUDGET = 1.5          # the document's KV held once: cells in use <= this many times the document's tokens
SIDES = ("parley", "naive", "llama")
BASELINES = {"naive": "naive re-prefill (a)", "llama": "Llama + prompt cache (b)"}


@dataclass(frozen=True)
class Sizes:
    doc_tokens: int     # the document's text (its prompt prefix adds the instructions and the chat template)
    questions: int      # per process: before the restart, and as many after it
    side_by_side: int   # questions asked at once (ask_many) vs one after another
    max_tokens: int     # per answer (ignore_eos: exactly this many)
    reps: int           # side-by-side / one-after-another pairs
    naive_first: bool   # the naive side also reads question 1 (a full read on every side: quick runs skip it)


FULL = Sizes(doc_tokens=6000, questions=5, side_by_side=5, max_tokens=16, reps=3, naive_first=True)
QUICK = Sizes(doc_tokens=1500, questions=2, side_by_side=5, max_tokens=16, reps=2, naive_first=False)


def _say(msg: str) -> None:
    print(f"{LOG_PREFIX}docqa: {msg}", file=sys.stderr, flush=True)


# ---- the document ----------------------------------------------------------------------------------------
def _plural(noun: str) -> str:
    return noun + ("es" if noun.endswith(("s", "sh", "ch", "x")) else "s")


def facts(seed: int, n: int) -> list[tuple[str, str]]:
    """n (sentence, question) pairs: each question is answered by its sentence alone."""
    rng = random.Random(seed * 31 + 7)
    combos = rng.sample([(noun, place) for noun in NOUNS for place in PLACES], n)
    out = []
    for i, (noun, place) in enumerate(combos):
        name, teacher = rng.sample(NAMES, 2)
        if i % 3 == 0:
            year = rng.randrange(1520, 1990)
            out.append((f"The {noun} of {place} was made by {name} in {year}.",
                        f"Who made the {noun} of {place}, and in which year?"))
        elif i % 3 == 1:
            count = rng.randrange(3, 900)
            out.append((f"According to the survey, {place} holds exactly {count} {_plural(noun)}.",
                        f"According to the survey, how many {_plural(noun)} does {place} hold?"))
        else:
            out.append((f"The {noun} of {place} is kept by {name}, who learned the trade from {teacher}.",
                        f"Who keeps the {noun} of {place}, and who taught them the trade?"))
    return out


def document(seed: int, n_tokens: int, planted: Sequence[tuple[str, str]], tokenize: Tokenize) -> str:
    """About n_tokens tokens of Markdown: a title, sections of 3-6-sentence paragraphs (content.py's sentences),
    the planted facts spread evenly through it (fact i near token (i + 0.5) * n_tokens / len(planted))."""
    rng = random.Random(seed)
    blocks = [f"# The {rng.choice(ADJS)} chronicle of {rng.choice(PLACES)} (record {seed})",
              "This record collects what the keepers wrote down over the years: who made what, who keeps it now, "
              "and what the surveys counted. Later sections repeat older stories as they were told."]
    used = sum(len(tokenize(b)) + 1 for b in blocks)
    next_fact, section = 0, 0
    per_fact = n_tokens / max(1, len(planted))
    while used < n_tokens or next_fact < len(planted):
        if len(blocks) % 5 == 2:
            section += 1
            blocks.append(f"## {section}. {rng.choice(PLACES).capitalize()}")
        else:
            sentences = [_sentence(rng) for _ in range(rng.randrange(3, 7))]
            while next_fact < len(planted) and used >= (next_fact + 0.5) * per_fact - 60:
                sentences.insert(rng.randrange(len(sentences) + 1), planted[next_fact][0])
                next_fact += 1
            blocks.append(" ".join(sentences))
        used += len(tokenize(blocks[-1])) + 1
    return "\n\n".join(blocks) + "\n"


# ---- timed requests ----------------------------------------------------------------------------------------
def timed_ask(docs, doc_id: str, question: str, params, *, warm: bool = False):
    """One question through the facade, timed from the call to its first text (with warm: from the warm()
    call, so the document's read or restore is part of the first question's TTFT)."""
    t0 = now()
    warmed = docs.warm([doc_id]) if warm else None
    warm_s = now() - t0
    answer = docs.ask([doc_id], question, params=params)
    t = timed_stream(answer, t0, "parley's answer")
    return t, answer, warmed, warm_s


def timed_llama(llama, tokens: Sequence[int], max_tokens: int, no_eog: dict[int, float],
                stop: Sequence[str]) -> Timed:
    """One greedy completion through Llama.create_completion (live-context reuse and its prompt cache apply),
    end-of-generation tokens banned so it generates max_tokens like the other sides."""
    t0 = now()
    first = None
    n = 0
    for chunk in llama.create_completion(list(tokens), max_tokens=max_tokens, temperature=0.0, repeat_penalty=1.0,
                                         stream=True, logit_bias=no_eog, stop=list(stop)):
        if chunk["choices"][0].get("finish_reason") is None:  # one chunk per token; the last one closes
            n += 1
            if first is None:
                first = now()
    end = now()
    return Timed((first or end) - t0, end - t0, n, len(tokens))


def _warm(warmed) -> dict | None:
    if warmed is None:
        return None
    return {"cache_source": warmed.cache_source, "cached_tokens": warmed.cached_tokens,
            "prefilled_tokens": warmed.prefilled_tokens, "prompt_tokens": warmed.prompt_tokens,
            "ttft_s": round(warmed.ttft_s, 4)}


# ---- the two worker processes ------------------------------------------------------------------------------
class _Sides:
    """parley, the naive runner and Llama in one process, warmed up, asking the same prompts."""

    def __init__(self, spec: dict):
        from llama_cpp import LlamaRAMCache

        from parley.api import Parley

        ctx = BenchContext(model=Path(spec["model"]), threads=spec["threads"], quick=True,
                           home=Path(os.environ["PARLEY_HOME"]))
        t0 = now()
        self.p = Parley(spec["model"], threads=spec["threads"], kv_size=N_CTX)
        self.startup_s = now() - t0
        self.naive = self.llama = None
        try:
            self.naive = NaiveRunner(ctx, N_CTX)
            self.llama = make_llama(ctx, N_CTX)
            warm_up_parley(self.p)
            warm_up_parley(self.naive.parley)
            warm_up_llama(self.llama)
            self.llama.set_cache(LlamaRAMCache(capacity_bytes=LLAMA_CACHE_BYTES))
        except BaseException:
            self.close_baselines()
            self.p.close(save=False)
            raise
        self.stops = tuple(self.p.chat_stops)
        self.params = greedy(spec["max_tokens"], self.stops).replace(ignore_eos=True)
        self.no_eog = {int(t): float("-inf") for t in self.p.engine.eog_ids}
        self.max_tokens = spec["max_tokens"]

    def prompt(self, doc_id: str, question: str) -> list[int]:
        """The prompt ids Documents.ask builds: the document's system turn, then the question (checked)."""
        messages = [{"role": "system", "content": self.p.documents.pinned_text([doc_id])},
                    {"role": "user", "content": question}]
        return self.p.chat_prompt(messages, max_tokens=self.max_tokens).tokens

    def questions(self, doc_id: str, questions: list[str], offset: int, label: str, naive_first: bool = True
                  ) -> list[dict]:
        out = []
        for k, q in enumerate(questions):
            tokens = self.prompt(doc_id, q)
            row: dict = {"question": q, "prompt_tokens": len(tokens)}
            sides = [s for s in SIDES if naive_first or k > 0 or s != "naive"]
            for side in rotate(sides, k + offset):
                settle()
                if side == "parley":
                    t, answer, warmed, warm_s = timed_ask(self.p.documents, doc_id, q, self.params, warm=k == 0)
                    if list(answer.request.prompt) != tokens:
                        raise RuntimeError("Documents.ask built a different prompt than the bench's chat_prompt")
                    row.update(prefix_tokens=answer.meta.prefix_tokens, answer=answer.result.text)
                    if k == 0:
                        row.update(warm=_warm(warmed), warm_s=warm_s)
                elif side == "naive":
                    t = self.naive.run(tokens, self.params)
                else:
                    t = timed_llama(self.llama, tokens, self.max_tokens, self.no_eog, self.stops)
                row[side] = t.as_dict()
            out.append(row)
            _say(f"{label} question {k + 1}/{len(questions)} ({len(tokens)} tokens): "
                 + ", ".join(f"{s} {row[s]['ttft_s'] * 1000:.0f} ms" for s in sides)
                 + f" (parley: {row['parley']['cached_tokens']} cached"
                 + (f"; warm: {row['warm']['cache_source']}, {row['warm']['prefilled_tokens']} read"
                    if row.get("warm") else "") + ")")
        return out

    def close_baselines(self) -> None:
        if self.llama is not None:
            self.llama.close()
            self.llama = None
        if self.naive is not None:
            self.naive.close()
            self.naive = None


def _kv_files() -> tuple[int, int]:
    files = [f.stat().st_size for f in (Path(os.environ["PARLEY_HOME"]) / "kv").rglob("*.kv")]
    return len(files), sum(files)


def _first(spec: dict) -> dict:
    sides = _Sides(spec)
    p = sides.p
    closed = False
    try:
        planted = facts(spec["seed"], spec["facts"])
        text = document(spec["seed"], spec["doc_tokens"], planted, p.tokenize)
        path = Path(spec["doc_path"])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        info = p.documents.add([path])
        if not info.fits:
            raise RuntimeError(f"the {info.tokens}-token document does not fit the context ({p.context_size})")
        _say(f"document: {info.tokens} prompt tokens ({len(text)} characters, {len(planted)} facts)")
        questions = [q for _, q in planted]
        rows = sides.questions(info.id, questions[:spec["questions"]], 0, "before the restart:",
                               spec["naive_first"])
        sides.close_baselines()
        t0 = now()
        p.close()  # save=True: what `parley ask` does on exit (idle question sequences go to the disk tier too)
        closed = True
        close_s = now() - t0
    finally:
        sides.close_baselines()
        if not closed:
            p.close(save=False)
    files, size = _kv_files()
    return {"document_id": info.id, "document_tokens": info.tokens, "document_chars": len(text),
            "facts": planted, "questions": rows, "startup_s": sides.startup_s, "close_s": close_s,
            "kv_files": files, "kv_bytes": size}


def _side_by_side(p, doc_id: str, questions: list[str], params, reps: int) -> dict:
    """Wall time of the questions asked one after another vs side by side, from the pinned document alone."""
    docs = p.documents
    runs: dict[str, list[float]] = {"sequential": [], "side_by_side": []}
    answers: dict[str, list[str]] = {}
    for r in range(reps):
        for mode in rotate(["sequential", "side_by_side"], r):
            p.scheduler.drop_cached(save=False)  # the previous run's question sequences: both start the same
            settle()
            t0 = now()
            if mode == "sequential":
                results = [docs.ask([doc_id], q, params=params).wait() for q in questions]
            else:
                results = [a.wait() for a in docs.ask_many([doc_id], questions, params=params)]
            runs[mode].append(now() - t0)
            if any(x.finish_reason == "error" for x in results):
                raise RuntimeError(f"a {mode} answer failed: {[x.error for x in results if x.error]}")
            answers.setdefault(mode, [x.text for x in results])
        _say(f"side by side, repetition {r + 1}/{reps}: {len(questions)} questions one after another "
             f"{runs['sequential'][-1] * 1000:.0f} ms, side by side {runs['side_by_side'][-1] * 1000:.0f} ms")
    same = sum(a == b for a, b in zip(answers["sequential"], answers["side_by_side"], strict=True))
    return {**runs, "identical_answers": same}


def _kv_sampled(p, doc_id: str, questions: list[str], params) -> dict:
    """One more side-by-side run, Parley.stats() sampled while it runs: the KV cells in use."""
    p.scheduler.drop_cached(save=False)
    before = p.stats()
    done = threading.Event()
    answers = p.documents.ask_many([doc_id], questions, params=params)
    waiter = threading.Thread(target=lambda: ([a.wait() for a in answers], done.set()), daemon=True)
    waiter.start()
    samples = []
    while not done.is_set():
        st = p.stats()
        samples.append((st.kv_cells_used, st.running, st.live_sequences))
        time.sleep(0.005)
    waiter.join()
    after = p.stats()
    samples.append((after.kv_cells_used, after.running, after.live_sequences))
    results = [a.result for a in answers]
    own = [a.meta.prompt_tokens - a.meta.prefix_tokens + r.generated_tokens
           for a, r in zip(answers, results, strict=True)]
    return {"cells_before": before.kv_cells_used, "pinned_sequences": before.pinned_sequences,
            "cells_peak": max(s[0] for s in samples), "cells_after": after.kv_cells_used,
            "running_peak": max(s[1] for s in samples), "live_sequences_peak": max(s[2] for s in samples),
            "samples": len(samples), "prefix_tokens": answers[0].meta.prefix_tokens,
            "question_and_answer_tokens": own}


def _second(spec: dict, first: dict) -> dict:
    sides = _Sides(spec)
    p = sides.p
    try:
        info = p.documents.add([Path(spec["doc_path"])])  # as `parley ask FILE` does in a new process
        questions = [q for _, q in first["facts"]]
        n = spec["questions"]
        rows = sides.questions(info.id, questions[n:2 * n], 1, "after the restart:")
        sides.close_baselines()
        extra = questions[2 * n:2 * n + spec["side_by_side"]]
        sbs = _side_by_side(p, info.id, extra, sides.params, spec["reps"])
        kv = _kv_sampled(p, info.id, extra, sides.params)
        stats = p.stats()
    finally:
        sides.close_baselines()
        p.close(save=False)
    return {"document_id": info.id, "document_tokens": info.tokens, "questions": rows,
            "startup_s": sides.startup_s, "side_by_side": sbs, "kv": kv,
            "cache_counters": asdict(stats.cache) if is_dataclass(stats.cache) else None}


def main(argv: list[str]) -> int:
    phase, spec_path, out_path = argv
    spec = json.loads(Path(spec_path).read_text())
    if phase == "first":
        result = _first(spec)
    elif phase == "second":
        result = _second(spec, json.loads(Path(spec["first"]).read_text()))
    else:
        raise SystemExit(f"unknown phase {phase!r}; known: first, second")
    Path(out_path).write_text(json.dumps(result))
    return 0


# ---- the scenario ----------------------------------------------------------------------------------------
def _worker(ctx: BenchContext, phase: str, spec_path: Path, out_path: Path, home: Path) -> dict:
    return run_worker(ctx, "parley.bench.docqa", phase, spec_path, out_path, home, WORKER_TIMEOUT_S)


def _range(a: int, b: int) -> str:
    return f"question {a}" if a == b else f"questions {a}-{b}"


def run(ctx: BenchContext) -> ScenarioResult:
    sz = QUICK if ctx.quick else FULL
    res = ScenarioResult("docqa", WHAT, config={**asdict(sz), "n_ctx": N_CTX, "threads": ctx.threads,
                                                "llama_ram_cache_bytes": LLAMA_CACHE_BYTES,
                                                "sampling": "greedy, no penalties, ignore_eos",
                                                "kv_budget_x_document": KV_BUDGET})
    home = ctx.home / "docqa"
    home.mkdir(parents=True)
    spec = {"model": str(ctx.model), "threads": ctx.threads, "seed": ctx.seed + 500, **asdict(sz),
            "facts": 2 * sz.questions + sz.side_by_side, "doc_path": str(home / "docs" / "chronicle.md"),
            "first": str(home / "first.json")}
    spec_path = home / "spec.json"
    spec_path.write_text(json.dumps(spec))
    first = _worker(ctx, "first", spec_path, home / "first.json", home)
    second = _worker(ctx, "second", spec_path, home / "second.json", home)

    n = sz.questions
    qs = first["questions"] + second["questions"]
    for i, q in enumerate(qs):
        q["number"] = i + 1
    doc = first["document_tokens"]
    res.config["document_tokens"] = doc
    warm_after = second["questions"][0].get("warm") or {}
    sbs, kv = second["side_by_side"], second["kv"]
    own = kv["question_and_answer_tokens"]
    prefix = kv["prefix_tokens"]
    expected = prefix + sum(own)
    copies = len(own) * prefix + sum(own)
    res.data = {
        "document": {"tokens": doc, "chars": first["document_chars"], "prefix_tokens": prefix,
                     "same_id_after_restart": first["document_id"] == second["document_id"],
                     "facts": [f for f, _ in first["facts"]]},
        "first_process": {k: first[k] for k in ("startup_s", "close_s", "kv_files", "kv_bytes", "process_s")},
        "second_process": {"startup_s": second["startup_s"], "process_s": second["process_s"],
                           "cache_counters": second["cache_counters"]},
        "warm_after_restart": warm_after,
        "questions": qs,
        "side_by_side": sbs,
        "kv": {**kv, "cells_peak_x_document": kv["cells_peak"] / prefix if prefix else None,
               "expected_shared": expected, "one_copy_per_question": copies},
    }

    # the restart must bring the document back from disk
    source, prefilled = warm_after.get("cache_source"), warm_after.get("prefilled_tokens")
    if source != "disk" or prefilled is None or prefilled > max(8, doc // 100):
        res.notes.append(f"BUG: after the restart the document was NOT restored from disk: warm() reported "
                         f"cache_source={source!r}, {warm_after.get('cached_tokens')} cached and {prefilled} "
                         f"prefilled of {warm_after.get('prompt_tokens')} tokens (the first process wrote "
                         f"{first['kv_files']} KV files, {first['kv_bytes'] / 2**20:.0f} MiB)")
    else:
        res.notes.append(f"after the restart warm() restored the document from disk: {warm_after['cached_tokens']} "
                         f"tokens cached, {prefilled} prefilled, {second['questions'][0]['warm_s'] * 1000:.0f} ms")
    gen = {s: sorted({q[s]["generated"] for q in qs if s in q}) for s in SIDES}
    if any(g != [sz.max_tokens] for g in gen.values()):
        res.notes.append(f"generated tokens per answer differ from max_tokens={sz.max_tokens}: {gen}")
    slow = [(q["number"], round(q["naive"]["ttft_s"] / q["parley"]["ttft_s"], 1))
            for i, q in enumerate(qs) if i > 0 and q["parley"]["ttft_s"] * 10 > q["naive"]["ttft_s"]]
    if slow:
        res.notes.append(f"questions under 10x faster than re-prefill (question, ratio): {slow}")
    res.notes.append(f"KV cells in use while {len(own)} questions ran side by side: at most {kv['cells_peak']}, "
                     f"{kv['cells_peak'] / prefix:.2f}x the document's {prefix}-token prefix (held once: "
                     f"{expected}; one copy per question: {copies})")
    res.notes.append(f"side by side: {sbs['identical_answers']} of {len(own)} greedy answers identical to the "
                     "one-after-another ones (batching may change the last bits)")

    def row(metric: str, idx: range, base: str, **kw) -> Row:
        pairs = [(qs[i]["parley"]["ttft_s"], qs[i][base]["ttft_s"]) for i in idx]
        return Row(metric, "s", median([a for a, _ in pairs]), BASELINES[base], median([b for _, b in pairs]),
                   False, pairs=pairs, **kw)

    before, after, q1 = range(1, n), range(n, 2 * n), range(0, 1)
    first_after = range(n, n + 1)
    res.rows = [row("TTFT, question 1 (document read)", q1, "naive")] if sz.naive_first else []
    res.rows += [row("TTFT, question 1 (document read)", q1, "llama")]
    if n > 1:
        res.rows += [row(f"TTFT, {_range(2, n)} (before restart)", before, "naive", target=10),
                     row(f"TTFT, {_range(2, n)} (before restart)", before, "llama")]
    res.rows += [
        row("TTFT, questions after the restart", after, "naive", target=10),
        row("TTFT, questions after the restart", after, "llama"),
        row(f"TTFT, first question after the restart ({n + 1}, document from disk)", first_after, "naive",
            target=10),
        row(f"TTFT, first question after the restart ({n + 1}, document from disk)", first_after, "llama"),
        Row(f"wall time, {len(own)} questions side by side (ask_many)", "s", median(sbs["side_by_side"]),
            f"the same {len(own)} one after another (ask)", median(sbs["sequential"]), False, target=2,
            pairs=list(zip(sbs["side_by_side"], sbs["sequential"], strict=True)),
            note="ratio = one after another / side by side: target 2 = side by side in at most 0.5x the time"),
        Row(f"KV cells in use, {len(own)} questions side by side (peak)", "cells", kv["cells_peak"],
            f"{KV_BUDGET:g} x the document ({prefix} tokens)", round(KV_BUDGET * prefix), False, target=1,
            note=f"{kv['cells_peak'] / prefix:.2f}x the document; held once: {expected} (document + "
                 f"{len(own)} x (question + answer)); one copy per question: {copies}"),
        Row(f"KV cells in use, {len(own)} questions side by side (peak)", "cells", kv["cells_peak"],
            f"one copy of the document per question ({len(own)} x)", copies, False),
    ]
    return res


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
