"""``musicmoe translate --ckpt CKPT --task omr IN.png -o OUT.musicxml``: translate files with a trained model.

Inputs by source modality: image (.png/.jpg/...: a system crop at the corpus's staff height), audio
(.wav/.flac/...), MIDI (.mid), LMX (.lmx token text, or MusicXML which is linearized).  Outputs by target
modality: .musicxml (LMX is delinearized), .mid, .wav, .png.  Several inputs, or a folder, translate in
batch mode into the folder ``-o`` (same stem, new suffix); unreadable inputs are skipped and counted.  The
codecs are the ones recorded in the checkpoint (paths and content hashes, verified when loaded).  Malformed
model output never fails: repairs (e.g. invalid LMX) are reported as warnings.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def _suffixes(modality: str) -> tuple[str, ...]:
    from musicmoe.training import codecs as C

    return {"image": C.IMAGE_SUFFIXES, "audio": C.AUDIO_SUFFIXES, "midi": C.MIDI_SUFFIXES,
            "lmx": C.LMX_SUFFIXES + C.MUSICXML_SUFFIXES}[modality]


def collect_inputs(inputs: list[Path], modality: str) -> tuple[list[Path], bool]:
    """Files to translate and whether this is batch mode (a folder or several files)."""
    files: list[Path] = []
    batch = len(inputs) > 1
    for path in inputs:
        if path.is_dir():
            batch = True
            files += sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in _suffixes(modality))
        else:
            files.append(path)
    return files, batch


def translate_files(ckpt: str | Path, task: str, inputs: list[Path], output: Path, decoding: str = "greedy",
                    beam_size: int = 4, top_p: float = 0.9, temperature: float = 1.0, max_len: int = 0,
                    batch_size: int = 8, device: str = "cpu", seed: int = 0) -> dict[str, Any]:
    """Translate ``inputs`` with the checkpoint; returns ``{"written", "failed", "problems"}``."""
    from musicmoe.data.tasks import get_task
    from musicmoe.training.checkpoint import load_model, resolve_checkpoint
    from musicmoe.training.codecs import OUTPUT_SUFFIX, CodecError, CodecSet
    from musicmoe.training.config import EvalConfig
    from musicmoe.training.evaluate import Evaluator

    t = get_task(task)
    resolve_checkpoint(ckpt)  # a missing checkpoint is reported before the inputs are looked at
    files, batch = collect_inputs(inputs, t.source)
    if not files:
        raise ValueError(f"no {t.source} input files found in {', '.join(map(str, inputs))} "
                         f"(expected {', '.join(_suffixes(t.source))})")
    model, hp = load_model(ckpt, device)
    trained = list(hp.get("tasks") or [])
    if t.name not in trained:
        log.warning("the model was not trained on %s (trained: %s): its output will be meaningless",
                    t.name, ", ".join(trained))
    codecs = CodecSet(hp.get("codecs"))
    for m in (t.source, t.target):
        if not codecs.available(m):
            raise CodecError(f"task {t.name} needs the {m} codec, which the model's record does not name or "
                             f"which is missing: {(hp.get('codecs') or {}).get(m, {}).get('path') or '(none)'}")
    if not batch and output.suffix == "":
        output = output.with_suffix(OUTPUT_SUFFIX[t.target])
    if batch:
        output.mkdir(parents=True, exist_ok=True)
    cfg = EvalConfig(decoding=decoding, beam_size=beam_size, top_p=top_p, temperature=temperature,
                     batch_size=batch_size)
    evaluator = Evaluator(model, codecs, cfg, trained, device=device)
    encoded, facts, failed = [], [], {}
    for path in files:
        try:
            tokens, info = codecs.encode_file(t.source, path)
        except CodecError as err:
            if not batch:
                raise
            failed[str(path)] = str(err)
            log.warning("skipped %s", err)
            continue
        if tokens.shape[-1] + 1 > model.config.max_src_len:
            log.warning("%s: %d source tokens exceed the model's max_src_len=%d: the end is cut", path,
                        tokens.shape[-1], model.config.max_src_len)
        encoded.append((path, tokens))
        facts.append(info)
    limit = max_len or model.config.max_tgt_len - 2
    outs = evaluator.translate(t, [e[1] for e in encoded], [limit] * len(encoded), seed=seed) if encoded else []
    written, problems = [], {}
    for (path, _), info, pred in zip(encoded, facts, outs):
        target = output / (path.stem + OUTPUT_SUFFIX[t.target]) if batch else output
        ctx = {"size": None} if t.target == "image" else {}
        if t.source == "audio" and t.target == "midi":
            ctx["duration"] = info.get("num_samples", 0) / codecs.audio.sample_rate or None
        dec = codecs.decode(t.target, pred, target, **ctx)
        written.append(str(dec.path))
        if dec.problems:
            problems[str(target)] = dec.problems
            log.warning("%s: output repaired: %s", target, "; ".join(dec.problems[:5]))
    return {"written": written, "failed": failed, "problems": problems}


def run(args: argparse.Namespace) -> int:
    from musicmoe.cli.main import UserError
    from musicmoe.training.checkpoint import CheckpointError
    from musicmoe.training.codecs import CodecError

    try:
        result = translate_files(args.ckpt, args.task, args.inputs, args.output, args.decoding, args.beam_size,
                                 args.top_p, args.temperature, args.max_len, args.batch_size, args.device, args.seed)
    except (CheckpointError, CodecError, ValueError) as err:
        if getattr(args, "verbose", False):
            raise
        raise UserError(str(err)) from None
    for path in result["written"]:
        print(path)
    if result["failed"]:
        print(f"{len(result['failed'])} input(s) skipped (unreadable): {', '.join(result['failed'])}")
    if result["problems"]:
        print(f"{len(result['problems'])} output(s) needed repairs (see warnings)")
    return 0 if result["written"] else 1


def register(sub: argparse._SubParsersAction) -> None:
    from musicmoe.data.tasks import ALIASES, TASK_NAMES

    p = sub.add_parser("translate", help="translate files (score images, audio, MIDI, LMX/MusicXML) with a model",
                       description=__doc__)
    p.add_argument("--ckpt", required=True, type=Path, help="model: exported model.pt, last.ckpt, or a run folder")
    p.add_argument("--task", required=True, choices=sorted(TASK_NAMES + tuple(ALIASES)),
                   help="e.g. omr (image -> MusicXML), amt (audio -> MIDI), image2audio, midi2audio, ...")
    p.add_argument("inputs", nargs="+", type=Path, help="input file(s) or folder(s)")
    p.add_argument("-o", "--output", required=True, type=Path, help="output file (one input) or folder (batch)")
    p.add_argument("--decoding", default="greedy", choices=("greedy", "beam", "top_p", "ctc", "rescore"),
                   help="ctc and rescore: LMX/MIDI targets of a model trained with an auxiliary CTC loss")
    p.add_argument("--beam-size", type=int, default=4)
    p.add_argument("--top-p", type=float, default=0.9)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--max-len", type=int, default=0, help="most tokens/frames to generate (default: the model's)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seed", type=int, default=0, help="seed of top-p sampling")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.set_defaults(func=run)
