"""Loading single files, directories and several paths: kinds, encodings, headers, positions, refusals."""

from __future__ import annotations

import os

import pytest

from parley.documents import DocumentLimits, load_bytes, load_path, load_paths
from parley.errors import InvalidRequest, LimitExceeded

FRENCH = ("Le café était très chaud, et la crème brûlée était délicieuse.\n"
          "Où est la gare ? À côté du théâtre, près de la façade naïve.\n") * 3


def test_plain_text_has_no_header_and_normalised_line_ends():
    doc = load_bytes("notes.txt", b"first line\r\nsecond line\rthird line\n\n\n")
    assert doc.text == "first line\nsecond line\nthird line"
    (part,) = doc.parts
    assert (part.name, part.kind, part.encoding) == ("notes.txt", "text", "utf-8")
    assert doc.size_bytes == len(b"first line\r\nsecond line\rthird line\n\n\n")
    assert doc.name == "notes.txt" and doc.notes == ()


def test_markdown_latex_and_code_are_kept_as_written():
    md = "# Title\n\n* item with `code`\n"
    tex = "\\section{Intro}\nWe prove $a^2 + b^2 = c^2$.\n"
    py = "def main():\n    return 42\n"
    assert load_bytes("README.md", md.encode()).parts[0].kind == "markdown"
    assert load_bytes("README.md", md.encode()).text == md.rstrip()
    assert load_bytes("paper.tex", tex.encode()).parts[0].kind == "latex"
    assert load_bytes("paper.tex", tex.encode()).text == tex.rstrip()
    code = load_bytes("src/app/main.py", py.encode())
    assert (code.parts[0].kind, code.parts[0].name, code.text) == ("code", "src/app/main.py", py.rstrip())
    assert load_bytes("Makefile", b"all:\n\tcc x.c\n").parts[0].kind == "code"
    assert load_bytes("LICENSE", b"MIT License\n").parts[0].kind == "text"


def test_html_becomes_text_without_tags_script_or_style():
    html = b"""<!DOCTYPE html><html><head><title>The Page</title>
    <style>body { color: red }</style><script>alert("owned")</script></head>
    <body><!-- a comment --><h1>Heading</h1>
    <p>Some   <b>bold</b>
       text.</p><ul><li>one</li><li>two</li></ul>
    <pre>  indented
      code</pre><table><tr><td>a</td><td>b</td></tr></table>left<br>right</body></html>"""
    doc = load_bytes("page.html", html)
    assert doc.parts[0].kind == "html"
    assert doc.text == ("The Page\n\nHeading\n\nSome bold text.\n\none\ntwo\n\n  indented\n      code\n\n"
                        "a b\n\nleft\nright")
    for gone in ("<", "alert", "color", "comment"):
        assert gone not in doc.text


@pytest.mark.parametrize("encoding", ["cp1252", "latin-1"])
def test_non_utf8_text_is_detected(encoding):
    doc = load_bytes("lettre.txt", FRENCH.encode(encoding))
    assert doc.text == FRENCH.rstrip()
    assert doc.parts[0].encoding == "cp1252"  # latin-1 and cp1252 agree on these letters


def test_byte_order_marks():
    assert load_bytes("a.txt", "\ufeffhé".encode()).text == "hé"
    utf16 = load_bytes("a.txt", "hé\nthere".encode("utf-16"))
    assert (utf16.text, utf16.parts[0].encoding) == ("hé\nthere", "utf-16")


def test_same_file_under_two_names_has_the_same_hash(tmp_path):
    data = b"The same words.\nTwice.\n"
    (tmp_path / "a.txt").write_bytes(data)
    (tmp_path / "copy of a.md").write_bytes(data)
    one, two = load_path(tmp_path / "a.txt"), load_path(tmp_path / "copy of a.md")
    assert one.name != two.name
    assert one.content_hash == two.content_hash == load_bytes("upload.txt", data).content_hash
    assert len(one.content_hash) == 64


