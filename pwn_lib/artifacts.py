"""Shipped artifacts: ``model.safetensors`` + ``config.json`` + ``metrics.json``, written atomically.

Every file goes through a temporary sibling and ``os.replace``, so a crash or a full disk
never leaves a half-written checkpoint or ratings file behind.

A training checkpoint is several files (the artifact and the resume state), and a process killed between
two of them must not leave a mix of two steps. :func:`commit_checkpoint` therefore writes all of them into
a fresh directory ``ckpt-<step>-<n>``, renames it into place, and only then swaps the one-line pointer file
``LATEST`` (atomically, with ``os.replace``); older checkpoint directories are deleted after the swap.
Whatever moment a SIGKILL hits, ``LATEST`` names a complete checkpoint (notebook 08).

Loading refuses, with a :class:`CheckpointError` naming the file and key, what would load wrong or hang: a
``LATEST`` naming anything but a ``ckpt-*`` folder of its own run, cut or corrupt JSON, a model config out of
range (:func:`pwn_lib.config.check_model_config`) or larger than the machine's memory allows or than its weights
hold (estimated from the config before any model is built), and NaN or infinite weights.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import resource
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

WEIGHTS, CONFIG, METRICS = "model.safetensors", "config.json", "metrics.json"
POINTER, CHECKPOINT_PREFIX = "LATEST", "ckpt-"

# Checkpoints saved before the audio settings and the feature statistics travelled with them (their
# config.json has only kind/model/train) were trained on 16 kHz course audio standardised with these.
LEGACY_LOG_MEL_STATS = {"log_mel_mean": -5.09, "log_mel_std": 2.32}

# A loaded model holds its float32 weights twice for a moment (the state dict and the module), plus about 13 KB
# of Python objects per residual block (measured); it may take at most this fraction of the available memory.
MEMORY_FRACTION = 0.5
BYTES_PER_LAYER = 16_384
# A config may describe at most this many times the parameters its weights file holds (plus a small margin).
WEIGHTS_SLACK = 2


class CheckpointError(ValueError):
    """A checkpoint that would load wrong or not at all; the message names the file, the key and what to do."""


def _atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Write ``path`` through a temporary sibling and a rename, so a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: Path, data: Any) -> None:
    """Atomically write ``data`` as indented JSON."""
    _atomic(Path(path), lambda tmp: tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n"))


def write_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """Atomically write a flat dict of tensors as safetensors (contiguous CPU copies)."""
    cpu = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    _atomic(Path(path), lambda tmp: save_file(cpu, str(tmp)))


def save_artifact(directory: Path, state: dict[str, torch.Tensor], config: dict, metrics: dict) -> Path:
    """Ship a model: ``model.safetensors`` + ``config.json`` + ``metrics.json`` in ``directory``."""
    directory = Path(directory)
    write_tensors(directory / WEIGHTS, state)
    write_json(directory / CONFIG, config)
    write_json(directory / METRICS, metrics)
    return directory


def latest_checkpoint(directory: Path) -> Path | None:
    """The complete checkpoint that ``directory/LATEST`` names, or None when there is no pointer.

    LATEST may only name a ``ckpt-*`` folder directly inside ``directory`` (no path, no link out of it)."""
    directory = Path(directory)
    pointer = directory / POINTER
    if not pointer.is_file():
        return None
    name = pointer.read_text(errors="replace").strip()
    target = directory / name
    if (
        Path(name).name != name
        or not name.startswith(CHECKPOINT_PREFIX)
        or target.resolve().parent != directory.resolve()
    ):
        raise CheckpointError(
            f"{pointer} names {name!r}, which is not a {CHECKPOINT_PREFIX}* folder inside {directory}; LATEST may "
            "only name a checkpoint of its own run. Delete LATEST to load the run's flat files, or write the name "
            f"of one of its {CHECKPOINT_PREFIX}* folders into it"
        )
    if not target.is_dir():
        raise FileNotFoundError(
            f"{pointer} names {target.name}, which does not exist; the run directory was edited "
            "by hand; delete LATEST to start from the flat files"
        )
    return target


def commit_checkpoint(directory: Path, step: int, write: Callable[[Path], None]) -> Path:
    """Write a multi-file checkpoint with ``write(fresh_dir)``, then make it the one ``LATEST`` names.

    Order: write into ``.ckpt-tmp-<pid>``, rename it to ``ckpt-<step>-<n>``, swap ``LATEST`` with
    ``os.replace``, delete every other checkpoint directory, then hard-link the artifact's three files
    into ``directory`` itself for the tools that read a flat checkpoint. A kill before the swap leaves the
    previous checkpoint current; a kill after it leaves the new one current. Returns the new checkpoint.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".{CHECKPOINT_PREFIX}tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    write(tmp)
    final = next(
        directory / f"{CHECKPOINT_PREFIX}{step:08d}-{n}"
        for n in itertools.count()
        if not (directory / f"{CHECKPOINT_PREFIX}{step:08d}-{n}").exists()
    )
    os.rename(tmp, final)
    _atomic(directory / POINTER, lambda t: t.write_text(final.name + "\n"))
    for old in directory.iterdir():
        if old.is_dir() and old.name.lstrip(".").startswith(CHECKPOINT_PREFIX) and old != final:
            shutil.rmtree(old, ignore_errors=True)
    publish(final, directory)
    return final


