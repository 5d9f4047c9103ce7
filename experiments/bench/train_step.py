"""Training-step throughput of the translator against same-shape baselines, in one process.

Runs (each model: FLOP count, warm-up steps, then ``--rounds`` rounds of timed steps interleaved across the
models, median round reported; CUDA events on GPU, perf_counter on CPU):

* ours, dense decoder FFN (``shared_across_modalities=True``);
* ours, modality-routed MoE decoder (one FFN per target modality, hard routing: equal active parameters);
* optionally ours with learned top-K routing among E experts per modality (``--topk E,K``; experts
  ``d_ff * K / E`` wide, so the active FFN width stays ``d_ff``);
* ``torch.nn.Transformer`` of the same shape (pre-LN, GELU, learned positions, one 4096-way output head);
* HF ``transformers`` BART of the same shape, only when ``transformers`` is importable.

Our batch mixes tasks: OMR (image -> lmx), AMT (audio -> midi), image -> audio (a third each; image/audio are
4 codebooks x 1024 codes, lmx/midi vocabularies 4092 + 4 specials); every row is full length, so all models
see ``batch * (src_len + tgt_len)`` tokens per step. FLOPs are counted with
``torch.utils.flop_counter.FlopCounterMode`` over forward + backward; MFU is relative to a matmul ceiling
measured in the same run (bf16 8192^3 on CUDA, float32 1024^3 on CPU).

``--only`` picks the models (dense, moe, moe_split: the MoE with per-group slices instead of one grouped GEMM,
topk, torch, bart); ``--compile [NAMES]`` compiles all or the named
ones (the others stay eager in the same table). After the table (and the JSON), optionally:

* ``--sync-check``: a few eager steps of each of our models under ``torch.cuda.set_sync_debug_mode("warn")``
  (CUDA) and :class:`musicmoe.models.hostsync.HostSyncCounter` (any device); counts and places of host syncs;
* ``--profile FILE``: ``torch.profiler`` over a few steps of each of our models: the top operations/kernels by
  device (CPU: self CPU) time and the kernel time by kind (matmul, attention, elementwise, ...), into FILE.

    python experiments/bench/train_step.py --size small --device cpu
    python experiments/bench/train_step.py --size paper --device cuda [--compile] --json bench.json
    python experiments/bench/train_step.py --size paper --device cuda --sync-check --profile profile.txt
"""

from __future__ import annotations

import sys
from pathlib import Path

# run as a script, this folder is sys.path[0]; a sibling named like a stdlib module (tokenize.py) would shadow it
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)

import argparse
import collections
import contextlib
import json
import math
import os
import platform
import time
import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from musicmoe.models import ModelConfig, Translator, VocabSpec, active_params, collate, count_params, param_groups
from musicmoe.models.moe import GroupedMoE