def _tree(root):
    files = {
        "README.md": b"# Project\n\nIt does things.\n",
        "src/app/main.py": b"import os\n\n\ndef main():\n    print('hi')\n",
        "src/app/util.py": b"X = 1\n",
        "docs/guide.txt": b"Read me first.\n",
        "logo.png": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)),
        ".env": b"SECRET=1\n",
        ".git/config": b"[core]\n",
        "node_modules/x/index.js": b"module.exports = 1\n",
        "empty.txt": b"",
        "old/backup.tar.gz": b"\x1f\x8b not read",
    }
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (root / "link.txt").symlink_to(root / "README.md")
    return files


def test_directory_is_walked_in_order_skipping_what_it_cannot_read(tmp_path):
    proj = tmp_path / "proj"
    files = _tree(proj)
    doc = load_path(proj)
    assert doc.name == "proj"
    assert [p.name for p in doc.parts] == ["README.md", "docs/guide.txt", "src/app/main.py", "src/app/util.py"]
    assert doc.text.startswith("=== README.md ===\n# Project\n")
    assert "\n\n=== src/app/main.py ===\nimport os\n" in doc.text
    notes = "\n".join(doc.notes)
    assert "proj/logo.png: binary file" in notes
    assert "proj/.env: hidden" in notes and "proj/.git: hidden" in notes and "proj/node_modules: hidden" in notes
    assert "proj/link.txt: symlink" in notes and "proj/empty.txt: empty" in notes
    assert "proj/old/backup.tar.gz: archive inside a directory, not read (name it on its own" in notes
    assert "SECRET" not in doc.text and "[core]" not in doc.text
    assert doc.size_bytes == sum(len(files[p.name]) for p in doc.parts)


def test_locate_maps_offsets_to_part_line_and_page(tmp_path):
    proj = tmp_path / "proj"
    _tree(proj)
    doc = load_path(proj)
    at = doc.text.index("print('hi')")
    loc = doc.locate(at)
    assert (loc.part, loc.line, loc.page) == ("src/app/main.py", 5, None)
    assert doc.parts[loc.part_index].name == "src/app/main.py"
    assert doc.locate(doc.text.index("=== docs/guide.txt")).part == "docs/guide.txt"
    assert doc.locate(0).part == "README.md"
    for i, (start, end) in enumerate(doc.spans):
        assert doc.text[start:end] == doc.parts[i].text


def test_several_paths_make_one_document_with_prefixed_names(tmp_path):
    proj = tmp_path / "proj"
    _tree(proj)
    (tmp_path / "notes.txt").write_text("loose notes\n")
    doc = load_paths([tmp_path / "notes.txt", proj])
    names = [p.name for p in doc.parts]
    assert names[0] == "notes.txt" and "proj/src/app/main.py" in names
    assert doc.text.startswith("=== notes.txt ===\nloose notes\n\n=== proj/README.md ===\n")
    assert doc.name == "notes.txt and 1 more"
    assert load_paths([tmp_path / "notes.txt"], name="mine").name == "mine"


def test_two_files_with_the_same_name_keep_their_paths(tmp_path):
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "README.md").write_text(f"readme {d}\n")
    doc = load_paths([tmp_path / "a" / "README.md", tmp_path / "b" / "README.md"])
    assert [p.name for p in doc.parts] == [(tmp_path / d / "README.md").as_posix() for d in ("a", "b")]
    with pytest.raises(InvalidRequest, match="given twice"):
        load_paths([tmp_path / "a" / "README.md"] * 2)


def test_root_refuses_paths_outside_it(tmp_path):
    inside = tmp_path / "docs"
    inside.mkdir()
    (inside / "ok.txt").write_text("fine\n")
    (tmp_path / "secret.txt").write_text("no\n")
    assert load_path(inside / "ok.txt", root=inside).text == "fine"
    with pytest.raises(InvalidRequest, match="secret.txt: outside the documents root"):
        load_path(inside / ".." / "secret.txt", root=inside)
    (inside / "sneaky.txt").symlink_to(tmp_path / "secret.txt")
    with pytest.raises(InvalidRequest, match="outside the documents root"):
        load_path(inside / "sneaky.txt", root=inside)


