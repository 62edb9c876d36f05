"""Server tests: one real model (the embedded SmolLM2-135M-Instruct) shared by a few live servers, each a real
uvicorn on an ephemeral port in a background thread (tests/server/test_server_cli.py also runs `parley serve` as a
subprocess). PARLEY_HOME points at a temporary directory before anything is loaded."""

from __future__ import annotations

import os
import tempfile

import pytest

_HOME = tempfile.mkdtemp(prefix="parley-server-tests-")
os.environ["PARLEY_HOME"] = _HOME

import httpx  # noqa: E402
from srvutil import API_KEY, CORS_ORIGIN, LiveServer  # noqa: E402

from parley.server import ServerSettings  # noqa: E402

MAX_TOKENS_CAP = 256


def pytest_configure(config):
    # the text-generation client itself calls pydantic's deprecated .dict()
    config.addinivalue_line("filterwarnings", "ignore:The `dict` method is deprecated")


def pytest_collection_modifyitems(config, items):
    """The fuzzer last: it leaves hundreds of cached sequences behind (see the parley fixture)."""
    items.sort(key=lambda item: item.path.name == "test_server_fuzz.py")


@pytest.fixture(scope="session")
def parley_home() -> str:
    return _HOME


@pytest.fixture(scope="session")
def parley():
    from parley import Parley

    # deterministic: the same prompt gives the same tokens whether its prefix came from the cache or not, and
    # whatever else is in the batch (the tests compare texts across requests and APIs). One thread: steady
    # speed when another process holds a core of this 2-core machine (two threads then drop to ~1 token/s).
    # n_seq_max=256 (llama.cpp's most): the suite stays below it until the fuzzer (run last) fills it; at the cap,
    # evicting and reusing sequences currently breaks deterministic mode (same greedy prompt, different text),
    # a core issue the text-comparing tests must not trip over.
    p = Parley(deterministic=True, threads=1, n_seq_max=256)
    yield p
    p.close(save=False)


@pytest.fixture(scope="module", autouse=True)
def tidy_cache(request):
    """Each module starts with no idle sequence left by the ones before: the suite's idle KV then never passes
    --kv-idle-cells mid-module, where moving sequences to RAM and back could shift a deterministic comparison's
    last bits (docs/ARCHITECTURE.md, Determinism). Modules that load no model are left alone."""
    mine = [item for item in request.session.items if getattr(item, "module", None) is request.module]
    if any("parley" in item.fixturenames for item in mine):
        request.getfixturevalue("parley").scheduler.drop_cached(save=False)
    yield


@pytest.fixture(scope="session")
def server(parley):
    s = LiveServer(parley, ServerSettings(max_tokens_cap=MAX_TOKENS_CAP))
    yield s
    s.stop()


@pytest.fixture(scope="session")
def keyed_server(parley):
    s = LiveServer(parley, ServerSettings(api_key=API_KEY, max_tokens_cap=16,
                                               cors_origins=(CORS_ORIGIN,)))
    yield s
    s.stop()


@pytest.fixture(scope="session")
def small_server(parley):
    """Tight limits: small bodies, short prompts, few tokens, few concurrent requests and conversations."""
    s = LiveServer(parley, ServerSettings(max_body_bytes=4096, max_prompt_tokens=64, max_tokens_cap=4,
                                          max_concurrent=2))
    yield s
    s.stop()


@pytest.fixture()
def http(server):
    with httpx.Client(base_url=server.url, timeout=60) as client:
        yield client
