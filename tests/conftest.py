"""Shared fixtures.

``tiny_corpus``: a corpus folder built once per test session by the real ``musicmoe data build`` command
from three Bach chorales of music21's corpus (configs/corpus/tiny.yaml: 11 systems, ~6 s on 2 cores).
Treat it as read-only; copy it (``shutil.copytree``) before changing anything in it.

``tiny_codecs``, ``tiny_tokens``, ``tiny_run``, ``tiny_ds_run``: small codecs, token shards and 2-step training
runs made from it once per session (tests/training/fixtures.py builds them).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/, for the shared training.fixtures module
from training.fixtures import ensure_codecs, ensure_run, ensure_tokens  # noqa: E402


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from musicmoe.cli.main import main

    out = tmp_path_factory.mktemp("tiny_corpus") / "corpus"
    rc = main(["data", "build", "--config", "corpus/tiny.yaml", "--out", str(out), "--workers", "2", "--quiet"])
    assert rc == 0, f"building the tiny corpus failed (exit {rc}); see {out / 'report.json'} and {out / 'build.log'}"
    assert (out / "manifest.jsonl").is_file()
    return out


def _base(tmp_path_factory) -> Path:
    return tmp_path_factory.getbasetemp() / "musicmoe_training"


@pytest.fixture(scope="session")
def tiny_codecs(tiny_corpus, tmp_path_factory) -> dict[str, Path]:
    return ensure_codecs(tiny_corpus, _base(tmp_path_factory))


@pytest.fixture(scope="session")
def tiny_tokens(tiny_corpus, tiny_codecs, tmp_path_factory) -> Path:
    return ensure_tokens(tiny_corpus, tiny_codecs, _base(tmp_path_factory))


@pytest.fixture(scope="session")
def tiny_run(tiny_tokens, tiny_codecs, tmp_path_factory) -> Path:
    """Run folder of a tiny model trained 2 steps (auto strategy) on omr, amt, lmx2image and midi2audio."""
    return ensure_run(tiny_tokens, tiny_codecs, _base(tmp_path_factory), "auto")


@pytest.fixture(scope="session")
def tiny_ds_run(tiny_tokens, tiny_codecs, tmp_path_factory) -> Path:
    """The same under DeepSpeed ZeRO-2 on the CPU (its last.ckpt is a checkpoint folder)."""
    return ensure_run(tiny_tokens, tiny_codecs, _base(tmp_path_factory), "deepspeed")
