"""``build_corpus``: every source file in its own forked process, resumable, with a report of what failed.

Each file runs in a fresh child process (forked, so music21/verovio are already imported) with a deadline,
so a crash (even a segfault) or a hang in verovio/music21 costs only that file: it is killed, counted and
listed by name.  A shard appears only when complete (``ShardWriter``), so an interrupted build resumes by
skipping the files whose shard exists.  Outputs depend only on the file and the content settings, never
on the order or the number of workers, so a rebuild gives identical shards.
"""

from __future__ import annotations

import fcntl
import json
import logging
import multiprocessing as mp
import os
import sys
import time
import traceback
from collections import Counter, deque
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from musicmoe.config import ConfigError, load_saved, save_config
from musicmoe.data.builder.config import CorpusConfig, content_keys
from musicmoe.data.builder.piece import SUMMARY_SUFFIX, _reason, build_file
from musicmoe.data.builder.sources import PieceSource, SourceError, list_sources
from musicmoe.data.shards import SHARD_DIR, iter_records, shard_done, write_manifest, write_report

log = logging.getLogger(__name__)
LOG_FILE = "build.log"


class BuildError(RuntimeError):
    """The build cannot start (bad source, an incompatible existing corpus, a concurrent build)."""


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


# ------------------------------------------------------------------------------------------- children
def _preload() -> None:
    """Import the heavy libraries once in the parent, so every forked child starts with them loaded."""
    import mido  # noqa: F401
    import music21.instrument  # noqa: F401
    import pretty_midi  # noqa: F401
    import resvg_py  # noqa: F401
    import soundfile  # noqa: F401
    import verovio  # noqa: F401
    from PIL import Image  # noqa: F401

    import musicmoe.codecs.lmx  # noqa: F401
    import musicmoe.data.synth  # noqa: F401


def _child(conn: Connection, src: PieceSource, cfg: CorpusConfig, out: str, log_path: str) -> None:
    try:
        fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(fd, 1)  # verovio and music21 chatter goes to the build log, not over the progress bar
        os.dup2(fd, 2)
        os.close(fd)
        import faulthandler

        faulthandler.enable(file=2)  # a C-level crash leaves its Python stack in the build log (fd 2)
        print(f"== {src.rel}", flush=True)
        import verovio

        verovio.enableLog(verovio.LOG_WARNING)
        summary = build_file(src, cfg, out, heartbeat=lambda: conn.send(("beat", None)))
        conn.send(("ok", summary))
    except BaseException as err:  # everything, so the parent always learns why
        traceback.print_exc()
        try:
            conn.send(("error", _reason(err)))
        except Exception:
            pass
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        conn.close()


@dataclass
class _Job:
    src: PieceSource
    proc: Any
    deadline: float
    started: float = field(default_factory=time.monotonic)


