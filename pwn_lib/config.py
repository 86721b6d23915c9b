"""Every hyper-parameter of the course in one place: dataclasses plus named presets.

The presets are ``tiny`` (CI and fast mode), ``course`` (the shipped checkpoints, trained
on a 2-core CPU) and ``paper`` (van den Oord et al., 2017).

The one switch between fast and full mode is :func:`fast_mode`.
"""

from __future__ import annotations

import dataclasses
import os
import random
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("PWN_DATA", REPO_ROOT / "data"))
CHECKPOINT_DIR = DATA_DIR / "checkpoints"
# Where notebooks and quick experiments write their scratch runs: outside the repository, never in notebooks/.
SCRATCH_DIR = Path(os.environ.get("PWN_SCRATCH", Path(tempfile.gettempdir()) / "pwn_scratch"))

PRESET_NAMES = ("tiny", "course", "paper")


def fast_mode() -> bool:
    """True when the course should run in seconds: ``PWN_FAST=1``, or ``CI`` set and ``PWN_FAST`` unset.

    ``PWN_FAST=0`` forces full mode even under CI.
    """
    flag = os.environ.get("PWN_FAST")
    if flag is not None and flag.strip() != "":
        return flag.strip().lower() not in ("0", "false", "no", "off")
    return bool(os.environ.get("CI"))


def pick(fast: Any, full: Any) -> Any:
    """Return ``fast`` in fast mode and ``full`` otherwise: the one idiom notebooks use for sizes."""
    return fast if fast_mode() else full


def seed_everything(seed: int = 0) -> torch.Generator:
    """Seed Python, NumPy and torch; return a torch.Generator seeded the same way."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def default_device() -> torch.device:
    """CUDA if present, else CPU. The course never needs a GPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass(frozen=True)
class AudioConfig:
    """Signal-processing hparams shared by data loading, conditioning and losses.

    A window of N samples (N a multiple of ``hop_length``) carries exactly N // hop_length
    log-mel frames; frame k is centred on sample k * hop_length.
    """

    sample_rate: int = 16_000
    n_fft: int = 1024
    win_length: int = 1024
    hop_length: int = 256
    n_mels: int = 80
    fmin: float = 40.0
    fmax: float = 7_600.0
    bits: int = 16
    log_mel_floor: float = 1e-5


@dataclass
class WaveNetConfig:
    """The autoregressive teacher. Dilations cycle 1, 2, ..., 2**(layers // stacks - 1)."""

    layers: int = 30
    stacks: int = 3
    residual_channels: int = 64
    gate_channels: int = 128
    skip_channels: int = 64
    kernel_size: int = 3
    output: str = "mol"  # "mol" (discretized mixture of logistics), "gaussian" (ClariNet) or "mulaw"
    n_mixtures: int = 10
    bits: int = 16
    log_scale_min: float = -9.0
    # Location prior rho: the MoL means (or the Gaussian mean) are rho * x[t-1] + network output. A course
    # addition, not in the paper (rho = 0): it spares a small CPU-trained teacher the thousands of steps it would
    # spend learning to copy x[t-1]. rho < 1 keeps generation stationary: with rho = 1 an under-trained teacher's
    # samples can random-walk to +-1. No effect on mulaw. The measurements behind it are in the README's figures.
    previous_sample_weight: float = 0.95
    cond_channels: int = 80  # n_mels; 0 turns local conditioning off
    hop_length: int = 256
    upsample: str = "transpose"  # "transpose" (learned) or "repeat" (repeat, then conv)
    n_speakers: int = 0  # > 0 turns on global conditioning through a speaker embedding
    speaker_dim: int = 16
    # The conditioning is standardised with the training data's log-mel mean and std (pwn_lib.features);
    # None (a config not yet tied to data) leaves it unscaled. build_teacher and the command line fill them in.
    log_mel_mean: float | None = None
    log_mel_std: float | None = None


@dataclass
class StudentConfig:
    """The inverse-autoregressive-flow student: one WaveNet (no skip paths) per flow."""

    flow_layers: tuple[int, ...] = (10, 10, 10, 30)
    channels: int = 64
    kernel_size: int = 3
    max_dilation: int = 512
    cond_channels: int = 80
    hop_length: int = 256
    upsample: str = "transpose"
    n_speakers: int = 0
    speaker_dim: int = 16
    log_scale_min: float = -9.0
    log_mel_mean: float | None = None  # as in WaveNetConfig
    log_mel_std: float | None = None


def standardisation(cfg: WaveNetConfig | StudentConfig) -> tuple[float, float]:
    """``(mean, std)`` the model standardises its log-mel conditioning with; (0, 1) when the config has none."""
    if cfg.log_mel_mean is None or cfg.log_mel_std is None:
        return 0.0, 1.0
    return cfg.log_mel_mean, cfg.log_mel_std


@dataclass
class TrainConfig:
    """Optimisation, logging and checkpointing for any model trained by ``pwn_lib.train``."""

    steps: int = 10_000
    stop_at: int | None = None  # end the run at this step instead; the learning-rate schedule still spans `steps`
    batch_size: int = 8  # windows per micro-batch and process; the global batch is batch_size * grad_accum * ranks
    window: int = 4_096  # samples per training example; a multiple of hop_length
    lr: float = 1e-3
    lr_warmup: int = 200
    lr_decay_every: int = 20_000  # "step" schedule: halve the learning rate every this many steps
    lr_schedule: str = "step"  # "step" (halving) or "cosine" (from lr down to lr * lr_final over `steps`)
    lr_final: float = 0.05  # "cosine" only: the final learning rate as a fraction of lr
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    bf16: bool = False  # bf16 autocast (CPU and CUDA)
    fp16: bool = False  # fp16 autocast with a GradScaler (CUDA); excludes bf16
    tf32: bool = False  # TF32 matmuls and convolutions (CUDA, Ampere and later)
    compile: bool = False  # torch.compile the model's loss computation
    grad_accum: int = 1  # micro-batches of batch_size per optimiser step, per process
    seed: int = 0
    log_every: int = 50
    checkpoint_every: int = 500
    num_workers: int = 0


