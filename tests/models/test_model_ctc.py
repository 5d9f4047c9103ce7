"""Auxiliary CTC on the encoder (``model.ctc_weight``): its loss, its gradient path and what it leaves alone."""

import pytest
import torch
import torch.nn.functional as F

from musicmoe.models import Translator
from musicmoe.models.config import ModelConfig


def test_ctc_loss_is_the_per_token_ctc_of_each_row(mt):
    torch.manual_seed(0)
    model = Translator(mt.config(image_input="pixels", audio_input="mel", mel_bins=16, mel_stack=2,
                                 stem_channels=[4, 4, 4], max_src_len=256, ctc_weight=0.5, ctc_upsample=2),
                       mt.VOCAB).eval()
    plain = Translator(mt.config(image_input="pixels", audio_input="mel", mel_bins=16, mel_stack=2,
                                 stem_channels=[4, 4, 4], max_src_len=256), mt.VOCAB).eval()
    assert set(model.ctc_heads) == {"lmx", "midi"} and len(plain.ctc_heads) == 0
    examples = mt.pixel_examples()  # three image -> lmx rows and one audio -> midi row
    batch = mt.collate(examples)
    with torch.no_grad():
        out = model(batch)
        memory, mask = model.encode(batch.src_tokens, batch.src_mask, batch.src_modality, batch.tgt_modality,
                                    src_features=batch.src_features, src_rows=batch.src_rows)
    expected = []
    for k, ex in enumerate(examples):
        name = ex["tgt_modality"]
        spec = mt.VOCAB[name]
        s = int(mask[k].sum())
        with torch.no_grad():
            logp = model.ctc_heads[name](memory[k, :s]).view(s * 2, spec.table_size).log_softmax(-1)
            target = torch.as_tensor(ex["tgt"])
        loss = F.ctc_loss(logp[:, None], target[None], [s * 2], [len(target)], blank=spec.pad_id, reduction="sum")
        expected.append(loss / len(target))
    assert float(out.metrics["ctc_loss"]) == pytest.approx(float(torch.stack(expected).mean()), rel=1e-4)
    assert float(out.loss) == pytest.approx(float(out.ce_loss + 0.5 * out.metrics["ctc_loss"]), rel=1e-5)


def test_ctc_trains_the_encoder_and_leaves_code_targets_alone(mt):
    torch.manual_seed(0)
    model = Translator(mt.config(image_input="pixels", stem_channels=[4, 4, 4], max_src_len=256, ctc_weight=1.0),
                       mt.VOCAB)
    batch = mt.collate(mt.pixel_examples()[:3])
    out = model(batch)
    (out.loss - out.ce_loss).backward()  # the CTC part alone
    assert next(model.stems["image"].parameters()).grad.abs().sum() > 0  # the loss reaches the pixel stem
    assert model.ctc_heads["midi"].weight.grad is None or not model.ctc_heads["midi"].weight.grad.any()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(30):
        opt.zero_grad()
        out = model(batch)
        first = float(out.metrics["ctc_loss"]) if first is None else first
        out.loss.backward()
        opt.step()
    assert float(out.metrics["ctc_loss"]) < 0.5 * first
    codes = mt.examples([("lmx", "image")])  # a multi-codebook target: no CTC rows, the loss part is zero
    out = model(mt.collate(codes))
    assert float(out.metrics["ctc_loss"]) == 0.0
    with pytest.raises(ValueError, match="ctc_upsample"):
        ModelConfig(ctc_upsample=0)
    with pytest.raises(ValueError, match="ctc_weight"):
        ModelConfig(ctc_weight=-1.0)
