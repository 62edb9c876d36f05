"""The data directory ($PARLEY_HOME) as the issue's probes left it (issue 8, item 7): junk named *.kv in the
model's KV folder, a corrupt file on a home that cannot be written, a home that cannot be used at all. With the
real model, through parley.load() and the CLI entry point."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import stat
import tempfile
from pathlib import Path

import pytest

import parley
from parley.cli.main import main
from parley.paths import DataDirError, check_data_dir
from parley.sampling import SamplingParams
from tests.conftest import chatml

G = SamplingParams(temperature=0, max_tokens=8)
NOBODY = 65534


@contextlib.contextmanager
def deadline(seconds: float):
    """Fail (instead of hanging the suite) when the block is still running after `seconds`: SIGALRM interrupts
    a blocking open() of a FIFO in the main thread."""
    def expired(signum, frame):
        raise TimeoutError(f"still blocked after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def unwritable(*dirs: Path):
    """Inside the block this process cannot write `dirs`: as root (who writes anywhere, mode bits or not) by
    acting as nobody meanwhile; otherwise by taking the write bits away. (A read-only mount gives EROFS where
    this gives EACCES; parley treats both alike, and mounting is not possible everywhere tests run.) As nobody,
    modules not imported yet may be unreadable (an interpreter under /root): tests load a Parley first."""
    if os.geteuid() == 0:
        needed = readable_as_nobody()
        os.setegid(NOBODY)
        os.seteuid(NOBODY)
        try:
            unreadable = [p for p in needed if not os.access(p, os.R_OK, effective_ids=True)]
            if unreadable:
                pytest.skip(f"nobody cannot read {unreadable[0]} (a checkout in a directory of mode 0700?): "
                            "this test acts as nobody to make a home unwritable; clone where others can read")
            yield
        finally:
            os.seteuid(0)
            os.setegid(0)
    else:
        modes = [d.stat().st_mode for d in dirs]
        for d in dirs:
            d.chmod(0o555)
        try:
            yield
        finally:
            for d, mode in zip(dirs, modes, strict=True):
                d.chmod(mode)


def readable_as_nobody() -> list[Path]:
    """What a load reads while the test acts as nobody: the package's data and the embedded model."""
    from parley.engine.model_path import embedded_model_path

    return [Path(parley.__file__).parent / "data" / "models", embedded_model_path()]


