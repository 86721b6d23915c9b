"""Objective vocoder metrics as vocoder papers report them (HiFi-GAN, BigVGAN, Vocos), and their confidence intervals.

Pure functions of audio arrays: nothing here loads or runs a model. :mod:`pwn_lib.evaluate` renders the systems
and tabulates these figures; the phone error rate's listener is :class:`pwn_lib.phones.Listener`.

Every metric compares a system's audio with the real recording it was conditioned on. The
teacher generates from, and the student transforms noise under, the real utterance's log-mel, so
system and real audio are time-aligned sample for sample. No alignment (DTW) is applied.

Pitch analysis (YIN, de Cheveigné & Kawahara 2002) on 64 ms frames every 16 ms:

- **periodicity** of a frame is ``1 - d'_min``, where ``d'_min`` is the minimum of YIN's cumulative
  mean normalised difference over lags of 2-16.7 ms (60-500 Hz). A pure tone scores 1, white noise
  about 0.1-0.2. librosa exposes YIN's F0 but not its aperiodicity, so :func:`yin_periodicity`
  computes it here.
- a frame is **voiced** when its periodicity is at least ``VOICED_PERIODICITY`` and its level is
  above ``VOICED_FLOOR_DB`` dBFS; its **F0** is ``librosa.yin``'s estimate.

The metrics (one value per utterance; tables give the mean and a 95 % CI over utterances):

- ``mstft``: multi-resolution STFT distance (spectral convergence + log-magnitude L1, averaged over
  the 512/1024/2048-point resolutions of :func:`pwn_lib.losses.mr_stft_loss`). 0 for a copy.
- ``mcd``: mel-cepstral distortion in dB, ``(10 / ln 10) sqrt(2 sum_{d=1}^{24} (c_d - c'_d)^2)``
  averaged over all frames. ``c`` is the cepstrum of the 80-band natural-log mel *amplitude*
  (:func:`pwn_lib.audio.log_mel`) in the convention of SPTK's mel-cepstra,
  ``log|X(w)| = c_0 + 2 sum_d c_d cos(d w)``, i.e. the unnormalised DCT-II divided by ``2 * n_mels``;
  ``c_0`` (level) is excluded.
- ``f0_rmse_cents``: RMS of ``1200 log2(f0 / f0_real)`` over frames voiced in both.
- ``vuv_f1``: F1 of the system's voiced/unvoiced decisions, the real clip's decisions as truth.
- ``periodicity_error``: RMS difference of the periodicity tracks over all frames (CARGAN's metric).
- ``voiced_share``: fraction of frames voiced; ``periodicity``: mean periodicity on the frames the
  real clip marks voiced.
- ``pesq``: wideband PESQ (ITU-T P.862.2) from the ``pesq`` package, 16 kHz; undefined for silence.
- ``power_db``: output power minus the real clip's, dB.
- ``per``: phone error rate of the shipped CTC phone classifier (the machine listener): total edit
  distance over total phones, with a bootstrap CI over utterances.

Confidence intervals: :func:`mean_ci` (t-based over utterances) and :func:`ratio_ci` (a pooled ratio such as the
PER, percentile bootstrap over utterances).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import librosa
import numpy as np
import scipy.fft
import scipy.stats
import torch

from pwn_lib.audio import log_mel, power_db
from pwn_lib.config import AudioConfig
from pwn_lib.losses import mr_stft_loss

FRAME_LENGTH = 1024  # 64 ms at 16 kHz: two periods of the lowest F0 fit into YIN's window
FRAME_HOP = 256  # 16 ms
F0_MIN, F0_MAX = 60.0, 500.0  # Hz: covers male and female speaking pitch
VOICED_PERIODICITY = 0.75  # YIN aperiodicity below 0.25
VOICED_FLOOR_DB = -50.0  # frames quieter than this (dBFS) are unvoiced, whatever their shape
N_CEPSTRA = 24  # c_1 .. c_24
MCD_SCALE = 10.0 / math.log(10.0) * math.sqrt(2.0)
BOOTSTRAP_DRAWS = 2_000
BOOTSTRAP_SEED = 0

METRICS = (
    "mstft",
    "mcd",
    "f0_rmse_cents",
    "vuv_f1",
    "periodicity_error",
    "voiced_share",
    "periodicity",
    "pesq",
    "power_db",
    "per",
)
LOWER_IS_BETTER = {"mstft", "mcd", "f0_rmse_cents", "periodicity_error", "per"}


# ----------------------------------------------------------------------------- pitch analysis


def _frames(x: np.ndarray, frame_length: int = FRAME_LENGTH, hop: int = FRAME_HOP) -> np.ndarray:
    """Centred frames ``(n_frames, frame_length)`` with zero padding, as ``librosa.yin(center=True)`` frames them."""
    padded = np.pad(np.asarray(x, dtype=np.float64), frame_length // 2)
    return librosa.util.frame(padded, frame_length=frame_length, hop_length=hop, axis=0)


def yin_periodicity(
    x: np.ndarray,
    sample_rate: int,
    frame_length: int = FRAME_LENGTH,
    hop: int = FRAME_HOP,
    fmin: float = F0_MIN,
    fmax: float = F0_MAX,
) -> np.ndarray:
    """Per-frame periodicity ``1 - min_tau d'(tau)`` in [0, 1] of ``x: (T,)`` (YIN's steps 1-3).

    ``d(tau) = sum_j (x_j - x_{j + tau})^2`` over the first half of each frame, and the cumulative mean
    normalised difference is ``d'(tau) = d(tau) tau / sum_{k=1}^{tau} d(k)``. The minimum is taken over
    lags ``sample_rate / fmax .. sample_rate / fmin``. An all-zero frame has no period: periodicity 0.
    """
    frames = _frames(x, frame_length, hop)
    window = frame_length // 2
    max_lag = int(math.ceil(sample_rate / fmin))
    min_lag = int(math.floor(sample_rate / fmax))
    if max_lag + window > frame_length:
        raise ValueError(f"frame_length {frame_length} too short for fmin {fmin} Hz at {sample_rate} Hz")
    head = frames[:, :window]
    diff = np.stack(
        [((head - frames[:, lag : lag + window]) ** 2).sum(axis=1) for lag in range(1, max_lag + 1)], axis=1
    )  # (n_frames, max_lag): d(1) .. d(max_lag)
    cumulative = np.cumsum(diff, axis=1)
    lags = np.arange(1, max_lag + 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cmnd = np.where(cumulative > 0, diff * lags / cumulative, 1.0)
    aperiodicity = cmnd[:, min_lag - 1 :].min(axis=1)
    return np.clip(1.0 - aperiodicity, 0.0, 1.0)


def frame_level_db(x: np.ndarray, frame_length: int = FRAME_LENGTH, hop: int = FRAME_HOP) -> np.ndarray:
    """Per-frame RMS level in dBFS (a full-scale constant is 0 dB)."""
    power = (_frames(x, frame_length, hop) ** 2).mean(axis=1)
    return 10.0 * np.log10(np.maximum(power, 1e-12))


@dataclass
class PitchTrack:
    """YIN analysis of one clip: per-frame ``f0`` (Hz), ``periodicity`` in [0, 1] and ``voiced`` flags."""

    f0: np.ndarray
    periodicity: np.ndarray
    voiced: np.ndarray


def pitch_track(x: np.ndarray, sample_rate: int) -> PitchTrack:
    """F0 (``librosa.yin``), periodicity (:func:`yin_periodicity`) and voicing of ``x: (T,)`` on the same frames."""
    x = np.asarray(x, dtype=np.float32)
    periodicity = yin_periodicity(x, sample_rate)
    f0 = librosa.yin(
        x,
        fmin=F0_MIN,
        fmax=F0_MAX,
        sr=sample_rate,
        frame_length=FRAME_LENGTH,
        hop_length=FRAME_HOP,
        center=True,
        pad_mode="constant",
    )
    voiced = (periodicity >= VOICED_PERIODICITY) & (frame_level_db(x) > VOICED_FLOOR_DB)
    return PitchTrack(f0=f0[: len(periodicity)], periodicity=periodicity, voiced=voiced)


def f0_rmse_cents(track: PitchTrack, real: PitchTrack) -> float:
    """RMS pitch error in cents over frames voiced in both; NaN when no frame is."""
    both = track.voiced & real.voiced
    if not both.any():
        return float("nan")
    cents = 1200.0 * np.log2(track.f0[both] / real.f0[both])
    return float(np.sqrt(np.mean(cents**2)))


def vuv_f1(track: PitchTrack, real: PitchTrack) -> float:
    """F1 score of the voiced decisions against the real clip's (1 = the same voicing everywhere)."""
    hits = float((track.voiced & real.voiced).sum())
    predicted, actual = float(track.voiced.sum()), float(real.voiced.sum())
    if predicted + actual == 0:
        return 1.0
    return 2.0 * hits / (predicted + actual)


