"""docs/architecture.md stays true: every file, method and cron it names exists."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
CODE = "\n".join(
    path.read_text(encoding="utf-8")
    for folder in ("models", "controllers", "wizard", "services")
    for path in (ROOT / folder).rglob("*.py")
)
NAMES = re.findall(r"`([^`]+)`", DOC)


def test_every_file_it_names_exists():
    paths = {
        name
        for name in NAMES
        if re.fullmatch(
            r"(models|controllers|wizard|services|tests|unit_tests|prodtests|data)/\S+\.(py|xml)",
            name,
        )
    }
    assert paths
    assert not sorted(p for p in paths if not (ROOT / p).exists())


def test_every_method_it_names_is_defined():
    methods = {
        word
        for name in NAMES
        for word in re.findall(r"\b(_[a-z][a-z_]+|action_[a-z_]+)\b", name)
        if not word.startswith("_gc_")
    }
    assert methods
    missing = sorted(m for m in methods if not re.search(rf"def {m}\(", CODE))
    assert not missing


def test_every_cron_it_names_is_in_the_data_file():
    crons = {
        word
        for name in NAMES
        for word in re.findall(r"\bir_cron_microsoft_outlook_graph_\w+", name)
    }
    data = (ROOT / "data" / "ir_cron_data.xml").read_text(encoding="utf-8")
    assert crons
    assert not sorted(c for c in crons if f'id="{c}"' not in data)
