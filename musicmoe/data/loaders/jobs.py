"""Helpers shared by the YTSV stages and the dataset importers: SLURM-array sharding of items, a process
pool that reports each item's failure instead of stopping, atomic JSON writes, and a lock so concurrent
array tasks rebuild the manifest one at a time."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import traceback
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence, TypeVar

T = TypeVar("T")


def slurm_shard() -> tuple[int, int]:
    """``(shard_index, num_shards)`` of this SLURM array task, or ``(0, 1)`` outside an array.

    The index counts from the array's first task id (``--array=1-8`` gives indices 0..7)."""
    task = os.environ.get("SLURM_ARRAY_TASK_ID")
    count = os.environ.get("SLURM_ARRAY_TASK_COUNT")
    if task is None or count is None:
        return 0, 1
    first = int(os.environ.get("SLURM_ARRAY_TASK_MIN", "0"))
    return int(task) - first, int(count)


def resolve_shard(shard_index: int | None, num_shards: int | None) -> tuple[int, int]:
    """Explicit values win; missing ones come from the SLURM array environment; checked for range."""
    env_index, env_count = slurm_shard()
    index = env_index if shard_index is None else shard_index
    count = env_count if num_shards is None else num_shards
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"need 0 <= shard index < number of shards, got {index} of {count}")
    return index, count


def select_shard(items: Sequence[T], shard_index: int, num_shards: int) -> list[T]:
    """Every ``num_shards``-th item starting at ``shard_index`` (items should be in a stable order)."""
    return list(items[shard_index::num_shards])


def write_json_atomic(path: str | Path, obj: Any) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True, default=str))
    tmp.replace(path)
    return path


def read_json(path: str | Path, default: Any = None) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        return default
    except json.JSONDecodeError:  # a torn file from a crash before atomic writes existed: treat as absent
        return default


@contextlib.contextmanager
def file_lock(path: str | Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (created if needed) for the duration of the block."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def corpus_lock(corpus_dir: str | Path):
    """The lock array tasks hold while they rebuild a corpus' manifest, report and config (those files are
    written through fixed temporary names, so two tasks finishing together must take turns)."""
    return file_lock(Path(corpus_dir) / ".manifest.lock")


@dataclass
class Outcome:
    """What happened to one item: ``ok`` with a result, or not with a one-line ``reason``."""

    item: Any
    ok: bool
    result: Any = None
    reason: str = ""


def reason_of(err: BaseException) -> str:
    """One line: the message, prefixed by the exception's type unless it sets ``plain_reason``."""
    text = " ".join(str(err).split())[:400]
    if getattr(err, "plain_reason", False) and text:
        return text
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _call(fn: Callable[[Any], Any], item: Any) -> Outcome:
    try:
        return Outcome(item, True, fn(item))
    except Exception as err:  # every failure becomes a per-item report
        return Outcome(item, False, None, reason_of(err))


def run_items(fn: Callable[[Any], Any], items: Iterable[Any], workers: int = 1, desc: str = "",
              progress: bool = True) -> Iterator[Outcome]:
    """Apply ``fn`` to each item (in ``workers`` forked processes when > 1), yielding an :class:`Outcome`
    per item as it finishes.  An exception fails only its item; a worker that dies (segfault, OOM kill)
    fails the items it held and the pool is restarted for the rest."""
    from tqdm import tqdm

    items = list(items)
    bar = tqdm(total=len(items), desc=desc, disable=not progress or not items, leave=False,
               mininterval=1.0 if os.isatty(2) else 30.0)
    try:
        if workers <= 1:
            for item in items:
                out = _call(fn, item)
                if not out.ok:
                    out.reason = out.reason or "failed"
                    _log_traceback(out)
                bar.update(1)
                yield out
            return
        import multiprocessing as mp

        pending = list(items)
        while pending:
            with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("fork")) as pool:
                futures = {pool.submit(_call, fn, it): it for it in pending}
                pending = []
                not_done = set(futures)
                broken = False
                while not_done:
                    done, not_done = wait(not_done, return_when=FIRST_COMPLETED)
                    for fut in done:
                        try:
                            out = fut.result()
                        except BrokenProcessPool:
                            broken = True
                            out = Outcome(futures[fut], False, None, "worker process died (crash or out of memory)")
                        bar.update(1)
                        yield out
                    if broken:
                        break
                if broken:  # the pool is unusable: fail what it held, retry the others in a new pool
                    for fut in not_done:
                        if fut.done() and not fut.exception():
                            bar.update(1)
                            yield fut.result()
                        else:
                            pending.append(futures[fut])
                    pool.shutdown(wait=False, cancel_futures=True)
    finally:
        bar.close()


def _log_traceback(out: Outcome) -> None:
    import logging

    logging.getLogger(__name__).debug("item %r failed: %s\n%s", out.item, out.reason, traceback.format_exc())
