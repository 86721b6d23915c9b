"""Objective vocoder metrics as vocoder papers report them (HiFi-GAN, BigVGAN, Vocos), and a CLI to score checkpoints.

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

Reference rows: ``real`` (a copy: the metrics' zero points), ``noise`` (white noise at the real
power), ``silence``, and ``espeak`` (espeak-ng reading the transcript: intelligible speech by another
voice, scored only by the listener since it is not time-aligned).

Command line::

    python -m pwn_lib.evaluate data/checkpoints/teacher_course data/checkpoints/student_course --split test

Taught in notebooks 04, 06 and 07; section 4 of the paper reports MOS, which notebook 09 measures.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import librosa
import numpy as np
import scipy.fft
import scipy.stats
import soundfile as sf
import torch
from tqdm.auto import tqdm

from pwn_lib import _fast
from pwn_lib.artifacts import load_artifact, write_json
from pwn_lib.audio import log_mel, power_db, save_audio
from pwn_lib.config import DATA_DIR, AudioConfig, fast_mode, from_dict
from pwn_lib.data import Utterance, load_corpus
from pwn_lib.losses import mr_stft_loss
from pwn_lib.phones import DEFAULT_CHECKPOINT as PHONES_CHECKPOINT
from pwn_lib.phones import edit_distance, greedy_decode, load_phone_classifier, load_targets
from pwn_lib.student import IAFStudent
from pwn_lib.wavenet import WaveNet

FRAME_LENGTH = 1024  # 64 ms at 16 kHz: two periods of the lowest F0 fit into YIN's window
FRAME_HOP = 256  # 16 ms
F0_MIN, F0_MAX = 60.0, 500.0  # Hz: covers male and female speaking pitch
VOICED_PERIODICITY = 0.75  # YIN aperiodicity below 0.25
VOICED_FLOOR_DB = -50.0  # frames quieter than this (dBFS) are unvoiced, whatever their shape
N_CEPSTRA = 24  # c_1 .. c_24
MCD_SCALE = 10.0 / math.log(10.0) * math.sqrt(2.0)
MIN_SECONDS, MAX_SECONDS = 1.0, 4.0  # default utterance range: long enough to judge, short enough to generate
EVAL_SEED = 0
BOOTSTRAP_DRAWS = 2_000
RESULTS_DIR = DATA_DIR / "eval"

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


# ----------------------------------------------------------------------------- the machine listener


class Listener:
    """The shipped phone classifier transcribing clips, scored against the corpus's phone targets."""

    def __init__(self, classifier: Path = PHONES_CHECKPOINT):
        self.model, self.targets, self.name = load_phone_classifier(classifier), load_targets(), classifier.name

    @torch.no_grad()
    def errors(self, x: np.ndarray, utterance_id: str) -> tuple[int, int]:
        """(edit distance, number of target phones) of the greedy transcription of ``x: (T,)``."""
        if utterance_id not in self.targets:
            raise KeyError(f"no phone targets for utterance {utterance_id!r} in data/corpus/phones.tsv")
        hyp = greedy_decode(self.model(torch.as_tensor(np.asarray(x, dtype=np.float32)).view(1, 1, -1)))[0]
        target = self.targets[utterance_id]
        return edit_distance(hyp, target), len(target)


def espeak_reading(text: str, sample_rate: int) -> np.ndarray:
    """espeak-ng (en-us) reading ``text``, resampled to ``sample_rate``. Needs the espeak-ng program."""
    if shutil.which("espeak-ng") is None:
        raise FileNotFoundError(
            "espeak-ng is not installed: `apt-get install espeak-ng` (or skip the espeak row with --no-espeak)"
        )
    wav = subprocess.run(["espeak-ng", "-v", "en-us", "--stdout", text], check=True, capture_output=True).stdout
    x, rate = sf.read(io.BytesIO(wav), dtype="float32")
    return librosa.resample(x, orig_sr=rate, target_sr=sample_rate) if rate != sample_rate else x


