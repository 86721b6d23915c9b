"""Every hyper-parameter of the course in one place: dataclasses plus named presets.

The presets are ``tiny`` (CI and fast mode), ``course`` (the shipped checkpoints, trained
on a 2-core CPU) and ``paper`` (van den Oord et al., 2017).

The one switch between fast and full mode is :func:`fast_mode`.

A recipe (``configs/*.yaml``) is read by :func:`read_recipe` and applied to a preset field by field by
:func:`from_dict`; both check it before any data is touched: unknown sections and keys, types and ranges are
errors (:class:`RecipeError`) that name the file, the section and the key.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import random
import re
import tempfile
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
import yaml

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
    # A conditioning network before the upsampler (layers.ConditionContext): cond_layers non-causal convs of
    # kernel 5 and cond_hidden channels over the log-mel frames, residual and starting as the identity; 0 is none.
    cond_layers: int = 0
    cond_hidden: int = 128
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
    # Train on these voices of pwn_lib.data.VOICES (en, es, fr, it, ru; speaker id = position) instead of the
    # English corpus alone; needs a model with n_speakers >= 5. None: the English corpus (every run before).
    voices: tuple[str, ...] | None = None
    # Teachers: std of the Gaussian noise added to the network's past in the mu-law domain (LPCNet's noise
    # injection; pwn_lib.wavenet.teacher_loss). 0: the plain likelihood (every run before).
    input_noise: float = 0.0


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
    # Paper, section 5 (configs/teacher_paper.yaml quotes it and tags each value with its source; the widths are
    # those of public reproductions, not found in the text read).
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


class RecipeError(ValueError):
    """A recipe or a flag that cannot be trained; the message names the file (or flag), the key and the fix."""


def _positive(v: Any) -> bool:
    return v > 0


def _non_negative(v: Any) -> bool:
    return v >= 0


def _fraction(v: Any) -> bool:
    return 0 <= v <= 1


def _decay(v: Any) -> bool:
    return 0 <= v < 1


# The allowed range of each field, by config class: (test, what the test says). None (an optional field left
# open) is always allowed. Model sizes are checked where the model is built.
RANGES: dict[type, dict[str, tuple[Callable[[Any], bool], str]]] = {
    TrainConfig: {
        "steps": (_positive, "> 0"),
        "stop_at": (_positive, "> 0"),
        "batch_size": (_positive, "> 0"),
        "window": (_positive, "> 0"),
        "lr": (_positive, "> 0"),
        "lr_warmup": (_non_negative, ">= 0"),
        "lr_decay_every": (_positive, "> 0"),
        "lr_schedule": (lambda v: v in ("step", "cosine"), "'step' or 'cosine'"),
        "lr_final": (_fraction, "in [0, 1]"),
        "grad_clip": (_positive, "> 0"),
        "ema_decay": (_decay, "in [0, 1)"),
        "grad_accum": (_positive, ">= 1"),
        "log_every": (_positive, "> 0"),
        "checkpoint_every": (_positive, "> 0"),
        "num_workers": (_non_negative, ">= 0"),
        "input_noise": (_non_negative, ">= 0"),
    },
    DistillLoss: {
        "n_draws": (_positive, ">= 1"),
        "power_weight": (_non_negative, ">= 0"),
        "stft_weight": (_non_negative, ">= 0"),
        "perceptual_weight": (_non_negative, ">= 0"),
        "gamma": (_non_negative, ">= 0"),
        "teacher_temperature": (_positive, "> 0"),
    },
    AudioConfig: {
        "sample_rate": (_positive, "> 0"),
        "n_fft": (_positive, "> 0"),
        "win_length": (_positive, "> 0"),
        "hop_length": (_positive, "> 0"),
        "n_mels": (_positive, "> 0"),
        "fmin": (_non_negative, ">= 0"),
        "fmax": (_positive, "> 0"),
        "bits": (lambda v: v in (8, 16), "8 or 16"),
        "log_mel_floor": (_positive, "> 0"),
    },
}


def _typed(value: Any, hint: Any, where: str) -> Any:
    """``value`` as the field type ``hint`` wants it (an int for a float, a list for a tuple), else a RecipeError.

    Strings are never converted: ``bf16: "false"`` is refused, not read as True.
    """
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _typed(value, option, where)
            except RecipeError as error:
                errors.append(str(error))
        raise RecipeError(errors[0] if len(errors) == 1 else f"{where} = {value!r} must be one of {args}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise RecipeError(f"{where} = {value!r} must be a list, e.g. [1, 2]")
        return tuple(_typed(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
    ok = {
        bool: lambda v: isinstance(v, bool),
        int: lambda v: isinstance(v, int) and not isinstance(v, bool),
        float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        str: lambda v: isinstance(v, str),
    }.get(hint)
    if ok is None:
        return value
    if not ok(value):
        raise RecipeError(f"{where} = {value!r} ({type(value).__name__}) must be a {hint.__name__}")
    if hint is float and not math.isfinite(value):
        raise RecipeError(f"{where} = {value!r} must be a finite number")
    return float(value) if hint is float else value


def from_dict(cls: type[C], values: dict[str, Any], where: str = "", base: C | None = None) -> C:
    """A config dataclass from ``values`` (e.g. :func:`to_dict` output or a recipe section), on top of ``base``.

    Unknown keys, wrong types and values outside :data:`RANGES` are :class:`RecipeError` s that begin with
    ``where`` (the file and section the values came from).
    """
    prefix = f"{where}: " if where else ""
    if not isinstance(values, dict):
        raise RecipeError(f"{prefix}expected a mapping of {cls.__name__} fields, got {values!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise RecipeError(f"{prefix}{cls.__name__} has no field(s) {unknown}; known fields: {sorted(names)}")
    fixed = {k: _typed(v, hints[k], f"{prefix}{k}") for k, v in values.items()}
    config = dataclasses.replace(base, **fixed) if base is not None else cls(**fixed)
    for name, (test, wanted) in RANGES.get(cls, {}).items():
        value = getattr(config, name)
        if value is not None and not test(value):
            raise RecipeError(f"{prefix}{name} = {value!r} must be {wanted}")
    if isinstance(config, (WaveNetConfig, StudentConfig)):
        try:
            check_model_config(config, where=where or "model")
        except ValueError as err:
            raise RecipeError(str(err)) from None
    return config


def at_least_one(text: str) -> int:
    """An argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not >= 1")
    return value


