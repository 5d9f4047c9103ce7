"""Tiny copies of the published dataset layouts, made here from real music (music21's corpus engraved by
verovio, synthesized with our SoundFont synth), for the importer tests."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest


def crop_system(page, system, margin: float = 2.0) -> np.ndarray:
    """A true system of a rendered page with ``margin`` staff heights above and below (as datasets crop)."""
    h = page.staff_height
    top = max(0, int(system.top - margin * h))
    bottom = min(page.image.shape[0], int(system.bottom + margin * h))
    return page.image[top:bottom, :]


def kern_excerpt(text: str, spines: list[int], bars: int) -> str:
    """The first ``bars`` measures of the given **kern spines of a humdrum file with no spine splits."""
    out = []
    seen = 0
    for line in text.splitlines():
        if line.startswith("!!") or not line.strip():
            continue
        fields = line.split("\t")
        kept = [fields[i] for i in spines]
        if fields[0].startswith("=") and not fields[0].startswith("=="):
            seen += 1
            if seen > bars:
                out.append("\t".join(["=="] * len(spines)))
                break
        if fields[0] == "*-":
            break
        out.append("\t".join(kept))
    out.append("\t".join(["*-"] * len(spines)))
    return "\n".join(out) + "\n"


@pytest.fixture(scope="session")
def chorale_pages():
    """bwv66.6 engraved into 2 pages of one four-staff system each, with its MusicXML root."""
    from music21 import corpus

    from musicmoe.codecs.lmx import load_musicxml
    from musicmoe.data.ytsv.synthetic import render_pages

    path = corpus.getWork("bach/bwv66.6")
    pages, _ = render_pages(path, width_px=1000, page_width=2100, page_height=1500)
    return pages, load_musicxml(path)


@pytest.fixture(scope="session")
def olimpic_dir(tmp_path_factory, chorale_pages):
    """OLiMPiC layout: samples/<score>/<p-s>.png/.lmx/.musicxml and samples.{train,dev,test}.txt.

    Score 1001 (train): p1-s1 complete; p2-s1 without .lmx (its .musicxml must be linearized);
    p2-s2 with a corrupt .png.  Score 1002 (test): p1-s1 complete."""
    from PIL import Image

    from musicmoe.codecs.lmx import delinearize, linearize_score

    pages, root = chorale_pages
    base = tmp_path_factory.mktemp("olimpic")
    first = 0
    systems = []
    for page in pages:
        for s in page.systems:
            tokens = linearize_score(root, (first, first + s.n_measures - 1))
            systems.append((crop_system(page, s), tokens))
            first += s.n_measures

    def write(score: str, name: str, image, tokens, lmx: bool = True, corrupt: bool = False) -> str:
        folder = base / "samples" / score
        folder.mkdir(parents=True, exist_ok=True)
        if corrupt:
            (folder / f"{name}.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
        else:
            Image.fromarray(image).save(folder / f"{name}.png")
        if lmx:
            (folder / f"{name}.lmx").write_text(" ".join(tokens) + "\n")
        (folder / f"{name}.musicxml").write_text(delinearize(tokens))
        return f"samples/{score}/{name}"

    train = [write("1001", "p1-s1", *systems[0]), write("1001", "p2-s1", *systems[1], lmx=False),
             write("1001", "p2-s2", *systems[1], corrupt=True)]
    test = [write("1002", "p1-s1", *systems[1])]
    (base / "samples.train.txt").write_text("\n".join(train) + "\n")
    (base / "samples.dev.txt").write_text("")
    (base / "samples.test.txt").write_text("\n".join(test) + "\n")
    return base, systems


@pytest.fixture(scope="session")
def kern_piece(tmp_path_factory):
    """A two-staff **kern excerpt (bass and soprano of bwv281, 4 measures), engraved by verovio."""
    from music21 import common

    from musicmoe.data.ytsv.synthetic import render_pages

    src = Path(common.getCorpusFilePath()) / "bach" / "bwv281.krn"
    text = kern_excerpt(src.read_text(), [0, 3], 4)
    folder = tmp_path_factory.mktemp("kern")
    krn = folder / "excerpt.krn"
    krn.write_text(text)
    pages, _ = render_pages(krn, width_px=900, page_width=2100, page_height=900)
    assert len(pages) == 1 and len(pages[0].systems) == 1
    return text, crop_system(pages[0], pages[0].systems[0]), pages[0].systems[0].n_measures


@pytest.fixture(scope="session")
def grandstaff_dirs(tmp_path_factory, kern_piece):
    """Two GrandStaff copies: the original layout (.krn/.bekrn/.jpg/_distorted.jpg, no index) and the LMX
    variant (plus .lmx/.musicxml and samples.{train,dev,test}.txt)."""
    import cv2

    from musicmoe.codecs.lmx import delinearize
    from musicmoe.data.loaders.grandstaff import kern_lmx

    text, image, _ = kern_piece
    distorted = cv2.GaussianBlur(image, (0, 0), 1.0)
    h, w = distorted.shape
    quad = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    warp = cv2.getPerspectiveTransform(quad, np.float32([[6, 3], [w - 2, 0], [w - 8, h - 2], [0, h - 5]]))
    distorted = cv2.warpPerspective(distorted, warp, (w, h), borderValue=255)
    dirs = {}
    for variant in ("original", "lmx"):
        base = tmp_path_factory.mktemp(f"grandstaff-{variant}")
        rels = []
        for piece, name in (("bach/chorales/bwv281", "original_m-0-4"), ("bach/chorales/bwv281b", "original_m-0-4")):
            folder = base / piece
            folder.mkdir(parents=True)
            (folder / f"{name}.krn").write_text(text)
            (folder / f"{name}.bekrn").write_text(text)
            cv2.imwrite(str(folder / f"{name}.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, 90])
            cv2.imwrite(str(folder / f"{name}_distorted.jpg"), distorted, [cv2.IMWRITE_JPEG_QUALITY, 80])
            rels.append(f"{piece}/{name}")
        if variant == "lmx":
            tokens = kern_lmx(base / f"{rels[0]}.krn")
            for rel in rels:
                (base / f"{rel}.lmx").write_text(" ".join(tokens) + "\n")
                (base / f"{rel}.musicxml").write_text(delinearize(tokens))
            (base / "samples.train.txt").write_text(rels[0] + "\n")
            (base / "samples.dev.txt").write_text(rels[1] + "\n")
            (base / "samples.test.txt").write_text("")
        dirs[variant] = base
    return dirs


def _chorale_midi(piece: str):
    from musicmoe.codecs.midi.music21_io import corpus_pretty_midi

    return corpus_pretty_midi(piece)


@pytest.fixture(scope="session")
def maestro_dir(tmp_path_factory):
    """MAESTRO layout: maestro-v3.0.0.csv + 2018/<name>.midi/.wav (a chorale with a sustain pedal, synthesized
    at 44.1 kHz stereo) + a row whose .wav is missing."""
    import pretty_midi
    import soundfile as sf

    from musicmoe.data.synth import synthesize

    base = tmp_path_factory.mktemp("maestro")
    (base / "2018").mkdir()
    pm = _chorale_midi("bach/bwv66.6")
    for inst in pm.instruments:
        inst.program = 0
    pm.instruments[0].control_changes += [pretty_midi.ControlChange(64, 100, 2.0),
                                          pretty_midi.ControlChange(64, 0, 4.0)]
    pm.write(str(base / "2018" / "perf_a.midi"))
    audio = synthesize(pm, sample_rate=44100)
    sf.write(base / "2018" / "perf_a.wav", np.stack([audio, audio * 0.8], axis=1), 44100, subtype="PCM_16")
    (base / "2017").mkdir()
    pm.write(str(base / "2017" / "perf_b.midi"))  # its .wav is missing: the item must fail, alone
    rows = [
        ["Johann Sebastian Bach", "Chorale BWV 66.6", "train", "2018", "2018/perf_a.midi", "2018/perf_a.wav",
         f"{len(audio) / 44100:.3f}"],
        ["Johann Sebastian Bach", "Chorale BWV 66.6", "validation", "2017", "2017/perf_b.midi", "2017/perf_b.wav",
         "20.0"],
    ]
    with open(base / "maestro-v3.0.0.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["canonical_composer", "canonical_title", "split", "year", "midi_filename", "audio_filename",
                    "duration"])
        w.writerows(rows)
    return base, pm


@pytest.fixture(scope="session")
def musicnet_dir(tmp_path_factory):
    """MusicNet layout: {train,test}_data/<id>.wav + {train,test}_labels/<id>.csv (samples at 44.1 kHz, one
    bad row) + musicnet_metadata.csv, from two chorales played by a string quartet."""
    import soundfile as sf

    from musicmoe.data.synth import synthesize

    base = tmp_path_factory.mktemp("musicnet")
    programs = [40, 40, 41, 42]  # violin, violin, viola, cello (GM, 0-based); MusicNet ids are +1
    truth = {}
    for kind, rid, piece in (("train", "1727", "bach/bwv66.6"), ("test", "2303", "bach/bwv4.8")):
        pm = _chorale_midi(piece)
        for inst, prog in zip(pm.instruments, programs):
            inst.program = prog
        (base / f"{kind}_data").mkdir(exist_ok=True)
        (base / f"{kind}_labels").mkdir(exist_ok=True)
        sf.write(base / f"{kind}_data" / f"{rid}.wav", synthesize(pm, sample_rate=44100), 44100, subtype="PCM_16")
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["start_time", "end_time", "instrument", "note", "start_beat", "end_beat", "note_value"])
        for inst in pm.instruments:
            for n in inst.notes:
                w.writerow([int(round(n.start * 44100)), int(round(n.end * 44100)), inst.program + 1, n.pitch,
                            round(n.start * 2, 3), round((n.end - n.start) * 2, 3), "Quarter"])
        if kind == "train":
            w.writerow(["oops", "", "41", "60", "0", "1", "Quarter"])
        (base / f"{kind}_labels" / f"{rid}.csv").write_text(buf.getvalue())
        truth[rid] = pm
    with open(base / "musicnet_metadata.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "composer", "composition", "movement", "ensemble", "source", "transcriber", "catalog_name",
                    "seconds"])
        w.writerow(["1727", "Bach", "Chorale", "BWV 66.6", "String Quartet", "test", "test", "BWV66", "25"])
        w.writerow(["2303", "Bach", "Chorale", "BWV 4.8", "String Quartet", "test", "test", "BWV4", "24"])
    return base, truth
