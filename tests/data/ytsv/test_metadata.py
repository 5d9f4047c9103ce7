"""The YTSV metadata CSV: parsing, filters, clear errors."""

from __future__ import annotations

import pytest

from musicmoe.data.ytsv.metadata import (
    COLUMNS,
    MetadataError,
    filter_videos,
    parse_duration,
    parse_staff_count,
    read_metadata,
)

# rows in the published file's format (metadata/ytsv_metadata.csv of MALerLab/youtube-score-video-dataset)
HEADER = ",".join(COLUMNS)
ROWS = [
    'UeVecTH-lBU,"Franz Strauss - Nocturno, Op.7 (with Score)",classicalsheetmusic3472,6:19,Franz Strauss,Nocturno,7,'
    'solo,horn solo,False,False,True,False,,1-0',
    "Xbn_hOcte3g,Adolf von Henselt - Scherzo (Op. 9),SV_ScoreVideos,3:49,Adolf von Henselt,Scherzo,9,solo,piano solo,"
    "True,False,False,False,,0-2",
    "kGD264vZ0As,Alexander Scriabin - Piano Sonata No. 5 op. 53(6 Pianists)(1907)(with full score),PRohFullscoremusic,"
    '1:08:08,Alexander Scriabin,"Piano Sonata No. 5, Op. 53",53,solo,piano solo,True,False,False,False,1907.0,0-2',
    "qqq6FAI9i1s,Johannes Brahms – Piano Trio No. 3 op. 101(1886)(with full score),PRohFullscoremusic,21:04,"
    "Johannes Brahms,Piano Trio No. 3,101,trio,piano trio,True,True,False,False,1886.0,2-2",
    "bad id!,Broken row,user,1:00,X,Y,,solo,piano solo,True,False,False,False,,0-2",
    "abcdefghijk,Broken duration,user,one minute,X,Y,,solo,piano solo,True,False,False,False,,0-2",
]


@pytest.fixture
def csv_path(tmp_path):
    path = tmp_path / "ytsv_metadata.csv"
    path.write_text(HEADER + "\n" + "\n".join(ROWS) + "\n", encoding="utf-8")
    return path


def test_read(csv_path):
    videos, problems = read_metadata(csv_path)
    assert [v.yt_id for v in videos] == ["UeVecTH-lBU", "Xbn_hOcte3g", "kGD264vZ0As", "qqq6FAI9i1s"]
    horn, henselt, scriabin, brahms = videos
    assert horn.title == "Franz Strauss - Nocturno, Op.7 (with Score)" and horn.winds and not horn.piano
    assert horn.staff_count == 1 and brahms.staff_count == 4 and brahms.staff_count_raw == "2-2"
    assert scriabin.duration_s == 4088.0 and scriabin.year == 1907 and henselt.year is None
    assert scriabin.piece == "Piano Sonata No. 5, Op. 53"
    assert len(problems) == 2
    assert ":6:" in problems[0] and "bad YT Id" in problems[0]
    assert ":7:" in problems[1] and "duration" in problems[1]


def test_filters(csv_path):
    videos, _ = read_metadata(csv_path)
    ids = lambda vs: [v.yt_id for v in vs]  # noqa: E731
    assert ids(filter_videos(videos, categories=["Piano Solo"])) == ["Xbn_hOcte3g", "kGD264vZ0As"]
    assert ids(filter_videos(videos, instrumentations=["trio"])) == ["qqq6FAI9i1s"]
    assert ids(filter_videos(videos, min_staves=2, max_staves=2)) == ["Xbn_hOcte3g", "kGD264vZ0As"]
    assert ids(filter_videos(videos, min_staves=3)) == ["qqq6FAI9i1s"]
    assert ids(filter_videos(videos, categories=["piano solo"], max_duration_s=600)) == ["Xbn_hOcte3g"]
    assert ids(filter_videos(videos, ids=["UeVecTH-lBU"])) == ["UeVecTH-lBU"]


def test_missing_column_names_the_file(tmp_path):
    path = tmp_path / "meta.csv"
    path.write_text(HEADER.replace(",Staff Count", "") + "\n" + ROWS[0].rsplit(",", 1)[0] + "\n")
    with pytest.raises(MetadataError, match=r"meta\.csv is missing column\(s\) 'Staff Count'"):
        read_metadata(path)
    with pytest.raises(MetadataError, match="nowhere.csv"):
        read_metadata(tmp_path / "nowhere.csv")


def test_small_parsers():
    assert parse_duration("6:19") == 379.0 and parse_duration("2:03:08") == 7388.0
    assert parse_staff_count("5-0") == 5 and parse_staff_count("") == 0
    with pytest.raises(ValueError):
        parse_duration("6m19")
    with pytest.raises(ValueError):
        parse_staff_count("two")
