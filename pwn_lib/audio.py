"""Audio in and out, the 16-bit and mu-law grids, and the log-mel conditioning features.

Taught in notebook 00 (the 16-bit grid, the log-mel) and notebook 03 (mu-law); the paper's 16-bit audio is
section 2.1.

Conventions used across the course:

* audio is float in [-1, 1];
* the 16-bit grid has ``2**16`` bins whose centres are ``k * 2 / (2**16 - 1) - 1``;
  a 16-bit PCM file's sample ``v`` (an int16) is read as the centre of bin ``v + 32768``,
  so files and :func:`quantize` / :func:`dequantize` agree exactly;
* a log-mel of a signal of ``T`` samples has ``T // hop_length`` frames, the natural log of
  ``max(mel, log_mel_floor)`` on a magnitude (power 1) mel spectrogram.

Bad input raises :class:`AudioError` naming the file. Stereo input is **downmixed** (channel mean)
with a warning unless ``mono="refuse"``; a different sample rate is **resampled** with librosa
unless ``resample=False``, which refuses instead. Before anything is decoded, the header's sample rate
must lie in ``[MIN_SAMPLE_RATE, MAX_SAMPLE_RATE]`` and its duration be at most ``max_seconds``
(``MAX_SECONDS``, ten minutes), so a corrupt or huge file cannot resample itself into gigabytes; a file
whose data section holds fewer frames than its header declares (a cut download) is refused.
"""

from __future__ import annotations

import functools
import math
import os
import tempfile
import warnings
from pathlib import Path
from typing import TypeVar

import librosa
import numpy as np
import soundfile as sf
import torch

from pwn_lib.config import AudioConfig

ArrayOrTensor = TypeVar("ArrayOrTensor", np.ndarray, torch.Tensor)

# First bytes of the containers libsndfile reads: a file that starts like one of these but
# cannot be opened has a corrupt header; anything else is not audio at all.
_AUDIO_MAGIC = (b"RIFF", b"RIFX", b"RF64", b"fLaC", b"OggS", b"FORM", b".snd", b"caff", b"ID3")
_SUFFIX_FORMATS = {".wav": "WAV", ".flac": "FLAC"}
_MONO_MODES = ("downmix", "refuse")
# Rates a speech file can sensibly have: a header outside them is corrupt, and resampling from it would make
# up to 48x (16 kHz from 1 Hz: 16,000x) more samples than the file holds.
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 4_000, 192_000
# The longest clip load_audio decodes at once: ten minutes of 48 kHz stereo peak at about 1 GB while resampling.
MAX_SECONDS = 600.0


class AudioError(ValueError):
    """An audio file that cannot be used; the message names the file and says what to do."""


# ---------------------------------------------------------------------------------------------
# Reading and writing
# ---------------------------------------------------------------------------------------------


def _check_readable(path: Path) -> None:
    if not path.exists():
        raise AudioError(f"{path}: no such file; check the path (the course corpus is under data/corpus)")
    if path.is_dir():
        raise AudioError(f"{path}: is a directory, not an audio file; pass the path of a .wav or .flac file")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: file is empty (0 bytes); re-create or re-download it")


def _open_error(path: Path, err: Exception) -> AudioError:
    with open(path, "rb") as f:
        head = f.read(12)
    if head.startswith(_AUDIO_MAGIC):
        return AudioError(
            f"{path}: corrupt audio header ({err}); the file looks like audio but cannot be decoded, "
            "re-create or re-download it"
        )
    return AudioError(f"{path}: not an audio file soundfile can read ({err}); convert it to WAV or FLAC")


def _declared_wav_frames(path: Path) -> int | None:
    """The frames a RIFF/WAVE file's ``data`` chunk declares; None for other containers and streaming headers.

    libsndfile shortens a WAV whose data section was cut to what is there, so the header is read here.
    """
    with open(path, "rb") as f:
        head = f.read(12)
        if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        block_align = 0
        while len(chunk := f.read(8)) == 8:
            name, size = chunk[:4], int.from_bytes(chunk[4:], "little")
            if name == b"data":
                return size // block_align if block_align and 0 < size < 0xFFFFFFFF else None
            if name == b"fmt ":
                block_align = int.from_bytes(f.read(size)[12:14], "little")
                f.seek(size & 1, 1)
            else:
                f.seek(size + (size & 1), 1)  # chunks are padded to an even length
    return None


