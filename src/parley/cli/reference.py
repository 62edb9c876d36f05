"""The README's settings table, generated from the settings dataclasses (parley.settings.Settings and its
sections, then parley.server.settings.ServerSettings) and the sampling presets. It lives with the CLI, which
sees both the model's settings and the server's; tests/test_readme.py keeps the README equal to it.

    python -m parley.cli.reference          prints the table (paste it between the README's markers)
"""

from __future__ import annotations

from parley.config import leaves
from parley.sampling import CHAT_PRESET, NEUTRAL, describe
from parley.server.settings import ServerSettings
from parley.settings import Settings


def markdown_table() -> str:
    """Every flag with its help: the model's (Settings, section by section), then `parley serve`'s own."""
    rows = ["| flag | what |", "| --- | --- |"]
    for cls, where in ((Settings, ""), (ServerSettings, " (serve)")):
        for _, f in leaves(cls):
            md = f.metadata
            if md.get("hidden") or not md.get("flags"):
                continue
            meta = md.get("metavar")
            flag = ", ".join(md["flags"]) + (f" {meta}" if meta and f.type != "bool" else "")
            env = f" (env `{md['env']}`)" if md.get("env") else ""
            text = md["help"].replace("%%", "%").replace("|", "/")
            rows.append(f"| `{flag}`{where} | {text}{env} |")
    rows.append("| `--temperature`, `--top-p`, `--top-k`, `--min-p`, `--repeat-penalty`, `--presence-penalty`, "
                f"`--frequency-penalty` | sampling defaults: for `parley chat` the {describe(CHAT_PRESET)}; for "
                f"`parley serve` the base of every HTTP request that leaves a field out, the {describe(NEUTRAL)}, "
                "so a greedy request gives the same tokens on every route |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown_table())
