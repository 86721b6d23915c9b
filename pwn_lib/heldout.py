"""Held-out measurements of trained models: the figures every metrics.json records and the tests recompute.

- :func:`teacher_nll_bits`: the teacher's teacher-forced NLL in bits per sample (paper, section 2; notebook 04).
- :func:`heldout_kl`: the student's KL(P_S || P_T) per sample (paper, section 4; notebook 06).
- :func:`synthesis_report`: log-mel distances of student and teacher audio to a real clip, and speed.
- :func:`resynthesis_phone_error_rate`: a machine listener's phone error rate of generated speech.

Every yardstick is fixed: the same held-out windows, clip and seeds on every call.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch

from pwn_lib.audio import log_mel, log_mel_distance, loudest_window
from pwn_lib.config import AudioConfig
from pwn_lib.data import AudioWindows, load_corpus, load_voices
from pwn_lib.distill import distillation_loss
from pwn_lib.phones import DEFAULT_CHECKPOINT as PHONES_CHECKPOINT
from pwn_lib.phones import Listener
from pwn_lib.student import IAFStudent
from pwn_lib.vocoders import Vocoder, crop_to_hops, hop_samples, mel_batch, render
from pwn_lib.wavenet import WaveNet

HELDOUT_SEED = 1234


def heldout_windows(
    audio: AudioConfig, window: int = 8_192, count: int = 16, split: str = "test", voice: str = "en"
) -> list[dict]:
    """A fixed list of held-out windows (same every call): the yardstick for NLL and KL.

    ``voice`` picks one of :data:`pwn_lib.data.VOICES` (English, the embedded corpus, by default); each window's
    ``"speaker"`` is that voice's id."""
    utterances = load_voices(split, [voice], sample_rate=audio.sample_rate)  # English: the embedded corpus
    dataset = AudioWindows(utterances, window, audio, seed=HELDOUT_SEED, length=count)
    return [dataset[i] for i in range(count)]


def _stack(items: list[dict], device: torch.device | str) -> dict[str, torch.Tensor]:
    return {key: torch.stack([item[key] for item in items]).to(device) for key in items[0]}


@torch.no_grad()
def teacher_nll_bits(teacher: WaveNet, windows: list[dict], batch_size: int = 4) -> float:
    """Mean teacher-forced NLL of ``windows`` in bits per sample (fp32, eval mode)."""
    device = next(teacher.parameters()).device
    teacher.eval()
    total, count = 0.0, 0
    for start in range(0, len(windows), batch_size):
        batch = _stack(windows[start : start + batch_size], device)
        speaker = batch["speaker"] if teacher.cfg.n_speakers else None  # each window's voice id
        nll = -teacher.log_prob(batch["audio"], batch["mel"], speaker).double()
        total, count = total + nll.sum().item(), count + nll.numel()
    return total / count / math.log(2)


def heldout_clip(audio: AudioConfig, seconds: float = 1.0, split: str = "test") -> tuple[torch.Tensor, torch.Tensor]:
    """The loudest ``seconds`` of the longest held-out utterance: (1, 1, T) audio and (1, n_mels, T // hop) mel."""
    utterance = max(load_corpus(split, sample_rate=audio.sample_rate), key=lambda u: (len(u.audio), u.id))
    n = hop_samples(seconds, audio)
    x = torch.from_numpy(loudest_window(utterance.audio, n, audio.hop_length)).float()
    mel = torch.from_numpy(log_mel(x.numpy(), audio))
    return x.view(1, 1, -1), mel.unsqueeze(0)


@torch.no_grad()
def resynthesis_phone_error_rate(
    teacher: WaveNet | Vocoder,
    audio: AudioConfig,
    count: int = 8,
    split: str = "test",
    classifier: Path = PHONES_CHECKPOINT,
) -> dict:
    """A machine listener's verdict: phone error rate of audio generated from held-out log-mels.

    The teacher renders (:func:`pwn_lib.vocoders.render`, seed 0) from the log-mels of the ``count`` shortest
    ``split`` utterances, each cropped to whole hops. The shipped phone classifier (trained on real speech)
    transcribes the generated audio, the real audio and white noise of the real audio's power, and
    each gets its phone error rate against the utterances' phone targets. Speech-like audio scores
    near the real figure; noise scores near 1.
    """
    utterances = sorted(load_corpus(split, sample_rate=audio.sample_rate), key=lambda u: (len(u.audio), u.id))[:count]
    real = [torch.from_numpy(crop_to_hops(u.audio, audio.hop_length)) for u in utterances]
    generated = render(teacher, mel_batch([x.numpy() for x in real], audio), seed=0).cpu()
    noise_gen = torch.Generator().manual_seed(HELDOUT_SEED)
    noise = [torch.randn(len(x), generator=noise_gen) * x.square().mean().sqrt() for x in real]
    listener = Listener(classifier)

    def error_rate(signals: list[torch.Tensor]) -> float:
        counts = [listener.errors(x.numpy(), u.id) for x, u in zip(signals, utterances, strict=True)]
        return sum(e for e, _ in counts) / sum(n for _, n in counts)

    return {
        "phone_error_rate_generated": error_rate([generated[i, 0, : len(x)] for i, x in enumerate(real)]),
        "phone_error_rate_real": error_rate(real),
        "phone_error_rate_white_noise": error_rate(noise),
        "phone_eval": f"{len(real)} shortest {split} utterances ({sum(map(len, real)) / audio.sample_rate:.2f} s), "
        f"classifier {classifier.name}",
    }


@torch.no_grad()
def heldout_kl(student: IAFStudent, teacher: WaveNet, windows: list[dict]) -> float:
    """Mean per-sample KL(P_S || P_T) on fixed held-out conditioning (fixed noise seed)."""
    device = next(student.parameters()).device
    batch = _stack(windows, device)
    speaker = batch["speaker"] if student.cfg.n_speakers else None  # each window's voice id
    terms = distillation_loss(
        student, teacher, batch["mel"], speaker, generator=torch.Generator(device).manual_seed(HELDOUT_SEED)
    )
    return terms["kl"].item()


@torch.no_grad()
def synthesis_report(
    student: IAFStudent | Vocoder, teacher: WaveNet | Vocoder, audio: AudioConfig, seconds: float = 1.0
) -> dict:
    """Log-mel distances of student and teacher audio (each rendered with seed 0) to the real clip, and the
    student's timesteps/s."""
    x, mel = heldout_clip(audio, seconds)
    started = time.perf_counter()
    student_audio = render(student, mel, seed=0).cpu()
    student_seconds = time.perf_counter() - started
    teacher_audio = render(teacher, mel, seed=0).cpu()
    real = x.view(-1)
    return {
        "logmel_distance_student_vs_real": log_mel_distance(student_audio.view(-1), real, audio),
        "logmel_distance_teacher_vs_real": log_mel_distance(teacher_audio.view(-1), real, audio),
        "student_timesteps_per_s": real.numel() / student_seconds,
        "sample_rate": audio.sample_rate,
    }


__all__ = [
    "HELDOUT_SEED",
    "heldout_clip",
    "heldout_kl",
    "heldout_windows",
    "resynthesis_phone_error_rate",
    "synthesis_report",
    "teacher_nll_bits",
]
