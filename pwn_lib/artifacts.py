"""Shipped artifacts: ``model.safetensors`` + ``config.json`` + ``metrics.json``, written atomically.

Every file goes through a temporary sibling and ``os.replace``, so a crash or a full disk
never leaves a half-written checkpoint or ratings file behind.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

WEIGHTS, CONFIG, METRICS = "model.safetensors", "config.json", "metrics.json"


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


def load_artifact(directory: Path) -> tuple[dict[str, torch.Tensor], dict, dict]:
    """Read what :func:`save_artifact` wrote; a clear error says which file is missing and why."""
    directory = Path(directory)
    missing = [name for name in (WEIGHTS, CONFIG) if not (directory / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{directory} is not a pwn_lib checkpoint: missing {missing}. Train one with "
            "`python -m pwn_lib.train teacher|student --out DIR` or point at data/checkpoints/<name>."
        )
    metrics_path = directory / METRICS
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    return load_file(str(directory / WEIGHTS)), json.loads((directory / CONFIG).read_text()), metrics
