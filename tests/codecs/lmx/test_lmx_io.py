"""Loading MusicXML (.musicxml/.xml/.mxl), system windows, and clear errors on bad input."""

from __future__ import annotations

import copy
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import pytest

from musicmoe.codecs.lmx import (
    LmxError,
    delinearize,
    fixed_windows,
    linearize_file,
    linearize_score,
    load_musicxml,
    parse_lmx_text,
    parse_musicxml_bytes,
    system_breaks,
)

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "lmx-olimpic"  # vendored; see its README.md
CONTAINER = ('<?xml version="1.0" encoding="UTF-8"?><container><rootfiles>'
             '<rootfile full-path="{name}" media-type="application/vnd.recordare.musicxml+xml"/>'
             '</rootfiles></container>')


def _mxl(path: Path, xml: bytes, inner: str = "score/piece.xml") -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("mimetype", "application/vnd.recordare.musicxml")
        zf.writestr("META-INF/container.xml", CONTAINER.format(name=inner))
        zf.writestr(inner, xml)
    return path


def test_mxl_and_xml_load_the_same(tmp_path):
    src = FIXTURES / "tuplets_simple_2345.musicxml"
    mxl = _mxl(tmp_path / "piece.mxl", src.read_bytes())
    assert linearize_score(load_musicxml(mxl)) == linearize_score(load_musicxml(src))
    plain = tmp_path / "copy.xml"
    plain.write_bytes(src.read_bytes())
    assert linearize_file(plain) == linearize_file(src)


def test_truncated_mxl_raises_naming_file(tmp_path):
    mxl = _mxl(tmp_path / "piece.mxl", (FIXTURES / "basics_grandstaff.musicxml").read_bytes())
    cut = tmp_path / "cut.mxl"
    cut.write_bytes(mxl.read_bytes()[: mxl.stat().st_size // 2])
    with pytest.raises(LmxError, match="cut.mxl"):
        load_musicxml(cut)


def test_mxl_with_missing_rootfile(tmp_path):
    bad = tmp_path / "nofile.mxl"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("META-INF/container.xml", CONTAINER.format(name="missing.xml"))
    with pytest.raises(LmxError, match="nofile.mxl.*missing.xml"):
        load_musicxml(bad)


def test_broken_xml_timewise_and_missing_file(tmp_path):
    broken = tmp_path / "broken.musicxml"
    broken.write_text("<score-partwise><part id='P1'><measure>")
    with pytest.raises(LmxError, match="broken.musicxml.*not well-formed"):
        load_musicxml(broken)
    tw = tmp_path / "timewise.xml"
    tw.write_text('<score-timewise version="3.1"><measure number="1"><part id="P1"/></measure></score-timewise>')
    with pytest.raises(LmxError, match="timewise.xml.*score-timewise"):
        load_musicxml(tw)
    other = tmp_path / "other.xml"
    other.write_text("<html/>")
    with pytest.raises(LmxError, match="other.xml.*<html>"):
        linearize_file(other)
    with pytest.raises(LmxError, match="nothere.mxl"):
        load_musicxml(tmp_path / "nothere.mxl")


def test_system_breaks_split_and_each_system_is_self_contained(tmp_path):
    root = load_musicxml(FIXTURES / "basics_note_types.musicxml")
    assert system_breaks(root) == [(0, 2)]
    root2 = copy.deepcopy(root)
    third = root2.find("part").findall("measure")[2]
    third.insert(0, ET.Element("print", {"new-system": "yes"}))
    path = tmp_path / "two_systems.musicxml"
    ET.ElementTree(root2).write(path, encoding="UTF-8", xml_declaration=True)
    assert system_breaks(load_musicxml(path)) == [(0, 1), (2, 2)]
    systems = linearize_file(path)
    assert len(systems) == 2
    assert systems[1][:4] == ["measure", "key:fifths:0", "clef:G2", "A4"]
    for s in systems:  # every system alone survives delinearize -> linearize
        assert linearize_score(parse_musicxml_bytes(delinearize(s).encode())) == s


def test_fixed_windows_and_lmx_text():
    assert fixed_windows(10, 4) == [(0, 3), (4, 7), (8, 9)]
    assert fixed_windows(0) == []
    text = "version: 1.0\nflavor: core\n---\nmeasure # 1 comment with key:fifths:0\n  C4 voice:1 whole\n"
    assert parse_lmx_text(text) == ["measure", "C4", "voice:1", "whole"]
    assert parse_lmx_text("measure C4 whole # x\n") == ["measure", "C4", "whole"]
