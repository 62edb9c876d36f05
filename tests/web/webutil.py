"""What the web tests share beside their fixtures (a module of its own: `conftest` names clash across test
directories when the whole suite runs)."""

from __future__ import annotations

API_KEY = "web-test-key-4242"
SHORT_CAP = 48     # tokens per reply on the main test server: replies stay short
CORS_ORIGIN = "http://localhost:5173"   # the one origin the CORS test server lets in
LONG_CAP = 200     # the server for Stop and two pages at once: a reply lasts long enough to be watched


def open_page(page, url: str) -> None:
    """Open the chat page: wait for "load", then for the message box (Gradio keeps a connection open, so the
    network never goes idle)."""
    page.goto(url, wait_until="load")
    page.wait_for_selector("#parley-input textarea")
    page.wait_for_selector("#parley-header:has-text('cache: live')")


def fill(box, text: str, timeout_s: float = 10.0) -> None:
    """Fill a text box until it holds `text`: a box inside an accordion that was just opened can be drawn anew a
    moment later, and a fill of the first drawing is lost (the page then sends what the new one holds)."""
    import time

    deadline = time.monotonic() + timeout_s
    box.wait_for(state="visible")
    while True:
        box.fill(text)
        time.sleep(0.2)
        if box.input_value() == text or time.monotonic() > deadline:
            break
    assert box.input_value() == text, "the text box did not keep what was typed"