def _check_header(path: Path, info: sf._SoundFileInfo, max_seconds: float | None) -> None:
    """Refuse, from the header alone, a file with no samples, an implausible sample rate or too long a duration."""
    if info.frames <= 0 or info.channels <= 0 or info.samplerate <= 0:
        raise AudioError(f"{path}: the header declares no samples; re-create or re-download the file")
    if not MIN_SAMPLE_RATE <= info.samplerate <= MAX_SAMPLE_RATE:
        raise AudioError(
            f"{path}: the header declares a sample rate of {info.samplerate} Hz, outside "
            f"[{MIN_SAMPLE_RATE}, {MAX_SAMPLE_RATE}] Hz; the header is corrupt or the file is not speech audio, "
            "re-export it at a standard rate (e.g. 16000 or 22050 Hz)"
        )
    seconds = info.frames / info.samplerate
    if max_seconds is not None and seconds > max_seconds:
        raise AudioError(
            f"{path}: {seconds:,.0f} s long, more than max_seconds={max_seconds:g} s that load_audio decodes at once; "
            f"split it into shorter clips (e.g. `sox {path.name} clip.wav trim 0 {max_seconds:g} : newfile : restart`) "
            "or pass a larger max_seconds (None: no limit) if the machine has the memory"
        )


def _read(path: Path, max_seconds: float | None) -> tuple[np.ndarray, int]:
    """Read any libsndfile format as float32 ``(T, C)`` plus its sample rate, refusing bad headers and cut files."""
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError) as err:
        raise _open_error(path, err) from None
    _check_header(path, info, max_seconds)
    try:
        if info.subtype == "PCM_16":
            pcm, rate = sf.read(str(path), dtype="int16", always_2d=True)
            x = dequantize(pcm.astype(np.int64) + 2**15, bits=16)
        else:
            x, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as err:
        raise AudioError(f"{path}: corrupt audio data ({err}); re-create or re-download it") from None
    if x.shape[0] == 0:
        raise AudioError(f"{path}: contains no samples; re-create or re-download the file")
    declared = max(info.frames, _declared_wav_frames(path) or 0)
    if x.shape[0] < declared:
        raise AudioError(
            f"{path}: the header declares {declared} frames but the data holds only {x.shape[0]}; "
            "the file is truncated (an interrupted copy or download), re-create or re-download it"
        )
    return x, rate


def _to_mono(x: np.ndarray, path: Path, mono: str) -> np.ndarray:
    if x.shape[1] == 1:
        return x[:, 0]
    if mono == "refuse":
        raise AudioError(
            f"{path}: has {x.shape[1]} channels but mono audio is required; "
            "pass mono='downmix' or convert the file to mono"
        )
    warnings.warn(f"{path}: has {x.shape[1]} channels; downmixed to mono by averaging them", stacklevel=3)
    return x.mean(axis=1)


