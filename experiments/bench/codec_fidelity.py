"""Codec fidelity in the currency that matters: what a trained reader loses when it reads codec reconstructions.

Usage:
  python experiments/bench/codec_fidelity.py --omr-ckpt runs/folk_omr/model/checkpoints/last.ckpt \
      --image-codec runs/folk/image_codec/image_codec.pt [--amt-ckpt ... --audio-codec ...] \
      [--split test] [--limit 200] [--blur 0.6] [--noise-snr 20] [--json OUT.json]

An OMR model that reads pixels (``model.image_input=pixels``) is scored (SER, greedy decoding, the evaluation's
decode budget) on the held-out crops as they are and on the image codec's reconstructions of the same crops
(encode -> decode); an AMT model that reads log-mel frames likewise on the original audio and on the audio
codec's reconstruction (onset F1, mir_eval). The difference is the codec's cost to a reader trained on clean
inputs; the README's fidelity figures come from this script. ``--blur SIGMA`` adds a reference row: the same reader
on the original crops under a Gaussian blur of SIGMA pixels, which tells a reader thrown by any softening (a reader
problem) from a codec that loses the music; ``--noise-snr DB`` likewise scores the AMT reader on the original audio
with white noise added at DB dB signal-to-noise ratio. Prints one table and writes JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any


def score(ckpt: str, task: str, transform: dict[str, Any] | None, split: str, limit: int) -> dict[str, float]:
    """Metrics of ``task`` for the reader ``ckpt`` on ``split`` (its sources passed through ``transform``)."""
    from musicmoe.data.features import FeatureSource, FeatureSpec, SourceView
    from musicmoe.data.tasks import get_task
    from musicmoe.data.tokens import TokenDataset
    from musicmoe.training.checkpoint import load_model
    from musicmoe.training.codecs import CodecSet
    from musicmoe.training.config import EvalConfig
    from musicmoe.training.evaluate import Evaluator

    model, hp = load_model(ckpt)
    codecs = hp.get("codecs") or {}
    spec = FeatureSpec.from_model(model.config)
    t = get_task(task)
    if not spec.uses(t.source):
        raise SystemExit(f"{ckpt} reads {t.source} as codes; this benchmark needs a reader of pixels / mel frames "
                         f"(model.image_input=pixels, model.audio_input=mel)")
    tokens = TokenDataset(codecs.get("tokens") or hp["config"]["data"]["tokens"], split)
    view = SourceView(tokens, FeatureSource(codecs.get("corpus") or tokens.meta["corpus"], spec,
                                            transform=transform))
    n = min(limit, len(tokens)) if limit else len(tokens)
    base = {k: v for k, v in (hp["config"].get("eval") or {}).items()
            if k in {f.name for f in dataclasses.fields(EvalConfig)}}
    cfg = EvalConfig(**{**base, "max_examples": n, "loss_examples": n, "shuffled_baseline": False})
    metrics, _ = Evaluator(model, CodecSet(codecs), cfg, [task]).evaluate(view, [t])
    return {k.split("/", 1)[1]: v for k, v in metrics.items()}


def gaussian_blur(sigma: float):
    """uint8 grayscale image -> the same image under a Gaussian blur of ``sigma`` pixels (PIL)."""
    import numpy as np
    from PIL import Image, ImageFilter

    return lambda image: np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(sigma)))


def white_noise(snr_db: float, seed: int = 0):
    """``(wave, sample_rate)`` -> the same wave plus white Gaussian noise ``snr_db`` dB below its mean power."""
    import numpy as np

    def add(wave, sr):
        x = np.asarray(wave, dtype=np.float32)
        rng = np.random.default_rng(seed + len(x))
        level = float(np.sqrt(np.mean(x.astype(np.float64) ** 2) * 10 ** (-snr_db / 10)))
        return (x + rng.normal(0.0, level, size=x.shape)).astype(np.float32), sr

    return add


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--omr-ckpt", help="OMR reader of pixels (a .ckpt or exported file)")
    ap.add_argument("--image-codec", help="image codec checkpoint whose reconstructions are read")
    ap.add_argument("--amt-ckpt", help="AMT reader of log-mel frames")
    ap.add_argument("--audio-codec", help="audio codec checkpoint whose reconstructions are read")
    ap.add_argument("--split", default="test")
    ap.add_argument("--limit", type=int, default=0, help="first N examples of the split (0 = all)")
    ap.add_argument("--blur", type=float, default=0.0,
                    help="also score the OMR reader on the original crops blurred by this Gaussian sigma (pixels)")
    ap.add_argument("--noise-snr", type=float, default=None,
                    help="also score the AMT reader on the original audio plus white noise at this SNR (dB)")
    ap.add_argument("--json", type=Path, help="write the figures here")
    args = ap.parse_args(argv)
    if not ((args.omr_ckpt and args.image_codec) or (args.amt_ckpt and args.audio_codec)):
        ap.error("give --omr-ckpt with --image-codec, and/or --amt-ckpt with --audio-codec")
    from musicmoe.training.codecs import load_codec

    rows: list[dict[str, Any]] = []
    if args.omr_ckpt and args.image_codec:
        codec = load_codec("image", args.image_codec)
        t0 = time.time()
        clean = score(args.omr_ckpt, "omr", None, args.split, args.limit)
        recon = score(args.omr_ckpt, "omr", {"image": codec.reconstruct}, args.split, args.limit)
        rows.append({"task": "omr", "metric": "ser", "original": clean["ser"], "reconstructed": recon["ser"],
                     "codec": args.image_codec, "seconds": round(time.time() - t0, 1)})
        if args.blur > 0:
            blurred = score(args.omr_ckpt, "omr", {"image": gaussian_blur(args.blur)}, args.split, args.limit)
            rows.append({"task": "omr", "metric": "ser", "original": clean["ser"], "reconstructed": blurred["ser"],
                         "codec": f"reference: Gaussian blur, sigma {args.blur:g} px"})
    if args.amt_ckpt and args.audio_codec:
        codec = load_codec("audio", args.audio_codec)

        def rebuild(wave, sr):
            return codec.decode(codec.encode(wave, sr)), codec.sample_rate

        t0 = time.time()
        clean = score(args.amt_ckpt, "amt", None, args.split, args.limit)
        recon = score(args.amt_ckpt, "amt", {"audio": rebuild}, args.split, args.limit)
        rows.append({"task": "amt", "metric": "onset_f1", "original": clean["onset_f1"],
                     "reconstructed": recon["onset_f1"], "codec": args.audio_codec,
                     "seconds": round(time.time() - t0, 1)})
        if args.noise_snr is not None:
            noisy = score(args.amt_ckpt, "amt", {"audio": white_noise(args.noise_snr)}, args.split, args.limit)
            rows.append({"task": "amt", "metric": "onset_f1", "original": clean["onset_f1"],
                         "reconstructed": noisy["onset_f1"],
                         "codec": f"reference: white noise, SNR {args.noise_snr:g} dB"})
    print("| task | metric | input | original | transformed | difference |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        r["difference"] = r["reconstructed"] - r["original"]
        print(f"| {r['task']} | {r['metric']} | {r['codec']} | {r['original']:.2f} | {r['reconstructed']:.2f} | "
              f"{r['difference']:+.2f} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.json.with_name(f".{args.json.name}.tmp")
        tmp.write_text(json.dumps({"split": args.split, "limit": args.limit, "rows": rows}, indent=2))
        tmp.replace(args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
