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


# ---------------------------------------------------------------------------------------- ctc_midi: onsets
@pytest.fixture(scope="module")
def chorale_melody():
    """The soprano of a real chorale (music21's bwv66.6) and the MIDI codec with its default settings."""
    from musicmoe.codecs.midi import MidiCodec
    from musicmoe.codecs.midi.music21_io import corpus_pretty_midi

    pm = corpus_pretty_midi("bach/bwv66.6")
    return pm, MidiCodec()


@pytest.mark.parametrize("start,end", [(0.0, 6.0), (4.1, 9.0)])
def test_note_on_labels_are_the_window_onsets_in_event_order(chorale_melody, start, end):
    from musicmoe.models.translator import midi_onset_layout, note_on_labels
    from musicmoe.models.vocab import VocabSpec

    pm, codec = chorale_melody
    ids = codec.encode(pm, start, end)
    layout = midi_onset_layout(VocabSpec.build(37, codec.vocab_size)["midi"], None)
    s, e = codec.seconds_to_steps(start), codec.seconds_to_steps(end)
    # onsets in [start, end) in the codec's order at one time step (program, then pitch); notes sounding at
    # `start` sit in the tie section and are not onsets
    expected = sorted((n.start, n.program, n.pitch) for n in codec.notes(pm) if s <= n.start < e)
    assert start == 0.0 or any(n.start < s < n.end for n in codec.notes(pm))  # the window has a tie section
    rows = torch.tensor([ids + [0] * 3, ids[:5] + [0] * (len(ids) - 2)])  # a second, cut row with padding
    labels, counts = note_on_labels(rows, torch.tensor([len(ids), 5]), layout)
    got = [int(i) - layout[0] for i in labels[0, : int(counts[0])]]
    assert got == [p for _, _, p in expected] and len(got) > 5
    cut = [n for n in codec.event_names(ids[:5]) if n.startswith("pitch")]
    assert int(counts[1]) <= len(cut)


def test_ctc_onsets_trains_on_note_on_labels_of_real_audio(chorale_melody):
    from musicmoe.data.features import FeatureSpec
    from musicmoe.data.synth import synthesize
    from musicmoe.models.batch import collate
    from musicmoe.models.translator import midi_onset_layout, note_on_labels
    from musicmoe.models.vocab import VocabSpec

    pm, codec = chorale_melody
    vocab = VocabSpec.build(37, codec.vocab_size, image_codebooks=2, image_codebook_size=16, audio_codebooks=2,
                            audio_codebook_size=16)
    spec = FeatureSpec(audio=True, mel_bins=48, mel_stack=2, mel_scale="log", mel_fmin=50.0, mel_fmax=6000.0)
    examples = []
    for k, (a, b) in enumerate([(0.0, 3.0), (3.0, 5.0)]):
        window = codec.to_pretty_midi(codec.decode_notes(codec.encode(pm, a, b), duration=b - a)[0])
        wave = synthesize(window, spec.sample_rate, tail=0.2)
        examples.append({"src_features": spec.audio_features(wave, spec.sample_rate), "src_modality": "audio",
                         "tgt": torch.tensor(codec.encode(pm, a, b)), "tgt_modality": "midi", "task": 0})
    cfg = ModelConfig(d_model=32, n_heads=4, enc_layers=1, dec_layers=1, d_ff=64, dropout=0.0, subdecoder_dim=16,
                      subdecoder_heads=2, max_src_len=256, max_tgt_len=256, audio_input="mel", mel_bins=48,
                      mel_stack=2, mel_stem="conv", mel_stem_channels=[4, 8], ctc_weight=1.0, ctc_midi="onsets",
                      ctc_upsample=1)
    torch.manual_seed(0)
    model = Translator(cfg, vocab)
    batch = collate(examples, vocab)
    model.eval()
    with torch.no_grad():
        out = model(batch)
        memory, mask = model.encode(batch.src_tokens, batch.src_mask, batch.src_modality, batch.tgt_modality,
                                    src_features=batch.src_features)
    layout = midi_onset_layout(vocab["midi"], {})
    midi = vocab["midi"]
    expected = []
    for k, ex in enumerate(examples):
        labels, n = note_on_labels(ex["tgt"][None], torch.tensor([len(ex["tgt"])]), layout)
        s = int(mask[k].sum())
        with torch.no_grad():
            logp = model.ctc_heads["midi"](memory[k, :s]).log_softmax(-1)
        loss = F.ctc_loss(logp[:, None], labels[:, : int(n)], [s], [int(n)], blank=midi.pad_id, reduction="sum")
        expected.append(loss / int(n))
    assert float(out.metrics["ctc_loss"]) == pytest.approx(float(torch.stack(expected).mean()), rel=1e-4)
    model.train()  # the conv stem learns from the CTC loss alone
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(40):
        opt.zero_grad()
        out = model(batch)
        first = float(out.metrics["ctc_loss"]) if first is None else first
        (out.loss - out.ce_loss).backward()
        opt.step()
    assert next(model.stems["audio"].net.parameters()).grad.abs().sum() > 0
    assert float(out.metrics["ctc_loss"]) < 0.5 * first


