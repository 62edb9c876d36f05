"""The llama.cpp engine with the real embedded model: determinism, batching, per-sequence KV operations."""

from __future__ import annotations

import numpy as np
import pytest

from parley.engine.llamacpp import EngineConfig, LlamaCppEngine
from parley.errors import InvalidRequest, ModelError
from parley.sampling import SamplingParams
from tests.conftest import chatml

GREEDY = SamplingParams(temperature=0, repeat_penalty=1.0, max_tokens=12)


def greedy_continue(engine, seq: int, tokens: list[int], start: int, n: int) -> list[int]:
    """Decode `tokens[start:]` into `seq` (which holds tokens[:start]) then n greedy tokens; return them."""
    rest = tokens[start:]
    engine.decode(rest, list(range(start, len(tokens))), [seq] * len(rest), [False] * (len(rest) - 1) + [True])
    sampler = engine.make_sampler(GREEDY)
    out, pos, idx = [], len(tokens), len(rest) - 1
    try:
        for _ in range(n):
            t = engine.sample(sampler, idx)
            out.append(t)
            engine.decode([t], [pos], [seq], [True])
            pos, idx = pos + 1, 0
    finally:
        sampler.close()
    return out


@pytest.fixture(scope="module")
def bare():
    """An engine no scheduler owns (deterministic, as the session's `det`), driven here from the test's thread:
    the scheduler's engine belongs to the scheduler's thread, which runs only its own tasks."""
    engine = LlamaCppEngine(EngineConfig(n_ctx=1024, deterministic=True))
    yield engine
    engine.close()


@pytest.fixture()
def clean(bare):
    """A scratch engine state: tests here drive sequences 40..47 directly."""
    seqs = list(range(40, 48))
    for s in seqs:
        bare.kv_remove(s)
    yield seqs
    for s in seqs:
        bare.kv_remove(s)


def test_model_facts(engine):
    assert engine.name == "SmolLM2-135M-Instruct"
    assert engine.n_vocab == 49152
    assert "<|im_start|>" in engine.chat_template
    assert engine.eos_text == "<|im_end|>"
    assert engine.is_eog(engine.eos_id)


def test_tokenize_round_trip(engine):
    text = "Hello, wörld! 日本語 🎉"
    assert engine.detokenize(engine.tokenize(text, special=False)) == text
    ids = engine.tokenize("<|im_start|>user\nhi<|im_end|>")
    assert ids[0] == engine.bos_id and engine.eos_id in ids


def test_greedy_is_deterministic(bare, clean):
    engine = bare
    prompt = engine.tokenize(chatml("Name a colour."))
    a = greedy_continue(engine, 40, prompt, 0, 12)
    engine.kv_remove(40)
    b = greedy_continue(engine, 40, prompt, 0, 12)
    assert a == b and len(a) == 12


def test_fork_shares_a_prefix(bare, clean):
    """kv_copy forks positions [0, n) zero-copy; both sequences continue exactly as a fresh one would."""
    engine = bare
    prompt = engine.tokenize(chatml("Count from one to five."))
    n = len(prompt) - 3
    fresh = greedy_continue(engine, 40, prompt, 0, 8)
    engine.kv_remove(40)
    engine.decode(prompt[:n], list(range(n)), [41] * n, [False] * n)
    engine.kv_copy(41, 42, 0, n)
    forked = greedy_continue(engine, 42, prompt, n, 8)
    original = greedy_continue(engine, 41, prompt, n, 8)
    assert forked == fresh and original == fresh


def test_trim_and_extend(bare, clean):
    """Removing the tail of a sequence and reading different tokens gives what a fresh prefill gives."""
    engine = bare
    a = engine.tokenize(chatml("Say yes."))
    b = engine.tokenize(chatml("Say no."))
    common = next(i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y)
    ref = greedy_continue(engine, 40, b, 0, 6)
    engine.decode(a, list(range(len(a))), [41] * len(a), [False] * len(a))
    engine.kv_remove(41, common, -1)
    assert engine.kv_pos_max(41) == common - 1
    assert greedy_continue(engine, 41, b, common, 6) == ref


def test_state_bytes_round_trip(bare, clean):
    """A sequence saved to bytes, dropped and restored continues token for token."""
    engine = bare
    prompt = engine.tokenize(chatml("Tell me about the sea."))
    split = len(prompt) - 2
    ref = greedy_continue(engine, 40, prompt, 0, 8)
    engine.decode(prompt[:split], list(range(split)), [41] * split, [False] * split)
    data = bytes(engine.state_get(41))
    engine.kv_remove(41)
    assert engine.kv_pos_max(41) == -1
    engine.state_set(43, data)
    assert engine.kv_pos_max(43) == split - 1
    assert greedy_continue(engine, 43, prompt, split, 8) == ref
    assert len(data) > 1000 * split  # ~23 KB per token for this model: the KV really travelled


