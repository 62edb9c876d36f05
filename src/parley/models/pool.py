"""The pool: the models loaded in one process, each with its own engine, scheduler and KV tiers.

    pool = Pool(load, models_max=3, idle_s=600, memory_bytes=..., estimate=...)
    with pool.use(entry) as loaded: ...      # loaded on first use (others wait for the same load), kept warm
    pool.unload("name"); pool.states(); pool.close()

A model loads on its first use; `load(entry, progress)` makes it (the facade's per-model parts) and reports
the load's progress (0..1), which `states()` shows. Loading another would pass `models_max`, or the memory
budget (each model's estimated weights + KV): the least recently used loaded model is unloaded first, never
one in use (a `use()` block open, or requests running or waiting in its scheduler). If none can go, the new
load is refused (429, retry later) instead of waiting. A model nobody used for `idle_s` is unloaded by a
reaper thread; `keep_alive(name, seconds)` sets that time for one model until it next loads (Ollama's
per-request `keep_alive`: math.inf never, None back to `idle_s`). Unloading closes the model's scheduler with
its KV saved: idle conversations' sequences go to the disk tier, so a conversation that comes back costs a
restore, not a re-read.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from parley.errors import Conflict, ModelError, Overloaded, ShuttingDown

log = logging.getLogger("parley.models")
REAP_EVERY_S = 30.0


@dataclass
class _Slot:
    name: str
    entry: Any                       # models.registry.ModelEntry
    loaded: Any = None               # what load() made: .busy(), .footprint, .close(save=)
    state: str = "unloaded"          # unloaded | loading | loaded
    progress: float = 0.0
    last_used: float = 0.0
    users: int = 0                   # open use() blocks
    error: str | None = None         # why the last load failed
    loads: int = 0
    keep_alive: float | None = None  # idle seconds before it unloads, for this load only (None: the pool's)


@dataclass(frozen=True, slots=True)
class SlotState:
    name: str
    state: str
    progress: float
    last_used: float
    error: str | None
    loads: int
    footprint: int
    idle_s: float = math.inf         # idle seconds before it unloads (inf: it never unloads for being idle)


class Pool:
    def __init__(self, load: Callable[[Any, Callable[[float], None]], Any], *, models_max: int, idle_s: float,
                 memory_bytes: int, estimate: Callable[[Any], int]):
        self._load = load
        self.models_max = models_max
        self.idle_s = idle_s
        self.memory_bytes = memory_bytes          # 0: no budget
        self._estimate = estimate
        self._slots: dict[str, _Slot] = {}
        self._lock = threading.Lock()             # the slots' fields; never held while loading or closing
        self._loading: dict[str, threading.Lock] = {}
        self._closed = False
        self._stop = threading.Event()
        self._reaper: threading.Thread | None = None
        if idle_s > 0:
            self._start_reaper()

    # ---- use -----------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def use(self, entry) -> Iterator[Any]:
        """The loaded model of `entry` (loading it first if need be), kept from unloading while the block runs."""
        slot = self._slot(entry)
        with self._lock:
            slot.users += 1
        try:
            yield self._ensure(slot)
        finally:
            with self._lock:
                slot.users -= 1
                slot.last_used = time.monotonic()

    def get(self, entry) -> Any:
        """The loaded model (loading it if need be); not held: use() holds it while a request is submitted."""
        with self.use(entry) as loaded:
            return loaded

    def loaded(self, name: str) -> Any | None:
        """The model if it is loaded now (never loads)."""
        with self._lock:
            slot = self._slots.get(name)
            return slot.loaded if slot is not None and slot.state == "loaded" else None

    def all_loaded(self) -> list[tuple[str, Any]]:
        with self._lock:
            return [(s.name, s.loaded) for s in self._slots.values() if s.state == "loaded"]

    def states(self) -> dict[str, SlotState]:
        with self._lock:
            return {s.name: SlotState(s.name, s.state, s.progress, s.last_used, s.error, s.loads,
                                      getattr(s.loaded, "footprint", 0) if s.loaded is not None else 0,
                                      self._idle_of(s))
                    for s in self._slots.values()}

    def keep_alive(self, name: str, seconds: float | None) -> None:
        """How long `name` stays loaded once idle, until it next loads (None: idle_s; math.inf: no idle unload;
        0: at the next reap once idle). Making room for another model may still unload it."""
        with self._lock:
            slot = self._slots.get(name)
            if slot is None or slot.state != "loaded":
                return
            slot.keep_alive = seconds
        if seconds is not None and math.isfinite(seconds):
            self._start_reaper()

    # ---- unloading -------------------------------------------------------------------------------------------
    def unload(self, name: str, *, save: bool = True) -> bool:
        """Unload a model now (its KV saved). False when it was not loaded; a 409 while it is in use."""
        with self._lock:
            slot = self._slots.get(name)
            if slot is None or slot.state != "loaded":
                return False
            if self._in_use(slot):
                raise Conflict(f"model {name!r} is generating: it unloads once its requests end", param="model",
                               code="model_busy")
            loaded, slot.loaded, slot.state = slot.loaded, None, "unloaded"
        self._close(name, loaded, save)
        return True

    def reap(self, now: float | None = None) -> list[str]:
        """Unload every model nobody used for idle_s (what the reaper thread does); returns their names."""
        now = time.monotonic() if now is None else now
        with self._lock:
            idle = [s for s in self._slots.values() if s.state == "loaded" and not self._in_use(s)
                    and now - s.last_used >= self._idle_of(s)]
            for s in idle:
                s.state = "unloaded"
            taken = [(s.name, s.loaded) for s in idle]
            for s in idle:
                s.loaded = None
        for name, loaded in taken:
            log.info("model %s unloaded after being idle (--model-idle %.0f s, or its keep_alive)", name,
                     self.idle_s)
            self._close(name, loaded, True)
        return [n for n, _ in taken]

    def close(self, *, save: bool = True) -> None:
        self._stop.set()
        with self._lock:
            self._closed = True
            taken = [(s.name, s.loaded) for s in self._slots.values() if s.loaded is not None]
            for s in self._slots.values():
                s.loaded, s.state = None, "unloaded"
        for name, loaded in taken:
            self._close(name, loaded, save)

    # ---- internals -----------------------------------------------------------------------------------------
    def _slot(self, entry) -> _Slot:
        with self._lock:
            slot = self._slots.get(entry.name)
            if slot is None or slot.entry != entry:
                if slot is not None and slot.state != "unloaded":
                    slot.entry = entry          # an edited entry takes effect at the next load
                else:
                    slot = self._slots[entry.name] = _Slot(entry.name, entry)
                self._loading.setdefault(entry.name, threading.Lock())
            return slot

    @staticmethod
    def _in_use(slot: _Slot) -> bool:
        return slot.users > 0 or (slot.loaded is not None and slot.loaded.busy())

    def _ensure(self, slot: _Slot) -> Any:
        with self._lock:
            if slot.state == "loaded":
                slot.last_used = time.monotonic()
                return slot.loaded
        with self._loading[slot.name]:              # one load per model; the others wait for it
            with self._lock:
                if slot.state == "loaded":
                    return slot.loaded
                if self._closed:
                    raise ShuttingDown("parley is shutting down; no model loads")
            self._make_room(slot)
            with self._lock:
                slot.state, slot.progress, slot.error = "loading", 0.0, None
            t0 = time.monotonic()
            log.info("loading model %s (%s)", slot.name, slot.entry.path)

            def progress(fraction: float) -> None:
                slot.progress = max(0.0, min(1.0, fraction))

            try:
                loaded = self._load(slot.entry, progress)
            except BaseException as e:
                with self._lock:
                    slot.state, slot.error = "unloaded", str(e) or type(e).__name__
                raise
            with self._lock:
                slot.loaded, slot.state, slot.progress = loaded, "loaded", 1.0
                slot.last_used = time.monotonic()
                slot.loads += 1
                slot.keep_alive = None          # a keep_alive lasts one load
            log.info("model %s loaded in %.1f s", slot.name, time.monotonic() - t0)
            return loaded

    def _make_room(self, slot: _Slot) -> None:
        """Unload least recently used idle models until the new one fits models_max and the memory budget."""
        need = self._estimate(slot.entry)
        while True:
            with self._lock:
                loaded = [s for s in self._slots.values() if s.state in ("loaded", "loading") and s is not slot]
                used = sum(getattr(s.loaded, "footprint", 0) for s in loaded if s.loaded is not None)
                over_count = len(loaded) + 1 > self.models_max
                over_memory = self.memory_bytes > 0 and used + need > self.memory_bytes
                if not over_count and not over_memory:
                    return
                idle = sorted((s for s in loaded if s.state == "loaded" and not self._in_use(s)),
                              key=lambda s: s.last_used)
                if not idle:
                    if not loaded and over_memory:
                        raise ModelError(f"model {slot.name!r} needs about {need >> 20} MB (weights and KV) and "
                                         f"the memory budget is {self.memory_bytes >> 20} MB "
                                         "(--models-memory-mb): raise it, or lower its kv_size")
                    why = (f"--models-max is {self.models_max}" if over_count else
                           f"the memory budget (--models-memory-mb, {self.memory_bytes >> 20} MB) is taken")
                    raise Overloaded(f"model {slot.name!r} cannot be loaded now: {why} and every loaded model "
                                     "is generating; retry in a moment")
                victim = idle[0]
                taken, victim.loaded, victim.state = victim.loaded, None, "unloaded"
            reason = "--models-max" if over_count else "the memory budget"
            log.info("model %s unloaded to make room for %s (%s)", victim.name, slot.name, reason)
            self._close(victim.name, taken, True)

    @staticmethod
    def _close(name: str, loaded, save: bool) -> None:
        try:
            loaded.close(save=save)
        except Exception:
            log.exception("closing model %s failed", name)

    def _idle_of(self, slot: _Slot) -> float:
        """The idle seconds after which `slot` unloads: its keep_alive, else idle_s (0: never, so inf)."""
        if slot.keep_alive is not None:
            return slot.keep_alive
        return self.idle_s if self.idle_s > 0 else math.inf

    def _start_reaper(self) -> None:
        with self._lock:
            if self._reaper is not None or self._closed:
                return
            self._reaper = threading.Thread(target=self._reap_loop, name="parley-model-reaper", daemon=True)
        self._reaper.start()

    def _reap_every(self) -> float:
        """A quarter of the shortest idle time in force (a keep_alive of 10 s unloads within 12.5 s)."""
        with self._lock:
            times = [self._idle_of(s) for s in self._slots.values() if s.state == "loaded"]
        return max(0.05, min([REAP_EVERY_S, *(t / 4 for t in times if t < math.inf)]))

    def _reap_loop(self) -> None:
        while not self._stop.wait(self._reap_every()):
            try:
                self.reap()
            except Exception:
                log.exception("unloading idle models failed")
