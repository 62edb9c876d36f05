"""Embeddings on the real embedded model (SmolLM2-135M-Instruct): Parley.embed and the engine's Embedder.

What holds for this chat model, measured: mean-pooled hidden states put a paraphrase closer than an unrelated
sentence for every set below (the same holds on Gemma 3 270M by hand), so that is tested; how well they rank
passages of a long document is for scripts/retrieval-eval, not a test."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from parley.engine.embeddings import (
    MAX_INPUTS,
    MAX_SEQUENCES,
    Cancelled,
    Embedder,
    header_pooling,
    is_embedding_model,
    tokens_for,
)
from parley.errors import InvalidRequest, LimitExceeded, ShuttingDown

PARAPHRASES = [  # (text, its paraphrase, an unrelated text)
    ("The cat sat on the mat.", "A feline rested on the rug.", "Stock markets fell sharply on Monday."),
    ("How do I bake bread at home?", "What is a simple recipe for homemade bread?",
     "The train to Berlin leaves at noon."),
    ("My laptop will not turn on.", "The computer does not start when I press the power button.",
     "Lions hunt zebras on the savanna."),
    ("The doctor examined the patient.", "The physician checked the sick man.",
     "Interest rates rose again this year."),
]
TEXTS = ["a short one", "The lighthouse keeper repaired the lamp before the storm came in from the sea.",
         "Quarterly revenue grew by four percent.", "¿Dónde está la biblioteca?", "def f(x): return x * 2"]


@pytest.fixture(scope="module")
def p(fast):
    return fast


def test_vectors_have_the_models_dimension_and_unit_length(p):
    e = p.embed(TEXTS)
    dim = p.engine.metadata["llama.embedding_length"]
    assert e.vectors.shape == (len(TEXTS), dim) == (len(e), e.dimensions)
    assert e.vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(e.vectors, axis=1), 1.0, atol=1e-5)
    assert e.model == p.name and e.pooling == "mean"
    assert e.tokens == tuple(len(p.engine.tokenize(t, add_bos=p.engine.add_bos, special=False)) for t in TEXTS)
    assert e.prompt_tokens == sum(e.tokens)


def test_the_same_text_gives_the_same_vector(p):
    a, b = p.embed(TEXTS).vectors, p.embed(TEXTS).vectors
    assert np.array_equal(a, b)


@pytest.mark.parametrize("text, paraphrase, unrelated", PARAPHRASES)
def test_a_paraphrase_is_closer_than_an_unrelated_text(p, text, paraphrase, unrelated):
    v = p.embed([text, paraphrase, unrelated]).vectors
    assert v[0] @ v[1] > v[0] @ v[2]
    assert v[0] @ v[1] > v[1] @ v[2]


def same(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal as llama.cpp's batch arithmetic allows: a decode of 64+ tokens takes flash attention's tiled path,
    one of fewer its per-cell path, so a short text packed with others differs from itself alone (measured: at
    most 6e-3 in a component, cosine >= 0.99990; a text decoded alone is bit-identical)."""
    return float(np.min(np.sum(a * b, axis=-1))) > 0.9999


def test_a_batch_equals_the_texts_one_by_one(p):
    batch = p.embed(TEXTS).vectors
    singles = np.stack([p.embed([t]).vectors[0] for t in TEXTS])
    assert same(batch, singles)


def test_more_texts_than_one_decode_holds_come_back_in_order(p):
    texts = [f"note {i}: the {['red', 'green', 'blue'][i % 3]} boat number {i}" for i in range(MAX_SEQUENCES + 6)]
    many = p.embed(texts).vectors
    for i in (0, MAX_SEQUENCES - 1, MAX_SEQUENCES, len(texts) - 1):
        assert same(many[i], p.embed([texts[i]]).vectors[0]), i


def test_token_ids_are_taken_as_given(p):
    ids = p.engine.tokenize(TEXTS[1], add_bos=p.engine.add_bos, special=False)
    assert np.array_equal(p.embed([ids]).vectors, p.embed([TEXTS[1]]).vectors)
    assert p.embed([ids]).tokens == (len(ids),)


def test_a_lone_string_is_one_input(p):
    assert np.array_equal(p.embed(TEXTS[0]).vectors, p.embed([TEXTS[0]]).vectors)