def load_audio(
    path: str | os.PathLike,
    sample_rate: int | None = 16_000,
    *,
    resample: bool = True,
    mono: str = "downmix",
    max_seconds: float | None = MAX_SECONDS,
) -> np.ndarray:
    """Read an audio file as float32 mono ``(T,)`` in [-1, 1] at ``sample_rate``.

    Args:
        path: any format soundfile reads (WAV, FLAC, OGG, ...).
        sample_rate: the rate to return; ``None`` keeps the file's own rate.
        resample: when the file's rate differs, resample with librosa (True) or raise (False).
        mono: ``"downmix"`` averages channels with a warning; ``"refuse"`` raises on multi-channel files.
        max_seconds: the longest file decoded (``None``: no limit), checked from the header before decoding.

    Raises:
        AudioError: missing, empty, not audio, corrupt header or data, truncated data, NaN/inf samples,
            a sample rate outside ``[MIN_SAMPLE_RATE, MAX_SAMPLE_RATE]``, longer than ``max_seconds``,
            multi-channel with ``mono="refuse"``, wrong rate with ``resample=False``.

    A float file with samples beyond [-1, 1] is clipped with a warning naming the file.
    """
    if mono not in _MONO_MODES:
        raise ValueError(f"mono={mono!r}; choose one of {_MONO_MODES}")
    if sample_rate is not None and not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE:
        raise ValueError(f"sample_rate={sample_rate}; choose a rate in [{MIN_SAMPLE_RATE}, {MAX_SAMPLE_RATE}] Hz")
    path = Path(path)
    _check_readable(path)
    x, rate = _read(path, max_seconds)
    if not np.isfinite(x).all():
        bad = int((~np.isfinite(x)).sum())
        raise AudioError(f"{path}: {bad} NaN or inf sample(s); fix or re-export the file")
    if np.abs(x).max() > 1.0:
        warnings.warn(f"{path}: samples reach {np.abs(x).max():.3g}, beyond [-1, 1]; clipped", stacklevel=2)
    x = _to_mono(x, path, mono)
    if sample_rate is not None and rate != sample_rate:
        if not resample:
            raise AudioError(
                f"{path}: sample rate is {rate} Hz but {sample_rate} Hz is required; "
                "pass resample=True or resample the file"
            )
        x = librosa.resample(x, orig_sr=rate, target_sr=sample_rate)
    return np.ascontiguousarray(np.clip(x, -1.0, 1.0), dtype=np.float32)


def save_audio(path: str | os.PathLike, x: np.ndarray | torch.Tensor, sample_rate: int) -> Path:
    """Write mono ``x: (T,)`` as 16-bit PCM (``.wav`` or ``.flac``), atomically.

    ``x`` is float in [-1, 1], snapped to the 16-bit grid (:func:`quantize`) so that ``load_audio``
    gives it back exactly, or an int16 array written as is.
    """
    path = Path(path)
    fmt = _SUFFIX_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise AudioError(f"{path}: unsupported suffix {path.suffix!r}; use one of {sorted(_SUFFIX_FORMATS)}")
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if x.ndim != 1:
        raise AudioError(f"{path}: expected mono audio of shape (T,), got shape {x.shape}")
    if not np.isfinite(x).all():
        raise AudioError(f"{path}: refusing to write NaN or inf samples")
    pcm = x if x.dtype == np.int16 else (quantize(x, bits=16) - 2**15).astype(np.int16)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    os.close(fd)
    try:
        sf.write(tmp, pcm, sample_rate, format=fmt, subtype="PCM_16")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


# ---------------------------------------------------------------------------------------------
# Quantisation grids
# ---------------------------------------------------------------------------------------------


def quantize(x: ArrayOrTensor, bits: int = 16) -> ArrayOrTensor:
    """Index of the ``bits``-bit bin holding each sample: ``round((x + 1) / 2 * (2**bits - 1))``.

    ``x`` in [-1, 1] (values outside are clipped); returns int64 indices in ``[0, 2**bits - 1]``.
    """
    top = 2**bits - 1
    if isinstance(x, torch.Tensor):
        return torch.round((x.clamp(-1.0, 1.0) + 1.0) / 2.0 * top).long()
    return np.rint((np.clip(x, -1.0, 1.0) + 1.0) / 2.0 * top).astype(np.int64)


def dequantize(k: ArrayOrTensor, bits: int = 16) -> ArrayOrTensor:
    """Centre of bin ``k``: ``k * 2 / (2**bits - 1) - 1``; float32 (numpy) or the default dtype (torch)."""
    width = 2.0 / (2**bits - 1)
    if isinstance(k, torch.Tensor):  # float64 arithmetic, so torch and numpy give the same values
        return (k.to(torch.float64) * width - 1.0).to(torch.get_default_dtype())
    return (np.asarray(k, dtype=np.float64) * width - 1.0).astype(np.float32)


