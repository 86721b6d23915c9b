"""Stimuli (loudness, anchor, mu-law, test folders and their errors) and the seeded trial design."""

from __future__ import annotations

import json
import re
import shutil
from collections import Counter

import numpy as np
import pytest
import soundfile as sf

from pwn_lib.audio import save_audio
from pwn_lib.config import DATA_DIR
from pwn_lib.listening import (
    StimulusError,
    ab_trials,
    load_test,
    loudness_lufs,
    mnru,
    mos_trials,
    mulaw_roundtrip,
    normalize_loudness,
    rater_id,
)
from pwn_lib.listening.simulate import toy_test

SR = 16_000


@pytest.fixture()
def toy(tmp_path):
    return toy_test(tmp_path / "toy")


def tone(seconds: float = 1.0, amplitude: float = 0.1, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


# -------------------------------------------------------------------------------------------- signals


def test_loudness_normalisation_hits_the_target_and_scales_linearly():
    x = tone(amplitude=0.05)
    y = normalize_loudness(x, SR, -26.0)
    assert loudness_lufs(y, SR) == pytest.approx(-26.0, abs=0.01)
    # one gain for the whole clip: the waveform's shape is untouched, +6.02 dB is a doubling
    gain = y.max() / x.max()
    assert np.allclose(y, gain * x, atol=1e-6)
    assert loudness_lufs(2 * x, SR) - loudness_lufs(x, SR) == pytest.approx(20 * np.log10(2), abs=1e-6)


def test_loudness_refuses_silence_short_clips_and_clipping():
    with pytest.raises(StimulusError, match="silent"):
        normalize_loudness(np.zeros(SR, dtype=np.float32), SR, name="teacher/u1")
    with pytest.raises(StimulusError, match=r"shorter than BS.1770's 0.4 s block"):
        normalize_loudness(tone(0.3), SR)
    spiky = tone(amplitude=0.001)
    spiky[100] = 0.9
    with pytest.raises(StimulusError, match=r"peak would be .* pass a lower target"):
        normalize_loudness(spiky, SR, -10.0, name="student/u2")


def test_mnru_has_the_stated_speech_to_noise_ratio():
    x = tone(2.0, 0.3)
    for q in (0.0, 10.0, 20.0):
        y = mnru(x, q, seed=1)
        noise = y - x
        assert 10 * np.log10(np.sum(x**2) / np.sum(noise**2)) == pytest.approx(q, abs=0.3)


def test_mulaw8_round_trip_error_is_small_and_relative():
    x = np.linspace(-1, 1, 2_000_001, dtype=np.float32)
    y = mulaw_roundtrip(x, bits=8)
    assert np.unique(y).size == 256
    # the widest bins sit at full scale (0.957 .. 1.0), the narrowest at zero: the error is relative to |x|
    assert np.abs(y - x).max() < 0.025 and np.abs(y - x)[np.abs(x) < 0.01].max() < 5e-4


# -------------------------------------------------------------------------------------------- test folders


def test_toy_test_round_trips_with_roles_controls_and_loudness(toy):
    again = load_test(toy.root)
    assert again.utterances == ["u1", "u2", "u3"] and set(again.systems) == {"real", "coarse", "anchor"}
    assert again.with_role("reference") == ["real"] and again.with_role("anchor") == ["anchor"]
    assert [c["name"] for c in again.controls] == ["gold_good", "gold_bad"] + [f"trap_{k}" for k in range(1, 6)]
    for system in again.systems:
        assert loudness_lufs(again.load(again.path(system, "u2")), SR) == pytest.approx(-26.0, abs=0.05)


def test_missing_stimulus_is_named(toy):
    (toy.root / "coarse" / "u2.flac").unlink()
    with pytest.raises(StimulusError, match=r"coarse lacks \['u2'\] \(e.g. missing stimulus .*coarse/u2.flac\)"):
        load_test(toy.root)


def test_systems_with_different_utterance_sets_are_refused(toy):
    shutil.copy(toy.root / "real" / "u1.flac", toy.root / "real" / "extra.flac")
    with pytest.raises(StimulusError, match=r"different utterance sets.*real has extra \['extra'\]"):
        load_test(toy.root)


def test_sample_rate_mismatch_is_named(toy):
    x, _ = sf.read(toy.root / "anchor" / "u3.flac")
    save_audio(toy.root / "anchor" / "u3.flac", x.astype(np.float32), 22_050)
    with pytest.raises(StimulusError, match=r"anchor/u3.flac: sample rate 22050 Hz, but test .* is 16000 Hz"):
        load_test(toy.root)


def test_missing_manifest_and_other_test_schema_are_refused(toy, tmp_path):
    with pytest.raises(StimulusError, match="not a listening test; build one"):
        load_test(tmp_path)
    manifest = json.loads((toy.root / "test.json").read_text())
    (toy.root / "test.json").write_text(json.dumps({**manifest, "schema_version": 7}))
    with pytest.raises(StimulusError, match="test schema version 7"):
        load_test(toy.root)


def test_shipped_example_test_is_valid():
    test = load_test(DATA_DIR / "listening" / "example")
    assert set(test.systems) == {"real", "teacher", "student", "mulaw8", "anchor"}
    assert test.ab_pairs == [("teacher", "student")] and len(test.utterances) == 6
    for system in ("teacher", "student"):  # built from the shipped checkpoints, not older ones
        shipped = json.loads((DATA_DIR / "checkpoints" / f"{system}_course" / "metrics.json").read_text())
        assert test.metrics["checkpoint"][system]["steps"] == shipped["steps"]


# -------------------------------------------------------------------------------------------- design


def test_rater_ids_are_stable_anonymous_and_per_test():
    assert rater_id("Ada  Lovelace", "t") == rater_id("ada lovelace", "t")
    assert rater_id("ada", "t") != rater_id("ada", "other test")
    assert "ada" not in rater_id("ada", "t") and len(rater_id("ada", "t")) == 11
    with pytest.raises(ValueError, match="empty"):
        rater_id("   ", "t")


def test_mos_trials_cover_every_stimulus_once_with_gold_and_one_trap(toy):
    trials = mos_trials(toy, "r1")
    tests = [(t.system, t.utterance) for t in trials if t.role == "test"]
    assert sorted(tests) == sorted((s, u) for s in toy.systems for u in toy.utterances)
    assert Counter(t.role for t in trials) == {"test": 9, "gold": 2, "trap": 1}
    assert [t.index for t in trials] == list(range(12)) and trials[0].role == "test"
    trap = next(t for t in trials if t.role == "trap")
    assert trap.system == f"trap_{trap.expected}"


def test_order_is_seeded_per_rater(toy):
    order = [(t.system, t.utterance) for t in mos_trials(toy, "r1")]
    assert order == [(t.system, t.utterance) for t in mos_trials(toy, "r1")]
    others = {tuple((t.system, t.utterance) for t in mos_trials(toy, f"r{i}")) for i in range(2, 12)}
    assert len(others) == 10 and tuple(order) not in others


def test_ab_sides_are_drawn_per_trial(toy):
    sides = [t.system for i in range(40) for t in ab_trials(toy, f"r{i}")]
    assert len(sides) == 40 * 3 and set(sides) == {"real", "coarse"}
    assert 0.35 < sides.count("real") / len(sides) < 0.65
    trial = ab_trials(toy, "r1")[0]
    assert {trial.system, trial.system_b} == {"real", "coarse"} and trial.path.parent.name == trial.system


def test_load_test_decodes_every_clip_and_refuses_a_cut_or_replaced_one(tmp_path):
    test = toy_test(tmp_path / "toy")
    clip = test.path(next(iter(test.systems)), test.utterances[0])
    data = clip.read_bytes()
    assert len(test.sha256) == len(test.systems) * len(test.utterances) + len(test.controls)
    clip.write_bytes(data[: len(data) // 2])  # sf.info still reads the header: only decoding finds it
    with pytest.raises(StimulusError, match=re.escape(str(clip))):
        load_test(test.root)
    other = test.path(list(test.systems)[1], test.utterances[0])
    clip.write_bytes(other.read_bytes())  # a whole, valid clip, but not this one
    with pytest.raises(StimulusError, match=r"bytes differ from the SHA-256 recorded in .*test.json"):
        load_test(test.root)
    clip.write_bytes(data)
    assert load_test(test.root).sha256 == test.sha256


def test_a_manifest_without_a_name_names_the_file_and_the_key(tmp_path):
    test = toy_test(tmp_path / "toy")
    manifest = json.loads((test.root / "test.json").read_text())
    del manifest["name"]
    (test.root / "test.json").write_text(json.dumps(manifest))
    with pytest.raises(StimulusError, match=r"toy/test.json: lacks the key\(s\) \['name'\]; rebuild the test"):
        load_test(test.root)
