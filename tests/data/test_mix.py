"""Corpus mixing: weights at a step (curriculum), deterministic sampling, YAML, reading mixed examples."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from musicmoe.config import ConfigError
from musicmoe.data.mix import CorpusMix, CorpusSource, MixedCorpus, MixtureSampler, load_mix, mixture_weights


def _mix() -> CorpusMix:
    return CorpusMix([CorpusSource("a", 1.0), CorpusSource("b", 3.0, start_step=100, ramp_steps=100)], seed=7)


def test_weights_follow_the_curriculum():
    mix = _mix()
    assert mixture_weights(mix, 0) == [1.0, 0.0]
    assert mixture_weights(mix, 99) == [1.0, 0.0]
    w = mixture_weights(mix, 149)  # b half way up its ramp: 3 * 0.5 = 1.5
    assert w == pytest.approx([1 / 2.5, 1.5 / 2.5])
    assert mixture_weights(mix, 10_000) == pytest.approx([0.25, 0.75])
    assert sum(mixture_weights(mix, 123)) == pytest.approx(1.0)


def test_invalid_mixes_are_refused():
    with pytest.raises(ValueError, match="step 0"):
        CorpusMix([CorpusSource("a", 1.0, start_step=5)])
    with pytest.raises(ValueError, match="weight"):
        CorpusSource("a", -1.0)
    with pytest.raises(ValueError, match="unique"):
        CorpusMix([CorpusSource("x/a"), CorpusSource("y/a")])


def test_sampler_is_deterministic_and_weighted():
    mix = _mix()
    s = MixtureSampler(mix, sizes=[10, 20])
    assert s.sample(5, 50) == s.sample(5, 50)
    assert s.sample(5, 50) != s.sample(6, 50)
    late = Counter(c for c, _ in s.sample(10_000, 4000))
    assert 0.70 < late[1] / 4000 < 0.80  # 0.75 expected
    assert all(c == 0 for c, _ in s.sample(50, 200))  # b has not joined yet
    assert all(0 <= i < (10, 20)[c] for c, i in s.sample(10_000, 500))
    # an empty corpus is left out instead of failing
    assert {c for c, _ in MixtureSampler(mix, sizes=[10, 0]).sample(10_000, 100)} == {0}


def test_load_mix_yaml(tmp_path):
    path = tmp_path / "mix.yaml"
    path.write_text("corpora:\n  - {path: runs/corpus, weight: 1.0}\n"
                    "  - {path: runs/ytsv, weight: 4.0, start_step: 10, ramp_steps: 5}\nseed: 3\n")
    mix = load_mix(path, ["seed=5"])
    assert [c.name for c in mix.corpora] == ["corpus", "ytsv"] and mix.seed == 5
    assert mixture_weights(mix, 100) == pytest.approx([0.2, 0.8])
    path.write_text("corpora:\n  - {path: runs/corpus, wieght: 1.0}\n")
    with pytest.raises(ConfigError, match="wieght"):
        load_mix(path)


def test_shipped_mix_configs_validate():
    from musicmoe.config import CONFIG_ROOT

    files = sorted((CONFIG_ROOT / "mix").glob("*.yaml"))
    assert files
    for f in files:
        mix = load_mix(f)
        assert sum(mixture_weights(mix, 10**9)) == pytest.approx(1.0)


def test_mixed_corpus_reads_examples(tmp_path):
    from musicmoe.data.example import Example
    from musicmoe.data.shards import ShardWriter, write_manifest

    for name, n in (("imgs", 3), ("sounds", 2)):
        with ShardWriter(tmp_path / name, "s0") as w:
            for i in range(n):
                if name == "imgs":
                    w.add(Example(key=f"{name}{i}", piece=name, image=np.full((20, 30), 200 + i, np.uint8)))
                else:
                    w.add(Example(key=f"{name}{i}", piece=name, audio=np.zeros(2400, np.float32)))
        write_manifest(tmp_path / name)
    mix = CorpusMix([CorpusSource(str(tmp_path / "imgs")), CorpusSource(str(tmp_path / "sounds"), weight=2.0)])
    mc = MixedCorpus(mix)
    assert mc.sizes() == [3, 2]
    for c, i in mc.sampler().sample(0, 20):
        ex = mc[(c, i)]
        assert ex.meta["corpus"] == ("imgs", "sounds")[c]
        assert ex.modalities == (("image",), ("audio",))[c]