def mulaw_encode(x: ArrayOrTensor, mu: int = 255) -> ArrayOrTensor:
    """mu-law companding then quantisation: ``x`` in [-1, 1] -> int64 codes in ``0..mu``.

    ``y = sign(x) * log(1 + mu |x|) / log(1 + mu)``, code ``round((y + 1) / 2 * mu)``.
    """
    if isinstance(x, torch.Tensor):
        x = x.clamp(-1.0, 1.0)
        y = torch.sign(x) * torch.log1p(mu * x.abs()) / np.log1p(mu)
        return torch.round((y + 1.0) / 2.0 * mu).long()
    x = np.clip(x, -1.0, 1.0)
    y = np.sign(x) * np.log1p(mu * np.abs(x)) / np.log1p(mu)
    return np.rint((y + 1.0) / 2.0 * mu).astype(np.int64)


def mulaw_decode(k: ArrayOrTensor, mu: int = 255) -> ArrayOrTensor:
    """Inverse of :func:`mulaw_encode`: codes ``0..mu`` -> ``sign(y) ((1 + mu)**|y| - 1) / mu``."""
    if isinstance(k, torch.Tensor):
        y = k.to(torch.float64) * (2.0 / mu) - 1.0
        return (torch.sign(y) * torch.expm1(y.abs() * np.log1p(mu)) / mu).to(torch.get_default_dtype())
    y = np.asarray(k, dtype=np.float64) * (2.0 / mu) - 1.0
    return (np.sign(y) * np.expm1(np.abs(y) * np.log1p(mu)) / mu).astype(np.float32)


def mulaw_noise(x: torch.Tensor, level: float, mu: int = 255, generator: torch.Generator | None = None) -> torch.Tensor:
    """``x`` with Gaussian noise of std ``level`` added in the mu-law domain (LPCNet's noise injection, Valin and
    Skoglund 2019, section 3.3), clamped to [-1, 1]; ``level`` 0 returns ``x`` itself.

    With ``y = sign(x) log(1 + mu |x|) / log(1 + mu)``, a small step dy moves x by
    ``dx = dy (1/mu + |x|) log(1 + mu)``, so the noise in the waveform has std about
    ``level (1/mu + |x|) log(1 + mu)``: tiny in silence, proportional to the amplitude in speech. That is the shape
    of an autoregressive teacher's own per-sample uncertainty, which it meets as errors in its past when it samples.
    """
    if level == 0:
        return x
    y = torch.sign(x) * torch.log1p(mu * x.abs()) / math.log1p(mu)
    y = y + level * torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    return (torch.sign(y) * torch.expm1(y.abs() * math.log1p(mu)) / mu).clamp(-1.0, 1.0)


# ---------------------------------------------------------------------------------------------
# Log-mel conditioning
# ---------------------------------------------------------------------------------------------


def log_mel(x: np.ndarray | torch.Tensor, cfg: AudioConfig = AudioConfig()) -> np.ndarray:
    """Log-mel spectrogram ``(n_mels, T // hop_length)`` of mono ``x: (T,)`` in [-1, 1].

    librosa magnitude mel with ``center=True``; frame k is centred on sample ``k * hop_length`` and
    conditions samples ``[k * hop, (k + 1) * hop)``. The extra last frame of ``center=True`` is dropped.
    """
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 1:
        raise ValueError(f"log_mel expects mono audio of shape (T,), got shape {x.shape}")
    n_frames = len(x) // cfg.hop_length
    if n_frames == 0:
        raise ValueError(f"log_mel needs at least hop_length={cfg.hop_length} samples, got {len(x)}")
    with warnings.catch_warnings():
        # Inputs shorter than n_fft are fine: center=True zero-pads them.
        warnings.filterwarnings("ignore", message="n_fft=.* is too large for input signal")
        mel = librosa.feature.melspectrogram(
            y=x,
            sr=cfg.sample_rate,
            n_fft=cfg.n_fft,
            hop_length=cfg.hop_length,
            win_length=cfg.win_length,
            n_mels=cfg.n_mels,
            fmin=cfg.fmin,
            fmax=cfg.fmax,
            center=True,
            power=1.0,
        )
    return np.log(np.maximum(mel[:, :n_frames], cfg.log_mel_floor)).astype(np.float32)


