"""UpstreamSettings: the upstream section of parley's settings (parley.settings assembles the sections): the
OpenAI-compatible servers parley generates on instead of its own engine, and how conversations are spread."""

from __future__ import annotations

from dataclasses import dataclass

from parley.config import check, setting
from parley.errors import InvalidRequest

POLICIES = ("session", "balanced")


@dataclass(frozen=True, slots=True)
class UpstreamSettings:
    upstream: tuple[str, ...] = setting(
        (), "--upstream", metavar="URL", env="PARLEY_UPSTREAM",
        help="generate on this OpenAI-compatible server (llama-server, vLLM, SGLang, another parley: "
             "http://host:port), again for each; parley keeps the conversations, personas, documents and APIs, and "
             "tokenizes with -m's model, which must be the upstream's (default: none, the in-process engine; "
             "$PARLEY_UPSTREAM takes several separated by commas)")
    upstream_policy: str = setting(
        "session", "--upstream-policy", choices=POLICIES,
        help="session: a conversation stays on the upstream its id hashes to (its prefix cache keeps hitting) "
             "until that one fails; balanced: the same, but a conversation moves to the least loaded upstream "
             "when its own runs 2 or more requests over it (default session)")

    def __post_init__(self) -> None:
        if isinstance(self.upstream, str):           # $PARLEY_UPSTREAM, parley.load(upstream="http://...")
            urls = tuple(u.strip() for u in self.upstream.split(",") if u.strip())
            object.__setattr__(self, "upstream", urls)
        elif self.upstream is None:
            object.__setattr__(self, "upstream", ())
        for url in self.upstream:
            if not url.startswith(("http://", "https://")):
                raise InvalidRequest(f"upstream (--upstream) must be an http:// or https:// URL, got {url!r}",
                                     param="upstream")
        if self.upstream_policy not in POLICIES:
            raise InvalidRequest(f"upstream_policy (--upstream-policy) must be one of {', '.join(POLICIES)}, got "
                                 f"{self.upstream_policy!r}", param="upstream_policy")
        check(self)
