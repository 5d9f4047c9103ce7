"""The overhead-free paths equal the plain computations in fp32/fp64, and the CPU operator counts stay in budget.

Rotary: the custom autograd rotations (out-of-place for cross-attention, in place on the fused self-attention
projection) against the rotate-half formula written with slices, values and gradients; the expert weights split
once per pass against per-use indexing; the decode loop's end check every ``END_CHECK`` steps against a check at
every step; and ``experiments/bench/op_count.py`` on the paper layer structure (budgets of the speed issue).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from musicmoe.models import ModelConfig, Translator, VocabSpec
from musicmoe.models.attention import MultiHeadAttention, apply_rotary, rotary_qkv, rotary_tables, row_rotary_tables
from musicmoe.models.moe import GroupedMoE

ROOT = Path(__file__).resolve().parents[2]


def reference_rotary(x: torch.Tensor, positions: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """The rotate-half rotation written out: x1 * cos - x2 * sin, x1 * sin + x2 * cos (slices and a cat)."""
    half = x.shape[-1] // 2
    inv = base ** (-torch.arange(half, dtype=torch.float64) / half)
    ang = positions.to(torch.float64)[..., None] * inv
    cos, sin = ang.cos().to(x.dtype), ang.sin().to(x.dtype)
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)


def test_rotation_and_its_gradient_equal_the_slice_formula():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 7, 8, dtype=torch.float64, requires_grad=True)  # (B, H, L, D)
    pos = torch.arange(7) * 3 + 1
    rope = rotary_tables(pos, 8, 10000.0)
    rope.cos, rope.sin = rope.cos.double(), rope.sin.double()
    out = apply_rotary(x, rope)
    ref = reference_rotary(x, pos)
    assert torch.allclose(out, ref, atol=1e-6)  # (tables made in float32, as in the model)
    g = torch.randn_like(out)
    (gx,) = torch.autograd.grad(out, x, g)
    (gref,) = torch.autograd.grad(ref, x, g)
    assert torch.allclose(gx, gref, atol=1e-5)
    assert torch.autograd.gradcheck(lambda t: apply_rotary(t, rope), (x,))
    # per-row times (time-aligned cross-attention): tables (B, 1, L, D)
    times = torch.rand(2, 7, dtype=torch.float64) * 500
    rows = row_rotary_tables(times, 8, 10000.0)
    rows.cos, rows.sin = rows.cos.double(), rows.sin.double()
    # (the tables are float32, as the model makes them: angles of several hundred radians carry ~1e-5 error)
    assert torch.allclose(apply_rotary(x, rows), reference_rotary(x, times[:, None, :]), atol=1e-4)


def test_in_place_rotation_of_the_fused_projection_equals_rotating_q_and_k():
    torch.manual_seed(1)
    b, length, heads, d = 2, 5, 4, 32
    attn = MultiHeadAttention(d, heads, rotary=True).double()
    x = torch.randn(b, length, d, dtype=torch.float64, requires_grad=True)
    pos = torch.arange(length)
    rope = rotary_tables(pos, d // heads, 10000.0)
    rope.cos, rope.sin = rope.cos.double(), rope.sin.double()

    fused = rotary_qkv(attn.qkv_proj, x, rope, heads)
    plain = attn.qkv_proj(x).view(b, length, 3, heads, d // heads)
    q = reference_rotary(plain[:, :, 0].transpose(1, 2), pos).transpose(1, 2)
    k = reference_rotary(plain[:, :, 1].transpose(1, 2), pos).transpose(1, 2)
    ref = torch.stack([q, k, plain[:, :, 2]], 2).reshape(b, length, 3 * d)
    assert torch.allclose(fused, ref, atol=1e-6)  # (tables made in float32, as in the model)
    g = torch.randn_like(ref)
    grads = torch.autograd.grad(fused, [x, attn.qkv_proj.weight, attn.qkv_proj.bias], g)
    grads_ref = torch.autograd.grad(ref, [x, attn.qkv_proj.weight, attn.qkv_proj.bias], g)
    for a, r in zip(grads, grads_ref):
        assert torch.allclose(a, r, atol=1e-5)
    # the rotation of the fused projection against the out-of-place one on the same tables: exact in fp64
    q_same = apply_rotary(plain[:, :, 0].transpose(1, 2), rope).transpose(1, 2)
    assert torch.allclose(fused.view(b, length, 3, heads, d // heads)[:, :, 0], q_same, atol=1e-12)


def test_expert_weights_split_once_equal_indexing_each_use():
    torch.manual_seed(2)
    for n_groups in (1, 3):
        moe = GroupedMoE(16, 32, n_groups, 1, 0).double()
        x = torch.randn(10, 16, dtype=torch.float64)
        weights = moe._weights()
        for e in range(n_groups):
            plain = torch.nn.functional.linear(
                torch.nn.functional.gelu(torch.nn.functional.linear(x, moe.w_in[e], moe.bias_in[e])),
                moe.w_out[e], moe.bias_out[e])
            assert torch.equal(moe._expert(weights[e], x), plain)


@pytest.mark.parametrize("sizes", [[2, 0, 3, 1], [0, 4, 0, 0]])
def test_grouped_gemm_experts_equal_the_per_group_path(sizes):
    """The contiguous plan's grouped GEMM (``torch._grouped_mm``, biases by one-hot ``addmm``) gives the per-group
    slices' outputs and gradients in fp32, experts without rows included (zero gradients)."""
    from musicmoe.models.moe import HardRoutingPlan

    torch.manual_seed(5)
    moe = GroupedMoE(32, 64, 4, 1, 0)
    with torch.no_grad():
        moe.bias_in.normal_()
        moe.bias_out.normal_()
    rows, length = sum(sizes), 5
    x = torch.randn(rows, length, 32)
    group = torch.repeat_interleave(torch.arange(4), torch.tensor(sizes))[:, None].expand(rows, length)
    mask = torch.rand(rows, length) > 0.2
    results = []
    for grouped in (True, False):
        moe.grouped_mm = grouped
        moe.zero_grad()
        xi = x.clone().requires_grad_()
        plan = HardRoutingPlan.contiguous(sizes, group, group, mask, 4)
        y, stats = moe(xi, group, group, mask, plan)
        (y * torch.linspace(-1, 1, 32)).sum().backward()
        results.append((y.detach(), xi.grad, [p.grad.clone() for p in (moe.w_in, moe.bias_in, moe.w_out,
                                                                       moe.bias_out)]))
    moe.grouped_mm = True
    assert moe.use_grouped_mm(x)
    (y1, gx1, gw1), (y2, gx2, gw2) = results
    assert torch.allclose(y1, y2, atol=1e-5) and torch.allclose(gx1, gx2, atol=1e-5)
    for a, b in zip(gw1, gw2):
        assert torch.allclose(a, b, atol=1e-4)
    for g, n in enumerate(sizes):
        if n == 0:
            assert not gw1[0][g].any()  # an expert without rows: zero gradient


