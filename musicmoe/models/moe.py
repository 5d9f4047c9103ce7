"""Feed-forward blocks: a dense FFN and the grouped mixture of experts of the decoder.

``GroupedMoE`` holds ``n_groups x experts_per_group`` experts (expert ``g * E + e`` is expert ``e`` of group
``g``). Every token carries a group id (its target modality, or 0 when the groups are shared) and is
hard-routed to that group. With ``top_k == 0`` the group has one expert and that is the whole routing; with
``top_k >= 1`` a softmax router (its logits restricted to the token's group) picks ``top_k`` experts (gates:
the router probability for top-1 as in Switch, renormalised over the chosen experts for top-k > 1).

Losses (only for ``top_k >= 1``): the Switch/GShard load-balancing loss ``E * sum_e f_e * P_e`` per group
(``f_e`` the fraction of the group's assignments sent to expert ``e``, ``P_e`` its mean router probability;
1.0 when balanced), averaged over the groups present, and the router z-loss ``mean(logsumexp(logits)^2)``.

With a capacity factor ``c`` each expert of group ``g`` takes at most ``ceil(c * n_g * top_k / E)``
assignments (``n_g`` the group's tokens), first choices before second choices, earlier tokens first; the
rest are dropped (their residual passes through unchanged) and counted.

Dispatch sorts the (token, expert) assignments by expert and runs each expert once on its contiguous slice
(``index_select`` in, ``index_add_`` out): one host sync per layer for the slice sizes, no per-token loops.
Hard-routed layers (``top_k == 0``) share one plan per decoder pass (:class:`HardRoutingPlan`): either one sort
of the routed tokens (one host sync per pass), or, when the caller knows on the host how many rows of each group
the batch holds and the rows are ordered by group (``HardRoutingPlan.contiguous``), plain slices of the token
axis with no sort, no gather and no host sync. A single expert in total (the dense model) skips dispatch
altogether. Routing statistics are computed on the device (no ``bincount``/boolean indexing, which read back).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from musicmoe.models.frozen import own_storage
from musicmoe.models.vocab import MODALITIES


def activation_fn(name: str):
    return {"gelu": F.gelu, "relu": F.relu}[name]


class FeedForward(nn.Module):
    """Dense two-layer FFN."""

    def __init__(self, d_model: int, d_ff: int, dropout: float = 0.0, activation: str = "gelu",
                 bias: bool = True) -> None:
        super().__init__()
        self.fc_in = nn.Linear(d_model, d_ff, bias=bias)
        self.fc_out = nn.Linear(d_ff, d_model, bias=bias)
        self.act = activation_fn(activation)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc_out(self.dropout(self.act(self.fc_in(x))))


@dataclass
class MoEStats:
    """Routing statistics of one MoE layer for one forward pass.

    ``counts`` (n_modalities, n_experts) long: assignments of tokens, by their target modality (row), to each
    expert (column) before capacity dropping; ``dropped``: assignments dropped by the capacity limit;
    ``assignments``: all assignments; ``aux_loss``/``z_loss``: router losses (0 without a router).
    """

    counts: torch.Tensor
    dropped: torch.Tensor
    assignments: torch.Tensor
    aux_loss: torch.Tensor
    z_loss: torch.Tensor
    n_groups: int
    experts_per_group: int

    def group_load(self) -> torch.Tensor:
        """(n_groups, E) fraction of each group's assignments per expert (rows with tokens sum to 1)."""
        per_group = self.counts.sum(0).view(self.n_groups, self.experts_per_group).float()
        return per_group / per_group.sum(1, keepdim=True).clamp_min(1.0)


