"""Junk and truncated token sequences never make delinearize raise; the MusicXML it writes stays loadable."""

from __future__ import annotations

import random
import xml.etree.ElementTree as ET

import music21
import pytest
import verovio

from musicmoe.codecs.lmx import Vocabulary, delinearize, delinearize_with_report, linearize_score, load_musicxml
from musicmoe.codecs.lmx.roundtrip import piece_windows

JUNK = ["", "measure:", "C10", "H4", "voice:", "voice:x", "staff:0", "staff:99", "key:fifths:12", "beats:0",
        "beat-type:0", "0in3", "3in0", "clef:G9", "clef:X2", "<unk>", "<pad>", "tremolo:double", "dot dot",
        "quarter3in2", "\u00e9", "part"]


def _check(xml: str) -> ET.Element:
    root = ET.fromstring(xml.encode())
    assert root.tag == "score-partwise" and root.findall("part")
    assert all(p.findall("measure") for p in root.findall("part"))
    return root


def test_random_sequences_never_raise():
    rng = random.Random(1234)
    vocab = Vocabulary.from_file().tokens
    for trial in range(300):
        n = rng.randint(0, 120)
        if trial % 3 == 0:  # uniform junk over the vocabulary and invalid strings
            toks = [rng.choice(vocab) if rng.random() < 0.9 else rng.choice(JUNK) for _ in range(n)]
        else:  # measure-heavy, note-like junk closer to real model output
            toks = []
            while len(toks) < n:
                toks += rng.choice([["measure"], ["C4", "voice:1", "quarter"], ["rest", "half", "dot"],
                                    ["chord", "E4", "quarter"], ["backup", "half"], ["forward", "eighth", "3in2"],
                                    ["clef:F4", "staff:2"], ["time", "beats:3"], [rng.choice(vocab)],
                                    ["beam:end", "beam:end", "beam:end"], ["part"], ["rest:measure"]])
        res = delinearize_with_report(toks)
        _check(res.xml)
        assert isinstance(res.errors, list)


def test_truncated_real_sequences_load_everywhere():
    root = load_musicxml(music21.corpus.getWork("schubert/Lindenbaum.xml"))
    toks = linearize_score(root, piece_windows(root)[3])
    verovio.enableLog(verovio.LOG_OFF)
    tk = verovio.toolkit()
    rng = random.Random(7)
    cuts = sorted(rng.sample(range(1, len(toks)), 15))
    for i, cut in enumerate(cuts):
        for seq in (toks[:cut], toks[cut:], toks[:cut] + toks[cut + 3:]):  # prefix, suffix, a gap
            xml = delinearize(seq)
            _check(xml)
            assert tk.loadData(xml) is True
        if i % 5 == 0:
            assert music21.converter.parse(delinearize(toks[:cut]), format="musicxml") is not None


def test_errors_are_reported_not_raised():
    errors: list[str] = []
    xml = delinearize(["C4", "quarter", "measure", "voice:1", "bogus", "E4", "voice:1", "beam:begin",
                       "G4", "quarter", "chord", "measure", "time", "beats:3"], errors)
    root = _check(xml)
    assert any("before the first 'measure'" in e for e in errors)
    assert any("'bogus'" in e and "unknown" in e for e in errors)
    assert any("without a type" in e for e in errors)
    assert any("'time'" in e for e in errors)
    assert any("prefix without a note" in e for e in errors)
    assert len(root.find("part").findall("measure")) == 3
    assert delinearize("measure C4 voice:1 whole").count("<note") == 1  # a str is split on white space
    with pytest.raises(TypeError):
        delinearize(None)
    with pytest.raises(TypeError):
        delinearize([1, 2, 3])
    empty = delinearize_with_report([])
    _check(empty.xml)
    assert empty.errors
