"""Shards on disk: tar files of aligned examples plus a JSON-lines manifest with byte offsets.

Layout of a corpus folder::

    DIR/shards/<name>.tar          members <key>.json, <key>.png, <key>.lmx, <key>.mid, <key>.flac
    DIR/shards/<name>.index.json   the manifest records of that shard (written after the tar is complete)
    DIR/manifest.jsonl             all records, one per example (rebuilt from the shard indexes)
    DIR/config.yaml, DIR/report.json

A shard is written under a temporary name and renamed when complete, so a crash never leaves a half-written
shard; a shard whose index is missing is re-indexed from the tar itself.  Readers seek straight to a member's
bytes using the offsets in the manifest.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import threading
import time
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from musicmoe.data.example import Example

MANIFEST = "manifest.jsonl"
SHARD_DIR = "shards"
_EXT = {"image": "png", "lmx": "lmx", "midi": "mid", "audio": "flac", "meta": "json"}


class CorpusError(RuntimeError):
    """A corpus folder or one of its files is missing or unreadable; the message names the file."""


# ---------------------------------------------------------------------------------------------- encoding
def encode_image(image: np.ndarray) -> bytes:
    from PIL import Image

    if image.dtype != np.uint8 or image.ndim != 2:
        raise ValueError(f"image must be a 2-D uint8 array, got {image.dtype} {image.shape}")
    buf = io.BytesIO()
    Image.fromarray(image, mode="L").save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def decode_image(data: bytes, name: str = "<bytes>") -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            return np.asarray(img.convert("L"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise CorpusError(f"corrupt image {name}: {err}") from None


def encode_audio(audio: np.ndarray, sample_rate: int) -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.clip(audio, -1.0, 1.0).astype(np.float32), sample_rate, format="FLAC", subtype="PCM_16")
    return buf.getvalue()


def decode_audio(data: bytes, name: str = "<bytes>") -> tuple[np.ndarray, int]:
    import soundfile as sf

    try:
        audio, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=False)
    except (RuntimeError, sf.LibsndfileError, ValueError) as err:
        raise CorpusError(f"corrupt audio {name}: {err}") from None
    if audio.ndim == 2:
        audio = audio.mean(axis=1)
    return audio, int(sr)


def encode_midi(pm: Any) -> bytes:
    buf = io.BytesIO()
    pm.write(buf)
    return buf.getvalue()


def decode_midi(data: bytes, name: str = "<bytes>") -> Any:
    import pretty_midi

    try:
        return pretty_midi.PrettyMIDI(io.BytesIO(data))
    except Exception as err:  # mido/pretty_midi raise many types on corrupt files
        raise CorpusError(f"corrupt MIDI {name}: {err}") from None


# ----------------------------------------------------------------------------------------------- writing
class ShardWriter:
    """Write examples into ``DIR/shards/<name>.tar`` atomically and return their manifest records.

    Use as a context manager; on an exception inside the block the temporary file is removed and no shard
    appears.  ``records`` holds the manifest records after a successful close.
    """

    def __init__(self, corpus_dir: str | Path, name: str) -> None:
        if "/" in name or not name:
            raise ValueError(f"bad shard name {name!r}")
        self.dir = Path(corpus_dir) / SHARD_DIR
        self.dir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.path = self.dir / f"{name}.tar"
        self._tmp = self.dir / f".{name}.tar.{os.getpid()}.tmp"
        self._tar: tarfile.TarFile | None = None
        self._metas: list[dict[str, Any]] = []
        self.records: list[dict[str, Any]] = []

    def __enter__(self) -> "ShardWriter":
        self._tar = tarfile.open(self._tmp, "w", format=tarfile.PAX_FORMAT)
        return self

    def _add(self, member: str, data: bytes) -> None:
        assert self._tar is not None, "use ShardWriter as a context manager"
        info = tarfile.TarInfo(member)
        info.size = len(data)
        info.mtime = 0  # deterministic bytes: re-running a build gives identical shards
        self._tar.addfile(info, io.BytesIO(data))

    def add(self, ex: Example) -> None:
        """Append one example (its present modalities plus a JSON metadata member)."""
        if any(ch in ex.key for ch in "/\\ ") or not ex.key:
            raise ValueError(f"bad example key {ex.key!r}: no slashes or spaces")
        meta = {
            "key": ex.key, "piece": ex.piece, "composer": ex.composer, "split": ex.split,
            "system": ex.system, "measures": list(ex.measures), "sample_rate": ex.sample_rate,
            "modalities": list(ex.modalities), **ex.meta,
        }
        if ex.image is not None:
            meta["image_shape"] = list(ex.image.shape)
            self._add(f"{ex.key}.png", encode_image(ex.image))
        if ex.lmx is not None:
            meta["lmx_tokens"] = len(ex.lmx)
            self._add(f"{ex.key}.lmx", " ".join(ex.lmx).encode())
        if ex.midi is not None:
            meta["midi_notes"] = sum(len(i.notes) for i in ex.midi.instruments)
            self._add(f"{ex.key}.mid", encode_midi(ex.midi))
        if ex.audio is not None:
            meta["audio_seconds"] = round(len(ex.audio) / ex.sample_rate, 4)
            self._add(f"{ex.key}.flac", encode_audio(ex.audio, ex.sample_rate))
        meta.setdefault("duration", round(ex.duration, 4))
        self._add(f"{ex.key}.json", json.dumps(meta, sort_keys=True).encode())
        self._metas.append(meta)

    def __exit__(self, exc_type, exc, tb) -> None:
        assert self._tar is not None
        self._tar.close()
        if exc_type is not None:
            self._tmp.unlink(missing_ok=True)
            return
        _fsync(self._tmp)
        self._tmp.replace(self.path)
        self.records = index_shard(self.path)


def _fsync(path: Path) -> None:
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


def index_shard(path: str | Path) -> list[dict[str, Any]]:
    """Read a shard's members and write ``<name>.index.json`` (atomically); returns its records."""
    path = Path(path)
    members: dict[str, dict[str, list[int]]] = {}
    metas: dict[str, dict[str, Any]] = {}
    try:
        with tarfile.open(path, "r") as tar:
            for info in tar:
                key, _, ext = info.name.rpartition(".")
                members.setdefault(key, {})[ext] = [info.offset_data, info.size]
                if ext == "json":
                    fh = tar.extractfile(info)
                    metas[key] = json.loads(fh.read()) if fh else {}
    except (tarfile.TarError, OSError, json.JSONDecodeError) as err:
        raise CorpusError(f"corrupt shard {path}: {err}") from None
    records = []
    for key, meta in metas.items():
        records.append({**meta, "shard": path.name, "members": members[key]})
    index = path.with_suffix(".index.json")
    tmp = index.with_name(f".{index.name}.tmp")
    tmp.write_text(json.dumps(records))
    tmp.replace(index)
    return records


