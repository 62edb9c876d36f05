"""Personas and character cards (no model): V1/V2/V3 cards as JSON and PNG round-trip every field, the TOML file
round-trips, substitution and the narrative, bundled personas, the user directory, and the errors malformed cards
get. PNGs are built here with the test's own chunk writer, so the reader is not only checked against its writer."""

from __future__ import annotations

import base64
import copy
import json
import struct
import tomllib
import tracemalloc
import zlib
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from parley.chat import cards
from parley.chat.personas import (
    Character,
    Persona,
    Personas,
    card_json,
    card_png,
    file_name,
    load_card,
    load_toml,
    persona_toml,
)
from parley.errors import InvalidRequest, LimitExceeded

SIG = b"\x89PNG\r\n\x1a\n"


# ---- a PNG writer and reader of the test's own ---------------------------------------------------------------

def chunk(ctype: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + ctype + body + struct.pack(">I", zlib.crc32(ctype + body) & 0xFFFFFFFF)


def image_chunks(w: int = 3, h: int = 2) -> list[bytes]:
    """IHDR + IDAT of a w x h RGB image with distinct pixels, and a gAMA chunk that must survive re-export."""
    rows = b"".join(b"\0" + bytes((x * 40 + y * 7) % 256 for x in range(w * 3)) for y in range(h))
    return [chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)), chunk(b"gAMA", struct.pack(">I", 45455)),
            chunk(b"IDAT", zlib.compress(rows))]


def png(*extra: bytes) -> bytes:
    return SIG + b"".join(image_chunks()) + b"".join(extra) + chunk(b"IEND", b"")


def text_chunk(keyword: str, obj) -> bytes:
    return chunk(b"tEXt", keyword.encode() + b"\0" + base64.b64encode(json.dumps(obj).encode()))


def read_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    assert data[:8] == SIG
    out, pos = [], 8
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos:pos + 4])
        ctype, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        assert struct.unpack(">I", data[pos + 8 + n:pos + 12 + n])[0] == zlib.crc32(ctype + body)
        out.append((ctype, body))
        pos += 12 + n
    return out


def cards_in(data: bytes) -> dict[str, dict]:
    out = {}
    for ctype, body in read_chunks(data):
        if ctype == b"tEXt":
            key, _, text = body.partition(b"\0")
            assert key.decode() not in out, f"two {key} chunks"
            out[key.decode()] = json.loads(base64.b64decode(text))
    return out


# ---- cards made at test time ---------------------------------------------------------------------------------

EXTENSIONS = {
    "talkativeness": "0.5", "fav": False, "world": "Gull Rock",
    "depth_prompt": {"prompt": "Stay in character.", "depth": 4, "role": "system"},
    "some_frontend": {"nested": {"list": [1, "two", {"three": None}], "flag": True}, "ratio": 0.25},
}
BOOK = {"name": "Lore", "entries": [{"keys": ["lamp"], "content": "The lamp is paraffin.", "extensions": {},
                                     "enabled": True, "insertion_order": 0, "comment": None}],
        "extensions": {"vendor": {"x": 1}}}


def v2_card() -> dict:
    return {
        "spec": "chara_card_v2", "spec_version": "2.0",
        "data": {
            "name": "Maren", "description": "{{char}} keeps the light; {{user}} is a guest.",
            "personality": "dry, exact", "scenario": "A storm night in the lamp room.",
            "first_mes": "Shut the hatch, {{user}}.", "mes_example": "<START>\n{{user}}: Hello?\n{{char}}: Shut it.",
            "creator_notes": "SECRET NOTE: tested with model X", "system_prompt": "Write {{char}}'s next reply.",
            "post_history_instructions": "Stay terse.", "alternate_greetings": ["Who sent you?", "Sit down."],
            "tags": ["mystery", "sea"], "creator": "tester", "character_version": "1.2",
            "extensions": copy.deepcopy(EXTENSIONS), "character_book": copy.deepcopy(BOOK),
            "future_field": {"kept": ["verbatim", 1]},
        },
        # SillyTavern's V1 mirrors next to data, and its own extras
        "name": "Maren", "description": "{{char}} keeps the light; {{user}} is a guest.", "first_mes": "Shut the hatch, {{user}}.",
        "creatorcomment": "SECRET NOTE: tested with model X", "avatar": "none", "create_date": "2026-1-2 @10h",
    }


