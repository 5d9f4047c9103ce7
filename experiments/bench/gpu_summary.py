"""The short summary that ``experiments/bench/gpu_check.sh`` prints last: steps, numbers, issue 7's targets.

Reads what the steps left in OUT (``steps.tsv``, ``train_eager.json``, ``train_compiled.json``, ``decode.json``,
``profile.txt``, the logs) and prints a compact table; a failed step shows the end of its log. Standard library
only (it runs on the GPU machine's bare Python too).

    python experiments/bench/gpu_summary.py OUT
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

TARGETS = {"vs_bart": 1.5, "mfu": 0.45, "moe_vs_dense": 0.95, "kv_speedup": 20.0}


def load(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def tail(path: Path, n: int = 6) -> list[str]:
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return []
    return [ln[:200] for ln in lines[-n:]]


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("MET" if ok else "MISSED")


def train_rows(result: dict, label: str) -> list[str]:
    rows = result["rows"]
    bart = next((r for r in rows if r["key"] == "bart"), None)
    out = [f"train step, {label}: {result['device']}, torch {result.get('torch', '?')}, ceiling "
           f"{result['ceiling_flops'] / 1e12:.0f} TFLOP/s, {result['tokens_per_step']} tokens/step"]
    out.append(f"  {'model':<30}{'ms/step':>9}{'tok/s':>10}{'TFLOP/s':>9}{'MFU':>7}{'vs BART':>9}{'peak GiB':>10}")
    for r in rows:
        name = r["name"] + (" [c]" if r.get("compiled") else "")
        vs = f"{r['tokens_per_s'] / bart['tokens_per_s']:.2f}" if bart else "-"
        peak = r.get("peak_mib")
        peak_s = f"{peak / 1024:.1f}" if isinstance(peak, (int, float)) and peak == peak else "-"
        out.append(f"  {name[:30]:<30}{r['sec'] * 1e3:>9.1f}{r['tokens_per_s']:>10.0f}{r['flops_per_s'] / 1e12:>9.1f}"
                   f"{r['mfu'] * 100:>6.1f}%{vs:>9}{peak_s:>10}")
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    out_dir = Path(argv[0]) if argv else Path(".")
    lines = ["", "=" * 30 + " GPU CHECK SUMMARY " + "=" * 30]
    steps = []
    for ln in (out_dir / "steps.tsv").read_text().splitlines() if (out_dir / "steps.tsv").exists() else []:
        parts = ln.split("\t")
        if len(parts) >= 3:
            steps.append(parts)
    lines += [f"  {ln}" for ln in tail(out_dir / "env.log", 4) if not ln.startswith("==") and "WARNING" not in ln]
    lines.append(f"  {'step':<22}{'status':<16}wall s / limit")
    for name, rc, wall, *limit in steps:
        status = {"0": "ok", "124": "TIMEOUT", "137": "KILLED"}.get(rc, rc if not rc.isdigit() else f"FAIL rc={rc}")
        lines.append(f"  {name:<22}{status:<16}{wall:>6} / {limit[0] if limit else '-'}")
    failed = [s[0] for s in steps if s[1] not in ("0", "skipped")]

    results = {k: load(out_dir / f"{k}.json")
               for k in ("train_eager", "train_compiled", "train_compiled_dense", "decode")}
    if results["train_compiled"] and results["train_compiled_dense"]:  # one table of the compiled runs
        results["train_compiled"]["rows"] = results["train_compiled_dense"]["rows"] + results["train_compiled"]["rows"]
    elif results["train_compiled_dense"]:
        results["train_compiled"] = results["train_compiled_dense"]
    best_vs_bart, best_mfu, moe_ratio = None, None, {}
    for key, label in (("train_eager", "eager"), ("train_compiled", "ours compiled [c], BART eager")):
        res = results[key]
        if not res:
            continue
        lines += train_rows(res, label)
        by = {r["key"]: r for r in res["rows"]}
        bart = by.get("bart")
        for r in res["rows"]:
            if r["key"] in ("dense", "moe", "topk"):
                if bart:
                    v = r["tokens_per_s"] / bart["tokens_per_s"]
                    best_vs_bart = max(best_vs_bart or 0.0, v)
                best_mfu = max(best_mfu or 0.0, r["mfu"])
        if "dense" in by and "moe" in by:
            moe_ratio[label.split(",")[0]] = by["moe"]["tokens_per_s"] / by["dense"]["tokens_per_s"]
        for case, res_sync in (res.get("sync_check") or {}).items():
            cuda = res_sync.get("cuda_syncs")
            lines.append(f"  host syncs, {case}, {res_sync['steps']} steps: CUDA {'-' if cuda is None else cuda}"
                         f"{' (' + '; '.join(res_sync['cuda_places'][:4]) + ')' if res_sync.get('cuda_places') else ''}"
                         f"; Python: {res_sync['python_report'][:160]}")
        for ln in res.get("profile") or []:
            lines.append(f"  profile {ln[:190]}")

    dec = results["decode"]
    speedups: dict[str, float] = {}
    if dec:
        lines.append(f"decode (batch {dec['rows'][0]['batch'] if dec['rows'] else '?'}, {dec['device']}):")
        lines.append(f"  {'task':<14}{'length':>7}{'cache s':>9}{'cache tok/s':>12}{'full s':>8}{'speed-up':>10}"
                     f"{'RTF cache':>10}{'same':>6}")
        for r in dec["rows"]:
            n = r["batch"] * r["length"]
            full = r.get("full")
            sp = full / r["cache"] if full else None
            rtf = r["cache"] / (n / 75.0) if r["target"] == "audio" else None
            if sp is not None:
                speedups[f"{r['source']}->{r['target']} {r['length']}"] = sp
            lines.append(f"  {r['source'] + '->' + r['target']:<14}{r['length']:>7}{r['cache']:>9.2f}"
                         f"{n / r['cache']:>12.0f}{(f'{full:.2f}' if full else '-'):>8}"
                         f"{(f'{sp:.1f}x' if sp else '-'):>10}{(f'{rtf:.3f}' if rtf else '-'):>10}"
                         f"{('yes' if r.get('identical') else 'NO') if 'identical' in r else '-':>6}")

    if dec and dec.get("profile"):
        lines.append(f"  {dec['profile'][:230]}")

    e2e = []
    for name in ("e2e", "e2e_compile"):
        last_step = ""
        for ln in tail(out_dir / f"{name}.log", 2000):
            if re.match(r"step \d+/\d+ \|", ln):
                last_step = ln
            elif ln.startswith("{") and '"global_step"' in ln:
                try:
                    rec = json.loads(ln)
                except ValueError:
                    continue
                e2e.append(f"  {name} {Path(rec['run_dir']).name}: step {rec.get('global_step')}, resumed from "
                           f"{Path(rec['resumed_from']).name if rec.get('resumed_from') else '-'}; last: {last_step}")
            elif "retrying" in ln:
                e2e.append(f"  {name}: {ln}")
    if e2e:
        lines.append("end-to-end `musicmoe train` (DeepSpeed ZeRO-2, bf16 on the GPU):")
        lines += e2e

    long_key = max((k for k in speedups if k.endswith(" 1024")), key=lambda k: -speedups[k], default=None)
    lines.append("targets (issue 7):")
    lines.append(f"  ours / HF BART tokens/s >= {TARGETS['vs_bart']}: best "
                 f"{'-' if best_vs_bart is None else f'{best_vs_bart:.2f}'} -> "
                 f"{verdict(None if best_vs_bart is None else best_vs_bart >= TARGETS['vs_bart'])}")
    lines.append(f"  MFU >= {TARGETS['mfu']:.0%}: best {'-' if best_mfu is None else f'{best_mfu:.1%}'} -> "
                 f"{verdict(None if best_mfu is None else best_mfu >= TARGETS['mfu'])}")
    for label, v in moe_ratio.items():
        lines.append(f"  MoE / dense tokens/s >= {TARGETS['moe_vs_dense']} ({label}): {v:.3f} -> "
                     f"{verdict(v >= TARGETS['moe_vs_dense'])}")
    worst = None if long_key is None else speedups[long_key]
    lines.append(f"  KV cache vs full at 1024 >= {TARGETS['kv_speedup']:.0f}x: "
                 + (", ".join(f"{k} {v:.1f}x" for k, v in speedups.items() if k.endswith(" 1024")) or "-")
                 + f" -> {verdict(None if worst is None else worst >= TARGETS['kv_speedup'])}")
    for name in failed:
        lines.append(f"--- end of {name}.log:")
        lines += [f"    {ln}" for ln in tail(out_dir / f"{name}.log")]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