def test_ctc_onsets_refuses_a_midi_vocabulary_of_other_settings(mt):
    with pytest.raises(ValueError, match="ctc_midi=onsets.*event ids"):
        Translator(mt.config(ctc_weight=1.0, ctc_midi="onsets"), mt.VOCAB)
    with pytest.raises(ValueError, match="ctc_midi"):
        ModelConfig(ctc_midi="notes")
    with pytest.raises(ValueError, match="mel_stem"):
        ModelConfig(mel_stem="cnn")


# ---------------------------------------------------------------------------------------- CTC decoding
def _ctc_model(mt, steps: int):
    """A CTC model trained ``steps`` Adam steps on the pixel examples (image -> lmx and audio -> midi rows)."""
    model = Translator(mt.config(image_input="pixels", audio_input="mel", mel_bins=16, mel_stack=2,
                                 stem_channels=[4, 4, 4], max_src_len=256, ctc_weight=1.0, ctc_upsample=2), mt.VOCAB)
    examples = mt.pixel_examples()  # (random targets: drawn once here)
    batch = mt.collate(examples)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(steps):
        opt.zero_grad()
        model(batch).loss.backward()
        opt.step()
    return model.eval(), batch, examples


def _gen(model, batch, strategy, **kw):
    return model.generate(batch.src_tokens, batch.src_mask, batch.src_modality, batch.tgt_modality, max_len=32,
                          strategy=strategy, src_features=batch.src_features, src_rows=batch.src_rows, **kw)


def test_ctc_decoding_is_the_collapsed_best_path_and_learns_the_targets(mt):
    model, batch, examples = _ctc_model(mt, 0)
    with torch.no_grad():
        memory, mask = model.encode(batch.src_tokens, batch.src_mask, batch.src_modality, batch.tgt_modality,
                                    src_features=batch.src_features, src_rows=batch.src_rows)
    for k, (row, ex) in enumerate(zip(_gen(model, batch, "ctc"), examples)):
        m = model.vocab[ex["tgt_modality"]]
        with torch.no_grad():
            path = model.ctc_log_probs(memory[k: k + 1], m.name)[0, : int(mask[k].sum()) * 2].argmax(-1).tolist()
        expected, prev = [], None
        for t in path:  # merge repeats, then drop blanks (PAD) and other specials
            if t != prev and t < m.vocab_size:
                expected.append(t)
            prev = t
        assert row.tolist() == expected[:32]
    import jiwer

    def errors(m, b, exs) -> float:  # edit distance of the CTC outputs to the targets, per target token
        hyp = [" ".join(map(str, r.tolist())) or "-" for r in _gen(m, b, "ctc")]
        return jiwer.wer([" ".join(map(str, torch.as_tensor(e["tgt"]).tolist())) for e in exs], hyp)

    before = errors(model, batch, examples)
    trained, batch, examples = _ctc_model(mt, 300)
    print(f"CTC best-path error on the training rows: {before:.2f} untrained, {errors(trained, batch, examples):.2f}")
    assert errors(trained, batch, examples) < 0.25 < before


def test_rescore_keeps_the_hypothesis_with_the_better_joint_score(mt):
    from musicmoe.models.generation import _attention_log_probs, _ctc_log_likelihood

    model, batch, examples = _ctc_model(mt, 20)
    with torch.no_grad():
        memory, mask = model.encode(batch.src_tokens, batch.src_mask, batch.src_modality, batch.tgt_modality,
                                    src_features=batch.src_features, src_rows=batch.src_rows)
        lmx = [k for k, ex in enumerate(examples) if ex["tgt_modality"] == "lmx"]
        m = model.vocab["lmx"].index
        refs = [torch.as_tensor(examples[k]["tgt"]) for k in lmx]
        idx = torch.tensor(lmx)
        # the attention score of a reference is minus its teacher-forced cross-entropy (summed, EOS included)
        att = _attention_log_probs(model, memory[idx], mask[idx], m, refs, None)
        out = model(mt.collate([examples[k] for k in lmx]))
        assert float(att.sum()) == pytest.approx(-float(out.ce_loss) * sum(len(r) + 1 for r in refs), rel=1e-4)

        def ctc_ll(mem, msk, hyps):
            return _ctc_log_likelihood(model.ctc_log_probs(mem, "lmx"), msk, model.config.ctc_upsample,
                                       model.vocab["lmx"], hyps)

        ctc = ctc_ll(memory[idx], mask[idx], refs)
        assert torch.isfinite(ctc).all() and (ctc < 0).all()
        for w in (0.0, 1.0, 0.5):
            greedy, best = _gen(model, batch, "greedy"), _gen(model, batch, "ctc")
            chosen = _gen(model, batch, "rescore", ctc_weight=w)
            for k in lmx:
                cands = [greedy[k], best[k]]
                s = [(1 - w) * float(_attention_log_probs(model, memory[k: k + 1], mask[k: k + 1], m, [c], None))
                     + w * float(ctc_ll(memory[k: k + 1], mask[k: k + 1], [c]))
                     for c in cands]
                assert chosen[k].tolist() == cands[0 if s[0] >= s[1] else 1].tolist()
    plain = Translator(mt.config(), mt.VOCAB).eval()
    codes = mt.collate(mt.examples([("image", "lmx")]))
    with pytest.raises(ValueError, match="needs a CTC head for lmx; this model has: none"):
        _gen(plain, codes, "ctc")
    with pytest.raises(ValueError, match="ctc_weight"):
        _gen(model, batch, "rescore", ctc_weight=1.5)
