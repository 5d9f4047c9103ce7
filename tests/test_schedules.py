import math

import pytest

from musicmoe.schedules import lr_factor


def test_lr_schedule_warmup_then_decay():
    f = [lr_factor(s, 10, 110, "cosine", 0.1) for s in range(120)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert all(a <= b for a, b in zip(f[:10], f[1:10]))  # warm-up rises
    assert all(a >= b for a, b in zip(f[10:], f[11:]))  # then decays
    assert f[60] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert f[110] == pytest.approx(0.1) and f[119] == pytest.approx(0.1)
    assert lr_factor(60, 10, 110, "linear", 0.0) == pytest.approx(0.5)
    assert lr_factor(100, 10, 110, "constant", 0.0) == 1.0
