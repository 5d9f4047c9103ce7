"""``musicmoe demo --out runs/demo``: the whole pipeline on a dozen Bach chorales, on a CPU.

Stages (each skipped or resumed when its output exists, so a rerun continues where it stopped):

1. corpus: engrave, crop and synthesize the chorales of ``configs/experiment/demo.yaml`` (``musicmoe data build``);
2. image codec and 3. audio codec: train the small demo codecs (``musicmoe codec train image|audio``);
4. tokens: tokenize the corpus with both codecs (``musicmoe data tokenize``);
5. model: train the tiny multi-task translator (``musicmoe train``);
6. eval: metrics of every task on the test split (``musicmoe eval``), printed as a table.

The demo then checks that learning happened: the training loss of every task must fall (mean of the last
tenth of its logged values below the first tenth); a failed check exits with status 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def demo_config(out: Path, overrides: list[str] = ()):
    from musicmoe.config import load_config

    return load_config("experiment/demo.yaml", [
        f"run.out_dir={out}", f"corpus.out={out / 'corpus'}", f"tokenize.out={out / 'tokens'}",
        f"data.tokens={out / 'tokens'}", f"image_codec.checkpoint={out / 'image_codec' / 'image_codec.pt'}",
        f"audio_codec.checkpoint={out / 'audio_codec' / 'audio_codec.pt'}", *overrides])


def loss_trends(tb_dir: Path) -> dict[str, tuple[float, float]]:
    """Per task: (mean of the first tenth, mean of the last tenth) of its logged training loss."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0})
    ea.Reload()
    out = {}
    for tag in ea.Tags()["scalars"]:
        if tag.startswith("train/loss_"):
            values = [e.value for e in sorted(ea.Scalars(tag), key=lambda e: e.step)]
            if len(values) >= 4:
                k = max(1, len(values) // 10)
                out[tag[len("train/loss_"):]] = (sum(values[:k]) / k, sum(values[-k:]) / k)
    return out


def _stage(name: str, timings: dict[str, float], fn, *args, **kwargs) -> Any:
    print(f"\n=== {name}", flush=True)
    started = time.perf_counter()
    result = fn(*args, **kwargs)
    timings[name] = round(time.perf_counter() - started, 1)
    print(f"=== {name}: {timings[name]} s", flush=True)
    return result


def _codec(kind: str, cfg: Any, run_dir: Path) -> Path:
    codec = run_dir / f"{kind}_codec.pt"
    if codec.is_file():
        print(f"{codec} exists: skipped")
        return codec
    resume = (run_dir / "checkpoints" / "last.ckpt").is_file()
    if kind == "image":
        from musicmoe.codecs.image.train import train_image_codec

        cfg = dataclasses.replace(cfg, image_codec=dataclasses.replace(cfg.image_codec, checkpoint=""))
        train_image_codec(cfg, resume=resume, run_dir=run_dir)
    else:
        from musicmoe.codecs.audio.train import train_audio_codec

        cfg = dataclasses.replace(cfg, audio_codec=dataclasses.replace(cfg.audio_codec, checkpoint=""))
        train_audio_codec(cfg, resume=resume, run_dir=run_dir)
    return codec


def run_demo(out: Path, overrides: list[str] = (), split: str = "test") -> dict[str, Any]:
    from musicmoe.cli.eval import evaluate_checkpoint
    from musicmoe.data.build.runner import build_corpus
    from musicmoe.data.tokenize import format_report, tokenize
    from musicmoe.training.run import run_paths, train

    out = Path(out)
    cfg = demo_config(out, list(overrides))
    timings: dict[str, float] = {}
    report = _stage("corpus", timings, build_corpus, cfg.corpus, progress=None)
    print(f"{cfg.corpus.out}: {report['corpus']['examples']} examples")
    image = _stage("image codec", timings, _codec, "image", cfg, out / "image_codec")
    audio = _stage("audio codec", timings, _codec, "audio", cfg, out / "audio_codec")
    tok = _stage("tokens", timings, tokenize, cfg.corpus.out, cfg.tokenize.out, cfg, image_codec=image,
                 audio_codec=audio)
    print(format_report(tok))
    summary = _stage("model", timings, train, cfg)
    paths = run_paths(cfg)
    record = _stage("eval", timings, evaluate_checkpoint, paths.root, split, out=paths.root / "eval" / split)
    trends = loss_trends(paths.tb / "version_0")
    falling = {t: first > last for t, (first, last) in trends.items()}
    print(f"\n## {split} metrics ({record['examples']} examples, {record['decoding']} decoding)\n")
    print(record["table"])
    print("\n## training loss per task (first tenth -> last tenth of the logged steps)\n")
    for task, (first, last) in sorted(trends.items()):
        print(f"- {task}: {first:.3f} -> {last:.3f} {'(falling)' if falling[task] else '(NOT falling)'}")
    print("\n## time per stage (s)\n")
    print(" | ".join(f"{k} {v}" for k, v in timings.items()) + f" | total {sum(timings.values()):.1f}")
    print(f"\nTensorBoard: tensorboard --logdir {paths.tb}")
    print(f"metrics: {record['out']}/metrics.json, {record['out']}/metrics.md; per-step: {paths.metrics}")
    result = {"timings": timings, "metrics": record["metrics"], "loss_trends": trends, "train": summary,
              "ok": bool(trends) and all(falling.values()) and set(trends) == set(cfg_tasks(cfg))}
    tmp = out / ".demo_summary.json.tmp"
    tmp.write_text(json.dumps(result, indent=2, default=str))
    tmp.replace(out / "demo_summary.json")
    return result


def cfg_tasks(cfg: Any) -> list[str]:
    from musicmoe.data.tasks import get_task

    return [get_task(n).name for n, w in cfg.data.tasks.items() if w > 0]


def run(args: argparse.Namespace) -> int:
    result = run_demo(Path(args.out), list(args.overrides or []), args.split)
    if not result["ok"]:
        missing = set(cfg_tasks(demo_config(Path(args.out), list(args.overrides or [])))) - set(result["loss_trends"])
        print(f"\nlearning check FAILED: not every task's loss fell{' (no loss logged for ' + ', '.join(sorted(missing)) + ')' if missing else ''}")
        return 1
    print("\nlearning check passed: every task's training loss fell")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="build, tokenize, train and evaluate a tiny model on Bach chorales (CPU)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/demo", help="demo folder (default: runs/demo)")
    p.add_argument("--split", default="test", help="split evaluated at the end (default: test)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="config overrides on top of configs/experiment/demo.yaml, e.g. trainer.max_steps=100")
    p.set_defaults(func=run)
