"""Config composition: groups, overrides, typed validation and helpful errors."""

from dataclasses import dataclass, field

import pytest

from musicmoe.config import ConfigError, compose, load_saved, save_config


@dataclass
class Trainer:
    max_steps: int = 10
    precision: str = "32-true"

    def __post_init__(self):
        if self.max_steps <= 0:
            raise ValueError("trainer.max_steps must be > 0")


@dataclass
class Model:
    d_model: int = 64
    n_heads: int = 4


@dataclass
class Root:
    trainer: Trainer = field(default_factory=Trainer)
    model: Model = field(default_factory=Model)
    tasks: dict[str, float] = field(default_factory=lambda: {"omr": 1.0})
    weights: list[float] = field(default_factory=lambda: [1.0, 2.0])


@pytest.fixture
def root(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "small.yaml").write_text("d_model: 128\n")
    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "a.yaml").write_text(
        "defaults:\n  - model: small\ntrainer:\n  max_steps: 50\ntasks:\n  omr: 1.0\n  amt: 0.5\n")
    return tmp_path


def test_groups_and_overrides(root):
    cfg = compose(Root, "experiment/a.yaml", ["trainer.precision=bf16-mixed", "model.n_heads=8"], root=root)
    assert isinstance(cfg, Root) and isinstance(cfg.trainer, Trainer)
    assert cfg.model.d_model == 128 and cfg.model.n_heads == 8
    assert cfg.trainer.max_steps == 50 and cfg.trainer.precision == "bf16-mixed"
    assert cfg.tasks == {"omr": 1.0, "amt": 0.5}


def test_unknown_key_suggests_closest(root):
    with pytest.raises(ConfigError, match=r"trainer\.max_step'.*did you mean 'trainer\.max_steps'"):
        compose(Root, "experiment/a.yaml", ["trainer.max_step=3"], root=root)
    (root / "bad.yaml").write_text("model:\n  d_modle: 3\n")
    with pytest.raises(ConfigError, match=r"model\.d_modle.*bad\.yaml.*did you mean 'model\.d_model'"):
        compose(Root, "bad.yaml", root=root)


def test_type_and_validation_errors_name_the_key(root):
    with pytest.raises(ConfigError, match=r"trainer\.max_steps"):
        compose(Root, None, ["trainer.max_steps=abc"], root=root)
    with pytest.raises(ConfigError, match=r"trainer\.max_steps must be > 0"):
        compose(Root, None, ["trainer.max_steps=0"], root=root)
    with pytest.raises(ConfigError, match="must look like"):
        compose(Root, None, ["trainer.max_steps"], root=root)
    with pytest.raises(ConfigError, match=r"model/huge\.yaml not found.*small"):
        (root / "c.yaml").write_text("defaults:\n  - model: huge\n")
        compose(Root, "c.yaml", root=root)


def test_saved_config_reloads_identically(root, tmp_path):
    cfg = compose(Root, "experiment/a.yaml", ["model.n_heads=2"], root=root)
    path = save_config(cfg, tmp_path / "run")
    assert load_saved(Root, path) == cfg


def test_malformed_list_override_is_a_config_error(root):
    with pytest.raises(ConfigError, match="weights"):
        compose(Root, None, ["weights.1.x=4"], root=root)
