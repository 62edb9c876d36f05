"""SchedulerSettings: the scheduler's section of parley's settings (parley.settings assembles the sections):
the context a conversation gets, how many replies run at once, how a step's batch is filled, how far a reply
drafts ahead, when idle conversations leave the context, and the RAM and disk tiers of the KV cache."""

from __future__ import annotations

from dataclasses import dataclass

from parley.config import MiB, check, setting
from parley.engine.settings import DECODE_BATCH
from parley.errors import InvalidRequest

IDLE_CELLS = 0  # --kv-idle-cells by default: measured, an idle cell costs every decode more than moving it
DRAFT_MAX = 16  # --draft-max by default: a longer copied run rarely comes true as a whole


@dataclass(frozen=True, slots=True)
class SchedulerSettings:
    # The scheduler computes the context from it (Scheduler.context_size), so it lives here, not in the engine's
    # section: the engine only knows its KV cells (--kv-size).
    ctx_size: int = setting(0, "-c", "--ctx-size", metavar="TOKENS", least=0,
                            help="max tokens per conversation (default 0: the model's training context, at most "
                                 "--kv-size)")
    max_running: int = setting(8, "--max-running", metavar="N", least=1,
                               help="sequences generating at once (default 8)")
    batch_tokens: int = setting(DECODE_BATCH, "--batch-tokens", metavar="N", least=1,
                                help="most tokens per decode call, at least --max-running (default 512)")
    prefill_chunk: int = setting(128, "--prefill-chunk", metavar="N", least=1,
                                 help="prompt tokens read per step while other replies stream: lower keeps them "
                                      "smoother, higher reads long prompts sooner (default 128)")
    kv_idle_cells: int | None = setting(  # None: IDLE_CELLS, or -1 in deterministic mode (Scheduler)
        None, "--kv-idle-cells", metavar="TOKENS", least=-1,
        help="while anyone is generating, idle conversations beyond this many KV cells move to the RAM tier, since "
             "every decode scans every cell in use (default 0, all of them; -1 keeps them, the default with "
             "--deterministic, whose sums follow the cells' order in the buffer)")
    draft_max: int | None = setting(  # None: DRAFT_MAX, or 0 in deterministic mode (Scheduler)
        None, "--draft-max", metavar="TOKENS", least=0,
        help="most tokens a reply drafts per step from its own context (n-gram lookup in the prompt and the "
             "reply so far), verified in one batched decode and only while the measured cost pays for it "
             "(default 16; 0 turns it off, the default with --deterministic)")
    ram_cache_mb: int = setting(1024, "--ram-cache-mb", metavar="MB", least=0,
                                help="host RAM for KV states moved out of the context (default 1024)")
    disk_cache_mb: int = setting(8192, "--disk-cache-mb", metavar="MB", least=0,
                                 help="disk for KV states under $PARLEY_HOME/kv, kept across restarts (default "
                                      "8192; 0 turns the disk tier off)")
    max_waiting: int = setting(256, "--max-waiting", metavar="N", least=1,
                               help="requests queued for a sequence before new ones are refused (429; default 256)")

    def __post_init__(self) -> None:
        check(self)
        if self.batch_tokens < self.max_running:
            raise InvalidRequest(f"batch_tokens (--batch-tokens) must be at least max_running (--max-running, "
                                 f"{self.max_running}): one token per running reply each step; got "
                                 f"{self.batch_tokens}", param="batch_tokens")

    @property
    def ram_cache_bytes(self) -> int:
        return self.ram_cache_mb * MiB

    @property
    def disk_cache_bytes(self) -> int:
        return self.disk_cache_mb * MiB
