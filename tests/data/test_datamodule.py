"""Multi-task batch sampling: determinism, resume continuity, bucketing, curriculum; the data module on real
token shards (built once per session from the tiny corpus)."""

import sys
from itertools import islice
from pathlib import Path

import numpy as np
import pytest
import torch

from musicmoe import MODALITIES
from musicmoe.data.datamodule import MultiTaskBatchSampler, task_items
from musicmoe.data.tasks import get_task, task_weights


def _sampler(start=0, rank=0, bucket=8, weights=None, seed=3, world=1):
    rng = np.random.default_rng(0)
    items = {0: list(range(0, 50)), 1: list(range(50, 80))}
    lengths = {0: rng.integers(5, 200, 50).tolist(), 1: rng.integers(5, 200, 30).tolist()}
    w = weights or (lambda step: {0: 1.0, 1: 1.0})
    return MultiTaskBatchSampler(items, lengths, w, batch_size=4, bucket_batches=bucket, seed=seed, rank=rank,
                                 start=start, world=world), dict(zip(items[0] + items[1], lengths[0] + lengths[1]))


def test_batches_are_a_function_of_the_batch_number():
    a, _ = _sampler()
    first = list(islice(iter(a), 40))
    again = list(islice(iter(_sampler()[0]), 40))
    assert first == again
    resumed = list(islice(iter(_sampler(start=17)[0]), 23))
    assert resumed == first[17:]  # resuming continues exactly: nothing repeated, nothing skipped
    for batch in first:
        assert len(batch) == 4
        for task, item, draw in batch:
            assert (task == 0 and item < 50) or (task == 1 and 50 <= item < 80)
            assert 0 <= draw < 2**31


@pytest.mark.parametrize("world", [2, 3])
def test_ranks_share_no_example_in_a_global_batch_and_resume_exactly(world):
    ranks = [list(islice(iter(_sampler(rank=r, world=world)[0]), 30)) for r in range(world)]
    for b in range(30):
        items = [item for r in range(world) for _, item, _ in ranks[r][b]]
        assert len(items) == 4 * world and len(set(items)) == len(items), (b, items)  # 4 x world distinct
    # a rank's batches depend on (seed, batch, rank, world) only: resuming at batch 11 continues exactly
    assert list(islice(iter(_sampler(rank=world - 1, world=world, start=11)[0]), 19)) == ranks[world - 1][11:]
    # the ranks of one global batch hold neighbouring lengths (one bucket), not each its own draw
    single = list(islice(iter(_sampler(rank=0, world=1)[0]), 30))
    assert ranks[0] != single
    with pytest.raises(ValueError, match="rank 2 is not one of the 2 ranks"):
        _sampler(rank=2, world=2)


def test_a_batch_has_no_repeated_example_while_the_tasks_have_enough():
    s, _ = _sampler()
    for batch in islice(iter(s), 40):
        items = [item for _, item, _ in batch]
        assert len(set(items)) == len(items)


def test_bucketing_groups_similar_lengths():
    def spread(bucket):
        s, cost = _sampler(bucket=bucket)
        batches = list(islice(iter(s), 64))
        return np.mean([max(cost[i] for _, i, _ in b) - min(cost[i] for _, i, _ in b) for b in batches])

    assert spread(16) < 0.5 * spread(1)


def test_curriculum_changes_the_task_mix():
    weights = {"omr": 1.0, "amt": 1.0}
    cur = {"amt": [20, 40]}

    def w(step):
        return {get_task(n).id: v for n, v in task_weights(weights, cur, step).items()}

    s, _ = _sampler(weights=w, bucket=2)
    early = [t for b in islice(iter(s), 10) for t, _, _ in b]
    late = [t for b in islice(iter(_sampler(weights=w, bucket=2, start=200)[0]), 50) for t, _, _ in b]
    assert set(early) == {0}
    share = np.mean(np.array(late) == 1)
    assert 0.35 < share < 0.65


