"""`parley personas` and `parley skills` as a user runs them (no model loaded), and `parley chat --skill` errors
that list what exists."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from parley.chat import cards
from parley.chat.personas import Persona, card_json, card_png, load_card, persona_toml

PARLEY = [sys.executable, "-m", "parley.cli.main"]
ADA = Persona(name="Ada", description="{{char}} runs the night ferry; {{user}} is late.", creator_notes="Notes for you.",
              first_message="Hurry up, {{user}}!", extensions={"other_app": {"mood": "calm"}})


def run(tmp_path, *args, timeout=120):
    env = {**os.environ, "PARLEY_HOME": str(tmp_path / "home")}
    return subprocess.run([*PARLEY, *args], capture_output=True, text=True, timeout=timeout, env=env)


def ok(tmp_path, *args) -> str:
    out = run(tmp_path, *args)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_personas_list_show_import_export_rm(tmp_path):
    listed = ok(tmp_path, "personas", "list")
    assert "lighthouse" in listed and "Maren, Tobias, Ines" in listed and "bundled" in listed
    names = [v["name"] for v in json.loads(ok(tmp_path, "personas", "list", "--json"))]
    assert {"lighthouse", "night-train", "tutor"} <= set(names)

    card = tmp_path / "ada.json"
    card.write_text(json.dumps(card_json(ADA, "v2")))
    assert "imported ada.json as 'ada'" in ok(tmp_path, "personas", "import", str(card))
    again = run(tmp_path, "personas", "import", str(card))
    assert again.returncode == 2 and "exists" in again.stderr
    ok(tmp_path, "personas", "import", str(card), "--force")
    shown = ok(tmp_path, "personas", "show", "ada")
    assert "creator notes (for you; never in a prompt):\nNotes for you." in shown
    assert "the narrative its prompts start with:\nAda runs the night ferry; User is late." in shown
    assert json.loads(ok(tmp_path, "personas", "show", "ada", "--json"))["origin"] == "user"

    v3 = json.loads(ok(tmp_path, "personas", "export", "ada", "--spec", "v3"))
    assert v3["spec"] == "chara_card_v3" and v3["data"]["extensions"] == {"other_app": {"mood": "calm"}}
    png = tmp_path / "ada.png"
    ok(tmp_path, "personas", "export", "ada", "--png", "-o", str(png))
    assert load_card(png.read_bytes()) == ADA

    image = cards.placeholder_png("a drawing")
    bo = Persona(name="Bo", nickname="Bobby", description="{{char}} mends nets.")
    (tmp_path / "bo.png").write_bytes(card_png(bo, "v3", image))
    assert "as 'bo'" in ok(tmp_path, "personas", "import", str(tmp_path / "bo.png"))
    out = tmp_path / "bo-again.png"
    ok(tmp_path, "personas", "export", "bo", "--png", "--spec", "v3", "-o", str(out))
    assert load_card(out.read_bytes()) == bo
    idat = [c for c in cards.png_chunks(out.read_bytes(), "x") if c.type == b"IDAT"]
    assert idat == [c for c in cards.png_chunks(image, "x") if c.type == b"IDAT"]   # the imported image kept

    (tmp_path / "cy.toml").write_text(persona_toml(Persona(name="Cy", format="transcript")))
    assert "as 'cy': Cy (transcript)" in ok(tmp_path, "personas", "import", str(tmp_path / "cy.toml"))

    assert ok(tmp_path, "personas", "rm", "ada").strip() == "deleted ada"
    gone = run(tmp_path, "personas", "show", "ada")
    assert gone.returncode == 2 and "unknown persona 'ada'; known: bo, cy, lighthouse" in gone.stderr
    bundled = run(tmp_path, "personas", "rm", "lighthouse")
    assert bundled.returncode == 2 and "bundled with parley and cannot be deleted" in bundled.stderr


def test_personas_import_refuses_what_is_not_a_card(tmp_path):
    (tmp_path / "plain.png").write_bytes(cards.placeholder_png("x"))
    out = run(tmp_path, "personas", "import", str(tmp_path / "plain.png"))
    assert out.returncode == 2 and "plain.png holds no character card" in out.stderr
    (tmp_path / "noname.json").write_text(json.dumps({"spec": "chara_card_v2", "data": {"description": "x"}}))
    out = run(tmp_path, "personas", "import", str(tmp_path / "noname.json"))
    assert out.returncode == 2 and "data.name is missing" in out.stderr
    out = run(tmp_path, "personas", "import", str(tmp_path / "missing.json"))
    assert out.returncode == 2 and "no such file" in out.stderr
    assert "Traceback" not in out.stderr


def test_skills_list_and_show(tmp_path):
    table = ok(tmp_path, "skills", "list")
    assert "translate      to (required)" in table and "summarize      sentences=2" in table
    byname = {s["name"]: s for s in json.loads(ok(tmp_path, "skills", "list", "--json"))}
    assert byname["rewrite-code"]["params"]["language"]["required"] is True
    shown = ok(tmp_path, "skills", "show", "translate")
    assert "to (required)" in shown and "example: parley chat --skill translate --param to=German -p" in shown
    out = run(tmp_path, "skills", "show", "juggle")
    assert out.returncode == 2 and "unknown skill 'juggle'; known: chat, explain-code, proofread" in out.stderr


def test_lists_mark_user_files_and_warn_about_broken_ones_on_stderr(tmp_path):
    (tmp_path / "home" / "skills").mkdir(parents=True)
    (tmp_path / "home" / "skills" / "haiku.toml").write_text('description = "A haiku."\ntemplate = "Haiku: {text}"\n')
    (tmp_path / "home" / "skills" / "broken.toml").write_text('description = "d"\ntemplate = "{text"\n')
    out = run(tmp_path, "skills", "list")
    assert out.returncode == 0 and "warning" not in out.stdout
    assert "haiku          -                    A haiku. [user file]" in out.stdout.splitlines()
    assert out.stderr.startswith("warning: skill 'broken' skipped: ") and "broken.toml" in out.stderr
    (tmp_path / "home" / "personas").mkdir()
    (tmp_path / "home" / "personas" / "tutor.toml").write_text('name = "Mine"\n')
    (tmp_path / "home" / "personas" / "bad.json").write_text("{not json")
    out = run(tmp_path, "personas", "list")
    rows = {line.split()[0]: line for line in out.stdout.splitlines()}
    assert out.returncode == 0 and "user, replaces bundled  -" in rows["tutor"] and "bad" not in rows
    assert out.stderr.startswith("warning: persona 'bad' skipped: ") and "bad.json holds invalid JSON" in out.stderr


def test_chat_skill_errors_list_what_exists(tmp_path):
    fast = ["--temperature", "0", "--disk-cache-mb", "0", "--kv-size", "1024", "-n", "6"]
    out = run(tmp_path, "chat", "-p", "Hallo", "--skill", "juggle", *fast)
    assert out.returncode == 2 and "unknown skill 'juggle'; known: chat, explain-code" in out.stderr
    out = run(tmp_path, "chat", "-p", "Hallo", "--skill", "translate", *fast)
    assert out.returncode == 2 and "needs the parameter 'to'" in out.stderr and "to (required)" in out.stderr
    out = run(tmp_path, "chat", "-p", "Hallo", "--skill", "translate", "--param", "to", *fast)
    assert out.returncode == 2 and "--param 'to' must be name=value" in out.stderr
    out = run(tmp_path, "chat", "-p", "Good morning.", "--skill", "translate", "--param", "to=German", *fast)
    assert out.returncode == 0 and out.stdout.strip(), out.stderr
