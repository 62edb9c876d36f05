"""Personas and skills over HTTP: list, read, import and export character cards; list and read skills.

    GET    /v1/personas                          bundled + the user's ($PARLEY_HOME/personas), with warnings for
                                                 files that do not load
    GET    /v1/personas/{name}                   every field; `narrative` is the pinned text the prompt holds
                                                 (creator_notes are shown, never put in a prompt)
    POST   /v1/personas?overwrite=false          import a card: the card's JSON object as the body (V1, V2, V3),
                                                 or {"card_base64": "...", "filename": "x.png"} for a file (PNG)
    GET    /v1/personas/{name}/card?spec=v2|v3&png=false   export: the card's JSON, or a PNG card
    DELETE /v1/personas/{name}                   the user's only (a bundled persona it replaced comes back)
    GET    /v1/skills                            every skill, its params with their defaults, its examples
    GET    /v1/skills/{name}

A persona's `name` here is its file's name (what POST /v1/conversations takes as `persona`); `character` is who
the model speaks as. Unknown names are 404s listing the known ones; a bad card is a 400 naming the field, chunk
or limit (parley.chat.cards says which). The handlers only translate: the registries are the facade's
(`Parley.personas`, `Parley.skills`), and every file read or written runs off the event loop.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any, Literal

from fastapi import APIRouter, Body
from starlette.responses import Response

from parley.errors import InvalidRequest, NotFound, shorten
from parley.server.bounds import BoundedRoute, off_loop
from parley.server.state import State

router = APIRouter(route_class=BoundedRoute)
PERSONAS = ["Personas"]
SKILLS = ["Skills"]
UPLOAD_KEYS = ("card_base64", "filename")

CARD_BODY = Body(description="A character card's JSON object (SillyTavern / TavernAI V1, `chara_card_v2` or "
                             "`chara_card_v3`), or `{\"card_base64\": ..., \"filename\": ...}`: a card file "
                             "(PNG with a `ccv3` / `chara` chunk, or JSON) in base64.")


def _known(registry, name: str, kind: str) -> None:
    names = registry.names()
    if name not in names:
        raise NotFound(f"unknown {kind} {shorten(name)!r}; known: {', '.join(names) or 'none'}", param="name")


def card_upload(body: dict[str, Any]) -> tuple[bytes, str]:
    """The request body -> (the card file's bytes, the label its errors use)."""
    if "card_base64" not in body:
        return _json_bytes(body), "the request body"
    unknown = sorted(set(body) - set(UPLOAD_KEYS))
    if unknown:
        raise InvalidRequest(f"unknown field {shorten(unknown[0])!r} beside card_base64; an upload takes "
                             f"card_base64 and filename", param=shorten(unknown[0]))
    text, filename = body["card_base64"], body.get("filename", "")
    if not isinstance(text, str):
        raise InvalidRequest("card_base64 must be a string (the card file in base64)", param="card_base64")
    if not isinstance(filename, str):
        raise InvalidRequest("filename must be a string (the card file's name, e.g. \"maren.png\")",
                             param="filename")
    try:
        data = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError) as e:
        raise InvalidRequest(f"card_base64 is not valid base64 ({e})", param="card_base64") from None
    if not data:
        raise InvalidRequest("card_base64 is empty; send the card file's bytes in base64", param="card_base64")
    return data, shorten(filename) if filename else "card_base64"


def _json_bytes(body: dict[str, Any]) -> bytes:
    try:
        return json.dumps(body, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as e:
        raise InvalidRequest(f"the card holds an unpaired UTF-16 surrogate (U+{ord(e.object[e.start]):04X}); "
                             "send valid Unicode text", param="card") from None


@router.get("/v1/personas", tags=PERSONAS, summary="List personas (bundled and the user's)")
async def list_personas(state: State):
    views, warnings = await off_loop(state.parley.personas.listing)
    return {"object": "list", "data": [{"object": "persona", **v} for v in views], "warnings": warnings}


@router.get("/v1/personas/{name}", tags=PERSONAS, summary="A persona's fields and the narrative its prompts hold")
async def get_persona(name: str, state: State):
    personas = state.parley.personas
    await off_loop(_known, personas, name, "persona")
    return {"object": "persona", **await off_loop(personas.view, name)}


@router.post("/v1/personas", tags=PERSONAS, summary="Import a character card (JSON, or a PNG in base64)")
async def import_persona(state: State, body: dict[str, Any] = CARD_BODY, overwrite: bool = False):
    personas = state.parley.personas
    data, label = card_upload(body)
    name, _ = await off_loop(personas.import_card, data, label, overwrite=overwrite)
    return {"object": "persona", **await off_loop(personas.view, name)}


@router.get("/v1/personas/{name}/card", tags=PERSONAS, summary="Export a persona as a character card",
            response_class=Response,
            responses={200: {"content": {"application/json": {}, "image/png": {}},
                             "description": "The card: JSON, or a PNG card with ?png=true"}})
async def export_persona(name: str, state: State, spec: Literal["v2", "v3"] = "v2", png: bool = False):
    personas = state.parley.personas
    await off_loop(_known, personas, name, "persona")
    data = await off_loop(personas.export_card, name, spec, png=png)
    suffix, media = (".png", "image/png") if png else (".json", "application/json")
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", name)   # a user file's stem may hold anything: keep the header ASCII
    return Response(data, media_type=media,
                    headers={"Content-Disposition": f'attachment; filename="{stem}.{spec}{suffix}"'})


@router.delete("/v1/personas/{name}", tags=PERSONAS, summary="Delete a user persona (bundled ones stay)")
async def delete_persona(name: str, state: State):
    personas = state.parley.personas
    await off_loop(_known, personas, name, "persona")
    bundled_again = await off_loop(personas.delete, name)
    return {"name": name, "object": "persona.deleted", "deleted": True, "bundled_again": bundled_again}


@router.get("/v1/skills", tags=SKILLS, summary="List skills: parameters with their defaults, examples")
async def list_skills(state: State):
    views, warnings = await off_loop(state.parley.skills.listing)
    return {"object": "list", "data": [{"object": "skill", **v} for v in views], "warnings": warnings}


@router.get("/v1/skills/{name}", tags=SKILLS, summary="A skill: its recipe, parameters and examples")
async def get_skill(name: str, state: State):
    skills = state.parley.skills
    await off_loop(_known, skills, name, "skill")
    return {"object": "skill", **await off_loop(skills.view, name)}