def small_model(**kw) -> Translator:
    torch.manual_seed(3)
    cfg = ModelConfig(d_model=32, n_heads=4, enc_layers=2, dec_layers=2, d_ff=64, subdecoder_dim=16,
                      subdecoder_heads=2, dropout=0.0, max_src_len=64, max_tgt_len=96, **kw)
    return Translator(cfg, VocabSpec.build(lmx_vocab_size=40, midi_vocab_size=40)).eval()


@pytest.mark.parametrize("shared", [True, False])
def test_decoding_with_a_sparse_end_check_gives_the_tokens_of_a_check_every_step(monkeypatch, shared):
    """Rows that end between two read-backs are held at PAD on the device: same tokens, same lengths."""
    from musicmoe.models import generation

    model = small_model(shared_across_modalities=shared)
    src = torch.randint(0, 40, (3, 9, model.vocab.max_codebooks))
    src[:, :, 1:] = model.vocab["lmx"].pad_id
    mask = torch.ones(3, 9, dtype=torch.bool)
    with torch.no_grad():
        outs = {}
        for every in (1, 16):
            monkeypatch.setattr(generation, "END_CHECK", every)
            outs[every] = model.generate(src, mask, "lmx", "midi", max_len=40)
            outs[(every, "beam")] = model.generate(src, mask, "lmx", "midi", max_len=12, strategy="beam",
                                                   beam_size=2)
            outs[(every, "full")] = model.generate(src, mask, "lmx", "midi", max_len=12, use_cache=False)
    for key in (1, (1, "beam"), (1, "full")):
        other = 16 if key == 1 else (16, key[1])
        assert [o.tolist() for o in outs[key]] == [o.tolist() for o in outs[other]], key


@pytest.mark.parametrize("shared", [True, False])
def test_static_cache_and_compiled_step_decode_the_eager_tokens(shared):
    """The static cache (fixed buffers at a device-side position) and the step traced as one graph (fullgraph, so a
    graph break would raise; greedy decoding traces the whole step, output head, rules and token choice included)
    give the growing cache's tokens: greedy and beam, single-stream and sub-decoder targets; over the steps the
    step is compiled once."""
    import torch._dynamo

    model = small_model(shared_across_modalities=shared)
    src = torch.randint(0, 40, (3, 9, model.vocab.max_codebooks))
    src[:, :, 1:] = model.vocab["lmx"].pad_id
    mask = torch.ones(3, 9, dtype=torch.bool)
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    with torch.no_grad():
        for tgt, kw in (("midi", {"max_len": 30}), ("audio", {"max_len": 6, "min_len": 6}),
                        ("midi", {"max_len": 10, "strategy": "beam", "beam_size": 2})):
            eager = model.generate(src, mask, "lmx", tgt, **kw)
            compiled = model.generate(src, mask, "lmx", tgt, compile_step="eager", **kw)
            assert [o.tolist() for o in compiled] == [o.tolist() for o in eager], (tgt, kw)
    assert not torch._dynamo.utils.counters["graph_break"]
    assert "eager" in model.__dict__["_compiled_greedy_steps"]  # greedy: head and token choice inside the graph
    # one graph per batch size of the decoded rows (3 greedy, 6 beams), never one per step
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] <= 3


