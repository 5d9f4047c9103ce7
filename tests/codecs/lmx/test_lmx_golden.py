"""The linearizer reproduces the OLiMPiC authors' golden MusicXML -> LMX pairs token for token."""

from __future__ import annotations

from pathlib import Path

import pytest

from musicmoe.codecs.lmx import (
    delinearize,
    linearize_file,
    linearize_part,
    linearize_score,
    load_musicxml,
    parse_musicxml_bytes,
    read_lmx,
)

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "lmx-olimpic"  # vendored; see its README.md
NAMES = ["basics_grandstaff", "basics_note_types", "basics_one_empty_measure",
         "tuplets_simple_2345", "tuplets_simple_67", "tuplets_simple_89"]


def test_all_six_fixtures_present():
    assert sorted(p.stem for p in FIXTURES.glob("*.musicxml")) == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_golden_tokens(name):
    expected = read_lmx(FIXTURES / f"{name}.lmx")
    assert expected[0] == "measure" and "---" not in expected and not any("#" in t for t in expected)
    systems = linearize_file(FIXTURES / f"{name}.musicxml")
    assert len(systems) == 1
    assert systems[0] == expected
    root = load_musicxml(FIXTURES / f"{name}.musicxml")
    assert linearize_part(root.find("part")) == expected == linearize_score(root)


@pytest.mark.parametrize("name", NAMES)
def test_golden_delinearize_roundtrip(name):
    expected = read_lmx(FIXTURES / f"{name}.lmx")
    xml = delinearize(expected)
    assert linearize_score(parse_musicxml_bytes(xml.encode())) == expected


def test_window_restates_key_and_clefs_not_time():
    root = load_musicxml(FIXTURES / "basics_grandstaff.musicxml")
    part = root.find("part")
    second = linearize_part(part, (1, 1))
    assert second == ["measure", "key:fifths:0", "clef:G2", "staff:1", "clef:F4", "staff:2",
                      "E5", "voice:1", "whole", "staff:1", "backup", "whole", "G3", "voice:5", "whole", "staff:2"]
    with_time = linearize_part(part, (1, 1), restate_time=True)
    assert with_time[:5] == ["measure", "key:fifths:0", "time", "beats:4", "beat-type:4"]
    # the whole part equals the concatenation of its windows minus the restated header
    assert linearize_part(part, (0, 0)) + second[:1] + second[6:] == linearize_part(part)


def test_measure_window_is_element_index_not_number():
    root = load_musicxml(FIXTURES / "basics_note_types.musicxml")
    part = root.find("part")
    for i, m in enumerate(part.findall("measure")):
        m.set("number", str(100 - i))  # numbers must not matter
    toks = linearize_part(part, (2, 2))
    assert toks[:3] == ["measure", "key:fifths:0", "clef:G2"] and toks[3] == "A4"
    assert linearize_part(part, (5, 9)) == []
    with pytest.raises(ValueError):
        linearize_part(part, (2, 1))
