"""How often the staff-line system detector finds every system of a rendered page.

Pages are engraved by verovio from music21's bundled corpus (15 composer folders, five layouts: staff size
and page shape vary), rasterised with resvg, and the true systems are read from verovio's SVG (its
``g.system`` groups and their staff-line paths).  A page counts as correct when the detector returns
exactly its systems: one detection per true system whose first and last staff lines are within half a
staff space of the truth, and nothing else.

    python experiments/bench/system_detect.py --pages 300 [--detector staff] [--json out.json]

Prints the page rate (the figure the issue asks for: >= 95%), system recall and precision, and the pages
that failed (piece, layout, page).
"""

from __future__ import annotations

import sys
from pathlib import Path

# run as a script, this folder comes first on sys.path, where sibling benchmarks' names (tokenize.py)
# would shadow standard modules
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402

# (verovio page width, page height, raster width in px): the ratio of raster width to page width sets the
# staff height in pixels (about 20 to 45 px here), the page shape how many systems a page holds
LAYOUTS = [(2100, 2970, 1240), (2970, 2100, 1600), (1700, 2400, 1100), (2800, 3900, 1280), (2400, 1800, 1920)]
COMPOSERS = ["bach", "beethoven", "mozart", "haydn", "schumann", "schubert", "chopin", "handel", "corelli",
             "monteverdi", "joplin", "palestrina", "verdi", "trecento", "weber"]
SUFFIXES = (".mxl", ".xml", ".musicxml", ".krn")


def pieces(per_composer: int, small_first: bool = False) -> list[Path]:
    """Up to ``per_composer`` score files from each composer folder of music21's corpus, spread out and
    interleaved (one of each composer in turn), so a short run still covers several composers;
    ``small_first`` takes each composer's smallest files instead (quick runs)."""
    from music21 import common

    root = Path(common.getCorpusFilePath())
    lists: list[list[Path]] = []
    for name in COMPOSERS:
        folder = root / name
        if not folder.is_dir():
            continue
        files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in SUFFIXES)
        if not files:
            continue
        if small_first:
            lists.append(sorted(files, key=lambda p: (p.stat().st_size, p))[:per_composer])
            continue
        step = max(1, len(files) // per_composer)
        lists.append(files[::step][:per_composer])
    return [lst[k] for k in range(max(map(len, lists), default=0)) for lst in lists if k < len(lst)]


def degrade(image, jpeg_quality: int):
    """The page as a video frame would show it: JPEG-compressed at ``jpeg_quality`` (0 = unchanged)."""
    import cv2

    if not jpeg_quality:
        return image
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
    return cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)


def run(n_pages: int, detector_name: str = "staff", per_composer: int = 20, verbose: bool = True,
        small_first: bool = False, pages_per_piece: int = 3, jpeg_quality: int = 0) -> dict:
    from musicmoe.data.ytsv.detect import get_detector, match_systems
    from musicmoe.data.ytsv.synthetic import render_pages

    detector = get_detector(detector_name)
    order = pieces(per_composer, small_first)
    pages = correct = true_total = hit_total = det_total = 0
    failures: list[str] = []
    render_errors = overflow = 0
    t0 = time.time()
    for i, path in enumerate(order):
        if pages >= n_pages:
            break
        pw, ph, width = LAYOUTS[i % len(LAYOUTS)]
        try:
            rendered, _ = render_pages(path, width_px=width, page_width=pw, page_height=ph,
                                       options={"header": "auto"}, max_pages=pages_per_piece,
                                       timing=False)
        except Exception:  # verovio rejects some corpus files; they are not detector failures
            render_errors += 1
            continue
        for k, page in enumerate(rendered):
            if pages >= n_pages or not page.systems:
                continue
            if page.systems[0].top < 0 or page.systems[-1].bottom >= page.image.shape[0]:
                overflow += 1  # verovio's layout ran off the page: no right answer to compare with
                continue
            boxes = detector.detect(degrade(page.image, jpeg_quality))
            truth = [(s.top, s.bottom) for s in page.systems]
            spacing = page.staff_height / 4
            hits = match_systems(boxes, truth, tol=spacing / 2)
            ok = hits == len(truth) and len(boxes) == len(truth)
            pages += 1
            correct += ok
            true_total += len(truth)
            hit_total += hits
            det_total += len(boxes)
            if not ok:
                failures.append(f"{path.name} layout={pw}x{ph}@{width}px page={k + 1}: "
                                f"{len(truth)} true, {len(boxes)} found, {hits} matched")
        if verbose:
            print(f"\r{pages}/{n_pages} pages, {correct} correct", end="", file=sys.stderr, flush=True)
    if verbose:
        print(file=sys.stderr)
    return {
        "detector": detector_name, "jpeg_quality": jpeg_quality, "pages": pages, "pages_correct": correct,
        "page_rate": correct / pages if pages else 0.0,
        "system_recall": hit_total / true_total if true_total else 0.0,
        "system_precision": hit_total / det_total if det_total else 0.0,
        "true_systems": true_total, "detected_systems": det_total, "render_errors": render_errors,
        "overflow_pages_skipped": overflow,
        "seconds": round(time.time() - t0, 1), "failures": failures,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pages", type=int, default=300)
    ap.add_argument("--detector", default="staff")
    ap.add_argument("--per-composer", type=int, default=20)
    ap.add_argument("--jpeg", type=int, default=0, help="JPEG-compress pages at this quality first (0 = no)")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args(argv)
    res = run(args.pages, args.detector, args.per_composer, jpeg_quality=args.jpeg)
    print(f"detector={res['detector']} jpeg={res['jpeg_quality'] or 'no'} pages={res['pages']} "
          f"all systems found on {res['pages_correct']} "
          f"({100 * res['page_rate']:.1f}%), system recall {100 * res['system_recall']:.1f}%, "
          f"precision {100 * res['system_precision']:.1f}%  [{res['seconds']} s]")
    for line in res["failures"][:30]:
        print("  failed:", line)
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
