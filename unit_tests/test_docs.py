"""The documentation names what the code does."""

from pathlib import Path

from services.errors import CATALOGUE

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_every_catalogue_entry_is_documented():
    text = (DOCS / "troubleshooting.md").read_text(encoding="utf-8")
    for code, (_kind, sentence) in CATALOGUE.items():
        label = f"AADSTS{code}" if code.isdigit() else code
        assert f"`{label}`" in text, label
        assert sentence in text, label


def test_no_microsoft_host_outside_the_endpoints_module():
    """Every Microsoft endpoint comes from services/endpoints.py (custom clouds rely on it)."""
    root = DOCS.parent
    hosts = (
        "microsoftonline.",
        "graph.microsoft.com",
        "graph.microsoft.us",
        "chinacloudapi.cn",
        "outlook.office.com",
        "outlook.office365.com",
    )
    offenders = [
        str(path.relative_to(root))
        for folder in ("models", "controllers", "services")
        for path in (root / folder).rglob("*.py")
        if path.name != "endpoints.py" and any(host in path.read_text() for host in hosts)
    ]
    assert not offenders