class _Progress:
    """tqdm on a terminal; plain log lines (every ~5 % or 30 s) otherwise."""

    def __init__(self, total: int, enabled: bool | None) -> None:
        self.total, self.n, self.failed = total, 0, 0
        self.tty = sys.stderr.isatty() if enabled is None else enabled and sys.stderr.isatty()
        self.enabled = enabled is not False
        self.bar = None
        self._last = time.monotonic()
        if self.enabled and self.tty and total:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="piece", desc="build", dynamic_ncols=True)

    def update(self, ok: bool, name: str) -> None:
        self.n += 1
        self.failed += not ok
        if self.bar is not None:
            self.bar.set_postfix(failed=self.failed, refresh=False)
            self.bar.update(1)
        elif self.enabled:
            step = max(1, self.total // 20)
            if self.n % step == 0 or self.n == self.total or time.monotonic() - self._last > 30:
                self._last = time.monotonic()
                log.info("built %d/%d files (%d failed), last: %s", self.n, self.total, self.failed, name)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _run(todo: list[PieceSource], cfg: CorpusConfig, out: Path, workers: int,
         progress: bool | None) -> list[dict[str, Any]]:
    """Build ``todo`` with at most ``workers`` children; one result dict per file (``ok`` / ``reason``)."""
    ctx = mp.get_context("fork")
    log_path = str(out / LOG_FILE)
    pending = deque(todo)
    running: dict[Connection, _Job] = {}
    results: list[dict[str, Any]] = []
    bar = _Progress(len(todo), progress)

    def finish(conn: Connection, job: _Job, result: dict[str, Any]) -> None:
        running.pop(conn, None)
        conn.close()
        job.proc.join(timeout=30)
        if job.proc.is_alive():
            job.proc.kill()
            job.proc.join()
        for tmp in (out / SHARD_DIR).glob(f".{job.src.file_id}.tar.*.tmp"):
            tmp.unlink(missing_ok=True)
        result.update(file_id=job.src.file_id, file=job.src.rel, seconds=round(time.monotonic() - job.started, 3))
        results.append(result)
        bar.update(result["ok"], job.src.rel)

    try:
        while pending or running:
            while pending and len(running) < workers:
                src = pending.popleft()
                reader, writer = ctx.Pipe(duplex=False)
                proc = ctx.Process(target=_child, args=(writer, src, cfg, str(out), log_path), daemon=True,
                                   name=f"build:{src.file_id}")
                proc.start()
                writer.close()
                running[reader] = _Job(src, proc, time.monotonic() + cfg.piece_timeout_s)
            wait_s = max(0.0, min(j.deadline for j in running.values()) - time.monotonic())
            for conn in wait(list(running), timeout=wait_s):
                job = running[conn]
                try:
                    kind, payload = conn.recv()
                except (EOFError, OSError):
                    job.proc.join(timeout=5)
                    code = job.proc.exitcode
                    why = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
                    finish(conn, job, {"ok": False, "reason": f"worker crashed ({why})"})
                    continue
                if kind == "beat":
                    job.deadline = time.monotonic() + cfg.piece_timeout_s
                elif kind == "ok":
                    finish(conn, job, {"ok": True, "summary": payload})
                else:
                    finish(conn, job, {"ok": False, "reason": payload})
            now = time.monotonic()
            for conn, job in list(running.items()):
                if job.deadline < now:
                    job.proc.kill()
                    finish(conn, job, {"ok": False, "reason": f"timed out after {cfg.piece_timeout_s:g} s"})
    except BaseException:
        for conn, job in list(running.items()):
            job.proc.kill()
            job.proc.join()
            for tmp in (out / SHARD_DIR).glob(f".{job.src.file_id}.tar.*.tmp"):
                tmp.unlink(missing_ok=True)
        raise
    finally:
        bar.close()
    return results


# ------------------------------------------------------------------------------------------- the build
def _check_resume(out: Path, cfg: CorpusConfig) -> None:
    saved = out / "config.yaml"
    if not saved.is_file() or not any((out / SHARD_DIR).glob("*.tar")):
        return
    try:
        old = load_saved(CorpusConfig, saved)
    except ConfigError as err:
        raise BuildError(f"{saved} cannot be read ({err}); build into a new folder") from None
    diff = [f"{k}: {getattr(old, k)!r} -> {getattr(cfg, k)!r}"
            for k in content_keys() if getattr(old, k) != getattr(cfg, k)]
    if diff:
        raise BuildError(f"{out} holds shards built with other settings ({'; '.join(diff)}); "
                         "use another --out folder or delete this one")


def _lock(out: Path):
    fh = open(out / ".build.lock", "w")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.close()
        raise BuildError(f"another build is writing to {out}") from None
    return fh


def corpus_totals(out: str | Path) -> dict[str, Any]:
    """Counts over the whole corpus folder: examples and pieces per split, and the per-file skip counts."""
    out = Path(out)
    examples: Counter = Counter()
    pieces: dict[str, set] = {}
    for rec in iter_records(out):
        examples[rec.get("split", "?")] += 1
        pieces.setdefault(rec.get("split", "?"), set()).add(rec["piece"])
    skipped: Counter = Counter()
    for path in sorted((out / SHARD_DIR).glob(f"*{SUMMARY_SUFFIX}")):
        try:
            skipped.update(json.loads(path.read_text()).get("counts", {}))
        except (OSError, json.JSONDecodeError):
            continue
    return {
        "files": sum(1 for _ in (out / SHARD_DIR).glob("*.tar")),
        "examples": sum(examples.values()), "examples_per_split": dict(sorted(examples.items())),
        "pieces_per_split": {k: len(v) for k, v in sorted(pieces.items())},
        "system_counts": dict(sorted(skipped.items())),
    }


def build_corpus(cfg: CorpusConfig, progress: bool | None = None) -> dict[str, Any]:
    """Build (or resume) the corpus ``cfg.out`` from ``cfg.source``; returns the report (also in report.json).

    ``progress``: None = a bar on a terminal and log lines otherwise, False = silent.
    """
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / SHARD_DIR).mkdir(exist_ok=True)
    lock = _lock(out)
    try:
        _check_resume(out, cfg)
        try:
            sources, duplicates = list_sources(cfg)
        except SourceError as err:
            raise BuildError(str(err)) from None
        save_config(cfg, out)
        for tmp in (out / SHARD_DIR).glob(".*.tmp"):  # left by a killed build (we hold the lock)
            tmp.unlink(missing_ok=True)
        t0 = time.monotonic()
        done = [s for s in sources if shard_done(out, s.file_id)]
        done_ids = {s.file_id for s in done}
        todo = [s for s in sources if s.file_id not in done_ids]
        workers = max(1, min(cfg.workers or default_workers(), len(todo) or 1))
        if progress is not False:
            log.info("%d source files: %d already built, %d to build with %d workers", len(sources), len(done),
                     len(todo), workers)
        if todo:
            _preload()
        results = _run(todo, cfg, out, workers, progress)
        n_examples = write_manifest(out)
        results.sort(key=lambda r: r["file"])
        counts: Counter = Counter()
        failures: list[dict[str, str]] = []
        problems: list[str] = []
        for r in results:
            if r["ok"]:
                counts.update(r["summary"]["counts"])
                failures += r["summary"]["failures"]
                problems += r["summary"]["problems"]
            else:
                failures.append({"file": r["file"], "reason": r["reason"]})
        elapsed = time.monotonic() - t0
        built = [r for r in results if r["ok"]]
        report = {
            "source": cfg.source, "out": str(out),
            "run": {
                "files_selected": len(sources), "files_already_built": len(done), "files_built": len(built),
                "files_failed": len(results) - len(built), "pieces_failed": len(failures), "workers": workers,
                "seconds": round(elapsed, 2), "file_seconds": round(sum(r["seconds"] for r in results), 2),
                **{k: v for k, v in sorted(counts.items())},
            },
            "failures": failures,
            "problems": problems[:200],
            "duplicates_skipped": duplicates,
            "corpus": {**corpus_totals(out), "examples": n_examples},
        }
        write_report(out, report)
        return report
    finally:
        lock.close()
