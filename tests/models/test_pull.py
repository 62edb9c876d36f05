"""`parley.models.pull` against a real HTTP server in the hub's URL layout (hubserver.py): both spec forms, a pull
that lands a verified GGUF, a dropped connection and a Ctrl-C both continued from where they stopped, a lying
checksum refused, and each error a user can meet as one line. The tests marked `model` move the embedded 98 MB
model; the others serve a GGUF header of a hundred bytes."""

from __future__ import annotations

import fcntl
import hashlib
import shutil
import socket

import pytest
from hubserver import HubFile, HubServer, tiny_gguf

from parley.engine.gguf import read_metadata
from parley.engine.model_path import embedded_model_path
from parley.errors import Conflict, InvalidRequest, LimitExceeded, ModelError, NotFound
from parley.models import pull as pull_module
from parley.models.pull import FORMS, PullSpec, match_quant, parse_spec, pull

MiB = 1024 * 1024
TINY = "acme/Tiny-GGUF"
SMOL = "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF"


@pytest.fixture(scope="module")
def server():
    s = HubServer()
    s.hub.add(TINY, {"tiny-Q4_K_M.gguf": tiny_gguf("q4_k_m"), "tiny-Q4_0.gguf": tiny_gguf("q4_0"),
                     "tiny-Q8_0.gguf": tiny_gguf("q8_0"), "README.md": HubFile(b"# tiny\n", lfs=False),
                     "in-git-F16.gguf": HubFile(tiny_gguf("f16"), lfs=False), "zip-Q2_K.gguf": b"PK\x03\x04zip"})
    s.hub.add("acme/Gated-GGUF", {"gated-Q4_K_M.gguf": tiny_gguf("gated")}, gated=True)
    s.hub.add("acme/Private-GGUF", {"private-Q4_K_M.gguf": tiny_gguf("private")}, private=True)
    yield s
    s.close()


@pytest.fixture
def hub(server, monkeypatch):
    """The module's hub with this test's faults and records cleared, and no token from the environment."""
    h = server.hub
    h.drop_after, h.lie, h.gets, h.served, h.cdn_tokens = None, set(), [], 0, []
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    return h


@pytest.fixture(scope="module")
def smol(server):
    """The embedded model served as the SmolLM2 GGUF repo, beside a second quant so the shorthand must choose."""
    path = embedded_model_path()
    server.hub.add(SMOL, {path.name: path, "SmolLM2-135M-Instruct.Q8_0.gguf": tiny_gguf("q8")})
    server.hub.sha256(SMOL, path.name)  # hashed once for the module, not inside a test's pull
    return path


def sha256(path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def leftovers(directory) -> list[str]:
    return sorted(p.name for p in directory.rglob(".*.incomplete"))


# ---- specs ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("spec, want", [
    ("hf://acme/Tiny-GGUF/tiny-Q4_K_M.gguf", PullSpec(TINY, filename="tiny-Q4_K_M.gguf")),
    ("hf://acme/Tiny-GGUF/Q4/tiny.Q4_K_M.GGUF@v1.0",
     PullSpec(TINY, filename="Q4/tiny.Q4_K_M.GGUF", revision="v1.0")),
    ("acme/Tiny-GGUF:Q4_K_M", PullSpec(TINY, quant="Q4_K_M")),
    ("hf.co/acme/Tiny-GGUF:q8_0@0123abc", PullSpec(TINY, quant="q8_0", revision="0123abc")),
])
def test_both_spec_forms(spec, want):
    assert parse_spec(spec) == want


@pytest.mark.parametrize("spec", [
    "acme/Tiny-GGUF", "hf://acme/Tiny-GGUF", "hf://acme/Tiny-GGUF/README.md", "hf://acme/Tiny-GGUF/../x.gguf",
    "https://huggingface.co/acme/Tiny-GGUF/tiny.gguf", "acme/-bad-:Q4", "acme/a--b:Q4", "hf://a..b/c/d.gguf", "acme/Tiny-GGUF:", "",
])
def test_other_specs_are_refused_with_the_two_forms(spec):
    with pytest.raises(InvalidRequest) as e:
        parse_spec(spec)
    message = str(e.value)
    assert e.value.param == "spec" and repr(spec) in message
    assert FORMS in message or "is not a file path inside a repo" in message