# ----------------------------------------------------------------------------- spectral metrics


def mel_cepstrum(x: np.ndarray, audio: AudioConfig, n_cepstra: int = N_CEPSTRA) -> np.ndarray:
    """``(n_cepstra, frames)`` cepstral coefficients c_1..c_n of the natural-log mel amplitude.

    With the unnormalised DCT-II ``y_d = 2 sum_k L_k cos(pi d (2k + 1) / 2N)`` over the N bands, the
    inverse is ``L_k = y_0 / 2N + sum_d (y_d / N) cos(...)``, so ``c_d = y_d / 2N`` matches
    ``L = c_0 + 2 sum_d c_d cos(...)``.
    """
    spectrum = log_mel(x, audio)
    return scipy.fft.dct(spectrum, type=2, axis=0)[1 : n_cepstra + 1] / (2 * spectrum.shape[0])


def mel_cepstral_distortion(x: np.ndarray, y: np.ndarray, audio: AudioConfig) -> float:
    """MCD in dB between ``x`` and reference ``y``, averaged over their common frames (see the module docstring)."""
    cx, cy = mel_cepstrum(x, audio), mel_cepstrum(y, audio)
    frames = min(cx.shape[1], cy.shape[1])
    per_frame = MCD_SCALE * np.sqrt(((cx[:, :frames] - cy[:, :frames]) ** 2).sum(axis=0))
    return float(per_frame.mean())


