"""Tests for pwn_lib.speakers: pooling, segment scoring, the score table, a tiny model learning two synthetic
voices, bad input, the recipe, and the shipped checkpoint reproducing its recorded test accuracy."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from pwn_lib.artifacts import CheckpointError
from pwn_lib.audio import log_mel
from pwn_lib.config import CHECKPOINT_DIR, RecipeError, from_dict
from pwn_lib.data import VOICES, Utterance, load_voices
from pwn_lib.speakers import (
    DEFAULT_CHECKPOINT,
    DEFAULT_RECIPE,
    SpeakerClassifier,
    SpeakerClassifierConfig,
    SpeakerListener,
    SpeakerTrainConfig,
    main,
    mean_std_pool,
    read_speaker_recipe,
    score,
    segment_starts,
    train_speaker_classifier,
)

SR = 16_000


def tiny(n_speakers: int = 5, segment_frames: int = 64) -> SpeakerClassifier:
    torch.manual_seed(0)
    cfg = SpeakerClassifierConfig(channels=8, n_speakers=n_speakers, segment_frames=segment_frames)
    return SpeakerClassifier(cfg).eval()


@pytest.fixture(scope="module")
def listener() -> SpeakerListener:
    return SpeakerListener(DEFAULT_CHECKPOINT)


# ----------------------------------------------------------------------------- pooling and segments


def test_mean_std_pool_matches_numpy():
    h = np.random.default_rng(0).normal(size=(2, 3, 7))
    want = np.concatenate([h.mean(axis=-1), np.sqrt(((h - h.mean(axis=-1, keepdims=True)) ** 2).mean(axis=-1))], 1)
    np.testing.assert_allclose(mean_std_pool(torch.from_numpy(h)).numpy(), want, rtol=1e-12)


def test_segments_cover_every_frame_with_the_fewest_segments():
    assert segment_starts(10, 64) == [0]
    assert segment_starts(64, 64) == [0]
    assert segment_starts(128, 64) == [0, 64]
    assert segment_starts(130, 64) == [0, 33, 66]  # 3 segments, the last ending at frame 130
    for frames in range(65, 400, 7):
        starts = segment_starts(frames, 64)
        covered = np.zeros(frames, bool)
        for s in starts:
            covered[s : s + 64] = True
        assert covered.all() and starts[-1] == frames - 64 and len(starts) == -(-frames // 64)


def test_the_utterance_prediction_is_the_argmax_of_the_mean_of_segment_logits_computed_by_hand():
    model = tiny()
    mel = torch.from_numpy(np.random.default_rng(1).normal(-5, 2, size=(80, 150)).astype(np.float32))
    with torch.no_grad():
        by_hand = np.mean([model(mel[None, :, s : s + 64])[0].numpy() for s in (0, 43, 86)], axis=0)
        got = model.utterance_logits(mel).numpy()
        short = model.utterance_logits(mel[:, :20]).numpy()
        short_by_hand = model(mel[None, :, :20])[0].numpy()
    np.testing.assert_allclose(got, by_hand, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(short, short_by_hand, rtol=1e-5, atol=1e-6)
    assert model.predict(mel) == int(np.argmax(by_hand))


def test_score_on_a_hand_made_example():
    speakers = [0, 0, 0, 1, 1, 2, 4]
    predicted = [0, 1, 0, 1, 0, 2, 2]
    result = score(predicted, speakers)
    assert result["confusion"] == [
        [2, 1, 0, 0, 0],
        [1, 1, 0, 0, 0],
        [0, 0, 1, 0, 0],
        [0, 0, 0, 0, 0],
        [0, 0, 1, 0, 0],
    ]
    assert result["accuracy"] == pytest.approx(4 / 7)
    assert result["per_voice"] == {"en": pytest.approx(2 / 3), "es": 0.5, "fr": 1.0, "it": None, "ru": 0.0}
    assert result["balanced_accuracy"] == pytest.approx((2 / 3 + 0.5 + 1.0 + 0.0) / 4)
    with pytest.raises(ValueError, match="3 predictions for 2 speaker ids"):
        score([0, 1, 2], [0, 1])


# ----------------------------------------------------------------------------- learning two synthetic voices


def voice(f0_range: tuple[float, float], speaker: int, n: int, rng: np.random.Generator) -> list[Utterance]:
    """Harmonic tones (5 harmonics, 1/k amplitudes) with a pitch drawn from ``f0_range``, at one level."""
    t = np.arange(int(0.6 * SR)) / SR
    clips = []
    for i in range(n):
        f0 = rng.uniform(*f0_range) * (1 + 0.05 * np.sin(2 * np.pi * rng.uniform(2, 5) * t))
        phase = 2 * np.pi * np.cumsum(f0) / SR
        x = sum(np.sin(k * phase) / k for k in range(1, 6)) + 0.05 * rng.standard_normal(len(t))
        clips.append(Utterance(f"v{speaker}_{i}", "", (0.2 * x / np.abs(x).max()).astype(np.float32), SR, speaker))
    return clips


def test_a_tiny_model_learns_to_tell_two_pitch_ranges_apart_in_a_few_steps():
    rng = np.random.default_rng(0)
    low, high = (100.0, 140.0), (220.0, 280.0)
    train = voice(low, 0, 6, rng) + voice(high, 1, 6, rng)
    valid = voice(low, 0, 3, rng) + voice(high, 1, 3, rng)
    test = voice(low, 0, 4, rng) + voice(high, 1, 4, rng)
    model_cfg = SpeakerClassifierConfig(channels=8, kernel_sizes=(3, 3), dilations=(1, 2), n_speakers=2)
    train_cfg = SpeakerTrainConfig(steps=30, batch_size=8, crop_frames=16, eval_every=10)
    model, run = train_speaker_classifier(train, valid, model_cfg, train_cfg)
    assert [row["step"] for row in run["history"]] == [10, 20, 30]
    assert run["best_step"] in (10, 20, 30)
    predicted = [model.predict(torch.from_numpy(log_mel(u.audio))) for u in test]
    assert predicted == [u.speaker for u in test]


def test_training_needs_both_splits():
    with pytest.raises(ValueError, match="needs clips in both splits; got 0 and 0"):
        train_speaker_classifier([], [])


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "signals, speakers, rate, match",
    [
        ([np.zeros(16_000)], [0], 22_050, r"sample_rate=22050 Hz, but .* reads 16000 Hz clips; resample first"),
        ([np.zeros(0)], [0], SR, r"clip 0: shape \(0,\); .* at least hop_length=256 samples"),
        ([np.zeros((2, 8000))], [0], SR, r"clip 0: shape \(2, 8000\); .* needs mono audio"),
        ([np.full(4000, np.nan)], [0], SR, "clip 0: holds NaN or infinite samples"),
        ([np.zeros(4000)] * 2, [1, 5], SR, r"speaker id 5 \(clip 1\) is out of range; ids are 0..4 in the order"),
        ([np.zeros(4000)] * 2, [1], SR, "2 clips but 1 speaker ids"),
    ],
)
def test_bad_input_is_refused_with_the_value_and_what_to_do(listener, signals, speakers, rate, match):
    with pytest.raises(ValueError, match=match):
        listener.accuracy(signals, speakers, sample_rate=rate)


def test_a_checkpoint_of_another_kind_is_refused_by_name():
    with pytest.raises(CheckpointError, match="kind 'phone_classifier', but a speaker_classifier checkpoint"):
        SpeakerClassifier.from_checkpoint(CHECKPOINT_DIR / "phones_course")


def test_a_log_mel_of_the_wrong_shape_is_refused():
    with pytest.raises(ValueError, match=r"takes \(B, 80, F\) log-mels; got shape \(1, 1, 4096\)"):
        tiny()(torch.zeros(1, 1, 4096))


def test_an_out_that_is_a_file_is_refused(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(SystemExit, match=f"--out {afile} is a file; name a folder"):
        main(["train", "--out", str(afile)])


# ----------------------------------------------------------------------------- the recipe and the shipped checkpoint


def test_the_recipe_comments_every_key_and_is_what_the_checkpoint_was_built_from():
    lines = DEFAULT_RECIPE.read_text().splitlines()
    leaves = [line for line in lines if re.match(r"^\s+\w+:\s*\S", line)]
    assert lines[0].startswith("#") and leaves and all("#" in line for line in leaves)
    model_cfg, _, _ = read_speaker_recipe(DEFAULT_RECIPE)
    shipped = json.loads((DEFAULT_CHECKPOINT / "config.json").read_text())
    assert model_cfg == from_dict(SpeakerClassifierConfig, shipped["model"])


def test_a_misspelt_recipe_key_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  step: 3\n")
    with pytest.raises(RecipeError, match=f"{path}: train: SpeakerTrainConfig has no field.*'step'"):
        read_speaker_recipe(path)


def test_the_shipped_checkpoint_reproduces_its_recorded_test_accuracy(listener):
    size = sum(f.stat().st_size for f in DEFAULT_CHECKPOINT.iterdir())
    assert size < 300_000
    recorded = json.loads((DEFAULT_CHECKPOINT / "metrics.json").read_text())
    assert recorded["command"].startswith("python -m pwn_lib.speakers train --config configs/speakers/course.yaml")
    test = load_voices("test")
    got = listener.accuracy([u.audio for u in test], [u.speaker for u in test])
    one_clip = 1 / len(test) + 1e-9  # thread counts reorder sums; at most one borderline clip may flip
    assert got["accuracy"] == pytest.approx(recorded["test_accuracy"], abs=one_clip)
    assert np.abs(np.array(got["confusion"]) - recorded["test_confusion"]).sum() <= 2
    assert recorded["test_balanced_accuracy"] > 0.8  # chance is 0.2
    for row in recorded["sanity_test_lengths"].values():  # noise and silence: one class, or near chance
        assert max(row["predicted"].values()) == len(test) or row["accuracy"] < 0.4
    assert list(recorded["test_per_voice_accuracy"]) == list(VOICES)