# ----------------------------------------------------------------------------- statistics


def mean_ci(values: list[float]) -> dict:
    """Mean and t-based 95 % confidence half-width over the finite values (NaN-free); n counts them."""
    v = np.asarray([a for a in values if np.isfinite(a)], dtype=np.float64)
    if len(v) == 0:
        return {"mean": None, "ci95": None, "n": 0}
    half = float(scipy.stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else None
    return {"mean": float(v.mean()), "ci95": half, "n": int(len(v))}


def ratio_ci(errors: list[int], totals: list[int], seed: int = EVAL_SEED) -> dict:
    """Pooled ratio sum(errors) / sum(totals) with a percentile-bootstrap 95 % half-width over utterances."""
    e, n = np.asarray(errors, dtype=np.float64), np.asarray(totals, dtype=np.float64)
    ratio = float(e.sum() / n.sum())
    if len(e) < 2:
        return {"mean": ratio, "ci95": None, "n": int(len(e))}
    draws = np.random.default_rng(seed).integers(0, len(e), size=(BOOTSTRAP_DRAWS, len(e)))
    boot = e[draws].sum(axis=1) / n[draws].sum(axis=1)
    low, high = np.percentile(boot, [2.5, 97.5])
    return {"mean": ratio, "ci95": float((high - low) / 2), "n": int(len(e))}


# ----------------------------------------------------------------------------- systems


def pick_utterances(
    split: str = "test", count: int | None = None, min_seconds: float = MIN_SECONDS, max_seconds: float = MAX_SECONDS
) -> list[Utterance]:
    """The ``split`` utterances of ``min_seconds``-``max_seconds``, shortest first; ``count`` evenly spaced ones."""
    pool = sorted(
        (u for u in load_corpus(split) if min_seconds <= len(u.audio) / u.sample_rate <= max_seconds),
        key=lambda u: (len(u.audio), u.id),
    )
    if not pool:
        raise ValueError(f"no {split} utterances between {min_seconds} and {max_seconds} s")
    if count is None or count >= len(pool):
        return pool
    return [pool[i] for i in np.linspace(0, len(pool) - 1, count).round().astype(int)]


def _cropped(utterances: list[Utterance], hop: int, max_samples: int | None) -> list[np.ndarray]:
    clips = []
    for u in utterances:
        x = u.audio[:max_samples] if max_samples else u.audio
        clips.append(np.ascontiguousarray(x[: len(x) // hop * hop], dtype=np.float32))
    return clips


def mel_batch(clips: list[np.ndarray], audio: AudioConfig) -> torch.Tensor:
    """(B, n_mels, F_max) log-mels, padded with the log floor (silence) past each clip's end."""
    mels = [torch.from_numpy(log_mel(x, audio)) for x in clips]
    out = torch.full((len(mels), audio.n_mels, max(m.shape[1] for m in mels)), math.log(audio.log_mel_floor))
    for i, m in enumerate(mels):
        out[i, :, : m.shape[1]] = m
    return out


@dataclass
class System:
    """A checkpoint to score: its name (the row), kind (teacher/student) and loaded model."""

    name: str
    kind: str
    model: torch.nn.Module
    path: Path
    options: dict = field(default_factory=dict)


def load_system(path: Path, name: str | None = None, device: str = "cpu", temperature: float | None = None) -> System:
    """Load a teacher or student checkpoint directory, telling which from its config.json.

    A teacher samples at the temperature its config.json records under ``sampling`` (1.0 if none), unless
    ``temperature`` overrides it.
    """
    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"{path} is not a checkpoint directory (no config.json); pass e.g. data/checkpoints/teacher_course"
        )
    _, config, _ = load_artifact(path)
    kind = config.get("kind")
    if kind == "teacher":
        model = WaveNet.from_checkpoint(path, device)
    elif kind == "student":
        model = IAFStudent.from_checkpoint(path, device)
    else:
        raise ValueError(
            f"{path}/config.json has kind {kind!r}; python -m pwn_lib.evaluate scores teacher or student checkpoints"
        )
    options = dict(config.get("sampling", {}))
    if set(options) - {"temperature"} or (options and kind != "teacher"):
        raise ValueError(f"{path}/config.json: 'sampling' may hold only a teacher's 'temperature', got {options}")
    if temperature is not None:
        if kind != "teacher":
            raise ValueError(f"--temperature applies to teacher checkpoints; {path} is a {kind}")
        options["temperature"] = temperature
    return System(name=name or kind, kind=kind, model=model, path=path, options=options)


@torch.no_grad()
def synthesise(
    system: System,
    clips: list[np.ndarray],
    audio: AudioConfig,
    batch_size: int = 8,
    seed: int = EVAL_SEED,
    progress: bool = True,
) -> list[np.ndarray]:
    """The system's audio for each clip, conditioned on the clip's log-mel.

    A float32 CPU teacher generates with the compiled loop of ``make fast`` (the reference step's random
    draws, equal to float32 rounding), at ``system.options['temperature']`` (default 1.0).

    Clips go in batches of ``batch_size`` (sorted by length, they pad least); batch ``i`` draws its noise
    from a generator seeded ``seed + i``, so any one batch can be recomputed on its own.
    """
    device = next(system.model.parameters()).device
    compiled = system.kind == "teacher" and system.model.compiled_generation_available()
    if system.kind == "teacher" and not compiled:
        print(
            f"synthesise {system.name}: the reference cached step (12-30x slower than the compiled loop; "
            f"{_fast.BUILD_HINT})",
            file=sys.stderr,
        )
    out: list[np.ndarray] = []
    for index, start in enumerate(
        tqdm(range(0, len(clips), batch_size), desc=f"synthesise {system.name}", disable=not progress)
    ):
        generator = torch.Generator(device).manual_seed(seed + index)
        group = clips[start : start + batch_size]
        mel = mel_batch(group, audio).to(device)
        if system.kind == "teacher":
            # Cached generation is a chain of tiny matmuls: extra torch threads only add synchronisation
            # (measured 10x slower with 2 threads than with 1 on the course's 2-core CPU).
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                y = system.model.generate(
                    mel,
                    generator=generator,
                    progress=progress,
                    compiled=compiled,
                    temperature=system.options.get("temperature", 1.0),
                )
            finally:
                torch.set_num_threads(threads)
        else:
            y = system.model.sample(mel, generator=generator)
        out.extend(y[i, 0, : len(x)].float().cpu().numpy() for i, x in enumerate(group))
    return out


def reference_systems(clips: list[np.ndarray], seed: int = EVAL_SEED) -> dict[str, list[np.ndarray]]:
    """The real audio itself, white noise at each clip's power, and silence."""
    rng = np.random.default_rng(seed)
    noise = [
        (rng.standard_normal(len(x)) * np.sqrt(np.mean(x.astype(np.float64) ** 2))).astype(np.float32) for x in clips
    ]
    return {"real": clips, "noise": noise, "silence": [np.zeros_like(x) for x in clips]}


def evaluate_systems(
    signals: dict[str, list[np.ndarray]],
    utterances: list[Utterance],
    clips: list[np.ndarray],
    audio: AudioConfig,
    listener: Listener | None = None,
    espeak: dict[str, np.ndarray] | None = None,
    progress: bool = True,
) -> dict:
    """Score every system's clips against ``clips``; the table of means and CIs plus per-utterance values."""
    real_tracks = [pitch_track(x, audio.sample_rate) for x in clips]
    rows: dict[str, dict] = {}
    per_utterance: dict[str, dict[str, list]] = {}
    for name, outputs in tqdm(signals.items(), desc="score", disable=not progress):
        values: dict[str, list] = {m: [] for m in METRICS if m != "per"}
        for x, real, track in zip(outputs, clips, real_tracks, strict=True):
            for key, value in score_clip(x, real, audio, track).items():
                values[key].append(value)
        rows[name] = {key: mean_ci(v) for key, v in values.items()}
        if listener is not None:
            counts = [listener.errors(x, u.id) for x, u in zip(outputs, utterances, strict=True)]
            values["per"] = [e / n for e, n in counts]
            rows[name]["per"] = ratio_ci([e for e, _ in counts], [n for _, n in counts])
        per_utterance[name] = values
    if listener is not None and espeak:
        counts = [listener.errors(espeak[u.id], u.id) for u in utterances]
        rows["espeak"] = {
            "per": ratio_ci([e for e, _ in counts], [n for _, n in counts]),
            "power_db": mean_ci([power_db(espeak[u.id]) - power_db(x) for u, x in zip(utterances, clips, strict=True)]),
        }
        per_utterance["espeak"] = {"per": [e / n for e, n in counts]}
    return {"systems": rows, "per_utterance": per_utterance}


class QuickScore:
    """Time-aligned metrics of a parallel student on a few fixed utterances: cheap enough for every checkpoint.

    Used by ``python -m pwn_lib.train student`` to log voicing, periodicity, power and MCD curves to
    TensorBoard during distillation (model selection on the valid split; the test split is for the end).
    """

    def __init__(self, audio: AudioConfig, split: str = "valid", count: int = 4):
        self.audio = audio
        self.utterances = pick_utterances(split, count)
        self.clips = _cropped(self.utterances, audio.hop_length, None)
        self.tracks = [pitch_track(x, audio.sample_rate) for x in self.clips]

    @torch.no_grad()
    def __call__(self, student: torch.nn.Module) -> dict[str, float]:
        system = System(name="student", kind="student", model=student, path=Path("."))
        outputs = synthesise(system, self.clips, self.audio, progress=False)
        values: dict[str, list[float]] = {}
        for x, real, track in zip(outputs, self.clips, self.tracks, strict=True):
            for key, value in score_clip(x, real, self.audio, track).items():
                values.setdefault(key, []).append(value)
        real_share = float(np.mean([t.voiced.mean() for t in self.tracks]))
        scores = {key: float(np.nanmean(v)) if np.isfinite(v).any() else float("nan") for key, v in values.items()}
        scores["voiced_share_vs_real"] = scores["voiced_share"] / real_share
        return scores


# ----------------------------------------------------------------------------- report


def compare_spectrograms(
    clips: dict[str, np.ndarray],
    sample_rate: int,
    metrics: dict[str, dict] | None = None,
    top_db: float = 80.0,
    n_fft: int = 1024,
    hop: int = 256,
):
    """Side-by-side spectrograms on one colour map and one dB scale, with a labelled colour bar.

    ``clips`` maps a system name to its audio ``(T,)``; ``metrics`` optionally maps the same names to
    ``{metric: value}`` shown in each panel's title. The scale is dB re full scale, from the loudest
    bin of all panels down ``top_db``. Returns the matplotlib figure.
    """
    import matplotlib.pyplot as plt

    window = np.hanning(n_fft)
    spectra = {
        name: 20
        * np.log10(
            np.maximum(
                np.abs(librosa.stft(np.asarray(x, dtype=np.float32), n_fft=n_fft, hop_length=hop, window=window))
                * 2
                / window.sum(),
                1e-10,
            )
        )
        for name, x in clips.items()
    }
    vmax = max(float(s.max()) for s in spectra.values())
    fig, axes = plt.subplots(1, len(spectra), figsize=(4.2 * len(spectra), 3.4), sharey=True, squeeze=False)
    for ax, (name, spec) in zip(axes[0], spectra.items(), strict=True):
        extent = (0, spec.shape[1] * hop / sample_rate, 0, sample_rate / 2)
        image = ax.imshow(
            spec, origin="lower", aspect="auto", extent=extent, cmap="magma", vmin=vmax - top_db, vmax=vmax
        )
        title = name
        if metrics and name in metrics:
            title += "".join(f"\n{k} {v:.3g}" for k, v in metrics[name].items() if v is not None)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("time (s)")
    axes[0][0].set_ylabel("frequency (Hz)")
    fig.colorbar(image, ax=axes[0].tolist(), label="level (dB re full scale)")
    return fig


def format_table(results: dict) -> str:
    """A plain-text table: one row per system, mean ± 95 % CI per metric."""
    systems = results["systems"]
    header = ["system", *METRICS]
    lines = [header]
    for name, row in systems.items():
        cells = [name]
        for metric in METRICS:
            cell = row.get(metric)
            if not cell or cell["mean"] is None:
                cells.append("–")
            elif cell["ci95"] is None:
                cells.append(f"{cell['mean']:.3g}")
            else:
                cells.append(f"{cell['mean']:.3g} ± {cell['ci95']:.2g}")
        lines.append(cells)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in lines]
    text.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(text)


def headline(results: dict, system: str) -> dict[str, float | None]:
    """``{metric: mean}`` of one row, for metrics.json and the reload tests."""
    return {k: v["mean"] for k, v in results["systems"][system].items()}


def run(
    checkpoints: list[Path],
    split: str = "test",
    count: int | None = None,
    names: list[str] | None = None,
    max_seconds: float | None = None,
    with_espeak: bool = True,
    audio_dir: Path | None = None,
    device: str = "cpu",
    progress: bool = True,
    batch_size: int = 8,
    temperature: float | None = None,
) -> dict:
    """Score ``checkpoints`` and the reference rows on ``split``; returns the JSON-ready results.

    ``temperature`` overrides every teacher's recorded sampling temperature (see :func:`load_system`).
    """
    systems = [
        load_system(p, n, device, temperature)
        for p, n in zip(checkpoints, names or [None] * len(checkpoints), strict=True)
    ]
    audio = _audio_config(checkpoints)
    utterances = pick_utterances(split, count)
    max_samples = int(max_seconds * audio.sample_rate) if max_seconds else None
    clips = _cropped(utterances, audio.hop_length, max_samples)
    signals = reference_systems(clips)
    timings = {}
    for system in systems:
        started = time.perf_counter()
        signals[system.name] = synthesise(system, clips, audio, batch_size, progress=progress)
        timings[system.name] = round(time.perf_counter() - started, 1)
    espeak = None
    if with_espeak:
        espeak = {u.id: espeak_reading(u.text, audio.sample_rate) for u in utterances}
    if audio_dir is not None:
        _save_signals(audio_dir, signals, utterances, audio.sample_rate)
    results = evaluate_systems(signals, utterances, clips, audio, Listener(), espeak, progress)
    results.update(
        {
            "split": split,
            "utterances": [u.id for u in utterances],
            "seconds": round(sum(len(x) for x in clips) / audio.sample_rate, 2),
            "sample_rate": audio.sample_rate,
            "checkpoints": {s.name: str(s.path) for s in systems},
            "synthesis_seconds": timings,
            "seed": EVAL_SEED,
            "batch_size": batch_size,
            "sampling": {s.name: s.options for s in systems if s.options},
            "definitions": {
                "voiced": f"YIN periodicity >= {VOICED_PERIODICITY} and level > {VOICED_FLOOR_DB} dBFS",
                "frames": f"{FRAME_LENGTH}-sample frames every {FRAME_HOP} samples",
                "mcd": f"c1-c{N_CEPSTRA}, DCT-II of {audio.n_mels}-band natural-log mel amplitude, "
                "10/ln10*sqrt(2*sum), mean over frames, no DTW",
                "ci95": "t-based over utterances; per: percentile bootstrap over utterances",
            },
        }
    )
    return results


def json_safe(value):
    """``value`` with every NaN or infinity replaced by None (strict JSON has no NaN)."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def record(results: dict, directory: Path, system: str) -> None:
    """Write ``system``'s row, the reference rows and its per-utterance values into ``directory/metrics.json``.

    The shipped checkpoints' headline figures come from here; tests/test_shipped.py recomputes them.
    """
    path = Path(directory) / "metrics.json"
    metrics = json.loads(path.read_text())
    rows = results["systems"]
    metrics["evaluation"] = {
        "command": results.get("command"),
        "split": results["split"],
        "utterances": results["utterances"],
        "seconds": results["seconds"],
        "seed": results["seed"],
        "batch_size": results["batch_size"],
        "sampling": results.get("sampling", {}).get(system, {}),
        "definitions": results["definitions"],
        "synthesis_seconds": results["synthesis_seconds"].get(system),
        "rows": {name: rows[name] for name in (system, "real", "noise", "silence", "espeak") if name in rows},
        "per_utterance": results["per_utterance"][system],
    }
    write_json(path, json_safe(metrics))


def recompute(directory: Path, batches: int | None = None, progress: bool = False) -> dict[str, list]:
    """Re-score a checkpoint on the utterances its metrics.json ``evaluation`` records, batch by batch.

    ``batches`` limits the work to the first few synthesis batches (the shortest utterances); each batch
    uses the recorded seed scheme, so its per-utterance values should match the recorded ones.
    Returns ``{metric: [value per recomputed utterance]}``.
    """
    directory = Path(directory)
    recorded = json.loads((directory / "metrics.json").read_text()).get("evaluation")
    if recorded is None:
        raise KeyError(
            f"{directory}/metrics.json has no 'evaluation'; run python -m pwn_lib.evaluate {directory} --record"
        )
    system = load_system(directory, temperature=recorded.get("sampling", {}).get("temperature"))
    audio = _audio_config([directory])
    by_id = {u.id: u for u in load_corpus(recorded["split"])}
    count = len(recorded["utterances"]) if batches is None else batches * recorded["batch_size"]
    utterances = [by_id[i] for i in recorded["utterances"][:count]]
    clips = _cropped(utterances, audio.hop_length, None)
    outputs = synthesise(system, clips, audio, recorded["batch_size"], recorded["seed"], progress)
    results = evaluate_systems({system.name: outputs}, utterances, clips, audio, Listener(), progress=progress)
    return results["per_utterance"][system.name]


def _audio_config(checkpoints: list[Path]) -> AudioConfig:
    """The checkpoints' AudioConfig (recorded in config.json when present), which must agree."""
    configs = set()
    for path in checkpoints:
        _, config, _ = load_artifact(Path(path))
        configs.add(from_dict(AudioConfig, config["audio"]) if "audio" in config else AudioConfig())
    if len(configs) > 1:
        raise ValueError(f"checkpoints {list(map(str, checkpoints))} use different audio configs: {configs}")
    return configs.pop() if configs else AudioConfig()


def _save_signals(
    directory: Path, signals: dict[str, list[np.ndarray]], utterances: list[Utterance], sample_rate: int
) -> None:
    for name, outputs in signals.items():
        for x, u in zip(outputs, utterances, strict=True):
            save_audio(Path(directory) / name / f"{u.id}.wav", np.clip(x, -1, 1), sample_rate)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pwn_lib.evaluate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("checkpoints", nargs="+", type=Path, help="teacher and/or student checkpoint directories")
    parser.add_argument("--names", help="comma-separated row names for the checkpoints (default: their kinds)")
    parser.add_argument("--split", default="test", choices=("train", "valid", "test"))
    parser.add_argument(
        "--utterances",
        type=int,
        default=None,
        help=f"how many {MIN_SECONDS:g}-{MAX_SECONDS:g} s utterances (default: all; fast mode: 2)",
    )
    parser.add_argument("--max-seconds", type=float, default=None, help="crop each utterance (fast mode: 0.5)")
    parser.add_argument("--no-espeak", action="store_true", help="skip the espeak-ng reference row")
    parser.add_argument("--out", type=Path, help="JSON file for the results (default data/eval/<names>.json)")
    parser.add_argument("--audio-dir", type=Path, help="also write every system's clips here as WAV")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument(
        "--temperature",
        type=float,
        help="sample the teachers at this temperature instead of their config.json's "
        "sampling.temperature (1.0 if none): each chosen logistic's scale times it",
    )
    parser.add_argument(
        "--record",
        action="store_true",
        help="also write each checkpoint's row into its own metrics.json (the shipped figures)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    names = args.names.split(",") if args.names else None
    if names is not None and len(names) != len(args.checkpoints):
        raise SystemExit(f"--names has {len(names)} names for {len(args.checkpoints)} checkpoints")
    count = args.utterances if args.utterances is not None else (2 if fast_mode() else None)
    max_seconds = args.max_seconds if args.max_seconds is not None else (0.5 if fast_mode() else None)
    results = run(
        args.checkpoints,
        args.split,
        count,
        names,
        max_seconds,
        not args.no_espeak,
        args.audio_dir,
        temperature=args.temperature,
    )
    results["command"] = " ".join(["python -m pwn_lib.evaluate", *(sys.argv[1:] if argv is None else argv)])
    out = args.out or RESULTS_DIR / f"{'_'.join(results['checkpoints'])}_{args.split}.json"
    results = json_safe(results)
    write_json(out, results)
    if args.record:
        for name, path in results["checkpoints"].items():
            record(results, Path(path), name)
    print(format_table(results))
    print(
        f"{results['seconds']} s of {args.split} audio over {len(results['utterances'])} utterances; written to {out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


# ----------------------------------------------------------------------------- the course's targets

# Issue 13 ("Distillation that works"): what the shipped checkpoints must reach on `--split test`. Each entry:
# (system, metric, what is compared, the bound as a function of the real and teacher rows' means).
TARGETS: tuple[tuple[str, str, str, object], ...] = (
    ("teacher", "voiced_share", ">= 0.85 x real", lambda real, teacher: 0.85 * real["voiced_share"]),
    ("teacher", "periodicity", ">= 0.80", lambda real, teacher: 0.80),
    ("teacher", "per", "<= 0.35", lambda real, teacher: 0.35),
    ("student", "voiced_share", ">= 0.80 x real", lambda real, teacher: 0.80 * real["voiced_share"]),
    ("student", "power_db", "within 2 dB of real", lambda real, teacher: 2.0),
    ("student", "mcd", "<= 1.10 x teacher", lambda real, teacher: 1.10 * teacher["mcd"]),
    ("student", "periodicity", ">= 0.90 x teacher", lambda real, teacher: 0.90 * teacher["periodicity"]),
    ("student", "per", "<= teacher + 0.10", lambda real, teacher: teacher["per"] + 0.10),
)


def target_report(rows: dict[str, dict]) -> list[dict]:
    """Each target of :data:`TARGETS` whose system is in ``rows``: measured mean, bound and whether it is met.

    ``rows`` maps ``real``, ``teacher`` and optionally ``student`` to ``{metric: {"mean": ...}}``, as in the
    ``evaluation`` block of a checkpoint's metrics.json (notebooks 04 and 06 print this).
    """
    means = {name: {k: v["mean"] for k, v in row.items() if isinstance(v, dict)} for name, row in rows.items()}
    report = []
    for system, metric, rule, bound in TARGETS:
        if system not in means:
            continue
        value, limit = means[system][metric], bound(means["real"], means["teacher"])
        if metric == "power_db":
            met = abs(value) <= limit
        else:
            met = value <= limit if metric in LOWER_IS_BETTER else value >= limit
        report.append(
            {"system": system, "metric": metric, "rule": rule, "measured": value, "bound": limit, "met": bool(met)}
        )
    return report
