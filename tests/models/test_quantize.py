"""parley.models.quantize on the real embedded model (Q4_1): one real q8_0 copy shared by the module (checked as a
GGUF, loaded in parley, generating), the refusals made before a byte is written, the partial file removed
whatever stops a run, the free-disk decision with numbers, and the log tap that feeds progress."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import pytest

import parley.models.quantize as qmod
from parley.config import MiB
from parley.engine import logs
from parley.engine.gguf import read_metadata
from parley.engine.model_path import embedded_model_path
from parley.errors import InvalidRequest, LimitExceeded, ModelError
from parley.models.quantize import (
    QUANT_TYPES,
    check_free_space,
    file_type,
    needed_space,
    plan,
    quantize,
)

pytestmark = pytest.mark.model
SRC = embedded_model_path()


@pytest.fixture(scope="module")
def q8(tmp_path_factory):
    """The embedded model quantized to q8_0 once, with every progress call it made."""
    calls: list[tuple[int, int]] = []
    out = tmp_path_factory.mktemp("q8") / "smollm2-q8_0.gguf"
    result = quantize(SRC, out, "q8_0", progress=lambda done, total: calls.append((done, total)))
    return result, calls


def test_q8_0_copy_is_a_larger_q8_0_gguf(q8):
    result, _ = q8
    assert result.path.is_file() and result.qtype == "q8_0" and result.requantized
    assert result.size_bytes == result.path.stat().st_size
    assert result.src_size_bytes == SRC.stat().st_size < result.size_bytes
    meta = read_metadata(result.path)
    assert file_type(meta) == "Q8_0"
    assert meta["gguf.tensor_count"] == read_metadata(SRC)["gguf.tensor_count"]
    assert [p.name for p in result.path.parent.iterdir()] == [result.path.name]  # no partial file left


def test_progress_counts_every_tensor_in_order(q8):
    _, calls = q8
    total = read_metadata(SRC)["gguf.tensor_count"]
    assert calls[0] == (1, total) and calls[-1] == (total, total)
    assert [done for done, _ in calls] == list(range(1, total + 1))
    assert {t for _, t in calls} == {total}


def test_plan_is_above_the_real_size_and_close_to_it(q8):
    result, _ = q8
    estimate = plan(SRC, "q8_0")
    assert result.size_bytes <= estimate <= result.size_bytes * 1.01
    assert needed_space(estimate) <= result.size_bytes * 1.02 + 4 * MiB  # never refuses what fits by much


def test_the_copy_loads_in_parley_and_generates(q8):
    import parley

    p = parley.load(q8[0].path, kv_size=256, disk_cache_mb=0)
    try:
        stream = p.complete("The sky is", temperature=0, max_tokens=4)
        text = "".join(c.text for c in stream)
        assert stream.result.generated_tokens == 4 and text.strip()
    finally:
        p.close(save=False)


def test_existing_dst_is_refused_and_left_alone(tmp_path):
    dst = tmp_path / "mine.gguf"
    dst.write_bytes(b"keep me")
    with pytest.raises(InvalidRequest, match="mine.gguf already exists") as e:
        quantize(SRC, dst, "q8_0")
    assert e.value.param == "dst" and dst.read_bytes() == b"keep me"
    assert os.listdir(tmp_path) == ["mine.gguf"]


def test_a_dangling_symlink_counts_as_existing(tmp_path):
    (tmp_path / "link.gguf").symlink_to(tmp_path / "nowhere")
    with pytest.raises(InvalidRequest, match="already exists"):
        quantize(SRC, tmp_path / "link.gguf", "q8_0")
    assert not (tmp_path / "nowhere").exists()


def test_unknown_type_lists_the_known_ones(tmp_path):
    with pytest.raises(InvalidRequest) as e:
        quantize(SRC, tmp_path / "x.gguf", "q9_9")
    assert e.value.param == "type" and "'q9_9'" in e.value.message
    assert all(name in e.value.message for name in ("q8_0", "q4_k_m", "q4_0", "q5_k_m", "f16", "bf16"))
    assert not os.listdir(tmp_path)


def test_type_names_are_case_insensitive_and_cover_the_usual_ones():
    assert {"q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q4_k_m", "q4_k_s", "q5_k_m", "q5_k_s", "q6_k", "q3_k_m",
            "q2_k", "f16", "bf16", "f32"} <= set(QUANT_TYPES)
    assert qmod.quant_type(" Q4_K_M ") == "q4_k_m"
    assert "iq2_xxs" not in QUANT_TYPES  # needs an importance matrix parley does not make


def test_a_source_that_is_not_gguf_writes_nothing(tmp_path):
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a model " * 100)
    with pytest.raises(ModelError, match="not a GGUF"):
        quantize(junk, tmp_path / "out.gguf", "q8_0")
    assert os.listdir(tmp_path) == ["junk.gguf"]


def test_a_missing_directory_is_refused(tmp_path):
    with pytest.raises(InvalidRequest, match="does not exist") as e:
        quantize(SRC, tmp_path / "nope" / "out.gguf", "q8_0")
    assert e.value.param == "dst" and not os.listdir(tmp_path)


def test_a_type_llama_cpp_cannot_make_for_this_model_is_refused_by_the_dry_run(tmp_path, caplog):
    # q1_0 has no fallback for rows of 576 weights (SmolLM2's width): llama.cpp's plan says so
    with pytest.raises(ModelError, match="q1_0: no tensor type fallback"):
        quantize(SRC, tmp_path / "out.gguf", "q1_0")
    assert not os.listdir(tmp_path)
    # the tap that read the reason left llama.cpp's routing into logging as it was
    assert any(r.name == logs.log_name and "no tensor type fallback" in r.message for r in caplog.records)


def test_llama_cpp_failing_after_it_began_writing_leaves_nothing(tmp_path, monkeypatch):
    """Without allow_requantize llama.cpp writes part of the copy, then fails on the first Q4_1 tensor."""
    real = qmod._params
    monkeypatch.setattr(qmod, "_params", lambda name, *, threads, requantize:
                        real(name, threads=threads, requantize=False))
    seen = []
    with pytest.raises(ModelError, match="requantizing from type q4_1 is disabled"):
        quantize(SRC, tmp_path / "out.gguf", "q8_0", progress=lambda d, t: seen.append(d))
    assert seen and not os.listdir(tmp_path)


def test_ctrl_c_during_the_run_removes_the_partial_file(tmp_path):
    def press_ctrl_c(done: int, total: int) -> None:
        if done == 10:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(KeyboardInterrupt):
        quantize(SRC, tmp_path / "out.gguf", "q4_0", progress=press_ctrl_c)
    assert not os.listdir(tmp_path)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_progress_raising_stops_the_copy(tmp_path):
    calls = []

    def give_up(done: int, total: int) -> None:
        calls.append(done)
        if done == 5:
            raise RuntimeError("user cancelled")

    with pytest.raises(RuntimeError, match="user cancelled"):
        quantize(SRC, tmp_path / "out.gguf", "q4_0", progress=give_up)
    assert calls == [1, 2, 3, 4, 5] and not os.listdir(tmp_path)


def test_free_space_decision():
    where = Path("/models")
    estimate = 150 * MiB
    check_free_space(estimate, needed_space(estimate), where)
    check_free_space(estimate, 10 * 1024 * MiB, where)
    with pytest.raises(LimitExceeded) as e:
        check_free_space(estimate, needed_space(estimate) - 1, where)
    msg = e.value.message
    assert e.value.param == "dst" and "/models" in msg
    assert str(needed_space(estimate)) in msg and str(needed_space(estimate) - 1) in msg
    assert needed_space(estimate) - estimate == 4 * MiB  # the headroom's floor
    assert needed_space(10 * 1024 * MiB) == 10 * 1024 * MiB * 101 // 100  # 1% above it


def test_quantize_checks_free_space_before_writing(tmp_path, monkeypatch):
    usage = qmod.shutil.disk_usage(tmp_path)
    monkeypatch.setattr(qmod.shutil, "disk_usage", lambda _p: usage._replace(free=50 * MiB))
    with pytest.raises(LimitExceeded, match="52428800 bytes"):
        quantize(SRC, tmp_path / "out.gguf", "q8_0")
    assert not os.listdir(tmp_path)


def test_file_type_names():
    assert file_type(read_metadata(SRC)) == "Q4_1"
    assert file_type({"general.file_type": 7}) == "Q8_0"
    assert file_type({"general.file_type": 7 | 1024}) == "Q8_0"  # LLAMA_FTYPE_GUESSED
    assert file_type({"general.file_type": 0}) == "F32"
    assert file_type({"general.file_type": 15}) == "Q4_K_M"
    assert file_type({}) == "unknown" and file_type({"general.file_type": 999}) == "unknown (999)"


def test_log_tap_sees_its_own_thread_only_and_raises_what_it_raised():
    here, there = [], []

    def other_thread() -> None:
        with logs.tap(lambda _level, piece: there.append(piece)):
            plan(SRC, "q4_0")

    with logs.tap(lambda _level, piece: here.append(piece)):
        t = threading.Thread(target=other_thread)
        t.start()
        t.join()
    assert any("quant size" in p for p in there) and not here

    with pytest.raises(ZeroDivisionError), logs.tap(lambda _level, _piece: 1 / 0):
        plan(SRC, "q4_0")
    assert not logs._taps  # every tap is gone once its block ends
