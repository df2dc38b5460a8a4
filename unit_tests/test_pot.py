"""The translation template holds every sentence of Microsoft's error catalogue.

Odoo's export collects ``_lt("...")`` from the addon's Python files; an admin reads
these sentences in their own language only if the .pot (then each .po) has them.
When this test names a missing sentence, export the template again with Odoo 19 from a
database where the addon is installed: ``odoo-bin i18n export -c <conf> -d <db>
-o i18n/microsoft_outlook_graph.pot microsoft_outlook_graph``.
"""

import ast
import json
import pathlib

# Their errors' own default sentences are part of the catalogue too.
from services import errors, send, subscriptions, sync  # noqa: F401

ROOT = pathlib.Path(__file__).resolve().parent.parent
POT = ROOT / "i18n" / "microsoft_outlook_graph.pot"


def pot_msgids():
    """Every msgid of the .pot, its continuation lines joined."""
    msgids, current = set(), None
    for line in POT.read_text(encoding="utf-8").splitlines():
        if line.startswith("msgid "):
            current = [json.loads(line[len("msgid ") :])]
        elif line.startswith('"') and current is not None:
            current.append(json.loads(line))
        else:
            if current is not None:
                msgids.add("".join(current))
            current = None
    return msgids


def marked_sentences(path):
    """The literal sentences of ``path`` written as ``_lt("...")``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {
        node.args[0].value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "_lt"
        and node.args
        and isinstance(node.args[0], ast.Constant)
    }


def catalogue_sentences():
    sentences = {message for _cls, message in errors.CATALOGUE.values()}
    sentences |= {message for _cls, message in errors.OAUTH_ERRORS.values() if message}
    classes, pending = set(), [errors.GraphError]
    while pending:
        cls = pending.pop()
        classes.add(cls)
        pending += cls.__subclasses__()
    return sentences | {cls.default_message for cls in classes}


def test_every_catalogue_sentence_is_in_the_pot():
    missing = catalogue_sentences() - pot_msgids()
    assert not missing, f"not in {POT.name}: {sorted(missing)}"


def test_every_marked_sentence_of_services_is_in_the_pot():
    msgids = pot_msgids()
    missing = {
        f"{path.name}: {sentence}"
        for path in sorted((ROOT / "services").glob("*.py"))
        for sentence in marked_sentences(path) - msgids
    }
    assert not missing, f"not in {POT.name}: {sorted(missing)}"


def test_every_catalogue_sentence_is_marked_for_the_export():
    marked = set().union(*map(marked_sentences, (ROOT / "services").glob("*.py")))
    assert catalogue_sentences() <= marked
    assert len(marked_sentences(ROOT / "services" / "errors.py")) > 60
