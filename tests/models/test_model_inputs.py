"""Continuous encoder inputs (pixel patches, log-mel frames) and 2-D grid positions in the translator."""

import torch

from musicmoe.data.features import image_patches
from musicmoe.models import Translator
from musicmoe.models.inputs import GridPositions, PixelStem


def test_pixel_stem_keeps_the_column_major_grid(mt):
    torch.manual_seed(0)
    stem = PixelStem([4, 4, 4], 8, 16).eval()
    img = mt.staff_image()
    patches, rows = image_patches(img, 16)
    feats = torch.from_numpy(patches / 255.0).float()[None]
    with torch.no_grad():
        base = stem(feats, [rows], [patches.shape[0]])[0]
    r, c = 1, 7
    changed = img.copy()
    changed[r * 16 + 4: r * 16 + 12, c * 16 + 4: c * 16 + 12] = 0  # ink in the middle of one grid cell
    p2, _ = image_patches(changed, 16)
    with torch.no_grad():
        out = stem(torch.from_numpy(p2 / 255.0).float()[None], [rows], [p2.shape[0]])[0]
    diff = (out - base).abs().sum(-1)
    assert float(diff[c * rows + r]) > 0 and abs(int(diff.argmax()) // rows - c) <= 1  # changes near (r, c)
    far = [t for t in range(len(diff)) if abs(t // rows - c) > 3]
    assert float(diff[far].max()) == 0.0  # receptive fields are local


def test_grid_positions_rows_and_columns():
    grid = GridPositions(8, 16, 4)
    emb = grid(torch.tensor([3, 0]), torch.arange(-1, 7))
    assert torch.all(emb[1] == 0) and torch.all(emb[0, 0] == 0)  # no grid / BOS: nothing added
    same_row = emb[0, 1 + 0] - grid.col.weight[0], emb[0, 1 + 3] - grid.col.weight[1]  # cells (0, 0) and (0, 1)
    assert torch.allclose(same_row[0], same_row[1])


def test_feature_rows_are_independent_of_their_batch(mt):
    model = Translator(mt.config(image_input="pixels", audio_input="mel", mel_bins=16, mel_stack=2,
                                 stem_channels=[4, 4, 4], max_src_len=256), mt.VOCAB).eval()
    examples = mt.pixel_examples()
    batch = mt.collate(examples)
    assert batch.src_features.shape[2] == 256 and batch.src_rows.tolist()[3] == 0
    with torch.no_grad():
        together = model(batch, return_logits=True).logits
        alone = [model(mt.collate([ex]), return_logits=True).logits for ex in examples]
    n_lmx = [ex["tgt"].shape[0] + 1 for ex in examples[:3]]
    lmx = together["lmx"]
    start = 0
    for k, n in enumerate(n_lmx):
        assert torch.allclose(lmx[start: start + n], alone[k]["lmx"], atol=1e-5)
        start += n
    assert torch.allclose(together["midi"], alone[3]["midi"], atol=1e-5)


def test_sources_change_the_output_and_generation_reads_features(mt):
    model = Translator(mt.config(image_input="pixels", stem_channels=[4, 4, 4], max_src_len=256), mt.VOCAB).eval()
    examples = mt.pixel_examples()[:2]
    batch = mt.collate(examples)
    with torch.no_grad():
        base = model(batch).ce_loss
        swapped = dict(examples[0], src_features=examples[1]["src_features"], src_rows=examples[1]["src_rows"])
        other = model(mt.collate([swapped, examples[1]])).ce_loss
    assert not torch.isclose(base, other)
    args = (batch.src_tokens, batch.src_mask, batch.src_modality, batch.tgt_modality, 12)
    kw = dict(src_features=batch.src_features, src_rows=batch.src_rows)
    cached = model.generate(*args, **kw)
    full = model.generate(*args, use_cache=False, **kw)
    assert all(torch.equal(a, b) for a, b in zip(cached, full))


def test_image_targets_use_their_grid_height(mt):
    model = Translator(mt.config(), mt.VOCAB).eval()
    gen = torch.Generator().manual_seed(0)
    ex = {"src": torch.randint(0, 30, (6,), generator=gen), "src_modality": "lmx",
          "tgt": torch.randint(0, 19, (3, 12), generator=gen), "tgt_modality": "image", "tgt_rows": 3}
    with torch.no_grad():
        a = model(mt.collate([ex])).ce_loss
        b = model(mt.collate([dict(ex, tgt_rows=4)])).ce_loss
    assert not torch.isclose(a, b)
    batch = mt.collate([ex])
    args = (batch.src_tokens, batch.src_mask, batch.src_modality, batch.tgt_modality, 8)
    rows = torch.tensor([3])
    assert all(torch.equal(x, y) for x, y in zip(model.generate(*args, tgt_rows=rows),
                                                 model.generate(*args, tgt_rows=rows, use_cache=False)))