def v3_card() -> dict:
    card = v2_card()
    data = card["data"]
    data.update({"nickname": "the Keeper", "creator_notes_multilingual": {"fr": "NOTE FR"},
                 "source": ["https://example.org/maren"], "group_only_greetings": ["Everyone, quiet."],
                 "assets": [{"type": "icon", "uri": "ccdefault:", "name": "main", "ext": "png"},
                            {"type": "background", "uri": "embeded://bg.png", "name": "bg", "ext": "png"}],
                 "creation_date": 1767225600, "modification_date": 1767312000})
    return {"spec": "chara_card_v3", "spec_version": "3.0", "data": data}


def test_v2_json_card_round_trips_every_field():
    card = v2_card()
    p = load_card(json.dumps(card).encode(), "maren.json")
    assert (p.name, p.first_message, p.example_dialogue) == ("Maren", "Shut the hatch, {{user}}.",
                                                             card["data"]["mes_example"])
    assert p.alternate_greetings == ("Who sent you?", "Sit down.") and p.tags == ("mystery", "sea")
    assert p.extensions == EXTENSIONS and p.character_book == BOOK
    assert p.extra == {"future_field": {"kept": ["verbatim", 1]}}
    assert p.extra_top == {k: card[k] for k in ("name", "description", "first_mes", "creatorcomment", "avatar",
                                                "create_date")}
    assert card_json(p, "v2") == card


def test_export_refreshes_sillytaverns_mirror_fields():
    p = load_card(json.dumps(v2_card()).encode()).with_changes(name="Marin", creator_notes="new note")
    out = card_json(p, "v2")
    assert out["name"] == out["data"]["name"] == "Marin"
    assert out["creatorcomment"] == out["data"]["creator_notes"] == "new note"
    assert out["avatar"] == "none"


def test_exported_card_is_a_copy():
    p = load_card(json.dumps(v2_card()).encode())
    card_json(p)["data"]["extensions"]["some_frontend"]["nested"]["list"].append("changed")
    assert p.extensions == EXTENSIONS


def test_v2_png_card_round_trips_and_keeps_the_pixels():
    card = v2_card()
    original = png(text_chunk("chara", card))
    p = load_card(original, "maren.png")
    assert p.extensions == EXTENSIONS and p.extra["future_field"] == {"kept": ["verbatim", 1]}
    out = card_png(p, "v2", image=original)
    assert load_card(out, "again.png") == p
    assert cards_in(out) == {"chara": card}
    image = [c for c in read_chunks(out) if c[0] != b"tEXt"]
    assert image == [(c[4:8], c[8:-4]) for c in image_chunks()] + [(b"IEND", b"")]


def test_v3_png_card_round_trips_with_a_v2_chunk_beside_it():
    card = v3_card()
    p = load_card(png(text_chunk("ccv3", card)), "maren.png")
    assert p.nickname == "the Keeper" and p.source == ("https://example.org/maren",)
    assert p.group_only_greetings == ("Everyone, quiet.",) and p.creation_date == 1767225600
    assert p.assets[1]["uri"] == "embeded://bg.png" and p.creator_notes_multilingual == {"fr": "NOTE FR"}
    out = card_png(p, "v3", image=png(text_chunk("ccv3", card)))
    found = cards_in(out)
    assert found["ccv3"] == card
    assert found["chara"]["spec"] == "chara_card_v2" and found["chara"]["data"]["name"] == "Maren"
    assert "nickname" not in found["chara"]["data"]          # V2 has no such field
    assert load_card(out) == p
    assert card_json(p, "v3") == card


def test_png_with_both_chunks_reads_ccv3():
    v2 = {"spec": "chara_card_v2", "spec_version": "2.0", "data": {"name": "Old"}}
    v3 = {"spec": "chara_card_v3", "spec_version": "3.0", "data": {"name": "New", "nickname": "N"}}
    assert load_card(png(text_chunk("chara", v2), text_chunk("ccv3", v3))).name == "New"


