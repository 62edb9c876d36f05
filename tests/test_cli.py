"""`parley chat` as a user runs it: one-shot answers, the interactive loop and its commands, Ctrl-C, errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

PARLEY = [sys.executable, "-m", "parley.cli.main"]
FAST = ["--temperature", "0", "--disk-cache-mb", "0", "--kv-size", "2048"]


def run(*args, stdin=None, timeout=180, env=None):
    return subprocess.run([*PARLEY, *args], input=stdin, capture_output=True, text=True, timeout=timeout, env=env)


def test_one_shot_answer_and_stats():
    out = run("chat", "-p", "What is the capital of France?", "-n", "12", "--stats", *FAST)
    assert out.returncode == 0, out.stderr
    assert "Paris" in out.stdout
    assert "prompt tokens" in out.stderr and "tok/s" in out.stderr


def test_default_command_is_chat_and_reads_stdin():
    out = run("-p", "-", "-n", "6", *FAST, stdin="Say hello.")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip()


def test_stop_flag_is_never_printed():
    first = run("-p", "Count from one to ten in words.", "-n", "30", *FAST)
    words = first.stdout.split()
    stop = words[min(3, len(words) - 1)]
    cut = run("-p", "Count from one to ten in words.", "-n", "30", "--stop", stop, *FAST)
    assert cut.returncode == 0
    assert stop not in cut.stdout and first.stdout.startswith(cut.stdout.rstrip("\n"))


def test_interactive_commands(tmp_path):
    script = ("/help\nHi there.\n/stats\n/retry\n/system\n/system You are a pirate.\n/system\nWho are you?\n"
              "/branches\n/title Pirate talk\n/title\n/new\n/bogus\n/quit\n")
    out = run("chat", "-n", "8", *FAST, stdin=script, env=home(tmp_path))
    assert out.returncode == 0, out.stderr
    err = out.stderr
    assert "/retry" in err and "prompt tokens" in err
    assert "(no system prompt" in err and "system prompt: You are a pirate." in err
    assert err.count("assistant:") == 2  # /branches: the first reply and the retried one
    assert "title: Pirate talk" in err and "new conversation" in err
    assert "unknown command /bogus" in err
    assert "cache:" not in err and "position 0" not in err  # no internals on a fresh conversation


def home(tmp_path) -> dict:
    return {**os.environ, "PARLEY_HOME": str(tmp_path)}


def test_resume_continues_the_stored_conversation(tmp_path):
    """A chat is kept in the store: --resume picks the latest up again, with its history (and KV)."""
    env = home(tmp_path)
    first = run("chat", "-n", "8", *FAST, stdin="My name is Ada.\n/quit\n", env=env)
    assert first.returncode == 0, first.stderr
    again = run("chat", "--resume", "-n", "8", "--stats", *FAST, stdin="/title\nWhat is my name?\n/quit\n",
                env=env)
    assert again.returncode == 0, again.stderr
    assert "resumed: My name is Ada., 2 messages" in again.stderr
    assert "title: My name is Ada." in again.stderr
    listed = run("conversations", "list", env=env)
    assert listed.returncode == 0 and "My name is Ada." in listed.stdout and "4 messages" in listed.stdout
    for flags in (["--home", str(tmp_path), "list"], ["list", "--home", str(tmp_path)]):  # either side of the verb
        named = run("conversations", *flags)
        assert named.returncode == 0 and named.stdout == listed.stdout, named.stderr
    none = run("chat", "--resume", "conv_nope", *FAST, stdin="/quit\n", env=env)
    assert none.returncode == 2 and "conv_nope" in none.stderr and "Traceback" not in none.stderr


def test_multi_line_block_is_one_message_and_back_branches(tmp_path):
    env = home(tmp_path)
    script = 'Hello.\n"""\nLine one\nline two\nline three\n"""\n/back\nSomething else.\n/branches\n/quit\n'
    out = run("chat", "-n", "6", *FAST, stdin=script, env=env)
    assert out.returncode == 0, out.stderr
    show = run("conversations", "show", "--tree", latest(env), env=env)
    assert "Line one\nline two\nline three" in show.stdout  # one message of three lines, not three turns
    assert show.stdout.count("user:") == 3  # Hello, the block, and the branch after /back
    assert "back 2 messages" in out.stderr and out.stderr.count("* ") == 1


def latest(env) -> str:
    out = run("conversations", "list", "--json", env=env)
    import json
    return json.loads(out.stdout)[0]["id"]


def test_input_history_is_kept_between_runs(tmp_path):
    env = home(tmp_path)
    run("chat", "-n", "4", *FAST, stdin="Remember this line.\n/quit\n", env=env)
    history = tmp_path / "chat_history"
    assert history.is_file() and "Remember this line." in history.read_text()


def test_ctrl_c_stops_the_reply_not_the_program():
    proc = subprocess.Popen([*PARLEY, "chat", "-n", "2000", "--ignore-eos", "--disk-cache-mb", "0",
                             "--kv-size", "4096"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        proc.stdin.write("Write a very long story about the sea.\n")
        proc.stdin.flush()
        first = proc.stdout.read(20)  # the reply is streaming
        assert first
        time.sleep(0.3)
        os.kill(proc.pid, signal.SIGINT)
        time.sleep(0.5)
        proc.stdin.write("/stats\n/quit\n")
        proc.stdin.flush()
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "[stopped]" in out, (out[-300:], err[-1500:])
    assert "cancelled" in err  # /stats shows the stopped reply's finish reason


def test_missing_model_is_one_line_naming_the_path(tmp_path):
    missing = tmp_path / "missing.gguf"
    out = run("-p", "hi", "-m", str(missing))
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and str(missing) in lines[0] and "Traceback" not in out.stderr


def test_not_a_gguf_file(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"PK\x03\x04 this is a zip")
    out = run("-p", "hi", "-m", str(bad))
    assert out.returncode == 2 and "not a GGUF" in out.stderr and "Traceback" not in out.stderr


def test_bad_flag_values_are_clear():
    out = run("-p", "hi", "-n", "-5", *FAST)
    assert out.returncode == 2 and "max_tokens" in out.stderr and "Traceback" not in out.stderr
    out = run("-p", "hi", "--chat-format", "nope")
    assert out.returncode == 2 and "chatml" in out.stderr
    for flag in ("--prefill-chunk", "--batch-tokens", "--threads", "--ram-cache-mb", "--ctx-size"):
        out = run("-p", "hi", flag, "-1", "--temperature", "0")
        assert out.returncode == 2 and flag in out.stderr and "Traceback" not in out.stderr, out.stderr
    out = run("-p", "hi", "--temperature", "0", "--kv-size", "32")  # llama.cpp itself would abort the process
    assert out.returncode == 2 and "--kv-size" in out.stderr, out.stderr


def test_batch_smaller_than_the_sequence_count_works():
    """--batch-tokens 8 is below llama.cpp's n_seq_max (64), which used to abort the process."""
    out = run("-p", "Name three colours.", "--batch-tokens", "8", "--prefill-chunk", "4", "--stats", *FAST)
    assert out.returncode == 0 and out.stdout.strip(), out.stderr


