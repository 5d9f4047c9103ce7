"""Greedy decoding speed: KV cache vs full re-decoding, side by side.

For each target (lmx from score images, i.e. OMR; audio from MIDI, i.e. synthesis) and each target length,
one batch is decoded greedily to exactly that many tokens/frames (``min_len = max_len``, so an untrained
model cannot stop early) twice: with the KV cache (``use_cache=True``: one new position per step, cross-
attention keys/values computed once) and by re-running the whole decoder over the prefix every step
(``use_cache=False``). Both must give identical tokens. Reported: seconds, generated tokens/s, speed-up, and
for audio targets the real-time factor (wall time / seconds of audio generated, 75 EnCodec frames per second
of 24 kHz audio; < 1 is faster than real time).

``--profile FILE``: ``torch.profiler`` over a short KV-cache decode (``--profile-len`` steps, first target): the
top operations by device (CPU: self CPU) time, and on CUDA the share of the wall time the GPU spent in kernels (a
low share means the step is bound by kernel launches, not by the GPU).

    python experiments/bench/decode.py --size small --device cpu [--full-max 1024]
    python experiments/bench/decode.py --size paper --device cuda --json decode.json [--profile decode_profile.txt]
    python experiments/bench/decode.py --size paper --device cuda --compile-step --fp32   # compiled, same tokens

``--compile-step``: the static-cache decoding step compiled as one graph (CUDA graphs with inductor on a GPU) as a
third column, with its speed-up over the eager cached step and over full re-decoding.
"""

from __future__ import annotations

import sys
from pathlib import Path

# run as a script, this folder is sys.path[0]; a sibling named like a stdlib module (tokenize.py) would shadow it
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)

import argparse
import contextlib
import json
import os
import platform
import time

import torch

from musicmoe.models import ModelConfig, Translator, VocabSpec, count_params

SIZES = {
    "small": dict(model=dict(d_model=64, n_heads=4, enc_layers=2, dec_layers=2, d_ff=256, subdecoder_layers=1,
                             subdecoder_dim=32, subdecoder_heads=2),
                  batch=2, src_len=32),
    "paper": dict(model=dict(d_model=1024, n_heads=16, enc_layers=12, dec_layers=12, d_ff=4096, subdecoder_layers=2,
                             subdecoder_dim=512, subdecoder_heads=8),
                  batch=8, src_len=512),
}
VOCAB = VocabSpec.build(lmx_vocab_size=4092, midi_vocab_size=4092)
SOURCES = {"lmx": "image", "audio": "midi", "midi": "audio", "image": "lmx"}
FRAMES_PER_SECOND = 75.0


