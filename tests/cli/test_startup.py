"""Commands that need no model never import torch or Lightning (issue 14: ``musicmoe --help`` must start fast).

Every command runs in a fresh interpreter, because this test process may have imported torch already. No
wall-clock times are asserted here; startup time is measured by hand or by benchmark scripts.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("torch", "lightning", "lightning_fabric", "pytorch_lightning")

# Runs ``musicmoe ARGV...`` in-process, then writes its exit status and the heavy modules it loaded to a file.
PROBE = f"""
import json, sys
from musicmoe.cli.main import main
try:
    rc = main(sys.argv[2:])
except SystemExit as stop:
    rc = stop.code
heavy = sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY!r})
with open(sys.argv[1], "w") as fh:
    json.dump({{"rc": rc, "heavy": heavy}}, fh)
"""

LMX = """measure
  key:fifths:0
  time beats:4 beat-type:4
  clef:G2
    G4 voice:1 half
    A4 quarter
    B4 quarter
"""


def _probe(tmp_path: Path, *argv: str) -> dict:
    result = tmp_path / "probe.json"
    proc = subprocess.run([sys.executable, "-c", PROBE, str(result), *argv], capture_output=True, text=True,
                          timeout=120)
    assert result.is_file(), f"musicmoe {' '.join(argv)} died:\n{proc.stderr}"
    return {**json.loads(result.read_text()), "out": proc.stdout, "err": proc.stderr}


def _heavy_in_importtime(stderr: str) -> tuple[set[str], set[str]]:
    """(every module named in ``-X importtime`` output, the heavy ones among them).

    The output lists what ``import`` statements load; a module loaded by ``importlib.import_module`` (the command
    groups) is not listed itself, only what it imports, so the probe tests check ``sys.modules`` as well.
    """
    names = {m.group(1) for m in re.finditer(r"^import time:\s*\d+ \|\s*\d+ \|\s*(\S+)$", stderr, re.M)}
    return names, {n for n in names if n.split(".")[0] in HEAVY}


def _launchers() -> list:
    script = Path(sys.executable).parent / "musicmoe"  # the console entry point of the installed package
    return [
        pytest.param(["-m", "musicmoe.cli.main"], id="python-m"),
        pytest.param([str(script)], id="entry-point"),  # `make install` puts it beside the interpreter
    ]


@pytest.mark.parametrize("launcher", _launchers())
def test_top_level_help_imports_no_torch(launcher):
    proc = subprocess.run([sys.executable, "-X", "importtime", *launcher, "--help"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "translate" in proc.stdout and "ser" in proc.stdout  # every group is still listed
    names, heavy = _heavy_in_importtime(proc.stderr)
    assert "musicmoe.cli.common" in names  # the output was parsed
    assert not heavy, f"musicmoe --help imported {sorted(heavy)}"


@pytest.mark.parametrize("argv", [
    ("--help",), ("ser", "--help"), ("lmx", "--help"), ("lmx", "linearize", "--help"), ("data", "--help"),
    ("data", "stats", "--help"),
], ids=" ".join)
def test_help_of_light_commands_imports_no_torch(tmp_path, argv):
    got = _probe(tmp_path, *argv)
    assert got["rc"] == 0 and "usage: musicmoe" in got["out"], got["err"]
    assert got["heavy"] == []


def test_ser_runs_without_torch(tmp_path):
    (tmp_path / "gold.lmx").write_text("measure C4 quarter\nmeasure D4 half tuplet:start\n")
    (tmp_path / "pred.lmx").write_text("measure C4 quarter\nmeasure E4 half\n")
    got = _probe(tmp_path, "ser", "--gold", str(tmp_path / "gold.lmx"), "--pred", str(tmp_path / "pred.lmx"),
                 "--json")
    assert got["rc"] == 0, got["err"]
    scores = json.loads(got["out"])
    assert scores["ser"] == pytest.approx(100 * 2 / 7) and scores["ser_no_tuplets"] == pytest.approx(100 / 6)
    assert got["heavy"] == []


def test_lmx_round_trip_runs_without_torch(tmp_path):
    (tmp_path / "in.lmx").write_text(LMX)
    xml = tmp_path / "out.musicxml"
    got = _probe(tmp_path, "lmx", "delinearize", str(tmp_path / "in.lmx"), "-o", str(xml), "--strict")
    assert got["rc"] == 0 and xml.is_file(), got["err"]
    assert got["heavy"] == []
    got = _probe(tmp_path, "lmx", "linearize", str(xml))
    assert got["rc"] == 0, got["err"]
    assert got["out"].split() == LMX.split()
    assert got["heavy"] == []


def test_data_stats_runs_without_torch(tmp_path):
    from musicmoe.data import Example, ShardWriter, write_manifest

    corpus = tmp_path / "corpus"
    with ShardWriter(corpus, "piece") as writer:
        for i in range(3):
            writer.add(Example(key=f"piece__s{i:03d}", piece="piece", composer="bach", system=i,
                               measures=(i, i), lmx=LMX.split()))
    assert write_manifest(corpus) == 3
    got = _probe(tmp_path, "data", "stats", str(corpus), "--json")
    assert got["rc"] == 0, got["err"]
    stats = json.loads(got["out"])
    assert stats["examples"] == 3 and stats["lmx_tokens"]["max"] == len(LMX.split())
    assert got["heavy"] == []
