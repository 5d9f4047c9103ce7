"""The benchmark scripts run end to end (tiny shapes; the real runs are documented in their docstrings)."""

import subprocess
import sys
from pathlib import Path

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


def test_decode_benchmark_cache_matches_full(tmp_path):
    out = run("decode.py", "--size", "small", "--device", "cpu", "--lengths", "6,12", "--batch", "2",
              "--src-len", "8", "--moe", "--json", str(tmp_path / "d.json"))
    lines = [ln for ln in out.splitlines() if ln.startswith(("image->lmx", "midi->audio"))]
    assert len(lines) == 4 and all(ln.rstrip().endswith("yes") for ln in lines)