def test_requests_at_once_from_threads_each_get_their_own_vectors(p):
    want = {i: p.embed(TEXTS[i:] + TEXTS[:i]).vectors for i in range(3)}
    got: dict[int, np.ndarray] = {}

    def run(i: int) -> None:
        got[i] = p.embed(TEXTS[i:] + TEXTS[:i]).vectors

    threads = [threading.Thread(target=run, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(3):
        assert same(got[i], want[i]), i


def test_the_value_is_frozen(p):
    e = p.embed(TEXTS[:2])
    with pytest.raises(ValueError):
        e.vectors[0, 0] = 1.0
    with pytest.raises(AttributeError):
        e.model = "other"


def test_a_text_over_the_embedding_context_names_the_limit(p):
    most = p._loaded().embedder.max_tokens
    with pytest.raises(LimitExceeded) as err:
        p.embed(["ok", "word " * (most + 10)])
    assert err.value.param == "input" and f"at most {most} tokens" in err.value.message
    assert "input[1]" in err.value.message


def test_truncate_keeps_the_first_tokens_and_says_how_many_went(p):
    most = p._loaded().embedder.max_tokens
    long = "word " * (most + 10)
    ids = p.engine.tokenize(long, add_bos=p.engine.add_bos, special=False)
    r = p.embed(["ok", long], truncate=True)
    assert r.tokens[1] == most and r.truncated == (0, len(ids) - most)
    assert np.allclose(r.vectors[1], p.embed([ids[:most]]).vectors[0], atol=1e-5)
    assert p.embed("ok").truncated == (0,)


def test_a_door_with_a_prompt_cap_names_the_setting(p):
    from parley.api import Caps

    door = p.with_limits(Caps(prompt_tokens=8, prompt_setting="max_prompt_tokens, `parley serve "
                                                                "--max-prompt-tokens`"))
    with pytest.raises(LimitExceeded, match="--max-prompt-tokens"):
        door.embed(["one two three four five six seven eight nine ten eleven"])
    assert door.embed(["short"]).tokens


@pytest.mark.parametrize("inputs, words", [
    ([], "input is empty"),
    (["fine", ""], "input[1] is an empty string"),
    ([[]], "empty list of token ids"),
    ([[1, 2, 10 ** 9]], "token ids must be integers"),
])
def test_bad_inputs_are_refused_by_name(p, inputs, words):
    with pytest.raises(InvalidRequest) as err:
        p.embed(inputs)
    assert err.value.param == "input" and words in err.value.message


def test_too_many_inputs_and_other_dimensions_are_refused(p):
    with pytest.raises(LimitExceeded, match=f"at most {MAX_INPUTS}"):
        p.embed(["x"] * (MAX_INPUTS + 1))
    with pytest.raises(InvalidRequest) as err:
        p.embed(["x"], dimensions=64)
    assert err.value.param == "dimensions" and "576" in err.value.message
    assert p.embed(["x"], dimensions=576).dimensions == 576


def test_a_cancelled_request_stops(p):
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        p.embed(TEXTS, cancel=cancel)


def test_embed_is_blocking_on_a_guarded_loop(p):
    async def on_loop():
        release = p.guard_event_loop(asyncio.get_running_loop())
        try:
            with pytest.raises(RuntimeError, match="embed blocks"):
                p.embed(["x"])
        finally:
            release()

    asyncio.run(on_loop())


def test_a_closed_embedder_refuses_and_frees_its_context(p):
    embedder = Embedder(p.engine, context_size=p.context_size)
    ids = embedder.tokens(TEXTS[:2])
    assert same(embedder.embed(ids), p.embed(TEXTS[:2]).vectors)
    assert embedder.footprint > 0
    embedder.close()
    assert embedder._ctx is None
    with pytest.raises(ShuttingDown):
        embedder.embed(ids)
    embedder.close()   # idempotent


def test_the_embedding_context_is_sized_from_the_vocabulary():
    assert tokens_for(49152, 8192) == 1344           # SmolLM2: what 512 MiB of logits allow
    assert tokens_for(262144, 8192) == 256           # Gemma 3's vocabulary
    assert tokens_for(49152, 512) == 512             # never past the model's context
    assert tokens_for(10 ** 7, 8192) == 64           # at least MIN_TOKENS


def test_embedding_models_are_told_by_their_header(p):
    assert not is_embedding_model(p.engine.metadata)
    assert is_embedding_model({"general.architecture": "bert"})
    assert is_embedding_model({"general.architecture": "qwen3", "qwen3.pooling_type": 3})
    assert is_embedding_model({"general.architecture": "llama", "llama.attention.causal": False})
    assert not is_embedding_model({"general.architecture": "qwen3", "qwen3.pooling_type": 4})  # a reranker
    assert header_pooling({"general.architecture": "bert", "bert.pooling_type": 2}) == 2
    assert header_pooling(p.engine.metadata) is None


def test_models_list_marks_embedding_models_by_their_header(tmp_path):
    import struct

    from parley.api import models
    from parley.engine.model_path import embedded_model_path

    def gstr(s: str) -> bytes:
        return struct.pack("<Q", len(s.encode())) + s.encode()

    header = (b"GGUF" + struct.pack("<IQQ", 3, 0, 2) + gstr("general.architecture") + struct.pack("<I", 8)
              + gstr("bert") + gstr("bert.pooling_type") + struct.pack("<II", 4, 2))
    encoder = tmp_path / "encoder.gguf"
    encoder.write_bytes(header)        # a header alone: listing reads it, nothing loads it
    service = models(tmp_path / "home")
    service.add(embedded_model_path(), name="tiny")
    toml = tmp_path / "home" / "models" / "tiny.toml"
    toml.write_text(toml.read_text().replace(str(embedded_model_path()), str(encoder)))
    views = {v.name: v for v in service.list()}
    assert views["tiny"].embedding and views["tiny"].architecture == "bert"
    assert not views["smollm2-135m-instruct"].embedding


def with_pooling(src, dst, pooling: int) -> None:
    """A copy of the GGUF `src` whose header names `pooling` ({arch}.pooling_type), as llama.cpp's converter
    writes it for an embedding model: the key goes after the others, the tensor data is realigned. There is no
    embedding GGUF on this machine (nor one on PyPI: packages ship safetensors, or download at run time), so
    the embedded model made one stands in for it."""
    import struct

    from gguf import GGUFReader

    r = GGUFReader(src)
    arch = r.fields["general.architecture"].contents()
    last_kv = list(r.fields.values())[-1]
    kv_end = last_kv.offset + sum(part.nbytes for part in last_kv.parts)
    key = f"{arch}.pooling_type".encode()
    kv = struct.pack("<Q", len(key)) + key + struct.pack("<II", 4, pooling)     # 4: GGUF's UINT32
    raw = src.read_bytes()
    infos = raw[kv_end:r.tensors[-1].field.offset + sum(part.nbytes for part in r.tensors[-1].field.parts)]
    head = bytearray(raw[:kv_end] + kv + infos)
    head[16:24] = struct.pack("<Q", struct.unpack("<Q", raw[16:24])[0] + 1)   # kv_count
    head += b"\0" * (-len(head) % r.alignment)
    dst.write_bytes(bytes(head) + raw[r.data_offset:])


def test_a_registered_embedding_model_embeds_by_name_with_its_own_pooling(tmp_path):
    import llama_cpp.llama_cpp as llc

    import parley
    from parley.engine.model_path import embedded_model_path

    last = tmp_path / "smol-last.gguf"
    with_pooling(embedded_model_path(), last, llc.LLAMA_POOLING_TYPE_LAST)
    home = tmp_path / "home"
    parley.api.models(home).add(last, name="smol-last")
    views = {v.name: v for v in parley.api.models(home).list()}
    assert views["smol-last"].embedding and not views["smollm2-135m-instruct"].embedding
    q = parley.load(home=home, kv_size=1024, threads=1, disk_cache_mb=0)
    try:
        by_name = q.embed(PARAPHRASES[0], model="smol-last")
        default = q.embed(PARAPHRASES[0])
    finally:
        q.close(save=False)
    assert by_name.model == "smol-last" and by_name.pooling == "last" and default.pooling == "mean"
    assert by_name.tokens == default.tokens and not np.allclose(by_name.vectors, default.vectors, atol=1e-3)
    assert np.allclose(np.linalg.norm(by_name.vectors, axis=1), 1.0, atol=1e-5)