def test_model_from_environment(tmp_path):
    env = {**os.environ, "PARLEY_MODEL": str(tmp_path / "env-model.gguf")}
    out = subprocess.run([*PARLEY, "-p", "hi"], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 2 and "env-model.gguf" in out.stderr


def test_ctrl_c_while_the_model_loads_is_one_line():
    """Ctrl-C during start-up (imports, the model load, the KV allocation) ends the program with one line, never
    "Exception ignored on calling ctypes callback function ... KeyboardInterrupt" and a program that carries
    on. Pressed at several moments, so some land inside llama.cpp's load."""
    stopped = 0
    for delay in (0.2, 0.35, 0.5, 0.65, 0.8):
        proc = subprocess.Popen([*PARLEY, "chat", *FAST], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            time.sleep(delay)
            os.kill(proc.pid, signal.SIGINT)
            out, err = proc.communicate(input="", timeout=60)  # loaded first? end of input quits
        finally:
            if proc.poll() is None:
                proc.kill()
        assert "Exception ignored" not in err and "Traceback" not in err, err
        if proc.returncode == 130:
            assert err.strip() == "parley: interrupted", err
            stopped += 1
        elif proc.returncode == -signal.SIGINT:
            # pressed before Python had even started: it just ends; or the interpreter, after our one line, ends
            # itself by the signal (Python does that for an interrupt that reached it during the load)
            assert err.strip() in ("", "parley: interrupted"), err
            stopped += bool(err.strip())
        else:  # it had loaded: Ctrl-C at the prompt only says how to leave
            assert proc.returncode == 0 and "(/quit or Ctrl-D to leave)" in err, (proc.returncode, err)
    assert stopped, "no press landed during start-up"


def test_ask_answers_side_by_side_and_a_second_run_reads_only_the_questions(tmp_path):
    """`parley ask`: the document is read once; a second process finds its KV on disk and reads the questions
    only; answers cite the file; a refused file is one line."""
    env = home(tmp_path)
    doc = tmp_path / "harbour.md"
    doc.write_text("# Harbour\n\nThe ferry to the island leaves at seven every morning.\n\n"
                   "The lighthouse keeper is called Marit.\n")
    ask = ("ask", str(doc), "-q", "When does the ferry leave?", "-q", "Who keeps the lighthouse?", "-n", "8",
           "--json", "--kv-size", "2048")
    first = run(*ask, env=env)
    assert first.returncode == 0, first.stderr
    out = json.loads(first.stdout)
    assert out["document"]["name"] == "harbour.md" and len(out["answers"]) == 2
    doc_tokens = out["document"]["tokens"]
    for a in out["answers"]:
        assert a["finish_reason"] in ("stop", "length") and a["answer"].strip()
        assert any("harbour.md" in s["cite"] for s in a["sources"])
    again = json.loads(run(*ask, env=env).stdout)
    for a in again["answers"]:       # the document's KV came from disk: only the question was read
        assert a["cached_tokens"] >= doc_tokens - 1 and a["prefilled_tokens"] < a["prompt_tokens"] - doc_tokens + 8
    (tmp_path / "blob.bin").write_bytes(b"\x00\x01\x02" * 100)
    bad = run("ask", str(tmp_path / "blob.bin"), "-q", "What is it?", env=env)
    assert bad.returncode == 2 and "blob.bin" in bad.stderr and "Traceback" not in bad.stderr