def test_ztxt_and_itxt_card_chunks_are_read():
    raw = base64.b64encode(json.dumps({"name": "Zed", "description": "zipped"}).encode())
    ztxt = chunk(b"zTXt", b"chara\0\0" + zlib.compress(raw))
    assert load_card(png(ztxt)).description == "zipped"
    itxt = chunk(b"iTXt", b"chara\0\1\0en\0\0" + zlib.compress(raw))
    assert load_card(png(itxt)).name == "Zed"
    plain_itxt = chunk(b"iTXt", b"chara\0\0\0\0\0" + raw)
    assert load_card(png(plain_itxt)).name == "Zed"


def test_base64_with_line_breaks_and_no_padding_is_read():
    raw = base64.b64encode(json.dumps({"name": "Ada", "description": "x"}).encode()).decode()
    assert raw.endswith("=")
    wrapped = "\n".join(raw.rstrip("=")[i:i + 20] for i in range(0, len(raw), 20))
    assert load_card(png(chunk(b"tEXt", b"chara\0" + wrapped.encode()))).name == "Ada"


def test_spec_version_as_a_number():
    card = {"spec": "chara_card_v2", "spec_version": 2, "data": {"name": "Ada"}}
    assert load_card(json.dumps(card).encode()).name == "Ada"


def test_v1_card_imports_and_exports_as_v2():
    flat = {"name": "Bo", "description": "A cat.", "personality": "lazy", "scenario": "sofa", "first_mes": "Mrrp.",
            "mes_example": "", "avatar": "bo.png", "tags": ["cat"]}
    p = load_card(json.dumps(flat).encode(), "bo.json")
    assert (p.name, p.description, p.first_message, p.tags) == ("Bo", "A cat.", "Mrrp.", ("cat",))
    out = card_json(p)
    assert out["data"]["personality"] == "lazy" and out["avatar"] == "bo.png"
    old = {"char_name": "Cy", "char_persona": "A robot.", "world_scenario": "Mars", "char_greeting": "Beep."}
    q = load_card(json.dumps(old).encode())
    assert (q.name, q.description, q.scenario, q.first_message) == ("Cy", "A robot.", "Mars", "Beep.")


def test_parley_settings_travel_in_the_parley_extension_only_when_set():
    plain = Persona("Ada")
    assert "parley" not in card_json(plain)["data"]["extensions"]
    group = Persona("Maren", format="transcript", user_name="Traveller",
                    characters=(Character("Tobias", "the apprentice"), Character("Ines")))
    ext = card_json(group)["data"]["extensions"]["parley"]
    assert ext == {"format": "transcript", "user_name": "Traveller",
                   "characters": [{"name": "Tobias", "description": "the apprentice"},
                                  {"name": "Ines", "description": ""}]}
    assert load_card(card_png(group)) == group
    assert load_card(json.dumps(card_json(group, "v3")).encode()) == group


def test_placeholder_png_is_a_valid_image():
    out = card_png(Persona("Ada"))
    chunks = read_chunks(out)
    assert [c[0] for c in chunks] == [b"IHDR", b"IDAT", b"tEXt", b"IEND"]
    w, h, depth, colour = struct.unpack(">IIBB", chunks[0][1][:10])
    assert (w, h, depth, colour) == (64, 64, 8, 2)
    pixels = zlib.decompress(chunks[1][1])
    assert len(pixels) == h * (1 + 3 * w) and all(pixels[r * (1 + 3 * w)] == 0 for r in range(h))


# ---- what the prompt builder calls ---------------------------------------------------------------------------

def test_substitute_char_user_and_legacy_macros():
    p = Persona("Ada", user_name="Sam")
    assert p.substitute("{{char}} greets {{User}}; <BOT> and <user>, {{CHAR}}.") == "Ada greets Sam; Ada and Sam, Ada."
    assert p.substitute("hi {{user}}", user_name="Kim") == "hi Kim"
    tricky = Persona("{{user}} fan")
    assert tricky.substitute("{{char}}") == "{{user}} fan"           # substituted text is not scanned again


