"""Mixing corpora: weights at a step (curriculum), stream numbering and weights, config validation, and the
compatibility check of token folders (the end-to-end mix is in tests/data/loaders/test_training_data.py)."""

from __future__ import annotations

import pytest

from musicmoe.config import ConfigError, load_config
from musicmoe.data.mix import (
    CorpusSource,
    merge_token_meta,
    mixture_weights,
    split_stream,
    stream_id,
    stream_weights,
    validate_sources,
)


def _sources() -> list[CorpusSource]:
    return [CorpusSource("a", 1.0), CorpusSource("b", 3.0, start_step=100, ramp_steps=100)]


def test_weights_follow_the_curriculum():
    src = _sources()
    assert mixture_weights(src, 0) == [1.0, 0.0]
    assert mixture_weights(src, 99) == [1.0, 0.0]
    w = mixture_weights(src, 149)  # b half way up its ramp: 3 * 0.5 = 1.5
    assert w == pytest.approx([1 / 2.5, 1.5 / 2.5])
    assert mixture_weights(src, 10_000) == pytest.approx([0.25, 0.75])
    assert sum(mixture_weights(src, 123)) == pytest.approx(1.0)


def test_invalid_sources_are_refused():
    with pytest.raises(ValueError, match="step 0"):
        validate_sources([CorpusSource("a", 1.0, start_step=5)])
    with pytest.raises(ValueError, match="weight"):
        CorpusSource("a", -1.0)
    with pytest.raises(ValueError, match="unique"):
        validate_sources([CorpusSource("x/a"), CorpusSource("y/a")])
    assert CorpusSource("runs/maestro/tokens").name == "maestro"  # a token folder is named after its corpus


def test_stream_ids_and_weights():
    assert split_stream(stream_id(3, 7)) == (3, 7) and stream_id(0, 7) == 7
    # corpus 0 (weight 0.75) has tasks 0 and 1, corpus 1 (0.25) only task 1; task 0 weighs 2, task 1 weighs 1
    w = stream_weights([0.75, 0.25], {0: 2.0, 1: 1.0}, [[0, 1], [1]])
    assert w == pytest.approx({stream_id(0, 0): 0.5, stream_id(0, 1): 0.25, stream_id(1, 1): 0.25})
    # a corpus whose only task is not active yet gives up its share
    assert stream_weights([0.5, 0.5], {0: 1.0, 1: 0.0}, [[0], [1]]) == {stream_id(0, 0): 0.5}


def test_sources_in_the_config():
    cfg = load_config(None, ["data.sources=[{path: runs/a/tokens, weight: 2}, {path: runs/b, start_step: 5}]"])
    assert [(s.name, s.weight, s.start_step) for s in cfg.data.sources] == [("a", 2.0, 0), ("b", 1.0, 5)]
    with pytest.raises(ConfigError, match="'wieght'.*did you mean 'weight'"):
        load_config(None, ["data.sources=[{path: a, wieght: 2}]"])
    with pytest.raises(ConfigError, match="no source has a positive weight at step 0"):
        load_config(None, ["data.sources=[{path: a, start_step: 3}]"])
    real = load_config("experiment/paper_real.yaml")
    assert len(real.data.sources) == 6 and sum(mixture_weights(real.data.sources, 10**9)) == pytest.approx(1.0)


def _meta(audio_hash: str | None, midi_size: int = 600, image: bool = True) -> dict:
    return {"corpus": "c", "vocab": {"image": {"vocab_size": 1024, "codebooks": 4}, "lmx": {"vocab_size": 3000,
                                                                                            "codebooks": 1},
                                     "midi": {"vocab_size": midi_size, "codebooks": 1},
                                     "audio": {"vocab_size": 1024, "codebooks": 4}},
            "codecs": {"image": {"content_hash": "img"} if image else None,
                       "audio": {"content_hash": audio_hash} if audio_hash else None,
                       "lmx": {"vocabulary_sha256": "v"}, "midi": {"config": {"shift_ms": 10}}},
            "streams": {"image": {"available": image}, "lmx": {"available": True}, "midi": {"available": True},
                        "audio": {"available": audio_hash is not None}}}


def test_merge_token_meta():
    merged = merge_token_meta([("omr", _meta(None)), ("amt", _meta("aud", image=False))])
    assert merged["codecs"]["audio"] == {"content_hash": "aud"} and merged["codecs"]["image"]["content_hash"] == "img"
    assert merged["streams"]["audio"]["available"]
    with pytest.raises(ValueError, match="omr and amt.*different audio codecs"):
        merge_token_meta([("omr", _meta("x")), ("amt", _meta("y"))])
    with pytest.raises(ValueError, match="different midi"):
        bad = _meta("x")
        bad["codecs"]["midi"] = {"config": {"shift_ms": 20}}
        merge_token_meta([("omr", _meta("x")), ("amt", bad)])
