"""Upstream engines: parley's conversation layer (personas, skills, documents, store, APIs, page) generating on
existing OpenAI-compatible servers (llama-server, vLLM, SGLang, another parley) instead of an in-process llama.cpp.

    settings.py   --upstream URL (again for each), --upstream-policy
    route.py      which upstream serves a conversation: consistent hashing on its id, moved when load is uneven
    client.py     one upstream: its health, what it is, its context, a streamed completion of token ids
    engine.py     UpstreamScheduler: the Scheduler's interface (token ids in, text and a Result out) over them

Parley still renders every prompt itself (the model's template, the persona pinned, the window dropping whole
blocks) and sends its token ids to `/v1/completions`, so each turn's prompt extends the last one token for token
and the upstream's own prefix cache (llama-server's slots, vLLM's automatic prefix caching, SGLang's radix
cache) hits; `cached_tokens` in each reply's usage is what the upstream reported.
"""
