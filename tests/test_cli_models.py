"""`parley models` as a user runs it (subprocesses on a temporary $PARLEY_HOME): list, show, add, rm of the embedded
file under another name; files `add` refuses, each in one line naming why; one real quantize to q8_0 that
`parley chat -m` then answers with and `rm` deletes; pull from a hub in the hub's URL layout (tests/models/
hubserver.py) with Ctrl-C in the middle and the same pull continuing; no hub; and `parley serve -m A -m B`
offering exactly those."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "models"))
from hubserver import HubFile, HubServer  # noqa: E402

from parley.engine.model_path import embedded_model_path  # noqa: E402

PARLEY = [sys.executable, "-m", "parley.cli.main"]
EMBEDDED = "smollm2-135m-instruct"
FAST = ["--temperature", "0", "--disk-cache-mb", "0", "--kv-size", "1024", "-t", "1"]
REPO = "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF"
SRC = embedded_model_path()


def environ(home: Path, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PARLEY_MODEL", "HF_TOKEN", "HF_ENDPOINT")}
    # huggingface_hub's own files (a login token, its cache) stay out of the test
    return {**env, "PARLEY_HOME": str(home), "HF_HOME": str(home / "hf"), **extra}


def run(home: Path, *args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*PARLEY, *args], capture_output=True, text=True, timeout=timeout,
                          env=env or environ(home))


def ok(home: Path, *args: str, env: dict | None = None) -> str:
    out = run(home, *args, env=env)
    assert out.returncode == 0, out.stderr
    return out.stdout


def refused(home: Path, *args: str, env: dict | None = None) -> str:
    """The one line a refused command prints (exit 2, no traceback)."""
    out = run(home, *args, env=env)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1 and lines[0].startswith("parley: error: "), out.stderr
    return lines[0]


def rows(listing: str) -> dict[str, list[str]]:
    """`parley models list` as name -> its cells (the default's first cell is "*")."""
    lines = listing.splitlines()
    assert lines[0].split() == ["name", "type", "size", "arch", "context", "from"]
    out = {}
    for line in lines[1:]:
        cells = line.split()
        name = cells[1] if cells[0] == "*" else cells[0]
        out[name] = cells
    return out


@pytest.fixture
def home(tmp_path) -> Path:
    return tmp_path / "home"


def test_list_shows_the_embedded_model_as_the_default(home):
    listed = rows(ok(home, "models", "list"))
    assert listed[EMBEDDED][:7] == ["*", EMBEDDED, "Q4_1", "93.8", "MB", "llama", "8192"]
    (view,) = json.loads(ok(home, "models", "list", "--json"))
    assert view["name"] == EMBEDDED and view["default"] and view["source"] == "embedded"
    assert view["size_bytes"] == SRC.stat().st_size and view["file_type"] == "Q4_1"
    assert view["state"] == "unloaded"              # this command loads no model
    assert view["toml"].endswith(f"parley/data/models/{EMBEDDED}.toml")    # bundled: the one to copy and edit


def test_add_show_rm_of_the_embedded_file_under_another_name(home):
    added = ok(home, "models", "add", str(SRC), "--name", "smol", "--ctx-size", "2048", "--chat-format", "chatml",
               "--system", "You are terse.")
    toml = home / "models" / "smol.toml"
    assert added.startswith(f"added smol: {SRC} (llama, Q4_1, 93.8 MB, context 2048); settings in {toml}")
    entry = tomllib.loads(toml.read_text())
    assert entry["path"] == str(SRC) and entry["settings"] == {"ctx_size": 2048, "chat_format": "chatml",
                                                               "system": "You are terse."}
    listed = rows(ok(home, "models", "list"))
    assert listed["smol"] == ["smol", "Q4_1", "93.8", "MB", "llama", "2048", str(SRC)]
    assert listed[EMBEDDED][0] == "*"

    shown = ok(home, "models", "show", "smol")
    assert f"file:          {SRC}" in shown and "architecture:  llama" in shown
    assert "settings:      ctx_size = 2048, chat_format = 'chatml'" in shown
    assert "system prompt: You are terse." in shown
    assert "a file registered where it lies" in shown and f"settings file: {toml}" in shown
    view = json.loads(ok(home, "models", "show", "smol", "--json"))
    assert view["toml"] == str(toml) and view["settings"]["ctx_size"] == 2048 and not view["default"]

    assert "registered already" in refused(home, "models", "add", str(SRC), "--name", "smol")
    assert "--chat-format" in refused(home, "models", "add", str(SRC), "--name", "x", "--chat-format", "nope")

    removed = ok(home, "models", "rm", "smol").strip()
    assert removed == f"removed smol; its file {SRC} stays where it lies (parley deletes only files it pulled or " \
                      "quantized)"
    assert SRC.is_file() and not toml.exists()
    gone = refused(home, "models", "show", "smol")
    assert f"unknown model 'smol'; known: {EMBEDDED}" in gone
    assert "cannot be removed" in refused(home, "models", "rm", EMBEDDED)


def test_add_refuses_what_is_not_a_model_it_can_run_in_one_line_naming_why(home, tmp_path):
    text = tmp_path / "notes.gguf"
    text.write_text("hello, not a model\n")
    assert f"{text} is not a GGUF file" in refused(home, "models", "add", str(text))
    data = SRC.read_bytes()
    header_cut = tmp_path / "header-cut.gguf"
    header_cut.write_bytes(data[:4096])                 # the vocabulary in the header is longer
    assert "is truncated: its GGUF header ends early" in refused(home, "models", "add", str(header_cut))
    half = tmp_path / "half.gguf"
    half.write_bytes(data[:len(data) // 2])             # the header reads; the tensors are not all there
    why = refused(home, "models", "add", str(half))
    assert f"llama.cpp cannot load {half}" in why and "not within the file bounds" in why
    key = b"general.architecture"
    at = data.index(key) + len(key) + 4 + 8             # past the value's type (u32) and length (u64)
    assert data[at:at + 5] == b"llama"
    alien = tmp_path / "alien.gguf"
    alien.write_bytes(data[:at] + b"lxama" + data[at + 5:])
    assert "unknown model architecture: 'lxama'" in refused(home, "models", "add", str(alien))
    assert not (home / "models").exists() or not list((home / "models").glob("*.toml"))


def test_quantize_makes_a_q8_0_model_that_chat_and_ask_use_by_name_and_rm_deletes(home, tmp_path):
    done = run(home, "models", "quantize", EMBEDDED, "--type", "q8_0", "--name", "smol-q8")
    assert done.returncode == 0, done.stderr
    copy = home / "models" / "files" / "smol-q8.gguf"
    assert done.stdout.startswith(f"quantized {EMBEDDED} (Q4_1, 93.8 MB) to smol-q8 (Q8_0, ")
    assert f"; {copy}; parley chat -m smol-q8" in done.stdout
    assert "already quantized (Q4_1): requantizing can severely reduce quality" in done.stderr
    assert "tensor" not in done.stderr                   # no progress lines: stderr is not a terminal
    listed = rows(ok(home, "models", "list"))
    assert listed["smol-q8"][:2] == ["smol-q8", "Q8_0"]
    assert " ".join(listed["smol-q8"][6:]) == f"quantized from {EMBEDDED} (q8_0)"
    assert "registered already" in refused(home, "models", "quantize", EMBEDDED, "--type", "q4_0", "--name",
                                           "smol-q8")

    answer = ok(home, "chat", "-m", "smol-q8", "-p", "What is the capital of France?", "-n", "8", *FAST)
    assert "Paris" in answer
    doc = tmp_path / "ferry.md"
    doc.write_text("The ferry to the island leaves at seven every morning.\n")
    asked = ok(home, "ask", "-m", "smol-q8", str(doc), "-q", "When does the ferry leave?", "-n", "8", "--json",
               "--kv-size", "1024", "-t", "1")
    assert json.loads(asked)["answers"][0]["answer"].strip()
    unknown = refused(home, "chat", "-m", "smol-q9", "-p", "hi", *FAST)
    assert f"unknown model 'smol-q9'; known: smol-q8, {EMBEDDED}" in unknown

    assert ok(home, "models", "rm", "smol-q8").strip() == f"removed smol-q8 and deleted its file {copy} (parley " \
                                                          "made it)"
    assert not copy.exists() and not (home / "models" / "smol-q8.toml").exists()


# ---- pull ------------------------------------------------------------------------------------------------------
class _Held(HubFile):
    """The hub's file that, once armed, stops sending after HOLD_AT bytes until the test releases it: the pull is
    then surely in the middle of its download when the test presses Ctrl-C."""

    # past huggingface_hub's 10 MB write chunk (http_get), so part of the file is on disk when the sending stops
    HOLD_AT = 16 << 20
    armed = False
    reached = threading.Event()
    release = threading.Event()

    def read(self, start: int, n: int) -> bytes:
        if self.armed and start >= self.HOLD_AT:
            self.reached.set()
            self.release.wait()
        return super().read(start, n)


@pytest.fixture(scope="module")
def hub():
    server = HubServer()
    held = _Held(SRC)
    server.hub.add(REPO, {SRC.name: held, "SmolLM2-135M-Instruct.Q8_0.gguf": HubFile(b"GGUF")})
    server.hub.sha256(REPO, SRC.name)    # hashed once here, not inside a pull
    yield server.hub, held
    held.release.set()
    server.close()


def test_pull_stopped_by_ctrl_c_continues_verified_and_registers_and_rm_deletes_it(home, hub):
    """Ctrl-C mid-download says how to go on (exit 130); the same pull continues from the bytes kept, checks the
    hub's sha256 and registers the file; `rm` deletes it (parley's file)."""
    h, held = hub
    # a held download must not time out and retry while the test waits for it
    env = environ(home, HF_ENDPOINT=h.url, HF_HUB_DOWNLOAD_TIMEOUT="120")
    partial_dir = home / "models" / "files"
    held.reached.clear()
    held.release.clear()
    held.armed = True
    proc = subprocess.Popen([*PARLEY, "models", "pull", f"hf://{REPO}/{SRC.name}"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert held.reached.wait(60), f"the pull never got {_Held.HOLD_AT} bytes"
        # the first chunk on disk: what the next pull continues from
        deadline = time.monotonic() + 60
        while not any(p.stat().st_size for p in partial_dir.glob(".*.incomplete")) and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        held.armed = False
        held.release.set()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert err.strip() == "parley: interrupted; run the same pull again to continue"
    kept = [p.stat().st_size for p in partial_dir.glob(".*.incomplete")]
    assert len(kept) == 1 and 0 < kept[0] < SRC.stat().st_size

    h.gets.clear()
    again = run(home, "models", "pull", f"{REPO}:Q4_1", env=env)      # the shorthand names the same file
    assert again.returncode == 0, again.stderr
    assert h.gets[-1][1] == f"bytes={kept[0]}-"          # continued from what the first pull kept
    name = "smollm2-135m-instruct.q4_1"                  # the file's stem, lower-cased
    target = partial_dir / SRC.name
    assert again.stdout.startswith(f"pulled hf://{REPO}/{SRC.name} as {name}: 93.8 MB, Q4_1, sha256 ")
    assert "verified" in again.stdout and target.stat().st_size == SRC.stat().st_size
    assert not list(partial_dir.glob(".*.incomplete"))

    listed = rows(ok(home, "models", "list", env=env))
    assert listed[name][:2] == [name, "Q4_1"] and " ".join(listed[name][6:]) == f"pulled hf://{REPO}/{SRC.name}"
    view = json.loads(ok(home, "models", "show", name, "--json", env=env))
    assert view["source"] == "pulled" and view["pulled"]["sha256"] == h.sha256(REPO, SRC.name)
    assert "registered already" in refused(home, "models", "pull", f"{REPO}:Q4_1", "--name", name, env=env)
    assert "deleted its file" in ok(home, "models", "rm", name, env=env) and not target.exists()


def test_pull_without_a_reachable_hub_is_one_line(home):
    with socket.socket() as s:                           # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = environ(home, HF_ENDPOINT=f"http://127.0.0.1:{port}")
    line = refused(home, "models", "pull", f"{REPO}:Q4_1", env=env)
    assert f"cannot reach the model hub at http://127.0.0.1:{port}" in line and "parley models add PATH" in line
    assert "names no model file" in refused(home, "models", "pull", "not-a-spec", env=env)


# ---- serve -----------------------------------------------------------------------------------------------------
def test_serve_help_has_the_model_pool_flags(home):
    shown = ok(home, "serve", "--help")
    for flag in ("--model", "--models-max", "--model-idle", "--models-memory-mb"):
        assert flag in shown, flag


def test_serve_offers_the_models_named_with_m_and_says_which_is_loaded(home):
    # entries as a user writes them (the format `add` writes: models/registry.py)
    (home / "models").mkdir(parents=True)
    (home / "models" / "smol.toml").write_text(f'path = "{SRC}"\n[settings]\nctx_size = 512\n')
    (home / "models" / "unoffered.toml").write_text(f'path = "{SRC}"\n')
    cmd = [*PARLEY, "serve", "--port", "0", "-m", EMBEDDED, "-m", "smol", "--models-max", "2", *FAST[2:]]
    proc = subprocess.Popen(cmd, env=environ(home), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    timer = threading.Timer(90, proc.kill)
    timer.start()
    try:
        lines = [proc.stdout.readline()]
        while lines[-1] and not lines[-1].startswith("parley: at most"):
            lines.append(proc.stdout.readline())
        timer.cancel()
        m = re.search(r"serving (\S+) on (http://127\.0\.0\.1:\d+) \(OpenAI: \2/v1, TGI: \2/generate", lines[0])
        assert m and m[1] == EMBEDDED, lines
        url = m[2]
        assert lines[1].startswith("parley: 2 models offered")
        assert lines[2].startswith(f"parley:   * {EMBEDDED} (Q4_1, llama): loaded, context 1024, device cpu")
        assert lines[3].startswith("parley:     smol (Q4_1, llama): loads on its first request, context 512")
        assert lines[4].startswith("parley: at most 2 loaded at once (--models-max)")
        assert "after 600 s unused (--model-idle)" in lines[4]
        listed = httpx.get(url + "/v1/models", timeout=30).json()["data"]
        assert sorted(card["id"] for card in listed) == ["smol", EMBEDDED]      # not "unoffered"
    finally:
        timer.cancel()
        proc.send_signal(signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
    assert proc.returncode == 0 and "Traceback" not in err, err
