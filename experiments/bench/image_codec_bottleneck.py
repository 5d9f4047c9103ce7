"""Where an image codec loses detail: PSNR of held-out crops through the codes vs with the quantizer bypassed.

Usage:
  python experiments/bench/image_codec_bottleneck.py --codec runs/folk/image_codec/image_codec.pt \
      --corpus runs/folk/corpus [--split test] [--limit 24]

Both reconstructions use the same trained encoder and decoder; the first quantizes the latents with the residual
codebooks (what the codes carry), the second feeds the continuous latents straight to the decoder. When the two are
close, the autoencoder (its width or its training) limits the codec, not the codebooks. Prints one line per figure.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)

import numpy as np
import torch


def main(argv: list[str] | None = None) -> dict[str, float]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--codec", required=True, help="image codec checkpoint")
    ap.add_argument("--corpus", required=True, help="corpus folder with the crops")
    ap.add_argument("--split", default="test")
    ap.add_argument("--limit", type=int, default=24, help="first N crops of the split")
    args = ap.parse_args(argv)

    from musicmoe.codecs.image.codec import ImageCodec, image_to_ink
    from musicmoe.data.shards import Corpus, decode_image

    torch.set_num_threads(1)
    codec = ImageCodec.load(args.codec).eval()
    corpus = Corpus(args.corpus)
    ids = [i for i, r in enumerate(corpus.records) if r.get("split") == args.split][: args.limit]
    if not ids:
        raise SystemExit(f"no {args.split!r} crops in {args.corpus}")
    p = codec.patch
    err = {"codes": 0.0, "continuous": 0.0}
    pixels = 0
    with torch.no_grad():
        for i in ids:
            image = decode_image(corpus.read_bytes(i, "image"), f"{i}.png")
            h, w = image.shape
            padded = np.full((-(-h // p) * p, -(-w // p) * p), 255, dtype=np.uint8)
            padded[:h, :w] = image
            ink = image_to_ink([padded])
            z = codec.encoder(ink)
            quantized = codec.quantize(z)[0]
            for name, latent in (("codes", quantized), ("continuous", z)):
                recon = codec.output(codec.decoder(latent)).clamp(0, 1)
                err[name] += float(((recon - ink) ** 2).sum())
            pixels += ink.numel()
    out = {f"psnr_{k}_db": -10 * math.log10(v / pixels) for k, v in err.items()}
    out["crops"] = len(ids)
    for k, v in out.items():
        print(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}")
    return out


if __name__ == "__main__":
    main()
