"""parley: talk with language models on your own machine.

    import parley
    p = parley.load()                     # the embedded SmolLM2-135M-Instruct, or load("model.gguf")
    chat = p.chat(system="You are terse.")
    for chunk in chat.send("Name three colours."):
        print(chunk, end="", flush=True)
    print(chat.last.result.stats)         # prompt/cached tokens, time to first token, tokens/s
    p.close()

The names below are imported on first use, so `import parley` (and the CLI's start) stays light.
"""

__version__ = "0.1.0"
__all__ = ["Chat", "Library", "Parley", "ParleyError", "SamplingParams", "Settings", "load"]

_HOMES = {"Chat": "parley.api", "Library": "parley.api", "Parley": "parley.api", "load": "parley.api",
          "ParleyError": "parley.errors", "SamplingParams": "parley.sampling", "Settings": "parley.settings"}


def __getattr__(name: str):
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'parley' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value
