"""SER agrees with the OLiMPiC/U-MusT definition, written out independently here as a plain DP."""

import random
import re

import pytest

from musicmoe.cli.main import main
from musicmoe.metrics import SymbolErrorRate, drop_tuplet_tokens, ser_scores

VOCAB = ["measure", "C4", "D4", "quarter", "eighth", "beam", "tuplet:start", "tuplet:stop", "3in2", "5in4", "rest"]


def _levenshtein(a, b):
    prev = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        cur = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cur[j] = min(cur[j - 1] + 1, prev[j] + 1, prev[j - 1] + (a[i - 1] != b[j - 1]))
        prev = cur
    return prev[-1]


def _reference(gold, pred):
    def keep(seq):
        return [t for t in seq if t not in {"tuplet:start", "tuplet:stop"} and not re.match(r"^\d+in\d+$", t)]

    e = sum(_levenshtein(g, p) for g, p in zip(gold, pred))
    n = sum(len(g) for g in gold)
    et = sum(_levenshtein(keep(g), keep(p)) for g, p in zip(gold, pred))
    nt = sum(len(keep(g)) for g in gold)
    return 100 * e / n, 100 * et / nt


def test_matches_reference_on_random_sequences_with_empties():
    rng = random.Random(7)
    for trial in range(60):
        gold, pred = [], []
        for _ in range(rng.randint(1, 8)):
            gold.append([rng.choice(VOCAB) for _ in range(rng.choice([0, 0, 1, 5, 12]))])
            pred.append([rng.choice(VOCAB) for _ in range(rng.choice([0, 1, 4, 12, 20]))])
        gold[0] = gold[0] or ["measure", "C4"]  # the set must hold gold tokens
        if not drop_tuplet_tokens(sum(gold, [])):
            gold[0].append("C4")
        ser, sert = _reference(gold, pred)
        got = ser_scores(pred, gold)
        assert abs(got["ser"] - ser) < 1e-9 and abs(got["ser_no_tuplets"] - sert) < 1e-9, trial
        metric = SymbolErrorRate()
        for i in range(0, len(gold), 3):  # batched updates sum to the corpus value
            metric.update(pred[i:i + 3], gold[i:i + 3])
        assert abs(float(metric.compute()) - ser) < 1e-9


def test_perfect_and_empty_prediction():
    gold = [["measure", "C4", "quarter"], ["measure", "rest", "quarter"]]
    assert ser_scores(gold, gold)["ser"] == 0.0
    assert ser_scores([[], []], gold)["ser"] == 100.0


def test_tuplet_tokens_dropped():
    assert drop_tuplet_tokens(["tuplet:start", "3in2", "C4", "12in8", "tuplet:stop"]) == ["C4"]


def test_rejects_strings_and_mismatched_lengths():
    with pytest.raises(TypeError):
        ser_scores(["C4 D4"], [["C4"]])
    with pytest.raises(ValueError):
        ser_scores([["C4"]], [["C4"], ["D4"]])


def test_cli(tmp_path, capsys):
    (tmp_path / "g.txt").write_text("measure C4 quarter\nmeasure tuplet:start 3in2 D4 eighth\n")
    (tmp_path / "p.txt").write_text("measure C4 half\nmeasure D4 eighth\n")
    assert main(["ser", "--gold", str(tmp_path / "g.txt"), "--pred", str(tmp_path / "p.txt")]) == 0
    out = capsys.readouterr().out
    assert "SER: 37.500%" in out  # 1 + 2 errors over 8 gold tokens
    assert "SER without tuplets: 16.667%" in out  # 1 error over 6
    (tmp_path / "short.txt").write_text("measure\n")
    assert main(["ser", "--gold", str(tmp_path / "g.txt"), "--pred", str(tmp_path / "short.txt")]) == 2
    assert "2 lines" in capsys.readouterr().err
