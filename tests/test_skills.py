"""Skills (no model): the bundled recipes apply, placeholders are filled without str.format, errors list what
exists, and a user skill directory with good and broken files lists with warnings and fails only when used."""

from __future__ import annotations

import pytest

from parley.chat.skills import Example, Param, Skill, Skills, load_skill, parse_params
from parley.errors import InvalidRequest
from parley.sampling import SamplingParams

BUNDLED = ["chat", "explain-code", "proofread", "refactor-code", "rewrite-code", "summarize", "translate"]


@pytest.fixture
def skills():
    return Skills(None)


def test_bundled_skills_load_and_their_examples_apply(skills):
    assert skills.names() == BUNDLED
    for name in BUNDLED:
        s = skills.get(name)
        assert s.name == name and s.description and "{text}" in s.template
        assert s.examples, f"{name} has no examples for the web page"
        for ex in s.examples:
            assert ex.text in s.apply(ex.text, ex.params)


def test_chat_leaves_the_message_as_it_is(skills):
    text = "keep {to} and {{braces}} and {0.__class__} exactly"
    assert skills.get("chat").apply(text) == text


def test_translate(skills):
    out = skills.get("translate").apply("Good morning", {"to": "German"})
    assert out == ("Translate the text delimited by triple backticks to German. Reply with the translation only. "
                   "```Good morning```")


def test_summarize_default_and_override(skills):
    s = skills.get("summarize")
    assert "in at most 2 sentences. ```A long text.```" in s.apply("A long text.")
    assert "in at most 5 sentences." in s.apply("A long text.", {"sentences": "5"})
    assert s.params == {"sentences": Param("2", "how many sentences at most")}


def test_rewrite_code_puts_the_code_in_a_fence(skills):
    out = skills.get("rewrite-code").apply("print('{language}')", {"language": "C++"})
    assert out.startswith("Rewrite the code delimited by triple backticks in C++,")
    assert out.endswith("```\nprint('{language}')\n```")          # the user's text is never scanned again


def test_sampling_settings(skills):
    assert skills.get("proofread").sampling == {"temperature": 0.2}
    p = skills.get("proofread").sampling_params(SamplingParams(max_tokens=99))
    assert (p.temperature, p.max_tokens) == (0.2, 99)
    assert skills.get("chat").sampling_params(SamplingParams()) == SamplingParams()


def test_missing_and_unknown_parameters_list_the_skills_parameters(skills):
    with pytest.raises(InvalidRequest, match=r"skill 'translate' needs the parameter 'to' \(to=\.\.\.\); "
                                             r"its parameters: to \(required\)") as e:
        skills.get("translate").apply("Hallo")
    assert e.value.param == "skill_params"
    with pytest.raises(InvalidRequest, match="skill 'summarize' has no parameter 'length'; its parameters: "
                                             "sentences=2"):
        skills.get("summarize").apply("x", {"length": "3"})
    with pytest.raises(InvalidRequest, match="skill 'chat' has no parameter 'to'; it takes no parameters"):
        skills.get("chat").apply("x", {"to": "German"})
    with pytest.raises(InvalidRequest, match="parameter 'to' must be a non-empty string"):
        skills.get("translate").apply("x", {"to": "  "})


def test_unknown_skill_lists_what_exists(skills):
    with pytest.raises(InvalidRequest, match="unknown skill 'translat'; known: chat, explain-code, proofread, "
                                             "refactor-code, rewrite-code, summarize, translate"):
        skills.get("translat")


def test_describe_is_a_table(skills):
    lines = skills.describe().splitlines()
    assert lines[0].split() == ["name", "params", "description"]
    row = next(line for line in lines if line.startswith("translate "))
    assert row.split(None, 3)[1:3] == ["to", "(required)"]
    assert any(line.startswith("summarize ") and "sentences=2" in line for line in lines)
    assert len(lines) == 1 + len(BUNDLED)
    # every description starts in the same column
    col = lines[0].index("description")
    assert all(line[col - 2:col] == "  " and line[col] != " " for line in lines)


# ---- templates --------------------------------------------------------------------------------------------

def test_literal_braces_and_placeholders():
    s = Skill("json", "as JSON", 'Reply as {{"lang": "{lang}"}} for: {text}', {"lang": Param("en")})
    assert s.apply("hi {lang}") == 'Reply as {"lang": "en"} for: hi {lang}'


@pytest.mark.parametrize("template, params, message", [
    ("Translate {text} to {too}", {"to": Param()}, r"template uses \{too\}, which is not a parameter; its "
                                                    r"parameters: to \(required\); declare it under \[params.too\]"),
    ("Say it", {}, r"template never uses \{text\}"),
    ("Translate {text}", {"to": Param()}, r"parameter 'to' is declared but the template never uses \{to\}"),
    ("{ text }", {}, r"stray '\{' at character 0 .* literal brace is written \{\{"),
    ("{text} }", {}, r"stray '\}' at character 7"),
    ("{text:>10}", {}, r"stray '\{' at character 0"),
    ("{text.upper}", {}, r"stray '\{'"),
    ("{0} {text}", {}, r"stray '\{'"),
    ("{text}", {"text": Param()}, r"\{text\} is the user's message, not a parameter"),
])
def test_bad_templates(template, params, message):
    with pytest.raises(InvalidRequest, match=message):
        Skill("bad", "bad", template, params)


