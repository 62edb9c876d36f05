"""ModelSettings: the models' section of parley's settings (parley.settings assembles the sections): which models
a process serves, and how many stay loaded (the pool, models/pool.py)."""

from __future__ import annotations

from dataclasses import dataclass

from parley.config import check, setting

MEMORY_SHARE = 0.8     # the memory budget's default: this share of the machine's memory


@dataclass(frozen=True, slots=True)
class ModelSettings:
    model: tuple[str, ...] = setting(
        (), "-m", "--model", metavar="MODEL", env="PARLEY_MODEL",
        help="a registered model (parley models list) or a GGUF file; `parley serve` takes it again for each "
             "model it offers (default: $PARLEY_MODEL, else the embedded SmolLM2-135M-Instruct, and parley serve "
             "offers every registered model)")
    models_max: int = setting(3, "--models-max", metavar="N", least=1,
                              help="models loaded at once; loading one more unloads the least recently used idle "
                                   "one (default 3)")
    model_idle: float = setting(600.0, "--model-idle", metavar="SECONDS", least=0,
                                help="unload a model nobody used for this long, its conversations' KV saved to "
                                     "disk first (default 600; 0: never)")
    models_memory_mb: int = setting(-1, "--models-memory-mb", metavar="MB", least=-1,
                                    help="memory the loaded models may take together (weights and KV cells): "
                                         "loading past it unloads idle ones first (default -1: 80%% of this "
                                         "machine's memory; 0: no budget)")

    def __post_init__(self) -> None:
        if isinstance(self.model, str):          # parley.load("x.gguf"), $PARLEY_MODEL: one model
            object.__setattr__(self, "model", (self.model,) if self.model else ())
        elif self.model is None:
            object.__setattr__(self, "model", ())
        check(self)
