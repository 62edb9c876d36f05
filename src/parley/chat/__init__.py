"""The chat stage: conversations, personas and skills become token ids (with notes on what the cache can reuse)."""
