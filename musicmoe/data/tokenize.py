"""``musicmoe data tokenize``: a corpus's four modalities -> memory-mapped token shards (see ``tokens.py``).

Streams: image codes (``ImageCodec``, flattened column by column), audio codes (``AudioCodec``), LMX ids
(``Vocabulary``) and MIDI event ids (``MidiCodec.encode(pm, 0, duration)``).  Without an image or audio
codec that stream is skipped (recorded in ``meta.json``).

Work is done per split in chunks of ``tokenize.chunk_size`` examples; each chunk is written to
``TOKDIR/.work/<split>/chunk-NNNNN.npz`` atomically, so an interrupted or killed run continues at the first
missing chunk.  ``.work/signature.json`` pins the corpus manifest, codec hashes and settings; resuming with
different ones is refused.  When every chunk exists they are merged into one flat array per stream, then
``report.json`` and (last) ``meta.json`` are written and ``.work`` is removed.

Per example and stream: a missing member is counted as missing; a corrupt member (unreadable PNG/FLAC/MIDI)
is skipped and listed with its error; a stream longer than its limit is left out and listed with its length.
Corpus files are decoded (and LMX/MIDI encoded) in ``tokenize.workers`` DataLoader processes while the main
process runs the neural codecs, batching images of equal padded size.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import shutil
import sys
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from musicmoe.data.shards import MANIFEST, Corpus, CorpusError, decode_audio, decode_image, decode_midi
from musicmoe.data.tokens import (
    EXAMPLES_FILE,
    FORMAT,
    INDEX_FILE,
    META_FILE,
    MODALITIES,
    MULTI_CODEBOOK,
    REPORT_FILE,
    VERSION,
    stream_dtype,
)

log = logging.getLogger(__name__)
WORK = ".work"


class TokenizeError(RuntimeError):
    """Tokenization cannot proceed (bad arguments, a mismatching unfinished run, ...); names the path."""


# ------------------------------------------------------------------------------------------ corpus reading
class _Reader:
    """Decodes one corpus example per modality (in DataLoader workers): errors are returned, not raised."""

    def __init__(self, corpus_dir: Path, split: str, want_image: bool, want_audio: bool, midi_config: Any):
        self.corpus_dir, self.split = corpus_dir, split
        self.want_image, self.want_audio = want_image, want_audio
        self.midi_config = midi_config
        self._corpus: Corpus | None = None
        self._vocab = None
        self._midi = None

    def _setup(self) -> None:
        from musicmoe.codecs.lmx import Vocabulary
        from musicmoe.codecs.midi import MidiCodec

        self._corpus = Corpus(self.corpus_dir, split=self.split)
        self._vocab = Vocabulary.from_file()
        self._midi = MidiCodec(self.midi_config)

    def __len__(self) -> int:
        if self._corpus is None:
            self._setup()
        return len(self._corpus)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> dict[str, Any]:
        if self._corpus is None:
            self._setup()
        corpus, vocab, midi = self._corpus, self._vocab, self._midi
        assert corpus is not None and vocab is not None and midi is not None
        rec = corpus.records[i]
        key = rec["key"]
        name = f"{rec.get('shard')}:{key}"
        out: dict[str, Any] = {"i": i, "key": key, "piece": rec.get("piece", ""), "system": rec.get("system", 0),
                               "missing": [], "corrupt": {}}

        def raw(modality: str) -> bytes | None:
            try:
                data = corpus.read_bytes(i, modality)
            except CorpusError as err:
                out["corrupt"][modality] = str(err)
                return None
            if data is None:
                out["missing"].append(modality)
            return data

        if self.want_image and (data := raw("image")) is not None:
            try:
                out["image"] = decode_image(data, f"{name}.png")
            except CorpusError as err:
                out["corrupt"]["image"] = str(err)
        if self.want_audio and (data := raw("audio")) is not None:
            try:
                out["audio"], out["sample_rate"] = decode_audio(data, f"{name}.flac")
                if not np.isfinite(out["audio"]).all():
                    raise CorpusError(f"audio {name}.flac holds NaN/inf samples")
            except CorpusError as err:
                out.pop("audio", None)
                out["corrupt"]["audio"] = str(err)
        if (data := raw("lmx")) is not None:
            try:
                tokens = data.decode("utf-8").split()
                out["lmx"] = np.asarray(vocab.encode(tokens), dtype=np.int64)
                out["lmx_unknown"] = [t for t in tokens if t not in vocab]
            except UnicodeDecodeError as err:
                out["corrupt"]["lmx"] = f"corrupt LMX {name}.lmx: {err}"
        if (data := raw("midi")) is not None:
            try:
                pm = decode_midi(data, f"{name}.mid")
                end = float(rec.get("duration") or 0.0) or None
                out["midi"] = np.asarray(midi.encode(pm, 0.0, end), dtype=np.int64)
            except (CorpusError, ValueError) as err:
                out["corrupt"]["midi"] = str(err)
        return out


def _identity(batch: list) -> list:
    return batch


# ------------------------------------------------------------------------------------------------ helpers
def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    tmp.replace(path)


def _resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def _load_image_codec(spec: Any, device: str):
    if spec is None or spec == "":
        return None
    from musicmoe.codecs.image.codec import ImageCodec

    codec = spec if isinstance(spec, ImageCodec) else ImageCodec.load(str(spec))
    return codec.to(device).eval()


def _load_audio_codec(spec: Any, device: str):
    if spec is None or spec == "":
        return None
    from musicmoe.codecs.audio.codec import AudioCodec

    codec = spec if isinstance(spec, AudioCodec) else AudioCodec.load(str(spec))
    return codec.to(device)


# ---------------------------------------------------------------------------------------------- main work
class _Tokenizer:
    def __init__(self, corpus_dir: Path, out: Path, cfg: Any, image_codec: Any, audio_codec: Any,
                 progress: bool) -> None:
        from musicmoe.codecs.lmx import Vocabulary
        from musicmoe.codecs.midi import MidiCodec

        self.corpus_dir, self.out, self.cfg, self.tcfg = corpus_dir, out, cfg, cfg.tokenize
        self.progress = progress
        self.device = _resolve_device(self.tcfg.device)
        self.image_codec = _load_image_codec(image_codec, self.device)
        self.audio_codec = _load_audio_codec(audio_codec, self.device)
        self.vocab = Vocabulary.from_file()
        self.midi = MidiCodec(cfg.midi_codec)
        self.corpus = Corpus(corpus_dir)
        self.vocab_info = self._vocab_info()
        self.dtypes = {m: stream_dtype(v["vocab_size"]) for m, v in self.vocab_info.items()}
        self.signature = self._signature()

    # -- description ---------------------------------------------------------------------------------------
    def _vocab_info(self) -> dict[str, dict[str, int]]:
        ic, ac = self.image_codec, self.audio_codec
        icfg, acfg = self.cfg.image_codec, self.cfg.audio_codec
        return {
            "image": {"vocab_size": int(ic.cfg.codebook_size if ic else icfg.codebook_size),
                      "codebooks": int(ic.cfg.codebooks if ic else icfg.codebooks)},
            "lmx": {"vocab_size": len(self.vocab), "codebooks": 1},
            "midi": {"vocab_size": int(self.midi.vocab_size), "codebooks": 1},
            "audio": {"vocab_size": int(ac.codebook_size if ac else acfg.codebook_size),
                      "codebooks": int(ac.num_codebooks if ac else acfg.codebooks)},
        }

    def _streams(self) -> dict[str, dict[str, Any]]:
        streams: dict[str, dict[str, Any]] = {}
        for m in MODALITIES:
            codec = {"image": self.image_codec, "audio": self.audio_codec}.get(m, True)
            entry: dict[str, Any] = {"available": codec is not None, "dtype": self.dtypes[m].name,
                                     "limit": self.tcfg.limit(m), **self.vocab_info[m]}
            if codec is None:
                entry["reason"] = f"no {m} codec given"
            streams[m] = entry
        return streams

    def _signature(self) -> dict[str, Any]:
        ic, ac = self.image_codec, self.audio_codec
        return {
            "format": FORMAT, "version": VERSION,
            "corpus_manifest_sha256": _sha256_file(self.corpus_dir / MANIFEST),
            "image_codec": ic.content_hash if ic is not None else None,
            "audio_codec": ac.content_hash if ac is not None else None,
            "lmx_vocabulary_sha256": hashlib.sha256("\n".join(self.vocab.tokens).encode()).hexdigest(),
            "midi_codec": asdict(self.cfg.midi_codec),
            "limits": {m: self.tcfg.limit(m) for m in MODALITIES},
            "splits": list(self.tcfg.splits), "chunk_size": self.tcfg.chunk_size,
        }

    # -- resumable chunks --------------------------------------------------------------------------------
    def _chunk_path(self, split: str, c: int) -> Path:
        return self.out / WORK / split / f"chunk-{c:05d}.npz"

    def _encode_batch(self, raws: list[dict[str, Any]], stats: Counter) -> list[dict[str, Any]]:
        """Run the neural codecs on a batch of decoded examples; returns per-example stream results."""
        results: list[dict[str, Any]] = []
        for r in raws:
            res: dict[str, Any] = {"key": r["key"], "piece": r["piece"], "system": r["system"], "streams": {},
                                   "over": {}, "corrupt": dict(r["corrupt"]), "missing": list(r["missing"]),
                                   "failed": {}, "lmx_unknown": r.get("lmx_unknown", []),
                                   "image_size": (0, 0), "image_grid": (0, 0), "audio_samples": 0}
            for m in ("lmx", "midi"):
                if m in r:
                    self._accept(res, m, r[m])
            results.append(res)
        # images: grouped by padded shape inside encode_batch
        if self.image_codec is not None:
            patch = self.image_codec.cfg.patch
            todo = []
            for r, res in zip(raws, results):
                img = r.get("image")
                if img is None:
                    continue
                grid = (-(-img.shape[0] // patch), -(-img.shape[1] // patch))
                res["image_size"], res["image_grid"] = tuple(img.shape), grid
                if grid[0] * grid[1] > self.tcfg.max_image_positions:
                    res["over"]["image"] = grid[0] * grid[1]
                else:
                    todo.append((img, res))
            if todo:
                from musicmoe.codecs.image.layout import flatten_codes

                try:
                    codes = self.image_codec.encode_batch([img for img, _ in todo])
                    for (_, res), c in zip(todo, codes):
                        self._accept(res, "image", flatten_codes(c).T)
                except (ValueError, RuntimeError):  # isolate the failing image
                    for img, res in todo:
                        try:
                            self._accept(res, "image", flatten_codes(self.image_codec.encode(img)).T)
                        except (ValueError, RuntimeError) as err:
                            res["failed"]["image"] = str(err)
        if self.audio_codec is not None:
            ac = self.audio_codec
            for r, res in zip(raws, results):
                audio = r.get("audio")
                if audio is None:
                    continue
                res["audio_samples"] = len(audio)
                frames = ac.num_frames(math.ceil(len(audio) * ac.sample_rate / r["sample_rate"]))
                if frames > self.tcfg.max_audio_frames:
                    res["over"]["audio"] = frames
                    continue
                try:
                    self._accept(res, "audio", ac.encode(audio, r["sample_rate"]).T)
                except (ValueError, RuntimeError) as err:
                    res["failed"]["audio"] = str(err)
        stats["examples"] += len(raws)
        return results

    def _accept(self, res: dict[str, Any], m: str, tokens: np.ndarray) -> None:
        n = tokens.shape[0]
        if n > self.tcfg.limit(m):
            res["over"][m] = int(n)
        else:
            res["streams"][m] = tokens

    def _write_chunk(self, path: Path, results: list[dict[str, Any]]) -> None:
        arrays: dict[str, np.ndarray] = {}
        for m in MODALITIES:
            q = self.vocab_info[m]["codebooks"]
            parts = [r["streams"][m] for r in results if m in r["streams"]]
            shape0 = (0, q) if m in MULTI_CODEBOOK else (0,)
            data = np.concatenate(parts) if parts else np.zeros(shape0)
            arrays[f"{m}_data"] = data.astype(self.dtypes[m])
            arrays[f"{m}_len"] = np.array([len(r["streams"][m]) if m in r["streams"] else -1 for r in results],
                                          dtype=np.int64)
        arrays["image_size"] = np.array([r["image_size"] for r in results], dtype=np.int32).reshape(-1, 2)
        arrays["image_grid"] = np.array([r["image_grid"] for r in results], dtype=np.int32).reshape(-1, 2)
        arrays["audio_samples"] = np.array([r["audio_samples"] for r in results], dtype=np.int64)
        info = [{k: r[k] for k in ("key", "piece", "system", "over", "corrupt", "missing", "failed", "lmx_unknown")}
                for r in results]
        arrays["info"] = np.array(json.dumps(info))
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(path)

    def _run_split(self, split: str, stats: Counter) -> int:
        import torch
        from torch.utils.data import DataLoader

        indices = list(range(len(self.corpus.split_indices(split))))
        size = self.tcfg.chunk_size
        chunks = [indices[a:a + size] for a in range(0, len(indices), size)]
        pending = [c for c in range(len(chunks)) if not self._chunk_path(split, c).is_file()]
        if not pending:
            return len(chunks)
        reader = _Reader(self.corpus_dir, split, self.image_codec is not None, self.audio_codec is not None,
                         self.cfg.midi_codec)
        batches: list[list[int]] = []
        owner: list[int] = []
        for c in pending:
            for a in range(0, len(chunks[c]), self.tcfg.batch_size):
                batches.append(chunks[c][a:a + self.tcfg.batch_size])
                owner.append(c)
        workers = self.tcfg.workers
        loader = DataLoader(reader, batch_sampler=batches, num_workers=workers, collate_fn=_identity,
                            persistent_workers=False, prefetch_factor=4 if workers else None)
        from tqdm.auto import tqdm

        bar = tqdm(total=sum(len(chunks[c]) for c in pending), desc=f"tokenize {split}", unit="ex",
                   disable=not self.progress, mininterval=0.5 if sys.stderr.isatty() else 30, file=sys.stderr)
        current: list[dict[str, Any]] = []
        with torch.inference_mode():
            for b, raws in enumerate(loader):
                current.extend(self._encode_batch(raws, stats))
                bar.update(len(raws))
                last_of_chunk = b + 1 == len(batches) or owner[b + 1] != owner[b]
                if last_of_chunk:
                    c = owner[b]
                    if len(current) != len(chunks[c]):
                        raise TokenizeError(f"internal error: chunk {c} of {split} got {len(current)} examples")
                    self._write_chunk(self._chunk_path(split, c), current)
                    current = []
        bar.close()
        return len(chunks)

    # -- merge ---------------------------------------------------------------------------------------------
    def _merge_split(self, split: str, n_chunks: int) -> tuple[int, dict[str, Any]]:
        """Merge a split's chunks into the final flat arrays (written to temp names, then renamed)."""
        split_dir = self.out / split
        split_dir.mkdir(parents=True, exist_ok=True)
        paths = [self._chunk_path(split, c) for c in range(n_chunks)]
        lens: dict[str, list[np.ndarray]] = {m: [] for m in MODALITIES}
        extra: dict[str, list[np.ndarray]] = {"image_size": [], "image_grid": [], "audio_samples": []}
        infos: list[dict[str, Any]] = []
        for p in paths:
            with np.load(p) as z:
                for m in MODALITIES:
                    lens[m].append(z[f"{m}_len"])
                for k in extra:
                    extra[k].append(z[k])
                infos.extend(json.loads(str(z["info"])))
        n = len(infos)
        index: dict[str, np.ndarray] = {}
        for k, parts in extra.items():
            index[k] = np.concatenate(parts) if parts else np.zeros((0, 2) if k != "audio_samples" else (0,), np.int64)
        for m in MODALITIES:
            ln = np.concatenate(lens[m]) if lens[m] else np.zeros(0, np.int64)
            index[f"present_{m}"] = ln >= 0
            index[f"offsets_{m}"] = np.concatenate([[0], np.cumsum(np.maximum(ln, 0))]).astype(np.int64)
            total = int(index[f"offsets_{m}"][-1])
            q = self.vocab_info[m]["codebooks"]
            shape = (total, q) if m in MULTI_CODEBOOK else (total,)
            target = split_dir / f"{m}.npy"
            tmp = split_dir / f".{m}.{os.getpid()}.tmp.npy"
            if total:
                out = np.lib.format.open_memmap(tmp, mode="w+", dtype=self.dtypes[m], shape=shape)
                pos = 0
                for p in paths:
                    with np.load(p) as z:
                        data = z[f"{m}_data"]
                    out[pos:pos + len(data)] = data
                    pos += len(data)
                out.flush()
                del out
            else:
                np.save(tmp, np.zeros(shape, dtype=self.dtypes[m]))
            tmp.replace(target)
        tmp_index = split_dir / f".index.{os.getpid()}.tmp.npz"
        np.savez(tmp_index, **index)
        tmp_index.replace(split_dir / INDEX_FILE)
        _write_json(split_dir / EXAMPLES_FILE, [{k: e[k] for k in ("key", "piece", "system")} for e in infos])
        return n, self._split_report(infos, index)

    def _split_report(self, infos: list[dict[str, Any]], index: dict[str, np.ndarray]) -> dict[str, Any]:
        over = {m: [[e["key"], e["over"][m]] for e in infos if m in e["over"]] for m in MODALITIES}
        corrupt = {m: [[e["key"], e["corrupt"][m]] for e in infos if m in e["corrupt"]] for m in MODALITIES}
        failed = {m: [[e["key"], e["failed"][m]] for e in infos if m in e["failed"]] for m in MODALITIES}
        unknown = Counter(t for e in infos for t in e["lmx_unknown"])
        return {
            "examples": len(infos),
            "streams": {m: int(index[f"present_{m}"].sum()) for m in MODALITIES},
            "tokens": {m: int(index[f"offsets_{m}"][-1]) for m in MODALITIES},
            "missing": {m: sum(m in e["missing"] for e in infos) for m in MODALITIES},
            "over_limit": {m: v for m, v in over.items() if v},
            "corrupt": {m: v for m, v in corrupt.items() if v},
            "encode_failed": {m: v for m, v in failed.items() if v},
            "lmx_unknown_tokens": dict(unknown.most_common()),
            "empty_examples": [e["key"] for e, *present in zip(infos, *[index[f"present_{m}"] for m in MODALITIES])
                               if not any(present)],
        }

    # -- driver --------------------------------------------------------------------------------------------
    def run(self, overwrite: bool) -> dict[str, Any]:
        out = self.out
        meta_path = out / META_FILE
        sig_path = out / WORK / "signature.json"
        if meta_path.is_file():
            meta = json.loads(meta_path.read_text())
            if meta.get("signature") == self.signature and not overwrite:
                report = json.loads((out / REPORT_FILE).read_text())
                report["up_to_date"] = True
                return report
            if not overwrite:
                raise TokenizeError(f"{out} already holds tokens made with other inputs or settings: "
                                    "choose another --out or pass --overwrite")
        if sig_path.is_file() and json.loads(sig_path.read_text()) != self.signature and not overwrite:
            raise TokenizeError(f"{out} holds an unfinished tokenization with other inputs or settings "
                                f"(see {sig_path}): choose another --out or pass --overwrite")
        if overwrite:
            remove_tokens(out)
        sig_path.parent.mkdir(parents=True, exist_ok=True)
        if not sig_path.is_file():
            _write_json(sig_path, self.signature)

        stats: Counter = Counter()
        started = time.perf_counter()
        chunk_counts = {s: self._run_split(s, stats) for s in self.tcfg.splits}
        seconds = time.perf_counter() - started
        splits: dict[str, int] = {}
        per_split: dict[str, Any] = {}
        for s in self.tcfg.splits:
            splits[s], per_split[s] = self._merge_split(s, chunk_counts[s])
        report = _summarise(per_split)
        report.update(
            corpus=str(self.corpus_dir), out=str(out), seconds=round(seconds, 2),
            examples_this_run=stats["examples"],
            examples_per_second=round(stats["examples"] / seconds, 2) if seconds > 0 and stats["examples"] else None,
            device=self.device, splits=per_split,
        )
        _write_json(out / REPORT_FILE, report)
        meta = {
            "format": FORMAT, "version": VERSION, "corpus": str(self.corpus_dir.resolve()),
            "corpus_manifest_sha256": self.signature["corpus_manifest_sha256"],
            "codecs": {
                "image": {"content_hash": self.image_codec.content_hash, "patch": int(self.image_codec.cfg.patch)}
                if self.image_codec is not None else None,
                "audio": {"content_hash": self.audio_codec.content_hash, "sample_rate": self.audio_codec.sample_rate,
                          "frame_rate": self.audio_codec.frame_rate} if self.audio_codec is not None else None,
                "lmx": {"vocabulary_sha256": self.signature["lmx_vocabulary_sha256"]},
                "midi": {"config": self.signature["midi_codec"]},
            },
            "vocab": self.vocab_info, "streams": self._streams(), "splits": splits,
            "limits": self.signature["limits"], "signature": self.signature,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        _write_json(meta_path, meta)
        shutil.rmtree(out / WORK, ignore_errors=True)
        report["up_to_date"] = False
        return report


def _summarise(per_split: dict[str, Any]) -> dict[str, Any]:
    total: dict[str, Any] = {"examples": 0, "over_limit": Counter(), "corrupt": Counter(), "encode_failed": Counter(),
                             "streams": Counter(), "lmx_unknown": 0}
    for rep in per_split.values():
        total["examples"] += rep["examples"]
        for k in ("over_limit", "corrupt", "encode_failed"):
            for m, v in rep[k].items():
                total[k][m] += len(v)
        total["streams"].update(rep["streams"])
        total["lmx_unknown"] += sum(rep["lmx_unknown_tokens"].values())
    return {k: dict(v) if isinstance(v, Counter) else v for k, v in total.items()}


def remove_tokens(out: str | Path) -> None:
    """Delete what tokenization wrote into ``out`` (only its own files and folders)."""
    from musicmoe.data.split import SPLITS

    out = Path(out)
    shutil.rmtree(out / WORK, ignore_errors=True)
    for s in SPLITS:
        d = out / s
        if d.is_dir():
            for m in MODALITIES:
                (d / f"{m}.npy").unlink(missing_ok=True)
            for f in (INDEX_FILE, EXAMPLES_FILE):
                (d / f).unlink(missing_ok=True)
            if not any(d.iterdir()):
                d.rmdir()
    for f in (META_FILE, REPORT_FILE):
        (out / f).unlink(missing_ok=True)


def tokenize(corpus: str | Path, out: str | Path | None = None, config: Any = None, *, image_codec: Any = None,
             audio_codec: Any = None, overwrite: bool = False, progress: bool = True) -> dict[str, Any]:
    """Tokenize ``corpus`` into ``out`` (default ``config.tokenize.out``); returns the report (``report.json``).

    ``config``: the root config (``tokenize`` and ``midi_codec`` sections are used; default: defaults).
    ``image_codec`` / ``audio_codec``: a checkpoint path or a loaded codec; ``None`` skips that stream.
    Rerunning continues an interrupted run; a finished one with the same inputs returns at once.
    """
    if config is None:
        from musicmoe.config import load_config

        config = load_config()
    corpus_dir = Path(corpus)
    if not (corpus_dir / MANIFEST).is_file():
        raise TokenizeError(f"{corpus_dir} is not a corpus folder ({MANIFEST} missing; run `musicmoe data build`)")
    out_dir = Path(out or config.tokenize.out)
    from musicmoe.runtime import torch_threads

    with torch_threads(config.tokenize.threads):  # restored afterwards: the caller's setting survives
        return _Tokenizer(corpus_dir, out_dir, config, image_codec, audio_codec, progress).run(overwrite)


def format_report(report: dict[str, Any]) -> str:
    """A few human-readable lines about a tokenization report."""
    lines = []
    if report.get("up_to_date"):
        lines.append(f"{report['out']}: already tokenized with the same inputs (nothing to do)")
    per = ", ".join(f"{s} {r['examples']}" for s, r in report.get("splits", {}).items())
    lines.append(f"tokenized {report['examples']} examples ({per}) into {report['out']}")
    lines.append("streams: " + ", ".join(f"{m} {n}" for m, n in sorted(report["streams"].items())))
    if report.get("examples_per_second"):
        lines.append(f"speed: {report['examples_per_second']} examples/s on {report['device']}")
    for kind, what in (("over_limit", "over the length limit (left out)"), ("corrupt", "corrupt (skipped)"),
                       ("encode_failed", "failed to encode (skipped)")):
        for m, n in sorted(report[kind].items()):
            lines.append(f"{n} {m} stream(s) {what}; keys in report.json")
    if report.get("lmx_unknown"):
        lines.append(f"{report['lmx_unknown']} LMX tokens outside the vocabulary (encoded as <unk>)")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------------ CLI
def register_cli(data_subparsers: argparse._SubParsersAction) -> None:
    """Add ``tokenize`` to the ``musicmoe data`` command group."""
    from musicmoe.cli.common import add_config_arguments, existing_path

    p = data_subparsers.add_parser(
        "tokenize", help="encode a corpus into memory-mapped token shards for training",
        description="Encode every example's image, audio, LMX and MIDI into token shards (resumable). "
                    "Config overrides go right after CORPUS: musicmoe data tokenize runs/corpus "
                    "tokenize.max_lmx_tokens=2048 --image-codec runs/ic/image_codec.pt --out runs/tokens",
    )
    p.add_argument("corpus", type=existing_path, help="corpus folder (from `musicmoe data build`)")
    p.add_argument("--image-codec", metavar="CKPT", help="image codec checkpoint (default: image_codec.checkpoint; "
                   "none: image stream skipped)")
    p.add_argument("--audio-codec", metavar="CKPT", help="audio codec checkpoint or published EnCodec weights "
                   "(default: audio_codec.checkpoint or .weights; none: audio stream skipped)")
    p.add_argument("--out", metavar="TOKDIR", help="output folder (default: tokenize.out)")
    p.add_argument("--overwrite", action="store_true", help="replace tokens made with other inputs")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_config_arguments(p)
    p.set_defaults(func=_cli_tokenize)


def _cli_tokenize(args: argparse.Namespace) -> int:
    from musicmoe.cli.common import config_from_args
    from musicmoe.cli.main import UserError

    cfg = config_from_args(args)
    image = args.image_codec or cfg.image_codec.checkpoint or None
    audio = args.audio_codec or cfg.audio_codec.checkpoint or None
    try:
        if audio is None and cfg.audio_codec.weights:
            from musicmoe.codecs.audio.codec import AudioCodec

            audio = AudioCodec.from_published(cfg.audio_codec.weights, cfg.audio_codec)
        for name, path in (("image", image), ("audio", audio)):
            if isinstance(path, str) and not Path(path).is_file():
                raise UserError(f"{name} codec checkpoint not found: {path}")
        report = tokenize(args.corpus, args.out, cfg, image_codec=image, audio_codec=audio,
                          overwrite=args.overwrite, progress=not args.no_progress)
    except (TokenizeError, CorpusError) as err:
        raise UserError(str(err)) from None
    except ValueError as err:  # codec file errors (AudioCodecError, CodecFileError) are ValueErrors
        raise UserError(str(err)) from None
    print(format_report(report))
    return 0


__all__: Sequence[str] = ["TokenizeError", "format_report", "register_cli", "remove_tokens", "tokenize"]
