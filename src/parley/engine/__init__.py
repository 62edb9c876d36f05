"""The engine stage: token ids in, token ids out. Knows nothing about text, templates or conversations."""