def test_the_quant_tag_standing_alone_wins_and_a_projector_is_never_the_model():
    files = ["m-Q4_0.gguf", "m-Q4_0_4_4.gguf", "m-Q4_0_8_8.gguf", "mmproj-m-F16.gguf", "m-F16.gguf", "README.md"]
    assert match_quant(files, "q4_0", "a/b") == "m-Q4_0.gguf"
    assert match_quant(files, "F16", "a/b") == "m-F16.gguf"
    assert match_quant(files, "Q4_0_4_4", "a/b") == "m-Q4_0_4_4.gguf"


def test_shorthand_matching_several_files_or_none_lists_them(hub, tmp_path):
    with pytest.raises(InvalidRequest) as e:
        pull(f"{TINY}:Q4", tmp_path, endpoint=hub.url, progress=False)
    assert "'Q4' matches 2 .gguf files" in str(e.value) and "tiny-Q4_0.gguf, tiny-Q4_K_M.gguf" in str(e.value)
    with pytest.raises(NotFound) as e:
        pull(f"{TINY}:Q5_K_M", tmp_path, endpoint=hub.url, progress=False)
    assert str(e.value) == (f"no .gguf file in {TINY} matches 'Q5_K_M'; its .gguf files: in-git-F16.gguf, "
                            "tiny-Q4_0.gguf, tiny-Q4_K_M.gguf, tiny-Q8_0.gguf, zip-Q2_K.gguf")
    assert hub.gets == [] and list(tmp_path.iterdir()) == []


# ---- a pull that works ---------------------------------------------------------------------------------------
def test_both_forms_pull_a_verified_gguf_and_a_second_pull_downloads_nothing(hub, tmp_path):
    by_url = pull(f"hf://{TINY}/tiny-Q4_K_M.gguf", tmp_path, endpoint=hub.url, progress=False)
    by_tag = pull(f"{TINY}:q8_0", tmp_path, endpoint=hub.url, progress=False)
    assert by_url.path == tmp_path / "tiny-Q4_K_M.gguf" and by_tag.path == tmp_path / "tiny-Q8_0.gguf"
    commit = hub.repos[TINY].commit
    for got, name in ((by_url, "tiny-Q4_K_M.gguf"), (by_tag, "tiny-Q8_0.gguf")):
        assert (got.repo, got.filename, got.revision) == (TINY, name, commit)
        assert got.sha256 == sha256(got.path) == hub.sha256(TINY, name) and got.size == got.path.stat().st_size
        assert read_metadata(got.path)["general.architecture"] == "llama"
    assert [path for path, _ in hub.gets] == [f"/cdn/{TINY}/tiny-Q4_K_M.gguf", f"/cdn/{TINY}/tiny-Q8_0.gguf"]
    again = pull(f"{TINY}:Q4_K_M", tmp_path, endpoint=hub.url, progress=False)
    assert again == by_url and len(hub.gets) == 2 and leftovers(tmp_path) == []


