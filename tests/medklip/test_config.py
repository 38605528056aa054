"""Config: presets, precedence (defaults < preset < overrides), unknown keys refused, round trip."""

from __future__ import annotations

import pytest

from medklip.config import flatten, from_dict, list_presets, load_config, to_dict


def test_presets_exist_and_differ_where_they_should():
    assert {"debug", "demo", "base"} <= set(list_presets())
    base = load_config("base")
    assert (base.model.backbone, base.model.image_size, base.model.d_model) == ("resnet50", 224, 256)
    assert (base.model.num_heads, base.model.num_decoder_layers, base.train.batch_size) == (4, 4, 48)
    assert load_config("debug").model.image_size == 64


def test_precedence_and_types():
    overrides = {"train.epochs": 3, "model.d_model": 64, "train.lr": None, "train.augment.scale": [0.5, 1]}
    config = load_config("demo", overrides)
    assert config.train.epochs == 3 and config.model.d_model == 64
    assert config.train.lr == load_config("demo").train.lr  # None = flag not given
    assert config.train.augment.scale == (0.5, 1)
    assert isinstance(load_config(None, {"train.lr": 1}).train.lr, float)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"train.epoch": 3}, "unknown key 'epoch'"),
        ({"optimizer.lr": 1}, "unknown key 'optimizer'"),
        ({"train.deterministic": "yes"}, "expected true/false"),
        ({"train.epochs": 2.5}, "expected an integer"),
    ],
)
def test_bad_overrides_are_errors(overrides, message):
    with pytest.raises(ValueError, match=message):
        load_config("debug", overrides)


def test_unknown_preset_and_bad_file(tmp_path):
    with pytest.raises(ValueError, match="unknown preset"):
        load_config("huge")
    path = tmp_path / "mine.yaml"
    path.write_text("model:\n  widht: 3\n")
    with pytest.raises(ValueError, match="unknown key 'widht'"):
        load_config(path)


def test_round_trip_and_flatten():
    config = load_config("base")
    assert from_dict(to_dict(config)) == config
    flat = flatten(to_dict(config))
    assert flat["train.lr"] == 1e-4 and flat["model.text_encoder"] == "emilyalsentzer/Bio_ClinicalBERT"