@pytest.fixture()
def home():
    """A data directory every user can traverse and read (so `unwritable` can act as nobody on it)."""
    path = Path(tempfile.mkdtemp(prefix="parley-home-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def first_turn(path: Path, eng) -> tuple[list[int], Path]:
    """Run turn 1 of a conversation with a data directory and exit (saving its KV); return turn 2's prompt and
    the model's KV folder."""
    first = eng.tokenize(chatml("Where are we sailing today, captain?", "You are a ship's log. " * 6))
    p = parley.load(home=str(path), kv_size=1024, ram_cache_mb=0)
    try:
        reply = p.scheduler.generate(first, G)
    finally:
        p.close()
    second = first + reply.token_ids + eng.tokenize("<|im_end|>\n<|im_start|>user\nAnd then?<|im_end|>\n"
                                                    "<|im_start|>assistant\n")
    [folder] = (path / "kv").iterdir()
    assert len(list(folder.glob("*.kv"))) == 1
    return second, folder


def test_junk_in_the_kv_folder_neither_crashes_nor_hangs_the_start(home, engine, caplog):
    """A directory, a dangling symlink, a symlink and a FIFO (and, where allowed, a device) named *.kv: the old
    scan died on the first two (IsADirectoryError, FileNotFoundError) and hung on the FIFO. Now none of them is
    opened or touched, one warning names them, and the real state beside them is restored."""
    second, folder = first_turn(home, engine)
    (folder / "folder.kv").mkdir()
    (folder / "gone.kv").symlink_to(home / "nowhere")
    (folder / "link.kv").symlink_to(next(folder.glob("*.kv")))
    os.mkfifo(folder / "pipe.kv")
    junk = ["folder.kv", "gone.kv", "link.kv", "pipe.kv"]
    with contextlib.suppress(PermissionError):
        os.mknod(folder / "null.kv", stat.S_IFCHR | 0o666, os.makedev(1, 3))
        junk.append("null.kv")
    with deadline(120), caplog.at_level(logging.WARNING):
        p = parley.load(home=str(home), kv_size=1024, ram_cache_mb=0)
    try:
        warned = [r.getMessage() for r in caplog.records if "not regular files" in r.getMessage()]
        assert len(warned) == 1 and all(name in warned[0] for name in junk)
        st = p.scheduler.stats()
        assert st.disk_states == 1 and st.corrupt_cache_files == 0
        assert p.scheduler.generate(second, G).cache_source == "disk"
    finally:
        p.close()
    assert (folder / "folder.kv").is_dir() and stat.S_ISFIFO((folder / "pipe.kv").lstat().st_mode)
    assert (folder / "gone.kv").is_symlink() and (folder / "link.kv").is_symlink()


def test_a_corrupt_file_on_a_read_only_home_carries_on_read_only(home, engine, caplog):
    """The old scan deleted a corrupt file and crashed when the delete failed (EROFS). Now a home that cannot
    be written is used read-only: one warning, the corrupt file counted and left alone, the valid state
    restored, and nothing written, at start or at exit."""
    second, folder = first_turn(home, engine)
    (folder / "broken.kv").write_bytes(b"PARLEYKV but not really")
    before = {f.name: f.stat().st_mtime_ns for f in [*folder.iterdir(), *home.iterdir()]}
    with unwritable(home, home / "kv", folder), caplog.at_level(logging.WARNING):
        # store=False: the KV tiers are under test here (a read-only conversation store is a clear error:
        # tests/test_store.py)
        p = parley.load(home=str(home), kv_size=1024, ram_cache_mb=0, store=False)
        try:
            st = p.scheduler.stats()
            assert st.disk_states == 1 and st.corrupt_cache_files == 1
            res = p.scheduler.generate(second, G)
            assert res.cache_source == "disk" and res.finish_reason in ("stop", "length")
        finally:
            p.close()  # saves at exit: nowhere to write, no crash
    read_only = [r.getMessage() for r in caplog.records if "cannot be written" in r.getMessage()]
    assert len(read_only) == 1 and str(folder) in read_only[0]
    assert {f.name: f.stat().st_mtime_ns for f in [*folder.iterdir(), *home.iterdir()]} == before


def test_an_unusable_home_is_one_line_naming_the_path_and_the_fix(tmp_path, monkeypatch, capsys):
    """PARLEY_HOME pointing at a file: chained tracebacks before (FileExistsError from the KV store). Now one
    line, exit status 2, naming the path and how to fix it."""
    blocker = tmp_path / "home-is-a-file"
    blocker.write_text("not a directory\n")
    monkeypatch.setenv("PARLEY_HOME", str(blocker))
    assert main(["chat", "-p", "hi", "-n", "1", "--kv-size", "256"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("parley: error:")
    assert str(blocker) in err[0] and "PARLEY_HOME" in err[0] and "--disk-cache-mb 0" in err[0]
    with pytest.raises(DataDirError) as caught:
        parley.load(home=str(blocker / "below"), kv_size=256)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__  # no chained traceback


def test_a_home_that_cannot_be_created_is_one_line(home, engine):
    """No permission to create PARLEY_HOME: a PermissionError traceback from the KV store before. (`engine`:
    the session's Parley has imported what a load needs, which nobody could not read under /root.)"""
    parent = home / "locked"
    parent.mkdir()
    parent.chmod(0o755)
    with unwritable(parent), pytest.raises(DataDirError, match="cannot create the data directory") as caught:
        parley.load(home=str(parent / "parley"), kv_size=256)
    message = str(caught.value)
    assert str(parent / "parley") in message and "PARLEY_HOME" in message and "\n" not in message
    assert check_data_dir(parent / "parley") is True  # as ourselves it is fine: created, writable


def test_scan_never_opens_what_is_not_a_regular_file(tmp_path, caplog):
    """The store alone (no model): a FIFO named *.kv would block open() forever; it is skipped unopened."""
    from parley.scheduler.kv_store import KVStore

    kv = tmp_path / "kv"
    kv.mkdir()
    os.mkfifo(kv / "pipe.kv")
    (kv / "dir.kv").mkdir()
    with deadline(20), caplog.at_level(logging.WARNING, logger="parley.kv_store"):
        store = KVStore(ram_bytes=0, disk_bytes=10_000, disk_dir=kv, model_hash="m" * 64)
        assert store.scan_disk() == [] and store.corrupt_files == 0
        store.close()
    assert sum("not regular files" in r.getMessage() for r in caplog.records) == 1
    assert (kv / "pipe.kv").exists() and (kv / "dir.kv").is_dir()
