"""Character card files: SillyTavern / TavernAI cards V1, V2 and V3, as JSON and as PNG.

Contract:
- `read_card(data, filename) -> dict` turns a card file (JSON, or a PNG holding one) into the keyword arguments of
  `parley.chat.persona.Persona`; `card_dict(persona, spec)` and `card_png_bytes(persona, spec, image)` write one.
  Callers use the wrappers in `parley.chat.personas` (`load_card`, `card_json`, `card_png`).
- Card shapes. V1: a flat object (`name`, `description`, `personality`, `scenario`, `first_mes`, `mes_example`;
  the old `char_name` / `char_persona` / `world_scenario` / `char_greeting` / `example_dialogue` spellings too,
  and SillyTavern's flat `tags` / `creatorcomment`).
  V2: `{"spec": "chara_card_v2", "spec_version": "2.0", "data": {...}}`. V3: `"chara_card_v3"`, "3.0", with V3's
  extra `data` fields (`nickname`, `creator_notes_multilingual`, `source`, `group_only_greetings`, `assets`,
  `creation_date`, `modification_date`).
- Nothing is lost on import -> export of the same spec: unknown keys of `data` (`Persona.extra`) and next to it
  (`Persona.extra_top`, e.g. SillyTavern's V1 mirror fields, refreshed from the persona when written), the
  `extensions` and `character_book` objects, all verbatim. parley's own settings (format, user name, the other
  characters of a group scene) travel as `extensions.parley`, written only when they differ from the defaults.
  A V2 export leaves out the V3-only fields; a V3 export keeps everything.
- PNG: a `tEXt` (also read: `zTXt`, `iTXt`) chunk with keyword `ccv3` (V3) or `chara` (V2) holding base64 of the
  card's JSON; `ccv3` is read first. Writing keeps every chunk of the given image (its pixels) except old card
  chunks and adds `chara` (plus `ccv3` for V3) before `IEND`; without an image it makes a small plain one.
  Stdlib only: a PNG is a signature and chunks (length, type, data, CRC-32).
- Every problem is an `InvalidRequest` (or `LimitExceeded` for a size) with one line naming the file and the
  field, chunk or limit: bad base64, invalid JSON, a missing name, a wrong spec, a PNG without a card, a truncated
  or corrupt PNG (every chunk's CRC is checked), a file over MAX_CARD_BYTES, a compressed chunk that inflates past
  MAX_TEXT_BYTES (a decompression bomb), a field of the wrong type.
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from parley.errors import InvalidRequest, LimitExceeded

if TYPE_CHECKING:
    from parley.chat.persona import Persona

MB = 1024 * 1024
MAX_CARD_BYTES = 20 * MB       # a card file (JSON or PNG, image included)
MAX_TEXT_BYTES = 20 * MB       # what a compressed zTXt / iTXt card chunk may inflate to
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CARD_KEYWORDS = ("ccv3", "chara")          # the order they are read in
SPECS = {"v2": ("chara_card_v2", "2.0"), "v3": ("chara_card_v3", "3.0")}
PARLEY_EXTENSION = "parley"
PLACEHOLDER_SIZE = 64          # width and height of the image made when a card has none

# card key -> Persona field, with the kind of value it holds (see check())
COMMON = {
    "name": ("name", "str"), "description": ("description", "str"), "personality": ("personality", "str"),
    "scenario": ("scenario", "str"), "first_mes": ("first_message", "str"),
    "mes_example": ("example_dialogue", "str"), "creator_notes": ("creator_notes", "str"),
    "system_prompt": ("system_prompt", "str"), "post_history_instructions": ("post_history_instructions", "str"),
    "alternate_greetings": ("alternate_greetings", "strs"), "tags": ("tags", "strs"),
    "creator": ("creator", "str"), "character_version": ("character_version", "str"),
    "extensions": ("extensions", "dict"), "character_book": ("character_book", "dict?"),
}
V3_ONLY = {
    "nickname": ("nickname", "str?"), "creator_notes_multilingual": ("creator_notes_multilingual", "strdict?"),
    "source": ("source", "strs?"), "group_only_greetings": ("group_only_greetings", "strs"),
    "assets": ("assets", "dicts?"), "creation_date": ("creation_date", "number?"),
    "modification_date": ("modification_date", "number?"),
}
V1_KEYS = {"name": "name", "char_name": "name", "description": "description", "char_persona": "description",
           "personality": "personality", "scenario": "scenario", "world_scenario": "scenario",
           "first_mes": "first_mes", "char_greeting": "first_mes", "mes_example": "mes_example",
           "example_dialogue": "mes_example", "tags": "tags", "creatorcomment": "creator_notes"}
# keys SillyTavern mirrors next to `data`: refreshed from the persona whenever they are written back
MIRRORS: dict[str, Callable[[Persona], Any]] = {
    "name": lambda p: p.name, "description": lambda p: p.description, "personality": lambda p: p.personality,
    "scenario": lambda p: p.scenario, "first_mes": lambda p: p.first_message,
    "mes_example": lambda p: p.example_dialogue, "creatorcomment": lambda p: p.creator_notes,
    "tags": lambda p: list(p.tags),
}

KIND_TEXT = {"str": "a string", "strs": "a list of strings", "dict": "an object", "dicts": "a list of objects",
             "strdict": "an object of strings", "number": "a number"}


def check(kind: str, value: Any, where: str) -> Any:
    """`value` as a field of `kind` holds it (lists become tuples); raises naming `where` when it cannot.
    A kind ending in "?" also takes None (the field is absent)."""
    if kind.endswith("?"):
        if value is None:
            return None
        kind = kind[:-1]
    ok = {
        "str": lambda v: isinstance(v, str),
        "strs": lambda v: isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v),
        "dict": lambda v: isinstance(v, dict),
        "dicts": lambda v: isinstance(v, (list, tuple)) and all(isinstance(x, dict) for x in v),
        "strdict": lambda v: isinstance(v, dict) and all(isinstance(x, str) for x in v.values()),
        "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    }[kind]
    if not ok(value):
        raise InvalidRequest(f"{where} must be {KIND_TEXT[kind]}, got {_type_name(value)}", param=where)
    return tuple(value) if isinstance(value, list) else value


def _type_name(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", type(None): "null", bool: "a boolean",
            int: "a number", float: "a number"}.get(
        type(value), type(value).__name__)


# ---- reading ------------------------------------------------------------------------------------------------

def read_card(data: bytes, filename: str = "") -> dict[str, Any]:
    """A card file (JSON or PNG) -> Persona keyword arguments."""
    label = filename or "the character card"
    check_size(len(data), label)
    if is_png(data, filename):
        obj = _parse_json(card_text_from_png(data, label), f"{label}: the card chunk")
    else:
        obj = _parse_json(data, label)
    return card_fields(obj, label)


def is_png(data: bytes, filename: str = "") -> bool:
    """Whether a card file is read as a PNG: its signature, or a .png name (a broken PNG then says so)."""
    return data.startswith(PNG_SIGNATURE) or filename.lower().endswith(".png")


def check_size(n: int, label: str) -> None:
    if n > MAX_CARD_BYTES:
        raise LimitExceeded(f"{label} is {n / MB:.1f} MB; character cards are at most {MAX_CARD_BYTES // MB} MB",
                            param="card")


def _parse_json(raw: bytes, where: str) -> dict:
    try:
        obj = json.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError as e:
        raise InvalidRequest(f"{where} is not UTF-8 text ({e.reason} at byte {e.start})", param="card") from None
    except json.JSONDecodeError as e:
        raise InvalidRequest(f"{where} holds invalid JSON ({e})", param="card") from None
    if not isinstance(obj, dict):
        raise InvalidRequest(f"{where} must hold a JSON object, got {_type_name(obj)}", param="card")
    return obj


def card_fields(obj: dict, label: str) -> dict[str, Any]:
    """A card's JSON object (any spec) -> Persona keyword arguments."""
    spec = obj.get("spec")
    if spec is None and "data" not in obj:
        return _v1_fields(obj, label)
    spec = spec if spec is not None else "chara_card_v2"   # `data` without `spec`: read as V2
    known = {name: version.split(".")[0] for name, version in SPECS.values()}   # spec -> major version
    if spec not in known:
        raise InvalidRequest(f"{label}: spec {spec!r} is not a character card spec parley reads; expected "
                             f"chara_card_v2 or chara_card_v3 (or a flat V1 card without spec)", param="spec")
    version = obj.get("spec_version")
    major = known[spec]
    if version is not None and str(version).split(".")[0] != major:
        raise InvalidRequest(f"{label}: spec_version {version!r} is not supported for {spec}; parley reads "
                             f"{major}.x", param="spec_version")
    data = obj.get("data")
    if not isinstance(data, dict):
        raise InvalidRequest(f"{label}: data must be an object holding the card's fields, got {_type_name(data)}",
                             param="data")
    table = COMMON | V3_ONLY if spec == "chara_card_v3" else COMMON
    out = _fields(data, table, label, "data.")
    out["extra"] = {k: v for k, v in data.items() if k not in table}
    out["extra_top"] = {k: v for k, v in obj.items() if k not in ("spec", "spec_version", "data")}
    return out


