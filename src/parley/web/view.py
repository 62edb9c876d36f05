"""What the page shows, rendered from the facade's views and the scheduler's stats (plain functions, no Gradio).

The model picker lists each model with its state ("loaded", "not loaded", "loading 40%") and, once loaded, where
it runs; the header names the picked model, its context and device, and its scheduler's numbers.

Chat messages are Gradio's messages format ({"role", "content"}), with the ids of the stored messages beside
them (the page maps a clicked message back to its row). Under each finished reply: who spoke (a persona's
character), its tokens, the prompt tokens the cache gave back, the time to first token and tokens/s, and how it
ended when it did not end by itself. The line is HTML after the message's Markdown, so a code fence the message
leaves open is closed before it (fences.py).
"""

from __future__ import annotations

import html
import time

from parley.web.fences import close_fences

STATS_CLASS = "parley-stats"
PLAIN_SKILL = "chat"       # the message as it is: nothing to say under it
ENDINGS = {"cancelled": "stopped", "length": "cut at max tokens", "error": "failed"}
NOT_LOADED = " (not loaded)"     # how the facade's device of a model not loaded yet ends


def size(n: int) -> str:
    """Bytes for people: 0 B, 12.3 KiB, 4.0 MiB, 1.2 GiB."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # pragma: no cover


def footer(m) -> str:
    """The line under a message (a stored Message): a reply's numbers, a user message's skill."""
    parts: list[str] = []
    if m.role == "assistant" and m.partial and m.finish_reason is None and not m.content:
        return ""                      # being written: its numbers come when it is recorded
    if m.role == "assistant":
        speaker = m.meta.get("speaker")
        if speaker:
            parts.append(str(speaker))
        s = m.stats
        if s.generated_tokens is not None:
            parts.append(f"{s.generated_tokens} tokens")
        if s.prompt_tokens:
            parts.append(f"{s.cached_tokens or 0} of {s.prompt_tokens} prompt tokens cached")
        if s.ttft_s is not None:
            parts.append(f"first token {s.ttft_s:.2f} s")
        if s.tokens_per_s:
            parts.append(f"{s.tokens_per_s:.1f} tokens/s")
        ending = ENDINGS.get(m.finish_reason or "")
        if ending:
            parts.append(ending)
        elif m.partial and m.finish_reason is None and m.content:
            parts.append("interrupted")
    elif m.meta.get("skill") and m.meta["skill"] != PLAIN_SKILL:
        params = m.meta.get("skill_params") or {}
        shown = ", ".join(f"{k}={v}" for k, v in params.items())
        parts.append(f"skill {m.meta['skill']}" + (f" ({shown})" if shown else ""))
    if not parts:
        return ""
    return f'<div class="{STATS_CLASS}">{html.escape(" · ".join(parts))}</div>'


def with_footer(content: str, line: str) -> str:
    """The message with its line under it, outside the Markdown before it: a fence the text leaves open (a
    reply cut off mid-code) is closed first, or the line would render as code."""
    return f"{close_fences(content)}\n\n{line}" if line else content


def chat_messages(branch) -> tuple[list[dict], list[str]]:
    """The chatbot's value and the message ids beside it, for a branch (MessageViews, root first)."""
    shown, ids = [], []
    for m in branch:
        if m.role == "system":
            continue
        shown.append({"role": m.role, "content": with_footer(m.content, footer(m))})
        ids.append(m.id)
    return shown, ids


def device(d: str) -> str:
    """Where a model runs, without the facade's "(not loaded)" (the page says that in its own words)."""
    return d.removesuffix(NOT_LOADED)


def model_state(m) -> str:
    """A model's state as the picker says it (m: a ModelView): loaded, not loaded, loading 40%."""
    if m.state == "loading":
        return f"loading {int(100 * m.progress)}%"
    return {"loaded": "loaded", "missing": "file missing"}.get(m.state, "not loaded")


def model_label(m) -> str:
    """A model in the picker: "name · loaded · cpu"; where it runs is known once it is loaded."""
    where = f" · {device(m.device)}" if m.state == "loaded" else ""
    return f"{m.name} · {model_state(m)}{where}"


def loading(name: str, fraction: float) -> str:
    return f"Loading {name}: {int(100 * fraction)}%"


def header(info, stats) -> str:
    """The line at the top: the model, its context, and the cache's three tiers (live KV, RAM, disk); a model
    not loaded yet has no cache to show."""
    if not info.loaded:
        return (f"**{html.escape(info.name)}** · context {info.context_size:,} tokens · "
                f"{html.escape(device(info.device))} · not loaded (it loads with the first message)")
    live = stats.kv_cells_used * info.kv_bytes_per_cell
    busy = f"{stats.running} replying, {stats.waiting} waiting" if stats.running or stats.waiting else "idle"
    return (f"**{html.escape(info.name)}** · context {info.context_size:,} tokens · {html.escape(info.device)} · "
            f"{busy}  \ncache: live {size(live)} ({stats.kv_cells_used:,} of {stats.kv_cells_budget:,} cells, "
            f"{stats.live_sequences} sequences) · RAM {size(stats.ram_bytes)} ({stats.ram_states} saved) · "
            f"disk {size(stats.disk_bytes)} ({stats.disk_states} saved)")


def progress(read: int, total: int, what: str = "the prompt") -> str:
    pct = 100 * read // total if total else 0
    return f"Reading {what}: {read:,} of {total:,} tokens ({pct}%)"


def conversation_label(conv, now: float | None = None) -> str:
    """"Title · 4 messages · 2 min ago" (conv: a ConversationView); untitled: the persona's character, else
    what it is."""
    persona = conv.character
    title = conv.title or (f"With {persona}" if persona else "Untitled" if conv.message_count else "Empty")
    n = conv.message_count
    return f"{title} · {n} message{'' if n == 1 else 's'} · {ago(conv.updated, now)}"


def ago(t: float, now: float | None = None) -> str:
    s = max(0, int((now or time.time()) - t))
    for unit, n in (("d", 86400), ("h", 3600), ("min", 60)):
        if s >= n:
            return f"{s // n} {unit} ago"
    return "just now"
