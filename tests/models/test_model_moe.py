import math

import pytest
import torch
from torch import nn

from musicmoe.models import MODALITIES, GroupedMoE, Translator, active_params, count_params, param_groups


def decoder_tokens_per_modality(batch):
    """Decoder input positions routed per target modality (real targets minus the final EOS)."""
    n = batch.tgt_mask.sum(1) - 1
    return torch.zeros(len(MODALITIES), dtype=torch.long).index_add_(0, batch.tgt_modality, n)


@pytest.mark.parametrize("experts, top_k", [(1, 0), (3, 1), (3, 2)])
def test_tokens_only_reach_their_target_modality_group(experts, top_k, mt):
    model = Translator(mt.config(experts_per_modality=experts, top_k=top_k, dec_layers=3), mt.VOCAB)
    batch = mt.collate(mt.examples(mt.ALL))
    out = model(batch)
    assert len(out.moe_stats) == 3
    per_mod = decoder_tokens_per_modality(batch)
    for stats in out.moe_stats:
        assert stats.counts.shape == (len(MODALITIES), len(MODALITIES) * experts)
        for m in range(len(MODALITIES)):
            own = slice(m * experts, (m + 1) * experts)
            assert stats.counts[m, own].sum() == per_mod[m] * max(top_k, 1)
            others = torch.cat([stats.counts[m, : own.start], stats.counts[m, own.stop:]])
            assert (others == 0).all(), f"{MODALITIES[m]} tokens reached another modality's experts"


def test_shared_group_routes_everything_to_one_group(mt):
    model = Translator(mt.config(shared_across_modalities=True, experts_per_modality=2, top_k=1), mt.VOCAB)
    out = model(mt.collate(mt.examples(mt.MIXED)))
    assert all(s.counts.shape == (len(MODALITIES), 2) for s in out.moe_stats)
    assert {k for k in out.metrics if k.startswith("moe/load/")} == {"moe/load/shared/0", "moe/load/shared/1"}


def test_topk_losses_finite_and_loads_sum_to_one(mt):
    model = Translator(mt.config(experts_per_modality=4, top_k=2), mt.VOCAB)
    out = model(mt.collate(mt.examples(mt.ALL)))
    aux, z = out.metrics["moe/aux_loss"], out.metrics["moe/z_loss"]
    assert torch.isfinite(aux) and torch.isfinite(z) and aux > 0 and z > 0
    # the total loss carries the weighted router losses
    expected = out.ce_loss + model.config.aux_loss_weight * aux + model.config.z_loss_weight * z
    torch.testing.assert_close(out.loss, expected)
    for m in MODALITIES:
        total = sum(out.metrics[f"moe/load/{m}/{e}"] for e in range(4))
        torch.testing.assert_close(total, torch.tensor(1.0))
    for stats in out.moe_stats:
        torch.testing.assert_close(stats.group_load().sum(1), torch.ones(len(MODALITIES)))
    out.loss.backward()
    router = model.decoder[0].ffn.router
    assert router.weight.grad is not None and router.weight.grad.abs().sum() > 0


def test_balanced_router_gives_aux_loss_one():
    moe = GroupedMoE(8, 16, n_groups=1, experts_per_group=4, top_k=1)
    nn.init.zeros_(moe.router.weight)  # uniform probabilities; argmax ties pick expert 0
    x = torch.randn(12, 8)
    _, stats = moe(x, torch.zeros(12, dtype=torch.long), torch.zeros(12, dtype=torch.long))
    # all tokens on one expert: f = (1, 0, 0, 0), P = 1/4 each -> E * sum f P = 1
    torch.testing.assert_close(stats.aux_loss, torch.tensor(1.0))
    torch.testing.assert_close(stats.z_loss, torch.tensor(math.log(4) ** 2))


