"""The page's model picker in a real browser against a live server offering two models: the embedded one and
"second", the same file registered under another name with a smaller context (cheap: no second download, and
its limits differ). What a person sees in the picker, the header, the status line and the options, checked on
the page and in the store and schedulers behind it."""

from __future__ import annotations

import contextlib
import re
import threading

import pytest
from srvutil import LiveServer
from test_web_page import BOT, USER, owner, send, wait_reply, wait_until
from webutil import open_page

from parley.server import ServerSettings

pytestmark = pytest.mark.model

SECOND = "second"
SECOND_CONTEXT = 2048
PICKER = "#parley-model"
STATUS = "#parley-status"
HEADER = '#parley-header [data-testid="markdown"]'   # not Gradio's status tracker beside it (hidden, in innerText)


@pytest.fixture(scope="module")
def second(parley):
    """A second model this process offers (the embedded file again, its context smaller); forgotten after."""
    parley.models.add(parley.info.path, name=SECOND, settings={"ctx_size": SECOND_CONTEXT})
    yield SECOND
    parley.models.remove(SECOND)


@pytest.fixture(scope="module")
def wide_server(parley, second):
    """No --max-tokens-cap: a reply may take a model's whole context, so the two models' limits differ."""
    s = LiveServer(parley, ServerSettings())
    yield s
    s.stop()


@contextlib.contextmanager
def load_paused(parley, name: str, at: float = 0.4):
    """Loading `name` stops once llama.cpp reports `at` of it done, until the block's event is set: the page is
    watched while the load is under way, however fast the machine. The load itself is the real one (the pool's
    own loader, with its progress reported as usual); only its progress callback waits."""
    pool = parley._shared.pool             # below the door: a test's instrument, never the page's
    real, reached, go = pool._load, threading.Event(), threading.Event()

    def load(entry, progress):
        def report(fraction: float) -> None:
            progress(fraction)
            if entry.name == name and fraction >= at and not go.is_set():
                reached.set()
                go.wait(60)
        return real(entry, report)
    pool._load = load
    try:
        yield reached, go
    finally:
        go.set()
        pool._load = real


def unloaded(parley, name: str) -> None:
    parley.models.unload(name)
    assert parley.models.show(name).state == "unloaded"


def picker_shows(page) -> str:
    return page.input_value(f"{PICKER} input")


def options(page, shoot=None) -> list[str]:
    """The picker's choices, as its list shows them (opened, `shoot` called while it is open, closed again)."""
    page.click(f"{PICKER} input")
    listed = page.get_by_role("option")
    listed.first.wait_for()
    labels = [t.strip().splitlines()[-1] for t in listed.all_inner_texts()]   # the picked one has a ✓ first
    if shoot is not None:
        shoot()
    page.keyboard.press("Escape")
    return labels


def pick_model(page, name: str) -> None:
    """Pick a model by name (its label also says its state)."""
    page.click(f"{PICKER} input")
    page.get_by_role("option").filter(has_text=re.compile(rf"(?<![\w.-]){re.escape(name)} · ")).click()
    wait_until(lambda: picker_shows(page).startswith(f"{name} · "))


def the_conversation(parley, page):
    (conv,) = parley.conversations.owned_by(owner(page)).list().items
    return parley.conversations.get(conv.id)


def generated(parley, name: str) -> int:
    """Tokens the model's own scheduler generated since it loaded (0 while it is not loaded)."""
    return parley.using(name, load=False).stats().totals.generated_tokens


# ---- the list ----------------------------------------------------------------------------------------------------
def test_the_picker_lists_every_model_with_its_state(server, parley, second, pages):
    parley.models.load(parley.name)
    unloaded(parley, second)
    page = pages.new(server.url)
    assert picker_shows(page) == f"{parley.name} · loaded · cpu"           # the default, picked
    assert options(page, shoot=lambda: pages.shoot(page, "-open")) == [f"{parley.name} · loaded · cpu",
                                                                         f"{second} · not loaded"]


