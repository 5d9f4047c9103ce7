"""Reading videos: frames with OpenCV (``opencv-python-headless``), audio with PyAV (``av``, whose wheels
bundle FFmpeg, so no ffmpeg program is needed)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v")


class MediaError(RuntimeError):
    """A video cannot be opened or has no usable stream; the message names the file."""


@dataclass
class VideoInfo:
    fps: float
    frame_count: int          # as the container states it (may be approximate)
    width: int
    height: int


def find_video(folder: str | Path, yt_id: str) -> Path | None:
    """The video file ``<folder>/<yt_id>.<ext>`` (a known video suffix), if there is one."""
    folder = Path(folder)
    for suffix in VIDEO_SUFFIXES:
        path = folder / f"{yt_id}{suffix}"
        if path.is_file() and path.stat().st_size > 0:
            return path
    return None


def open_video(path: str | Path):
    import cv2

    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise MediaError(f"cannot open video {path}")
    return cap


def video_info(path: str | Path) -> VideoInfo:
    import cv2

    cap = open_video(path)
    try:
        fps = float(cap.get(cv2.CAP_PROP_FPS))
        info = VideoInfo(fps, int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
                         int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    finally:
        cap.release()
    if not fps > 0:
        raise MediaError(f"video {path} states no frame rate")
    return info


def iter_frames(path: str | Path, wanted: Callable[[int], bool], max_failures: int = 50,
                stats: dict | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """``(index, BGR frame)`` for every frame index with ``wanted(index)``, in order.

    Frames are grabbed one by one (decoded only when wanted).  A frame that cannot be grabbed or decoded is
    skipped and counted in ``stats["corrupt_frames"]``; reading stops at the end of the stream or after
    ``max_failures`` failures in a row.  ``stats["frames"]`` receives the number of frame slots read.
    """
    import cv2

    cap = open_video(path)
    stats = stats if stats is not None else {}
    stats.setdefault("corrupt_frames", 0)
    stated = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    index = 0
    failures = 0
    try:
        while True:
            if not cap.grab():
                # the end, or a corrupt frame: only keep trying while the container says frames remain
                if stated <= 0 or index >= stated - 1 or failures >= max_failures:
                    break
                failures += 1
                stats["corrupt_frames"] += 1
                index += 1
                continue
            failures = 0
            if wanted(index):
                ok, frame = cap.retrieve()
                if ok and frame is not None:
                    yield index, frame
                else:
                    stats["corrupt_frames"] += 1
            index += 1
    finally:
        stats["frames"] = index
        cap.release()


def read_audio(path: str | Path, sample_rate: int, stats: dict | None = None) -> np.ndarray:
    """The first audio stream as float32 mono at ``sample_rate``, time 0 = the video's first frame.

    Undecodable packets are skipped and counted in ``stats["corrupt_audio_packets"]`` (the gap they
    leave is filled by the following packet's timestamp, so later audio stays aligned)."""
    import av

    stats = stats if stats is not None else {}
    stats.setdefault("corrupt_audio_packets", 0)
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as err:
        raise MediaError(f"cannot open {path} for audio: {err}") from None
    with container:
        if not container.streams.audio:
            raise MediaError(f"video {path} has no audio stream")
        stream = container.streams.audio[0]
        origin = 0.0
        if container.streams.video and container.streams.video[0].start_time is not None:
            vs = container.streams.video[0]
            origin = float(vs.start_time * vs.time_base)
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        chunks: list[np.ndarray] = []
        position = 0  # samples written so far (relative to origin)

        def place(frame) -> None:
            nonlocal position
            data = frame.to_ndarray().reshape(-1).astype(np.float32, copy=False)
            if frame.pts is not None and frame.time_base is not None:
                start = int(round((float(frame.pts * frame.time_base) - origin) * sample_rate))
                if start > position:  # a gap (e.g. skipped corrupt packets): keep time by silence
                    chunks.append(np.zeros(start - position, np.float32))
                    position = start
                elif start < position:  # overlap or audio before the first video frame: drop the excess
                    data = data[min(len(data), position - start):]
            chunks.append(data)
            position += len(data)

        for packet in container.demux(stream):
            try:
                frames = packet.decode()
            except (av.error.FFmpegError, ValueError):
                stats["corrupt_audio_packets"] += 1
                continue
            for frame in frames:
                for out in resampler.resample(frame):
                    place(out)
        for out in resampler.resample(None):
            place(out)
    if not chunks:
        raise MediaError(f"no audio could be decoded from {path}")
    return np.concatenate(chunks)
