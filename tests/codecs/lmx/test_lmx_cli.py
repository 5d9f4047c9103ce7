"""``musicmoe lmx linearize|delinearize`` through ``register(subparsers)``, as the main CLI calls it."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from musicmoe.cli.lmx import register
from musicmoe.cli.main import main
from musicmoe.codecs.lmx import linearize_file, read_lmx

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "lmx-olimpic"  # vendored; see its README.md


def run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="musicmoe")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["lmx", *argv])
    return args.func(args)


def test_linearize_prints_one_line_per_system(capsys):
    assert run("linearize", str(FIXTURES / "tuplets_simple_67.musicxml")) == 0
    out = capsys.readouterr().out.splitlines()
    assert [ln.split() for ln in out] == [read_lmx(FIXTURES / "tuplets_simple_67.lmx")]
    assert run("linearize", str(FIXTURES / "basics_note_types.musicxml"), "--measures", "2-2") == 0
    assert capsys.readouterr().out.split()[:4] == ["measure", "key:fifths:0", "clef:G2", "A4"]


def test_delinearize_fixture_and_plain_files(tmp_path, capsys):
    out = tmp_path / "sub" / "out.musicxml"
    assert run("delinearize", str(FIXTURES / "basics_grandstaff.lmx"), "-o", str(out)) == 0
    assert linearize_file(out) == [read_lmx(FIXTURES / "basics_grandstaff.lmx")]
    plain = tmp_path / "plain.lmx"
    plain.write_text("measure C4 voice:1 half stem:up rest half bogus\n")
    assert run("delinearize", str(plain), "-o", str(tmp_path / "p.musicxml")) == 0
    assert "bogus" in capsys.readouterr().err
    assert run("delinearize", str(plain), "-o", str(tmp_path / "q.musicxml"), "--strict") == 1
    assert linearize_file(tmp_path / "p.musicxml") == [["measure", "C4", "voice:1", "half", "stem:up", "rest", "half"]]


def test_errors_exit_nonzero_with_message(tmp_path, capsys):
    bad = tmp_path / "bad.musicxml"
    bad.write_text("<score-partwise><part")
    assert run("linearize", str(bad)) == 1
    assert "bad.musicxml" in capsys.readouterr().err
    assert run("delinearize", str(tmp_path / "none.lmx"), "-o", str(tmp_path / "x.musicxml")) == 1
    assert "none.lmx" in capsys.readouterr().err
    assert not (tmp_path / "x.musicxml").exists()
    with pytest.raises(SystemExit):
        run("linearize", str(bad), "--measures", "3-1")


def test_through_the_main_entry_point(tmp_path, capsys):
    assert main(["lmx", "linearize", str(FIXTURES / "basics_one_empty_measure.musicxml")]) == 0
    assert capsys.readouterr().out.split() == read_lmx(FIXTURES / "basics_one_empty_measure.lmx")
    assert main(["lmx", "linearize", str(tmp_path / "missing.musicxml")]) == 1