def _v1_fields(obj: dict, label: str) -> dict[str, Any]:
    flat = {}
    for key, value in obj.items():
        if key in V1_KEYS:
            flat.setdefault(V1_KEYS[key], value)
    out = _fields(flat, {k: COMMON[k] for k in dict.fromkeys(V1_KEYS.values())}, label, "")
    out["extra_top"] = {k: v for k, v in obj.items() if k not in V1_KEYS}
    return out


def _fields(data: dict, table: dict, label: str, prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, (field_name, kind) in table.items():
        value = data.get(key)
        if value is None and not kind.endswith("?"):
            continue                                   # absent or null: the persona's default
        try:
            out[field_name] = check(kind, value, prefix + key)
        except InvalidRequest as e:
            raise InvalidRequest(f"{label}: {e.message}", param=e.param) from None
    if not str(out.get("name", "")).strip():
        raise InvalidRequest(f"{label}: {prefix}name is missing or empty; a character card needs the character's "
                             f"name", param="name")
    ext = dict(out.get("extensions", {}))
    own = ext.pop(PARLEY_EXTENSION, None)
    if own is not None:
        out.update(_parley_extension(own, f"{label}: {prefix}extensions.{PARLEY_EXTENSION}"))
    out["extensions"] = ext
    return out


def _parley_extension(own: Any, where: str) -> dict[str, Any]:
    if not isinstance(own, dict):
        raise InvalidRequest(f"{where} must be an object, got {_type_name(own)}", param="extensions")
    unknown = sorted(set(own) - {"format", "user_name", "characters"})
    if unknown:
        raise InvalidRequest(f"{where} has an unknown key {unknown[0]!r}; known: characters, format, user_name",
                             param="extensions")
    out = {}
    for key in ("format", "user_name"):
        if key in own:
            out[key] = check("str", own[key], f"{where}.{key}")
    if "characters" in own:
        out["characters"] = check("dicts", own["characters"], f"{where}.characters")
    return out


# ---- writing ------------------------------------------------------------------------------------------------

def card_dict(p: Persona, spec: str = "v2") -> dict[str, Any]:
    """The persona as a card object of `spec` ("v2" or "v3"): every field of an imported card, fresh copies."""
    if spec not in SPECS:
        raise InvalidRequest(f"spec must be one of {', '.join(SPECS)}, got {spec!r}", param="spec")
    data: dict[str, Any] = {
        "name": p.name, "description": p.description, "personality": p.personality, "scenario": p.scenario,
        "first_mes": p.first_message, "mes_example": p.example_dialogue, "creator_notes": p.creator_notes,
        "system_prompt": p.system_prompt, "post_history_instructions": p.post_history_instructions,
        "alternate_greetings": list(p.alternate_greetings), "tags": list(p.tags), "creator": p.creator,
        "character_version": p.character_version, "extensions": _extensions(p),
    }
    if p.character_book is not None:
        data["character_book"] = p.character_book
    if spec == "v3":
        data["group_only_greetings"] = list(p.group_only_greetings)
        for key, (field_name, _) in V3_ONLY.items():
            value = getattr(p, field_name)
            if value is not None and key not in data:
                data[key] = list(value) if isinstance(value, tuple) else value
    for key, value in p.extra.items():
        data.setdefault(key, value)
    name, version = SPECS[spec]
    out: dict[str, Any] = {"spec": name, "spec_version": version, "data": data}
    for key, value in p.extra_top.items():
        out.setdefault(key, MIRRORS[key](p) if key in MIRRORS else value)
    return copy.deepcopy(out)


def _extensions(p: Persona) -> dict[str, Any]:
    ext = dict(p.extensions)
    own: dict[str, Any] = {}
    if p.format != "template":
        own["format"] = p.format
    if p.user_name != "User":
        own["user_name"] = p.user_name
    if p.characters:
        own["characters"] = [{"name": c.name, "description": c.description} for c in p.characters]
    if own:
        ext[PARLEY_EXTENSION] = own
    return ext


def card_png_bytes(p: Persona, spec: str = "v2", image: bytes | None = None) -> bytes:
    """A PNG card: `image` (a PNG) with its pixels kept, or a small plain image, plus the card chunks."""
    texts = [("chara", card_dict(p, "v2"))]
    if spec == "v3":
        texts.append(("ccv3", card_dict(p, "v3")))
    elif spec != "v2":
        raise InvalidRequest(f"spec must be one of {', '.join(SPECS)}, got {spec!r}", param="spec")
    if image is not None:
        check_size(len(image), "the image")
    base = image if image is not None else placeholder_png(p.name)
    chunks = [c for c in png_chunks(base, "the image") if _keyword(c) not in CARD_KEYWORDS]
    cards = [png_chunk(b"tEXt", key.encode("latin-1") + b"\0" + _b64(obj)) for key, obj in texts]
    body = [png_chunk(c.type, c.data) for c in chunks[:-1]]       # everything before IEND, verbatim
    return PNG_SIGNATURE + b"".join(body + cards) + png_chunk(b"IEND", b"")


def _b64(obj: dict) -> bytes:
    return base64.b64encode(json.dumps(obj, ensure_ascii=False).encode("utf-8"))


# ---- PNG ----------------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Chunk:
    type: bytes
    data: bytes
    offset: int        # where its length field starts in the file

    @property
    def name(self) -> str:
        return self.type.decode("latin-1")


def png_chunk(ctype: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + ctype + body + struct.pack(">I", zlib.crc32(ctype + body))


def png_chunks(data: bytes, label: str) -> list[Chunk]:
    """Every chunk up to and including IEND, each CRC checked."""
    if not data.startswith(PNG_SIGNATURE):
        raise InvalidRequest(f"{label} is not a PNG file (it does not start with the PNG signature)", param="card")
    chunks, pos = [], len(PNG_SIGNATURE)
    while not chunks or chunks[-1].type != b"IEND":
        if pos + 12 > len(data):
            raise InvalidRequest(f"{label} is truncated: it ends at byte {len(data)} before its IEND chunk",
                                 param="card")
        length, ctype = struct.unpack(">I4s", data[pos:pos + 8])
        if not ctype.isalpha() or length > 2**31 - 1:
            raise InvalidRequest(f"{label} is corrupt: no valid chunk header at byte {pos}", param="card")
        end = pos + 12 + length
        if end > len(data):
            raise InvalidRequest(f"{label} is truncated: chunk {ctype.decode('latin-1')} at byte {pos} needs "
                                 f"{length} bytes but the file ends at byte {len(data)}", param="card")
        chunk = Chunk(ctype, data[pos + 8:end - 4], pos)
        if zlib.crc32(ctype + chunk.data) != struct.unpack(">I", data[end - 4:end])[0]:
            raise InvalidRequest(f"{label} is corrupt: chunk {chunk.name} at byte {pos} fails its CRC check",
                                 param="card")
        chunks.append(chunk)
        pos = end
    if chunks[0].type != b"IHDR":
        raise InvalidRequest(f"{label} is corrupt: its first chunk is {chunks[0].name}, not IHDR", param="card")
    return chunks


def _keyword(c: Chunk) -> str | None:
    if c.type not in (b"tEXt", b"zTXt", b"iTXt"):
        return None
    return c.data.partition(b"\0")[0].decode("latin-1")


def card_text_from_png(data: bytes, label: str) -> bytes:
    """The decoded JSON bytes of the PNG's card chunk (`ccv3` first, then `chara`)."""
    found: dict[str, Chunk] = {}
    for c in png_chunks(data, label):
        key = _keyword(c)
        if key in CARD_KEYWORDS:
            found.setdefault(key, c)
    for key in CARD_KEYWORDS:
        if key in found:
            text = _chunk_text(found[key], f"{label}: the {found[key].name} chunk {key!r}")
            return _unbase64(text, f"{label}: the {found[key].name} chunk {key!r}")
    raise InvalidRequest(f"{label} holds no character card: it has no tEXt, zTXt or iTXt chunk named 'ccv3' or "
                         f"'chara' (a plain image?)", param="card")


def _chunk_text(c: Chunk, where: str) -> str:
    _, sep, rest = c.data.partition(b"\0")
    if not sep:
        raise InvalidRequest(f"{where} is corrupt (no NUL after its keyword)", param="card")
    if c.type == b"tEXt":
        return rest.decode("latin-1")
    if c.type == b"zTXt":
        return _inflate(rest[1:], rest[:1], where).decode("latin-1")
    if len(rest) < 2:                       # iTXt: flag, method, language\0, translated keyword\0, text
        raise InvalidRequest(f"{where} is corrupt (too short)", param="card")
    compressed, method = rest[0], rest[1:2]
    parts = rest[2:].split(b"\0", 2)
    if len(parts) != 3:
        raise InvalidRequest(f"{where} is corrupt (its language and translated keyword are not NUL-ended)",
                             param="card")
    text = _inflate(parts[2], method, where) if compressed else parts[2]
    try:
        return text.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRequest(f"{where} is not UTF-8 text", param="card") from None


def _inflate(data: bytes, method: bytes, where: str) -> bytes:
    if method != b"\0":
        raise InvalidRequest(f"{where} uses unknown compression method {method!r} (PNG knows only 0, zlib)",
                             param="card")
    d = zlib.decompressobj()
    try:
        out = d.decompress(data, MAX_TEXT_BYTES + 1)
    except zlib.error as e:
        raise InvalidRequest(f"{where} does not decompress ({e})", param="card") from None
    if len(out) > MAX_TEXT_BYTES or d.unconsumed_tail:
        raise LimitExceeded(f"{where} inflates to more than {MAX_TEXT_BYTES // MB} MB; card text is at most "
                            f"{MAX_TEXT_BYTES // MB} MB (a decompression bomb?)", param="card")
    if not d.eof:
        raise InvalidRequest(f"{where} is cut short (its zlib stream does not end)", param="card")
    return out


def _unbase64(text: str, where: str) -> bytes:
    compact = "".join(text.split())
    compact += "=" * (-len(compact) % 4)
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError) as e:
        raise InvalidRequest(f"{where} is not valid base64 ({e}); a card chunk holds base64 of the card's JSON",
                             param="card") from None


def placeholder_png(seed: str) -> bytes:
    """A small valid RGB image in one soft colour picked from `seed`."""
    h = zlib.crc32(seed.encode("utf-8"))
    rgb = bytes(128 + ((h >> shift) & 0x7F) for shift in (0, 8, 16))
    row = b"\0" + rgb * PLACEHOLDER_SIZE              # filter type 0, then the pixels
    ihdr = struct.pack(">IIBBBBB", PLACEHOLDER_SIZE, PLACEHOLDER_SIZE, 8, 2, 0, 0, 0)
    return (PNG_SIGNATURE + png_chunk(b"IHDR", ihdr)
            + png_chunk(b"IDAT", zlib.compress(row * PLACEHOLDER_SIZE, 9)) + png_chunk(b"IEND", b""))
