"""Time-aligned cross-attention (``model.cross_time``) on a real chorale: query times follow the MIDI shifts, cached
decoding equals full re-decoding, rows that are not audio -> MIDI are untouched, and the alignment is relative."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from musicmoe.models import Translator
from musicmoe.models.batch import collate
from musicmoe.models.config import ModelConfig
from musicmoe.models.vocab import VocabSpec


@pytest.fixture(scope="module")
def chorale():
    from musicmoe.codecs.midi import MidiCodec
    from musicmoe.codecs.midi.music21_io import corpus_pretty_midi

    return corpus_pretty_midi("bach/bwv66.6"), MidiCodec()


def _vocab(codec) -> VocabSpec:
    return VocabSpec.build(37, codec.vocab_size, image_codebooks=2, image_codebook_size=16, audio_codebooks=2,
                           audio_codebook_size=16)


def _config(**over) -> ModelConfig:
    values = dict(d_model=32, n_heads=4, enc_layers=1, dec_layers=2, d_ff=64, dropout=0.0, subdecoder_dim=16,
                  subdecoder_heads=2, max_src_len=256, max_tgt_len=256, audio_input="mel", mel_bins=16,
                  mel_stack=2, init_std=0.1, cross_time=True)
    values.update(over)
    return ModelConfig(**values)


def _amt_examples(pm, codec, windows, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for a, b in windows:
        ids = codec.encode(pm, a, b)
        frames = int((b - a) / 0.04) + 1
        out.append({"src_features": rng.normal(size=(frames, 32)).astype(np.float16), "src_modality": "audio",
                    "tgt": torch.tensor(ids), "tgt_modality": "midi", "task": 0})
    return out


def test_query_times_are_the_onset_times_of_the_decoded_notes(chorale):
    pm, codec = chorale
    model = Translator(_config(), _vocab(codec))
    ids = codec.encode(pm, 0.0, 5.0)
    times = model._query_times(torch.tensor(ids)[None, :, None], torch.tensor([True]), None)[0]
    names = codec.event_names(ids)
    onsets = sorted({n.start for n in codec.notes(pm) if n.start < 500})
    velocity_on = False
    seen = []
    for name, t in zip(names, times.tolist()):
        if name.startswith("velocity"):
            velocity_on = name != "velocity:0"
        elif name.startswith("pitch") and velocity_on:
            seen.append(t)
    assert sorted(set(seen)) == [float(s) for s in onsets] and len(onsets) > 5
    # keys: encoder position i of a 40 ms mel position sits at its two frames' centre, in 10 ms steps
    ct = model.cross_times(torch.tensor([3, 0]), torch.tensor([2, 2]), 5)  # audio -> midi, image -> midi
    assert ct.rows.tolist() == [True, False]
    assert ct.keys[0].tolist() == pytest.approx([1.0, 5.0, 9.0, 13.0, 17.0]) and not ct.keys[1].any()


def test_cached_decoding_equals_full_redecoding_and_other_rows_are_unchanged(chorale):
    pm, codec = chorale
    vocab = _vocab(codec)
    torch.manual_seed(0)
    model = Translator(_config(), vocab).eval()
    plain = Translator(_config(cross_time=False), vocab).eval()
    plain.load_state_dict(model.state_dict())
    examples = _amt_examples(pm, codec, [(0.0, 3.0), (2.0, 4.4)])
    examples.append({"src": torch.randint(0, 37, (7,)), "src_modality": "lmx", "tgt": torch.tensor(
        codec.encode(pm, 0.0, 1.0)), "tgt_modality": "midi", "task": 1})
    batch = collate(examples, vocab)
    args = (batch.src_tokens, batch.src_mask, batch.src_modality, batch.tgt_modality)
    kw = dict(max_len=40, src_features=batch.src_features)
    cached = model.generate(*args, **kw)
    full = model.generate(*args, use_cache=False, **kw)
    beam = model.generate(*args, strategy="beam", beam_size=2, **kw)
    for a, b in zip(cached, full):
        assert torch.equal(a, b)
    assert len(beam) == 3
    with torch.no_grad():
        aligned, unaligned = model(batch, return_logits=True), plain(batch, return_logits=True)
    n_amt = int(batch.tgt_mask[:2].sum() - 2)  # predicted positions of the two audio rows (rows come first)
    a, u = aligned.logits["midi"], unaligned.logits["midi"]
    assert not torch.allclose(a[:n_amt], u[:n_amt], atol=1e-4)  # the audio rows attend by time
    torch.testing.assert_close(a[n_amt:], u[n_amt:])  # the LMX -> MIDI row is exactly the plain model's


def test_alignment_is_relative_in_time(chorale):
    """Shifting both the decoder's time and the keys' times by the same amount changes no attention score."""
    pm, codec = chorale
    torch.manual_seed(0)
    model = Translator(_config(), _vocab(codec)).eval()
    attn = model.decoder[0].cross_attn
    x, memory = torch.randn(1, 6, 32), torch.randn(1, 9, 32)
    q_t = torch.tensor([[0.0, 3.0, 3.0, 10.0, 12.0, 30.0]])
    k_t = torch.arange(9.0)[None] * 4 + 1
    q = attn._heads(attn.q_proj(x), 1)[0]
    k, _ = attn.project_kv(memory, model.time_rope(k_t))
    k2, _ = attn.project_kv(memory, model.time_rope(k_t + 250.0))
    from musicmoe.models.attention import apply_rotary

    s1 = apply_rotary(q, model.time_rope(q_t)) @ k.transpose(-1, -2)
    s2 = apply_rotary(q, model.time_rope(q_t + 250.0)) @ k2.transpose(-1, -2)
    torch.testing.assert_close(s1, s2, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(s1, q @ k.transpose(-1, -2), atol=1e-3)
