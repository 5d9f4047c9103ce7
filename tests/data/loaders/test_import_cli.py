"""``musicmoe import DATASET SRC --out DIR`` (the ``datasets`` command module)."""

from __future__ import annotations

import argparse

import pytest

from musicmoe.cli import datasets
from musicmoe.data.shards import Corpus


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="musicmoe")
    datasets.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_import_cli(tmp_path, musicnet_dir, capsys):
    src, _ = musicnet_dir
    out = tmp_path / "mn"
    assert _run(["import", "musicnet", str(src), "segment_seconds=6", "--out", str(out), "--limit", "1",
                 "--set", "valid_fraction=0.5"]) == 0
    text = capsys.readouterr().out
    assert "1 items converted" in text and "labels_bad_rows=1" in text
    assert len(Corpus(out)) >= 3
    assert all(ex.duration == pytest.approx(6.0) or ex.meta["end_seconds"] > 18 for ex in Corpus(out))


def test_import_cli_errors(tmp_path):
    from musicmoe.cli.main import UserError
    from musicmoe.config import ConfigError

    with pytest.raises(UserError, match="does not look like MAESTRO"):
        _run(["import", "maestro", str(tmp_path), "--out", str(tmp_path / "o")])
    with pytest.raises(ConfigError, match="segment_seconds"):
        _run(["import", "maestro", str(tmp_path), "--out", str(tmp_path / "o"), "--set", "segment_seconds=-1"])
    with pytest.raises(ConfigError, match="segmnt_seconds"):
        _run(["import", "maestro", str(tmp_path), "segmnt_seconds=3", "--out", str(tmp_path / "o")])
