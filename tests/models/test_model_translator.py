import pytest
import torch

from musicmoe.models import MODALITIES, Translator, apply_delay, collate, param_groups, revert_delay

MODES = ["subdecoder", "delay"]


def predicted_positions(batch, mode, vocab):
    """Decoder positions scored per target modality (what forward's logits cover)."""
    out = {}
    for row in range(len(batch)):
        spec = vocab[int(batch.tgt_modality[row])]
        n = int(batch.tgt_mask[row].sum()) - 1
        if mode == "delay" and spec.multi_codebook:
            n += spec.codebooks - 1
        out[spec.name] = out.get(spec.name, 0) + n
    return out


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("pos", ["rotary", "learned"])
def test_forward_shapes_every_modality_pair(mode, pos, mt):
    batch = collate(mt.examples(mt.ALL), mt.VOCAB)
    model = Translator(mt.config(codebook_mode=mode, pos_encoding=pos), mt.VOCAB)
    out = model(batch, return_logits=True)
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    assert sorted(out.loss_per_task) == list(range(len(mt.ALL)))
    assert sorted(out.loss_per_modality) == sorted(MODALITIES)
    expected = predicted_positions(batch, mode, mt.VOCAB)
    for name, logits in out.logits.items():
        spec = mt.VOCAB[name]
        assert logits.shape == (expected[name], spec.codebooks, spec.table_size)
    # the batch-level CE is the token-weighted mean of the per-task CEs
    n_pred = batch.tgt_mask.sum(1) - 1
    weighted = sum(out.loss_per_task[int(t)] * n_pred[i] for i, t in enumerate(batch.task)) / n_pred.sum()
    torch.testing.assert_close(weighted, out.ce_loss)
    out.loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, f"parameters without a finite gradient: {missing}"


@pytest.mark.parametrize("routing", [dict(), dict(experts_per_modality=2, top_k=1)])
def test_every_parameter_gets_a_gradient_when_modalities_are_missing(routing, mt):
    """A batch with lmx targets only still reaches every parameter (DDP without find_unused_parameters)."""
    model = Translator(mt.config(**routing), mt.VOCAB)
    batch = collate(mt.examples([("image", "lmx"), ("midi", "lmx")]), mt.VOCAB)
    model(batch).loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing
    assert model.heads["audio"].head_weight.grad.abs().sum() == 0


