"""The scheduler stage: the only thread that touches the engine; batches every active request into one decode
per step, and keeps KV for prefixes that may come back (live sequences, host RAM, disk)."""
