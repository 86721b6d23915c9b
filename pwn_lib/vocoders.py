"""From a checkpoint to audio: the one place where a teacher or student is loaded and renders a log-mel.

- :func:`load` reads any shipped or trained checkpoint directory; its ``config.json`` decides the class
  (``kind: teacher`` is a :class:`~pwn_lib.wavenet.WaveNet`, ``kind: student`` an
  :class:`~pwn_lib.student.IAFStudent`) and records the teacher's sampling temperature (``sampling.temperature``).
- :func:`render` turns ``(B, n_mels, F)`` log-mels into ``(B, 1, F * hop)`` audio with a seed. The teacher samples
  at its recorded temperature with the compiled C loop (``WaveNet.generate(compiled=True)``) on one torch thread;
  the student takes its fused synthesis path (``IAFStudent.for_synthesis``). Where a fast path does not apply
  (a float64 or GPU model, an output other than "mol", the C library not built) the reference path runs instead.
- :func:`render_clips` renders a list of clips, in batches, each from its own log-mel; :func:`crop_to_hops` cuts a
  clip to whole hops, so that its log-mel conditions every sample.

``python -m pwn_lib.evaluate``, the listening test, the ablation, the held-out figures of a training run and the
notebooks all render through here, so a change of sampler or speed path reaches every one of them at once.
"""

from __future__ import annotations

import json
import math
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from pwn_lib import _fast
from pwn_lib.artifacts import CONFIG, read_config
from pwn_lib.audio import log_mel
from pwn_lib.config import AUDIO_PRESETS, AudioConfig
from pwn_lib.student import IAFStudent
from pwn_lib.wavenet import WaveNet

KINDS: dict[str, type[nn.Module]] = {"teacher": WaveNet, "student": IAFStudent}
TEACHER_THREADS = 1  # cached generation is a chain of tiny matmuls: measured 10x slower on 2 threads than on 1


@dataclass
class Vocoder:
    """A teacher or student ready to render: its model, ``kind``, row ``name`` and where it was loaded from.

    ``sampling`` holds the teacher's sampling options, today only ``temperature`` (each chosen logistic's scale
    times it); empty means the model's own distribution (temperature 1.0).
    """

    model: nn.Module
    kind: str
    name: str
    path: Path | None = None
    audio: AudioConfig = field(default_factory=lambda: AUDIO_PRESETS["course"])
    sampling: dict = field(default_factory=dict)

    @property
    def temperature(self) -> float:
        """The sampling temperature the teacher renders at: ``sampling["temperature"]``, 1.0 when none is set."""
        return float(self.sampling.get("temperature", 1.0))


def kind_of(model: nn.Module) -> str:
    """``"teacher"`` or ``"student"`` for a model object, by its class."""
    for kind, cls in KINDS.items():
        if isinstance(model, cls):
            return kind
    raise TypeError(f"{type(model).__name__} does not render audio; pass a WaveNet (teacher) or an IAFStudent")


def as_vocoder(model: nn.Module | Vocoder, name: str | None = None) -> Vocoder:
    """A model object (e.g. one being trained) as a :class:`Vocoder` that samples its own distribution.

    A :class:`Vocoder` is returned as it is (``name`` is then ignored: it already has one).
    """
    if isinstance(model, Vocoder):
        return model
    kind = kind_of(model)
    return Vocoder(model=model, kind=kind, name=name or kind, audio=getattr(model, "audio", AUDIO_PRESETS["course"]))


def checkpoint_kind(directory: Path) -> str:
    """The ``kind`` that ``directory/config.json`` records, with a clear error when it is not a checkpoint."""
    config = Path(directory) / CONFIG
    if not config.is_file():
        raise FileNotFoundError(
            f"{directory} is not a checkpoint directory (no {CONFIG}); pass e.g. data/checkpoints/teacher_course, "
            "or train one with `python -m pwn_lib.train teacher|student --out DIR`"
        )
    return json.loads(config.read_text()).get("kind", "?")


def load(
    directory: Path | str, name: str | None = None, device: torch.device | str = "cpu", temperature: float | None = None
) -> Vocoder:
    """Load a teacher or student checkpoint directory; its config.json's ``kind`` picks the class.

    A teacher samples at the temperature its config.json records under ``sampling`` (1.0 if none), unless
    ``temperature`` overrides it. A student has no sampling options.
    """
    directory = Path(directory)
    kind = checkpoint_kind(directory)
    if kind not in KINDS:
        raise ValueError(
            f"{directory}/{CONFIG} has kind {kind!r}; only {sorted(KINDS)} checkpoints render audio "
            "(the phone classifier listens, it does not speak)"
        )
    config = read_config(directory)
    sampling = dict(config.get("sampling", {}))
    if set(sampling) - {"temperature"} or (sampling and kind != "teacher"):
        raise ValueError(f"{directory}/{CONFIG}: 'sampling' may hold only a teacher's 'temperature', got {sampling}")
    if temperature is not None:
        if kind != "teacher":
            raise ValueError(f"a sampling temperature applies to teacher checkpoints; {directory} is a {kind}")
        sampling["temperature"] = temperature
    model = KINDS[kind].from_checkpoint(directory, device)
    return Vocoder(model, kind, name or kind, directory, model.audio, sampling)


