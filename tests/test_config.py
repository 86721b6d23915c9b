"""The fast/full switch and the presets."""

from __future__ import annotations

import pytest

from pwn_lib import config


@pytest.mark.parametrize(
    "env, expected",
    [
        ({}, False),
        ({"CI": "true"}, True),
        ({"PWN_FAST": "1"}, True),
        ({"PWN_FAST": "0", "CI": "true"}, False),
        ({"PWN_FAST": "", "CI": "1"}, True),
        ({"PWN_FAST": "false"}, False),
    ],
)
def test_fast_mode_reads_pwn_fast_then_ci(monkeypatch, env, expected):
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("PWN_FAST", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert config.fast_mode() is expected
    assert config.pick("fast", "full") == ("fast" if expected else "full")


def test_presets_exist_for_every_model_and_name():
    for table in (config.TEACHER_PRESETS, config.STUDENT_PRESETS, config.TRAIN_PRESETS, config.AUDIO_PRESETS):
        assert set(table) == set(config.PRESET_NAMES)


def test_paper_presets_follow_the_paper():
    teacher = config.TEACHER_PRESETS["paper"]
    assert (teacher.layers, teacher.stacks, teacher.kernel_size, teacher.n_mixtures) == (30, 3, 3, 10)
    student = config.STUDENT_PRESETS["paper"]
    assert student.flow_layers == (10, 10, 10, 30) and student.channels == 64
    assert config.AUDIO_PRESETS["paper"].sample_rate == 24_000


def test_windows_hold_whole_frames():
    for name in config.PRESET_NAMES:
        hop = config.AUDIO_PRESETS[name].hop_length
        assert config.TRAIN_PRESETS[name].window % hop == 0, name
        assert config.TEACHER_PRESETS[name].hop_length == hop, name


def test_preset_overrides_and_round_trip():
    cfg = config.preset(config.STUDENT_PRESETS, "tiny", channels=8)
    assert cfg.channels == 8 and config.STUDENT_PRESETS["tiny"].channels == 16
    assert config.from_dict(config.StudentConfig, config.to_dict(cfg)) == cfg


def test_unknown_preset_and_field_errors_name_the_value():
    with pytest.raises(ValueError, match="'huge'.*tiny"):
        config.preset(config.TEACHER_PRESETS, "huge")
    with pytest.raises(ValueError, match="bogus"):
        config.from_dict(config.WaveNetConfig, {"bogus": 1})


def test_from_dict_checks_types_and_ranges_and_names_where_the_values_came_from():
    with pytest.raises(config.RecipeError, match=r"run/config.json: model: layers = '30' \(str\) must be a int"):
        config.from_dict(config.WaveNetConfig, {"layers": "30"}, "run/config.json: model")
    with pytest.raises(config.RecipeError, match=r"x.yaml: train: grad_clip = 0.0 must be > 0"):
        config.from_dict(config.TrainConfig, {"grad_clip": 0}, "x.yaml: train")
    base = config.TRAIN_PRESETS["tiny"]
    merged = config.from_dict(config.TrainConfig, {"lr": 1}, base=base)
    assert merged.lr == 1.0 and isinstance(merged.lr, float) and merged.steps == base.steps
    assert config.from_dict(config.WaveNetConfig, {"log_mel_mean": None}).log_mel_mean is None


def test_every_range_names_a_field_of_its_class():
    for cls, ranges in config.RANGES.items():
        assert set(ranges) <= {f.name for f in config.dataclasses.fields(cls)}, cls.__name__
        assert all(test(getattr(cls(), name)) for name, (test, _) in ranges.items() if getattr(cls(), name) is not None)
