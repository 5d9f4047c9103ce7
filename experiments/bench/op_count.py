"""CPU proxies of GPU overhead: operator counts of a training step and of a cached decode step, no timing.

The translator is built with the paper's layer structure (12 + 12 layers, 2 sub-decoder layers) at a small width, so
every count equals the paper-size model's (operators do not depend on width) while the run takes seconds on a CPU.
Counted with a ``TorchDispatchMode`` (every aten call that reaches a kernel, forward and backward):

* ``train_<case>_aten_ops``: aten operators that run a kernel (views excluded) in forward + loss + backward of
  one mixed-task batch (OMR, AMT and image->audio rows);
* ``train_<case>_casts``: dtype conversions among them (``_to_copy`` / ``to`` / ``copy_`` across dtypes);
* ``train_<case>_view_backward_copies``: gradients of a sliced or indexed view written into a zero-filled full
  tensor (``slice_backward``, ``select_backward``, ``index_put``/``scatter`` into ``zeros``), each a fill and a copy;
* ``decode_<case>_ops_per_step`` and ``decode_<case>_host_syncs_per_step``: one cached greedy decoding step (the
  mean over ``--steps`` steps after the first), host reads counted by
  :class:`musicmoe.models.hostsync.HostSyncCounter`;
* ``decode_compiled_<case>_<target>_recompiles`` / ``..._graph_breaks`` / ``..._same_tokens``: with ``--compile``,
  the decoding step compiled as one graph over a static cache (``torch._dynamo`` counters over ``--steps`` steps),
  and whether it decodes the eager step's tokens;
* ``decode_compiled_<kind>_step_kernels`` and ``decode_compiled_<kind>_kernels_per_step``: with ``--compile inductor``,
  the kernels one compiled decoder step launches (calls in the ``call`` function of inductor's generated code:
  fused kernels, extern kernels such as ``addmm``, fallback aten operators; buffer allocation and views excluded),
  and per greedy step that figure plus the eager operators between two compiled steps (greedy decoding compiles
  the whole step: decoder, output head, decoding rules, token choice and writes; outside it only the read-back of
  "has every row ended?" every 16 steps);
* ``decode_autotuned_<kind>_...``: the same figures with ``--compile max-autotune`` (inductor's GEMM templates chosen
  for the matmuls, so that bias, GELU and LayerNorm fuse into them; on a CPU the weights are frozen into the step).

Cases: ``fp32`` (float32 parameters), ``autocast`` (float32 parameters under bf16 autocast, as an AMP run) and
``bf16`` (bfloat16 parameters, as DeepSpeed's bf16 mode computes with fp32 master weights in the optimizer);
``dense`` (one decoder FFN) and ``moe`` (one FFN per target modality). Output: one ``name value`` line per figure.

    python experiments/bench/op_count.py                    # every figure
    python experiments/bench/op_count.py --json counts.json --compile            # tracing only (fast)
    python experiments/bench/op_count.py --cases bf16 --compile inductor         # compiled code: kernels per step
    python experiments/bench/op_count.py --cases bf16 --compile inductor,max-autotune  # and with GEMM templates
"""

from __future__ import annotations

import sys
from pathlib import Path

# run as a script, this folder is sys.path[0]; a sibling named like a stdlib module would shadow it
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)

import argparse
import collections
import contextlib
import json
import re

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from musicmoe.models import ModelConfig, Translator
from musicmoe.models.generation import AUTOTUNE
from musicmoe.models.hostsync import HostSyncCounter


def _sibling(name: str):
    """A script of this folder as a module (this folder is taken off sys.path above)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"musicmoe_bench_{name}", Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# the training benchmark's vocabulary and mixed-task batch (OMR, AMT and image->audio rows, full length)
_train_step = _sibling("train_step")
VOCAB, mixed_batch = _train_step.VOCAB, _train_step.mixed_batch
# the paper's layer structure (configs/model/paper.yaml) at a width that runs in seconds on one core
STRUCTURE = dict(d_model=64, n_heads=16, enc_layers=12, dec_layers=12, d_ff=128, subdecoder_layers=2,
                 subdecoder_dim=32, subdecoder_heads=8)
VIEW_BACKWARD_OPS = {"slice_backward", "select_backward", "as_strided_backward", "narrow_backward",
                     "index_select_backward", "unbind_backward"}


class OpCounter(TorchDispatchMode):
    """Counts aten operators by name; dtype casts and view-backward zero-fill copies separately."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: collections.Counter[str] = collections.Counter()
        self.views = 0
        self.casts = 0
        self.view_backward = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func.overloadpacket.__name__
        self.ops[name] += 1
        if _is_view(func):
            self.views += 1
        out = func(*args, **kwargs)
        if name in ("_to_copy", "to", "copy_", "copy"):
            src = args[1] if name in ("copy_", "copy") and len(args) > 1 else args[0]
            dst = out if isinstance(out, torch.Tensor) else None
            if isinstance(src, torch.Tensor) and dst is not None and src.dtype != dst.dtype:
                self.casts += 1
        if name in VIEW_BACKWARD_OPS:
            self.view_backward += 1
        return out

    @property
    def total(self) -> int:
        """Operators that run a kernel: every counted call but views (metadata only, no kernel)."""
        return sum(self.ops.values()) - self.views


