"""parley: talk with language models on your own machine.

    import parley
    p = parley.load()                     # the embedded SmolLM2-135M-Instruct, or load("model.gguf")
    chat = p.chat(system="You are terse.")
    for chunk in chat.send("Name three colours."):
        print(chunk, end="", flush=True)
    print(chat.last.stats)                # prompt/cached tokens, time to first token, tokens/s
    p.close()
"""

from parley.api import Chat, Parley, load
from parley.errors import ParleyError
from parley.sampling import SamplingParams

__all__ = ["Chat", "Parley", "ParleyError", "SamplingParams", "load"]
__version__ = "0.1.0"
