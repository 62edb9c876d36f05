"""The file registry under personas and skills (no model): a tmp bundled dir and a tmp user dir with a tiny
loader. Shadowing, broken and oversized files as errors and listing warnings, names that are only ever found,
never built into paths, atomic save / overwrite / delete, and symlinks and directories named like entries."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from parley.errors import InvalidRequest, LimitExceeded
from parley.registry import FileRegistry, decode_utf8, read_capped

MAX = 64


def load(path: Path, data: bytes) -> str:
    """The tiny domain: a file holds one line of text; "broken" is a broken file."""
    text = decode_utf8(data, path, "note").strip()
    if text == "broken":
        raise InvalidRequest(f"{path}: this note is broken", param="note")
    return text


@pytest.fixture
def dirs(tmp_path):
    bundled, user = tmp_path / "bundled", tmp_path / "user"
    bundled.mkdir()
    user.mkdir()
    (bundled / "alpha.txt").write_text("bundled alpha")
    (bundled / "beta.txt").write_text("bundled beta")
    return bundled, user


def registry(bundled: Path, user: Path | None, suffixes=(".txt", ".md")) -> FileRegistry[str]:
    return FileRegistry("note", user, bundled, suffixes=suffixes, load=load, max_bytes=MAX)


def test_a_user_file_replaces_the_bundled_one_until_it_is_deleted(dirs):
    bundled, user = dirs
    (user / "beta.txt").write_text("my beta")
    (user / "gamma.md").write_text("my gamma")
    (user / "notes.rst").write_text("another suffix: not a note")
    notes = registry(bundled, user)
    assert notes.names() == ["alpha", "beta", "gamma"]
    assert (notes.get("alpha"), notes.get("beta"), notes.get("gamma")) == ("bundled alpha", "my beta", "my gamma")
    assert [notes.origin(n) for n in notes.names()] == ["bundled", "user, replaces bundled", "user"]
    assert notes.is_bundled("alpha") and not notes.is_bundled("beta")
    assert notes.delete("beta") == user / "beta.txt"
    assert notes.get("beta") == "bundled beta" and notes.origin("beta") == "bundled"
    with pytest.raises(InvalidRequest, match="note 'alpha' is bundled with parley and cannot be deleted"):
        notes.delete("alpha")
    assert (bundled / "alpha.txt").is_file()


def test_the_first_suffix_wins_a_name_and_delete_removes_every_suffix(dirs):
    bundled, user = dirs
    (user / "x.md").write_text("markdown")
    (user / "x.txt").write_text("text")
    notes = registry(bundled, user)
    assert notes.path("x") == user / "x.txt" and notes.get("x") == "text"
    notes.delete("x")
    assert "x" not in notes.names() and not list(user.iterdir())


def test_unknown_names_list_the_known_ones(dirs, tmp_path):
    bundled, user = dirs
    with pytest.raises(InvalidRequest, match="unknown note 'x'; known: alpha, beta") as e:
        registry(bundled, user).get("x")
    assert e.value.param == "note"
    with pytest.raises(InvalidRequest, match="unknown note 'x'; known: none"):
        registry(tmp_path / "no-bundled", None).get("x")


def test_a_missing_user_dir_is_just_the_bundled_files(dirs, tmp_path):
    bundled, _ = dirs
    assert registry(bundled, tmp_path / "nope").names() == registry(bundled, None).names() == ["alpha", "beta"]


def test_broken_files_fail_when_used_and_warn_when_listed(dirs):
    bundled, user = dirs
    (user / "bad.txt").write_text("broken")
    (user / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    (user / "huge.txt").write_text("x" * (MAX + 1))
    (user / "good.txt").write_text("fine")
    notes = registry(bundled, user)
    with pytest.raises(InvalidRequest, match=r"bad\.txt: this note is broken"):
        notes.get("bad")
    with pytest.raises(InvalidRequest, match=r"latin1\.txt is not UTF-8 text \(unexpected end of data at byte 3\)"):
        notes.get("latin1")
    with pytest.raises(LimitExceeded, match=r"huge\.txt is 65 bytes; a note file is at most 64 bytes"):
        notes.get("huge")
    values, warnings = notes.each(notes.get)
    assert values == ["bundled alpha", "bundled beta", "fine"]
    assert [w.split(" skipped: ")[0] for w in warnings] == [
        "warning: note 'bad'", "warning: note 'huge'", "warning: note 'latin1'"]
    assert "huge.txt is 65 bytes" in warnings[1]


def test_reading_is_capped_even_when_the_size_lies():
    status = Path("/proc/self/status")        # stat() says 0 bytes; reading gives more
    if not status.is_file() or status.stat().st_size:
        pytest.skip("needs Linux /proc")
    with pytest.raises(LimitExceeded, match=r"status is more than 10 bytes; a note file is at most 10 bytes"):
        read_capped(status, 10, "note")
    with pytest.raises(InvalidRequest, match="cannot read note file /nope/x.txt: No such file or directory"):
        read_capped(Path("/nope/x.txt"), 10, "note")


def test_names_are_found_never_built_into_paths(dirs, tmp_path):
    bundled, user = dirs
    (tmp_path / "secret.txt").write_text("outside the user dir")
    (user / "sub").mkdir()
    (user / "sub" / "deep.txt").write_text("in a subdirectory")
    (user / "my note, 2nd.txt").write_text("spaces and commas")
    (user / "séance.txt").write_text("not ASCII")
    (user / ".txt").write_text("only a suffix")
    notes = registry(bundled, user)
    assert notes.names() == ["alpha", "beta", "my note, 2nd", "séance"]
    assert notes.get("my note, 2nd") == "spaces and commas" and notes.get("séance") == "not ASCII"
    for name in ("../secret", "sub/deep", str(tmp_path / "secret"), "", ".", "alpha.txt"):
        with pytest.raises(InvalidRequest, match="unknown note"):
            notes.get(name)
        with pytest.raises(InvalidRequest, match="unknown note"):
            notes.delete(name)
    assert (tmp_path / "secret.txt").is_file() and (user / "sub" / "deep.txt").is_file()


@pytest.mark.parametrize("stem", ["../evil", "a/b", "a\\b", "", ".hidden", "..", "a\nb", "nul\0", "x" * 252])
def test_write_refuses_a_stem_that_is_not_a_plain_file_name(dirs, stem):
    bundled, user = dirs
    with pytest.raises(InvalidRequest, match="cannot name a file|too long for a file name") as e:
        registry(bundled, user).write(stem, ".txt", b"x")
    assert e.value.param == "name" and not list(user.iterdir()) and not list(user.parent.glob("evil*"))


def test_write_overwrite_and_no_temporary_files_left(dirs):
    bundled, user = dirs
    notes = registry(bundled, user)
    assert notes.write("beta", ".md", b"mine") == user / "beta.md"
    assert notes.get("beta") == "mine" and notes.origin("beta") == "user, replaces bundled"
    with pytest.raises(InvalidRequest, match=r"a user note 'beta' exists \(.*beta\.md\); delete it first or save "
                                             r"with overwrite") as e:
        notes.write("beta", ".txt", b"again")
    assert e.value.param == "name" and notes.get("beta") == "mine"
    assert notes.write("beta", ".txt", b"again", overwrite=True) == user / "beta.txt"
    assert sorted(p.name for p in user.iterdir()) == ["beta.txt"]        # the .md went with it; no .tmp files
    with pytest.raises(TypeError):                                       # a write that fails midway ...
        notes.write("beta", ".txt", "not bytes", overwrite=True)         # type: ignore[arg-type]
    assert notes.get("beta") == "again" and sorted(p.name for p in user.iterdir()) == ["beta.txt"]


def test_write_creates_the_user_dir_and_needs_one(dirs, tmp_path):
    bundled, _ = dirs
    notes = registry(bundled, tmp_path / "new" / "notes")
    assert notes.write("n", ".txt", b"hi").read_bytes() == b"hi"
    with pytest.raises(InvalidRequest, match=r"no user note directory to save into \(set PARLEY_HOME\)"):
        registry(bundled, None).write("n", ".txt", b"hi")


def test_symlinks_are_read_through_and_never_written_through(dirs, tmp_path):
    bundled, user = dirs
    target = tmp_path / "kept-elsewhere.txt"
    target.write_text("linked")
    (user / "link.txt").symlink_to(target)
    (user / "dead.txt").symlink_to(tmp_path / "missing.txt")
    (tmp_path / "a-dir.txt").mkdir()
    (user / "to-dir.txt").symlink_to(tmp_path / "a-dir.txt")
    notes = registry(bundled, user)
    assert notes.names() == ["alpha", "beta", "link"] and notes.get("link") == "linked"
    with pytest.raises(InvalidRequest, match="link.txt is a symbolic link; parley does not write through"):
        notes.write("link", ".txt", b"replaced", overwrite=True)
    with pytest.raises(InvalidRequest, match="a user note 'link' exists"):
        notes.write("link", ".txt", b"replaced")
    assert target.read_text() == "linked"
    notes.delete("link")
    assert not os.path.lexists(user / "link.txt") and target.read_text() == "linked"
    assert notes.write("link", ".txt", b"a file now").read_bytes() == b"a file now" and target.read_text() == "linked"


def test_directories_named_like_entries_are_not_entries(dirs):
    bundled, user = dirs
    (user / "folder.txt").mkdir()
    (user / "beta.txt").mkdir()                       # does not hide the bundled beta
    (user / "mixed.txt").write_text("the file")
    (user / "mixed.md").mkdir()
    notes = registry(bundled, user)
    assert notes.names() == ["alpha", "beta", "mixed"] and notes.origin("beta") == "bundled"
    with pytest.raises(InvalidRequest, match="unknown note 'folder'"):
        notes.get("folder")
    for overwrite in (False, True):
        with pytest.raises(InvalidRequest, match=r"folder\.txt is in the way and not a note file"):
            notes.write("folder", ".txt", b"x", overwrite=overwrite)
    notes.delete("mixed")                             # the file goes; the directory is not the entry's
    assert not (user / "mixed.txt").exists() and (user / "mixed.md").is_dir()