def test_task_items_respects_modalities_and_limits():
    lengths = [{"image": 10, "lmx": 5}, {"image": 500, "lmx": 5}, {"audio": 9, "midi": 3}, {"image": 3, "lmx": 0}]
    items, costs, skipped = task_items(lengths, [get_task("omr"), get_task("amt")], max_src=100, max_tgt=100)
    assert items[get_task("omr").id] == [0] and costs[get_task("omr").id] == [11]
    assert items[get_task("amt").id] == [2]
    assert skipped == {"omr": 2}


def test_sampler_rejects_empty_tasks():
    with pytest.raises(ValueError, match="no task has any training item"):
        MultiTaskBatchSampler({0: []}, {0: []}, lambda s: {0: 1.0}, batch_size=2)


# ------------------------------------------------------------------------------------- on real token shards
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for the shared training.fixtures module
from training.fixtures import tiny_overrides  # noqa: E402


def _module(tokens, codecs, tmp_path, *extra):
    from musicmoe.config import load_config
    from musicmoe.data.datamodule import TranslationDataModule

    cfg = load_config(None, tiny_overrides(tokens, codecs, tmp_path) + ["model.max_src_len=1280",
                                                                      "model.max_tgt_len=1280", *extra])
    return TranslationDataModule(cfg)


def test_datamodule_batches_real_tokens(tokens_and_codecs, tmp_path):
    from musicmoe.data.tokens import TokenDataset
    from musicmoe.models.batch import Batch

    tokens, codecs = tokens_and_codecs
    dm = _module(tokens, codecs, tmp_path, "data.tasks.amt=1.0", "data.batch_size=3")
    info = dm.prepare()
    assert info["tasks"] == ["omr", "lmx2midi", "amt"]
    assert info["codecs"]["image"]["path"] == str(codecs["image"].resolve())
    assert info["codecs"]["image"]["height_patches"] > 0 and info["codecs"]["audio"]["content_hash"]
    batches = list(islice(iter(dm.train_dataloader()), 6))
    ds = TokenDataset(tokens, "train")
    seen = set()
    for b in batches:
        assert isinstance(b, Batch) and len(b) == 3
        b.check(dm.vocab)
        for row in range(3):
            task = get_task(int(b.task[row]))
            seen.add(task.name)
            assert MODALITIES[int(b.src_modality[row])] == task.source
            assert MODALITIES[int(b.tgt_modality[row])] == task.target
    assert seen <= {"omr", "lmx2midi", "amt"} and len(seen) >= 2
    # the first batch's rows are real examples: their target ids match the shards
    first = dm.sampler.batch(0)
    t, item, _ = first[0]
    task = get_task(t)
    tgt, src = ds[item][task.target], ds[item][task.source]
    n = tgt.shape[-1]
    assert torch.equal(batches[0].tgt_tokens[0, 1: n + 1, 0], torch.as_tensor(tgt if tgt.ndim == 1 else tgt[0]))
    src2 = np.atleast_2d(src)  # (Q, S): the source fills the first S positions, then EOS
    got = batches[0].src_tokens[0, : src2.shape[1], : src2.shape[0]].T
    assert torch.equal(got, torch.as_tensor(src2))
    assert bool(batches[0].src_mask[0, : src2.shape[1] + 1].all())
    dm.load_state_dict({"batches": 4})
    resumed = next(iter(dm.train_dataloader()))
    assert torch.equal(resumed.src_tokens, batches[4].src_tokens)


def test_datamodule_reports_unusable_tasks(tokens_and_codecs, tmp_path):
    tokens, codecs = tokens_and_codecs
    with pytest.raises(ValueError, match="no usable training example for task.*amt"):
        _module(tokens, codecs, tmp_path, "data.tasks.amt=1.0", "model.max_src_len=64").prepare()
    with pytest.raises(ValueError, match="data.tasks names no task"):
        _module(tokens, codecs, tmp_path, "data.tasks.omr=0", "data.tasks.lmx2midi=0").prepare()


