"""``musicmoe codec train image|audio --config FILE [key=value ...] [--resume]``: train a tokenizer codec.

``--config`` may be a whole-run config (e.g. ``experiment/demo.yaml``) or a section file of the codec's group
(``configs/image_codec/*.yaml``, ``configs/audio_codec/*.yaml``), which is then applied to the ``image_codec`` /
``audio_codec`` section of the default config.  Overrides always use full keys
(``image_codec.train.max_steps=200``, ``run.name=codec_demo``, ``corpus.out=runs/corpus``).
The run folder is ``{run.out_dir}/{run.name}``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

from musicmoe.cli.common import add_config_arguments, config_from_args
from musicmoe.config import CONFIG_ROOT, ConfigError, compose, load_config

SECTIONS = {"image": "image_codec", "audio": "audio_codec"}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("codec", help="train the image (RQ-VAE) and audio (EnCodec) codecs")
    sub = parser.add_subparsers(dest="codec_command", metavar="ACTION", required=True)
    train = sub.add_parser("train", help="train a codec on a corpus folder")
    which = train.add_subparsers(dest="modality", metavar="MODALITY", required=True)
    for modality, section in SECTIONS.items():
        p = which.add_parser(
            modality, help=f"train the {modality} codec (config section '{section}')",
            description=f"Train the {modality} codec into {{run.out_dir}}/{{run.name}}. --config is a whole-run config "
            f"or a '{section}' section file (e.g. {section}/demo.yaml); overrides use full keys "
            f"({section}.train.max_steps=200, run.name=..., corpus.out=...).",
        )
        add_config_arguments(p)
        p.add_argument("--resume", action="store_true", help="continue the run's last checkpoint")
        p.set_defaults(func=run_train)


def _resolve(config: str | None) -> Path | None:
    if config is None:
        return None
    path = Path(config)
    if not path.is_file() and (CONFIG_ROOT / path).is_file():
        path = CONFIG_ROOT / path
    return path


def _is_section_file(path: Path, section: str) -> bool:
    """True if ``path`` holds one config section (lives in ``configs/<section>/`` or has only that section's keys)."""
    from omegaconf import OmegaConf

    from musicmoe.config.schema import Config

    if path.resolve().parent == (CONFIG_ROOT / section).resolve():
        return True
    try:
        keys = {str(k) for k in OmegaConf.load(path).keys()} - {"defaults"}
    except Exception:  # an unreadable file is reported by compose with a proper message
        return False
    root_keys = {f.name for f in dataclasses.fields(Config)}
    section_keys = {f.name for f in dataclasses.fields(_section_class(section))}
    return bool(keys) and keys <= section_keys and not keys & root_keys


def _section_class(section: str) -> type:
    from musicmoe.config.schema import Config

    return type(getattr(Config(), section))


def load_codec_config(args: argparse.Namespace, section: str) -> Any:
    """The root config for codec training; a section file is applied to ``section`` (see module docstring)."""
    path = _resolve(args.config)
    if path is None or not path.is_file() or not _is_section_file(path, section):
        return config_from_args(args)
    prefix = f"{section}."
    overrides = list(args.overrides or [])
    own = [o[len(prefix):] for o in overrides if o.lstrip("+").startswith(prefix)]
    rest = [o for o in overrides if not o.lstrip("+").startswith(prefix)]
    root = load_config(None, rest)
    try:
        section_cfg = compose(_section_class(section), path, own)
    except ConfigError as err:
        raise ConfigError(f"{err} (section '{section}' from {path})") from None
    return dataclasses.replace(root, **{section: section_cfg})


def _report_summary(report: dict[str, Any]) -> None:
    keys = ("codec", "content_hash", "global_step", "val_psnr", "steps_per_second")
    print(json.dumps({k: report[k] for k in keys if k in report}, indent=2, default=str))
    skipped = report.get("skipped_images") or {}
    if skipped.get("count"):
        print(f"skipped {skipped['count']} unreadable item(s): {', '.join(sorted(skipped.get('keys', [])))}")


def run_train(args: argparse.Namespace) -> int:
    from musicmoe.cli.main import UserError
    from musicmoe.data.shards import CorpusError

    cfg = load_codec_config(args, SECTIONS[args.modality])
    if args.modality == "image":
        from musicmoe.codecs.image.train import ImageCodecTrainError as TrainError
        from musicmoe.codecs.image.train import train_image_codec as train
    else:  # the audio codec's trainer, written by its owner, has the same signature
        from musicmoe.codecs.audio.train import AudioCodecTrainError as TrainError  # type: ignore[assignment]
        from musicmoe.codecs.audio.train import train_audio_codec as train  # type: ignore[assignment]
    try:
        report = train(cfg, resume=args.resume)
    except (TrainError, CorpusError) as err:
        raise UserError(str(err)) from None
    _report_summary(report)
    return 0
