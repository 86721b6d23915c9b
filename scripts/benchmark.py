"""Speed of the course's models on this machine, printed as one markdown table.

    python scripts/benchmark.py                 # course and paper presets (a few minutes on 2 cores)
    python scripts/benchmark.py --quick         # seconds: fewer steps, shorter runs
    python scripts/benchmark.py --presets course

Rows (one function each, so more models can be added to ``SECTIONS``):
- teacher training: samples/s for forward + backward + Adam step, fp32 and bf16 autocast;
- teacher naive generation: steps/s of :meth:`WaveNet.naive_step` on a full receptive-field window;
- teacher cached generation: steps/s of :meth:`WaveNet.generate` (per-layer queues);
- student synthesis: samples/s of :meth:`IAFStudent.sample` (one parallel pass), fp32 and bf16 autocast;
- student vs real time: the same calls counted in seconds of audio at 16 kHz and at 24 kHz, so the figure is
  "x real time"; the real-time factor (compute time / audio duration) is its inverse.

All models have random weights and log-mel conditioning; speed does not depend on the weights.
This is a measurement script, not a test: nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from pwn_lib.config import AUDIO_PRESETS, STUDENT_PRESETS, TEACHER_PRESETS, preset, seed_everything
from pwn_lib.student import IAFStudent
from pwn_lib.wavenet import WaveNet


@dataclass
class Settings:
    """How long each measurement runs."""

    presets: list[str]
    train_steps: int  # timed optimiser steps per row (after one warm-up step)
    naive_steps: int  # timed naive steps per row (no warm-up: each one is a whole receptive field)
    cached_steps: int  # samples generated per cached row
    batch_sizes: tuple[int, ...] = (1, 8)  # generation batch sizes
    train_batch: int = 1  # samples/s on a CPU barely depends on the batch; 1 keeps the paper preset quick
    train_frames: int = 16  # training window in log-mel frames (16 x 256 = 4096 samples for the course)
    synthesis_seconds: float = 1.0  # student synthesis: this much audio at the preset's sample rate
    synthesis_calls: int = 3  # timed student calls per row (after one warm-up call)


@dataclass
class Row:
    """One line of the table."""

    model: str
    preset: str
    measure: str
    setting: str
    unit: str  # what is counted per second: "samples" or "steps"
    count: float  # how many of them one timed call processes
    wall: float  # median wall-clock seconds per call
    cpu: float  # median process CPU seconds per call (all threads)


def seconds_per_call(fn: Callable[[], object], calls: int, warmup: int = 1) -> tuple[float, float]:
    """Median (wall-clock, process CPU) seconds of ``fn()`` over ``calls`` runs after ``warmup`` untimed runs.

    On a shared machine the CPU time is the steadier figure: it excludes time spent waiting for a core.
    """
    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    for _ in range(calls):
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - start_wall)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall), statistics.median(cpu)


def teacher_and_inputs(name: str, batch: int, n_samples: int) -> tuple[WaveNet, torch.Tensor, torch.Tensor]:
    """A random-weight teacher for preset ``name``, audio (B, 1, T) and log-mel (B, n_mels, T // hop)."""
    model = WaveNet(preset(TEACHER_PRESETS, name))
    hop = model.cfg.hop_length
    frames = -(-n_samples // hop)
    x = torch.rand(batch, 1, frames * hop) * 2 - 1
    c = torch.randn(batch, model.cfg.cond_channels, frames) - 4.0  # roughly where log-mels sit
    return model, x, c


def teacher_training_row(name: str, bf16: bool, settings: Settings) -> Row:
    """Training samples/s: forward + backward + Adam step on ``train_batch`` windows of ``train_frames`` frames."""
    batch, window = settings.train_batch, settings.train_frames * TEACHER_PRESETS[name].hop_length
    model, x, c = teacher_and_inputs(name, batch, window)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model.loss(x, c)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()

    wall, cpu = seconds_per_call(step, settings.train_steps)
    dtype = "bf16 autocast" if bf16 else "fp32"
    return Row("teacher", name, "training", f"{dtype}, batch {batch} x {window}", "samples", batch * window, wall, cpu)


def teacher_naive_row(name: str, batch: int, settings: Settings) -> Row:
    """Naive generation steps/s: one rerun of the stack over a full receptive-field window per sample."""
    rf = WaveNet(preset(TEACHER_PRESETS, name)).receptive_field
    model, x, c = teacher_and_inputs(name, batch, rf)
    window, cu = x[..., -rf:], model.condition(c, x.shape[-1])[..., -rf:]
    with torch.no_grad():
        wall, cpu = seconds_per_call(lambda: model.naive_step(window, cu, None), settings.naive_steps, warmup=0)
    return Row("teacher", name, "naive generation", f"batch {batch}, window {rf}", "steps", 1, wall, cpu)


def teacher_cached_row(name: str, batch: int, settings: Settings) -> Row:
    """Cached generation steps/s: :meth:`WaveNet.generate` for ``cached_steps`` samples (setup included)."""
    model, _, c = teacher_and_inputs(name, batch, settings.cached_steps)
    model.generate(c[..., :1], n_samples=8, progress=False)  # warm-up
    n = settings.cached_steps
    wall, cpu = seconds_per_call(lambda: model.generate(c, n_samples=n, progress=False), 1, warmup=0)
    return Row("teacher", name, "cached generation", f"batch {batch}, {n} steps", "steps", n, wall, cpu)


def teacher_rows(settings: Settings) -> list[Row]:
    """Every teacher row for every requested preset."""
    rows = []
    for name in settings.presets:
        rows += [teacher_training_row(name, bf16, settings) for bf16 in (False, True)]
        rows += [teacher_naive_row(name, batch, settings) for batch in settings.batch_sizes]
        rows += [teacher_cached_row(name, batch, settings) for batch in settings.batch_sizes]
    return rows


REAL_TIME_RATES = (16_000, 24_000)  # sample rates at which the student's speed is compared with real time


def student_synthesis_rows(name: str, bf16: bool, settings: Settings) -> list[Row]:
    """Student samples/s for ``synthesis_seconds`` of audio at batch 1, then the same timing in audio seconds."""
    model = IAFStudent(preset(STUDENT_PRESETS, name)).eval()
    hop, rate = model.cfg.hop_length, AUDIO_PRESETS[name].sample_rate
    frames = max(1, int(settings.synthesis_seconds * rate) // hop)
    c = torch.randn(1, model.cfg.cond_channels, frames) - 4.0
    generator = torch.Generator().manual_seed(0)

    def synthesise() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            model.sample(c, generator=generator)

    wall, cpu = seconds_per_call(synthesise, settings.synthesis_calls)
    n, dtype = frames * hop, "bf16 autocast" if bf16 else "fp32"
    rows = [Row("student", name, "synthesis", f"{dtype}, batch 1, {n} samples", "samples", n, wall, cpu)]
    rows += [
        Row("student", name, "x real time (1 / RTF)", f"{dtype}, at {sr // 1000} kHz", "audio-s", n / sr, wall, cpu)
        for sr in REAL_TIME_RATES
    ]
    return rows


def student_rows(settings: Settings) -> list[Row]:
    """Every student row for every requested preset."""
    return [row for name in settings.presets for bf16 in (False, True)
            for row in student_synthesis_rows(name, bf16, settings)]


# Each section turns the settings into rows.
SECTIONS: list[Callable[[Settings], list[Row]]] = [teacher_rows, student_rows]


def markdown_table(rows: list[Row]) -> str:
    """The rows as a GitHub markdown table."""
    lines = ["| model | preset | measure | setting | per wall-clock second | per CPU second |",
             "|---|---|---|---|---:|---:|"]
    lines += [f"| {r.model} | {r.preset} | {r.measure} | {r.setting} | {rate(r.count / r.wall)} {r.unit}/s "
              f"| {rate(r.count / r.cpu)} {r.unit}/s |" for r in rows]
    return "\n".join(lines)


def rate(value: float) -> str:
    """Three significant figures without scientific notation: 29,029 -> '29,000', 0.0412 -> '0.0412'."""
    if value >= 100:
        return f"{float(f'{value:.3g}'):,.0f}"
    return f"{value:.3g}"


def machine_line() -> str:
    """One line describing where the numbers come from."""
    return (f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads; preset sample rates: "
            f"{', '.join(f'{n} {AUDIO_PRESETS[n].sample_rate} Hz' for n in AUDIO_PRESETS)}")


def parse_args(argv: list[str] | None = None) -> Settings:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["course", "paper"], choices=sorted(TEACHER_PRESETS))
    parser.add_argument("--quick", action="store_true", help="seconds instead of minutes: fewer, shorter runs")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        return Settings(args.presets, train_steps=1, naive_steps=1, cached_steps=64, train_frames=4,
                        synthesis_seconds=0.25, synthesis_calls=1)
    return Settings(args.presets, train_steps=2, naive_steps=3, cached_steps=256)


def main(argv: list[str] | None = None) -> None:
    settings = parse_args(argv)
    seed_everything(0)
    start = time.perf_counter()
    rows = [row for section in SECTIONS for row in section(settings)]
    print(markdown_table(rows))
    print(f"\n{machine_line()}; benchmark took {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
