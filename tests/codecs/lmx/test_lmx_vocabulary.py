"""The shipped LMX vocabulary: fixed ids, encode/decode round trip, explicit unknown handling."""

from __future__ import annotations

import pytest

from musicmoe.codecs.lmx import VOCABULARY_FILE, LmxError, Vocabulary
from musicmoe.codecs.lmx.tokens import all_tokens


def test_file_matches_grammar_and_ids_are_line_numbers():
    lines = VOCABULARY_FILE.read_text(encoding="utf-8").splitlines()
    assert lines == all_tokens()  # regenerate only by appending (ids must stay stable)
    v = Vocabulary.from_file()
    assert len(v) == len(lines) == len(set(lines))
    assert v.unk_id == 0 and v.tokens[0] == "<unk>"
    # pinned ids: changing them silently would invalidate every token shard and checkpoint
    assert [v.index[t] for t in ("part", "measure", "key:fifths:0", "C4", "quarter", "tuplet:stop")] == [
        1, 2, 10, 130, 196, 496]
    assert Vocabulary.from_file().tokens == v.tokens  # stable across loads


def test_encode_decode_roundtrip_and_unknowns():
    v = Vocabulary.from_file()
    toks = ["measure", "key:fifths:-3", "time", "beats:6", "beat-type:8", "clef:F4", "staff:2",
            "grace", "grace:slash", "chord", "G#4", "E4", "voice:1", "eighth", "3in2", "dot", "natural",
            "stem:down", "beam:begin", "tied:start", "tuplet:start", "rest", "rest:measure", "beats:99"]
    ids = v.encode(toks)
    assert all(isinstance(i, int) and 0 <= i < len(v) for i in ids)
    assert ids.count(v.unk_id) == 2 and v.unknown == {"G#4": 1, "beats:99": 1}
    back = v.decode(ids)
    assert back == [t if t in v else "<unk>" for t in toks]
    known = [t for t in toks if t in v]
    assert v.decode(v.encode(known)) == known
    assert v.count_unknown(toks) == 2
    with pytest.raises(LmxError, match="G#4"):
        v.encode(["G#4"], strict=True)
    with pytest.raises(LmxError, match="outside"):
        v.decode([len(v)])


def test_bad_vocabulary_files(tmp_path):
    dup = tmp_path / "dup.txt"
    dup.write_text("<unk>\nmeasure\nmeasure\n")
    with pytest.raises(LmxError, match="dup.txt.*duplicate"):
        Vocabulary.from_file(dup)
    nounk = tmp_path / "nounk.txt"
    nounk.write_text("measure\n")
    with pytest.raises(LmxError, match="nounk.txt"):
        Vocabulary.from_file(nounk)
    with pytest.raises(LmxError, match="missing.txt"):
        Vocabulary.from_file(tmp_path / "missing.txt")