def _is_view(func) -> bool:
    """The operator returns an alias of an input that it does not write (a view: no kernel runs)."""
    returns = func._schema.returns
    return bool(returns) and all(r.alias_info is not None and not r.alias_info.is_write for r in returns)


def build(moe: bool, dtype: torch.dtype, max_len: int) -> Translator:
    torch.manual_seed(0)
    cfg = ModelConfig(**STRUCTURE, dropout=0.0, shared_across_modalities=not moe, max_src_len=max_len,
                      max_tgt_len=max_len, validate_inputs=False)
    return Translator(cfg, VOCAB).to(dtype)


def count_train_step(model: Translator, batch, amp: bool) -> OpCounter:
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if amp else contextlib.nullcontext()
    model.train()
    model(batch).loss.backward()  # warm-up: lazy buffers, first-call paths
    model.zero_grad(set_to_none=True)
    with OpCounter() as counter:
        with ctx:
            loss = model(batch).loss
        loss.backward()
    model.zero_grad(set_to_none=True)
    return counter


def count_decode(model: Translator, steps: int, amp: bool, src_len: int = 32) -> tuple[float, float]:
    """(aten ops, host syncs) per cached greedy step (eager): generate ``steps`` + 1 tokens minus generate 1 token."""
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if amp else contextlib.nullcontext()
    model.eval()
    src, mask = random_sources(src_len)

    def run(n: int) -> tuple[int, int]:
        with torch.no_grad(), ctx, OpCounter() as ops, HostSyncCounter() as syncs:
            model.generate(src, mask, "image", "lmx", max_len=n, min_len=n)
        return ops.total, len(syncs.events)

    run(2)
    ops1, syncs1 = run(1)
    ops_n, syncs_n = run(steps + 1)
    return (ops_n - ops1) / steps, (syncs_n - syncs1) / steps


def count_outside_fused_step(model: Translator, steps: int, src_len: int = 32) -> float:
    """Aten ops per greedy step that run outside the fused step (``generate(compile_step=...)`` decodes greedily
    with :func:`musicmoe.models.generation.compiled_greedy_step`, here replaced by the plain step): what a compiled
    decoding loop still launches between two compiled steps."""
    from musicmoe.models import generation

    model.eval()
    src, mask = random_sources(src_len)
    inside = [0]

    def counted_step(*args, **kwargs):  # the outer counter sees these operators too (modes stack)
        with OpCounter() as ops:
            generation._greedy_step(*args, **kwargs)
        inside[0] += ops.total

    def run(n: int) -> int:
        inside[0] = 0
        with torch.no_grad(), OpCounter() as ops:
            model.generate(src, mask, "image", "lmx", max_len=n, min_len=n, compile_step=True)
        return ops.total - inside[0]

    compiled = generation.compiled_greedy_step
    generation.compiled_greedy_step = lambda model, backend="inductor": counted_step
    try:
        run(2)
        one, many = run(1), run(steps + 1)
    finally:
        generation.compiled_greedy_step = compiled
    return (many - one) / steps


def random_sources(src_len: int, rows: int = 2, generator: torch.Generator | None = None):
    """(codes (rows, src_len, Qmax), mask) of random image-code sources to decode from."""
    spec = VOCAB["image"]
    src = torch.full((rows, src_len, VOCAB.max_codebooks), spec.pad_id, dtype=torch.long)
    src[:, :, : spec.codebooks] = torch.randint(0, spec.vocab_size, (rows, src_len, spec.codebooks),
                                                generator=generator)
    return src, torch.ones(rows, src_len, dtype=torch.bool)


INDUCTOR = ("inductor", AUTOTUNE)
KERNEL_CALL = re.compile(r"^\s*(?:\w+ = )?(?:cpp_fused_\w+|triton_\w+\.run|extern_kernels\.\w+|"
                         r"torch\.ops\.\w+\.\w+(?:\.\w+)?|aten\.\w+(?:\.\w+)?)\(", re.M)


def step_kernels(code: str) -> int:
    """Kernel calls in the ``call`` function of inductor's generated code for one graph: fused kernels, extern
    kernels and fallback aten operators (buffer allocations and views are not calls of this form)."""
    return len(KERNEL_CALL.findall(code.split("def call(", 1)[1]))