def test_narrative_order_and_never_creator_notes():
    p = load_card(json.dumps(v3_card()).encode())
    text = p.narrative(user_name="Kim")
    assert text == ("Maren keeps the light; Kim is a guest.\n\nMaren's personality: dry, exact\n\n"
                    "Scenario: A storm night in the lamp room.")
    assert "SECRET" not in text and "NOTE FR" not in text and "Stay terse" not in text
    group = p.with_changes(characters=[{"name": "Tobias", "description": "the apprentice"}, "Ines"])
    assert "Characters:\n- Tobias: the apprentice\n- Ines\n\nScenario:" in group.narrative()


def test_examples_parse_into_blocks_of_speaker_lines():
    p = Persona("Maren", user_name="Kim", characters=("Tobias",), example_dialogue=(
        "ignored preface\n<START>\n{{user}}: Hello?\n{{char}}: Shut the hatch.\nIt sticks.\n"
        "Tobias: Ghosts!\n<start>\n\n<START>\n<USER>: Bye: for now\nNarrator: not a speaker line"))
    assert p.examples() == [
        [("Kim", "Hello?"), ("Maren", "Shut the hatch.\nIt sticks."), ("Tobias", "Ghosts!")],
        [("Kim", "Bye: for now\nNarrator: not a speaker line")],
    ]
    assert p.examples(user_name="Lee")[0][0] == ("Lee", "Hello?")


def test_greetings_offer_the_alternates():
    p = load_card(json.dumps(v3_card()).encode())
    assert p.greetings() == ["Shut the hatch, User.", "Who sent you?", "Sit down."]
    assert p.greetings("Kim", group=True)[-1] == "Everyone, quiet."
    assert Persona("Ada").greetings() == []


def test_speakers_and_with_changes_validate():
    p = Persona("Maren", characters=("Tobias", Character("Ines", "cook")))
    assert p.speakers() == ["Maren", "Tobias", "Ines"]
    assert p.with_changes(tags=["a"]).tags == ("a",)
    with pytest.raises(InvalidRequest, match="no field 'colour'; fields: name, description"):
        p.with_changes(colour="red")
    with pytest.raises(InvalidRequest, match="format must be one of template, transcript, got 'novel'"):
        p.with_changes(format="novel")
    with pytest.raises(InvalidRequest, match="distinct names, got Maren, Tobias, Maren"):
        p.with_changes(characters=("Tobias", "Maren"))
    with pytest.raises(InvalidRequest, match="name must be a non-empty single line"):
        Persona(" ")
    with pytest.raises(InvalidRequest, match="tags must be a list of strings, got a string"):
        Persona("Ada", tags="a, b")


# ---- the TOML persona file ---------------------------------------------------------------------------------

def test_toml_round_trip_of_a_full_card():
    p = load_card(json.dumps(v3_card()).encode()).with_changes(
        format="transcript", user_name="Kim", characters=(Character("Tobias", 'says "boo"'),),
        extensions={**EXTENSIONS, "some_frontend": {"nested": {"list": [1, "two", {"three": 3}]}}},
        character_book={**BOOK, "entries": [{"keys": ["lamp"], "content": 'a """ b\\'}]})
    text = persona_toml(p)
    assert load_toml(text, "maren.toml") == p
    doc = tomllib.loads(text)
    assert doc["name"] == "Maren" and doc["format"] == "transcript"
    assert doc["characters"] == [{"name": "Tobias", "description": 'says "boo"'}]


def test_toml_cannot_hold_null_and_says_so():
    p = Persona("Ada", extensions={"a": {"b": [1, None]}})
    with pytest.raises(InvalidRequest, match=r"extensions\.a\.b\[1\] is null .* JSON card"):
        persona_toml(p)


