"""The YouTube Score Video dataset (YTSV, from the U-MusT paper) as a corpus of page images + audio.

Stages (``musicmoe ytsv ...``, :mod:`musicmoe.data.ytsv.pipeline`): ``ingest`` the metadata CSV
(:mod:`.metadata`), ``download`` with yt-dlp (optional extra ``musicmoe[download]``), ``segment`` each video
into pages and their audio (:mod:`.segment`, the paper's slide segmentation; frames via OpenCV, audio via
PyAV), ``detect`` the systems of each page (:mod:`.detect`: a staff-line detector, or a registered plug-in
such as a YOLO checkpoint), ``write`` examples into shards.  :mod:`.synthetic` makes score pages and
score-following videos with known answers from real scores (tests, ``experiments/bench/system_detect.py``).
Settings: :class:`~musicmoe.data.ytsv.config.YtsvConfig`.
"""

from musicmoe.data.ytsv.config import YtsvConfig

__all__ = ["YtsvConfig"]
