"""Round trip on real music21 corpus pieces (parsed with ElementTree), validity of the MusicXML we write
(music21 and verovio load it) and vocabulary coverage."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import music21
import pytest
import verovio

from musicmoe.codecs.lmx import (
    Vocabulary,
    delinearize,
    delinearize_with_report,
    linearize_part,
    linearize_score,
    load_musicxml,
    parse_musicxml_bytes,
)
from musicmoe.codecs.lmx.roundtrip import corpus_pieces, piece_windows, roundtrip_piece

N_PIECES = 50
WINDOWS_PER_PIECE = 3  # first, middle and last system of each piece


@pytest.fixture(scope="module")
def corpus_results():
    pieces = corpus_pieces(N_PIECES)
    assert len(pieces) == N_PIECES
    results = []
    for p in pieces:
        results += roundtrip_piece(p, max_windows=WINDOWS_PER_PIECE)
    return pieces, results


def test_roundtrip_rate_on_50_real_pieces(corpus_results):
    pieces, results = corpus_results
    composers = {p.parts[p.parts.index("corpus") + 1] for p in pieces}
    assert {"bach", "beethoven", "mozart", "haydn", "schubert", "schumann_robert", "joplin"} <= composers
    ok = sum(r.ok for r in results)
    fails = [(r.piece, r.window, r.first_diff) for r in results if not r.ok]
    assert len(results) >= 120
    assert ok / len(results) >= 0.95, fails
    # a window after the first opens every part with the key and clefs in effect (systems stand alone)
    later = [r for r in results if r.window[0] > 0]
    assert len(later) >= 90
    for r in later:
        for seg in " ".join(r.tokens).split("part"):
            seg = seg.split()
            if seg:
                assert seg[0] == "measure" and seg[1].startswith(("key:fifths:", "clef:")), (r.piece, seg[:4])


def test_vocabulary_covers_corpus_tokens(corpus_results):
    _, results = corpus_results
    vocab = Vocabulary.from_file()
    tokens = [t for r in results for t in r.tokens]
    ids = vocab.encode(tokens)
    assert len(tokens) > 20_000
    assert vocab.unknown == {}, f"unknown tokens: {vocab.unknown.most_common(10)}"
    assert vocab.decode(ids) == tokens


def _load_ok(xml: str) -> None:
    score = music21.converter.parse(xml, format="musicxml")
    assert len(score.parts) >= 1 and score.highestTime > 0
    verovio.enableLog(verovio.LOG_OFF)
    tk = verovio.toolkit()
    assert tk.loadData(xml) is True
    assert tk.getPageCount() >= 1


@pytest.mark.parametrize("work,window", [
    ("bach/bwv66.6", 1),            # 4-part chorale, mid-piece window
    ("schubert/Lindenbaum.xml", 2),  # voice + piano grand staff
    ("beethoven/opus18no1/movement1.mxl", 3),  # string quartet
    ("joplin/maple_leaf_rag.mxl", 1),  # piano, two voices per staff
])
def test_delinearized_loads_in_music21_and_verovio(work, window):
    root = load_musicxml(music21.corpus.getWork(work))
    w = piece_windows(root)[window]
    tokens = linearize_score(root, w)
    res = delinearize_with_report(tokens)
    assert res.errors == []
    _load_ok(res.xml)
    again = parse_musicxml_bytes(res.xml.encode())
    assert len(again.findall("part")) == len(root.findall("part"))
    assert all(len(p.findall("measure")) == w[1] - w[0] + 1 for p in again.findall("part"))


def test_pitches_and_rhythm_survive_for_a_chorale():
    """Alters rebuilt from key and accidentals, durations from types: the chorale sounds the same."""
    path = music21.corpus.getWork("bach/bwv66.6")
    root = load_musicxml(path)
    xml = delinearize(linearize_score(root))
    a = music21.converter.parse(path)
    b = music21.converter.parse(xml, format="musicxml")
    for pa, pb in zip(a.parts, b.parts, strict=True):
        na = [(float(n.offset), tuple(p.midi for p in n.pitches), float(n.quarterLength)) for n in pa.flatten().notes]
        nb = [(float(n.offset), tuple(p.midi for p in n.pitches), float(n.quarterLength)) for n in pb.flatten().notes]
        assert na == nb


def test_multipart_part_tokens():
    root = load_musicxml(music21.corpus.getWork("beethoven/opus18no1/movement1.mxl"))
    toks = linearize_score(root, (4, 7))
    parts = root.findall("part")
    assert toks.count("part") == len(parts) == 4 and toks[0] == "part"
    chunks = " ".join(toks).split("part")[1:]
    assert [c.split() for c in chunks] == [linearize_part(p, (4, 7)) for p in parts]
    assert linearize_score(ET.fromstring(delinearize(toks))) == toks
    # a single-part score has no part token
    solo = ET.fromstring(delinearize(linearize_part(parts[0], (4, 7))))
    assert "part" not in linearize_score(solo) and len(solo.findall("part")) == 1


def test_extended_flavor_roundtrip():
    root = load_musicxml(music21.corpus.getWork("beethoven/opus18no1/movement1.mxl"))
    toks = linearize_score(root, (0, 7), flavor="extended")
    assert {"slur:start", "slur:stop"} <= set(toks) and "slur:start" not in linearize_score(root, (0, 7))
    xml = delinearize(toks)
    assert linearize_score(ET.fromstring(xml), flavor="extended") == toks
    _load_ok(xml)