@settings(max_examples=300, deadline=None)
@given(st.text(), st.text(st.characters(codec="utf-8"), min_size=1).filter(str.strip))
@example('a """ b', "k")
@example('line\n"""', "k.with.dots")
@example('ends in quotes\n""', 'quoted "key"')
@example('\\\n\\"""\r\n\x00\x7f\t', "tab\tkey")
@example("\n\nstarts with newlines", "k")
def test_toml_strings_survive_any_text(text, key):
    p = Persona("Ada", description=text, extensions={key: text, "list": [text]})
    assert load_toml(persona_toml(p)) == p


def test_toml_errors_name_the_file_and_key():
    with pytest.raises(InvalidRequest, match="ada.toml: unknown key 'descripton'; known: name"):
        load_toml('name = "Ada"\ndescripton = "x"', "ada.toml")
    with pytest.raises(InvalidRequest, match="ada.toml: name is missing"):
        load_toml('description = "x"', "ada.toml")
    with pytest.raises(InvalidRequest, match="ada.toml is not valid TOML"):
        load_toml('name = "Ada', "ada.toml")
    with pytest.raises(InvalidRequest, match="ada.toml: alternate_greetings must be a list of strings"):
        load_toml('name = "Ada"\nalternate_greetings = "hi"', "ada.toml")


# ---- bundled personas and the user directory ---------------------------------------------------------------

def test_bundled_personas_load_and_validate():
    ps = Personas(None)
    assert {"lighthouse", "tutor", "night-train"} <= set(ps.names())
    for name in ps.names():
        p = ps.get(name)
        words = len(p.narrative().split())
        assert 80 <= words <= 250, f"{name}: narrative of {words} words"
        assert "{{" not in p.narrative() and p.greetings()
        assert load_toml(persona_toml(p)) == p
    group = ps.get("lighthouse")
    assert group.format == "transcript" and group.speakers() == ["Maren", "Tobias", "Ines"]
    assert {s for block in group.examples() for s, _ in block} == {"Traveller", "Maren", "Tobias", "Ines"}
    assert ps.get("tutor").format == "template"


def test_unknown_persona_lists_the_known_ones(tmp_path):
    with pytest.raises(InvalidRequest, match="unknown persona 'x'; known: lighthouse, night-train, tutor"):
        Personas(tmp_path).get("x")


def test_save_get_delete_in_the_user_dir(tmp_path):
    ps = Personas(tmp_path / "personas")
    p = load_card(json.dumps(v2_card()).encode()).with_changes(name="../../etc/Evil Name!", extensions={},
                                                               character_book=None)
    path = ps.save(p)
    assert path == tmp_path / "personas" / "etc-evil-name.toml"
    assert ps.get("etc-evil-name") == p and "etc-evil-name" in ps.names()
    with pytest.raises(InvalidRequest, match="a user persona 'etc-evil-name' exists"):
        ps.save(p)
    assert ps.delete("etc-evil-name") == path and not path.exists()
    with pytest.raises(InvalidRequest, match="bundled with parley and cannot be deleted"):
        ps.delete("tutor")


def test_save_falls_back_to_a_json_card_when_toml_cannot_hold_it(tmp_path):
    ps = Personas(tmp_path)
    p = load_card(json.dumps(v3_card()).encode())             # its extensions and lorebook hold nulls
    path = ps.save(p)
    assert path.suffix == ".json" and ps.get("maren") == p
    assert ps.save(p.with_changes(extensions={}, character_book=None), overwrite=True).suffix == ".toml"
    assert not path.exists() and [f.name for f in tmp_path.iterdir()] == ["maren.toml"]


def test_user_files_of_every_kind_and_overriding_a_bundled_one(tmp_path):
    (tmp_path / "card.png").write_bytes(png(text_chunk("chara", v2_card())))
    (tmp_path / "flat.json").write_text(json.dumps({"name": "Bo"}))
    (tmp_path / "tutor.toml").write_text('name = "My Tutor"\n')
    (tmp_path / "notes.txt").write_text("not a persona")
    ps = Personas(tmp_path)
    assert ps.names() == ["card", "flat", "lighthouse", "night-train", "tutor"]
    assert ps.get("card").extensions == EXTENSIONS and ps.get("flat").name == "Bo"
    assert ps.get("tutor").name == "My Tutor" and not ps.is_bundled("tutor")
    ps.delete("tutor")
    assert ps.get("tutor").name == "Quill" and ps.is_bundled("tutor")