@pytest.mark.slow
def test_autotuned_step_is_compiled_again_when_the_weights_change():
    """``compile_step="max-autotune"`` on a CPU freezes the weights into the compiled step (inductor's C++ GEMM
    template, bias and GELU fused into the matmuls): it decodes the eager tokens of an MoE decoder (experts and
    sub-decoder heads are slices of stacked weights), and after the weights are changed in place (as a training step
    changes them) the new eager tokens, never with the stale weights."""
    model = small_model(shared_across_modalities=False)
    src = torch.randint(0, 40, (3, 9, model.vocab.max_codebooks), generator=torch.Generator().manual_seed(1))
    src[:, :, 1:] = model.vocab["lmx"].pad_id
    mask = torch.ones(3, 9, dtype=torch.bool)

    def decode(compile_step=False, tgt="midi"):
        out = model.generate(src, mask, "lmx", tgt, max_len=16, min_len=16, compile_step=compile_step)
        return [o.tolist() for o in out]

    with torch.no_grad():
        assert decode("max-autotune", "audio") == decode(tgt="audio")  # the sub-decoder's per-codebook heads
        eager = decode()
        assert decode("max-autotune") == eager
        torch.manual_seed(5)
        for p in model.parameters():
            p.add_(torch.randn_like(p), alpha=0.5)
        changed = decode()
        assert changed != eager
        assert decode("max-autotune") == changed
        # plain inductor on the same function reads the live weights, never the frozen step's constants
        for p in model.parameters():
            p.add_(torch.randn_like(p), alpha=0.5)
        again = decode()
        assert again != changed
        assert decode("inductor") == again


def test_op_count_figures_meet_the_cpu_budgets(tmp_path):
    """Paper layer structure at small width, bf16 parameters (what DeepSpeed's bf16 mode computes with): the
    training step and cached decoding within the budgets of the speed work."""
    out = tmp_path / "counts.json"
    proc = subprocess.run([sys.executable, str(ROOT / "experiments" / "bench" / "op_count.py"), "--cases", "bf16",
                           "--compile", "--steps", "20", "--json", str(out)], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    figures = json.loads(out.read_text())
    for line in proc.stdout.splitlines():  # one `name value` line per figure, equal to the JSON
        name, value = line.split()
        assert figures[name] == pytest.approx(float(value))
    for kind in ("dense", "moe"):
        assert figures[f"train_bf16_{kind}_casts"] < 50
        assert figures[f"train_bf16_{kind}_view_backward_copies"] <= 8
        assert figures[f"decode_bf16_{kind}_host_syncs_per_step"] <= 1 / 16
        assert figures[f"decode_compiled_{kind}_graph_breaks"] == 0
        for tgt in ("lmx", "audio"):
            assert figures[f"decode_compiled_{kind}_{tgt}_recompiles"] == 0
            assert figures[f"decode_compiled_{kind}_{tgt}_same_tokens"] == 1
    assert figures["train_bf16_dense_aten_ops"] < 1500
    # the modality-routed experts in one grouped GEMM per projection: within a few ops per layer of the dense FFN
    assert figures["train_bf16_moe_aten_ops"] < 1500


@pytest.mark.slow
def test_compiled_decoding_step_kernels(tmp_path):
    """The greedy decoding step compiled by inductor (needs a C++ compiler on the CPU; what a GPU replays as one CUDA
    graph): per decoder layer at most 13 kernels (6 GEMMs, 2 attention kernels, 3 residual add + LayerNorm, the
    rotary and cache write, the GELU) and 3 more for the embedding, output head, token choice and writes; nothing
    between two steps but the end check every 16 steps; the same tokens as the eager step. With max-autotune one
    kernel less per layer."""
    out = tmp_path / "counts.json"
    proc = subprocess.run([sys.executable, str(ROOT / "experiments" / "bench" / "op_count.py"), "--cases", "fp32",
                           "--kinds", "moe", "--compile", "inductor,max-autotune", "--steps", "8", "--json", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    figures = json.loads(out.read_text())
    layers = 12
    assert figures["decode_compiled_moe_step_kernels"] <= 13 * layers + 3
    assert figures["decode_compiled_moe_kernels_per_step"] - figures["decode_compiled_moe_step_kernels"] <= 1 / 8
    assert figures["decode_compiled_moe_kernels_per_step"] < 0.6 * figures["decode_fp32_moe_ops_per_step"]
    assert figures["decode_compiled_moe_lmx_same_tokens"] == 1 and figures["decode_compiled_moe_graph_breaks"] == 0
    # max-autotune (frozen weights, C++ GEMM templates): bias and GELU in the up-projection's GEMM, one kernel less
    # per layer, under the speed issue's 150; the same tokens, including the sub-decoder's
    assert figures["decode_autotuned_moe_step_kernels"] <= 12 * layers + 3
    assert figures["decode_autotuned_moe_kernels_per_step"] < 150
    assert figures["decode_autotuned_moe_lmx_same_tokens"] == figures["decode_autotuned_moe_audio_same_tokens"] == 1
