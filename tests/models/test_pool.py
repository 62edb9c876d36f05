"""Several models in one process, on the real embedded model registered under several names (each name is a
model of its own to the pool: its own engine, scheduler and KV tiers): loading on demand, --models-max and the
memory budget unloading the least recently used idle model and never one in use, idle unloading, a returning
conversation restored from the disk tier, concurrent streams on two models, a model's own settings reaching
llama.cpp."""

from __future__ import annotations

import threading

import pytest

import parley
from parley.api import Parley
from parley.engine.model_path import embedded_model_path
from parley.errors import Overloaded
from parley.sampling import SamplingParams

pytestmark = pytest.mark.model
G = SamplingParams(temperature=0, max_tokens=6)


@pytest.fixture()
def make(tmp_path):
    made: list[Parley] = []

    def make(names=("a", "b"), **options) -> Parley:
        home = tmp_path / f"home{len(made)}"
        lib = parley.api.models(home)
        for n in names:
            lib.add(embedded_model_path(), name=n)
        p = parley.load(home=str(home), kv_size=512, threads=1, **options)
        made.append(p)
        return p
    yield make
    for p in made:
        p.close(save=False)


def states(p: Parley) -> dict[str, str]:
    return {m.name: m.state for m in p.models.list()}


def test_models_load_on_demand_and_the_least_recently_used_idle_one_makes_room(make):
    p = make(models_max=2, disk_cache_mb=0)
    assert states(p) == {"smollm2-135m-instruct": "loaded", "a": "unloaded", "b": "unloaded"}
    a = p.using("a")
    assert a.name == "a" and a.info.loaded and states(p)["a"] == "loaded"
    assert a.generate("Once upon a time", G).wait().finish_reason in ("stop", "length")
    p.using("b")                                   # the default model was used least recently: it goes
    assert states(p) == {"smollm2-135m-instruct": "unloaded", "a": "loaded", "b": "loaded"}
    assert p.generate("Hello", G).wait().generated_tokens > 0     # and comes back on its next request
    assert states(p)["smollm2-135m-instruct"] == "loaded" and list(states(p).values()).count("loaded") == 2


def test_a_model_in_use_is_never_unloaded(make):
    p = make(names=("a", "b", "c"), models_max=2, disk_cache_mb=0)
    pool = p._shared.pool
    with pool.use(p._shared.entry("a")):             # a request being submitted to "a"
        p.using("b")                                 # room made: the default model goes, not "a"
        assert states(p)["a"] == "loaded" and states(p)["smollm2-135m-instruct"] == "unloaded"
        with pool.use(p._shared.entry("b")), pytest.raises(Overloaded, match="--models-max is 2"):
            p.using("c")                             # both in use: refused, nothing unloaded
        assert states(p)["a"] == states(p)["b"] == "loaded"


def test_idle_models_unload_and_the_memory_budget_chooses(make):
    per_model = embedded_model_path().stat().st_size + 512 * 23040
    p = make(models_memory_mb=(per_model * 3 // 2) >> 20, disk_cache_mb=0)   # room for one, not two
    p.using("a")
    assert states(p) == {"smollm2-135m-instruct": "unloaded", "a": "loaded", "b": "unloaded"}
    pool = p._shared.pool
    assert pool.reap() == []                          # used just now
    import time
    assert pool.reap(time.monotonic() + 3600) == ["a"]
    assert "loaded" not in states(p).values()


def test_an_unloaded_models_conversation_comes_back_from_disk(make):
    p = make(names=("a",))
    a = p.using("a")
    conv = a.conversations.create(defaults=G, system="You answer in a few words.")
    for q in ("Name a colour.", "Name a fruit.", "Name an animal."):
        a.conversations.send(conv.id, q).wait()
    assert p.conversations.get(conv.id).model == "a"
    p.models.unload("a")                              # its conversation's KV goes to the disk tier
    assert states(p)["a"] == "unloaded"
    r = p.conversations.send(conv.id, "Name a tree.").wait()     # the conversation keeps its model
    assert states(p)["a"] == "loaded"
    assert r.cache_source == "disk" and r.cached_tokens >= 0.8 * r.prompt_tokens, r


def test_two_models_stream_at_the_same_time(make):
    p = make(disk_cache_mb=0)
    a, b = p.using("a"), p.using("b")
    out: dict[str, str] = {}

    def run(door, key):
        out[key] = door.generate("The capital of France is", SamplingParams(temperature=0, max_tokens=12,
                                                                             ignore_eos=True)).wait().text
    threads = [threading.Thread(target=run, args=(d, k)) for d, k in ((a, "a"), (b, "b"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert set(out) == {"a", "b"} and out["a"] and out["b"]


def test_a_models_own_settings_reach_llama_cpp(make, tmp_path):
    p = make(names=(), disk_cache_mb=0)
    home = tmp_path / "home0" / "models"
    p.models.add(embedded_model_path(), name="tuned", settings={"ctx_size": 256, "gpu_layers": 3,
                                                               "system": "Be terse."},
                 sampling={"temperature": 0.2})
    assert (home / "tuned.toml").is_file()
    door = p.using("tuned")
    loaded = p._shared.pool.loaded("tuned")
    assert loaded.engine.model_params.n_gpu_layers == 3          # a CPU build warns and runs on the CPU
    assert door.context_size == 256 and door.info.device == "cpu"
    assert door.sampling_over(SamplingParams()).temperature == 0.2
    view = door.conversations.create()
    assert view.system == "Be terse." and view.model == "tuned"