def compiled_decode(model: Translator, steps: int, backend: str) -> dict[str, float]:
    """The decoding step compiled as one graph (``generate(compile_step=backend)``, static cache): graphs compiled
    over ``steps`` steps (recompiles = graphs - 1), graph breaks (``fullgraph``: a break would raise), and whether
    its tokens equal the eager step's."""
    import torch._dynamo

    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    from torch._inductor.utils import run_and_get_code

    model.eval()
    src, mask = random_sources(32, generator=torch.Generator().manual_seed(0))
    out: dict[str, float] = {}
    with torch.no_grad():
        for tgt in ("lmx", "audio"):
            before = torch._dynamo.utils.counters["stats"].get("unique_graphs", 0)

            def decode():
                return model.generate(src, mask, "image", tgt, max_len=steps, min_len=steps, compile_step=backend)

            if backend in INDUCTOR and tgt == "lmx":  # the generated code of the step, to count its kernels
                compiled, codes = run_and_get_code(decode)
                if len(codes) != 1:
                    raise RuntimeError(f"the decoding step compiled to {len(codes)} graphs, expected one")
                out["decode_compiled_step_kernels"] = step_kernels(codes[0])
            else:
                compiled = decode()
            graphs = torch._dynamo.utils.counters["stats"].get("unique_graphs", 0) - before
            eager = model.generate(src, mask, "image", tgt, max_len=steps, min_len=steps)
            out[f"decode_compiled_{tgt}_recompiles"] = max(0, graphs - 1)
            out[f"decode_compiled_{tgt}_same_tokens"] = int(all(torch.equal(a, b) for a, b in zip(compiled, eager)))
    out["decode_compiled_graph_breaks"] = int(sum(torch._dynamo.utils.counters["graph_break"].values()))
    return out


def main(argv: list[str] | None = None) -> dict[str, float]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=6)
    ap.add_argument("--src-len", type=int, default=48)
    ap.add_argument("--tgt-len", type=int, default=48)
    ap.add_argument("--steps", type=int, default=20, help="decoding steps counted (default 20)")
    ap.add_argument("--cases", default="fp32,autocast,bf16", help="comma-separated precision cases")
    ap.add_argument("--compile", nargs="?", const="eager", default=None, metavar="BACKEND[,BACKEND]",
                    help="also compile the decoding step (torch.compile backend, default 'eager': tracing only; "
                         "'max-autotune': inductor with GEMM templates, weights frozen) and count recompiles and graph "
                         "breaks over --steps steps; several backends comma-separated")
    ap.add_argument("--kinds", default="dense,moe", help="comma-separated decoder kinds (dense, moe)")
    ap.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    batch = mixed_batch(args.batch, args.src_len, args.tgt_len)
    out: dict[str, float] = {}
    kinds = args.kinds.split(",")
    if not set(kinds) <= {"dense", "moe"}:
        ap.error(f"--kinds: unknown {sorted(set(kinds) - {'dense', 'moe'})} (dense, moe)")
    for case in args.cases.split(","):
        if case not in ("fp32", "autocast", "bf16"):
            ap.error(f"--cases: unknown {case!r} (fp32, autocast, bf16)")
        dtype = torch.bfloat16 if case == "bf16" else torch.float32
        for kind in kinds:
            model = build(kind == "moe", dtype, max(args.src_len, args.tgt_len) + args.steps + 8)
            counter = count_train_step(model, batch, amp=case == "autocast")
            tag = f"{case}_{kind}"
            out[f"train_{tag}_aten_ops"] = counter.total
            out[f"train_{tag}_casts"] = counter.casts
            out[f"train_{tag}_view_backward_copies"] = counter.view_backward
            ops, syncs = count_decode(model, args.steps, amp=case == "autocast")
            out[f"decode_{tag}_ops_per_step"] = round(ops, 1)
            out[f"decode_{tag}_host_syncs_per_step"] = round(syncs, 2)
            for name in ("train_%s_aten_ops", "train_%s_casts", "train_%s_view_backward_copies",
                         "decode_%s_ops_per_step", "decode_%s_host_syncs_per_step"):
                print(f"{name % tag} {out[name % tag]}", flush=True)
    for backend in args.compile.split(",") if args.compile else ():
        prefix = "decode_autotuned" if backend == AUTOTUNE else "decode_compiled"
        for kind in kinds:
            model = build(kind == "moe", torch.float32, args.src_len + args.steps + 8)
            figures = compiled_decode(model, args.steps, backend)
            if "decode_compiled_step_kernels" in figures:  # inductor: plus the eager operators around the step
                figures["decode_compiled_kernels_per_step"] = round(
                    figures["decode_compiled_step_kernels"] + count_outside_fused_step(model, args.steps), 2)
            for key, value in figures.items():
                key = key.replace("decode_compiled", f"{prefix}_{kind}")
                out[key] = value
                print(f"{key} {value}", flush=True)
    if args.json:
        tmp = Path(args.json + ".tmp")
        tmp.write_text(json.dumps(out, indent=1) + "\n")
        tmp.replace(args.json)
    return out


if __name__ == "__main__":
    main()