def test_import_card_keeps_a_png_whole_and_export_keeps_its_image(tmp_path):
    ps = Personas(tmp_path)
    data = png(text_chunk("chara", v2_card()))
    name, p = ps.import_card(data, "upload.png")
    assert (tmp_path / f"{name}.png").read_bytes() == data and ps.get(name) == p
    out = ps.export_card(name, "v3", png=True)
    assert load_card(out) == p and [c for c in read_chunks(out) if c[0] in (b"IHDR", b"gAMA", b"IDAT")] == \
        [c for c in read_chunks(data) if c[0] in (b"IHDR", b"gAMA", b"IDAT")]
    assert json.loads(ps.export_card(name, "v2")) == card_json(p, "v2")
    with pytest.raises(InvalidRequest, match="exists"):
        ps.import_card(data, "upload.png")
    flat, q = ps.import_card(json.dumps({"name": "Tutor"}).encode(), overwrite=True)   # JSON: a TOML file
    assert (tmp_path / "tutor.toml").is_file() and ps.origin(flat) == "user, replaces bundled"
    assert ps.origin(name) == "user" and ps.origin("lighthouse") == "bundled"
    with pytest.raises(InvalidRequest, match="unpaired UTF-16 surrogate"):
        ps.import_card(b'{"name": "Eve \\ud800"}')