SIZES = {
    "small": dict(model=dict(d_model=128, n_heads=4, enc_layers=2, dec_layers=2, d_ff=512, subdecoder_layers=1,
                             subdecoder_dim=64, subdecoder_heads=2),
                  batch=6, src_len=64, tgt_len=64),
    "paper": dict(model=dict(d_model=1024, n_heads=16, enc_layers=12, dec_layers=12, d_ff=4096, subdecoder_layers=2,
                             subdecoder_dim=512, subdecoder_heads=8),
                  batch=16, src_len=512, tgt_len=512),
}
VOCAB = VocabSpec.build(lmx_vocab_size=4092, midi_vocab_size=4092)
BASELINE_VOCAB = 4096
TASKS = [("image", "lmx"), ("audio", "midi"), ("image", "audio")]
CASE_KEYS = ("dense", "moe", "moe_split", "topk", "torch", "bart")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_it(fn: Callable[[], None], device: torch.device, warmup: int, steps: int) -> float:
    """Seconds per call of ``fn`` after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    sync(device)
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(steps):
            fn()
        end.record()
        torch.cuda.synchronize(device)
        return start.elapsed_time(end) / 1000.0 / steps
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - t0) / steps


def matmul_ceiling(device: torch.device) -> tuple[float, str]:
    """Measured matmul FLOP/s (bf16 8192^3 on CUDA, float32 1024^3 on CPU)."""
    n, dtype, reps = (8192, torch.bfloat16, 20) if device.type == "cuda" else (1024, torch.float32, 5)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    sec = time_it(lambda: torch.mm(a, b), device, warmup=3, steps=reps)
    return 2 * n ** 3 / sec, f"{str(dtype).replace('torch.', '')} {n}^3 matmul"


def mixed_batch(batch: int, src_len: int, tgt_len: int, seed: int = 0):
    """Full-length rows, tasks in turn; source = content + EOS, target = BOS + content + EOS."""
    gen = torch.Generator().manual_seed(seed)
    examples = []
    for i in range(batch):
        src_m, tgt_m = TASKS[i % len(TASKS)]
        s, t = VOCAB[src_m], VOCAB[tgt_m]
        src = torch.randint(0, s.vocab_size, (s.codebooks, src_len - 1) if s.multi_codebook else (src_len - 1,),
                            generator=gen)
        tgt = torch.randint(0, t.vocab_size, (t.codebooks, tgt_len - 2) if t.multi_codebook else (tgt_len - 2,),
                            generator=gen)
        examples.append({"src": src, "src_modality": src_m, "tgt": tgt, "tgt_modality": tgt_m, "task": i % 3})
    return collate(examples, VOCAB)


class TorchTransformerBaseline(nn.Module):
    """``torch.nn.Transformer`` (pre-LN, GELU) with token + learned position embeddings and an output head."""

    def __init__(self, cfg: ModelConfig, max_len: int) -> None:
        super().__init__()
        d = cfg.d_model
        self.src_emb = nn.Embedding(BASELINE_VOCAB, d)
        self.tgt_emb = nn.Embedding(BASELINE_VOCAB, d)
        self.pos = nn.Embedding(max_len, d)
        with warnings.catch_warnings():  # "enable_nested_tensor is True, but ... norm_first was True"
            warnings.simplefilter("ignore", UserWarning)
            self.core = nn.Transformer(d, cfg.n_heads, cfg.enc_layers, cfg.dec_layers, cfg.d_ff, cfg.dropout,
                                       activation="gelu", batch_first=True, norm_first=True)
        self.head = nn.Linear(d, BASELINE_VOCAB)

    def forward(self, src: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        pos_s = self.pos(torch.arange(src.shape[1], device=src.device))
        pos_t = self.pos(torch.arange(tgt.shape[1] - 1, device=src.device))
        causal = nn.Transformer.generate_square_subsequent_mask(tgt.shape[1] - 1, device=src.device)
        h = self.core(self.src_emb(src) + pos_s, self.tgt_emb(tgt[:, :-1]) + pos_t, tgt_mask=causal,
                      tgt_is_causal=True)
        return F.cross_entropy(self.head(h).float().flatten(0, 1), tgt[:, 1:].flatten())


def bart_baseline(cfg: ModelConfig, max_len: int):
    """HF BART of the same shape, or ``None`` with the reason when transformers is not installed."""
    try:
        from transformers import BartConfig, BartForConditionalGeneration
    except ImportError as e:
        return None, f"transformers not importable ({e.__class__.__name__}); BART skipped"
    bc = BartConfig(vocab_size=BASELINE_VOCAB, d_model=cfg.d_model, encoder_layers=cfg.enc_layers,
                    decoder_layers=cfg.dec_layers, encoder_attention_heads=cfg.n_heads,
                    decoder_attention_heads=cfg.n_heads, encoder_ffn_dim=cfg.d_ff, decoder_ffn_dim=cfg.d_ff,
                    max_position_embeddings=max_len, dropout=cfg.dropout, attention_dropout=0.0,
                    activation_dropout=0.0)
    try:
        model = BartForConditionalGeneration._from_config(bc, attn_implementation="sdpa")
    except (TypeError, ValueError):
        model = BartForConditionalGeneration(bc)
    return model, ""


class Bf16MasterAdamW:
    """What DeepSpeed's bf16 mode runs: bfloat16 parameters and gradients, each in one flat buffer (the parameters
    and their ``.grad`` are views into it), and AdamW on an fp32 master copy of the flat parameters: per step one
    cast of the gradients up, the update, one cast of the weights down (all decayed alike: a benchmark)."""

    def __init__(self, model: nn.Module, lr: float, weight_decay: float, device: torch.device) -> None:
        params = [p for p in model.parameters() if p.requires_grad]
        n = sum(p.numel() for p in params)
        self.flat = torch.empty(n, dtype=torch.bfloat16, device=device)
        self.grad = torch.zeros(n, dtype=torch.bfloat16, device=device)
        o = 0
        for p in params:
            k = p.numel()
            self.flat[o: o + k].copy_(p.detach().reshape(-1))
            p.data = self.flat[o: o + k].view_as(p)
            p.grad = self.grad[o: o + k].view_as(p)  # backward accumulates into the flat buffer
            o += k
        self.master = self.flat.float().requires_grad_(True)
        kw = {"fused": True} if device.type == "cuda" else {"foreach": True}
        self.opt = torch.optim.AdamW([self.master], lr=lr, weight_decay=weight_decay, **kw)
        self.state = self.opt.state

    def step(self) -> None:
        self.master.grad = self.grad.float()
        self.opt.step()
        self.flat.copy_(self.master.detach())

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.grad.zero_()  # the gradients stay views into the flat buffer


class Case:
    """One model with its optimizer and training step, timed in rounds interleaved with the other cases."""

    def __init__(self, key: str, name: str, model: nn.Module, loss_fn: Callable[[], torch.Tensor],
                 device: torch.device, args: argparse.Namespace, active: int | None = None) -> None:
        self.key, self.name, self.model, self.device = key, name, model.to(device).train(), device
        self.ours = key in ("dense", "moe", "moe_split", "topk")
        self.active = active or count_params(model)
        opt_kw = {"fused": True} if device.type == "cuda" else {"foreach": True}
        self.precision = args.precision
        if self.precision == "bf16":
            self.opt = Bf16MasterAdamW(self.model, 1e-4, 0.01, device)
        else:
            self.opt = torch.optim.AdamW(param_groups(model, 0.01), lr=1e-4, **opt_kw)
        self.amp = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if self.precision == "autocast" \
            else contextlib.nullcontext
        self.loss_fn = loss_fn
        self.compiled = args.compile is not None and (args.compile == "all" or key in args.compile.split(","))
        self.fwd = torch.compile(loss_fn, dynamic=False, backend=args.compile_backend) if self.compiled else loss_fn
        self.times: list[float] = []

    def step(self, eager: bool = False) -> None:
        with self.amp():
            loss = (self.loss_fn if eager else self.fwd)()
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)

    def count_flops(self) -> int:
        """FLOPs of forward + backward of the eager model (compiled code is not seen by the counter); counted with
        per-group expert products, the same arithmetic as the grouped GEMM, which the counter has no formula for."""
        moes = [m for m in self.model.modules() if isinstance(m, GroupedMoE)]
        grouped = [m.grouped_mm for m in moes]
        for m in moes:
            m.grouped_mm = False
        try:
            with FlopCounterMode(display=False) as counter:
                with self.amp():
                    loss = self.loss_fn()
                loss.backward()
        finally:
            for m, g in zip(moes, grouped):
                m.grouped_mm = g
        self.opt.zero_grad(set_to_none=True)
        return counter.get_total_flops()

    def peak_mib(self) -> float:
        """CUDA: weights + optimizer state + the peak extra memory of one step (grads, activations)."""
        if self.device.type != "cuda":
            return float("nan")
        torch.cuda.synchronize(self.device)
        before = torch.cuda.memory_allocated(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        self.step()
        torch.cuda.synchronize(self.device)
        extra = torch.cuda.max_memory_allocated(self.device) - before
        state = sum(p.numel() * p.element_size() for p in self.model.parameters())
        state += sum(t.numel() * t.element_size() for st in self.opt.state.values() for t in st.values()
                     if isinstance(t, torch.Tensor))
        if isinstance(self.opt, Bf16MasterAdamW):  # the fp32 master weights and the flat bf16 gradients
            state += self.opt.master.numel() * 4 + self.opt.grad.numel() * 2
        return (state + extra) / 2 ** 20


def sync_check(case: Case, steps: int) -> dict:
    """Host syncs in ``steps`` eager training steps: CUDA's sync debug mode (every synchronising CUDA call, the
    backward pass and the optimizer included; CUDA only) and the Python-level :class:`HostSyncCounter` (forward
    and backward, any device)."""
    from musicmoe.models.hostsync import HostSyncCounter

    cuda = case.device.type == "cuda"
    case.step(eager=True)  # lazy initialisation (e.g. optimizer state) is not part of a steady step
    sync(case.device)
    counter = HostSyncCounter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if cuda:
            torch.cuda.set_sync_debug_mode("warn")
        try:
            for _ in range(steps):
                with counter:  # forward and backward (the CPU optimizer reads its step counts: not ours to fix)
                    with case.amp():
                        loss = case.loss_fn()
                    loss.backward()
                case.opt.step()
                case.opt.zero_grad(set_to_none=True)
        finally:
            if cuda:
                torch.cuda.set_sync_debug_mode(0)
    sync(case.device)
    cuda_syncs = [w for w in caught if "synchroniz" in str(w.message)]
    places = collections.Counter(f"{Path(w.filename).name}:{w.lineno}" for w in cuda_syncs)
    return {"steps": steps, "cuda_syncs": len(cuda_syncs) if cuda else None,
            "cuda_places": [f"{n}x {where}" for where, n in places.most_common(8)],
            "python_syncs": len(counter.events), "python_report": counter.report(8)}


def kernel_kind(name: str) -> str:
    n = name.lower()
    for kind, marks in (("attention", ("flash", "fmha", "attention", "sdpa", "efficient_attention")),
                        ("matmul", ("gemm", "cutlass", "cublas", "sm80_", "sm90_", "nvjet", "matmul", "wgmma")),
                        ("optimizer", ("multi_tensor", "adam", "foreach")),
                        ("norm/softmax/reduce", ("norm", "softmax", "reduce", "cross_entropy", "nll", "sum")),
                        ("copy/cast/index", ("copy", "cast", "index", "gather", "scatter", "cat", "memcpy",
                                             "memset", "fill", "embedding")),
                        ("elementwise", ("elementwise", "vectorized", "unrolled", "gelu", "dropout", "mul", "add"))):
        if any(m in n for m in marks):
            return kind
    return "other"


def profile_cases(cases: list[Case], steps: int, path: str) -> list[str]:
    """torch.profiler over ``steps`` eager-or-compiled steps of each case; tables into ``path``; summary lines."""
    from torch.profiler import ProfilerActivity, profile

    cuda = cases[0].device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    sort_key = "self_cuda_time_total" if cuda else "self_cpu_time_total"
    lines, text = [], []
    for case in cases:
        case.step()
        sync(case.device)
        with profile(activities=activities) as prof:
            for _ in range(steps):
                case.step()
            sync(case.device)
        events = prof.key_averages()
        text.append(f"=== {case.name}{' (compiled)' if case.compiled else ''}: {steps} training steps, top 15 by "
                    f"{sort_key} ===")
        text.append(events.table(sort_by=sort_key, row_limit=15, max_name_column_width=70))
        if cuda:
            kinds: collections.Counter = collections.Counter()
            for evt in prof.events():
                if evt.device_type == torch.autograd.DeviceType.CUDA:
                    kinds[kernel_kind(evt.name)] += evt.device_time_total if hasattr(evt, "device_time_total") \
                        else evt.cuda_time_total
            total = sum(kinds.values()) or 1.0
            split = ", ".join(f"{k} {v / total * 100:.0f}%" for k, v in kinds.most_common())
            text.append(f"kernel time by kind ({total / 1e3 / steps:.1f} ms of kernels per step): {split}\n")
            lines.append(f"{case.name}: {total / 1e3 / steps:.1f} ms kernels/step; {split}")
    with open(path, "w") as f:
        f.write("\n".join(text))
    print(f"profile tables written to {path}")
    return lines


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", choices=sorted(SIZES), default="small")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per round (default 3 on CPU, 10 on CUDA)")
    ap.add_argument("--rounds", type=int, default=3, help="timing rounds (median reported)")
    ap.add_argument("--warmup", type=int, default=None, help="warm-up steps (default 2 on CPU, 5 on CUDA)")
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--src-len", type=int, default=None)
    ap.add_argument("--tgt-len", type=int, default=None)
    ap.add_argument("--topk", default=None, metavar="E,K",
                    help="also run E experts per modality with top-K routing, experts d_ff*K/E wide")
    ap.add_argument("--codebook-mode", choices=["subdecoder", "delay"], default="subdecoder")
    ap.add_argument("--only", default=None, metavar="NAMES",
                    help=f"comma-separated subset of {','.join(CASE_KEYS)} (default: all; topk needs --topk)")
    ap.add_argument("--compile", nargs="?", const="all", default=None, metavar="NAMES",
                    help="torch.compile the loss computation of every model, or of the named ones (e.g. dense,moe)")
    ap.add_argument("--compile-backend", default="inductor",
                    help="torch.compile backend (aot_eager: a quick CPU check of the compiled path without codegen)")
    ap.add_argument("--fp32", action="store_true", help="no bf16 autocast on CUDA (= --precision fp32)")
    ap.add_argument("--precision", choices=["autocast", "bf16", "fp32"], default=None,
                    help="autocast: fp32 parameters under bf16 autocast (CUDA default); bf16: bfloat16 parameters and "
                         "gradients with fp32 master weights in flat buffers, as DeepSpeed's bf16 mode trains; fp32 "
                         "(CPU default)")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (default 1 on CPU: stable timings on a "
                    "shared machine)")
    ap.add_argument("--sync-check", type=int, nargs="?", const=3, default=0, metavar="STEPS",
                    help="count host-device syncs in STEPS (default 3) eager steps of each of our models")
    ap.add_argument("--profile", default=None, metavar="FILE", help="profile a few steps of each of our models")
    ap.add_argument("--profile-steps", type=int, default=3)
    ap.add_argument("--json", default=None, help="write the result rows to this JSON file")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda but CUDA is not available")
    only = set(CASE_KEYS if args.only is None else args.only.split(","))
    if only - set(CASE_KEYS):
        ap.error(f"--only: unknown {sorted(only - set(CASE_KEYS))}; choose from {', '.join(CASE_KEYS)}")
    if args.compile not in (None, "all") and set(args.compile.split(",")) - set(CASE_KEYS):
        ap.error(f"--compile: unknown names in {args.compile!r}; choose from {', '.join(CASE_KEYS)}")
    cpu = device.type == "cpu"
    if args.precision is None:
        args.precision = "fp32" if cpu or args.fp32 else "autocast"
    if cpu:
        torch.set_num_threads(args.threads or 1)
    args.steps = args.steps or (3 if cpu else 10)
    args.warmup = args.warmup if args.warmup is not None else (2 if cpu else 5)
    size = SIZES[args.size]
    b = args.batch or size["batch"]
    s_len, t_len = args.src_len or size["src_len"], args.tgt_len or size["tgt_len"]
    tokens = b * (s_len + t_len)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    torch.manual_seed(0)
    t_start = time.perf_counter()

    ceiling, ceiling_what = matmul_ceiling(device)
    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    threads = f" ({torch.get_num_threads()} thread(s))" if cpu else ""
    print(f"device {dev_name}{threads}, torch {torch.__version__}, ceiling {ceiling / 1e12:.3f} TFLOP/s "
          f"({ceiling_what})")
    precision = {"fp32": "fp32", "autocast": "bf16 autocast", "bf16": "bf16 parameters, fp32 master weights"}
    print(f"size {args.size}: batch {b}, src {s_len}, tgt {t_len} tokens/frames per row; tasks "
          f"{', '.join(f'{a}->{c}' for a, c in TASKS)}; {precision[args.precision]}"
          f"{f', compiled: {args.compile}' if args.compile else ''}", flush=True)

    batch = mixed_batch(b, s_len, t_len).to(device)
    base = dict(size["model"], dropout=0.1, codebook_mode=args.codebook_mode, max_src_len=s_len,
                max_tgt_len=t_len, validate_inputs=False)
    variants = [("dense", "ours dense", dict(shared_across_modalities=True)),
                ("moe", "ours MoE (per-modality FFN)", dict(shared_across_modalities=False)),
                ("moe_split", "ours MoE, per-group slices", dict(shared_across_modalities=False))]
    if args.topk:
        e, k = (int(v) for v in args.topk.split(","))
        variants.append(("topk", f"ours MoE top-{k} of {e}/modality",
                         dict(experts_per_modality=e, top_k=k, expert_d_ff=base["d_ff"] * k // e)))
    cases: list[Case] = []
    for key, name, extra in variants:
        if key not in only:
            continue
        with device:  # parameters initialised where they live (fast on a GPU)
            model = Translator(ModelConfig(**base, **extra), VOCAB)
        if key == "moe_split":  # the experts of each group on its own rows instead of one grouped GEMM
            for module in model.modules():
                if isinstance(module, GroupedMoE):
                    module.grouped_mm = False
        cases.append(Case(key, name, model, lambda m=model: m(batch).loss, device, args, active_params(model)))
    cfg = ModelConfig(**base)
    gen = torch.Generator().manual_seed(1)
    src = torch.randint(0, BASELINE_VOCAB, (b, s_len), generator=gen).to(device)
    tgt = torch.randint(0, BASELINE_VOCAB, (b, t_len), generator=gen).to(device)
    note = ""
    if "torch" in only:
        with device:
            torch_model = TorchTransformerBaseline(cfg, max(s_len, t_len))
        cases.append(Case("torch", "torch.nn.Transformer", torch_model, lambda: torch_model(src, tgt), device, args))
    if "bart" in only:
        try:
            with device:
                bart, note = bart_baseline(cfg, max(s_len, t_len))
        except Exception as err:  # a baseline that fails to build must not cost the rest of the run
            bart, note = None, f"building BART failed: {err.__class__.__name__}: {err}"
        if bart is not None:
            mask = torch.ones_like(src)
            dec_in, labels = tgt[:, :-1].contiguous(), tgt[:, 1:].contiguous()  # HF views labels: contiguous only
            cases.append(Case("bart", "HF BART (sdpa)", bart,
                              lambda: bart(input_ids=src, attention_mask=mask, decoder_input_ids=dec_in,
                                           labels=labels).loss, device, args))
    if not cases:
        ap.error("--only selected no model")
    print(f"models built in {time.perf_counter() - t_start:.1f} s", flush=True)
    flops, peaks = {}, {}
    for case in cases:
        t0 = time.perf_counter()
        flops[case.name] = case.count_flops()
        for _ in range(args.warmup):
            case.step()
        peaks[case.name] = case.peak_mib()
        sync(device)
        print(f"  {case.name}: FLOP count, {args.warmup} warm-up steps{' (compiling)' if case.compiled else ''} in "
              f"{time.perf_counter() - t0:.1f} s", flush=True)
    for r in range(args.rounds):  # interleaved rounds: a load change on a shared machine hits every model alike
        for case in cases:
            case.times.append(time_it(case.step, device, 0, args.steps))
        print(f"  round {r + 1}/{args.rounds}: " + ", ".join(f"{c.name} {c.times[-1] * 1e3:.1f} ms"
                                                            for c in cases), flush=True)
    rows = []
    for case in cases:
        sec = sorted(case.times)[len(case.times) // 2]
        f = flops[case.name]
        rows.append({"key": case.key, "name": case.name, "compiled": case.compiled,
                     "params": count_params(case.model), "active": case.active, "sec": sec,
                     "tokens_per_s": tokens / sec, "flops_per_step": f, "flops_per_s": f / sec,
                     "mfu": f / sec / ceiling, "peak_mib": peaks[case.name]})

    by_key = {r["key"]: r for r in rows}
    refs = [by_key[k] for k in ("torch", "bart") if k in by_key]
    unit, scale = ("TFLOP", 1e12) if not cpu else ("GFLOP", 1e9)
    ratio_cols = "".join(f"{'tok/s vs ' + ('torch' if r['key'] == 'torch' else 'BART'):>17}" for r in refs)
    header = (f"{'model':<32}{'params':>9}{'active':>9}{'ms/step':>9}{'tokens/s':>11}{unit + '/step':>12}"
              f"{unit + '/s':>10}{'MFU':>7}{'peak MiB':>10}{ratio_cols}")
    print()
    print(header)
    print("-" * len(header))
    for r in rows:
        peak = "n/a" if math.isnan(r["peak_mib"]) else f"{r['peak_mib']:.0f}"
        ratios = "".join(f"{r['tokens_per_s'] / ref['tokens_per_s']:>17.2f}" for ref in refs)
        name = r["name"] + (" [compiled]" if r["compiled"] else "")
        print(f"{name:<32}{r['params'] / 1e6:>8.1f}M{r['active'] / 1e6:>8.1f}M{r['sec'] * 1e3:>9.1f}"
              f"{r['tokens_per_s']:>11.0f}{r['flops_per_step'] / scale:>12.2f}{r['flops_per_s'] / scale:>10.2f}"
              f"{r['mfu'] * 100:>6.1f}%{peak:>10}{ratios}")
    if note:
        print(f"HF BART: {note}")
    if "dense" in by_key and "moe" in by_key:
        print(f"MoE / dense tokens/s: {by_key['moe']['tokens_per_s'] / by_key['dense']['tokens_per_s']:.3f} "
              f"(active params {by_key['moe']['active'] / 1e6:.1f}M / {by_key['dense']['active'] / 1e6:.1f}M)")
    print("ms/step: median of the timing rounds; peak MiB (CUDA): weights + optimizer state + peak extra memory of "
          "one step")
    print(f"MFU = counted FLOPs per second / measured ceiling ({ceiling / scale:.2f} {unit}/s); tokens = source + "
          f"target tokens (frames) per step = {tokens}", flush=True)
    result = {"device": dev_name, "torch": torch.__version__, "ceiling_flops": ceiling, "args": vars(args),
              "tokens_per_step": tokens, "rows": rows}

    def write() -> None:
        if args.json:
            with open(args.json + ".tmp", "w") as f:
                json.dump(result, f, indent=1)
            os.replace(args.json + ".tmp", args.json)

    write()
    ours = [c for c in cases if c.ours]
    if args.sync_check and ours:
        result["sync_check"] = {}
        print(f"\nhost-device syncs in {args.sync_check} eager training steps (after one untimed step):")
        for case in ours:
            res = sync_check(case, args.sync_check)
            result["sync_check"][case.key] = res
            cuda_part = "" if res["cuda_syncs"] is None else (
                f"CUDA sync debug mode: {res['cuda_syncs']}" + (f" ({'; '.join(res['cuda_places'])})"
                                                                if res["cuda_places"] else "") + "; ")
            print(f"  {case.name}: {cuda_part}Python-level: {res['python_report']}", flush=True)
        write()
    if args.profile and ours:
        result["profile"] = profile_cases(ours, args.profile_steps, args.profile)
        for line in result["profile"]:
            print(f"  {line}")
        write()
    return rows


if __name__ == "__main__":
    main()