def test_online_image_degradation(tokens_and_codecs, tmp_path):
    tokens, codecs = tokens_and_codecs
    dm = _module(tokens, codecs, tmp_path, "data.image_source=online", "data.tasks.lmx2midi=0",
                 "data.degrade.p_blur=1.0", "data.degrade.p_jpeg=1.0")
    dm.prepare()
    loader = dm.train_dataloader()
    ds = loader.dataset
    assert ds.image_sources[0] is not None
    task, item, _ = dm.sampler.batch(0)[0]
    clean = ds.tokens[0][item]["image"]
    a = ds[(task, item, 11)]["src"]
    b = ds[(task, item, 11)]["src"]
    c = ds[(task, item, 12)]["src"]
    assert np.array_equal(a, b)  # the same draw seed gives the same degraded image
    assert a.shape[0] == clean.shape[0] == 4
    assert not np.array_equal(a, c) or not np.array_equal(a, clean)  # degradation changes the codes
    batch = next(iter(loader))
    batch.check(dm.vocab)


def test_online_pixel_augmentation_keeps_the_clean_grid(tokens_and_codecs, tmp_path):
    """A pixel-reading model with ``image_source: online`` sees a new degradation of the real crop at every draw, on
    the clean crop's patch grid (so lengths, bucketing and max_src_len hold), including crops that grew."""
    from musicmoe.data.features import image_patches

    tokens, codecs = tokens_and_codecs
    dm = _module(tokens, codecs, tmp_path, "model.image_input=pixels", "data.image_source=online",
                 "data.tasks.lmx2midi=0", "data.degrade.p_resize=1.0", "data.degrade.resize_range=[1.08,1.1]",
                 "data.degrade.p_blur=1.0")
    dm.prepare()
    loader = dm.train_dataloader()
    ds = loader.dataset
    source = ds.image_sources[0]
    assert source is not None and not source.codec_path  # pixels need no codec
    task, item, _ = dm.sampler.batch(0)[0]
    key = ds.tokens[0][item]["key"]
    clean, rows = image_patches(source._clean(key), 16)
    a, b, c = (ds[(task, item, seed)] for seed in (11, 11, 12))
    assert a["src_features"].shape == clean.shape and a["src_rows"] == rows  # grown by 8-10%, fit back to the grid
    assert np.array_equal(a["src_features"], b["src_features"])  # the same draw seed, the same augmentation
    assert not np.array_equal(a["src_features"], c["src_features"])
    assert not np.array_equal(a["src_features"], clean)
    assert int(a["src_features"].astype(int).sum()) > 0.5 * int(clean.astype(int).sum())  # the ink is still there
    batch = next(iter(loader))
    batch.check(dm.vocab)
    assert batch.src_features is not None


def test_online_pixels_from_tokens_without_image_codes(tiny_corpus, tokens_and_codecs, tmp_path):
    """A pixel reader's tokens need no image codes (the folk OMR experiment tokenizes without an image codec): the
    online source still degrades the corpus crops."""
    from musicmoe.config import load_config
    from musicmoe.data.tokenize import tokenize

    _, codecs = tokens_and_codecs
    symbolic = tmp_path / "tokens-sym"
    tokenize(tiny_corpus, symbolic, load_config(None, ["tokenize.workers=0"]), progress=False)
    dm = _module(symbolic, codecs, tmp_path, "model.image_input=pixels", "data.image_source=online",
                 "data.tasks.lmx2midi=0", "data.degrade.p_blur=1.0")
    dm.prepare()
    ds = dm.train_dataloader().dataset
    assert ds.image_sources[0] is not None
    task, item, _ = dm.sampler.batch(0)[0]
    a, c = ds[(task, item, 11)], ds[(task, item, 12)]
    assert not np.array_equal(a["src_features"], c["src_features"])