@dataclass
class HardRoutingPlan:
    """Routed tokens grouped by expert group, built once per decoder pass and shared by its hard-routed MoE
    layers (their routing depends only on the token's group).

    ``build``: the routed tokens (``token_mask``) sorted by group; ``tokens`` holds their flat indices (one sort,
    one host sync for ``sizes``). ``contiguous``: the rows of the (B, L) tokens are already ordered by group and
    their counts known on the host: ``tokens`` is ``None``, ``sizes`` counts ROWS, group ``g`` is a row slice,
    padding included (computed, then zeroed by ``mask``); no host sync, and only host integers that do not
    depend on the sequence length (a compiled forward stays valid across lengths).
    """

    tokens: torch.Tensor | None  # flat indices of the routed tokens, sorted by group; None = contiguous
    sizes: list[int]  # tokens per group (contiguous: rows per group)
    counts: torch.Tensor  # (n_modalities, n_groups) long: routed tokens by modality and group
    mask: torch.Tensor | None = None  # contiguous plans: (B, L) True for routed tokens (None: all)
    _stats: MoEStats | None = None
    _grouped: dict | None = None

    def grouped_operands(self, length: int, dtype: torch.dtype,
                         device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Contiguous plans, rows of ``length`` tokens: the grouped GEMM's group ends (G,) int32 (cumulative token
        counts) and the (N, G) one-hot group matrix that adds each group's bias in one ``addmm``; made once per
        pass (one host-to-device copy) and shared by its layers."""
        key = (length, dtype, device)
        if self._grouped is None:
            self._grouped = {}
        if key not in self._grouped:
            ends, total = [], 0
            for rows in self.sizes:
                total += rows * length
                ends.append(total)
            offs = torch.tensor(ends, dtype=torch.int32, device=device)
            group = torch.repeat_interleave(torch.arange(len(self.sizes), device=device),
                                            torch.tensor([r * length for r in self.sizes], device=device),
                                            output_size=total)
            self._grouped[key] = (offs, F.one_hot(group, len(self.sizes)).to(dtype))
        return self._grouped[key]

    def stats(self) -> MoEStats:
        """The routing statistics of every layer that follows this plan without dropping tokens: one object,
        computed once per pass (hard routing sends each token to the same group in every layer)."""
        if self._stats is None:
            zero = self.counts.new_zeros((), dtype=torch.float32)
            self._stats = MoEStats(self.counts, self.counts.new_zeros(()), self.counts.sum(), zero, zero,
                                   self.counts.shape[1], 1)
        return self._stats

    @classmethod
    def single(cls, rows: int, modality: torch.Tensor, token_mask: torch.Tensor | None) -> HardRoutingPlan:
        """Plan of a single expert group (the dense decoder): every row in group 0."""
        mask = None if token_mask is None else token_mask.reshape(-1)
        counts = index_counts(modality.reshape(-1), len(MODALITIES), mask).view(-1, 1)
        return cls(None, [rows], counts, token_mask)

    @classmethod
    def build(cls, group: torch.Tensor, modality: torch.Tensor, token_mask: torch.Tensor | None,
              n_groups: int) -> HardRoutingPlan:
        gf, mf = group.reshape(-1), modality.reshape(-1)
        if token_mask is not None:
            sel = token_mask.reshape(-1).nonzero().squeeze(1)
            gf, mf = gf.index_select(0, sel), mf.index_select(0, sel)
        else:
            sel = torch.arange(gf.numel(), device=gf.device)
        order = torch.argsort(gf, stable=True)
        counts = routing_counts(mf, gf, None, n_groups)
        return cls(sel.index_select(0, order), torch.bincount(gf, minlength=n_groups).tolist(), counts)

    @classmethod
    def contiguous(cls, rows_per_group: list[int], group: torch.Tensor, modality: torch.Tensor,
                   token_mask: torch.Tensor | None, n_groups: int) -> HardRoutingPlan:
        """Plan for (B, L) tokens whose rows are ordered by group, ``rows_per_group[g]`` rows each."""
        if len(rows_per_group) != n_groups:
            raise ValueError(f"HardRoutingPlan.contiguous: {len(rows_per_group)} row counts for {n_groups} groups")
        mask = None if token_mask is None else token_mask.reshape(-1)
        counts = routing_counts(modality.reshape(-1), group.reshape(-1), mask, n_groups)
        return cls(None, list(rows_per_group), counts, token_mask)


def index_counts(index: torch.Tensor, n: int, weight: torch.Tensor | None = None) -> torch.Tensor:
    """(n,) long: how often each value of ``index`` occurs (``weight``: a 0/1 mask, None = all); ``index_add_``
    instead of ``bincount``, which reads its maximum back to the host on CUDA."""
    w = torch.ones_like(index) if weight is None else weight.to(torch.long)
    return torch.zeros(n, dtype=torch.long, device=index.device).index_add_(0, index, w)


def routing_counts(modality: torch.Tensor, expert: torch.Tensor, weight: torch.Tensor | None,
                   n_experts: int) -> torch.Tensor:
    """(n_modalities, n_experts) long: tokens (``weight``: a 0/1 mask, None = all) per (modality, expert)."""
    n_mod = len(MODALITIES)
    return index_counts(modality * n_experts + expert, n_mod * n_experts, weight).view(n_mod, n_experts)


class GroupedMoE(nn.Module):
    """Experts grouped by target modality (see the module docstring)."""

    def __init__(self, d_model: int, d_ff: int, n_groups: int, experts_per_group: int, top_k: int,
                 dropout: float = 0.0, activation: str = "gelu", bias: bool = True,
                 capacity_factor: float | None = None, eval_capacity_factor: float | None = None) -> None:
        super().__init__()
        if top_k == 0 and experts_per_group != 1:
            raise ValueError("GroupedMoE: top_k=0 needs one expert per group")
        if top_k > experts_per_group:
            raise ValueError(f"GroupedMoE: top_k={top_k} > experts_per_group={experts_per_group}")
        self.d_model, self.d_ff = d_model, d_ff
        self.n_groups, self.experts_per_group, self.top_k = n_groups, experts_per_group, top_k
        self.n_experts = n_groups * experts_per_group
        self.capacity_factor, self.eval_capacity_factor = capacity_factor, eval_capacity_factor
        x = self.n_experts
        self.w_in = nn.Parameter(torch.empty(x, d_ff, d_model))
        self.w_out = nn.Parameter(torch.empty(x, d_model, d_ff))
        self.bias_in = nn.Parameter(torch.zeros(x, d_ff)) if bias else None
        self.bias_out = nn.Parameter(torch.zeros(x, d_model)) if bias else None
        self.router = nn.Linear(d_model, x, bias=False) if top_k > 0 else None
        self.grouped_mm = True  # contiguous plans: one grouped GEMM per projection where supported
        self.act = activation_fn(activation)
        self.dropout = nn.Dropout(dropout)
        nn.init.normal_(self.w_in, std=0.02)
        nn.init.normal_(self.w_out, std=0.02)

    @property
    def params_per_expert(self) -> int:
        n = self.w_in[0].numel() + self.w_out[0].numel()
        if self.bias_in is not None:
            n += self.bias_in[0].numel() + self.bias_out[0].numel()
        return n

    def _weights(self) -> list[tuple[torch.Tensor | None, ...]]:
        """Per expert (w_in, b_in, w_out, b_out), split once per forward: ``unbind`` (its gradient is one ``stack``)
        or, for a single expert, ``squeeze`` (a view), never ``w[e]`` per use, whose gradient is a zero-filled copy
        of the whole parameter."""
        def split(p: torch.Tensor | None) -> list[torch.Tensor | None]:
            if p is None:
                return [None] * self.n_experts
            if self.n_experts == 1:
                return [p.squeeze(0)]
            return [own_storage(w) for w in p.unbind(0)]  # (views at an offset: see musicmoe.models.frozen)

        return list(zip(split(self.w_in), split(self.bias_in), split(self.w_out), split(self.bias_out)))

    def _expert(self, w: tuple[torch.Tensor | None, ...], h: torch.Tensor) -> torch.Tensor:
        w_in, b_in, w_out, b_out = w
        h = self.dropout(self.act(F.linear(h, w_in, b_in)))
        return F.linear(h, w_out, b_out)

    def use_grouped_mm(self, x: torch.Tensor) -> bool:
        """Whether ``torch._grouped_mm`` runs the experts of a contiguous plan here: on the CPU (fp32, bf16, fp16;
        eager only), or on a CUDA GPU of compute capability >= 9.0 with bf16 activations; widths must keep rows 16-byte
        aligned. ``grouped_mm = False`` forces the per-group path (the reference of the tests)."""
        if not self.grouped_mm or not hasattr(torch, "_grouped_mm"):
            return False
        if (self.d_model * x.element_size()) % 16 or (self.d_ff * x.element_size()) % 16:
            return False
        if x.device.type == "cpu":  # (traced by torch.compile, the op's shape function accepts CUDA bf16 only)
            return x.dtype in (torch.float32, torch.bfloat16, torch.float16) and not torch.compiler.is_compiling()
        return (x.device.type == "cuda" and x.dtype == torch.bfloat16
                and torch.cuda.get_device_capability(x.device)[0] >= 9)

    def _grouped_forward(self, x: torch.Tensor, plan: HardRoutingPlan) -> torch.Tensor:
        """Every group's expert in one grouped GEMM per projection over the (B * L, d) tokens (rows ordered by
        group): no split, no concatenation, and experts without tokens get zero gradients inside the GEMM's
        backward instead of zero-filled copies; biases enter by ``addmm`` with the plan's one-hot group matrix."""
        b, length, d = x.shape
        xf = x.reshape(b * length, d)
        offs, onehot = plan.grouped_operands(length, xf.dtype, xf.device)
        h = torch._grouped_mm(xf, self.w_in.to(xf.dtype).transpose(1, 2), offs=offs)
        if self.bias_in is not None:
            h = torch.addmm(h, onehot, self.bias_in.to(h.dtype))
        h = self.dropout(self.act(h))
        y = torch._grouped_mm(h, self.w_out.to(h.dtype).transpose(1, 2), offs=offs)
        if self.bias_out is not None:
            y = torch.addmm(y, onehot, self.bias_out.to(y.dtype))
        return y.view(b, length, d)

    def _forward_contiguous(self, x: torch.Tensor, plan: HardRoutingPlan) -> tuple[torch.Tensor, MoEStats]:
        """One expert per group, rows of ``x`` (B, L, d) ordered by group: a grouped GEMM (:meth:`use_grouped_mm`)
        or row slices; no gather, no gates."""
        if len(plan.sizes) != self.n_groups:
            raise ValueError(f"GroupedMoE: routing plan has {len(plan.sizes)} groups, layer has {self.n_groups}")
        if (self.capacity_factor if self.training else self.eval_capacity_factor) is not None:
            raise ValueError("GroupedMoE: a contiguous routing plan cannot apply a capacity factor")
        if x.ndim != 3 or sum(plan.sizes) != x.shape[0]:
            raise ValueError(f"GroupedMoE: contiguous plan covers {sum(plan.sizes)} rows, got {tuple(x.shape)}")
        if self.use_grouped_mm(x) and torch.is_grad_enabled() and sum(1 for r in plan.sizes if r) > 1:
            y = self._grouped_forward(x, plan)
            if plan.mask is not None:
                y = y * plan.mask[..., None].to(y.dtype)
            return y, plan.stats()
        weights = self._weights()
        # split, not sliced per group: the gradient is one concatenation, not a zero-filled copy per group (and
        # groups without rows are left out of the split, so it fills no empty gradients either)
        groups = [g for g, rows in enumerate(plan.sizes) if rows]
        parts = x.split([plan.sizes[g] for g in groups])
        outs = [self._expert(weights[g], part).to(x.dtype) for g, part in zip(groups, parts)]
        y = outs[0] if len(outs) == 1 else (torch.cat(outs) if outs else x)
        if plan.mask is not None:
            y = y * plan.mask[..., None].to(y.dtype)
        return y, plan.stats()

    def _forward_hard(self, xf: torch.Tensor, plan: HardRoutingPlan) -> tuple[torch.Tensor, MoEStats]:
        """One expert per group, routed tokens sorted by group (``plan.tokens``): slices, no gates."""
        if len(plan.sizes) != self.n_groups:
            raise ValueError(f"GroupedMoE: routing plan has {len(plan.sizes)} groups, layer has {self.n_groups}")
        cf = self.capacity_factor if self.training else self.eval_capacity_factor
        xs = xf.index_select(0, plan.tokens)
        outs, start, dropped, weights = [], 0, 0, self._weights()
        for g, size in enumerate(plan.sizes):
            if size == 0:
                continue
            keep = size if cf is None else min(size, moe_capacity(size, 1, 0, cf))
            outs.append(self._expert(weights[g], xs[start: start + keep]).to(xs.dtype))
            if keep < size:
                outs.append(xs.new_zeros(size - keep, self.d_model))
            start, dropped = start + size, dropped + size - keep
        ys = torch.cat(outs) if outs else xs
        y = xf.new_zeros(xf.shape).index_copy_(0, plan.tokens, ys)
        zero = xf.new_zeros((), dtype=torch.float32)
        dev = xf.device
        stats = MoEStats(plan.counts, torch.full((), dropped, dtype=torch.long, device=dev),
                         torch.full((), sum(plan.sizes), dtype=torch.long, device=dev), zero, zero, self.n_groups, 1)
        return y, stats

    def forward(self, x: torch.Tensor, group: torch.Tensor, modality: torch.Tensor,
                token_mask: torch.Tensor | None = None,
                plan: HardRoutingPlan | None = None) -> tuple[torch.Tensor, MoEStats]:
        """``x`` (..., d); ``group``/``modality``/``token_mask`` (...,): expert group, target modality (for the
        statistics) and True for tokens to route (others get a zero output and do not count). ``plan``: a
        precomputed :class:`HardRoutingPlan` for the same tokens (used by hard-routed layers)."""
        shape = x.shape
        xf = x.reshape(-1, self.d_model)
        if self.n_experts == 1 and plan is not None and len(plan.sizes) == 1:  # dense, statistics of the plan
            return self._expert(self._weights()[0], xf).to(x.dtype).view(shape), plan.stats()
        if self.top_k == 0 and plan is not None and plan.tokens is None:  # row slices of a host-known plan
            y, stats = self._forward_contiguous(x.reshape(shape[0], -1, self.d_model), plan)
            return y.view(shape), stats
        gf, mf = group.reshape(-1), modality.reshape(-1)
        zero = xf.new_zeros((), dtype=torch.float32)

        if self.n_experts == 1:  # dense fast path: no gather/scatter at all
            y = self._expert(self._weights()[0], xf).to(x.dtype)
            mask = None if token_mask is None else token_mask.reshape(-1)
            counts = index_counts(mf, len(MODALITIES), mask).view(-1, 1)
            n = counts.sum()
            return y.view(shape), MoEStats(counts, n * 0, n, zero, zero, 1, 1)

        if self.top_k == 0:
            plan = plan if plan is not None else HardRoutingPlan.build(group, modality, token_mask, self.n_groups)
            y, stats = self._forward_hard(xf, plan)
            return y.view(shape), stats
        if token_mask is not None:
            sel = token_mask.reshape(-1).nonzero().squeeze(1)
            xs, gs, ms = xf.index_select(0, sel), gf.index_select(0, sel), mf.index_select(0, sel)
        else:
            sel, xs, gs, ms = None, xf, gf, mf
        n = xs.shape[0]
        e_per, k = self.experts_per_group, self.top_k

        # learned top-k routing inside the token's group
        assert self.router is not None
        logits = self.router(xs).float().view(n, self.n_groups, e_per)
        logits = logits.gather(1, gs.view(n, 1, 1).expand(n, 1, e_per)).squeeze(1)  # (n, E) own group only
        probs = logits.softmax(-1)
        top_p, top_i = probs.topk(self.top_k, dim=-1)
        gate = top_p if self.top_k == 1 else top_p / top_p.sum(-1, keepdim=True)
        expert = gs.view(n, 1) * e_per + top_i
        # load balancing per group: E * sum_e f_e P_e, averaged over the groups that have tokens
        group_tokens = index_counts(gs, self.n_groups)
        n_g = group_tokens.float()
        f = torch.zeros(self.n_groups * e_per, device=x.device).index_add_(
            0, expert.reshape(-1), torch.ones(n * self.top_k, device=x.device)).view(self.n_groups, e_per)
        p_sum = torch.zeros(self.n_groups, e_per, device=x.device).index_add_(0, gs, probs)
        denom = n_g.clamp_min(1.0)[:, None]
        per_group = e_per * ((f / (denom * self.top_k)) * (p_sum / denom)).sum(-1)
        present = (n_g > 0).float()
        aux = (per_group * present).sum() / present.sum().clamp_min(1.0)
        z = torch.logsumexp(logits, dim=-1).pow(2).mean() if n > 0 else zero

        # assignments sorted by expert; within an expert: first choices first, then token order
        a_tok = torch.arange(n, device=x.device).view(n, 1).expand(n, k).reshape(-1)
        a_exp = expert.reshape(-1)
        a_rank = torch.arange(k, device=x.device).view(1, k).expand(n, k).reshape(-1)
        order = torch.argsort(a_exp * (k * n) + a_rank * n + a_tok)
        a_tok, a_exp = a_tok[order], a_exp[order]
        a_gate = gate.reshape(-1)[order]
        per_expert = index_counts(a_exp, self.n_experts)
        counts = routing_counts(ms.view(n, 1).expand(n, k).reshape(-1), expert.reshape(-1), None, self.n_experts)

        cf = self.capacity_factor if self.training else self.eval_capacity_factor
        if cf is not None:
            n_ge = group_tokens.repeat_interleave(e_per)
            capacity = torch.ceil(cf * n_ge.float() * k / e_per).long()
            kept = torch.minimum(per_expert, capacity)
        else:
            kept = per_expert
        sizes = torch.stack([per_expert, kept]).tolist()  # the one host sync of this layer
        starts = [0]
        for c in sizes[0][:-1]:
            starts.append(starts[-1] + c)

        ys = xs.new_zeros(n, self.d_model)
        weights = self._weights()
        for e in range(self.n_experts):
            m = sizes[1][e]
            if m == 0:
                continue
            idx = a_tok[starts[e]: starts[e] + m]
            h = self._expert(weights[e], xs.index_select(0, idx))
            h = h * a_gate[starts[e]: starts[e] + m, None].to(h.dtype)
            ys.index_add_(0, idx, h.to(ys.dtype))
        dropped = torch.full((), sum(sizes[0]) - sum(sizes[1]), dtype=torch.long, device=x.device)
        stats = MoEStats(counts, dropped, torch.full((), n * k, dtype=torch.long, device=x.device), aux, z,
                         self.n_groups, e_per)
        if sel is None:
            return ys.view(shape), stats
        y = xf.new_zeros(xf.shape).index_copy_(0, sel, ys)
        return y.view(shape), stats


def moe_capacity(n_tokens: int, experts: int, top_k: int, factor: float) -> int:
    """Capacity of one expert for ``n_tokens`` tokens of its group (as used in ``GroupedMoE``)."""
    return math.ceil(factor * n_tokens * max(top_k, 1) / experts)
