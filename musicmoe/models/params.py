"""Parameter accounting and optimizer groups.

``active_params(model)`` counts the parameters one target token passes through: every parameter except, in
each grouped-expert FFN, the experts it is not routed to (only ``max(top_k, 1)`` experts of its own group are
active) and the router rows of the other groups. Embeddings and output heads count in full. Dense and
modality-routed MoE configs with one expert per group therefore have equal active parameters.
"""

from __future__ import annotations

from torch import nn

from musicmoe.models.moe import GroupedMoE


def count_params(model: nn.Module) -> int:
    """All parameters (tied tensors once)."""
    return sum(p.numel() for p in model.parameters())


def active_params(model: nn.Module) -> int:
    """Parameters used per target token (see the module docstring)."""
    total = count_params(model)
    for module in model.modules():
        if isinstance(module, GroupedMoE):
            active = max(module.top_k, 1)
            total -= (module.n_experts - active) * module.params_per_expert
            if module.router is not None:
                total -= (module.n_groups - 1) * module.experts_per_group * module.d_model
    return total


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: decay for weight matrices; none for biases, norms, embeddings and position tables.

    A module may list extra no-decay parameter names in a ``no_weight_decay`` attribute.
    """
    decay, no_decay, seen = [], [], set()
    for module in model.modules():
        skip = set(getattr(module, "no_weight_decay", ()))
        for name, p in module.named_parameters(recurse=False):
            if id(p) in seen or not p.requires_grad:
                continue
            seen.add(id(p))
            if (p.ndim < 2 or "bias" in name or name in skip
                    or isinstance(module, (nn.Embedding, nn.LayerNorm))):
                no_decay.append(p)
            else:
                decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
