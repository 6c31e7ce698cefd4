"""The ``ascii`` transform on plain data: names and logins in several languages folded to what
an LMS that takes only ASCII (Moodle usernames, LMS.md) accepts; and every transform listed
in the rule-file reference (rules/README.md)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge.rules.transforms import TRANSFORMS
from bridge.rules.transforms import TransformError
from bridge.rules.transforms import apply
from bridge.rules.transforms import fold_ascii

README = Path(__file__).resolve().parent.parent / "rules" / "README.md"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("józef.nowak@example.com", "jozef.nowak@example.com"),  # Polish
        ("Łukasz Dąbrowski", "Lukasz Dabrowski"),
        ("Øyvind Ødegård", "Oyvind Odegard"),  # Norwegian
        ("Søren Kierkegaard-Æbelø", "Soren Kierkegaard-AEbelo"),  # Danish
        ("Jürgen Straße", "Jurgen Strasse"),  # German
        ("STRAẞE", "STRASSE"),
        ("Þórður Guðmundsdóttir", "Thordur Gudmundsdottir"),  # Icelandic
        ("Đorđe Petrović", "Dorde Petrovic"),  # Serbian (Latin)
        ("Işıl Gündoğan", "Isil Gundogan"),  # Turkish dotless ı
        ("İlkay", "Ilkay"),  # Turkish dotted capital İ
        ("Œuvre Cœur", "OEuvre Coeur"),  # French ligature
        ("François Crème-Brûlée", "Francois Creme-Brulee"),
        ("Zoë Núñez", "Zoe Nunez"),  # Spanish
        ("João Gonçalves", "Joao Goncalves"),  # Portuguese
        ("Nguyễn Thị Minh Khai", "Nguyen Thi Minh Khai"),  # Vietnamese: stacked marks
        ("Siobhán O’Neil", "Siobhan O'Neil"),  # a typographic apostrophe
        ("Anne\u2013Marie", "Anne-Marie"),  # an en dash
        ("ﬁnn", "finn"),  # a ligature NFKD decomposes
        ("j.smith@example.com", "j.smith@example.com"),  # ASCII is left alone
        ("", ""),
    ],
)
def test_ascii_folds_letters_of_many_languages(text: str, expected: str) -> None:
    assert apply(text, "ascii", None) == expected
    assert fold_ascii(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Дмитрий", ""),  # Cyrillic: no ASCII spelling, dropped rather than kept
        ("李小龙", ""),
        ("дмитрий@example.com", "@example.com"),
        ("Ana 🙂 Silva", "Ana  Silva"),
    ],
)
def test_ascii_drops_what_it_cannot_fold(text: str, expected: str) -> None:
    folded = apply(text, "ascii", None)
    assert folded == expected
    assert folded.isascii()


def test_ascii_works_on_lists_and_passes_none() -> None:
    assert apply(["Ørsted", None, "Åse"], "ascii", None) == ["Orsted", None, "Ase"]
    assert apply(None, "ascii", None) is None


@pytest.mark.parametrize("value", [42, True, {"a": "ø"}])
def test_ascii_needs_text(value: Any) -> None:
    with pytest.raises(TransformError, match=f"ascii needs text, got {type(value).__name__}"):
        apply(value, "ascii", None)


def test_ascii_takes_no_argument() -> None:
    assert TRANSFORMS["ascii"].check(None) is None
    assert TRANSFORMS["ascii"].check("latin") == "takes no argument"
    assert TRANSFORMS["ascii"].usage == "- ascii"


def test_a_username_pipeline_gives_what_moodle_accepts() -> None:
    """trim, ascii, lower: the shipped username pipeline's first steps."""
    value: Any = "  Józef.Nowak-Øster@Example.com "
    for name in ("trim", "ascii", "lower"):
        value = apply(value, name, None)
    assert value == "jozef.nowak-oster@example.com"
    assert re.fullmatch(r"[a-z0-9_.@-]+", value)


def _reference_rows() -> list[list[str]]:
    """The code spans of each row of the transforms table in rules/README.md."""
    text = README.read_text(encoding="utf-8")
    section = text.split("### Transforms", 1)[1].split("\n#", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    return [re.findall(r"`([^`]*)`", row) for row in rows]


def test_every_transform_is_in_the_rule_file_reference() -> None:
    names = []
    for spans in _reference_rows():
        written = yaml.safe_load(spans[0])
        names.append(written if isinstance(written, str) else next(iter(written)))
    assert sorted(set(names)) == sorted(TRANSFORMS)


@pytest.mark.parametrize("spans", _reference_rows(), ids=lambda spans: spans[0])
def test_the_reference_examples_hold(spans: list[str]) -> None:
    """Each row: the transform as written in a rule file, …, `input` → `output` (YAML)."""
    written = yaml.safe_load(spans[0])
    name, argument = (written, None) if isinstance(written, str) else next(iter(written.items()))
    assert TRANSFORMS[name].check(argument) is None
    given, expected = yaml.safe_load(spans[-2]), yaml.safe_load(spans[-1])
    assert apply(given, name, argument) == expected
