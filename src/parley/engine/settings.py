"""EngineSettings: the engine's section of parley's settings (parley.settings assembles the sections): how
llama.cpp runs a model (threads, GPU layers, KV cells, batch-invariant arithmetic). Which model: the models'
section (models/settings.py), and a model's own settings in the registry can override these."""

from __future__ import annotations

from dataclasses import dataclass

from parley.config import check, setting
from parley.errors import InvalidRequest

# Tokens per llama_decode call unless told otherwise: the default of the scheduler's --batch-tokens too
# (scheduler/settings.py), which Parley hands to the engine (EngineConfig.from_settings).
DECODE_BATCH = 512


@dataclass(frozen=True, slots=True)
class EngineSettings:
    threads: int = setting(0, "-t", "--threads", least=0,
                           help="CPU threads (default 0: every core, one fewer while another process competes)")
    gpu_layers: int | None = setting(
        None, "--gpu-layers", metavar="N", least=0,
        help="model layers on the GPU (default: every layer when llama.cpp was built with a GPU backend, else 0; "
             "on a CPU-only build the model runs on the CPU and says so)")
    kv_size: int = setting(16384, "--kv-size", metavar="TOKENS", least=16,
                           help="KV cache cells shared by every conversation (default 16384)")
    deterministic: bool = setting(False, "--deterministic",
                                  help="batch-invariant results: the same tokens alone or beside others, cached or "
                                       "not (prompts read about 25%% slower)")
    n_seq_max: int = setting(64, least=1, hidden=True, help="engine sequences (live KV slots) at once")

    def __post_init__(self) -> None:
        check(self)
        if self.kv_size < self.n_seq_max:
            raise InvalidRequest(f"kv_size (--kv-size) must be at least {self.n_seq_max} (one cell per engine "
                                 f"sequence), got {self.kv_size}", param="kv_size")
