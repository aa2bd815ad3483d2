"""The README stays true: its settings table matches Settings, its quick start is the two make targets."""

from __future__ import annotations

import re
from pathlib import Path

from tests.support.settings_doc import settings_table

README = Path(__file__).resolve().parents[2] / "README.md"


def test_settings_table_in_sync():
    text = README.read_text(encoding="utf-8")
    table = re.search(r"<!-- settings-table:start -->\n(.*?)\n<!-- settings-table:end -->", text, re.S).group(1)
    assert table.strip() == settings_table().strip(), "run: python -m tests.support.settings_doc, paste into README"


def test_quick_start_commands_exist_in_makefile_and_ci():
    text = README.read_text(encoding="utf-8")
    assert "make run" in text and "make test" in text
    makefile = (README.parent / "Makefile").read_text()
    assert re.search(r"^run:", makefile, re.M) and re.search(r"^test:", makefile, re.M)
    assert "make test" in (README.parent / ".ci" / "run").read_text()