def test_view_and_listing_are_plain_data_and_skip_broken_files(tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    ps = Personas(tmp_path)
    views, warnings = ps.listing()
    assert [v["name"] for v in views] == ["lighthouse", "night-train", "tutor"]
    assert len(warnings) == 1 and "persona 'bad' skipped" in warnings[0] and "bad.json holds invalid JSON" in warnings[0]
    lh = ps.view("lighthouse")
    json.dumps(lh)
    assert lh["characters"] == ["Maren", "Tobias", "Ines"] and lh["origin"] == "bundled"
    assert lh["narrative"] == ps.get("lighthouse").narrative() and "{{" not in lh["narrative"]
    assert set(ps.view("tutor", full=False)) < set(lh)


def test_broken_user_file_is_an_error_naming_it(tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(InvalidRequest, match=r"bad\.json holds invalid JSON"):
        Personas(tmp_path).get("bad")


def test_file_name_is_safe():
    assert file_name("Séraphine the 2nd") == "séraphine-the-2nd"
    assert file_name("a/b\\c..d") == "a-b-c-d"
    with pytest.raises(InvalidRequest, match="no letters or digits"):
        file_name("../..")


# ---- malformed cards ----------------------------------------------------------------------------------------

def test_bad_base64():
    bad = png(chunk(b"tEXt", b"chara\0" + b"!!not*base64!!"))
    with pytest.raises(InvalidRequest, match=r"x\.png: the tEXt chunk 'chara' is not valid base64"):
        load_card(bad, "x.png")


def test_invalid_json_inside_the_chunk():
    bad = png(chunk(b"tEXt", b"chara\0" + base64.b64encode(b"{'name': 1")))
    with pytest.raises(InvalidRequest, match=r"x\.png: the card chunk holds invalid JSON"):
        load_card(bad, "x.png")


@pytest.mark.parametrize("data, message", [
    ({"spec": "chara_card_v2", "data": {"description": "no name"}}, "data.name is missing or empty"),
    ({"spec": "chara_card_v2", "data": {"name": "   "}}, "data.name is missing or empty"),
    ({"description": "flat, no name"}, "x.json: name is missing or empty"),
    ({"spec": "chara_card_v9", "data": {"name": "A"}}, "spec 'chara_card_v9' is not a character card spec"),
    ({"spec": "chara_card_v3", "spec_version": "4.0", "data": {"name": "A"}}, "spec_version '4.0' is not supported"),
    ({"spec": "chara_card_v2", "data": "A"}, "data must be an object"),
    ({"spec": "chara_card_v2", "data": {"name": "A", "tags": "a,b"}}, "x.json: data.tags must be a list of strings"),
    ({"spec": "chara_card_v2", "data": {"name": "A", "description": 5}}, "data.description must be a string, got a number"),
    ({"spec": "chara_card_v3", "data": {"name": "A", "assets": [1]}}, "data.assets must be a list of objects"),
    ({"spec": "chara_card_v2", "data": {"name": "A", "extensions": {"parley": {"format": "novel"}}}},
     "x.json: persona format must be one of template, transcript"),
])
def test_bad_card_fields(data, message):
    with pytest.raises(InvalidRequest, match=message.replace(".", r"\.").replace("(", r"\(")):
        load_card(json.dumps(data).encode(), "x.json")


def test_json_that_is_not_a_card_object():
    with pytest.raises(InvalidRequest, match=r"x\.json must hold a JSON object, got a list"):
        load_card(b"[1, 2]", "x.json")


def test_png_without_a_card():
    with pytest.raises(InvalidRequest, match=r"x\.png holds no character card.*'ccv3' or 'chara'"):
        load_card(png(chunk(b"tEXt", b"Comment\0hello")), "x.png")


def test_png_with_a_bad_crc():
    good = png(text_chunk("chara", {"name": "A"}))
    i = good.index(b"IDAT") + 6
    corrupt = good[:i] + bytes([good[i] ^ 0xFF]) + good[i + 1:]
    with pytest.raises(InvalidRequest, match=r"x\.png is corrupt: chunk IDAT at byte \d+ fails its CRC check"):
        load_card(corrupt, "x.png")


def test_truncated_png_and_not_a_png():
    good = png(text_chunk("chara", {"name": "A"}))
    with pytest.raises(InvalidRequest, match=r"x\.png is truncated"):
        load_card(good[:-20], "x.png")
    with pytest.raises(InvalidRequest, match=r"x\.png is not a PNG file"):
        load_card(b"GIF89a....", "x.png")


def test_a_50_mb_png_is_refused_by_size():
    big = png(text_chunk("chara", {"name": "A"})) + b"\0" * (50 * 1024 * 1024)
    big = big[:50 * 1024 * 1024]
    with pytest.raises(LimitExceeded) as e:
        load_card(big, "huge.png")
    assert str(e.value) == "huge.png is 50.0 MB; character cards are at most 20 MB"


def test_ztxt_bomb_is_capped():
    bomb = zlib.compress(b"A" * (cards.MAX_TEXT_BYTES + 1024), 9)
    assert len(bomb) < 100_000
    with pytest.raises(LimitExceeded, match=r"x\.png: the zTXt chunk 'chara' inflates to more than 20 MB"):
        load_card(png(chunk(b"zTXt", b"chara\0\0" + bomb)), "x.png")
    with pytest.raises(LimitExceeded, match="iTXt chunk 'ccv3' inflates"):
        load_card(png(chunk(b"iTXt", b"ccv3\0\1\0\0\0" + bomb)), "x.png")


def test_a_big_bomb_is_never_inflated_whole():
    c = zlib.compressobj(1)
    block = b"\0" * (1024 * 1024)
    bomb = b"".join(c.compress(block) for _ in range(256)) + c.flush()        # 256 MB inflated
    data = png(chunk(b"zTXt", b"chara\0\0" + bomb))
    tracemalloc.start()
    try:
        with pytest.raises(LimitExceeded, match="inflates to more than 20 MB"):
            load_card(data, "x.png")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 3 * cards.MAX_TEXT_BYTES, f"peak {peak / 2**20:.0f} MB while reading a 256 MB bomb"


def test_card_png_refuses_a_non_png_image():
    with pytest.raises(InvalidRequest, match="the image is not a PNG file"):
        card_png(Persona("Ada"), image=b"\xff\xd8\xff\xe0 a jpeg")
    with pytest.raises(InvalidRequest, match="spec must be one of v2, v3, got 'v4'"):
        card_png(Persona("Ada"), spec="v4")


def test_bundled_dir_is_packaged():
    pyproject = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())
    data = pyproject["tool"]["setuptools"]["package-data"]["parley"]
    assert "data/personas/*.toml" in data and "data/skills/*.toml" in data