def hop_samples(seconds: float, audio: AudioConfig) -> int:
    """The number of samples in ``seconds``, rounded down to whole hops."""
    return int(seconds * audio.sample_rate) // audio.hop_length * audio.hop_length


def crop_to_hops(x: np.ndarray, hop: int, max_samples: int | None = None) -> np.ndarray:
    """The first ``max_samples`` (default all) of ``x: (T,)``, cut to whole hops: contiguous float32."""
    x = x[:max_samples] if max_samples else x
    return np.ascontiguousarray(x[: len(x) // hop * hop], dtype=np.float32)


def mel_batch(clips: list[np.ndarray], audio: AudioConfig) -> torch.Tensor:
    """(B, n_mels, F_max) log-mels, padded with the log floor (silence) past each clip's end."""
    mels = [torch.from_numpy(log_mel(x, audio)) for x in clips]
    out = torch.full((len(mels), audio.n_mels, max(m.shape[1] for m in mels)), math.log(audio.log_mel_floor))
    for i, m in enumerate(mels):
        out[i, :, : m.shape[1]] = m
    return out


@contextmanager
def torch_threads(threads: int | None):
    """Run the block on ``threads`` torch CPU threads (None: leave them), restoring the count afterwards."""
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def fast_path_available(vocoder: Vocoder | nn.Module) -> bool:
    """Whether :func:`render` takes the fast path: the teacher's C loop, or the student's fused float32 path."""
    vocoder = as_vocoder(vocoder)
    if vocoder.kind == "teacher":
        return vocoder.model.compiled_generation_available()
    return next(vocoder.model.parameters()).dtype == torch.float32


@torch.no_grad()
def render(
    vocoder: Vocoder | nn.Module,
    mel: torch.Tensor,
    seed: int = 0,
    temperature: float | None = None,
    fast: bool = True,
    threads: int | None = None,
    progress: bool = False,
    speaker: torch.Tensor | None = None,
) -> torch.Tensor:
    """Audio ``(B, 1, F * hop)`` of ``vocoder`` conditioned on ``mel: (B, n_mels, F)`` log-mel frames (and, for a
    model with ``n_speakers > 0``, on ``speaker: (B,)`` ids; the model refuses ids it has no use for).

    Noise comes from a generator seeded ``seed`` on the model's device: the same seed, model and mel give the
    same audio. ``temperature`` overrides the teacher's (see :class:`Vocoder`). ``fast=False`` forces the
    reference path (the cached torch step, ``IAFStudent.sample``). ``threads``: torch CPU threads while
    rendering (default: one for the teacher, unchanged for the student); the count is restored afterwards.
    """
    vocoder = as_vocoder(vocoder)
    device = next(vocoder.model.parameters()).device
    generator = torch.Generator(device).manual_seed(seed)
    mel = mel.to(device)
    speaker = speaker.to(device) if speaker is not None else None
    use_fast = fast and fast_path_available(vocoder)
    if vocoder.kind == "student":
        if temperature is not None:
            raise ValueError(f"{vocoder.name}: a sampling temperature applies to teachers; the student has none")
        student = vocoder.model.for_synthesis(torch.float32) if use_fast else vocoder.model
        with torch_threads(threads):
            return student.sample(mel, speaker, generator=generator)
    if fast and not use_fast:
        print(
            f"render {vocoder.name}: the reference cached step (12-30x slower than the compiled loop, which needs a "
            f"float32 CPU 'mol' teacher and {_fast.LIBRARY_PATH.name}: {_fast.BUILD_HINT})",
            file=sys.stderr,
        )
    with torch_threads(TEACHER_THREADS if threads is None else threads):
        return vocoder.model.generate(
            mel,
            speaker=speaker,
            generator=generator,
            progress=progress,
            compiled=use_fast,
            temperature=vocoder.temperature if temperature is None else temperature,
        )


def render_clips(
    vocoder: Vocoder | nn.Module,
    clips: list[np.ndarray],
    audio: AudioConfig,
    batch_size: int = 8,
    seed: int = 0,
    progress: bool = False,
    speaker: int | None = None,
) -> list[np.ndarray]:
    """``vocoder``'s audio for each clip ``(T,)`` (whole hops), conditioned on the clip's log-mel (and on the
    speaker id ``speaker``, every clip the same voice, for a multi-speaker model).

    Clips go in batches of ``batch_size`` (sorted by length, they pad least); batch ``i`` renders with seed
    ``seed + i``, so any one batch can be recomputed on its own. Returns float32 arrays, each as long as its clip.
    """
    vocoder = as_vocoder(vocoder)
    out: list[np.ndarray] = []
    starts = range(0, len(clips), batch_size)
    for index, start in enumerate(tqdm(starts, desc=f"render {vocoder.name}", disable=not progress)):
        group = clips[start : start + batch_size]
        ids = None if speaker is None else torch.full((len(group),), speaker, dtype=torch.long)
        y = render(vocoder, mel_batch(group, audio), seed + index, progress=progress, speaker=ids)
        out.extend(y[i, 0, : len(x)].float().cpu().numpy() for i, x in enumerate(group))
    return out


__all__ = [
    "KINDS",
    "Vocoder",
    "as_vocoder",
    "checkpoint_kind",
    "crop_to_hops",
    "fast_path_available",
    "hop_samples",
    "kind_of",
    "load",
    "mel_batch",
    "render",
    "render_clips",
    "torch_threads",
]
