"""The web chat page in a real browser (Debian's chromium, headless, through Playwright) against a live server on
the real model: what a person does on the page, checked on the page and in the store behind it."""

from __future__ import annotations

import json
import re
import threading
import time

import httpx
import pytest
from webutil import API_KEY, LONG_CAP, fill, open_page

pytestmark = pytest.mark.model

BOT = '#parley-chat [data-testid="bot"]'
USER = '#parley-chat [data-testid="user"]'
SHOWN_TEXT = """el => { const c = el.cloneNode(true); c.querySelectorAll('.parley-stats').forEach(x => x.remove());
                        return c.innerText.trim(); }"""
FEW_WORDS = 40     # characters of a reply: a few scheduler steps, the header is to show the reply by then
STORY = "Tell me a long story about a dragon who learns to read, with many details."


# ---- helpers -------------------------------------------------------------------------------------------------
def owner(page) -> str:
    return next(c["value"] for c in page.context.cookies() if c["name"] == "parley_owner")


def conversations(parley, page):
    return parley.store.list_conversations(owner=owner(page))


def branch(parley, cid: str):
    store = parley.store
    return store.branch(store.get_conversation(cid).leaf_id)


def plain(markdown: str) -> str:
    """Text as the page shows it, roughly: no list markers ("1." and "1)" both open an ordered list; an empty
    item too, as a reply cut at max tokens can end: "... 4."), no emphasis, and no whitespace at all: where the
    browser's innerText puts a space between two blocks depends on how the markdown opened them (a list item that
    follows "(shades)" on its own line showed as "shades)3")."""
    lines = [re.sub(r"^\s*(\d+[.)]|[-*+])(\s+|$)", "", line) for line in markdown.splitlines()]
    return "".join(re.sub(r"[*_`#]", "", "\n".join(lines)).split())


def send(page, text: str) -> None:
    box = page.locator("#parley-input textarea")
    box.fill(text)
    box.press("Enter")


def reply_text(page, i: int = -1) -> str:
    bots = page.locator(BOT)
    n = bots.count()
    if n == 0:
        return ""
    return bots.nth(i if i >= 0 else n + i).evaluate(SHOWN_TEXT)


def finished(page, i: int = -1) -> bool:
    """Whether reply `i` shows its numbers (they appear once it is recorded)."""
    bots = page.locator(BOT)
    n = bots.count()
    return n > 0 and bots.nth(i if i >= 0 else n + i).locator(".parley-stats").count() > 0


def wait_reply(page, count: int, timeout: float = 60) -> str:
    """Wait until the page shows `count` replies, the last one finished; returns its numbers line."""
    last = page.locator(BOT).nth(count - 1).locator(".parley-stats")
    last.wait_for(timeout=timeout * 1000)
    return last.inner_text()


def pick(page, dropdown: str, option: str) -> None:
    page.click(f"{dropdown} input")
    page.get_by_role("option", name=option, exact=True).click()