def test_batched_decode_matches_alone(bare, clean):
    """Several sequences decoded in one batch give the same greedy tokens as each decoded alone."""
    engine = bare
    prompts = [engine.tokenize(chatml(q)) for q in ("Name a fruit.", "Name a city.", "Name a planet.")]
    alone = []
    for p in prompts:
        alone.append(greedy_continue(engine, 40, p, 0, 10))
        engine.kv_remove(40)
    toks, pos, seqs, flags, last = [], [], [], [], []
    for i, p in enumerate(prompts):
        toks += p
        pos += range(len(p))
        seqs += [44 + i] * len(p)
        flags += [False] * (len(p) - 1) + [True]
        last.append(len(toks) - 1)
    engine.decode(toks, pos, seqs, flags)
    samplers = [engine.make_sampler(GREEDY) for _ in prompts]
    cur = [engine.sample(s, i) for s, i in zip(samplers, last, strict=True)]
    batched = [[t] for t in cur]
    npos = [len(p) for p in prompts]
    for _ in range(9):
        engine.decode(cur, npos, [44, 45, 46], [True] * 3)
        cur = [engine.sample(s, i) for i, s in enumerate(samplers)]
        for o, t in zip(batched, cur, strict=True):
            o.append(t)
        npos = [n + 1 for n in npos]
    for s in samplers:
        s.close()
    assert batched == alone


def test_seeded_sampling_is_reproducible(det):
    prompt = det.engine.tokenize(chatml("Write a word."))
    p = SamplingParams(temperature=1.0, seed=1234, max_tokens=10)
    a = det.scheduler.generate(prompt, p)
    b = det.scheduler.generate(prompt, p)
    assert a.token_ids == b.token_ids and a.seed == 1234


def test_unknown_model_path(tmp_path):
    missing = tmp_path / "nope.gguf"
    with pytest.raises(ModelError, match="nope.gguf"):
        LlamaCppEngine(model_path=missing)


def test_not_a_gguf(tmp_path):
    bad = tmp_path / "notes.gguf"
    bad.write_text("this is not a model\n")
    with pytest.raises(ModelError, match="not a GGUF"):
        LlamaCppEngine(model_path=bad)


def test_bad_engine_settings():
    with pytest.raises(InvalidRequest, match="n_ctx"):
        LlamaCppEngine(n_ctx=4)


def test_check_tokens(engine):
    engine.check_tokens([1, 2, 3])
    with pytest.raises(InvalidRequest, match="token ids"):
        engine.check_tokens([1, 10**9])


def test_sampler_chain_builds_for_every_stage(engine):
    """Every sampling stage (penalties, top-k/p, min-p, temperature, seed) constructs a valid native chain."""
    p = SamplingParams(temperature=0.9, top_k=5, top_p=0.8, min_p=0.1, repeat_penalty=1.3,
                       presence_penalty=0.5, frequency_penalty=0.5, seed=7)
    s = engine.make_sampler(p, history=[1, 2, 3])
    assert s.seed == 7
    s.close()
    s.close()  # closing twice is harmless


def test_logits_are_finite(bare, clean):
    import llama_cpp.llama_cpp as llc

    engine = bare
    prompt = engine.tokenize(chatml("Hi"))
    engine.decode(prompt, list(range(len(prompt))), [40] * len(prompt), [False] * (len(prompt) - 1) + [True])
    row = np.ctypeslib.as_array(llc.llama_get_logits_ith(engine._ctx, len(prompt) - 1), shape=(engine.n_vocab,))
    assert np.isfinite(row).all()


def test_gpu_layers_default_and_device_names():
    """--gpu-layers (issue 8 item 12): every layer by default when llama.cpp has a GPU backend, none without."""
    from parley.engine.llamacpp import device_label, gpu_offload

    assert gpu_offload(None, gpu_available=True) == -1 and gpu_offload(None, gpu_available=False) == 0
    assert gpu_offload(12, gpu_available=False) == 12
    with pytest.raises(InvalidRequest, match="gpu_layers"):
        gpu_offload("all", gpu_available=True)
    assert device_label(-1, 31, gpu_available=True) == "gpu (31 of 31 layers)"
    assert device_label(12, 31, gpu_available=True) == "gpu (12 of 31 layers)"
    assert device_label(0, 31, gpu_available=True) == "cpu" and device_label(12, 31, gpu_available=False) == "cpu"


def test_gpu_layers_reach_the_model_params_and_a_cpu_build_says_so(caplog):
    """The flag goes from the command line through Parley into llama_model_params.n_gpu_layers (it was
    hard-coded to 0); on this CPU-only build the model runs on the CPU, the engine says so, and asking for GPU
    layers gets a warning naming the flag and the fix."""
    import logging

    import llama_cpp.llama_cpp as llc

    import parley
    from parley.cli.main import build_parser
    from parley.cli.options import load_settings

    args = build_parser().parse_args(["chat", "--gpu-layers", "7", "--kv-size", "256"])
    settings = load_settings(args).replace(disk_cache_mb=0)
    gpu = bool(llc.llama_supports_gpu_offload())
    with caplog.at_level(logging.WARNING, logger="parley.engine"):
        p = parley.load(settings=settings)
    try:
        assert p.engine.model_params.n_gpu_layers == 7
        if gpu:  # a GPU build: the layers went there
            assert p.engine.device == "gpu (7 of 31 layers)" and not caplog.records
        else:
            assert p.engine.device == "cpu"
            [warning] = [r.getMessage() for r in caplog.records]
            assert "--gpu-layers 7" in warning and "no GPU backend" in warning and "GGML_CUDA" in warning
    finally:
        p.close(save=False)
    auto = LlamaCppEngine(n_ctx=256, n_seq_max=4, n_batch=64)
    try:
        assert auto.model_params.n_gpu_layers == (-1 if gpu else 0)
        assert auto.device == ("gpu (31 of 31 layers)" if gpu else "cpu")
    finally:
        auto.close()
    with pytest.raises(InvalidRequest, match="gpu_layers"):
        parley.load(gpu_layers=-3)