def test_the_header_shows_the_picked_model(server, parley, second, pages):
    unloaded(parley, second)
    page = pages.new(server.url)
    pick_model(page, second)
    page.locator(HEADER, has_text=f"{second} · context {SECOND_CONTEXT:,} tokens").wait_for()
    header = page.inner_text(HEADER)
    assert "cpu · not loaded" in header and "cache: live" not in header and parley.name not in header
    assert parley.models.show(second).state == "unloaded"                  # picking loads nothing
    pick_model(page, parley.name)
    page.locator(HEADER, has_text="cache: live").wait_for()
    assert page.inner_text(HEADER).startswith(f"{parley.name} · context 8,192 tokens · cpu · ")


# ---- conversations on a model ------------------------------------------------------------------------------------
def test_a_conversation_started_on_the_picked_model_is_stored_there(server, parley, second, pages):
    parley.models.load(second)
    page = pages.new(server.url)
    pick_model(page, second)
    before = generated(parley, second), generated(parley, parley.name)
    send(page, "Say hello.")
    wait_reply(page, 1)

    conv = the_conversation(parley, page)
    assert conv.model == second
    reply = conv.messages[-1]
    assert reply.role == "assistant" and reply.stats.generated_tokens > 0
    # its tokens came from second's scheduler, none from the default model's
    assert generated(parley, second) - before[0] == reply.stats.generated_tokens
    assert generated(parley, parley.name) == before[1]
    assert page.inner_text(HEADER).startswith(f"{second} · context {SECOND_CONTEXT:,} tokens")


def test_an_open_conversation_moves_to_the_picked_model(server, parley, second, pages):
    parley.models.load(second)
    page = pages.new(server.url)
    send(page, "Name three colours.")
    wait_reply(page, 1)
    conv = the_conversation(parley, page)
    assert conv.model == parley.name

    pick_model(page, second)
    page.locator(STATUS, has_text=f"The next message goes to {second}").wait_for()
    send(page, "And three animals?")
    wait_reply(page, 2)
    note = f"this conversation was last served with {parley.name}: its history was read again for {second}"
    page.locator(STATUS, has_text=note).wait_for()
    conv = the_conversation(parley, page)
    assert conv.model == second and conv.messages[-1].meta["note"] == note
    pages.shoot(page, "-moved")

    # opened again, it comes back on its model; an imported one (it keeps no model yet) picks the default
    other = parley.conversations.owned_by(owner(page)).import_({
        "format": "parley.conversation", "version": 1, "conversation": {"title": "On the default", "leaf_id": "m2"},
        "messages": [{"id": "m1", "parent_id": None, "role": "user", "content": "Hi."},
                     {"id": "m2", "parent_id": "m1", "role": "assistant", "content": "Hello!",
                      "finish_reason": "stop"}]})
    assert other.model is None
    page.reload()
    open_page(page, server.url)
    listed = page.locator("#parley-conversations label")
    listed.filter(has_text=conv.title).click()
    page.locator(USER, has_text="And three animals?").wait_for()
    wait_until(lambda: picker_shows(page).startswith(f"{second} · "))
    page.locator(HEADER, has_text=f"{second} · context {SECOND_CONTEXT:,} tokens").wait_for()
    listed.filter(has_text="On the default").click()
    page.locator(BOT, has_text="Hello!").wait_for()
    wait_until(lambda: picker_shows(page).startswith(f"{parley.name} · "))
    page.locator(HEADER, has_text=f"{parley.name} · context 8,192 tokens").wait_for()


