"""Archives read in memory: headers and member names, and every refusal naming `archive:member` and the reason."""

from __future__ import annotations

import gzip
import io
import re
import tarfile
import time
import zipfile

import pytest

from parley.documents import DocumentLimits, load_bytes, load_path, load_paths
from parley.errors import InvalidRequest, LimitExceeded

TREE = {
    "README.md": b"# Tool\n\nIt parses logs.\n",
    "src/parse.py": b"def parse(line):\n    return line.split()\n",
    "src/io/read.py": b"def read(path):\n    return open(path).read()\n",
}
EXPECTED = [
    "=== README.md ===\n# Tool\n\nIt parses logs.",
    "=== src/io/read.py ===\ndef read(path):\n    return open(path).read()",
    "=== src/parse.py ===\ndef parse(line):\n    return line.split()",
]


def _member(name: str, kind: bytes, **kw) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    for key, value in kw.items():
        setattr(info, key, value)
    return info


@pytest.mark.parametrize("archive", ["tool.zip", "tool.tar.gz", "tool.tgz", "tool.tar"])
def test_archive_of_several_files_has_a_header_per_file(archive, make_zip, make_tar):
    data = make_zip(TREE) if archive.endswith(".zip") else make_tar(TREE, "" if archive.endswith(".tar") else "gz")
    doc = load_bytes(archive, data)
    assert doc.name == archive and doc.size_bytes == len(data)
    assert [p.name for p in doc.parts] == ["README.md", "src/io/read.py", "src/parse.py"]
    assert doc.text == "\n\n".join(EXPECTED)
    assert [p.kind for p in doc.parts] == ["markdown", "code", "code"]


def test_the_same_tree_gives_the_same_text_as_zip_tar_or_folder(tmp_path, make_zip, make_tar):
    folder = tmp_path / "tool"
    for rel, data in TREE.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    (tmp_path / "tool.zip").write_bytes(make_zip(dict(reversed(TREE.items()))))
    hashes = {load_path(folder).content_hash, load_path(tmp_path / "tool.zip").content_hash,
              load_bytes("t.tar.gz", make_tar(TREE)).content_hash}
    assert len(hashes) == 1


def test_archive_among_several_paths_prefixes_its_members(tmp_path, make_zip):
    (tmp_path / "tool.zip").write_bytes(make_zip(TREE))
    (tmp_path / "notes.txt").write_text("notes\n")
    doc = load_paths([tmp_path / "notes.txt", tmp_path / "tool.zip"])
    assert [p.name for p in doc.parts] == ["notes.txt", "tool.zip:README.md", "tool.zip:src/io/read.py",
                                           "tool.zip:src/parse.py"]
    assert "=== tool.zip:src/parse.py ===\ndef parse" in doc.text


def test_binary_hidden_and_macos_members_are_skipped_with_a_note(make_zip):
    doc = load_bytes("a.zip", make_zip({"doc.txt": b"words\n", "pic.png": b"\x89PNG\x00\x00data",
                                        "__MACOSX/._doc.txt": b"\x00\x05", ".hidden/x.txt": b"secret\n",
                                        "dir/.DS_Store": b"\x00\x00"}))
    assert [p.name for p in doc.parts] == ["doc.txt"]
    assert doc.notes == ("a.zip:pic.png: binary file (NUL bytes), not text; parley reads text, Markdown, source "
                         "code, LaTeX, HTML, PDF, and .zip / .tar / .tar.gz archives of them; skipped",
                         "a.zip:__MACOSX/: hidden or cache file or directory; skipped",
                         "a.zip:.hidden/: hidden or cache file or directory; skipped",
                         "a.zip:dir/.DS_Store: hidden or cache file or directory; skipped")


def test_pdf_member_keeps_its_pages(make_zip, make_pdf):
    doc = load_bytes("papers.zip", make_zip({"a.pdf": make_pdf(["one", "two"]), "b.txt": b"bee\n"}))
    assert doc.parts[0].name == "a.pdf" and [p.number for p in doc.parts[0].pages] == [1, 2]
    assert doc.locate(doc.text.index("two")).page == 2


# --- refusals: names, links, types ------------------------------------------------------------------------