def wait_until(condition, timeout: float = 10, every: float = 0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {condition}")


def elsewhere(requests: list[str], url: str) -> list[str]:
    """The requests that went anywhere but the server at `url` (data: and blob: URLs stay in the page)."""
    return [u for u in requests if not u.startswith((url + "/", "data:", "blob:"))]


def header_state(page) -> dict:
    """The last reply (its shown length, whether its numbers are there) and the header, read in one go."""
    return page.evaluate("""bot => {
        const bots = document.querySelectorAll(bot);
        const last = bots[bots.length - 1];
        let text = 0, done = false;
        if (last) {
            const c = last.cloneNode(true);
            done = c.querySelectorAll('.parley-stats').length > 0;
            c.querySelectorAll('.parley-stats').forEach(x => x.remove());
            text = c.innerText.trim().length;
        }
        return {text, done, header: document.querySelector('#parley-header').innerText};
    }""", BOT)


def busy_cells(header: str) -> tuple[int, int]:
    """(replies running, KV cells in use) as the header says them."""
    running = re.search(r"(\d+) replying", header)
    cells = re.search(r"live [^(]*\(([\d,]+) of", header)
    return (int(running.group(1)) if running else 0), int(cells.group(1).replace(",", ""))


def cancelled_count(url: str) -> int:
    text = httpx.get(url + "/metrics").text
    return int(float(re.search(r'parley_requests_finished_total\{reason="cancelled"\} (\S+)', text).group(1)))


# ---- 1. chat -------------------------------------------------------------------------------------------------
def test_a_reply_streams_in_and_is_stored(server, parley, pages):
    page = pages.new(server.url)
    header = page.inner_text("#parley-header")
    assert parley.name in header and "context 8,192 tokens" in header and "cache: live" in header

    box = page.locator("#parley-input textarea")
    box.click()
    box.type("Write two sentences")
    box.press("Shift+Enter")                      # a new line, nothing sent
    box.type("about the sea.")
    assert box.input_value() == "Write two sentences\nabout the sea."
    assert page.locator(USER).count() == 0
    box.press("Enter")                            # sends

    seen = []
    while not finished(page):
        seen.append(len(reply_text(page)))
        time.sleep(0.02)
    grew = [n for i, n in enumerate(seen) if n and (i == 0 or n > seen[i - 1])]
    assert len(grew) >= 3, f"the reply did not stream in: lengths seen {seen}"
    assert seen == sorted(seen)
    assert box.input_value() == ""

    (conv,) = conversations(parley, page)
    user, reply = branch(parley, conv.id)
    assert user.content == "Write two sentences\nabout the sea." and conv.title.startswith("Write two sentences")
    assert reply.finish_reason in ("stop", "length") and not reply.partial
    assert plain(reply_text(page)) == plain(reply.content)
    numbers = page.locator(BOT).last.locator(".parley-stats").inner_text()
    assert f"{reply.stats.generated_tokens} tokens" in numbers and "first token" in numbers
    assert "tokens/s" in numbers and f"of {reply.stats.prompt_tokens} prompt tokens cached" in numbers


def test_stop_ends_the_generation_on_the_server(long_server, parley, pages):
    page = pages.new(long_server.url)
    before = cancelled_count(long_server.url)
    send(page, STORY)
    wait_until(lambda: len(reply_text(page)) > 15)
    assert not finished(page)
    clicked = time.monotonic()
    page.click("#parley-stop")
    wait_until(lambda: parley.stats().running == 0)
    ended_s = time.monotonic() - clicked
    assert "stopped" in wait_reply(page, 1)

    (conv,) = conversations(parley, page)
    reply = branch(parley, conv.id)[-1]
    assert reply.finish_reason == "cancelled" and reply.partial
    assert 0 < reply.stats.generated_tokens < LONG_CAP
    assert cancelled_count(long_server.url) == before + 1
    assert ended_s < 2.0, f"the generation went on for {ended_s:.2f} s after Stop"
    assert plain(reply_text(page)).startswith(plain(reply.content)[:15])


def test_the_header_follows_a_reply_while_it_streams(long_server, parley, pages):
    page = pages.new(long_server.url)
    assert busy_cells(page.inner_text("#parley-header"))[0] == 0
    send(page, STORY)
    samples, deadline = [], time.monotonic() + 60
    while not (samples and samples[-1]["done"]) and time.monotonic() < deadline:
        samples.append(header_state(page))
        time.sleep(0.02)
    streaming = [s for s in samples if s["text"] and not s["done"]]
    assert len({s["text"] for s in streaming}) >= 3, f"the reply did not stream: {samples}"
    for s in streaming:       # from its first few words on, the header says a reply runs and holds cells
        running, cells = busy_cells(s["header"])
        assert s["text"] < FEW_WORDS or (running >= 1 and cells > 0), \
            f"while {s['text']} characters were shown: {s['header']!r}"
    wait_until(lambda: "idle" in page.inner_text("#parley-header"))   # and says when it is over


def test_the_header_shows_replies_of_other_clients(long_server, parley, pages):
    page = pages.new(long_server.url)
    assert busy_cells(page.inner_text("#parley-header"))[0] == 0
    done = threading.Event()

    def api_replies():            # one streamed chat completion after another until the header saw one
        body = {"messages": [{"role": "user", "content": STORY}], "max_tokens": LONG_CAP, "ignore_eos": True,
                "stream": True}
        with httpx.Client(base_url=long_server.url, timeout=60) as client:
            while not done.is_set():
                with client.stream("POST", "/v1/chat/completions", json=body) as r:
                    assert r.status_code == 200
                    for _ in r.iter_lines():
                        pass
    worker = threading.Thread(target=api_replies, daemon=True)
    worker.start()
    try:
        header = wait_until(lambda: (h := page.inner_text("#parley-header")) and busy_cells(h)[0] >= 1 and h,
                            timeout=30)
        assert busy_cells(header)[1] > 0
    finally:
        done.set()
        worker.join(30)
    wait_until(lambda: "idle" in page.inner_text("#parley-header"), timeout=30)


def test_retry_and_edit_make_branches(server, parley, pages):
    page = pages.new(server.url)
    send(page, "Say hello.")
    wait_reply(page, 1)
    (conv,) = conversations(parley, page)
    first_user, first_reply = branch(parley, conv.id)

    page.click("#parley-retry")                  # a new reply beside the old one
    page.wait_for_function(f"document.querySelectorAll('{BOT} .parley-stats').length == 1 && "
                           f"!document.querySelector('{BOT}').getAttribute('aria-label').includes("
                           f"{json.dumps(first_reply.id)})")
    wait_until(lambda: branch(parley, conv.id)[-1].id != first_reply.id and not parley.conversations.generating(conv.id))
    wait_reply(page, 1)
    store = parley.store
    replies = store.children(first_user.id, conv.id)
    assert [m.role for m in replies] == ["assistant", "assistant"]
    assert branch(parley, conv.id)[-1].id == replies[-1].id and page.locator(BOT).count() == 1

    page.locator(USER).first.hover()
    page.get_by_role("button", name="Edit").first.click()   # the message said differently: a new branch
    page.locator("#parley-chat textarea.edit-textarea").fill("Say goodbye.")
    page.get_by_role("button", name="Submit").click()
    wait_until(lambda: branch(parley, conv.id)[0].content == "Say goodbye." and
               not parley.conversations.generating(conv.id))
    wait_reply(page, 1)
    roots = store.children(None, conv.id)
    assert sorted(m.content for m in roots) == ["Say goodbye.", "Say hello."]
    assert page.locator(USER).first.inner_text().strip() == "Say goodbye."


def test_errors_are_readable_messages(server, parley, pages):
    page = pages.new(server.url)
    page.click("#parley-options")
    fill(page.get_by_label("Stop strings (one per line)"), "\n".join(f"stop{i}" for i in range(17)))
    send(page, "Hello there.")
    toast = page.locator(".toast-body", has_text="stop takes at most 16 strings")
    toast.wait_for()
    assert "Traceback" not in page.content()
    assert page.locator(BOT).count() == 0
    assert conversations(parley, page) == []           # nothing stored for a message that was refused


def test_a_long_prompt_shows_its_reading_progress(server, parley, pages):
    page = pages.new(server.url)
    text = " ".join(f"Item {i}: a red kite flies over green hills." for i in range(60))   # ~750 tokens
    send(page, text + "\nWhich item number comes last?")
    status = page.locator("#parley-status", has_text="Reading the prompt:")
    status.wait_for(timeout=20_000)
    assert re.search(r"Reading the prompt: [\d,]+ of [\d,]{3,5} tokens \(\d+%\)", status.inner_text())
    wait_reply(page, 1)
    assert "Reading the prompt" not in page.inner_text("#parley-status")


# ---- 2. the sidebar -------------------------------------------------------------------------------------------
def test_reload_finds_the_conversation_and_continues_it(server, parley, pages):
    page = pages.new(server.url)
    send(page, "Name three colours.")
    wait_reply(page, 1)
    (conv,) = conversations(parley, page)
    first_reply = branch(parley, conv.id)[-1]

    code = {"format": "parley.conversation", "version": 1,
            "conversation": {"title": "Code sample", "leaf_id": "m2"},
            "messages": [{"id": "m1", "parent_id": None, "role": "user", "content": "Show me a loop."},
                         {"id": "m2", "parent_id": "m1", "role": "assistant", "finish_reason": "stop",
                          "content": "Here:\n\n```python\nfor i in range(3):\n    print(i)\n```"}]}
    parley.conversations.owned_by(owner(page)).import_(code)

    page.reload()
    open_page(page, server.url)
    listed = page.locator("#parley-conversations label")
    listed.first.wait_for()
    assert [t.split(" · ")[0] for t in listed.all_inner_texts()] == ["Code sample", conv.title]

    page.locator("#parley-conversations label", has_text="Code sample").click()
    code_block = page.locator(f"{BOT} pre code")
    code_block.wait_for()
    assert "for i in range(3):" in code_block.inner_text()
    assert page.locator(f"{BOT} pre code span.token").count() > 0          # highlighted
    assert page.locator(f"{BOT} .code_wrap button.copy_code_button").count() == 1    # its copy button
    pages.shoot(page, "-code")

    page.locator("#parley-conversations label", has_text=conv.title).click()
    page.locator(USER, has_text="Name three colours.").wait_for()
    assert plain(reply_text(page, 0)) == plain(first_reply.content)
    send(page, "And three animals?")
    wait_reply(page, 2)
    second = branch(parley, conv.id)[-1]
    # the first turn's prompt and reply were not read again: their KV came back from the cache
    assert second.stats.cached_tokens >= first_reply.stats.prompt_tokens + first_reply.stats.generated_tokens - 2


CUT_IN_CODE = {        # replies that max tokens cut off inside a code fence
    "top level": "Sure:\n\n```python\ndef area(r):\n    return 3.14 * r * r\n",
    "in a list item": "Steps:\n\n1. Write it:\n\n   ```python\n   def area(r):\n       return 3.14 * r * r",
    "a longer fence": "Markdown:\n\n````markdown\n```python\ndef area(r): pass\n```\n\ndef area(r):",
}


@pytest.mark.parametrize("case", list(CUT_IN_CODE))
def test_a_reply_cut_inside_a_code_fence_shows_its_numbers_outside_the_code(server, parley, pages, case):
    page = pages.new(server.url)
    parley.conversations.owned_by(owner(page)).import_({"format": "parley.conversation", "version": 1,
        "conversation": {"title": "Cut in code", "leaf_id": "m2"},
        "messages": [{"id": "m1", "parent_id": None, "role": "user", "content": "Write area(r) in Python."},
                     {"id": "m2", "parent_id": "m1", "role": "assistant", "finish_reason": "length",
                      "content": CUT_IN_CODE[case],
                      "stats": {"generated_tokens": 67, "prompt_tokens": 54, "cached_tokens": 26}}]})
    page.reload()
    open_page(page, server.url)
    page.locator("#parley-conversations label", has_text="Cut in code").click()
    code = page.locator(f"{BOT} pre code").last
    code.wait_for()
    assert "def area(r):" in code.inner_text() and "parley-stats" not in code.inner_text()
    assert page.locator(f"{BOT} pre .parley-stats").count() == 0
    numbers = page.locator(f"{BOT} .parley-stats")
    assert numbers.inner_text() == "67 tokens · 26 of 54 prompt tokens cached · cut at max tokens"
    if case == "in a list item":          # the code stays in its item
        assert page.locator(f"{BOT} ol li pre code").count() == 1
    pages.shoot(page, "-code")


def test_sidebar_pages_renames_exports_and_deletes(server, parley, pages):
    page = pages.new(server.url)
    mine = owner(page)
    for i in range(14):
        parley.conversations.owned_by(mine).create(title=f"Old {i:02d}")
    page.reload()
    open_page(page, server.url)
    listed = page.locator("#parley-conversations label")
    wait_until(lambda: listed.count() == 12)
    assert listed.first.inner_text().startswith("Old 13")
    page.click("#parley-older")
    wait_until(lambda: listed.count() == 2)
    assert [t.split(" · ")[0] for t in listed.all_inner_texts()] == ["Old 01", "Old 00"]
    assert page.locator("#parley-older").is_disabled()
    page.click("#parley-newer")
    wait_until(lambda: listed.count() == 12)

    listed.filter(has_text="Old 05").click()
    wait_until(lambda: page.input_value("#parley-title input") == "Old 05")
    page.fill("#parley-title input", "Renamed on the page")
    page.click("#parley-rename")
    listed.filter(has_text="Renamed on the page").wait_for()
    (renamed,) = [c for c in conversations(parley, page) if c.title == "Renamed on the page"]

    with page.expect_download() as download:
        page.click("#parley-export")
    exported = json.loads(open(download.value.path()).read())
    assert download.value.suggested_filename == "Renamed-on-the-page.json"
    assert exported["format"] == "parley.conversation" and exported["conversation"]["id"] == renamed.id

    page.click("#parley-delete")
    wait_until(lambda: listed.filter(has_text="Renamed on the page").count() == 0)
    assert renamed.id not in {c.id for c in conversations(parley, page)}


# ---- 3. skills and personas -----------------------------------------------------------------------------------
def test_a_skill_and_its_example_are_applied(server, parley, pages):
    page = pages.new(server.url)
    pick(page, "#parley-skill", "translate")
    page.locator("#parley-param-0 input").wait_for()
    assert "to" in page.inner_text("#parley-param-0")
    page.locator("#parley-examples button", has_text="The train leaves at nine").click()
    wait_until(lambda: page.input_value("#parley-param-0 input") == "French")
    assert page.input_value("#parley-input textarea") == "The train leaves at nine; please do not be late."
    page.click("#parley-send")
    wait_reply(page, 1)

    (conv,) = conversations(parley, page)
    user = branch(parley, conv.id)[0]
    assert user.meta["skill"] == "translate" and user.meta["skill_params"] == {"to": "French"}
    assert "Translate the text" in user.meta["prompt_content"]
    assert page.locator(USER).first.locator(".parley-stats").inner_text() == "skill translate (to=French)"


def test_a_persona_greets_speaks_and_can_be_edited_or_imported(server, parley, pages, tmp_path):
    page = pages.new(server.url)
    page.click("#parley-persona-box")
    pick(page, "#parley-persona", "night-train")
    page.locator(BOT, has_text="Can't sleep either?").wait_for()            # its greeting opens it
    (conv,) = conversations(parley, page)
    assert conv.settings["persona"]["name"] == "night-train"

    send(page, "Hello. Is the coffee hot?")
    numbers = wait_reply(page, 2)
    reply = branch(parley, conv.id)[-1]
    assert reply.meta["speaker"] == "Odile" and numbers.startswith("Odile · ")
    page.locator("#parley-header").scroll_into_view_if_needed()
    pages.shoot(page, "-reply")

    fill(page.get_by_label("Scenario"), "A stormy night; the train has stopped at a small station.")
    page.click("#parley-apply")
    page.locator(".toast-body", has_text="The persona is updated").wait_for()
    card = parley.store.get_conversation(conv.id).settings["persona"]["card"]
    assert card["data"]["scenario"] == "A stormy night; the train has stopped at a small station."

    path = tmp_path / "wren.json"
    path.write_text(json.dumps({"spec": "chara_card_v2", "spec_version": "2.0", "data": {
        "name": "Captain Wren", "description": "{{char}} sails a small boat along the coast.",
        "personality": "cheerful", "scenario": "", "first_mes": "Ahoy! Welcome aboard the Gull.",
        "mes_example": "", "creator_notes": "", "system_prompt": "", "post_history_instructions": "",
        "alternate_greetings": [], "tags": [], "creator": "", "character_version": "", "extensions": {}}}))
    page.locator("#parley-card input[type=file]").set_input_files(str(path))
    page.locator(BOT, has_text="Ahoy! Welcome aboard the Gull.").wait_for()
    assert "captain-wren" in parley.personas.names()                      # saved with the user's personas
    assert page.input_value("#parley-persona input") == "captain-wren"
    newest = conversations(parley, page)[0]
    assert newest.settings["persona"]["name"] == "captain-wren"
    assert newest.settings["persona"]["card"]["data"]["name"] == "Captain Wren"


# ---- 5. documents ---------------------------------------------------------------------------------------------
def test_a_document_is_uploaded_and_answers_cite_it(server, parley, pages, tmp_path):
    page = pages.new(server.url)
    page.click("#parley-documents")
    path = tmp_path / "harbour-notes.md"
    path.write_text("# Harbour notes\n\nThe lighthouse keeper is called Marit Olsen.\n\n"
                    "## Boats\n\nThe ferry to the island leaves at seven every morning.\n")
    page.locator("#parley-doc-files input[type=file]").set_input_files(str(path))
    page.locator("#parley-doc-list", has_text="harbour-notes.md").wait_for()
    listed = page.inner_text("#parley-doc-list")
    assert "tokens" in listed and "whole in the context" in listed

    mine = parley.documents.owned_by(owner(page)).list()
    assert [d.name for d in mine] == ["harbour-notes.md"]
    doc = mine[0]
    assert page.locator("#parley-doc-pick input[type=checkbox]").first.is_checked()   # a new upload is ticked
    assert f"{doc.tokens:,} tokens" in page.inner_text("#parley-doc-pick")

    box = page.locator("#parley-doc-question textarea")
    box.fill("When does the ferry leave?")
    page.click("#parley-doc-ask")
    answer = page.locator("#parley-doc-answer")
    answer.locator(".parley-stats").wait_for(timeout=60_000)
    shown = answer.inner_text()
    assert "Sources" in shown and "harbour-notes.md" in shown
    assert "prompt tokens cached" in shown
    answer.scroll_into_view_if_needed()
    pages.shoot(page, "-answer")

    # a second question reuses the document's memory: most of its prompt comes from the cache
    first = answer.locator(".parley-stats").inner_text()
    box.fill("Who keeps the lighthouse?")
    page.click("#parley-doc-ask")
    stats = answer.locator(".parley-stats")
    numbers = wait_until(lambda: stats.count() and stats.inner_text() != first and stats.inner_text(), timeout=60)
    cached, prompt = (int(x) for x in re.search(r"(\d+) of (\d+) prompt tokens cached", numbers).groups())
    assert cached >= doc.tokens - 8 and prompt > cached, numbers

    # another browser sees none of it
    other = pages.new(server.url)
    other.click("#parley-documents")
    assert "harbour-notes.md" not in other.inner_text("#parley-doc-list")

    page.click("#parley-doc-delete")
    page.locator("#parley-doc-list", has_text="No documents yet").wait_for()
    assert parley.documents.owned_by(owner(page)).list() == []


def test_a_long_document_shows_its_reading_progress(server, parley, pages, tmp_path):
    page = pages.new(server.url)
    page.click("#parley-documents")
    path = tmp_path / "tides.txt"
    path.write_text("\n".join(f"Day {i}: high water at {i % 12 + 1} o'clock, low water six hours later."
                               for i in range(50)))                                       # ~900 tokens
    page.locator("#parley-doc-files input[type=file]").set_input_files(str(path))
    page.locator("#parley-doc-list", has_text="tides.txt").wait_for()
    page.locator("#parley-doc-question textarea").fill("When is high water on day 7?")
    page.click("#parley-doc-ask")
    status = page.locator("#parley-doc-status", has_text="Reading the documents once")
    status.wait_for(timeout=20_000)
    assert re.search(r"[\d,]+ of [\d,]{3,5} tokens \(\d+%\)", status.inner_text())
    page.locator("#parley-doc-answer .parley-stats").wait_for(timeout=60_000)
    assert "Reading" not in page.inner_text("#parley-doc-status")


# ---- several people -------------------------------------------------------------------------------------------
def test_two_pages_stream_at_once_and_stop_alone(long_server, parley, pages):
    spans = []
    remove = parley.on_finish(lambda req, r: spans.append((time.monotonic() - r.total_s, time.monotonic(), r)))
    try:
        a, b = pages.new(long_server.url), pages.new(long_server.url)     # two browsers: two owners
        send(a, STORY)
        send(b, STORY.replace("dragon", "mouse"))
        both = wait_until(lambda: reply_text(a) and reply_text(b) and parley.stats().running == 2, timeout=30)
        assert both and not finished(a) and not finished(b)
        grown = len(reply_text(b))
        a.click("#parley-stop")
        assert "stopped" in wait_reply(a, 1)
        assert not finished(b), "the other page's reply ended with this one"
        numbers = wait_reply(b, 1)
        assert "stopped" not in numbers and len(reply_text(b)) > grown
    finally:
        remove()
    (conv_a,), (conv_b,) = conversations(parley, a), conversations(parley, b)
    assert conv_a.id != conv_b.id
    assert branch(parley, conv_a.id)[-1].finish_reason == "cancelled"
    assert branch(parley, conv_b.id)[-1].finish_reason in ("stop", "length")
    (start_a, end_a, _), (start_b, end_b, _) = spans[-2:]
    assert start_a < end_b and start_b < end_a, "the two replies were not generated at the same time"
    assert a.locator("#parley-conversations label").count() == 1           # each browser lists only its own
    assert b.locator("#parley-conversations label").count() == 1


# ---- the API key ----------------------------------------------------------------------------------------------
def test_a_wrong_key_is_refused_and_the_right_one_lets_the_page_in(keyed_server, pages):
    page = pages.new()
    page.goto(keyed_server.url, wait_until="load")
    assert page.url == keyed_server.url + "/login"
    page.fill("#key", "not-the-key")
    with page.expect_response(lambda r: r.url.endswith("/login") and r.request.method == "POST") as answer:
        page.click("button[type=submit]")
    assert answer.value.status == 401
    page.get_by_role("alert").wait_for()
    assert "not this server's API key" in page.inner_text("main")
    assert page.locator("#parley-input").count() == 0
    pages.shoot(page, "-refused")

    page.fill("#key", API_KEY)
    page.click("button[type=submit]")
    page.wait_for_url(keyed_server.url + "/")
    open_page(page, keyed_server.url)
    cookie = next(c for c in page.context.cookies() if c["name"] == "parley_key")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and API_KEY not in cookie["value"]
    send(page, "Hi!")
    wait_reply(page, 1)

    assert page.request.get(keyed_server.url + "/v1/models").status == 401   # the cookie does not open the API
    bearer = {"Authorization": f"Bearer {API_KEY}"}
    assert page.request.get(keyed_server.url + "/v1/models", headers=bearer).status == 200


# ---- offline ----------------------------------------------------------------------------------------------------
def test_the_page_asks_nothing_of_other_hosts(server, pages):
    page = pages.new(server.url)
    for box in ("#parley-persona-box", "#parley-options", "#parley-documents"):
        page.click(box)
    send(page, "Hi!")
    wait_reply(page, 1)
    page.goto(server.url + "/docs", wait_until="load")
    page.locator(".swagger-ui .opblock").first.wait_for()
    assert len(pages.requests) > 20 and elsewhere(pages.requests, server.url) == []


def test_docs_render_offline(server, pages):
    page = pages.new()
    page.goto(server.url + "/docs", wait_until="load")
    page.locator(".swagger-ui .opblock").first.wait_for()
    assert page.locator(".swagger-ui .opblock").count() >= 20
    assert "parley" in page.inner_text(".swagger-ui .info")
    page.locator('.swagger-ui .opblock-summary-path[data-path="/v1/chat/completions"]').click()   # a route opens
    page.locator(".swagger-ui .opblock.is-open .opblock-body").first.wait_for()
    assert httpx.get(server.url + "/redoc").status_code == 404   # dropped: ReDoc's page reaches the internet
    assert len(pages.requests) > 3 and elsewhere(pages.requests, server.url) == []
