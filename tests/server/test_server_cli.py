"""`parley serve` end to end, as a user runs it: a subprocess on a free port that prints its URL, answers both
clients with an API key, and on Ctrl-C (SIGINT) shuts down cleanly, saving the KV cache to $PARLEY_HOME."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading

import httpx
import pytest
from srvutil import parley_command

from parley.cli.serve import is_loopback


def test_loopback_detection():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.2")


def test_help_lists_the_settings():
    out = subprocess.run([*parley_command(), "serve", "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    for flag in ("--host", "--port", "--api-key", "--max-body-bytes", "--max-prompt-tokens", "--max-tokens-cap",
                 "--max-concurrent", "--docs-root", "--model", "--kv-size", "--allowed-host",
                 "--shutdown-grace", "--max-messages", "--header-timeout", "--body-timeout", "--max-connections",
                 "--keep-alive", "--temperature", "--top-p", "--top-k", "--min-p", "--repeat-penalty"):
        assert flag in out.stdout, flag


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "kill"])
def test_serve_end_to_end(tmp_path, stop):
    env = {**os.environ, "PARLEY_HOME": str(tmp_path), "PARLEY_API_KEY": "cli-key"}
    cmd = [*parley_command(), "serve", "--port", "0", "-t", "1", "--disk-cache-mb", "64"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = ""
        timer = threading.Timer(90, proc.kill)
        timer.start()
        try:
            line = proc.stdout.readline()
        finally:
            timer.cancel()
        m = re.search(r"serving (\S+) on (http://127\.0\.0\.1:\d+) \(OpenAI: \2/v1, TGI: \2/generate", line)
        assert m, f"no URL line: {line!r} {proc.stderr.read() if proc.poll() is not None else ''}"
        url = m.group(2)
        assert httpx.get(url + "/health").status_code == 200
        assert httpx.get(url + "/v1/models").status_code == 401
        auth = {"authorization": "Bearer cli-key"}
        body = {"messages": [{"role": "system", "content": "You are a helpful assistant. " * 8},
                             {"role": "user", "content": "Say hello."}],
                "max_tokens": 8, "temperature": 0, "stream": True}
        events = []
        with httpx.stream("POST", url + "/v1/chat/completions", json=body, headers=auth, timeout=60) as r:
            assert r.status_code == 200
            events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        assert json.loads(events[-2])["choices"][0]["finish_reason"] in ("stop", "length")
        tgi = httpx.post(url + "/generate", json={"inputs": "Hello", "parameters": {"max_new_tokens": 2}},
                         headers=auth, timeout=60)
        assert tgi.status_code == 200 and "generated_text" in tgi.json()
    finally:
        proc.send_signal(stop)
        try:
            out, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            pytest.fail(f"parley serve did not stop on {stop.name}: {err}")
    assert proc.returncode == 0, err
    assert "Traceback" not in err, err
    assert "saving the KV cache" in err
    saved = list((tmp_path / "kv").rglob("*"))
    assert any(p.is_file() for p in saved), f"no KV state saved under {tmp_path / 'kv'}: {err}"
