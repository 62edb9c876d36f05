"""What the page renders from stored messages and model views (web/view.py, web/fences.py, web/controls.py),
without a browser or a model: above all, that a reply cut off inside a fenced code block is closed before its
numbers, so they never render as code."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from parley.web import view
from parley.web.fences import close_fences, closing

STATS = '<div class="parley-stats">'


@pytest.mark.parametrize("text", [
    "",
    "Plain words.",
    "Here:\n\n```python\nfor i in range(3):\n    print(i)\n```",
    "Here:\n\n```python\nx = 1\n```\n\nAnd more text.",
    "```\nx\n`````",                                   # a longer closing fence closes
    "```\ncode\n```   ",                              # spaces after the closing fence
    "~~~\ncode\n~~~~",
    "Use ```inline code``` here.",                    # not at the start of a line
    "```python```",                                   # a backtick fence's info has no backtick: inline code
    "Text:\n\n    ```\n    indented code, not a fence",   # four spaces: indented code
    "1. Install:\n\n   ```bash\n   pip install x\n   ```\n2. Run it.",
    "> ```\n> quoted code\n> ```",
    "- item\n  ```\n  code\nafter the item",           # an unindented line ends the item and its fence
    "> ```\n> quoted code\n\noutside the quote",      # so does a line without the quote's marker
])
def test_text_that_ends_outside_a_fence_is_left_alone(text):
    assert closing(text) is None
    assert close_fences(text) == text


@pytest.mark.parametrize("text, close", [
    ("```python\nx = 1", "```"),
    ("Here is the loop:\n\n```python\nfor i in range(3):\n", "```"),
    ("  ```\nindented opener", "```"),                 # up to three spaces: still a fence
    ("````markdown\n```python\nprint(1)\n```\n", "````"),   # nested backticks: the inner fence is content
    ("````\ncode\n```", "````"),                       # a shorter fence does not close a longer one
    ("~~~\ncode", "~~~"),
    ("~~~\n```\nnot closed by backticks", "~~~"),
    ("```\n~~~\nnot closed by tildes", "```"),
    ("```\ncode\n``` not a closing fence", "```"),     # a closing fence has nothing after it
    ("```js\nconst s = `a`;", "```"),
    ("~~~ `info` with backticks\ncode", "~~~"),        # a tilde fence's info may hold backticks
    ("1. Install:\n\n   ```bash\n   pip install x", "   ```"),      # in a list item: at the item's indent
    ("- ```python\n  x = 1", "  ```"),                 # opened on the item's own line
    ("- a\n  - b\n\n    ```\n    code", "    ```"),    # in a nested item
    ("- a\nlazy line\n  ```\n  code", "  ```"),         # a lazy continuation keeps the item open
    ("> ```\n> quoted code", "> ```"),
    ("    ```python\nthe first line's indent is stripped by Gradio", "```"),
    ("\t```\nafter the first line a tab is indented code, on it the fence", "```"),
])
def test_an_open_fence_is_closed_in_its_container(text, close):
    assert closing(text) == close
    closed = close_fences(text)
    assert closed.startswith(text) and closed.endswith("\n" + close) and closing(closed) is None


def message(content: str, **fields):
    base = {"id": "m1", "role": "assistant", "content": content, "partial": False, "finish_reason": "length",
            "meta": {}, "stats": SimpleNamespace(generated_tokens=67, prompt_tokens=54, cached_tokens=26,
                                                  ttft_s=0.12, tokens_per_s=80.0)}
    return SimpleNamespace(**{**base, **fields})


def test_a_reply_cut_inside_a_fence_gets_its_numbers_after_the_fence():
    (shown,), ids = view.chat_messages([message("Sure:\n\n```python\ndef f():\n    return 1\n")])
    body, numbers = shown["content"].split(STATS)
    assert body == "Sure:\n\n```python\ndef f():\n    return 1\n```\n\n"
    assert numbers.startswith("67 tokens · 26 of 54 prompt tokens cached") and "cut at max tokens" in numbers
    assert closing(body) is None and ids == ["m1"]


def test_a_closed_reply_is_shown_as_written():
    text = "Sure:\n\n```python\nx = 1\n```"
    (shown,), _ = view.chat_messages([message(text, finish_reason="stop")])
    assert shown["content"].split(STATS)[0] == text + "\n\n"


# ---- the model picker and the header (web/view.py, web/controls.py) -------------------------------------------
def model(state: str, progress: float = 0.0, device: str = "cpu (not loaded)"):
    from parley.api.models import ModelView
    return ModelView(name="second", path="/m/second.gguf", source="file", origin="user", description="",
                     state=state, progress=progress, device=device, context_size=2048, size_bytes=1,
                     architecture="llama", file_type="Q4_1", display_name="Second", default=False)


@pytest.mark.parametrize("state, progress, device, label", [
    ("loaded", 1.0, "cpu", "second · loaded · cpu"),
    ("loaded", 1.0, "gpu (31 of 31 layers)", "second · loaded · gpu (31 of 31 layers)"),
    ("loading", 0.416, "cpu (not loaded)", "second · loading 41%"),
    ("unloaded", 0.0, "cpu (not loaded)", "second · not loaded"),
    ("missing", 0.0, "cpu (not loaded)", "second · file missing"),
])
def test_a_model_is_listed_with_its_state_and_where_it_runs(state, progress, device, label):
    assert view.model_label(model(state, progress, device)) == label


def test_the_header_of_a_model_not_loaded_says_so_without_a_cache():
    from parley.api.loaded import ModelInfo
    info = ModelInfo(name="second", path="/m/second.gguf", context_size=2048, kv_size=8192, kv_bytes_per_cell=1,
                     device="cpu (not loaded)", threads=1, chat_format="model", max_running=4,
                     deterministic=False, loaded=False)
    line = view.header(info, None)
    assert line.startswith("**second** · context 2,048 tokens · cpu · not loaded") and "cache" not in line


def test_options_the_user_did_not_move_take_the_new_models_defaults():
    from parley.web import controls
    started = [0.7, 0.95, 40, 0.05, 1.1, 512, None, ""]
    fresh = [0.2, 0.95, 40, 0.05, 1.1, 512, None, ""]          # the new model's sampling: temperature 0.2
    moved = [0.7, 0.5, 40, 0.05, 1.1, 900, 7, "END"]           # top-p, max tokens, seed and stop moved
    assert controls.kept_options(moved, started, fresh, 2048) == [0.2, 0.5, 40, 0.05, 1.1, 900, 7, "END"]
    assert controls.kept_options(moved, started, fresh, 256)[controls.MAX_TOKENS] == 256   # at its limit
    capped = [0.7, 0.95, 40, 0.05, 1.1, 48, None, ""]          # unmoved at the old model's end (48)
    assert controls.kept_options(capped, capped, [*capped[:5], 512, None, ""], 2048)[controls.MAX_TOKENS] == 512
