"""Task registry, aliases and curriculum weights."""

import pytest

from musicmoe.data.tasks import (
    TASK_NAMES,
    TASKS,
    get_task,
    parse_tasks,
    ramp,
    task_for,
    task_weights,
    validate_task_weights,
)
from musicmoe.models.vocab import MODALITIES


def test_registry_covers_every_direction_once():
    pairs = {(t.source, t.target) for t in TASKS.values()}
    assert len(pairs) == len(TASKS) == len(MODALITIES) * (len(MODALITIES) - 1)
    assert get_task("omr").modalities == ("image", "lmx")
    assert get_task("amt").modalities == ("audio", "midi")
    for name in ("image2audio", "midi2audio", "image2midi", "lmx2image", "audio2image", "lmx2midi", "midi2lmx"):
        src, tgt = name.split("2")
        assert get_task(name).modalities == (src, tgt)
    assert get_task("image2lmx") is get_task("omr") and get_task("audio2midi") is get_task("amt")
    assert task_for("audio", "midi").name == "amt"
    assert [get_task(i).name for i in range(len(TASK_NAMES))] == list(TASK_NAMES)
    assert get_task("omr").id == 0 and get_task("amt").id == 1  # ids are stored in checkpoints: never reorder


def test_unknown_task_names_the_valid_ones():
    with pytest.raises(ValueError, match="unknown task 'ocr'.*omr"):
        get_task("ocr")
    with pytest.raises(ValueError, match="no task given"):
        parse_tasks(" , ")
    assert [t.name for t in parse_tasks("omr, amt,omr,image2lmx")] == ["omr", "amt"]


def test_curriculum_ramp_and_weights():
    assert ramp(0, 10, 20) == 0.0 and ramp(9, 10, 20) == 0.0
    assert 0 < ramp(10, 10, 20) < ramp(15, 10, 20) < 1.0 and ramp(20, 10, 20) == 1.0
    assert ramp(5, 5, 5) == 1.0 and ramp(4, 5, 5) == 0.0  # A == B: a step
    w = {"omr": 1.0, "amt": 2.0, "lmx2midi": 0.0}
    cur = {"amt": [100, 200]}
    assert task_weights(w, cur, 0) == {"omr": 1.0, "amt": 0.0}
    assert task_weights(w, cur, 1000) == {"omr": 1.0, "amt": 2.0}
    mid = task_weights(w, cur, 150)["amt"]
    assert 0.9 < mid < 1.1


@pytest.mark.parametrize("weights,cur,match", [
    ({"omx": 1.0}, {}, "data.tasks: unknown task 'omx'"),
    ({"omr": -1.0}, {}, r"data.tasks.omr: weight must be >= 0"),
    ({"omr": 1.0}, {"amt": [0, 5]}, r"data.curriculum.amt: the task is not in data.tasks"),
    ({"omr": 1.0}, {"omr": [5, 2]}, r"data.curriculum.omr: must be \[start_step, end_step\]"),
    ({"omr": 1.0, "amt": 1.0}, {"omr": [5, 9], "amt": [1, 2]}, "every task starts later"),
])
def test_bad_weights_are_rejected(weights, cur, match):
    with pytest.raises(ValueError, match=match):
        validate_task_weights(weights, cur)
