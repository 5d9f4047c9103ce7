"""Every importer's output is training data: import -> ``tokenize`` -> the data module mixing the corpora by
``data.sources`` (weights, curriculum), batches whose rows are the imported examples, and two training steps."""

from __future__ import annotations

import sys
from collections import Counter
from itertools import islice
from pathlib import Path

import numpy as np
import pytest
import torch

from musicmoe.data.loaders import ImportConfig, get_loader, run_import
from musicmoe.data.mix import split_stream
from musicmoe.data.tasks import get_task

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # tests/, for the shared training.fixtures module
from training.fixtures import ensure_codecs, ensure_tokens, tiny_overrides  # noqa: E402

WEIGHTS = {"olimpic": 1.0, "grandstaff": 1.0, "maestro": 2.0, "musicnet": 1.0}
MUSICNET_JOINS = 40  # musicnet's curriculum: it joins at this optimiser step, at once


@pytest.fixture(scope="module")
def imported(tiny_corpus, tmp_path_factory, olimpic_dir, grandstaff_dirs, maestro_dir, musicnet_dir):
    """Each fixture layout imported, then tokenized with the shared test codecs; also our own corpus's tokens."""
    from musicmoe.config import load_config
    from musicmoe.data.tokenize import tokenize

    base = tmp_path_factory.getbasetemp() / "musicmoe_training"
    codecs = ensure_codecs(tiny_corpus, base)
    own = ensure_tokens(tiny_corpus, codecs, base)
    work = tmp_path_factory.mktemp("imported")
    sources = {"olimpic": (olimpic_dir[0], {}), "grandstaff": (grandstaff_dirs["lmx"], {}),
               "maestro": (maestro_dir[0], {"segment_seconds": 5.0}),
               "musicnet": (musicnet_dir[0], {"segment_seconds": 5.0})}
    tokens = {}
    cfg = load_config(None, ["tokenize.workers=0"])
    for name, (src, kw) in sources.items():
        corpus = work / name
        run_import(get_loader(name), ImportConfig(source=str(src), out=str(corpus), **kw), 0, 1, progress=False)
        tokens[name] = work / name / "tokens"
        tokenize(corpus, tokens[name], cfg, image_codec=codecs["image"], audio_codec=codecs["audio"],
                 progress=False)
    return tokens, own, codecs


def _overrides(imported, tmp_path, *extra):
    tokens, own, codecs = imported
    listed = ", ".join(
        f"{{path: '{path}', weight: {WEIGHTS[name]}"
        + (f", start_step: {MUSICNET_JOINS}" if name == "musicnet" else "") + "}"
        for name, path in tokens.items())
    return tiny_overrides(own, codecs, tmp_path) + [
        f"data.sources=[{listed}]", "data.tasks.omr=1.0", "data.tasks.amt=1.0", "data.tasks.lmx2midi=0",
        "data.batch_size=4", "data.bucket_batches=4", "model.max_src_len=1280", "model.max_tgt_len=1280", *extra]


def _module(imported, tmp_path, *extra):
    from musicmoe.config import load_config
    from musicmoe.data.datamodule import TranslationDataModule

    return TranslationDataModule(load_config(None, _overrides(imported, tmp_path, *extra)))


def test_mixed_corpora_feed_the_data_module(imported, tmp_path):
    from musicmoe.data.tokens import TokenDataset

    tokens = imported[0]
    dm = _module(imported, tmp_path)
    info = dm.prepare()
    assert [(s["name"], s["tasks"]) for s in info["sources"]] == [
        ("olimpic", ["omr"]), ("grandstaff", ["omr"]), ("maestro", ["amt"]), ("musicnet", ["amt"])]

    # sampling: each corpus's share follows its weight (its tasks split it); musicnet only after it joins
    def shares(start: int, n: int) -> Counter:
        sampler = dm.sampler_for(start)
        return Counter(dm.sources[split_stream(s)[0]].name for b in islice(iter(sampler), n) for s, _, _ in b)

    early, late = shares(0, MUSICNET_JOINS), shares(MUSICNET_JOINS * 2, 300)
    assert "musicnet" not in early
    assert abs(early["maestro"] / sum(early.values()) - 0.5) < 0.1  # 2 of 1+1+2
    assert abs(late["musicnet"] / sum(late.values()) - 0.2) < 0.08  # 1 of 1+1+2+1
    assert abs(late["olimpic"] / sum(late.values()) - 0.2) < 0.08

    # real batches: every row is the imported example of its corpus, task and key
    datasets = {name: TokenDataset(path, "train") for name, path in tokens.items()}
    dm.load_state_dict({"batches": MUSICNET_JOINS * 2})
    loader = dm.train_dataloader()
    seen = Counter()
    for b, batch in zip(range(6), loader):
        batch.check(dm.vocab)
        for row, (stream, item, _) in enumerate(dm.sampler.batch(MUSICNET_JOINS * 2 + b)):
            c, task_id = split_stream(stream)
            name, task = dm.sources[c].name, get_task(task_id)
            rec = datasets[name][item]
            assert int(batch.task[row]) == task.id
            tgt = np.atleast_2d(rec[task.target])
            got = batch.tgt_tokens[row, 1: tgt.shape[1] + 1, : tgt.shape[0]].T
            assert torch.equal(got, torch.as_tensor(tgt))
            seen[name] += 1
    assert len(seen) >= 3


def test_two_training_steps_on_the_mix(imported, tmp_path):
    from musicmoe.config import load_config
    from musicmoe.training.run import train

    cfg = load_config(None, _overrides(imported, tmp_path, "trainer.max_steps=2", "trainer.checkpoint_every_n_steps=2"))
    run_dir = train(cfg)["run_dir"]
    saved = (Path(run_dir) / "config.yaml").read_text()
    assert "maestro" in saved and "musicnet" in saved  # the mix is part of the saved run config
    assert (Path(run_dir) / "checkpoints" / "last.ckpt").exists()


def test_incompatible_token_folders_are_refused(imported, tmp_path):
    """Folders tokenized with different codecs cannot be mixed: the error names both folders."""
    import json
    import shutil

    tokens = imported[0]
    odd = tmp_path / "maestro_other_codec"
    shutil.copytree(tokens["maestro"], odd)
    meta = json.loads((odd / "meta.json").read_text())
    meta["codecs"]["audio"]["content_hash"] = "0" * 64
    (odd / "meta.json").write_text(json.dumps(meta))
    dm = _module(imported, tmp_path, f"data.sources=[{{path: '{tokens['maestro']}'}}, {{path: '{odd}'}}]")
    with pytest.raises(ValueError, match="different audio codecs") as err:
        dm.prepare()
    assert str(odd) in str(err.value) and str(tokens["maestro"]) in str(err.value)
    # a corpus with none of the run's tasks is a config error naming it
    dm = _module(imported, tmp_path, "data.tasks.amt=0", f"data.sources=[{{path: '{tokens['olimpic']}'}}, "
                                                         f"{{path: '{tokens['maestro']}'}}]")
    with pytest.raises(ValueError, match="maestro.*no usable example"):
        dm.prepare()
