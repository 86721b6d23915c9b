"""pwn_lib.audio: the 16-bit and mu-law grids, file I/O and its error messages, log-mel framing."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile as sf
import torch

from pwn_lib.audio import (
    AudioError,
    dequantize,
    load_audio,
    log_mel,
    log_mel_distance,
    mulaw_decode,
    mulaw_encode,
    quantize,
    save_audio,
)
from pwn_lib.config import AudioConfig

SR = 16_000


def sine(freq: float = 440.0, seconds: float = 0.5, sr: int = SR, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def peak_hz(x: np.ndarray, sr: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / sr)[spectrum.argmax()])


# --- quantisation grids ----------------------------------------------------------------------


@pytest.mark.parametrize("bits", [8, 16])
def test_dequantize_gives_bin_centres_and_quantize_inverts_them(bits):
    k = np.arange(2**bits)
    centres = dequantize(k, bits)
    np.testing.assert_allclose(centres, k * 2 / (2**bits - 1) - 1, atol=1e-6)
    assert centres[0] == -1.0 and centres[-1] == 1.0
    np.testing.assert_array_equal(quantize(centres, bits), k)
    torch.testing.assert_close(quantize(torch.from_numpy(centres), bits), torch.from_numpy(k))


def test_quantize_error_is_at_most_half_a_bin_and_clips():
    x = np.random.default_rng(0).uniform(-1, 1, 100_000)
    err = np.abs(dequantize(quantize(x)).astype(np.float64) - x)
    assert err.max() <= 0.5 * 2 / (2**16 - 1) + 1e-7
    np.testing.assert_array_equal(quantize(np.array([-3.0, 3.0])), [0, 2**16 - 1])


def test_quantize_numpy_and_torch_agree():
    x = np.random.default_rng(1).uniform(-1, 1, 10_000)
    np.testing.assert_array_equal(quantize(torch.from_numpy(x)).numpy(), quantize(x))
    k = np.arange(0, 2**16, 7)
    np.testing.assert_allclose(dequantize(torch.from_numpy(k)).numpy(), dequantize(k), atol=1e-6)


def test_mulaw_codes_round_trip_and_follow_the_formula():
    k = np.arange(256)
    np.testing.assert_array_equal(mulaw_encode(mulaw_decode(k)), k)
    np.testing.assert_array_equal(mulaw_encode(mulaw_decode(torch.from_numpy(k))).numpy(), k)
    x = np.linspace(-1, 1, 1001)
    y = np.sign(x) * np.log1p(255 * np.abs(x)) / np.log1p(255)
    np.testing.assert_array_equal(mulaw_encode(x), np.rint((y + 1) / 2 * 255))
    assert mulaw_encode(np.array([-1.0, 1.0])).tolist() == [0, 255]
    assert np.all(np.diff(mulaw_decode(k)) > 0)


def test_mulaw_resolution_is_finer_near_zero():
    steps = np.diff(mulaw_decode(np.arange(256)).astype(np.float64))
    assert steps[127] < steps[0] / 50


# --- saving and loading ----------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".wav", ".flac"])
def test_save_then_load_is_exact_on_the_16_bit_grid(tmp_path, suffix):
    x = dequantize(quantize(sine()))
    path = save_audio(tmp_path / f"a{suffix}", x, SR)
    np.testing.assert_array_equal(load_audio(path), x)
    info = sf.info(str(path))
    assert (info.subtype, info.samplerate, info.channels) == ("PCM_16", SR, 1)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"a{suffix}"]  # no temporary left behind


def test_pcm16_sample_v_loads_as_the_centre_of_bin_v_plus_32768(tmp_path):
    v = np.array([-32768, -1, 0, 1, 32767], dtype=np.int16)
    save_audio(tmp_path / "pcm.wav", v, SR)
    np.testing.assert_array_equal(sf.read(str(tmp_path / "pcm.wav"), dtype="int16")[0], v)
    np.testing.assert_allclose(load_audio(tmp_path / "pcm.wav"), (2 * v.astype(np.float64) + 1) / 65535, atol=1e-7)


def test_save_audio_refuses_unknown_suffix_and_bad_shapes(tmp_path):
    with pytest.raises(AudioError, match=r"a\.mp3.*suffix"):
        save_audio(tmp_path / "a.mp3", sine(), SR)
    with pytest.raises(AudioError, match=r"b\.wav.*shape"):
        save_audio(tmp_path / "b.wav", np.zeros((2, 10)), SR)
    with pytest.raises(AudioError, match=r"c\.wav.*NaN"):
        save_audio(tmp_path / "c.wav", np.array([0.0, np.nan]), SR)


def test_float_file_is_read_as_is(tmp_path):
    x = sine(amp=0.25)
    sf.write(str(tmp_path / "f.wav"), x, SR, subtype="FLOAT")
    np.testing.assert_array_equal(load_audio(tmp_path / "f.wav"), x)


def test_float_file_beyond_full_scale_is_clipped_with_a_warning(tmp_path):
    sf.write(str(tmp_path / "loud.wav"), sine(amp=1.5), SR, subtype="FLOAT")
    with pytest.warns(UserWarning, match=r"loud.wav: samples reach 1.5, beyond \[-1, 1\]; clipped"):
        x = load_audio(tmp_path / "loud.wav")
    assert x.max() == 1.0 and x.min() == -1.0


# --- bad input: every message names the file --------------------------------------------------


def expect_error(path: Path, pattern: str, **kwargs) -> AudioError:
    with pytest.raises(AudioError) as info:
        load_audio(path, **kwargs)
    message = str(info.value)
    assert str(path) in message, message
    assert re.search(pattern, message), message
    return info.value


def test_missing_file(tmp_path):
    expect_error(tmp_path / "nope.wav", "no such file")


def test_directory(tmp_path):
    expect_error(tmp_path, "directory")


def test_empty_file(tmp_path):
    (tmp_path / "empty.wav").write_bytes(b"")
    expect_error(tmp_path / "empty.wav", r"empty \(0 bytes\)")


def test_not_audio(tmp_path):
    (tmp_path / "notes.wav").write_text("id|text\nLJ001|hello\n" * 20)
    expect_error(tmp_path / "notes.wav", "not an audio file")


@pytest.mark.parametrize("cut", ["garbled", "truncated"])
def test_corrupt_header(tmp_path, cut):
    save_audio(tmp_path / "good.wav", sine(), SR)
    raw = (tmp_path / "good.wav").read_bytes()
    bad = raw[:12] + b"\xff" * 32 + raw[44:] if cut == "garbled" else raw[:30]
    (tmp_path / "bad.wav").write_bytes(bad)
    expect_error(tmp_path / "bad.wav", "corrupt audio header")


def test_header_without_samples(tmp_path):
    sf.write(str(tmp_path / "zero.wav"), np.zeros(0, dtype=np.int16), SR, subtype="PCM_16")
    expect_error(tmp_path / "zero.wav", "no samples")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_samples(tmp_path, bad):
    x = sine()
    x[100] = bad
    sf.write(str(tmp_path / "nan.wav"), x, SR, subtype="FLOAT")
    expect_error(tmp_path / "nan.wav", "1 NaN or inf sample")


def test_stereo_is_downmixed_with_a_warning_naming_the_file(tmp_path):
    left, right = sine(440), sine(1000, amp=0.2)
    sf.write(str(tmp_path / "stereo.wav"), np.stack([left, right], axis=1), SR, subtype="FLOAT")
    with pytest.warns(UserWarning, match="stereo.wav: has 2 channels; downmixed"):
        x = load_audio(tmp_path / "stereo.wav")
    np.testing.assert_allclose(x, (left + right) / 2, atol=1e-7)


def test_stereo_refused_when_asked(tmp_path):
    sf.write(str(tmp_path / "stereo.wav"), np.zeros((100, 2), dtype=np.float32), SR)
    expect_error(tmp_path / "stereo.wav", "2 channels.*mono='downmix'", mono="refuse")
    with pytest.raises(ValueError, match="mono='average'"):
        load_audio(tmp_path / "stereo.wav", mono="average")


def test_mono_file_loads_without_warning(tmp_path):
    save_audio(tmp_path / "mono.wav", sine(), SR)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_audio(tmp_path / "mono.wav")


def test_wrong_rate_is_resampled(tmp_path):
    save_audio(tmp_path / "lj.wav", sine(1000, seconds=1.0, sr=22_050), 22_050)
    x = load_audio(tmp_path / "lj.wav", SR)
    assert len(x) == SR
    assert abs(peak_hz(x, SR) - 1000) <= 2
    assert len(load_audio(tmp_path / "lj.wav", None)) == 22_050


def test_wrong_rate_refused_when_resampling_is_off(tmp_path):
    save_audio(tmp_path / "lj.wav", sine(sr=22_050), 22_050)
    expect_error(tmp_path / "lj.wav", "22050 Hz but 16000 Hz is required", resample=False)


# --- log-mel ---------------------------------------------------------------------------------


@pytest.mark.parametrize("frames", [1, 2, 16, 63])
def test_log_mel_has_exactly_n_over_hop_frames(frames):
    cfg = AudioConfig()
    x = np.random.default_rng(frames).uniform(-0.5, 0.5, frames * cfg.hop_length).astype(np.float32)
    assert log_mel(x, cfg).shape == (cfg.n_mels, frames)
    if frames > 1:
        assert log_mel(x[:-1], cfg).shape == (cfg.n_mels, frames - 1)
    assert log_mel(np.pad(x, (0, cfg.hop_length - 1)), cfg).shape == (cfg.n_mels, frames)


def test_log_mel_is_log_of_a_floored_magnitude_mel():
    cfg = AudioConfig()
    silence = log_mel(np.zeros(8 * cfg.hop_length, dtype=np.float32), cfg)
    np.testing.assert_allclose(silence, np.log(cfg.log_mel_floor), rtol=1e-6)
    loud, quiet = log_mel(sine(amp=0.5), cfg), log_mel(sine(amp=0.25), cfg)
    middle = slice(4, -4)  # away from the zero-padded edges
    np.testing.assert_allclose((loud - quiet)[:, middle].max(axis=0), np.log(2), atol=1e-3)


def test_log_mel_frame_k_is_centred_on_sample_k_times_hop():
    cfg = AudioConfig()
    x = np.zeros(40 * cfg.hop_length, dtype=np.float32)
    x[23 * cfg.hop_length] = 1.0
    assert log_mel(x, cfg).sum(axis=0).argmax() == 23


def test_log_mel_puts_a_tone_in_the_right_band_and_accepts_tensors():
    cfg = AudioConfig()
    mel = log_mel(torch.from_numpy(sine(2000.0)), cfg)
    centres = librosa.mel_frequencies(cfg.n_mels + 2, fmin=cfg.fmin, fmax=cfg.fmax)[1:-1]
    assert abs(centres[mel[:, 10].argmax()] - 2000.0) < 150


def test_log_mel_rejects_too_short_and_multichannel_input():
    with pytest.raises(ValueError, match="at least hop_length=256"):
        log_mel(np.zeros(100, dtype=np.float32))
    with pytest.raises(ValueError, match=r"shape \(2, 1024\)"):
        log_mel(np.zeros((2, 1024), dtype=np.float32))


def test_log_mel_distance_is_zero_for_identical_and_grows_with_noise():
    rng = np.random.default_rng(0)
    x = sine()
    small = x + 0.001 * rng.standard_normal(len(x)).astype(np.float32)
    large = x + 0.1 * rng.standard_normal(len(x)).astype(np.float32)
    assert log_mel_distance(x, x) == 0.0
    assert 0 < log_mel_distance(x, small) < log_mel_distance(x, large)
