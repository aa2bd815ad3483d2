"""The README's settings table, generated from the Settings class (`python -m tests.support.settings_doc`)."""

from __future__ import annotations

from embedding_server.settings import Settings


def settings_table() -> str:
    rows = ["| Variable | Default | Meaning |", "| --- | --- | --- |"]
    for name, field in Settings.model_fields.items():
        default = field.default
        shown = "unset" if default in (None, "") else f"`{default}`"
        rows.append(f"| `EMBED_{name.upper()}` | {shown} | {field.description} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(settings_table())