# The student's loss constants, each stated once. The paper's contrastive gamma (section 4.1) and the
# perceptual weight the ablation gives the Gram loss of the shipped phone classifier (~0.008 for an
# untrained student, against a power loss of 15-150 and a KL of ~3 nats/sample).
CONTRASTIVE_GAMMA = 0.3
PERCEPTUAL_WEIGHT = 100.0


@dataclass(frozen=True)
class DistillLoss:
    """The student's loss recipe: KL(P_S || P_T) plus weighted auxiliary terms (paper, section 4.1; notebook 07).

    ``n_draws`` is K, the logistic draws per step in the cross-entropy estimate. The power term is
    weighted so that it does not swamp the KL (~3 nats/sample) of an untrained student, whose power
    loss is 15-150. ``stft_weight`` adds the multi-resolution STFT loss (ClariNet, Parallel WaveGAN),
    ``perceptual_weight`` the phone classifier's Gram loss, and ``gamma > 0`` replaces the KL by the
    contrastive loss KL(P_S(c1) || P_T(c1)) - gamma KL(P_S(c1) || P_T(c2)). 0 switches a term off.
    ``teacher_temperature`` < 1 distils from the teacher as it is sampled at that temperature (each step's
    scales times it; :func:`pwn_lib.distill.teacher_log_density`); 1 is the paper's KL.
    """

    n_draws: int = 4
    power_weight: float = 0.1
    stft_weight: float = 0.0
    perceptual_weight: float = 0.0
    gamma: float = 0.0
    teacher_temperature: float = 1.0


TEACHER_PRESETS: dict[str, WaveNetConfig] = {
    "tiny": WaveNetConfig(layers=4, stacks=2, residual_channels=16, gate_channels=32, skip_channels=16, n_mixtures=3),
    # Sized for a 2-core CPU: receptive field 2,047 samples (128 ms).
    "course": WaveNetConfig(
        layers=10, stacks=1, residual_channels=32, gate_channels=64, skip_channels=64, n_mixtures=10
    ),
    # Paper, section 5 (configs/teacher_paper.yaml quotes it and marks what could not be checked against its text).
    "paper": WaveNetConfig(
        layers=30,
        stacks=3,
        residual_channels=512,
        gate_channels=512,
        skip_channels=256,
        n_mixtures=10,
        hop_length=240,
        previous_sample_weight=0.0,
    ),
}

STUDENT_PRESETS: dict[str, StudentConfig] = {
    "tiny": StudentConfig(flow_layers=(2, 2, 2, 2), channels=16, max_dilation=2),
    "course": StudentConfig(flow_layers=(6, 6, 6, 10), channels=32, max_dilation=32),
    "paper": StudentConfig(flow_layers=(10, 10, 10, 30), channels=64, max_dilation=512, hop_length=240),
}

TRAIN_PRESETS: dict[str, TrainConfig] = {
    "tiny": TrainConfig(steps=10, batch_size=2, window=1_024, log_every=5, checkpoint_every=5, lr_warmup=0),
    "course": TrainConfig(steps=20_000, batch_size=4, window=4_096, lr=3e-4, checkpoint_every=250),
    # Paper, section 5: Adam for 1,000,000 steps on 32 clips of 7,680 samples, a constant 2e-4, Polyak averaging.
    "paper": TrainConfig(
        steps=1_000_000, batch_size=32, window=7_680, lr=2e-4, lr_warmup=0, lr_decay_every=1_000_000, ema_decay=0.9999
    ),
}

AUDIO_PRESETS: dict[str, AudioConfig] = {
    "tiny": AudioConfig(),
    "course": AudioConfig(),
    # The paper's 24 kHz speech; hop 240 (10 ms frames) puts a whole 32 frames in the paper's 7,680-sample clips.
    "paper": AudioConfig(sample_rate=24_000, n_fft=1200, win_length=1200, hop_length=240, fmax=12_000.0),
}

C = TypeVar("C")


def preset(table: dict[str, C], name: str, **overrides: Any) -> C:
    """Return a copy of ``table[name]`` with ``overrides`` applied; a clear error for unknown names."""
    if name not in table:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(table)}")
    return dataclasses.replace(table[name], **overrides)


def to_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready dict of a config dataclass (tuples become lists)."""
    return dataclasses.asdict(config)


def from_dict(cls: type[C], values: dict[str, Any]) -> C:
    """Rebuild a config dataclass from :func:`to_dict` output, refusing unknown keys by name."""
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ValueError(f"{cls.__name__} has no field(s) {unknown}; known fields: {sorted(names)}")
    fixed = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    return cls(**fixed)


__all__ = [
    "AUDIO_PRESETS",
    "AudioConfig",
    "CHECKPOINT_DIR",
    "SCRATCH_DIR",
    "CONTRASTIVE_GAMMA",
    "DATA_DIR",
    "DistillLoss",
    "PERCEPTUAL_WEIGHT",
    "PRESET_NAMES",
    "REPO_ROOT",
    "STUDENT_PRESETS",
    "StudentConfig",
    "TEACHER_PRESETS",
    "TRAIN_PRESETS",
    "TrainConfig",
    "WaveNetConfig",
    "default_device",
    "standardisation",
    "fast_mode",
    "from_dict",
    "pick",
    "preset",
    "seed_everything",
    "to_dict",
]