def test_capacity_factor_drops_and_counts_tokens(mt):
    model = Translator(mt.config(experts_per_modality=2, top_k=1, capacity_factor=0.3), mt.VOCAB)
    batch = mt.collate(mt.examples(mt.ALL))
    out = model(batch)  # training mode: capacity applies
    dropped = 0
    per_mod = decoder_tokens_per_modality(batch)
    for stats in out.moe_stats:
        per_expert = stats.counts.sum(0)
        cap = torch.tensor([math.ceil(0.3 * int(per_mod[e // 2]) / 2) for e in range(per_expert.numel())])
        expect = int((per_expert - cap).clamp_min(0).sum())
        assert int(stats.dropped) == expect
        dropped += expect
    assert dropped > 0 and int(out.metrics["moe/dropped"]) == dropped
    assert 0 < out.metrics["moe/dropped_frac"] < 1
    model.eval()  # eval_capacity_factor=None: nothing dropped, so decoding stays exact
    assert int(model(batch).metrics["moe/dropped"]) == 0


def test_grouped_dispatch_matches_per_token_reference():
    torch.manual_seed(1)
    moe = GroupedMoE(8, 16, n_groups=3, experts_per_group=3, top_k=2, capacity_factor=0.7).train()
    x = torch.randn(4, 5, 8)
    group = torch.randint(0, 3, (4, 5))
    mask = torch.rand(4, 5) > 0.2
    y, stats = moe(x, group, group, mask)
    # reference: per token, per chosen expert, respecting the same capacity order (rank, then token order)
    xs, gs = x.reshape(-1, 8), group.reshape(-1)
    real = mask.reshape(-1).nonzero().squeeze(1).tolist()
    with torch.no_grad():
        logits = moe.router(xs).view(-1, 3, 3)
    choices = {}
    for t in real:
        probs = logits[t, gs[t]].softmax(-1)
        p, i = probs.topk(2)
        choices[t] = [(int(gs[t]) * 3 + int(e), float(w)) for e, w in zip(i, p / p.sum())]
    n_group = {g: sum(1 for t in real if int(gs[t]) == g) for g in range(3)}
    used = {e: 0 for e in range(9)}
    expected = torch.zeros_like(xs)
    for rank in range(2):
        for t in real:
            e, w = choices[t][rank]
            if used[e] < math.ceil(0.7 * n_group[e // 3] * 2 / 3):
                used[e] += 1
                with torch.no_grad():
                    expected[t] += w * moe._expert(moe._weights()[e], xs[t: t + 1])[0]
    torch.testing.assert_close(y.reshape(-1, 8), expected, rtol=1e-5, atol=1e-6)
    assert int(stats.assignments) == 2 * len(real)
    assert int(stats.dropped) == 2 * len(real) - sum(used.values())
    masked = (~mask).reshape(-1)
    assert (y.reshape(-1, 8)[masked] == 0).all()


def test_dense_and_modality_moe_have_equal_active_parameters(mt):
    dense = Translator(mt.config(shared_across_modalities=True), mt.VOCAB)
    moe = Translator(mt.config(shared_across_modalities=False), mt.VOCAB)
    assert active_params(dense) == active_params(moe) == count_params(dense)
    ffn = 2 * 32 * 64 + 64 + 32  # one expert of d_model 32, d_ff 64
    assert count_params(moe) - count_params(dense) == 2 * 3 * ffn  # 2 decoder layers x 3 extra groups
    # top-2 of 4 half-width experts: same active FFN width, plus one group's router (4 x d_model per layer)
    topk = Translator(mt.config(experts_per_modality=4, top_k=2, expert_d_ff=32), mt.VOCAB)
    assert active_params(topk) == active_params(dense) + 2 * 4 * 32 + 2 * 32
    # MoE in every other layer: layer 0 dense, layer 1 grouped
    half = Translator(mt.config(moe_every=2, experts_per_modality=2, top_k=1), mt.VOCAB)
    assert [layer.is_moe for layer in half.decoder] == [False, True]
    assert len(half(mt.collate(mt.examples(mt.MIXED))).moe_stats) == 1


def test_param_groups_cover_every_parameter_once(mt):
    model = Translator(mt.config(experts_per_modality=2, top_k=1, pos_encoding="learned"), mt.VOCAB)
    decay, no_decay = param_groups(model, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    ids = [id(p) for p in decay["params"] + no_decay["params"]]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    nd = {id(p) for p in no_decay["params"]}
    names = {n: id(p) in nd for n, p in model.named_parameters()}
    assert names["embed.embedding.weight"] and names["positions.embedding.weight"]
    assert names["decoder.0.norm1.weight"] and names["decoder.0.ffn.bias_in"] and names["heads.image.pos_emb"]
    assert not names["decoder.0.ffn.w_in"] and not names["decoder.0.self_attn.qkv_proj.weight"]
    assert not names["decoder.0.ffn.router.weight"] and not names["heads.lmx.weight"]
    torch.optim.AdamW(param_groups(model, 0.1), lr=1e-3)  # accepted as-is
