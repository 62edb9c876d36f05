"""HTTP servers for the benchmarks, each a subprocess on 127.0.0.1, and a streaming OpenAI-style client.

    parley serve                 the server parley ships (`python -m parley.cli.main serve`)
    llama_cpp.server (c)         llama-cpp-python's own OpenAI server, with the same model, threads, context,
                                 batch and flash attention; --interrupt_requests False, because its default
                                 ends a stream as soon as another request waits (7 of 8 concurrent clients
                                 would get a reply cut after a token or two)
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from parley.bench.common import BenchContext, now

READY_TIMEOUT_S = 180


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    def __init__(self, name: str, argv: list[str], port: int, log_path: Path, env: dict | None = None):
        self.name = name
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env={**os.environ, **(env or {})})

    def wait_ready(self, path: str = "/v1/models") -> None:
        import httpx

        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with code {self.proc.returncode}: {self.log_tail()}")
            try:
                if httpx.get(self.url + path, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"{self.name} did not answer {path} within {READY_TIMEOUT_S} s: {self.log_tail()}")

    def log_tail(self, n: int = 800) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:].strip()
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()


def start_parley(ctx: BenchContext, n_ctx: int, max_running: int, disk_cache_mb: int | None = 0) -> ServerProcess:
    """`parley serve` with its KV on disk off (None: parley's default, for a run that restarts it)."""
    port = free_port()
    argv = [sys.executable, "-m", "parley.cli.main", "serve", "--host", "127.0.0.1", "--port", str(port),
            "-m", str(ctx.model), "--threads", str(ctx.threads), "--kv-size", str(n_ctx),
            "--max-running", str(max_running)]
    if disk_cache_mb is not None:
        argv += ["--disk-cache-mb", str(disk_cache_mb)]
    return ServerProcess("parley serve", argv, port, ctx.home / "parley-serve.log")


def llama_server_available() -> str | None:
    """None when llama_cpp.server can be imported here, else why not (and how to fix it)."""
    try:
        import llama_cpp.server.app  # noqa: F401
    except ImportError as e:
        return f"llama_cpp.server cannot start ({e}); install parley's bench extra: pip install 'parley[bench]'"
    return None


def start_llama_server(ctx: BenchContext, n_ctx: int) -> ServerProcess:
    port = free_port()
    argv = [sys.executable, "-m", "llama_cpp.server", "--model", str(ctx.model), "--host", "127.0.0.1",
            "--port", str(port), "--n_ctx", str(n_ctx), "--n_batch", "512", "--n_ubatch", "512",
            "--n_threads", str(ctx.threads), "--n_threads_batch", str(ctx.threads), "--flash_attn", "True",
            "--interrupt_requests", "False", "--verbose", "False"]
    return ServerProcess("llama_cpp.server", argv, port, ctx.home / "llama-server.log")


@dataclass
class Reply:
    ttft_s: float     # from sending the request to the first content delta
    total_s: float
    text: str
    usage: dict = field(default_factory=dict)   # the last usage the stream sent (stream_options.include_usage)


async def stream_chat(client, url: str, messages: list[dict], max_tokens: int, t0: float | None = None,
                      extra: dict | None = None) -> Reply:
    """POST /v1/chat/completions with stream=true (greedy, no repeat penalty; `extra`: more body fields); returns
    when the stream ends ([DONE])."""
    body = {"model": "bench", "messages": messages, "max_tokens": max_tokens, "temperature": 0,
            "repeat_penalty": 1.0, "stream": True, **(extra or {})}
    t0 = now() if t0 is None else t0
    first = None
    parts: list[str] = []
    usage: dict = {}
    async with client.stream("POST", url + "/v1/chat/completions", json=body) as resp:
        if resp.status_code != 200:
            raise RuntimeError(f"{url} answered {resp.status_code}: {(await resp.aread())[:300]!r}")
        async for line in resp.aiter_lines():
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                break
            chunk = json.loads(data)
            usage = chunk.get("usage") or usage
            choices = chunk.get("choices") or []
            content = (choices[0].get("delta") or {}).get("content") if choices else None
            if content:
                if first is None:
                    first = now()
                parts.append(content)
    end = now()
    return Reply((first or end) - t0, end - t0, "".join(parts), usage)