# --- refusals ---------------------------------------------------------------------------------------------


def test_binary_file_is_refused_with_the_readable_kinds():
    with pytest.raises(InvalidRequest) as e:
        load_bytes("model.bin", b"GGUF\x00\x00\x00\x03" + bytes(range(256)) * 4)
    assert str(e.value).startswith("model.bin: binary file (NUL bytes), not text")
    assert "PDF" in str(e.value) and "Markdown" in str(e.value)


def test_undecodable_bytes_are_refused():
    junk = bytes((i * 97 + 13) % 255 + 1 for i in range(4000))  # no NULs, no encoding makes sense of it
    with pytest.raises(InvalidRequest, match=r"^junk.dat: not text in any encoding"):
        load_bytes("junk.dat", junk)


def test_empty_file_and_missing_file_are_refused(tmp_path):
    with pytest.raises(InvalidRequest, match="empty.txt: empty"):
        load_bytes("empty.txt", b"  \n\n")
    with pytest.raises(InvalidRequest, match="no such file"):
        load_path(tmp_path / "nope.txt")
    (tmp_path / "hollow").mkdir()
    with pytest.raises(InvalidRequest, match="hollow: no readable files"):
        load_path(tmp_path / "hollow")


def test_fifo_is_refused_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(InvalidRequest, match="pipe: not a regular file"):
        load_path(tmp_path / "pipe")


def test_oversized_file_is_refused(tmp_path):
    limits = DocumentLimits(max_file_bytes=1000)
    (tmp_path / "big.log").write_bytes(b"x" * 1001)
    with pytest.raises(LimitExceeded) as e:
        load_path(tmp_path / "big.log", limits)
    assert str(e.value) == "big.log: 1001 bytes is over max_file_bytes (1000 bytes); split the file or raise the limit"
    assert e.value.param == "max_file_bytes"
    with pytest.raises(LimitExceeded, match="upload.txt: .* max_file_bytes"):
        load_bytes("upload.txt", b"y" * 1001, limits)


def test_oversized_file_in_a_directory_names_it(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.txt").write_text("small\n")
    (tmp_path / "d" / "b.txt").write_text("z" * 5000)
    with pytest.raises(LimitExceeded, match=r"^d/b.txt: .* max_file_bytes"):
        load_path(tmp_path / "d", DocumentLimits(max_file_bytes=1000))


def test_total_bytes_and_too_many_files_are_refused(tmp_path):
    d = tmp_path / "many"
    d.mkdir()
    for i in range(5):
        (d / f"f{i}.txt").write_text(f"file {i} " * 50)
    with pytest.raises(LimitExceeded) as e:
        load_path(d, DocumentLimits(max_files=3))
    assert str(e.value).startswith("many/f3.txt: file number 4 is over max_files (3)")
    assert e.value.param == "max_files"
    with pytest.raises(LimitExceeded, match=r"^many/f2.txt: the total so far, .* max_total_bytes"):
        load_path(d, DocumentLimits(max_total_bytes=1000))
    with pytest.raises(LimitExceeded, match=r"^many/f2.txt: the text so far, .* max_chars"):
        load_path(d, DocumentLimits(max_chars=1000))


def test_limits_must_be_positive():
    with pytest.raises(InvalidRequest, match="max_files must be a positive number") as e:
        DocumentLimits(max_files=0)
    assert e.value.param == "max_files"
    with pytest.raises(InvalidRequest, match="max_expansion_ratio must be at least 1"):
        DocumentLimits(max_expansion_ratio=0.5)


def test_upload_name_with_control_characters_is_refused():
    with pytest.raises(InvalidRequest, match="control characters"):
        load_bytes("a\n=== b ===.txt", b"x")