@pytest.mark.parametrize("name, reason", [
    ("../evil.txt", "path climbs out of the archive with '..'"),
    ("docs/../../evil.txt", "path climbs out of the archive with '..'"),
    ("/etc/passwd", "absolute path in the archive"),
    ("C:\\Windows\\evil.txt", "absolute path in the archive"),
])
def test_traversal_members_are_refused(name, reason, make_zip, make_tar):
    files = {"ok.txt": b"fine\n", name: b"evil\n"}
    with pytest.raises(InvalidRequest) as e:
        load_bytes("bad.zip", make_zip(files))
    assert str(e.value) == f"bad.zip:{name}: {reason}; refused" + (
        " (members must be relative)" if "absolute" in reason else "")
    with pytest.raises(InvalidRequest, match=f"^bad.tar.gz:{name[:2]}.*{reason[:15]}"):
        load_bytes("bad.tar.gz", make_tar(files))


def test_symlink_and_hardlink_members_are_refused(make_zip, make_tar):
    link = _member("link.txt", tarfile.SYMTYPE, linkname="/etc/passwd")
    with pytest.raises(InvalidRequest, match=r"^l.tar.gz:link.txt: symlink member \(-> /etc/passwd\); refused"):
        load_bytes("l.tar.gz", make_tar({"ok.txt": b"fine\n", "link.txt": link}))
    hard = _member("hard.txt", tarfile.LNKTYPE, linkname="ok.txt")
    with pytest.raises(InvalidRequest, match=r"^l.tar:hard.txt: hardlink member \(-> ok.txt\); refused"):
        load_bytes("l.tar", make_tar({"ok.txt": b"fine\n", "hard.txt": hard}, ""))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        info = zipfile.ZipInfo("link.txt")
        info.external_attr = (0o120777 << 16)
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(InvalidRequest, match=r"^l.zip:link.txt: symlink member; refused"):
        load_bytes("l.zip", buf.getvalue())


@pytest.mark.parametrize("kind", [tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE])
def test_device_and_fifo_members_are_refused(kind, make_tar):
    with pytest.raises(InvalidRequest, match=r"^d.tar.gz:dev/thing: device or FIFO member; refused"):
        load_bytes("d.tar.gz", make_tar({"dev/thing": _member("dev/thing", kind)}))


def test_encrypted_and_duplicate_zip_members_are_refused():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("secret.txt", b"not really encrypted")
    data = bytearray(buf.getvalue())
    data[data.rindex(b"PK\x01\x02") + 8] |= 0x1  # the central directory's "encrypted" flag
    with pytest.raises(InvalidRequest, match=r"^e.zip:secret.txt: encrypted member; decrypt the archive first"):
        load_bytes("e.zip", bytes(data))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf, pytest.warns(UserWarning, match="Duplicate name"):
        zf.writestr("a.txt", "one")
        zf.writestr("a.txt", "two")
    with pytest.raises(InvalidRequest, match=r"^d.zip:a.txt: appears twice in the archive; refused"):
        load_bytes("d.zip", buf.getvalue())


def test_nested_archive_is_not_read(make_zip, make_tar):
    inner = make_zip({"inside.txt": b"hidden away\n"})
    with pytest.raises(InvalidRequest) as e:
        load_bytes("outer.zip", make_zip({"inner.zip": inner}))
    assert str(e.value).startswith("outer.zip: no readable files (outer.zip:inner.zip: nested archive, not read "
                                   "(extract it and load its files); skipped)")
    doc = load_bytes("outer.tar.gz", make_tar({"a.txt": b"top\n", "deep/inner.tgz": make_tar({"b.txt": b"x"})}))
    assert doc.text == "top"
    assert doc.notes == ("outer.tar.gz:deep/inner.tgz: nested archive, not read (extract it and load its files); "
                         "skipped",)


def test_corrupt_archives_are_refused(make_zip, make_tar):
    with pytest.raises(InvalidRequest, match=r"^x.zip: not a readable zip archive"):
        load_bytes("x.zip", b"PK\x03\x04 garbage")
    with pytest.raises(InvalidRequest, match=r"^x.tar.gz: not a readable tar archive"):
        load_bytes("x.tar.gz", make_tar(TREE)[:-200])
    with pytest.raises(InvalidRequest, match=r"^x.tar: not a readable tar archive"):
        load_bytes("x.tar", b"plain text pretending to be a tar\n" * 40)


# --- refusals: sizes, counts, bombs -----------------------------------------------------------------------


def _zeros_zip(n: int) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        zf.writestr("ok.txt", b"fine\n")
        zf.writestr("zeros.txt", bytes(n))
    return buf.getvalue()