def at_least_zero(text: str) -> int:
    """An argparse type: an integer >= 0."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is not >= 0")
    return value


def positive_number(text: str) -> float:
    """An argparse type: a finite number > 0."""
    value = float(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{value} is not a finite number > 0")
    return value


def finite_number(text: str) -> float:
    """An argparse type: a finite number (e.g. a loudness in LUFS)."""
    value = float(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{value} is not a finite number")
    return value


# A recipe is a few dozen lines: anything far bigger is refused before it is parsed, and aliases (YAML's
# "billion laughs": a 453-byte file that expands to gigabytes) before they are expanded.
MAX_RECIPE_BYTES = 64 * 1024
MAX_RECIPE_NODES = 10_000
# YAML 1.2 floats without a dot (1e-3, 5E4): YAML 1.1, and so PyYAML, reads them as strings.
EXPONENT_FLOAT = re.compile(r"^[-+]?[0-9][0-9_]*(\.[0-9_]*)?[eE][-+]?[0-9]+$")


class _RecipeLoader(yaml.SafeLoader):
    """SafeLoader that refuses aliases, counts nodes and reads ``1e-3`` as a float."""

    nodes = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise RecipeError(
                f"{self.name}, line {event.start_mark.line + 1}: YAML aliases (*{event.anchor}) are not allowed "
                "in a recipe; write the value out"
            )
        self.nodes += 1
        if self.nodes > MAX_RECIPE_NODES:
            raise RecipeError(f"{self.name}: more than {MAX_RECIPE_NODES} YAML nodes; a recipe is a few dozen keys")
        return super().compose_node(parent, index)


_RecipeLoader.add_implicit_resolver("tag:yaml.org,2002:float", EXPONENT_FLOAT, list("-+0123456789"))


def read_recipe(path: Path | None, sections: Sequence[str]) -> dict[str, Any]:
    """The sections of the YAML recipe ``path`` ({} without one), each checked to be one of ``sections``.

    Refuses, naming the file: a missing file, one over :data:`MAX_RECIPE_BYTES`, a YAML syntax error, aliases,
    a top level that is not a mapping, and an unknown (e.g. misspelt) section. Reads no data.
    """
    if path is None:
        return {}
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"--config {path}: no such file; the course's recipes are in configs/")
    size = path.stat().st_size
    if size > MAX_RECIPE_BYTES:
        raise RecipeError(
            f"{path}: {size} bytes; a recipe is at most {MAX_RECIPE_BYTES} bytes (is this the right file?)"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise RecipeError(f"{path}: not UTF-8 text ({error}); a recipe is a YAML text file") from None
    loader = _RecipeLoader(text)
    loader.name = str(path)
    try:
        recipe = loader.get_single_data()
    except yaml.YAMLError as error:
        raise RecipeError(f"{path}: not valid YAML: {error}") from None
    finally:
        loader.dispose()
    recipe = {} if recipe is None else recipe
    if not isinstance(recipe, dict):
        raise RecipeError(f"{path}: a recipe is a mapping of sections ({', '.join(sections)}), not {recipe!r}")
    unknown = sorted(set(recipe) - set(sections))
    if unknown:
        raise RecipeError(f"{path}: unknown section(s) {unknown}; this kind of run reads only {list(sections)}")
    return recipe


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
    "RANGES",
    "REPO_ROOT",
    "RecipeError",
    "at_least_one",
    "at_least_zero",
    "finite_number",
    "positive_number",
    "STUDENT_PRESETS",
    "StudentConfig",
    "TEACHER_PRESETS",
    "TRAIN_PRESETS",
    "TrainConfig",
    "WaveNetConfig",
    "check_model_config",
    "default_device",
    "standardisation",
    "fast_mode",
    "from_dict",
    "pick",
    "preset",
    "read_recipe",
    "seed_everything",
    "to_dict",
]


# ---------------------------------------------------------------------------------------------
# Range checks of the model configs: what a recipe or a checkpoint's config.json may ask for
# ---------------------------------------------------------------------------------------------

_POSITIVE_SIZES = {
    WaveNetConfig: (
        "layers",
        "stacks",
        "residual_channels",
        "gate_channels",
        "skip_channels",
        "kernel_size",
        "n_mixtures",
        "bits",
        "hop_length",
        "speaker_dim",
        "cond_hidden",
    ),
    StudentConfig: ("channels", "kernel_size", "max_dilation", "hop_length", "speaker_dim"),
}
_COUNTS = ("cond_channels", "n_speakers")  # 0 switches the conditioning off
_CHOICES = {"output": ("mol", "gaussian", "mulaw"), "upsample": ("transpose", "repeat")}
_NUMBERS = ("log_scale_min", "previous_sample_weight")
MAX_HOP_LENGTH = 8_192  # samples per log-mel frame; the course uses 256, the paper preset 240


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_model_config(cfg: WaveNetConfig | StudentConfig, where: str = "model") -> None:
    """Refuse a teacher or student config no model can be built from, before anything is allocated.

    Sizes must be whole numbers >= 1 (``cond_channels`` and ``n_speakers`` >= 0), ``layers`` a multiple of
    ``stacks``, ``gate_channels`` even, ``hop_length`` at most ``MAX_HOP_LENGTH``, the choices known, the
    numbers finite, and the feature statistics (when set) a finite mean and a finite std > 0.
    Raises ValueError naming ``{where}.{key}``, the value and what it must be. How much memory a valid config
    asks for is the checkpoint loader's check (:func:`pwn_lib.artifacts.load_artifact`).
    """

    def refuse(key: str, want: str) -> None:
        raise ValueError(f"{where}.{key}={getattr(cfg, key)!r}: {want}")

    for key in _POSITIVE_SIZES[type(cfg)]:
        if not _whole(getattr(cfg, key)) or getattr(cfg, key) < 1:
            refuse(key, "must be a whole number >= 1")
    for key in _COUNTS:
        if not _whole(getattr(cfg, key)) or getattr(cfg, key) < 0:
            refuse(key, "must be a whole number >= 0 (0 switches it off)")
    for key, choices in _CHOICES.items():
        if hasattr(cfg, key) and getattr(cfg, key) not in choices:
            refuse(key, f"must be one of {choices}")
    for key in _NUMBERS:
        if hasattr(cfg, key) and not _finite(getattr(cfg, key)):
            refuse(key, "must be a finite number")
    if cfg.hop_length > MAX_HOP_LENGTH:
        refuse("hop_length", f"must be at most {MAX_HOP_LENGTH} samples per frame")
    if isinstance(cfg, WaveNetConfig):
        if cfg.layers % cfg.stacks:
            refuse("layers", f"must be a multiple of stacks={cfg.stacks}")
        if cfg.gate_channels % 2:
            refuse("gate_channels", "must be even (a filter half and a gate half)")
        if not _whole(cfg.cond_layers) or cfg.cond_layers < 0:
            refuse("cond_layers", "must be a whole number >= 0 (0: no conditioning network)")
    elif not (
        isinstance(cfg.flow_layers, tuple) and cfg.flow_layers and all(_whole(n) and n >= 1 for n in cfg.flow_layers)
    ):
        refuse("flow_layers", "must be a non-empty list of whole numbers >= 1, e.g. [10, 10, 10, 30]")
    if cfg.log_mel_mean is not None and not _finite(cfg.log_mel_mean):
        refuse("log_mel_mean", "must be a finite number; recompute it with pwn_lib.features")
    if cfg.log_mel_std is not None and not (_finite(cfg.log_mel_std) and cfg.log_mel_std > 0):
        refuse("log_mel_std", "must be a finite number > 0; recompute it with pwn_lib.features")
