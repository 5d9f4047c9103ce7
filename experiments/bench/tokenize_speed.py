"""Tokenization speed (examples/s) and token-loader speed (batches/s) for a training-shaped batch.

    python experiments/bench/tokenize_speed.py --corpus runs/corpus [--image-codec CKPT] [--audio-codec CKPT]
        [--random-codecs tiny|full] [--device auto|cpu|cuda] [--workers 4] [--batch-size 16]
        [--batches 200] [--loader-workers 4] [--out runs/bench_tokens] [--json result.json]

1. Tokenizes the corpus into ``--out`` (fresh each time) with the given codec checkpoints, or with randomly
   initialised codecs of the demo (``tiny``) or paper (``full``) size: the weights do not change the speed.
2. Reads the train split back with a plain ``torch.utils.data.DataLoader`` over ``TokenDataset`` (random
   order with replacement, ``pad_collate`` padding all streams, ``--loader-workers`` processes) and reports
   batches/s and tokens/s.  A GPU training step must take longer than ``1 / batches_per_second`` for the
   loader never to starve it (compare with experiments/bench/train_step.py on the same machine).
"""

from __future__ import annotations

import os
import sys

# This file shares its name with the standard library's ``tokenize`` (imported by torch, inspect, ...): keep
# its folder off the import path so ``import tokenize`` keeps finding the standard module.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402


def _random_codecs(size: str, corpus: Path, workdir: Path) -> tuple[str, str]:
    """Randomly initialised image and audio codec files of the demo or paper size (codebooks k-means-initialised
    from a few corpus images and audio clips)."""
    from musicmoe.codecs.audio import AudioCodec, AudioCodecConfig
    from musicmoe.codecs.image.codec import ImageCodec
    from musicmoe.codecs.image.config import ImageCodecConfig
    from musicmoe.config import compose
    from musicmoe.data.shards import Corpus

    if size == "tiny":
        icfg = compose(ImageCodecConfig, "image_codec/demo.yaml")
        acfg = compose(AudioCodecConfig, "audio_codec/demo.yaml")
    else:
        icfg, acfg = ImageCodecConfig(), AudioCodecConfig()
    corpus = Corpus(corpus, modalities=("image", "audio"))
    examples = [corpus[i] for i in range(min(4, len(corpus)))]
    image = ImageCodec(icfg)
    image.init_codebooks([ex.image for ex in examples if ex.image is not None])
    audio = AudioCodec.build(acfg)
    waves = [ex.audio for ex in examples if ex.audio is not None]
    if waves:
        audio.init_codebooks(waves)
    image_path, audio_path = workdir / "image_codec.pt", workdir / "audio_codec.pt"
    image.save(image_path)
    audio.save(audio_path)
    return str(image_path), str(audio_path)


def bench_loader(tokdir: Path, split: str, batch_size: int, batches: int, workers: int) -> dict[str, float]:
    import torch
    from torch.utils.data import DataLoader, RandomSampler

    from musicmoe.data.tokens import TokenDataset, pad_collate

    ds = TokenDataset(tokdir, split)
    sampler = RandomSampler(ds, replacement=True, num_samples=batch_size * (batches + 5),
                            generator=torch.Generator().manual_seed(0))
    loader = DataLoader(ds, batch_size=batch_size, sampler=sampler, num_workers=workers, collate_fn=pad_collate,
                        persistent_workers=workers > 0, prefetch_factor=4 if workers else None)
    it = iter(loader)
    for _ in range(5):  # warm-up: worker start, first memory maps
        next(it)
    tokens = 0
    start = time.perf_counter()
    for _ in range(batches):
        batch = next(it)
        tokens += sum(int(v.sum()) for k, v in batch.items() if k.endswith("_mask"))
    seconds = time.perf_counter() - start
    shapes = {k: tuple(v.shape) for k, v in batch.items() if hasattr(v, "shape") and not k.endswith("_mask")}
    return {"batches_per_second": batches / seconds, "tokens_per_second": tokens / seconds,
            "batch_size": batch_size, "loader_workers": workers, "last_batch_shapes": shapes}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", required=True, type=Path)
    ap.add_argument("--image-codec")
    ap.add_argument("--audio-codec")
    ap.add_argument("--random-codecs", choices=("tiny", "full"), help="build random codecs of this size instead")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--workers", type=int, default=2, help="tokenize: corpus-decoding processes")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--batches", type=int, default=200)
    ap.add_argument("--loader-workers", type=int, default=4)
    ap.add_argument("--out", type=Path, help="token folder (default: a temporary folder)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)

    from musicmoe.config import load_config
    from musicmoe.data.tokenize import format_report, tokenize

    tmp = Path(tempfile.mkdtemp(prefix="musicmoe-bench-tokens-"))
    try:
        image, audio = args.image_codec, args.audio_codec
        if args.random_codecs:
            image, audio = _random_codecs(args.random_codecs, args.corpus, tmp)
        out = args.out or tmp / "tokens"
        cfg = load_config(None, [f"tokenize.device={args.device}", f"tokenize.workers={args.workers}",
                                 f"tokenize.threads={args.threads}"])
        report = tokenize(args.corpus, out, cfg, image_codec=image, audio_codec=audio, overwrite=True,
                          progress=sys.stderr.isatty())
        print(format_report(report))
        split = max(report["splits"], key=lambda s: report["splits"][s]["examples"])
        loader = bench_loader(out, split, args.batch_size, args.batches, args.loader_workers)
        result = {"tokenize_examples_per_second": report["examples_per_second"], "device": report["device"],
                  "examples": report["examples"], "codecs": args.random_codecs or "given", "split": split, **loader}
        print(f"\n{'tokenize examples/s':<28}{result['tokenize_examples_per_second']}")
        print(f"{'loader batches/s':<28}{loader['batches_per_second']:.1f}  (batch {args.batch_size}, "
              f"{args.loader_workers} workers)")
        print(f"{'loader tokens/s':<28}{loader['tokens_per_second']:.0f}")
        print(f"{'batch shapes':<28}{loader['last_batch_shapes']}")
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(result, indent=2, default=str))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