def publish(checkpoint: Path, directory: Path) -> None:
    """Hard-link (or copy) a checkpoint's artifact files into ``directory``, each replaced atomically."""
    for name in (WEIGHTS, CONFIG, METRICS):
        source, tmp = checkpoint / name, directory / f".{name}.link-{os.getpid()}"
        if not source.is_file():
            continue
        tmp.unlink(missing_ok=True)
        try:
            os.link(source, tmp)
        except OSError:  # another file system, or one without hard links
            shutil.copy2(source, tmp)
        os.replace(tmp, directory / name)


def load_artifact(directory: Path) -> tuple[dict[str, torch.Tensor], dict, dict]:
    """Read what :func:`save_artifact` wrote (in a training run, the checkpoint ``LATEST`` names); a clear
    error says which file is missing or wrong and why (:class:`CheckpointError`)."""
    directory = latest_checkpoint(directory) or Path(directory)
    missing = [name for name in (WEIGHTS, CONFIG) if not (directory / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{directory} is not a pwn_lib checkpoint: missing {missing}. Train one with "
            "`python -m pwn_lib.train teacher|student --out DIR` or point at data/checkpoints/<name>."
        )
    config = _read_json(directory / CONFIG)
    metrics = _read_json(directory / METRICS) if (directory / METRICS).is_file() else {}
    model = _checked_model_config(config, directory / CONFIG)
    if model is not None:
        _check_size(model, directory / CONFIG, directory / WEIGHTS)
    return _read_weights(directory / WEIGHTS), config, metrics


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except ValueError as err:  # JSONDecodeError, UnicodeDecodeError
        raise CheckpointError(
            f"{path}: not valid JSON ({err}); the file is cut or corrupt. Restore it from the run's other "
            "checkpoint or a backup, or point at data/checkpoints/<name>"
        ) from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: holds a JSON {type(data).__name__}, not an object; restore the file")
    return data


def _checked_model_config(config: dict, path: Path) -> Any:
    """The teacher's or student's model config of ``config.json`` (None for other kinds), range-checked."""
    from pwn_lib.config import StudentConfig, WaveNetConfig, check_model_config, from_dict

    cls = {"teacher": WaveNetConfig, "student": StudentConfig}.get(config.get("kind"))
    if cls is None:
        return None
    if not isinstance(config.get("model"), dict):
        raise CheckpointError(f"{path}: 'model' is missing or not an object; restore the file")
    try:
        model = from_dict(cls, model_section(config))
        check_model_config(model, where="model")
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: {err}. Fix the value, or restore the file") from None
    return model


def available_memory() -> int:
    """Bytes this process may still allocate: the kernel's MemAvailable, or less under an address-space limit."""
    try:
        meminfo = Path("/proc/meminfo").read_text()
        available = next(
            int(line.split()[1]) * 1024 for line in meminfo.splitlines() if line.startswith("MemAvailable")
        )
    except (OSError, StopIteration, ValueError):
        available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    limit = resource.getrlimit(resource.RLIMIT_AS)[0]
    return available if limit == resource.RLIM_INFINITY else min(available, limit)


def estimated_parameters(model: Any) -> int:
    """Parameters of the teacher (WaveNetConfig) or student (StudentConfig) ``model`` describes, counted from the
    config alone, without building anything: the residual blocks, the input and output layers, the conditioning
    upsampler and the speaker table."""
    from pwn_lib.config import WaveNetConfig
    from pwn_lib.distributions import output_channels
    from pwn_lib.layers import stride_factors

    cond, speaker = model.cond_channels, model.speaker_dim if model.n_speakers else 0
    taps = 3 if model.upsample == "repeat" else sum(2 * s for s in stride_factors(model.hop_length))
    shared = (cond * cond * taps if cond else 0) + model.n_speakers * speaker

    def network(layers: int, residual: int, gate: int, skip: int, outputs: int) -> int:
        block = (
            model.kernel_size * residual * gate + gate + (cond + speaker) * gate + (gate // 2 + 1) * (residual + skip)
        )
        head = skip or residual
        return 2 * residual + layers * block + (head + 1) * head + (head + 1) * outputs

    if isinstance(model, WaveNetConfig):
        outputs = output_channels(model)
        return shared + network(
            model.layers, model.residual_channels, model.gate_channels, model.skip_channels, outputs
        )
    return shared + sum(network(n, model.channels, 2 * model.channels, 0, 2) for n in model.flow_layers)


def _size_culprit(model: Any) -> str:
    """The size key whose value, set back to the course preset's, shrinks the estimate most: ``key=value``."""
    import dataclasses

    from pwn_lib.config import STUDENT_PRESETS, TEACHER_PRESETS, WaveNetConfig

    course = (TEACHER_PRESETS if isinstance(model, WaveNetConfig) else STUDENT_PRESETS)["course"]
    keys = [f.name for f in dataclasses.fields(model) if isinstance(getattr(course, f.name), (int, tuple))]
    key = min(keys, key=lambda k: estimated_parameters(dataclasses.replace(model, **{k: getattr(course, k)})))
    return f"model.{key}={getattr(model, key)!r}"


def _check_size(model: Any, config_path: Path, weights_path: Path) -> None:
    """Refuse a config whose model would not fit in memory, or that asks for far more than its weights hold."""
    from pwn_lib.config import WaveNetConfig

    try:
        parameters = estimated_parameters(model)
    except ValueError as err:  # a hop_length the upsampler cannot split into strides
        raise CheckpointError(f"{config_path}: {err}") from None
    layers = model.layers if isinstance(model, WaveNetConfig) else sum(model.flow_layers)
    need, have = 8 * parameters + BYTES_PER_LAYER * layers, available_memory()
    if need > MEMORY_FRACTION * have:
        raise CheckpointError(
            f"{config_path}: the model it describes ({parameters:,} parameters in {layers:,} layers) needs about "
            f"{need / 1e9:,.1f} GB, more than {MEMORY_FRACTION:.0%} of the {have / 1e9:.1f} GB available; "
            f"{_size_culprit(model)} is the largest size. Fix the value, or restore the file"
        )
    stored = _stored_parameters(weights_path)
    if parameters > WEIGHTS_SLACK * stored + 1_000:
        raise CheckpointError(
            f"{config_path}: describes a model of {parameters:,} parameters but {weights_path.name} holds {stored:,}; "
            f"{_size_culprit(model)} is the largest size. The config and the weights do not belong together: "
            "restore the config.json saved with these weights"
        )


def _stored_parameters(path: Path) -> int:
    """The number of values in a safetensors file, from its header alone."""
    try:
        with safe_open(str(path), "pt") as f:
            return sum(math.prod(f.get_slice(name).get_shape()) for name in f.keys())
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors file ({err}); restore it") from None


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    """The weights, refused when unreadable or when any floating-point tensor holds NaN or infinity."""
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors file ({err}); restore it") from None
    bad = sorted(k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all())
    if bad:
        raise CheckpointError(
            f"{path}: {len(bad)} tensor(s) hold NaN or infinite values, e.g. {bad[:3]}; the training run diverged "
            "before it was saved. Load an earlier checkpoint, or train again with a lower learning rate"
        )
    return state


def checkpoint_config(kind: str, model: Any, audio: Any, train: Any | None = None, **extra: Any) -> dict:
    """The ``config.json`` of a checkpoint: its kind, model config, AudioConfig and (if trained) TrainConfig."""
    from pwn_lib.config import to_dict

    config = {"kind": kind, "model": to_dict(model), "audio": to_dict(audio), **extra}
    if train is not None:
        config["train"] = to_dict(train)
    return config


def model_section(config: dict) -> dict:
    """``config["model"]``, with the legacy feature statistics filled in where an older checkpoint lacks them."""
    model = dict(config["model"])
    if model.get("cond_channels") and model.get("log_mel_mean") is None:
        model.update(LEGACY_LOG_MEL_STATS)
    return model


def audio_section(config: dict) -> Any:
    """The checkpoint's AudioConfig; an older checkpoint without one was trained on the course's 16 kHz audio."""
    from pwn_lib.config import AUDIO_PRESETS, AudioConfig, from_dict

    return from_dict(AudioConfig, config["audio"]) if "audio" in config else AUDIO_PRESETS["course"]


class Checkpointed:
    """``from_checkpoint`` and ``save`` for a model class built from one config dataclass (teacher, student).

    Subclasses set ``checkpoint_kind`` (the ``kind`` in config.json) and ``config_class``; the model keeps its
    config in ``self.cfg`` and, once loaded, its AudioConfig in ``self.audio``.
    """

    checkpoint_kind: str
    config_class: type

    @classmethod
    def from_checkpoint(cls, directory: Path, device: torch.device | str = "cpu") -> Any:
        """A shipped or trained model (its EMA weights) in eval mode; ``.audio`` is its AudioConfig."""
        from pwn_lib.config import from_dict

        state, config, _ = load_artifact(directory)
        model = cls(from_dict(cls.config_class, model_section(config)))
        model.load_state_dict(state)
        model.audio = audio_section(config)
        return model.to(device).eval()

    def save(self, directory: Path, metrics: dict | None = None, audio: Any | None = None) -> Path:
        """Write the model as a checkpoint that :meth:`from_checkpoint` reads."""
        from pwn_lib.config import AUDIO_PRESETS

        audio = audio or getattr(self, "audio", AUDIO_PRESETS["course"])
        return save_artifact(
            directory, self.state_dict(), checkpoint_config(self.checkpoint_kind, self.cfg, audio), metrics or {}
        )