@pytest.mark.parametrize("mode", MODES)
def test_rows_are_independent_of_batch_mates_and_padding(mode, mt):
    """Each task's loss in a mixed, padded batch equals its loss alone: masks, routing and delays are per row."""
    model = Translator(mt.config(codebook_mode=mode, experts_per_modality=2, top_k=1), mt.VOCAB).eval()
    examples = mt.examples(mt.MIXED, seed=3)
    mixed = model(collate(examples, mt.VOCAB, pad_to_multiple=16))
    for i, ex in enumerate(examples):
        alone = model(collate([ex], mt.VOCAB))
        torch.testing.assert_close(mixed.loss_per_task[i], alone.loss_per_task[i], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("mode", MODES)
def test_overfits_a_mixed_task_batch_and_decodes_it(mode, mt):
    examples = mt.examples(mt.MIXED, seed=1, tgt_len=(2, 5))
    batch = collate(examples, mt.VOCAB)
    model = Translator(mt.config(codebook_mode=mode, d_model=64, d_ff=128, subdecoder_dim=32), mt.VOCAB)
    opt = torch.optim.AdamW(param_groups(model, 0.01), lr=3e-3, foreach=True)
    losses = []
    for _ in range(100):
        out = model(batch)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
    assert losses[-1] < 0.1 * losses[0], (losses[0], losses[-1])
    seqs = model.generate(batch.src_tokens, batch.src_mask, batch.src_modality, batch.tgt_modality, max_len=10)
    for ex, seq in zip(examples, seqs):
        assert torch.equal(seq, torch.as_tensor(ex["tgt"])), (ex["key"], seq, ex["tgt"])


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("pos, routing", [("rotary", "hard"), ("learned", "top2"), ("rotary", "dense")])
def test_kv_cache_greedy_matches_full_redecoding(mode, pos, routing, mt):
    extra = {"hard": {}, "top2": dict(experts_per_modality=3, top_k=2),
             "dense": dict(shared_across_modalities=True)}[routing]
    model = Translator(mt.config(codebook_mode=mode, pos_encoding=pos, init_std=0.1, **extra), mt.VOCAB)
    batch = collate(mt.examples(mt.ALL, seed=2), mt.VOCAB)
    args = (batch.src_tokens, batch.src_mask, batch.src_modality, batch.tgt_modality)
    for min_len in (0, 9):
        cached = model.generate(*args, max_len=9, min_len=min_len)
        full = model.generate(*args, max_len=9, min_len=min_len, use_cache=False)
        for row, (a, b) in enumerate(zip(cached, full)):
            assert torch.equal(a, b), (row, a, b)
    assert {tuple(s.shape) for s in cached} == {(9,), (3, 9), (4, 9)}  # min_len=9: every row runs to max_len


@pytest.mark.parametrize("mode", MODES)
def test_beam_of_one_and_tiny_nucleus_equal_greedy(mode, mt):
    model = Translator(mt.config(codebook_mode=mode, init_std=0.1), mt.VOCAB)
    batch = collate(mt.examples(mt.ALL, seed=4), mt.VOCAB)
    args = (batch.src_tokens, batch.src_mask, batch.src_modality, batch.tgt_modality)
    greedy = model.generate(*args, max_len=7)
    beam1 = model.generate(*args, max_len=7, strategy="beam", beam_size=1)
    nucleus = model.generate(*args, max_len=7, strategy="top_p", top_p=1e-9)
    for g, b, n in zip(greedy, beam1, nucleus):
        assert torch.equal(g, b) and torch.equal(g, n)


@pytest.mark.parametrize("mode", MODES)
def test_generate_odd_inputs(mode, mt):
    model = Translator(mt.config(codebook_mode=mode), mt.VOCAB)
    batch = collate(mt.examples(mt.ALL[:8], seed=5), mt.VOCAB)
    mask = batch.src_mask.clone()
    mask[::2] = False  # every other source row fully masked (empty source)
    args = (batch.src_tokens, mask, batch.src_modality, batch.tgt_modality)

    def check(seqs, max_len, b=8):
        assert len(seqs) == b
        for seq, m in zip(seqs, batch.tgt_modality.tolist()):
            spec = mt.VOCAB[m]
            assert seq.dtype == torch.long and seq.shape[-1] <= max_len
            assert seq.shape[:-1] == ((spec.codebooks,) if spec.multi_codebook else ())
            assert ((seq >= 0) & ((seq < spec.vocab_size) | (seq == spec.sep_id))).all()

    check(model.generate(*args, max_len=1), 1)
    check(model.generate(*args, max_len=0), 0)
    check(model.generate(*args, max_len=5, strategy="beam", beam_size=5), 5)
    check(model.generate(*args, max_len=1, strategy="beam", beam_size=3, use_cache=False), 1)
    check(model.generate(*args, max_len=4, min_len=10), 4)
    g1, g2 = (torch.Generator().manual_seed(7) for _ in range(2))
    s1 = model.generate(*args, max_len=6, strategy="top_p", top_p=0.95, temperature=1.5, generator=g1)
    s2 = model.generate(*args, max_len=6, strategy="top_p", top_p=0.95, temperature=1.5, generator=g2)
    check(s1, 6)
    assert all(torch.equal(a, b) for a, b in zip(s1, s2))
    # no source positions at all, one modality for every row given by name
    empty = torch.zeros(2, 0, mt.VOCAB.max_codebooks, dtype=torch.long)
    out = model.generate(empty, torch.zeros(2, 0, dtype=torch.bool), "lmx", "audio", max_len=3)
    assert [tuple(s.shape[:1]) for s in out] == [(4,), (4,)]
    assert model.generate(empty[:0], torch.zeros(0, 0, dtype=torch.bool), "lmx", "audio", max_len=3) == []
    assert model.training  # generate restores the mode
    with pytest.raises(ValueError, match="strategy"):
        model.generate(*args, max_len=3, strategy="sample")
    with pytest.raises(ValueError, match="tgt_modality"):
        model.generate(*args[:3], [1, 2], max_len=3)
    bad = batch.src_tokens.clone()
    bad[1, 0, 0] = mt.VOCAB["image"].table_size
    with pytest.raises(ValueError, match=r"src_tokens: row 1 \(image\)"):
        model.generate(bad, *args[1:], max_len=3)


def test_learned_positions_reject_too_long_sequences(mt):
    model = Translator(mt.config(pos_encoding="learned", max_src_len=8, max_tgt_len=8), mt.VOCAB)
    batch = collate(mt.examples([("lmx", "midi")], src_len=(9, 9)), mt.VOCAB)
    with pytest.raises(ValueError, match="lmx sequence of 10 positions exceeds"):
        model(batch)
    ok = collate(mt.examples([("lmx", "midi")], src_len=(3, 3)), mt.VOCAB)
    with pytest.raises(ValueError, match="midi sequence of 21 positions"):
        model.generate(ok.src_tokens, ok.src_mask, ok.src_modality, ok.tgt_modality, max_len=20)


@pytest.mark.parametrize("mode", MODES)
def test_bf16_autocast_forward_backward_and_generate(mode, mt):
    model = Translator(mt.config(codebook_mode=mode, experts_per_modality=2, top_k=1), mt.VOCAB)
    batch = collate(mt.examples(mt.MIXED), mt.VOCAB)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(batch)
        seqs = model.generate(batch.src_tokens, batch.src_mask, batch.src_modality, batch.tgt_modality, max_len=4)
    assert torch.isfinite(out.loss) and out.loss.dtype == torch.float32
    fp32 = model(batch).loss
    assert abs(out.loss.item() - fp32.item()) < 0.05 * fp32.item()
    out.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert len(seqs) == len(mt.MIXED)


def test_delay_pattern_round_trip(mt):
    frames = torch.arange(2 * 5 * 3).view(2, 5, 3)
    delayed = apply_delay(frames, bos=-1, pad=-2)
    assert delayed.shape == (2, 7, 3)
    assert delayed[0, :, 2].tolist() == [-1, -1, 2, 5, 8, 11, 14]
    assert delayed[0, :, 0].tolist() == [0, 3, 6, 9, 12, -2, -2]
    assert torch.equal(revert_delay(delayed, 5), frames)
    per_row = apply_delay(frames, bos=torch.tensor([-1, -3]), pad=torch.tensor([-2, -4]))
    assert per_row[1, 0, 1] == -3 and per_row[1, -1, 0] == -4


def test_tied_embeddings_share_the_input_tables(mt):
    model = Translator(mt.config(tie_embeddings=True, codebook_mode="delay"), mt.VOCAB)
    assert all(getattr(h, "weight", None) is None for h in model.heads.values())
    batch = collate(mt.examples(mt.MIXED), mt.VOCAB)
    model(batch).loss.backward()
    assert model.embed.embedding.weight.grad is not None


def test_init_codebook_embeddings_keeps_codebook_geometry(mt):
    model = Translator(mt.config(), mt.VOCAB)
    spec = mt.VOCAB["audio"]
    codebooks = torch.randn(spec.codebooks, spec.vocab_size, 8)
    before_specials = model.embed.table(3, 1)[spec.vocab_size:].clone()
    model.init_codebook_embeddings("audio", codebooks)
    table = model.embed.table(3, 1)
    assert torch.equal(table[spec.vocab_size:], before_specials)  # specials untouched
    dist_codec = torch.cdist(codebooks[1], codebooks[1])
    dist_model = torch.cdist(table[: spec.vocab_size], table[: spec.vocab_size])
    corr = torch.corrcoef(torch.stack([dist_codec.flatten(), dist_model.flatten()]))[0, 1]
    assert corr > 0.8  # a random projection to d_model keeps the distances up to a scale
    assert abs(table[: spec.vocab_size].std().item() - model.config.init_std) < 1e-3
    with pytest.raises(ValueError, match=r"audio needs \(4, 23, d\)"):
        model.init_codebook_embeddings("audio", codebooks[:2])


def test_hparams_rebuild_same_architecture(mt):
    model = Translator(mt.config(top_k=1, experts_per_modality=2), mt.VOCAB)
    clone = Translator.from_hparams(model.hparams())
    clone.load_state_dict(model.state_dict())
    batch = collate(mt.examples(mt.MIXED), mt.VOCAB)
    model.eval(), clone.eval()
    torch.testing.assert_close(model(batch).loss, clone(batch).loss)
