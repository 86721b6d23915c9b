"""The vocoder metrics of pwn_lib.evaluate on signals whose answers are known, and the CLI on the shipped student."""

from __future__ import annotations

import json
import math
import shutil

import librosa
import numpy as np
import pytest
import scipy.fft
import scipy.stats

from pwn_lib import evaluate as ev
from pwn_lib import metrics
from pwn_lib.audio import log_mel
from pwn_lib.config import CHECKPOINT_DIR, AudioConfig
from pwn_lib.data import load_corpus
from pwn_lib.phones import Listener, load_targets
from pwn_lib.vocoders import crop_to_hops

SR = 16_000
AUDIO = AudioConfig()


def tone(freq: float, seconds: float = 1.0, amplitude: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def noise(seconds: float = 1.0, level: float = 0.1, seed: int = 0) -> np.ndarray:
    return (level * np.random.default_rng(seed).standard_normal(int(seconds * SR))).astype(np.float32)


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    """The longest 1-4 s test utterance, cropped to whole hops."""
    return crop_to_hops(ev.pick_utterances("test")[-1].audio, AUDIO.hop_length)


# ----------------------------------------------------------------------------- pitch


def test_pure_tone_f0_periodicity_and_voicing():
    track = metrics.pitch_track(tone(220.0), SR)
    inner = slice(4, -4)  # frames away from the zero-padded edges
    assert np.all(track.voiced[inner])
    assert np.allclose(track.f0[inner], 220.0, rtol=0.005)
    assert track.periodicity[inner].min() > 0.97


def test_white_noise_is_aperiodic_and_unvoiced():
    track = metrics.pitch_track(noise(), SR)
    assert track.periodicity.mean() < 0.3
    assert track.voiced.mean() < 0.02


def test_yin_lag_agrees_with_librosa_f0_on_a_harmonic_signal():
    """The hand-written difference function dips at the period that librosa.yin reports (independent code)."""
    t = np.arange(SR) / SR
    x = sum(np.sin(2 * np.pi * 180.0 * h * t) / h for h in (1, 2, 3)).astype(np.float32) * 0.2
    frames = metrics._frames(x)
    window, lags = metrics.FRAME_LENGTH // 2, np.arange(int(SR / metrics.F0_MAX), int(SR / metrics.F0_MIN) + 1)
    head = frames[10, :window]
    d = np.array([((head - frames[10, lag : lag + window]) ** 2).sum() for lag in lags])
    f0 = librosa.yin(
        x,
        fmin=metrics.F0_MIN,
        fmax=metrics.F0_MAX,
        sr=SR,
        frame_length=metrics.FRAME_LENGTH,
        hop_length=metrics.FRAME_HOP,
        center=True,
        pad_mode="constant",
    )[10]
    assert abs(SR / lags[np.argmin(d)] - f0) / f0 < 0.01
    assert abs(f0 - 180.0) < 1.0


def test_silence_has_no_period_and_no_voicing():
    track = metrics.pitch_track(np.zeros(SR, dtype=np.float32), SR)
    assert not track.voiced.any() and np.all(track.periodicity == 0.0)


def test_f0_rmse_in_cents_and_vuv_f1():
    a, b = metrics.pitch_track(tone(220.0), SR), metrics.pitch_track(tone(220.0 * 2 ** (100 / 1200)), SR)
    assert metrics.f0_rmse_cents(b, a) == pytest.approx(100.0, abs=3.0)
    assert metrics.f0_rmse_cents(a, a) == 0.0
    assert metrics.vuv_f1(a, a) == 1.0
    silent = metrics.pitch_track(np.zeros(SR, dtype=np.float32), SR)
    assert metrics.vuv_f1(silent, a) == 0.0
    assert math.isnan(metrics.f0_rmse_cents(silent, a))


def test_silence_against_speech_voicing(speech):
    real = metrics.pitch_track(speech, SR)
    assert 0.3 < real.voiced.mean() < 0.95  # speech has voiced and unvoiced frames
    scores = metrics.score_clip(np.zeros_like(speech), speech, AUDIO)
    assert scores["voiced_share"] == 0.0 and scores["vuv_f1"] == 0.0


# ----------------------------------------------------------------------------- spectra


def test_cepstrum_convention_reconstructs_the_log_mel(speech):
    """L_k = c_0 + 2 sum_d c_d cos(pi d (2k + 1) / 2N): the stated convention, checked by an explicit cosine sum."""
    spectrum = log_mel(speech[:4096], AUDIO).astype(np.float64)
    n = spectrum.shape[0]
    c = metrics.mel_cepstrum(speech[:4096], AUDIO, n_cepstra=n - 1)
    c0 = spectrum.mean(axis=0)
    k, d = np.arange(n)[:, None], np.arange(1, n)[None, :]
    basis = np.cos(np.pi * d * (2 * k + 1) / (2 * n))  # (N, N - 1)
    assert np.allclose(c0[None] + 2 * basis @ c, spectrum, atol=1e-4)


def test_a_copy_scores_zero_distance_and_top_pesq(speech):
    scores = metrics.score_clip(speech.copy(), speech, AUDIO)
    for key in ("mstft", "mcd", "f0_rmse_cents", "periodicity_error", "power_db"):
        assert scores[key] == pytest.approx(0.0, abs=1e-6), key
    assert scores["vuv_f1"] == 1.0
    assert scores["pesq"] > 4.5


def test_noise_scores_far_from_speech(speech):
    fake = noise(len(speech) / SR, level=float(np.sqrt(np.mean(speech**2))))
    scores = metrics.score_clip(fake, speech, AUDIO)
    assert scores["mcd"] > 4.0
    assert scores["mstft"] > 2.0
    assert scores["pesq"] < 1.5
    assert scores["voiced_share"] < 0.05
    assert abs(scores["power_db"]) < 0.5
    quiet = metrics.score_clip(0.1 * speech, speech, AUDIO)
    assert quiet["power_db"] == pytest.approx(-20.0, abs=1e-3)
    assert quiet["mcd"] < 0.05  # a level change is c_0 only, which MCD leaves out


def test_mcd_of_a_known_cepstral_shift():
    """Adding a spectral tilt of known cepstral size moves the MCD by the formula's amount."""
    x = noise(0.5, seed=1)
    cx = metrics.mel_cepstrum(x, AUDIO)
    spectrum = log_mel(x, AUDIO).astype(np.float64)
    n = spectrum.shape[0]
    tilt = 2 * 0.1 * np.cos(np.pi * 1 * (2 * np.arange(n) + 1) / (2 * n))  # c_1 += 0.1
    shifted = scipy.fft.dct(spectrum + tilt[:, None], type=2, axis=0)[1 : metrics.N_CEPSTRA + 1] / (2 * n)
    assert np.allclose(shifted - cx, np.eye(metrics.N_CEPSTRA)[:, :1] * 0.1, atol=1e-6)
    assert metrics.MCD_SCALE * 0.1 == pytest.approx(10 / math.log(10) * math.sqrt(2) * 0.1)


def test_compare_spectrograms_shares_one_scale_in_db_re_full_scale():
    """A full-scale sine peaks at 0 dB (|X_k| * 2 / sum(w) is its amplitude), and every panel uses that one scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pwn_lib.audio import compare_spectrograms

    sine = np.sin(2 * np.pi * 1_000.0 * np.arange(SR) / SR)  # 1 kHz sits on bin 64 of a 1024-point FFT at 16 kHz
    fig = compare_spectrograms({"sine": sine, "quiet": 0.01 * sine}, SR, metrics={"quiet": {"power dB": -40.0}})
    images = [ax.images[0] for ax in fig.axes if ax.images]
    assert len(images) == 2 and all(im.get_clim() == pytest.approx((-80.0, 0.0), abs=0.05) for im in images)
    assert images[1].get_array().max() == pytest.approx(-40.0, abs=0.05)
    assert fig.axes[0].get_ylabel() == "frequency (Hz)" and fig.axes[1].get_title() == "quiet\npower dB -40"
    assert fig.axes[-1].get_ylabel() == "level (dB re full scale)"
    plt.close(fig)


# ----------------------------------------------------------------------------- statistics


def test_mean_ci_matches_scipy_t_interval():
    values = [1.0, 2.0, 4.0, 7.0, 11.0]
    low, high = scipy.stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=scipy.stats.sem(values))
    got = metrics.mean_ci(values + [float("nan")])
    assert got["n"] == 5 and got["mean"] == pytest.approx(5.0)
    assert got["ci95"] == pytest.approx((high - low) / 2)


def test_ratio_ci_pools_and_bootstraps():
    got = metrics.ratio_ci([1, 2, 3], [10, 10, 20])
    assert got["mean"] == pytest.approx(6 / 40)
    assert 0 < got["ci95"] < 0.15
    assert metrics.ratio_ci([2, 2, 2], [10, 10, 10])["ci95"] == 0.0


def test_pick_utterances_is_deterministic_and_in_range():
    chosen = ev.pick_utterances("test", 5)
    assert [u.id for u in chosen] == [u.id for u in ev.pick_utterances("test", 5)]
    assert all(ev.MIN_SECONDS <= len(u.audio) / SR <= ev.MAX_SECONDS for u in chosen)
    assert len({u.id for u in chosen}) == 5
    with pytest.raises(ValueError, match="no en test utterances"):
        ev.pick_utterances("test", min_seconds=100, max_seconds=200)


# ----------------------------------------------------------------------------- listener and CLI


def test_listener_hears_real_speech_better_than_noise():
    listener = Listener()
    u = ev.pick_utterances("test", 1)[0]
    real_errors, total = listener.errors(u.audio, u.id)
    noise_errors, _ = listener.errors(noise(len(u.audio) / SR, 0.1), u.id)
    assert real_errors < noise_errors <= total + 5
    with pytest.raises(KeyError, match="no phone targets"):
        listener.errors(u.audio, "not-an-utterance")


def test_espeak_reading():
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed: `apt-get install espeak-ng` (.ci/run installs it)")
    x = ev.espeak_reading("hello world", SR)
    assert 0.3 < len(x) / SR < 3.0 and np.abs(x).max() > 0.05


def test_cli_scores_the_shipped_student(tmp_path, capsys):
    """Two checkpoints of one kind without --names get a row each (student_1, student_2), not one shared row."""
    out = tmp_path / "eval.json"
    ev.main(
        [
            str(CHECKPOINT_DIR / "student_course"),
            str(CHECKPOINT_DIR / "student_course"),
            "--utterances",
            "2",
            "--max-seconds",
            "0.5",
            "--no-espeak",
            "--out",
            str(out),
            "--audio-dir",
            str(tmp_path / "wav"),
        ]
    )
    results = json.loads(out.read_text())
    assert set(results["systems"]) == {"real", "noise", "silence", "student_1", "student_2"}
    assert results["systems"]["real"]["mcd"]["mean"] == 0.0
    assert results["systems"]["noise"]["mcd"]["mean"] > 3.0
    assert set(results["systems"]["student_1"]) == set(metrics.METRICS)
    assert results["systems"]["student_1"]["mcd"] == results["systems"]["student_2"]["mcd"], "same seed, same audio"
    assert len(list((tmp_path / "wav" / "student_2").glob("*.wav"))) == 2
    printed = capsys.readouterr().out
    assert "student_2" in printed and "mcd" in printed


def test_default_row_names_are_the_kinds_numbered_where_they_repeat():
    assert ev.unique_names(["teacher", "student"]) == ["teacher", "student"]
    assert ev.unique_names(["teacher", "student", "teacher"]) == ["teacher_1", "student", "teacher_2"]


@pytest.mark.parametrize(
    ("names", "complaint"),
    [
        ("real,student", r"\['real'\]: \['real', 'noise', 'silence', 'espeak'\] are the reference rows"),
        ("teacher,espeak", r"\['espeak'\]: .* are the reference rows"),
        ("twin,twin", r"\['twin'\]: each checkpoint needs its own row name"),
        ("../../../x,student", r"\['../../../x'\]: a row name must be"),
        ("ok,a/b", r"\['a/b'\]: a row name must be"),
    ],
)
def test_cli_refuses_row_names_that_collide_or_escape_before_loading_anything(tmp_path, names, complaint):
    """A reference row's name would overwrite that row (and, with --record, metrics.json's); a path escapes
    data/eval. Refused before any checkpoint is read (these paths do not even exist), with nothing written."""
    missing = [str(tmp_path / "no_such_checkpoint_a"), str(tmp_path / "no_such_checkpoint_b")]
    with pytest.raises(SystemExit, match=complaint):
        ev.main([*missing, "--names", names, "--no-espeak", "--out", str(tmp_path / "eval.json")])
    with pytest.raises(ValueError, match=complaint):
        ev.run(missing, names=names.split(","))
    assert list(tmp_path.iterdir()) == []


def test_cli_refuses_a_directory_that_is_not_a_checkpoint(tmp_path):
    with pytest.raises(SystemExit, match=f"error: {tmp_path} is not a checkpoint directory"):
        ev.main([str(tmp_path), "--no-espeak", "--out", str(tmp_path / "eval.json")])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("flags", "complaint"),
    [
        (["--utterances", "0"], "argument --utterances: 0 is not >= 1"),
        (["--utterances", "-1"], "argument --utterances: -1 is not >= 1"),
        (["--max-seconds", "-1"], "argument --max-seconds: -1.0 is not a finite number > 0"),
        (["--max-seconds", "nan"], "argument --max-seconds: nan is not a finite number > 0"),
        (["--threads", "0"], "argument --threads: 0 is not >= 1"),
        (["--temperature", "-1"], "argument --temperature: -1.0 is not a finite number > 0"),
        (["--split", "nope"], "argument --split: invalid choice: 'nope'"),
    ],
)
def test_cli_refuses_bad_counts_lengths_threads_and_temperatures_by_name(tmp_path, capsys, flags, complaint):
    with pytest.raises(SystemExit):
        ev.main([str(CHECKPOINT_DIR / "teacher_course"), *flags, "--out", str(tmp_path / "eval.json")])
    assert complaint in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_cli_refuses_an_out_folder_and_a_crop_shorter_than_the_metrics_need(tmp_path):
    teacher = str(CHECKPOINT_DIR / "teacher_course")
    with pytest.raises(SystemExit, match=f"--out {tmp_path} is a folder; name the JSON file"):
        ev.main([teacher, "--no-espeak", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="--max-seconds 0.05: 800 samples, shorter than the 2048 samples"):
        ev.main([teacher, "--no-espeak", "--max-seconds", "0.05", "--out", str(tmp_path / "eval.json")])
    assert list(tmp_path.iterdir()) == []


def test_corpus_has_targets_for_every_picked_utterance():
    targets = load_targets()
    assert all(u.id in targets for u in load_corpus("test"))


def test_a_temperature_applies_to_the_teachers_and_leaves_the_students_alone(monkeypatch):
    """`--temperature` with a teacher and a student: the teacher samples at it, the student loads as it is."""
    loaded = {}

    def scored(signals, *args, **kwargs):
        raise StopIteration  # the systems are loaded; nothing needs scoring

    monkeypatch.setattr(ev, "evaluate_systems", scored)
    real_load = ev.vocoders.load
    monkeypatch.setattr(ev.vocoders, "load", lambda *a: loaded.setdefault(a[1], real_load(*a)))
    checkpoints = [CHECKPOINT_DIR / "teacher_course", CHECKPOINT_DIR / "student_course"]
    with pytest.raises(StopIteration):
        ev.run(checkpoints, count=1, max_seconds=0.15, with_espeak=False, progress=False, temperature=0.5)
    assert loaded["teacher"].sampling == {"temperature": 0.5}
    assert loaded["student"].kind == "student" and loaded["student"].sampling == {}


def test_another_voice_is_scored_on_its_own_test_split_with_its_speaker_id(tmp_path):
    """`--voice fr`: the utterances are fr's, a multi-speaker teacher renders with fr's id (its audio equals
    rendering that id by hand and differs from another id's), a single-speaker one without ids, and there is no
    PER column (the listener and espeak are English only); recompute replays the recorded voice."""
    import torch

    from pwn_lib import vocoders
    from pwn_lib.data import VOICES, load_voices
    from pwn_lib.wavenet import build_teacher

    torch.manual_seed(0)
    multi = build_teacher("tiny", n_speakers=len(VOICES), log_mel_mean=-5.0, log_mel_std=2.0)
    with torch.no_grad():
        multi.speaker_embedding.weight.mul_(20)  # voices it tells apart
    multi.save(tmp_path / "multi")
    build_teacher("tiny", log_mel_mean=-5.0, log_mel_std=2.0).save(tmp_path / "single")
    results = ev.run(
        [tmp_path / "multi", tmp_path / "single"],
        count=1,
        progress=False,
        voice="fr",
        names=["multi", "single"],
    )
    fr = {u.id for u in load_voices("test", ["fr"])}
    assert results["voice"] == "fr" and set(results["utterances"]) <= fr
    assert all("per" not in row for row in results["systems"].values()) and "espeak" not in results["systems"]
    clip = crop_to_hops(ev.pick_utterances("test", 1, voice="fr")[0].audio, AUDIO.hop_length)
    system = vocoders.load(tmp_path / "multi", "multi")
    by_hand = vocoders.render_clips(system, [clip], system.audio, seed=ev.EVAL_SEED, speaker=VOICES.index("fr"))[0]
    other = vocoders.render_clips(system, [clip], system.audio, seed=ev.EVAL_SEED, speaker=VOICES.index("it"))[0]
    rendered = {"multi": by_hand}
    assert not np.allclose(by_hand, other), "two speaker ids must render differently"
    results["command"] = "test"
    ev.record(results, tmp_path / "multi", "multi")
    assert json.loads((tmp_path / "multi" / "metrics.json").read_text())["evaluation"]["voice"] == "fr"
    again = ev.recompute(tmp_path / "multi")
    assert again["mcd"] == pytest.approx(results["per_utterance"]["multi"]["mcd"])
    assert metrics.score_clip(rendered["multi"], clip, AUDIO)["mcd"] == pytest.approx(again["mcd"][0], rel=1e-4)
    with pytest.raises(ValueError, match="voice 'de' unknown"):
        ev.pick_utterances("test", voice="de")