def test_a_partial_download_of_another_revision_is_removed(hub, tmp_path):
    stale = tmp_path / ".tiny-Q4_K_M.gguf.0123456789abcdef.incomplete"  # keyed by a checksum the hub no longer has
    stale.write_bytes(b"GGUF-of-an-older-commit")
    pull(f"{TINY}:Q4_K_M", tmp_path, endpoint=hub.url, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny-Q4_K_M.gguf"]


def test_a_file_kept_in_git_is_verified_by_its_git_sha1(hub, tmp_path):
    got = pull(f"{TINY}:F16", tmp_path, endpoint=hub.url, progress=False)
    assert got.filename == "in-git-F16.gguf" and got.sha256 == sha256(got.path)
    assert hub.gets == [(f"/{TINY}/resolve/{hub.repos[TINY].commit}/in-git-F16.gguf", None)]


def test_HF_ENDPOINT_is_read_when_pull_is_called(hub, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", hub.url + "/")
    assert pull(f"{TINY}:Q4_K_M", tmp_path).path.is_file()  # and progress=True: huggingface_hub's bar


@pytest.mark.model
def test_the_embedded_model_pulled_by_its_quant_tag(hub, smol, tmp_path):
    seen = []
    got = pull(f"{SMOL}:Q4_1", tmp_path / "models", endpoint=hub.url, progress=lambda done, total: seen.append(
        (done, total)))
    size = smol.stat().st_size
    assert got.path == tmp_path / "models" / smol.name and got.size == size
    assert got.sha256 == sha256(got.path) == hub.sha256(SMOL, smol.name)
    assert read_metadata(got.path)["general.architecture"] == "llama"
    assert hub.gets == [(f"/cdn/{SMOL}/{smol.name}", None)] and hub.served == size
    assert seen[-1] == (size, size) and leftovers(tmp_path) == []


# ---- interrupted, then continued -----------------------------------------------------------------------------
@pytest.mark.model
def test_a_dropped_connection_continues_from_where_it_stopped(hub, smol, tmp_path):
    size = smol.stat().st_size
    hub.drop_after = 45 * MiB
    got = pull(f"hf://{SMOL}/{smol.name}", tmp_path, endpoint=hub.url, progress=False)
    assert got.sha256 == hub.sha256(SMOL, smol.name) and got.size == size
    (first, no_range), (again, resumed) = hub.gets
    assert first == again and no_range is None
    start = int(resumed.removeprefix("bytes=").removesuffix("-"))
    # huggingface_hub writes in 10 MB reads: what it had written is kept, the read under way is asked again
    assert 35 * MiB <= start <= 45 * MiB and hub.served == 45 * MiB + size - start < size + 10 * MiB


@pytest.mark.model
def test_a_pull_stopped_by_ctrl_c_is_continued_by_the_next_pull(hub, smol, tmp_path):
    size = smol.stat().st_size

    def ctrl_c(done, total):
        if done >= 45 * MiB:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pull(f"hf://{SMOL}/{smol.name}", tmp_path, endpoint=hub.url, progress=ctrl_c)
    [partial] = tmp_path.glob(".*.incomplete")
    kept, before = partial.stat().st_size, hub.served
    assert not (tmp_path / smol.name).exists() and 30 * MiB <= kept < 45 * MiB
    got = pull(f"{SMOL}:Q4_1", tmp_path, endpoint=hub.url, progress=False)
    assert hub.gets[-1] == (f"/cdn/{SMOL}/{smol.name}", f"bytes={kept}-") and len(hub.gets) == 2
    assert got.sha256 == hub.sha256(SMOL, smol.name) and leftovers(tmp_path) == []
    # the second pull asks for the rest and only the rest; the first ran on past the Ctrl-C by the read under
    # way and what the sockets buffered: about the file once in all, not twice
    assert hub.served - before == size - kept and before < kept + 30 * MiB


# ---- refused -------------------------------------------------------------------------------------------------
def test_a_checksum_mismatch_is_refused_and_the_file_removed(hub, tmp_path):
    hub.lie = {"tiny-Q4_0.gguf"}
    real = hub.sha256(TINY, "tiny-Q4_0.gguf")
    claimed = hashlib.sha256(real.encode()).hexdigest()
    with pytest.raises(ModelError) as e:
        pull(f"{TINY}:Q4_0", tmp_path, endpoint=hub.url, progress=False)
    assert e.value.code == "checksum_mismatch" and real in str(e.value) and claimed in str(e.value)
    assert list(tmp_path.iterdir()) == []


def test_a_file_that_is_not_a_gguf_is_refused_naming_the_reason(hub, tmp_path):
    with pytest.raises(ModelError) as e:
        pull(f"{TINY}:Q2_K", tmp_path, endpoint=hub.url, progress=False)
    assert str(e.value) == (f"{TINY}/zip-Q2_K.gguf is not a GGUF file (starts with b'PK\\x03\\x04'): pass a .gguf "
                            "model file; the download was deleted")
    assert list(tmp_path.iterdir()) == []


def test_a_missing_repo_or_file_is_not_found_naming_it(hub, tmp_path):
    with pytest.raises(NotFound) as e:
        pull("acme/Nothing-GGUF:Q4_K_M", tmp_path, endpoint=hub.url)
    assert str(e.value) == f"no model repo acme/Nothing-GGUF at {hub.url}: check OWNER/REPO"
    with pytest.raises(NotFound) as e:
        pull(f"hf://{TINY}/tiny-Q5_K_M.gguf", tmp_path, endpoint=hub.url)
    assert str(e.value).startswith(f"no file tiny-Q5_K_M.gguf in {TINY} at main")
    assert str(e.value).endswith("its .gguf files: in-git-F16.gguf, tiny-Q4_0.gguf, tiny-Q4_K_M.gguf, tiny-Q8_0.gguf, "
                                 "zip-Q2_K.gguf")
    with pytest.raises(NotFound, match="no revision 'v9'"):
        pull(f"{TINY}:Q4_0@v9", tmp_path, endpoint=hub.url)


@pytest.mark.parametrize("repo, says", [
    ("acme/Gated-GGUF", "acme/Gated-GGUF is gated at {url}: accept its conditions on its page there, then set "
                        "HF_TOKEN to a token of that account"),
    ("acme/Private-GGUF", "{url} has no repo acme/Private-GGUF this client may read (401): check the name, or set "
                          "HF_TOKEN to a token that can read it"),
])
def test_a_gated_or_private_repo_says_HF_TOKEN_and_opens_with_the_token(hub, tmp_path, repo, says):
    for spec in (f"{repo}:Q4_K_M", f"hf://{repo}/{repo.split('/')[1].split('-')[0].lower()}-Q4_K_M.gguf"):
        with pytest.raises(ModelError) as e:
            pull(spec, tmp_path, endpoint=hub.url, progress=False)
        assert str(e.value) == says.format(url=hub.url) and e.value.param == "HF_TOKEN"
    got = pull(f"{repo}:Q4_K_M", tmp_path, endpoint=hub.url, progress=False, token=hub.token)
    assert got.sha256 == hub.sha256(repo, got.filename) and hub.gets == [(f"/cdn/{repo}/{got.filename}", None)]
    assert hub.cdn_tokens == []  # the token went to the hub, not to the CDN it redirected to


def test_an_unreachable_hub_is_one_line_with_the_fix(tmp_path):
    with socket.socket() as s:  # a port nothing listens on once closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ModelError) as e:
        pull(f"hf://{TINY}/tiny-Q4_0.gguf", tmp_path, endpoint=f"http://127.0.0.1:{port}")
    message = str(e.value)
    assert message.startswith(f"cannot reach the model hub at http://127.0.0.1:{port}: ") and "\n" not in message
    assert message.endswith("set HF_ENDPOINT to a mirror, or download the file and `parley models add PATH`")
    assert e.value.__suppress_context__ and FORMS not in message


def test_no_room_on_the_disk_is_refused_before_the_first_byte(hub, tmp_path, monkeypatch):
    real = shutil.disk_usage
    monkeypatch.setattr(pull_module.shutil, "disk_usage", lambda p: real(p)._replace(free=10))
    with pytest.raises(LimitExceeded) as e:
        pull(f"{TINY}:Q8_0", tmp_path, endpoint=hub.url, progress=False)
    size = hub.repos[TINY].files["tiny-Q8_0.gguf"].size
    assert f": 10 bytes free, {size} bytes more needed" in str(e.value)
    assert e.value.param == "dest_dir" and hub.gets == []


def test_a_disk_that_fills_up_mid_way_is_a_limit_naming_the_free_space(hub, tmp_path):
    # the partial file made /dev/full: every write fails with ENOSPC, as on a full disk
    partial = tmp_path / f".tiny-Q8_0.gguf.{hub.sha256(TINY, 'tiny-Q8_0.gguf')[:16]}.incomplete"
    partial.symlink_to("/dev/full")
    with pytest.raises(LimitExceeded) as e:
        pull(f"{TINY}:Q8_0", tmp_path, endpoint=hub.url, progress=False)
    assert str(e.value).startswith(f"not enough disk space in {tmp_path} for {TINY}/tiny-Q8_0.gguf: ")
    size = hub.repos[TINY].files["tiny-Q8_0.gguf"].size
    assert f" free, {size} bytes more needed; free some space and pull again" in str(e.value)
    assert e.value.param == "dest_dir" and not (tmp_path / "tiny-Q8_0.gguf").exists()


def test_a_destination_that_cannot_be_a_directory_names_dest_dir(hub, tmp_path):
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(InvalidRequest) as e:
        pull(f"{TINY}:Q8_0", tmp_path / "file" / "models", endpoint=hub.url, progress=False)
    assert str(e.value).startswith(f"cannot write in {tmp_path}/file/models: ") and e.value.param == "dest_dir"


def test_another_file_in_the_way_or_a_pull_under_way_is_a_conflict(hub, tmp_path):
    (tmp_path / "tiny-Q4_0.gguf").write_bytes(tiny_gguf("mine"))
    with pytest.raises(Conflict, match="exists and is not"):
        pull(f"{TINY}:Q4_0", tmp_path, endpoint=hub.url, progress=False)
    partial = tmp_path / f".tiny-Q8_0.gguf.{hub.sha256(TINY, 'tiny-Q8_0.gguf')[:16]}.incomplete"
    with open(partial, "ab") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(Conflict, match="another pull of acme/Tiny-GGUF/tiny-Q8_0.gguf"):
            pull(f"{TINY}:Q8_0", tmp_path, endpoint=hub.url, progress=False)
    assert hub.gets == []