def test_zip_bomb_is_refused_by_its_ratio():
    bomb = _zeros_zip(50 * 1024 * 1024)
    assert len(bomb) < 100_000
    with pytest.raises(LimitExceeded) as e:
        load_bytes("bomb.zip", bomb, DocumentLimits(max_file_bytes=1 << 30, max_total_bytes=1 << 30))
    msg = str(e.value)
    assert msg.startswith("bomb.zip:zeros.txt: declares 50.0 MB from ")
    assert "(a zip bomb?) is over max_expansion_ratio (100x); refused" in msg
    assert e.value.param == "max_expansion_ratio"
    with pytest.raises(LimitExceeded, match=r"^bomb.zip:zeros.txt: 50.0 MB is over max_file_bytes \(50.0 MB\)"):
        load_bytes("bomb.zip", _zeros_zip(50 * 1024 * 1024 + 1))  # default limits: the declared size alone


def test_a_lying_central_directory_is_never_expanded_past_its_declaration():
    """Declared: 200 KB from 20 KB (ratio 10, fine). Real: 20 MB of zeros. Reading stops at the declared 200 KB
    and the member is refused (its CRC cannot match); a declaration past the limits is refused unread."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("zeros.txt", bytes(20 * 1024 * 1024))
    data = bytearray(buf.getvalue())
    cd = data.rindex(b"PK\x01\x02")
    data[cd + 20: cd + 24] = (20_000).to_bytes(4, "little")  # compressed size, declared
    data[cd + 24: cd + 28] = (200_000).to_bytes(4, "little")  # uncompressed size, declared
    start = time.perf_counter()
    with pytest.raises(InvalidRequest, match=r"^lie.zip:zeros.txt: corrupt zip member \(Bad CRC-32"):
        load_bytes("lie.zip", bytes(data))
    assert time.perf_counter() - start < 1


def _tar_gz_bomb(gigabytes: int) -> bytes:
    """A tar.gz whose one member is `gigabytes` GB of zeros, built cheaply: gzip members concatenated."""
    info = tarfile.TarInfo("zeros.txt")
    info.size = gigabytes << 30
    mb_of_zeros = gzip.compress(bytes(1 << 20), compresslevel=9)
    return gzip.compress(info.tobuf(format=tarfile.GNU_FORMAT)) + mb_of_zeros * (info.size >> 20)


def test_tar_gz_bomb_stops_while_decompressing():
    bomb = _tar_gz_bomb(2)
    assert len(bomb) < 4_000_000
    start = time.perf_counter()
    with pytest.raises(LimitExceeded) as e:
        load_bytes("bomb.tar.gz", bomb, DocumentLimits(max_file_bytes=4 << 30, max_total_bytes=4 << 30))
    msg = str(e.value)
    assert re.match(r"^bomb.tar.gz: expands to (\d+\.\d) MB from (\d\.\d) MB \(a zip bomb\?\) is over "
                    r"max_expansion_ratio \(100x\); refused", msg), msg
    expanded, compressed = (float(x) for x in re.findall(r"(\d+\.\d) MB", msg)[:2])
    assert expanded < 101 * compressed  # stopped at the ratio, not after the 2 GB
    assert time.perf_counter() - start < 3


def test_oversized_member_too_many_members_and_total_are_refused(make_zip, make_tar):
    files = {f"f{i}.txt": b"line of text\n" * 100 for i in range(5)}  # 1300 bytes each
    with pytest.raises(LimitExceeded, match=r"^m.zip:f0.txt: 1.3 KB is over max_file_bytes \(1000 bytes\)"):
        load_bytes("m.zip", make_zip(files), DocumentLimits(max_file_bytes=1000))
    with pytest.raises(LimitExceeded, match=r"^m.tar.gz:f3.txt: file number 4 is over max_files \(3\)"):
        load_bytes("m.tar.gz", make_tar(files), DocumentLimits(max_files=3))
    with pytest.raises(LimitExceeded, match=r"^m.zip:f3.txt: file number 4 is over max_files \(3\)"):
        load_bytes("m.zip", make_zip(files), DocumentLimits(max_files=3))
    with pytest.raises(LimitExceeded, match=r"^m.zip:f3.txt: the total so far, 5.1 KB, is over max_total_bytes"):
        load_bytes("m.zip", make_zip(files), DocumentLimits(max_total_bytes=5000))
    with pytest.raises(LimitExceeded, match=r"^m.tar: \d+.\d KB is over max_total_bytes \(1000 bytes\)"):
        load_bytes("m.tar", make_tar(files, ""), DocumentLimits(max_total_bytes=1000))  # the archive itself