def test_bad_sampling_and_examples():
    with pytest.raises(InvalidRequest, match="sampling.temprature is not a sampling setting; known: max_tokens, "
                                             "temperature"):
        Skill("s", "d", "{text}", sampling={"temprature": 0.2})
    with pytest.raises(InvalidRequest, match=r"sampling\.temperature must be in \[0.0, 5.0\], got 9"):
        Skill("s", "d", "{text}", sampling={"temperature": 9})
    with pytest.raises(InvalidRequest, match="needs the parameter 'to'"):
        Skill("s", "d", "{text} {to}", {"to": Param()}, examples=(Example("hi"),))
    with pytest.raises(InvalidRequest, match="skill name 'a b' must be"):
        Skill("a b", "d", "{text}")


def test_parse_params():
    assert parse_params(["to=German", "note=a=b", "empty="]) == {"to": "German", "note": "a=b", "empty": ""}
    assert parse_params([]) == {}
    with pytest.raises(InvalidRequest, match=r"--param 'German' must be name=value \(e\.g\. --param to=German\)"):
        parse_params(["German"])
    with pytest.raises(InvalidRequest, match="--param '=x' must be name=value"):
        parse_params(["=x"])
    with pytest.raises(InvalidRequest, match="--param to is given twice"):
        parse_params(["to=a", "to=b"])


# ---- files ------------------------------------------------------------------------------------------------

def test_load_skill_file_format():
    s = load_skill('description = "Haiku"\ntemplate = "Write a haiku about {text} in {lang}."\n'
                   'examples = ["rain", { text = "snow", params = { lang = "French" } }]\n'
                   '[params.lang]\ndefault = 3\ndescription = "language"\n[sampling]\ntemperature = 1.0\n',
                   "haiku", "haiku.toml")
    assert s.params == {"lang": Param("3", "language")} and s.sampling == {"temperature": 1.0}
    assert s.examples == (Example("rain"), Example("snow", {"lang": "French"}))
    assert s.apply("rain") == "Write a haiku about rain in 3."


@pytest.mark.parametrize("text, message", [
    ('template = "{text}"', "haiku.toml: description is missing"),
    ('description = "d"', "haiku.toml: template is missing"),
    ('description = "d"\ntemplate = "{text}"\nsytem = "x"', "haiku.toml: unknown key 'sytem'; known: description"),
    ('description = "d"\ntemplate = "{text}"\n[params.x]\ndefualt = "1"', "params.x has an unknown key 'defualt'"),
    ('description = "d"\ntemplate = "{text}"\nsystem = 3', "system must be a string"),
    ('description = "d"\ntemplate = "{text', "haiku.toml is not valid TOML"),
])
def test_bad_skill_files(text, message):
    with pytest.raises(InvalidRequest, match=message):
        load_skill(text, "haiku", "haiku.toml")


def test_user_dir_with_good_and_broken_files(tmp_path):
    (tmp_path / "haiku.toml").write_text('description = "A haiku about the text."\n'
                                         'template = "Write a haiku about: {text}"\n')
    (tmp_path / "broken.toml").write_text('description = "d"\ntemplate = "{text"\n[[')
    (tmp_path / "typo.toml").write_text('description = "d"\ntemplate = "Translate {text} to {lang}"\n')
    (tmp_path / "empty.toml").write_text('description = "no template"\n')
    (tmp_path / "translate.toml").write_text('description = "Always to Welsh."\n'
                                             'template = "Translate to Welsh: {text}"\n')
    (tmp_path / "readme.txt").write_text("not a skill")
    skills = Skills(tmp_path)
    assert skills.names() == sorted(BUNDLED + ["broken", "empty", "haiku", "typo"])
    assert skills.get("haiku").apply("rain") == "Write a haiku about: rain"
    assert skills.get("translate").apply("hi") == "Translate to Welsh: hi"
    with pytest.raises(InvalidRequest, match=rf"{tmp_path}/broken\.toml is not valid TOML"):
        skills.get("broken")
    with pytest.raises(InvalidRequest, match=rf"{tmp_path}/typo\.toml: skill 'typo': template uses \{{lang\}}"):
        skills.get("typo")
    with pytest.raises(InvalidRequest, match=r"empty\.toml: template is missing"):
        skills.get("empty")

    text = skills.describe()                                  # lists what loads, warns about the rest
    lines = text.splitlines()
    assert any(line.startswith("haiku ") and line.endswith("A haiku about the text. [user file]") for line in lines)
    assert any(line.startswith("translate ") and line.endswith("[user file, replaces the bundled one]")
               for line in lines)
    warnings = [line for line in lines if line.startswith("warning:")]
    assert len(warnings) == 3
    assert all(any(f"{n}.toml" in w for w in warnings) for n in ("broken", "typo", "empty"))
    loaded, problems = skills.load_all()
    assert sorted(s.name for s in loaded) == sorted(BUNDLED + ["haiku"]) and problems == warnings
    views, problems = skills.listing()                        # the same as plain data (HTTP, --json)
    assert [v["name"] for v in views] == sorted(BUNDLED + ["haiku"]) and problems == warnings
    origins = {v["name"]: v["origin"] for v in views}
    assert (origins["haiku"], origins["translate"], origins["summarize"]) == ("user", "user, replaces bundled",
                                                                              "bundled")
    assert Skills(None).view("summarize")["params"] == {"sentences": {
        "default": "2", "required": False, "description": Skills(None).get("summarize").params["sentences"].description}}
    with pytest.raises(InvalidRequest, match="unknown skill 'nope'; known: broken, chat"):
        skills.origin("nope")


def test_missing_user_dir_is_just_the_bundled_skills(tmp_path):
    assert Skills(tmp_path / "nope").names() == BUNDLED
