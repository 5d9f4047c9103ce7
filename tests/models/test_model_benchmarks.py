"""The benchmark scripts run end to end (tiny shapes; the real runs are documented in their docstrings)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run(script: str, *args: str) -> str:
    proc = subprocess.run([sys.executable, str(ROOT / "experiments" / "bench" / script), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_train_step_benchmark_prints_the_comparison_table(tmp_path):
    out = run("train_step.py", "--size", "small", "--device", "cpu", "--steps", "1", "--rounds", "1",
              "--warmup", "0", "--batch", "3", "--src-len", "12", "--tgt-len", "10", "--topk", "4,2",
              "--codebook-mode", "delay", "--json", str(tmp_path / "r.json"))
    for name in ("ours dense", "ours MoE (per-modality FFN)", "ours MoE top-2 of 4/modality", "torch.nn.Transformer"):
        assert name in out
    assert "MFU" in out and (tmp_path / "r.json").exists()
    assert "BART" in out  # measured, or skipped with the reason
    # the figures: rates follow from the timings, MoE matches dense in active size and counted FLOPs
    result = json.loads((tmp_path / "r.json").read_text())
    rows = {r["key"]: r for r in result["rows"]}
    assert result["tokens_per_step"] == 3 * (12 + 10) and result["ceiling_flops"] > 1e9
    for r in rows.values():
        assert 0 < r["sec"] < 60 and r["params"] >= r["active"] > 1e6
        assert r["tokens_per_s"] == pytest.approx(result["tokens_per_step"] / r["sec"], rel=1e-6)
        assert r["mfu"] == pytest.approx(r["flops_per_s"] / result["ceiling_flops"], rel=1e-6)
        assert f"{r['sec'] * 1000:.1f}" in out  # the printed table shows the measured median
    dense = rows["dense"]
    for key in ("moe", "topk"):
        assert key in rows, sorted(rows)
        assert rows[key]["active"] == pytest.approx(dense["active"], rel=0.02)
        assert rows[key]["flops_per_step"] == pytest.approx(dense["flops_per_step"], rel=0.1)
    assert dense["flops_per_step"] > 2 * result["tokens_per_step"] * 1e6  # > 1 MFLOP per token and pass


def test_decode_benchmark_cache_matches_full(tmp_path):
    out = run("decode.py", "--size", "small", "--device", "cpu", "--lengths", "6,12", "--batch", "2",
              "--src-len", "8", "--moe", "--json", str(tmp_path / "d.json"))
    lines = [ln for ln in out.splitlines() if ln.startswith(("image->lmx", "midi->audio"))]
    assert len(lines) == 4 and all(ln.rstrip().endswith("yes") for ln in lines)


def test_train_step_benchmark_options_and_gpu_summary(tmp_path):
    """--only/--compile NAMES/--sync-check/--profile (the GPU check's options), and its summary of the results."""
    out = run("train_step.py", "--size", "small", "--device", "cpu", "--steps", "1", "--rounds", "1", "--warmup", "0",
              "--batch", "3", "--src-len", "12", "--tgt-len", "10", "--only", "dense,moe", "--compile", "moe",
              "--compile-backend", "aot_eager", "--sync-check", "1", "--profile", str(tmp_path / "profile.txt"),
              "--json", str(tmp_path / "train_eager.json"))
    assert "torch.nn.Transformer" not in out and "ours MoE (per-modality FFN) [compiled]" in out
    assert out.count("Python-level: 0 host syncs") == 2, out  # the planned step reads nothing back
    assert "top 15 by self_cpu_time_total" in (tmp_path / "profile.txt").read_text()
    result = json.loads((tmp_path / "train_eager.json").read_text())
    assert {r["key"] for r in result["rows"]} == {"dense", "moe"} and set(result["sync_check"]) == {"dense", "moe"}

    (tmp_path / "steps.tsv").write_text("env\t0\t3\t60\ntrain_eager\t0\t20\t210\ndecode\t124\t150\t150\n")
    (tmp_path / "decode.log").write_text("line one\nKilled by timeout\n")
    rows = [{"target": "lmx", "source": "image", "length": 1024, "batch": 8, "cache": 2.0, "full": 50.0,
             "identical": True}]
    (tmp_path / "decode.json").write_text(json.dumps({"device": "fake", "args": {}, "rows": rows}))
    proc = subprocess.run([sys.executable, str(ROOT / "experiments" / "bench" / "gpu_summary.py"), str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert "GPU CHECK SUMMARY" in text and "TIMEOUT" in text and "Killed by timeout" in text
    assert "image->lmx 1024 25.0x -> MET" in text and "MoE / dense tokens/s" in text
    assert "host syncs, moe, 1 steps" in text


def test_train_step_benchmark_with_bf16_parameters_and_fp32_master_weights(tmp_path):
    """``--precision bf16``: the DeepSpeed-like path (bfloat16 parameters and gradients in flat buffers, AdamW on
    fp32 master weights) trains: every timed step runs and the table reports it."""
    out = run("train_step.py", "--size", "small", "--device", "cpu", "--steps", "1", "--rounds", "1", "--warmup", "1",
              "--batch", "3", "--src-len", "12", "--tgt-len", "10", "--precision", "bf16", "--only", "dense,moe",
              "--json", str(tmp_path / "r.json"))
    assert "bf16 parameters, fp32 master weights" in out
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["args"]["precision"] == "bf16" and {r["key"] for r in result["rows"]} == {"dense", "moe"}
    assert all(0 < r["sec"] < 60 for r in result["rows"])
