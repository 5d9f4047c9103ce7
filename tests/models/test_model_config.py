import pytest

from musicmoe.models import ModelConfig


def test_defaults_are_tiny_and_paper_preset():
    tiny = ModelConfig()
    assert tiny.d_model <= 128 and tiny.enc_layers <= 2
    paper = ModelConfig.paper()
    assert (paper.enc_layers, paper.dec_layers, paper.d_model, paper.n_heads, paper.d_ff) == (12, 12, 1024, 16, 4096)
    assert ModelConfig.paper(top_k=2, experts_per_modality=4).top_k == 2


@pytest.mark.parametrize("kwargs, match", [
    (dict(d_model=60, n_heads=8), "not divisible by n_heads"),
    (dict(experts_per_modality=4), "top_k=0 .* needs experts_per_modality=1"),
    (dict(experts_per_modality=2, top_k=3), "exceeds experts_per_modality"),
    (dict(codebook_mode="parallel"), "codebook_mode"),
    (dict(pos_encoding="t5"), "pos_encoding"),
    (dict(dropout=1.5), "dropout"),
    (dict(capacity_factor=0.0), "capacity_factor"),
    (dict(d_model=24, n_heads=8), "even head dim"),
    (dict(max_len_per_modality={"score": 3}), "unknown modality 'score'"),
    (dict(enc_layers=0), "enc_layers"),
])
def test_validation_errors_name_the_field(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ModelConfig(**kwargs)


def test_from_dict_rejects_unknown_keys_and_round_trips():
    cfg = ModelConfig(top_k=1, experts_per_modality=2, max_len_per_modality={"audio": 99})
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match=r"unknown keys \['d_modle'\]"):
        ModelConfig.from_dict({"d_modle": 3})