def mstft_distance(x: np.ndarray, y: np.ndarray) -> float:
    """Multi-resolution STFT distance of ``x`` to reference ``y`` (same length)."""

    def as_batch(a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.asarray(a, dtype=np.float32)).view(1, 1, -1)

    with torch.no_grad():
        return float(mr_stft_loss(as_batch(x), as_batch(y)))


def wideband_pesq(x: np.ndarray, y: np.ndarray, sample_rate: int) -> float:
    """Wideband PESQ (1.04 .. 4.64) of degraded ``x`` against reference ``y``; NaN where PESQ finds no speech."""
    from pesq import PesqError, pesq

    if sample_rate != 16_000:
        x = librosa.resample(np.asarray(x, dtype=np.float32), orig_sr=sample_rate, target_sr=16_000)
        y = librosa.resample(np.asarray(y, dtype=np.float32), orig_sr=sample_rate, target_sr=16_000)
    if not np.any(x):
        return float("nan")
    score = pesq(
        16_000, np.asarray(y, dtype=np.float32), np.asarray(x, dtype=np.float32), "wb", on_error=PesqError.RETURN_VALUES
    )
    return float(score) if score > 0 else float("nan")


def score_clip(x: np.ndarray, real: np.ndarray, audio: AudioConfig, real_track: PitchTrack | None = None) -> dict:
    """Every time-aligned metric of one system clip ``x: (T,)`` against ``real: (T,)`` (not the PER)."""
    if len(x) != len(real):
        raise ValueError(f"score_clip compares aligned clips; got {len(x)} and {len(real)} samples")
    real_track = real_track or pitch_track(real, audio.sample_rate)
    track = pitch_track(x, audio.sample_rate)
    periodicity = float(track.periodicity[real_track.voiced].mean()) if real_track.voiced.any() else float("nan")
    return {
        "mstft": mstft_distance(x, real),
        "mcd": mel_cepstral_distortion(x, real, audio),
        "f0_rmse_cents": f0_rmse_cents(track, real_track),
        "vuv_f1": vuv_f1(track, real_track),
        "periodicity_error": float(np.sqrt(np.mean((track.periodicity - real_track.periodicity) ** 2))),
        "voiced_share": float(track.voiced.mean()),
        "periodicity": periodicity,
        "pesq": wideband_pesq(x, real, audio.sample_rate),
        "power_db": power_db(x) - power_db(real),
    }


# ----------------------------------------------------------------------------- statistics


def mean_ci(values: list[float]) -> dict:
    """Mean and t-based 95 % confidence half-width over the finite values (NaN-free); n counts them."""
    v = np.asarray([a for a in values if np.isfinite(a)], dtype=np.float64)
    if len(v) == 0:
        return {"mean": None, "ci95": None, "n": 0}
    half = float(scipy.stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else None
    return {"mean": float(v.mean()), "ci95": half, "n": int(len(v))}


def ratio_ci(errors: list[int], totals: list[int], seed: int = BOOTSTRAP_SEED) -> dict:
    """Pooled ratio sum(errors) / sum(totals) with a percentile-bootstrap 95 % half-width over utterances."""
    e, n = np.asarray(errors, dtype=np.float64), np.asarray(totals, dtype=np.float64)
    ratio = float(e.sum() / n.sum())
    if len(e) < 2:
        return {"mean": ratio, "ci95": None, "n": int(len(e))}
    draws = np.random.default_rng(seed).integers(0, len(e), size=(BOOTSTRAP_DRAWS, len(e)))
    boot = e[draws].sum(axis=1) / n[draws].sum(axis=1)
    low, high = np.percentile(boot, [2.5, 97.5])
    return {"mean": ratio, "ci95": float((high - low) / 2), "n": int(len(e))}