def log_mel_distance(
    x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor, cfg: AudioConfig = AudioConfig()
) -> float:
    """Mean absolute difference of the log-mels of ``x`` and ``y`` (both ``(T,)``), over common frames."""
    mx, my = log_mel(x, cfg), log_mel(y, cfg)
    frames = min(mx.shape[1], my.shape[1])
    return float(np.abs(mx[:, :frames] - my[:, :frames]).mean())


def power_db(x: torch.Tensor | np.ndarray) -> float:
    """Mean power ``10 log10(mean x^2)`` in dB relative to a full-scale constant signal (x = 1)."""
    x = torch.as_tensor(x).detach().double()
    return 10.0 * math.log10(max(float(x.square().mean()), 1e-20))


def loudest_window(x: np.ndarray, n: int, hop: int) -> np.ndarray:
    """The hop-aligned window of ``n`` samples of ``x: (T,)`` with the most energy (skips leading silence)."""
    if len(x) <= n:
        return np.pad(x, (0, n - len(x)))
    energy = np.concatenate([[0.0], np.cumsum(x.astype(np.float64) ** 2)])
    starts = np.arange(0, len(x) - n + 1, hop)
    best = starts[np.argmax(energy[starts + n] - energy[starts])]
    return x[best : best + n]


MIN_LISTENING_SECONDS = 1.0  # shorter clips are too short to judge by ear (fast mode makes tiny ones)


def listen(x: np.ndarray | torch.Tensor, sample_rate: int, label: str = "clip"):
    """An ``IPython.display.Audio`` player at ``sample_rate`` (no normalisation) for clips of at least one second.

    Shorter clips get a printed note instead: fast mode generates a fraction of a second, which cannot be judged.
    """
    from IPython.display import Audio

    x = torch.as_tensor(x).detach().reshape(-1).cpu().numpy()
    seconds = len(x) / sample_rate
    if seconds < MIN_LISTENING_SECONDS:
        print(f"{label}: {seconds:.3f} s at {sample_rate} Hz, too short to listen to (full mode makes longer clips)")
        return None
    print(f"{label} ({sample_rate} Hz, {seconds:.2f} s):")
    return Audio(x, rate=sample_rate, normalize=False)


def compare_spectrograms(
    clips: dict[str, np.ndarray | torch.Tensor],
    sample_rate: int,
    metrics: dict[str, dict] | None = None,
    top_db: float = 80.0,
    n_fft: int = 1024,
    hop: int = 256,
):
    """Side-by-side spectrograms on one colour map and one dB scale, with a labelled colour bar.

    ``clips`` maps a system name to its audio ``(T,)`` (any shape holding T samples, numpy or torch);
    ``metrics`` optionally maps the same names to ``{metric: value}`` shown in each panel's title. The scale is
    dB re full scale (a full-scale sine peaks at 0 dB), from the loudest bin of all panels down ``top_db``; axes
    in s and Hz. Returns the matplotlib figure; call ``plt.show()`` after it.
    """
    import matplotlib.pyplot as plt

    clips = {name: torch.as_tensor(x).detach().reshape(-1).float().cpu().numpy() for name, x in clips.items()}
    window = np.hanning(n_fft)
    spectra = {
        name: 20
        * np.log10(
            np.maximum(
                np.abs(librosa.stft(x, n_fft=n_fft, hop_length=hop, window=window)) * 2 / window.sum(),
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


@functools.cache
def warm_up() -> None:
    """Run librosa's mel and resampling once so numba compiles before anything is timed."""
    x = np.zeros(4_096, dtype=np.float32)
    log_mel(x)
    librosa.resample(x, orig_sr=16_000, target_sr=22_050)


__all__ = [
    "AudioError",
    "MAX_SAMPLE_RATE",
    "MAX_SECONDS",
    "MIN_SAMPLE_RATE",
    "dequantize",
    "load_audio",
    "log_mel",
    "log_mel_distance",
    "loudest_window",
    "mulaw_decode",
    "mulaw_encode",
    "mulaw_noise",
    "power_db",
    "quantize",
    "save_audio",
    "warm_up",
]
