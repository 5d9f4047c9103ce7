"""`musicmoe data stats|show`, config resolution of `data build`, source listing and the data sub-command group."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pretty_midi
import pytest
import soundfile as sf
from PIL import Image

from musicmoe.cli.main import build_parser, main
from musicmoe.config import ConfigError, compose
from musicmoe.data.builder.config import CorpusConfig, content_keys
from musicmoe.data.builder.sources import list_sources, make_id
from musicmoe.data.shards import Corpus


def test_stats_counts_the_corpus(tiny_corpus, capsys):
    assert main(["data", "stats", str(tiny_corpus), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    corpus = Corpus(tiny_corpus)
    assert stats["examples"] == len(corpus) and stats["pieces"] == 3
    assert sum(v["examples"] for v in stats["splits"].values()) == len(corpus)
    assert stats["composers"] == {"bach": {"examples": len(corpus), "pieces": 3}}
    seconds = sum(r["audio_seconds"] for r in corpus.records)
    assert stats["audio_hours"] == pytest.approx(seconds / 3600, abs=1e-4)
    assert stats["lmx_tokens"]["max"] == max(r["lmx_tokens"] for r in corpus.records)
    assert stats["image_height"]["max"] == max(r["image_shape"][0] for r in corpus.records)
    assert main(["data", "stats", str(tiny_corpus)]) == 0
    table = capsys.readouterr().out
    assert "audio" in table and "bach" in table and "lmx_tokens" in table


def test_show_writes_the_example(tiny_corpus, tmp_path, capsys):
    corpus = Corpus(tiny_corpus)
    ex = corpus[2]
    assert main(["data", "show", str(tiny_corpus), "--index", "2", "-o", str(tmp_path)]) == 0
    assert capsys.readouterr().out.split() == ex.lmx
    png = np.asarray(Image.open(tmp_path / f"{ex.key}.png"))
    assert np.array_equal(png, ex.image)
    midi = pretty_midi.PrettyMIDI(str(tmp_path / f"{ex.key}.mid"))
    assert sum(len(i.notes) for i in midi.instruments) == sum(len(i.notes) for i in ex.midi.instruments)
    audio, sr = sf.read(tmp_path / f"{ex.key}.wav")
    assert sr == 24000 and len(audio) == len(ex.audio)
    assert main(["data", "show", str(tiny_corpus), "--key", corpus.records[0]["key"], "-o", str(tmp_path)]) == 0
    assert main(["data", "show", str(tiny_corpus), "--index", "999"]) == 2
    assert "out of range" in capsys.readouterr().err


def _build_args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["data", "build", *argv])


def test_build_config_resolution():
    from musicmoe.cli.data import corpus_config_from_args

    cfg = corpus_config_from_args(_build_args("--config", "corpus/tiny.yaml", "--out", "x", "max_height_px=300"))
    assert cfg.include and cfg.composers == ["bach"] and cfg.out == "x" and cfg.max_height_px == 300
    cfg = corpus_config_from_args(_build_args("--composers", "bach,mozart", "--limit", "5", "corpus.pad_px=2"))
    assert cfg.composers == ["bach", "mozart"] and cfg.limit == 5 and cfg.pad_px == 2 and cfg.source == "music21"
    with pytest.raises(ConfigError, match="max_heigth_px"):
        corpus_config_from_args(_build_args("max_heigth_px=3"))
    with pytest.raises(ConfigError, match="limit"):
        corpus_config_from_args(_build_args("--limit", "-1"))


def test_shipped_corpus_configs_validate():
    from musicmoe.config import CONFIG_ROOT

    files = sorted((CONFIG_ROOT / "corpus").glob("*.yaml"))
    assert {f.stem for f in files} >= {"tiny", "bach", "music21"}
    for f in files:
        assert isinstance(compose(CorpusConfig, f), CorpusConfig)


def test_config_validation_and_content_keys():
    with pytest.raises(ValueError, match="split_fractions"):
        CorpusConfig(split_fractions=[0.5, 0.5, 0.5])
    with pytest.raises(ValueError, match="formats"):
        CorpusConfig(formats=["mxl"])
    keys = content_keys()
    assert "staff_height_px" in keys and "split_fractions" in keys
    assert "workers" not in keys and "limit" not in keys and "source" not in keys


def test_music21_sources_prefer_musicxml_and_have_safe_ids():
    sources, duplicates = list_sources(CorpusConfig(composers=["beethoven"]))
    rels = [s.rel for s in sources]
    assert rels == sorted(rels) and all(r.startswith("beethoven/") for r in rels)
    assert "beethoven/opus18no1/movement1.mxl" in rels and "beethoven/opus18no1/movement1.krn" in duplicates
    assert all(s.composer == "beethoven" for s in sources)
    ids = [s.file_id for s in sources]
    assert len(set(ids)) == len(ids) and all("/" not in i and "__" not in i and " " not in i for i in ids)
    limited, _ = list_sources(CorpusConfig(composers=["beethoven"], limit=3))
    assert [s.rel for s in limited] == rels[:3]
    assert make_id("a b/c__d.mxl") == "a_b_c_d"


def test_data_group_is_open_to_other_commands():
    from musicmoe.cli import data

    parser = build_parser()
    group = data.data_subparsers()
    extra = group.add_parser("hello")
    extra.set_defaults(func=lambda args: 0)
    args = parser.parse_args(["data", "hello"])
    assert args.func(args) == 0
    assert {"build", "stats", "show"} <= set(group.choices)


def test_programs_drawn_per_tune(tmp_path):
    """A multi-tune ABC file gives one piece per tune; with `programs` each tune plays one program of the list."""
    from musicmoe.data.builder.align import PartInfo, piece_program, with_program

    programs = [0, 40, 73]
    assert piece_program("a-1", programs) == piece_program("a-1", programs) in programs
    parts = [PartInfo("P1", "melody", 1, 52, False), PartInfo("P2", "drums", 1, 0, True)]
    assert [p.program for p in with_program(parts, 40)] == [40, 0]
    out = tmp_path / "folk"
    assert main(["data", "build", "--include", "essenFolksong/testd.abc", "--out", str(out), "--workers", "1",
                 "--quiet", "corpus.programs=[0,40,73]"]) == 0
    records = Corpus(out).records
    by_piece = {}
    for r in records:
        by_piece.setdefault(r["piece"], set()).add(tuple(r["programs"]))
    assert len(by_piece) >= 5  # one piece per tune
    assert all(len(v) == 1 and next(iter(v))[0] == piece_program(p, programs) for p, v in by_piece.items())
    assert len({next(iter(v)) for v in by_piece.values()}) >= 2  # not one timbre for every tune
    with pytest.raises(ConfigError, match="programs"):
        compose(CorpusConfig, None, ["programs=[0,200]"])
