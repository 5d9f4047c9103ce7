"""Shared fixtures.

``tiny_corpus``: a corpus folder built once per test session by the real ``musicmoe data build`` command
from three Bach chorales of music21's corpus (configs/corpus/tiny.yaml: 11 systems, ~6 s on 2 cores).
Treat it as read-only; copy it (``shutil.copytree``) before changing anything in it.
"""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from musicmoe.cli.main import main

    out = tmp_path_factory.mktemp("tiny_corpus") / "corpus"
    rc = main(["data", "build", "--config", "corpus/tiny.yaml", "--out", str(out), "--workers", "2", "--quiet"])
    assert rc == 0, f"building the tiny corpus failed (exit {rc}); see {out / 'report.json'} and {out / 'build.log'}"
    assert (out / "manifest.jsonl").is_file()
    return out