def test_a_question_about_a_document_is_answered_by_the_picked_model(server, parley, second, pages, tmp_path):
    parley.models.load(second)
    page = pages.new(server.url)
    pick_model(page, second)
    page.click("#parley-documents")
    path = tmp_path / "ferry.md"
    path.write_text("# Ferry\n\nThe ferry to the island leaves at seven every morning.\n")
    page.locator("#parley-doc-files input[type=file]").set_input_files(str(path))
    page.locator("#parley-doc-list", has_text="ferry.md").wait_for()
    before = generated(parley, second), generated(parley, parley.name)
    page.locator("#parley-doc-question textarea").fill("When does the ferry leave?")
    page.click("#parley-doc-ask")
    numbers = page.locator("#parley-doc-answer .parley-stats")
    numbers.wait_for(timeout=60_000)
    answered = int(re.match(r"(\d+) tokens", numbers.inner_text()).group(1))
    assert generated(parley, second) - before[0] == answered > 0
    assert generated(parley, parley.name) == before[1]


# ---- loading -----------------------------------------------------------------------------------------------------
def test_a_model_not_loaded_loads_with_the_first_message_and_the_page_counts_it(server, parley, second, pages):
    unloaded(parley, second)
    page = pages.new(server.url)
    pick_model(page, second)
    assert picker_shows(page) == f"{second} · not loaded"
    with load_paused(parley, second) as (reached, go):
        send(page, "Say hello.")
        status = page.locator(STATUS, has_text=f"Loading {second}:")
        status.wait_for()

        def percent() -> int:
            return int(re.fullmatch(rf"Loading {second}: (\d+)%", status.inner_text().strip()).group(1))
        wait_until(lambda: percent() >= 40)       # it counts up to where the load waits (0% at its very start)
        assert reached.is_set() and parley.models.show(second).state == "loading" and percent() < 100
        wait_until(lambda: re.fullmatch(rf"{second} · loading \d+%", picker_shows(page)))
        pages.shoot(page, "-loading")
        assert page.locator(BOT).count() == 0
        go.set()
    wait_reply(page, 1)
    assert "Loading" not in page.inner_text(STATUS)
    wait_until(lambda: picker_shows(page) == f"{second} · loaded · cpu")
    assert parley.models.show(second).state == "loaded"
    assert the_conversation(parley, page).model == second
    page.locator(HEADER, has_text="cache: live").wait_for()
    assert page.inner_text(HEADER).startswith(f"{second} · context {SECOND_CONTEXT:,} tokens · cpu · ")


def test_stop_while_the_model_loads_ends_the_reply_it_was_waiting_for(server, parley, second, pages):
    unloaded(parley, second)
    page = pages.new(server.url)
    pick_model(page, second)
    with load_paused(parley, second) as (reached, go):
        send(page, "Tell me a long story about a dragon.")
        page.locator(STATUS, has_text=f"Loading {second}:").wait_for()
        page.click("#parley-stop")
        assert reached.is_set()
        go.set()
    convs = parley.conversations.owned_by(owner(page))
    # the conversation is made before the load ends and its messages after: wait for the reply row itself
    conv = wait_until(lambda: (items := convs.list().items) and items[0], timeout=30)
    msgs = wait_until(lambda: not convs.generating(conv.id) and parley.conversations.get(conv.id).messages,
                      timeout=30)
    reply = msgs[-1]
    assert reply.role == "assistant" and reply.finish_reason == "cancelled" and conv.model == second
    assert parley.using(second, load=False).stats().running == 0


# ---- limits --------------------------------------------------------------------------------------------------------
def test_the_max_tokens_slider_ends_at_the_picked_models_limit(wide_server, parley, second, pages):
    page = pages.new(wide_server.url)
    page.click("#parley-options")
    slider = page.locator("#parley-max-tokens input[type=range]")
    slider.wait_for()
    assert slider.get_attribute("max") == "8192" and slider.input_value() == "512"
    pick_model(page, second)
    wait_until(lambda: slider.get_attribute("max") == str(SECOND_CONTEXT))
    assert slider.input_value() == "512"                    # the default, inside both limits, stays
    pick_model(page, parley.name)
    wait_until(lambda: slider.get_attribute("max") == "8192")
    page.locator("#parley-max-tokens").scroll_into_view_if_needed()
    pages.shoot(page, "-slider")