def timed(fn, device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return out, time.perf_counter() - t0


def random_source(tgt: str, b: int, s_len: int, device: torch.device, gen: torch.Generator | None = None):
    """``(source modality, tokens (b, s_len, Qmax), all-True mask)``: random ids of the source ``SOURCES[tgt]``."""
    src_m = SOURCES[tgt]
    spec = VOCAB[src_m]
    src = torch.full((b, s_len, VOCAB.max_codebooks), spec.pad_id, dtype=torch.long)
    src[:, :, : spec.codebooks] = torch.randint(0, spec.vocab_size, (b, s_len, spec.codebooks), generator=gen)
    return src_m, src.to(device), torch.ones(b, s_len, dtype=torch.bool, device=device)


def profile_decode(model, tgt: str, b: int, s_len: int, length: int, amp, device: torch.device, path: str) -> str:
    """Profile a KV-cache greedy decode of ``length`` steps; write the tables to ``path``; return a summary."""
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    src_m, src, mask = random_source(tgt, b, s_len, device)
    run = lambda: model.generate(src, mask, src_m, tgt, max_len=length, min_len=length)  # noqa: E731
    with amp():
        run()
        with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])) as prof:
            _, wall = timed(run, device)
    sort_key = "self_cuda_time_total" if cuda else "self_cpu_time_total"
    table = prof.key_averages().table(sort_by=sort_key, row_limit=15, max_name_column_width=70)
    summary = f"profile of a {length}-step KV-cache decode ({src_m}->{tgt}, batch {b}): {wall:.2f} s wall"
    if cuda:
        kernels = sum(e.device_time_total for e in prof.events()
                      if e.device_type == torch.autograd.DeviceType.CUDA) / 1e6
        launches = sum(1 for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA)
        summary += (f" under the profiler, GPU busy {kernels:.2f} s ({kernels / wall:.0%}), {launches} kernels = "
                    f"{launches / length:.0f} per step")
    with open(path, "w") as f:
        f.write(f"{summary}\n{table}\n")
    return summary


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", choices=sorted(SIZES), default="small")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--lengths", default="256,1024", help="comma-separated target lengths (tokens or frames)")
    ap.add_argument("--targets", default="lmx,audio", help="comma-separated target modalities")
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--src-len", type=int, default=None)
    ap.add_argument("--codebook-mode", choices=["subdecoder", "delay"], default="subdecoder")
    ap.add_argument("--moe", action="store_true", help="modality-routed decoder FFNs (default: dense)")
    ap.add_argument("--full-max", type=int, default=None,
                    help="skip full re-decoding above this length (quadratic in the length; default: 256 on CPU, "
                         "no limit on CUDA)")
    ap.add_argument("--fp32", action="store_true", help="no bf16 autocast on CUDA")
    ap.add_argument("--compile-step", nargs="?", const="inductor", default=None, metavar="BACKEND",
                    help="also decode with the static cache and the step compiled as one graph (generate("
                         "compile_step=BACKEND); inductor = CUDA graphs on a GPU), compiled before timing; its tokens "
                         "must equal the KV-cache tokens")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (default 1 on CPU)")
    ap.add_argument("--json", default=None, help="write the result rows to this JSON file")
    ap.add_argument("--profile", default=None, metavar="FILE", help="profile a short KV-cache decode into FILE")
    ap.add_argument("--profile-len", type=int, default=64)
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda but CUDA is not available")
    if device.type == "cpu":
        torch.set_num_threads(args.threads or 1)
    if args.full_max is None and device.type == "cpu":
        args.full_max = 256
    size = SIZES[args.size]
    b, s_len = args.batch or size["batch"], args.src_len or size["src_len"]
    lengths = [int(x) for x in args.lengths.split(",")]
    targets = args.targets.split(",")
    cfg = ModelConfig(**size["model"], dropout=0.0, codebook_mode=args.codebook_mode,
                      shared_across_modalities=not args.moe, max_src_len=s_len, max_tgt_len=max(lengths) + 8)
    torch.manual_seed(0)
    with device:  # parameters initialised where they live (fast on a GPU)
        model = Translator(cfg, VOCAB).eval()
    amp = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if device.type == "cuda" and not args.fp32 \
        else contextlib.nullcontext
    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(f"device {dev_name}, torch {torch.__version__}, {count_params(model) / 1e6:.1f}M params "
          f"({args.size}, {'MoE' if args.moe else 'dense'}, {args.codebook_mode}), batch {b}, source {s_len}, "
          f"{'bf16 autocast' if device.type == 'cuda' and not args.fp32 else 'fp32'}"
          f"{f', {torch.get_num_threads()} thread(s)' if device.type == 'cpu' else ''}", flush=True)

    rows = []
    gen = torch.Generator().manual_seed(0)
    for tgt in targets:
        src_m, src, mask = random_source(tgt, b, s_len, device, gen)
        with amp():  # warm-up (allocator, kernels)
            model.generate(src, mask, src_m, tgt, max_len=4, min_len=4)
        for length in lengths:
            row = {"target": tgt, "source": src_m, "length": length, "batch": b}
            for use_cache in (True, False):
                key = "cache" if use_cache else "full"
                if not use_cache and args.full_max is not None and length > args.full_max:
                    row[key] = None
                    continue
                with amp():
                    out, sec = timed(lambda: model.generate(src, mask, src_m, tgt, max_len=length, min_len=length,
                                                            use_cache=use_cache), device)
                assert all(o.shape[-1] == length for o in out), "decoding stopped early"
                row[key] = sec
                row[f"{key}_tokens"] = out
                print(f"  {src_m}->{tgt} {length}: {'KV cache' if use_cache else 'full re-decoding'} {sec:.2f} s",
                      flush=True)
            if args.compile_step:
                kw = dict(max_len=length, min_len=length, compile_step=args.compile_step)
                with amp():
                    t0 = time.perf_counter()
                    timed(lambda: model.generate(src, mask, src_m, tgt, **kw), device)  # compile (and warm up)
                    row["compile_s"] = time.perf_counter() - t0
                    out, sec = timed(lambda: model.generate(src, mask, src_m, tgt, **kw), device)
                row["compiled"] = sec
                row["compiled_identical"] = all(torch.equal(a, c) for a, c in zip(out, row["cache_tokens"]))
                print(f"  {src_m}->{tgt} {length}: compiled step {sec:.2f} s (compiling {row['compile_s']:.0f} s), "
                      f"{'same' if row['compiled_identical'] else 'DIFFERENT'} tokens", flush=True)
            if row.get("full") is not None:
                row["identical"] = all(torch.equal(a, c) for a, c in zip(row["cache_tokens"], row["full_tokens"]))
            row.pop("cache_tokens", None)
            row.pop("full_tokens", None)
            rows.append(row)

    header = (f"{'task':<14}{'length':>7}{'cache s':>9}{'cache tok/s':>13}{'full s':>9}{'full tok/s':>12}"
              f"{'speed-up':>10}{'RTF cache':>11}{'RTF full':>10}{'same tokens':>13}")
    print()
    print(header)
    print("-" * len(header))
    for r in rows:
        n = r["batch"] * r["length"]
        audio_s = n / FRAMES_PER_SECOND if r["target"] == "audio" else None
        full = r.get("full")

        def fmt(v, spec):
            return format(v, spec) if v is not None else "-"

        print(f"{r['source'] + '->' + r['target']:<14}{r['length']:>7}{r['cache']:>9.2f}{n / r['cache']:>13.0f}"
              f"{fmt(full, '>9.2f'):>9}{fmt(n / full if full else None, '>12.0f'):>12}"
              f"{fmt(full / r['cache'] if full else None, '>9.1f') + 'x' if full else '-':>10}"
              f"{fmt(r['cache'] / audio_s if audio_s else None, '>11.3f'):>11}"
              f"{fmt(full / audio_s if (audio_s and full) else None, '>10.3f'):>10}"
              f"{('yes' if r['identical'] else 'NO') if 'identical' in r else '-':>13}")
    if args.full_max is not None and any(r.get("full") is None for r in rows):
        print(f"full re-decoding skipped above {args.full_max} tokens (--full-max; quadratic in the length)")
    print(f"tokens/s: generated tokens (frames for audio) of the whole batch of {b} per second; RTF: wall time / "
          f"seconds of audio generated for the batch ({FRAMES_PER_SECOND:.0f} frames/s)")
    result = {"device": dev_name, "args": vars(args), "rows": rows}
    if args.profile:
        result["profile"] = profile_decode(model, targets[0], b, s_len, args.profile_len, amp, device, args.profile)
        print(result["profile"])
    if args.json:
        with open(args.json + ".tmp", "w") as f:
            json.dump(result, f, indent=1)
        os.replace(args.json + ".tmp", args.json)
    for r in rows:
        if r.get("compiled") is not None:
            print(f"compiled step {r['source']}->{r['target']} {r['length']}: {r['compiled']:.2f} s, "
                  f"{r['cache'] / r['compiled']:.1f}x the eager KV-cache step"
                  + (f", {r['full'] / r['compiled']:.1f}x full re-decoding" if r.get("full") else ""))
    if any(r.get("identical") is False for r in rows):
        raise SystemExit("KV-cache decoding differs from full re-decoding")
    if any(r.get("compiled_identical") is False for r in rows):
        raise SystemExit("the compiled decoding step differs from the eager KV-cache step")
    return rows


if __name__ == "__main__":
    main()
