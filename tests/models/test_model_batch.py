import numpy as np
import pytest
import torch

from musicmoe.models import MODALITIES, Batch, TranslationExample, collate


def test_collate_layout_specials_and_padding(mt):
    v = mt.VOCAB
    img = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9]])  # (Q=3, T=3)
    batch = collate([
        TranslationExample(src=img, src_modality="image", tgt=[5, 6], tgt_modality="lmx", task=3),
        {"src": [1, 2, 3, 4, 5], "src_modality": "midi", "tgt": torch.zeros(4, 1, dtype=torch.long),
         "tgt_modality": "audio"},
    ], v)
    assert batch.src_tokens.shape == (2, 6, 4) and batch.tgt_tokens.shape == (2, 4, 4)
    assert batch.src_modality.tolist() == [0, 2] and batch.tgt_modality.tolist() == [1, 3]
    assert batch.task.tolist() == [3, 0]
    # image source: codes transposed to (T, Q), then EOS on every codebook, then PAD; unused 4th column PAD
    im = v["image"]
    assert batch.src_tokens[0, :3, :3].tolist() == img.T.tolist()
    assert batch.src_tokens[0, 3, :3].tolist() == [im.eos_id] * 3
    assert (batch.src_tokens[0, 4:] == im.pad_id).all() and (batch.src_tokens[0, :, 3] == im.pad_id).all()
    assert batch.src_mask[0].tolist() == [True] * 4 + [False] * 2
    # lmx target: BOS, content, EOS, PAD in column 0; other columns PAD
    lmx = v["lmx"]
    assert batch.tgt_tokens[0, :, 0].tolist() == [lmx.bos_id, 5, 6, lmx.eos_id]
    assert (batch.tgt_tokens[0, :, 1:] == lmx.pad_id).all()
    au = v["audio"]
    assert batch.tgt_tokens[1, :, :].tolist() == [[au.bos_id] * 4, [0] * 4, [au.eos_id] * 4, [au.pad_id] * 4]
    assert batch.tgt_mask.tolist() == [[True] * 4, [True, True, True, False]]
    assert batch.num_target_tokens == 3 + 2
    batch.check(v)


def test_collate_truncation_and_bucketing(mt):
    v = mt.VOCAB
    ex = {"src": list(range(10)), "src_modality": "lmx", "tgt": list(range(10)), "tgt_modality": "midi"}
    b = collate([ex], v, max_src_len=4, max_tgt_len=5, pad_to_multiple=8)
    assert b.src_tokens.shape[1] == 8 and b.tgt_tokens.shape[1] == 8
    assert b.src_tokens[0, :4, 0].tolist() == [0, 1, 2, v["lmx"].eos_id]
    # a cut target keeps BOS, loses EOS
    assert b.tgt_tokens[0, :5, 0].tolist() == [v["midi"].bos_id, 0, 1, 2, 3]
    assert b.tgt_mask[0].sum() == 5


@pytest.mark.parametrize("bad, match", [
    ({"src": [[1, 2]], "src_modality": "image", "tgt": [1], "tgt_modality": "lmx"}, r"image needs shape \(3, T\)"),
    ({"src": [1, 99], "src_modality": "lmx", "tgt": [1], "tgt_modality": "lmx"}, "found 99"),
    ({"src": [1], "src_modality": "score", "tgt": [1], "tgt_modality": "lmx"}, "unknown modality 'score'"),
    ({"src": [1.5], "src_modality": "lmx", "tgt": [1], "tgt_modality": "lmx"}, "integer ids"),
    ({"src": [1], "src_modality": "lmx", "tgt_modality": "lmx"}, "missing 'tgt'"),
])
def test_collate_rejects_bad_examples(bad, match, mt):
    with pytest.raises(ValueError, match=match):
        collate([dict(bad, key="piece-7")], mt.VOCAB)


def test_collate_error_names_the_example(mt):
    with pytest.raises(ValueError, match=r"example 0 \(piece-7\)"):
        collate([{"src": [1, 99], "src_modality": "lmx", "tgt": [1], "tgt_modality": "lmx", "key": "piece-7"}],
                mt.VOCAB)


def test_batch_check_and_to(mt):
    b = collate(mt.examples([("image", "lmx"), ("audio", "midi")]), mt.VOCAB)
    b.check(mt.VOCAB)
    moved = b.to("cpu")
    assert isinstance(moved, Batch) and torch.equal(moved.src_tokens, b.src_tokens)
    bad = b.to("cpu")
    bad.tgt_tokens = bad.tgt_tokens.clone()
    bad.tgt_tokens[0, 1, 2] = 3  # a content id in an unused column of a single-stream (lmx) row
    with pytest.raises(ValueError, match=r"row 0 \(lmx\)"):
        bad.check(mt.VOCAB)
    bad.tgt_tokens[0, 1, 2] = mt.VOCAB["lmx"].pad_id
    bad.src_tokens = bad.src_tokens.clone()
    bad.src_tokens[1, 0, 0] = mt.VOCAB["audio"].table_size
    with pytest.raises(ValueError, match=r"row 1 \(audio\)"):
        bad.check(mt.VOCAB)
    assert MODALITIES == ("image", "lmx", "midi", "audio")
