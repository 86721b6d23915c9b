"""Shipped artifacts: ``model.safetensors`` + ``config.json`` + ``metrics.json``, written atomically.

Every file goes through a temporary sibling and ``os.replace``, so a crash or a full disk
never leaves a half-written checkpoint or ratings file behind.

A training checkpoint is several files (the artifact and the resume state), and a process killed between
two of them must not leave a mix of two steps. :func:`commit_checkpoint` therefore writes all of them into
a fresh directory ``ckpt-<step>-<n>``, renames it into place, and only then swaps the one-line pointer file
``LATEST`` (atomically, with ``os.replace``); older checkpoint directories are deleted after the swap.
Whatever moment a SIGKILL hits, ``LATEST`` names a complete checkpoint (notebook 08).
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

WEIGHTS, CONFIG, METRICS = "model.safetensors", "config.json", "metrics.json"
POINTER, CHECKPOINT_PREFIX = "LATEST", "ckpt-"


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
    """The complete checkpoint that ``directory/LATEST`` names, or None when there is no pointer."""
    pointer = Path(directory) / POINTER
    if not pointer.is_file():
        return None
    target = Path(directory) / pointer.read_text().strip()
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
    error says which file is missing and why."""
    directory = latest_checkpoint(directory) or Path(directory)
    missing = [name for name in (WEIGHTS, CONFIG) if not (directory / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{directory} is not a pwn_lib checkpoint: missing {missing}. Train one with "
            "`python -m pwn_lib.train teacher|student --out DIR` or point at data/checkpoints/<name>."
        )
    metrics_path = directory / METRICS
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    return load_file(str(directory / WEIGHTS)), json.loads((directory / CONFIG).read_text()), metrics


def read_config(directory: Path) -> dict:
    """A checkpoint's ``config.json`` alone, without its weights (in a run folder, the checkpoint LATEST names)."""
    path = (latest_checkpoint(directory) or Path(directory)) / CONFIG
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: missing, so {directory} is not a pwn_lib checkpoint; point at data/checkpoints/<name>"
        )
    return json.loads(path.read_text())


def checkpoint_config(kind: str, model: Any, audio: Any, train: Any | None = None, **extra: Any) -> dict:
    """The ``config.json`` of a checkpoint: its kind, model config, AudioConfig and (if trained) TrainConfig."""
    from pwn_lib.config import to_dict

    config = {"kind": kind, "model": to_dict(model), "audio": to_dict(audio), **extra}
    if train is not None:
        config["train"] = to_dict(train)
    return config


def config_section(config: dict, name: str, directory: Path) -> dict:
    """``config[name]`` of the checkpoint in ``directory``; a clear error when its config.json lacks the section."""
    if name not in config:
        raise KeyError(
            f"{Path(directory) / CONFIG} has no {name!r} section (it has {sorted(config)}); it was not written by "
            "this version of pwn_lib: retrain it, or add the section as save_artifact writes it"
        )
    return config[name]


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
        from pwn_lib.config import AudioConfig, from_dict

        state, config, _ = load_artifact(directory)
        where = Path(directory) / CONFIG
        model = cls(from_dict(cls.config_class, config_section(config, "model", directory), f"{where}: model"))
        model.load_state_dict(state)
        model.audio = from_dict(AudioConfig, config_section(config, "audio", directory), f"{where}: audio")
        return model.to(device).eval()

    def save(self, directory: Path, metrics: dict | None = None, audio: Any | None = None) -> Path:
        """Write the model as a checkpoint that :meth:`from_checkpoint` reads."""
        from pwn_lib.config import AUDIO_PRESETS

        audio = audio or getattr(self, "audio", AUDIO_PRESETS["course"])
        return save_artifact(
            directory, self.state_dict(), checkpoint_config(self.checkpoint_kind, self.cfg, audio), metrics or {}
        )
