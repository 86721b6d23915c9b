"""How big a model a config describes, counted from the config alone, and whether a checkpoint's model fits.

A checkpoint's ``config.json`` could ask for ``residual_channels: 1000000000`` or ``layers: 1000000``: building
that model would exhaust the machine or hang before any check. :func:`check_fits` refuses such a config before
anything is built (:meth:`pwn_lib.artifacts.Checkpointed.from_checkpoint` calls it through the models'
``check_fits``), naming the size key that matters most.
"""

from __future__ import annotations

import dataclasses
import math
import os
import resource
from pathlib import Path
from typing import Any

from safetensors import SafetensorError, safe_open

from pwn_lib.artifacts import CheckpointError
from pwn_lib.config import STUDENT_PRESETS, TEACHER_PRESETS, WaveNetConfig
from pwn_lib.distributions import output_channels
from pwn_lib.layers import stride_factors

# A loaded model holds its float32 weights twice for a moment (the state dict and the module), plus about 13 KB
# of Python objects per residual block (measured); it may take at most this fraction of the available memory.
MEMORY_FRACTION = 0.5
BYTES_PER_LAYER = 16_384
# A config may describe at most this many times the parameters its weights file holds (plus a small margin).
WEIGHTS_SLACK = 2
# Training holds float32 weights, gradients, two Adam moments, the EMA and a copy while saving.
TRAINING_BYTES_PER_PARAMETER = 24


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
        if cond and model.cond_layers:  # layers.ConditionContext: kernel-5 convs, then a 1x1 back to the mels
            hidden = model.cond_hidden
            shared += (5 * cond + 1) * hidden + (model.cond_layers - 1) * (5 * hidden + 1) * hidden
            shared += (hidden + 1) * cond
        return shared + network(
            model.layers, model.residual_channels, model.gate_channels, model.skip_channels, outputs
        )
    return shared + sum(network(n, model.channels, 2 * model.channels, 0, 2) for n in model.flow_layers)


def activation_floats(model: Any) -> int:
    """Floats one training sample (one time step of one window) keeps for the backward pass, counted from the
    config: per residual block its input, the dilated convolution's output, the two gate halves, their product,
    and the residual and skip outputs. A lower bound (the output layer, the loss and autograd's temporaries come
    on top); the student counts each flow's blocks."""
    if isinstance(model, WaveNetConfig):
        residual, gate, skip = model.residual_channels, model.gate_channels, model.skip_channels
        return model.layers * (2 * residual + 2 * gate + skip) + output_channels(model)
    return sum(model.flow_layers) * (2 * model.channels + 4 * model.channels) + 2 * len(model.flow_layers)


def check_training_memory(model: Any, batch_size: int, window: int, where: str) -> None:
    """Refuse a training recipe whose weights, optimiser state and activations (:func:`activation_floats` for
    ``batch_size`` windows of ``window`` samples, float32) need more than :data:`MEMORY_FRACTION` of the available
    memory. Raises ValueError beginning with ``where`` and naming the sizes to lower."""
    weights = TRAINING_BYTES_PER_PARAMETER * estimated_parameters(model)
    activations = 4 * activation_floats(model) * batch_size * window
    have = available_memory()
    if weights + activations > MEMORY_FRACTION * have:
        raise ValueError(
            f"{where}: training needs at least {(weights + activations) / 1e9:,.1f} GB ({activations / 1e9:,.1f} GB "
            f"of activations for train.batch_size={batch_size} windows of train.window={window} samples, "
            f"{weights / 1e9:,.1f} GB of weights and optimiser state), more than {MEMORY_FRACTION:.0%} of the "
            f"{have / 1e9:.1f} GB available; lower train.batch_size (raising train.grad_accum keeps the global "
            "batch) or train.window"
        )


def _size_culprit(model: Any) -> str:
    """The size key whose value, set back to the course preset's, shrinks the estimate most: ``key=value``."""

    course = (TEACHER_PRESETS if isinstance(model, WaveNetConfig) else STUDENT_PRESETS)["course"]
    keys = [f.name for f in dataclasses.fields(model) if isinstance(getattr(course, f.name), (int, tuple))]
    key = min(keys, key=lambda k: estimated_parameters(dataclasses.replace(model, **{k: getattr(course, k)})))
    return f"model.{key}={getattr(model, key)!r}"


def check_memory(model: Any, where: str, bytes_per_parameter: int = 8, fix: str = "Fix the value") -> None:
    """Refuse a config whose model needs more than :data:`MEMORY_FRACTION` of the available memory, counting
    ``bytes_per_parameter`` (8 to load: the state dict and the module; :data:`TRAINING_BYTES_PER_PARAMETER` to
    train) and :data:`BYTES_PER_LAYER`. Raises ValueError beginning with ``where`` and naming the largest size key."""
    parameters = estimated_parameters(model)
    layers = model.layers if isinstance(model, WaveNetConfig) else sum(model.flow_layers)
    need, have = bytes_per_parameter * parameters + BYTES_PER_LAYER * layers, available_memory()
    if need > MEMORY_FRACTION * have:
        raise ValueError(
            f"{where}: the model it describes ({parameters:,} parameters in {layers:,} layers) needs about "
            f"{need / 1e9:,.1f} GB, more than {MEMORY_FRACTION:.0%} of the {have / 1e9:.1f} GB available; "
            f"{_size_culprit(model)} is the largest size. {fix}"
        )


def check_fits(model: Any, config_path: Path, weights_path: Path) -> None:
    """Refuse a config whose model would not fit in memory, or that asks for far more than its weights hold."""

    try:
        check_memory(model, str(config_path), fix="Fix the value, or restore the file")
        parameters = estimated_parameters(model)
    except ValueError as err:  # too large, or a hop_length the upsampler cannot split into strides
        message = str(err)
        raise CheckpointError(
            message if message.startswith(str(config_path)) else f"{config_path}: {message}"
        ) from None
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


__all__ = [
    "TRAINING_BYTES_PER_PARAMETER",
    "activation_floats",
    "available_memory",
    "check_fits",
    "check_memory",
    "check_training_memory",
    "estimated_parameters",
]