def shard_done(corpus_dir: str | Path, name: str) -> bool:
    """True if shard ``name`` is complete (its tar exists; a missing index is rebuilt)."""
    tar = Path(corpus_dir) / SHARD_DIR / f"{name}.tar"
    if not tar.is_file():
        return False
    if not tar.with_suffix(".index.json").is_file():
        index_shard(tar)
    return True


def write_manifest(corpus_dir: str | Path) -> int:
    """Rebuild ``manifest.jsonl`` from every shard index (sorted by key); returns the example count."""
    corpus_dir = Path(corpus_dir)
    records: list[dict[str, Any]] = []
    for tar in sorted((corpus_dir / SHARD_DIR).glob("*.tar")):
        index = tar.with_suffix(".index.json")
        records.extend(json.loads(index.read_text()) if index.is_file() else index_shard(tar))
    records.sort(key=lambda r: (r["piece"], r["system"], r["key"]))
    tmp = corpus_dir / f".{MANIFEST}.tmp"
    with open(tmp, "w") as fh:
        for rec in records:
            fh.write(json.dumps(rec, sort_keys=True) + "\n")
    tmp.replace(corpus_dir / MANIFEST)
    return len(records)


# ----------------------------------------------------------------------------------------------- reading
class Corpus:
    """Random access to a corpus folder written by :class:`ShardWriter` (``len``, ``[i]``, iteration).

    ``modalities`` restricts what is decoded (e.g. ``("image",)`` for codec training).  Thread-safe reads;
    each worker process opens its own file handles.
    """

    def __init__(self, corpus_dir: str | Path, modalities: Sequence[str] | None = None, split: str | None = None):
        self.dir = Path(corpus_dir)
        manifest = self.dir / MANIFEST
        if not manifest.is_file():
            raise CorpusError(f"{self.dir} is not a corpus folder: {manifest} is missing (run `musicmoe data build`)")
        records = []
        with open(manifest) as fh:
            for lineno, line in enumerate(fh, 1):
                if line.strip():
                    try:
                        records.append(json.loads(line))
                    except json.JSONDecodeError as err:
                        raise CorpusError(f"{manifest}:{lineno}: bad JSON ({err})") from None
        self.records = [r for r in records if split is None or r.get("split") == split]
        self.modalities = tuple(modalities) if modalities else ("image", "lmx", "midi", "audio")
        self._handles: dict[tuple[int, str], Any] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.records)

    def split_indices(self, split: str) -> list[int]:
        return [i for i, r in enumerate(self.records) if r.get("split") == split]

    def _read(self, record: dict[str, Any], ext: str) -> bytes | None:
        span = record["members"].get(ext)
        if span is None:
            return None
        path = self.dir / SHARD_DIR / record["shard"]
        handle_key = (os.getpid(), record["shard"])
        with self._lock:
            fh = self._handles.get(handle_key)
            if fh is None:
                try:
                    fh = self._handles[handle_key] = open(path, "rb")
                except OSError as err:
                    raise CorpusError(f"cannot open shard {path}: {err}") from None
            fh.seek(span[0])
            data = fh.read(span[1])
        if len(data) != span[1]:
            raise CorpusError(f"shard {path} is truncated (member {record['key']}.{ext})")
        return data

    def read_bytes(self, index: int, modality: str) -> bytes | None:
        """Raw stored bytes of one modality (``meta`` for the JSON) of example ``index``."""
        return self._read(self.records[index], _EXT[modality])

    def __getitem__(self, index: int) -> Example:
        rec = self.records[index]
        name = f"{rec['shard']}:{rec['key']}"
        ex = Example(
            key=rec["key"], piece=rec["piece"], composer=rec.get("composer", ""), split=rec.get("split", "train"),
            system=rec.get("system", 0), measures=tuple(rec.get("measures", (0, 0))),  # type: ignore[arg-type]
            sample_rate=rec.get("sample_rate", 24000),
            meta={k: v for k, v in rec.items() if k not in {"members", "modalities"}},
        )
        if "image" in self.modalities and (data := self._read(rec, "png")) is not None:
            ex.image = decode_image(data, f"{name}.png")
        if "lmx" in self.modalities and (data := self._read(rec, "lmx")) is not None:
            ex.lmx = data.decode().split()
        if "midi" in self.modalities and (data := self._read(rec, "mid")) is not None:
            ex.midi = decode_midi(data, f"{name}.mid")
        if "audio" in self.modalities and (data := self._read(rec, "flac")) is not None:
            ex.audio, ex.sample_rate = decode_audio(data, f"{name}.flac")
        return ex

    def __iter__(self) -> Iterator[Example]:
        for i in range(len(self)):
            yield self[i]

    def close(self) -> None:
        with self._lock:
            for fh in self._handles.values():
                fh.close()
            self._handles.clear()

    def __getstate__(self) -> dict[str, Any]:  # picklable for DataLoader workers
        state = self.__dict__.copy()
        state["_handles"] = {}
        state["_lock"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()


def write_report(corpus_dir: str | Path, report: dict[str, Any]) -> Path:
    """Write ``report.json`` atomically (with a timestamp)."""
    path = Path(corpus_dir) / "report.json"
    tmp = path.with_name(".report.json.tmp")
    tmp.write_text(json.dumps({**report, "written_at": time.strftime("%Y-%m-%dT%H:%M:%S")}, indent=2))
    tmp.replace(path)
    return path


def iter_records(corpus_dir: str | Path) -> Iterable[dict[str, Any]]:
    """Manifest records without opening shards (for stats)."""
    with open(Path(corpus_dir) / MANIFEST) as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)
