"""Speed of the course's models on this machine against the same run's matmul peak, and the speed targets.

    python scripts/benchmark.py                          # course and paper presets (several minutes on 2 cores)
    python scripts/benchmark.py --quick                  # a smoke run: fewer, shorter repeats
    python scripts/benchmark.py --peer r9y9 PATH         # also time a local checkout of r9y9/wavenet_vocoder
    python scripts/benchmark.py --memory                 # also the student's peak memory for 10 s of audio
    python scripts/benchmark.py --profile                # also where the time goes (torch.profiler)
    python scripts/benchmark.py --class-run runs/student_class --teacher data/checkpoints/teacher_course
                                                         # only the class recipe's time to each target

How it measures, so that a figure can be trusted:
- the rows of one table are interleaved: repeat 1 of every row, then repeat 2, ..., so that a change in the
  machine's load hits all of them alike; each cell is the median over the repeats, with [min - max];
- both wall-clock and process CPU time are kept: on a shared machine CPU time excludes waiting for a core;
- the fp32 and bf16 matmul peaks are measured in the same run, at each thread count used, and every model's
  arithmetic rate is printed as a % of the peak of its dtype and thread count (FLOPs counted from the config);
- the paper's speed table (teacher cached autoregressive generation against student parallel synthesis,
  same preset, same run, batch 1) closes the output.

All models have random weights: speed does not depend on the weights. Nothing here asserts a speed.
``--peer r9y9 PATH`` imports ``wavenet_vocoder`` from a checkout that you provide (it is never vendored
here) and times its ``incremental_forward`` with the same layer sizes, conditioning given per sample.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from pwn_lib.config import AUDIO_PRESETS, STUDENT_PRESETS, TEACHER_PRESETS, preset, seed_everything
from pwn_lib.distributions import output_channels
from pwn_lib.student import IAFStudent
from pwn_lib.wavenet import WaveNet

REAL_TIME_RATE = {name: audio.sample_rate for name, audio in AUDIO_PRESETS.items()}


@dataclass
class Settings:
    """What to run and for how long."""

    presets: list[str]
    repeats: int = 5  # timed calls per row, interleaved across the rows of a table
    cached_steps: dict[str, int] = field(default_factory=lambda: {"tiny": 512, "course": 1024, "paper": 300})
    compiled_factor: int = 8  # the compiled teacher generates this many times more steps per call
    synthesis_seconds: float = 1.0  # student: this much audio per call at the preset's sample rate
    student_threads: tuple[int, ...] = (1, 2)
    train_frames: int = 16
    peer: str | None = None
    memory: bool = False
    profile: bool = False
    out: str | None = None
    class_run: str | None = None  # a student run: report its time to each class target instead of speeds
    teacher: str = "data/checkpoints/teacher_course"


@dataclass
class Row:
    """One line of a table: ``fn()`` processes ``count`` units and does ``flops`` floating-point operations."""

    label: str
    fn: Callable[[], object]
    count: float
    unit: str
    flops: float
    dtype: str = "fp32"  # which matmul peak its arithmetic rate is compared with
    threads: int = 1
    walls: list[float] = field(default_factory=list)
    cpus: list[float] = field(default_factory=list)

    def rate(self, times: list[float]) -> tuple[float, float, float]:
        """(median, slowest, fastest) units per second."""
        return self.count / statistics.median(times), self.count / max(times), self.count / min(times)


def run_interleaved(rows: list[Row], repeats: int) -> None:
    """One untimed call of every row, then ``repeats`` rounds of one timed call of every row."""
    for row in rows:
        torch.set_num_threads(row.threads)
        row.fn()
    for _ in range(repeats):
        for row in rows:
            torch.set_num_threads(row.threads)
            wall, cpu = time.perf_counter(), time.process_time()
            row.fn()
            row.walls.append(time.perf_counter() - wall)
            row.cpus.append(time.process_time() - cpu)


# ----- arithmetic: FLOPs from the configs, and the matmul peak ------------------------------------------


def teacher_step_flops(name: str) -> float:
    """Multiply-adds x 2 of one cached step: dilated taps, conditioning, residual/skip 1x1s, head."""
    cfg = TEACHER_PRESETS[name]
    r, g, s, m = cfg.residual_channels, cfg.gate_channels, cfg.skip_channels, cfg.cond_channels
    layer = cfg.kernel_size * r * g + m * g + (g // 2) * (r + s)
    return 2.0 * (cfg.layers * layer + s * s + s * output_channels(cfg) + r)


def student_sample_flops(name: str) -> float:
    """Multiply-adds x 2 per output sample of the student (the upsampler, < 1 %, left out)."""
    cfg = STUDENT_PRESETS[name]
    c, g, m = cfg.channels, 2 * cfg.channels, cfg.cond_channels
    block = cfg.kernel_size * c * g + m * g + (g // 2) * c
    return 2.0 * sum(n * block + c * c + 2 * c + c for n in cfg.flow_layers)


PEAK_SHAPES = ((4096, 272, 128), (2048, 1024, 1024))  # the student's fused GEMM, and a large square one


def peak_rows(threads: tuple[int, ...]) -> list[Row]:
    """Matmul GFLOP/s rows for fp32 and bf16 at each thread count (the best shape is the peak)."""
    rows = []
    for dtype, tag in ((torch.float32, "fp32"), (torch.bfloat16, "bf16")):
        for n_threads in threads:
            for m, k, n in PEAK_SHAPES:
                a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
                rows.append(
                    Row(
                        f"matmul {tag} {m}x{k}x{n}, {n_threads} thread(s)",
                        lambda a=a, b=b: a @ b,
                        2e-9 * m * k * n,
                        "GFLOP",
                        2.0 * m * k * n,
                        tag,
                        n_threads,
                    )
                )
    return rows


def peaks_from(rows: list[Row]) -> dict[tuple[str, int], float]:
    """{(dtype, threads): best median FLOP/s over the shapes}."""
    peaks: dict[tuple[str, int], float] = {}
    for row in rows:
        key = (row.dtype, row.threads)
        peaks[key] = max(peaks.get(key, 0.0), row.flops / statistics.median(row.walls))
    return peaks


# ----- the rows -------------------------------------------------------------------------------------------


def mel(frames: int, batch: int = 1, n_mels: int = 80) -> torch.Tensor:
    """Random log-mel frames roughly where real ones sit."""
    return torch.randn(batch, n_mels, frames) - 4.0


def teacher_generation_rows(name: str, settings: Settings) -> list[Row]:
    """Cached generation, batch 1, 1 thread: the reference torch step and the compiled C loop."""
    model = WaveNet(preset(TEACHER_PRESETS, name)).eval()
    hop, steps = model.cfg.hop_length, settings.cached_steps[name]
    flops = teacher_step_flops(name)
    rows = []
    for compiled, n in ((False, steps), (True, steps * settings.compiled_factor)):
        c = mel(-(-n // hop))
        label = f"teacher {name}: cached generation, {'compiled C loop' if compiled else 'reference torch step'}"
        rows.append(
            Row(
                label,
                lambda c=c, n=n, compiled=compiled: model.generate(c, n_samples=n, progress=False, compiled=compiled),
                n,
                "steps",
                n * flops,
            )
        )
    if settings.peer:
        rows.append(peer_row(name, settings.peer, steps, flops))
    return rows


def peer_row(name: str, path: str, steps: int, flops: float) -> Row:
    """r9y9/wavenet_vocoder's ``incremental_forward`` from the checkout at ``path``, same sizes, 1 thread."""
    sys.path.insert(0, os.path.abspath(path))
    try:
        from wavenet_vocoder import WaveNet as PeerWaveNet
    except ImportError as error:
        raise SystemExit(
            f"--peer r9y9 {path}: cannot import wavenet_vocoder from it ({error}); pass the "
            "root of a checkout of https://github.com/r9y9/wavenet_vocoder"
        ) from error
    cfg = TEACHER_PRESETS[name]
    peer = PeerWaveNet(
        out_channels=output_channels(cfg),
        layers=cfg.layers,
        stacks=cfg.stacks,
        residual_channels=cfg.residual_channels,
        gate_channels=cfg.gate_channels,
        skip_out_channels=cfg.skip_channels,
        kernel_size=cfg.kernel_size,
        dropout=0.0,
        cin_channels=cfg.cond_channels,
        scalar_input=True,
        output_distribution="Logistic",
    ).eval()
    peer.make_generation_fast_()  # removes weight norm, as its synthesis script does
    c = mel(steps)  # conditioning already at the sample rate: only the step loop is timed

    def generate() -> None:
        with torch.no_grad():
            peer.incremental_forward(c=c, T=steps, softmax=False, quantize=True, log_scale_min=cfg.log_scale_min)

    return Row(
        f"teacher {name}: cached generation, r9y9 incremental_forward (peer)", generate, steps, "steps", steps * flops
    )


def student_rows(name: str, settings: Settings) -> list[Row]:
    """Student synthesis at batch 1: reference forward vs the fused path, fp32 and bf16, 1 and 2 threads."""
    student = IAFStudent(preset(STUDENT_PRESETS, name)).eval()
    frames = max(1, int(settings.synthesis_seconds * REAL_TIME_RATE[name]) // student.cfg.hop_length)
    c, n = mel(frames), frames * student.cfg.hop_length
    fused = {torch.float32: student.for_synthesis(torch.float32), torch.bfloat16: student.for_synthesis(torch.bfloat16)}
    generator = torch.Generator().manual_seed(0)
    rows = []
    for threads in settings.student_threads:
        for dtype, tag in ((torch.float32, "fp32"), (torch.bfloat16, "bf16")):

            def reference(dtype=dtype) -> None:
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
                    student.sample(c, generator=generator)

            for label, fn in (
                (f"reference{' (autocast)' if tag == 'bf16' else ''}", reference),
                ("fused", lambda dtype=dtype: fused[dtype].sample(c, generator=generator)),
            ):
                rows.append(
                    Row(
                        f"student {name}: synthesis {tag}, {label}, {threads} thread(s)",
                        fn,
                        n,
                        "samples",
                        n * student_sample_flops(name),
                        tag,
                        threads,
                    )
                )
    return rows


def training_rows(name: str, settings: Settings) -> list[Row]:
    """Teacher training samples/s (forward + backward + Adam), batch 1, fp32 and bf16 autocast, 1 thread."""
    model = WaveNet(preset(TEACHER_PRESETS, name))
    window = settings.train_frames * model.cfg.hop_length
    x, c = torch.rand(1, 1, window) * 2 - 1, mel(settings.train_frames)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-4)
    rows = []
    for tag in ("fp32", "bf16"):

        def step(tag=tag) -> None:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=tag == "bf16"):
                loss = model.loss(x, c)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()

        rows.append(
            Row(
                f"teacher {name}: training {tag}, batch 1 x {window}",
                step,
                window,
                "samples",
                3 * window * teacher_step_flops(name),
                tag,
            )
        )  # backward ~ 2x forward
    return rows


# ----- printing -------------------------------------------------------------------------------------------


def rate(value: float) -> str:
    """Three significant figures without scientific notation: 29,029 -> '29,000', 0.0412 -> '0.0412'."""
    if value >= 100:
        return f"{float(f'{value:.3g}'):,.0f}"
    return f"{value:.3g}"


def table(rows: list[Row], peaks: dict[tuple[str, int], float]) -> str:
    lines = [
        "| row | per wall-clock s: median [min - max] | per CPU s (median) | GFLOP/s | % of matmul peak |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        median, low, high = row.rate(row.walls)
        gflops = row.flops / statistics.median(row.walls) / 1e9
        peak = peaks.get((row.dtype, row.threads))
        share = f"{100 * gflops * 1e9 / peak:.0f} % ({row.dtype}, {row.threads}t)" if peak else "-"
        lines.append(
            f"| {row.label} | {rate(median)} [{rate(low)} - {rate(high)}] {row.unit}/s "
            f"| {rate(row.rate(row.cpus)[0])} {row.unit}/s | {gflops:.3g} | {share} |"
        )
    return "\n".join(lines)


def best(rows: list[Row], *words: str) -> Row | None:
    """The fastest (median wall) row whose label holds every word, or None when no label does."""
    found = [r for r in rows if all(w in r.label for w in words)]
    return max(found, key=lambda r: r.rate(r.walls)[0]) if found else None


def speed_table(name: str, rows: list[Row]) -> str:
    """The paper's table: teacher cached AR against the student in parallel, same preset, same run, batch 1."""
    teacher = best(rows, f"teacher {name}: cached")
    student = best(rows, f"student {name}: synthesis")
    t_rate, s_rate, sr = teacher.rate(teacher.walls)[0], student.rate(student.walls)[0], REAL_TIME_RATE[name]
    return "\n".join(
        [
            f"| {name} preset, batch 1 | timesteps/s | x real time at {sr // 1000} kHz | row |",
            "|---|---:|---:|---|",
            f"| teacher, cached autoregressive | {rate(t_rate)} | {t_rate / sr:.3f} | {teacher.label} |",
            f"| student, parallel | {rate(s_rate)} | {s_rate / sr:.2f} | {student.label} |",
            f"| student / teacher | {s_rate / t_rate:.1f}x | | paper: 500,000 / 172 = 2,900x on a GPU |",
        ]
    )


# The speed targets: (label, preset, how the measured figure is read from the rows, the bound, its unit).
TARGETS = (
    ("teacher course, compiled cached generation, 1 thread", "course", "teacher_compiled", 5000.0, "steps/s"),
    ("teacher paper, compiled loop / r9y9 incremental_forward", "paper", "teacher_vs_peer", 3.0, "x"),
    ("student paper, bf16, 2 threads: x real time at 24 kHz", "paper", "student_realtime_2t", 2.5, "x"),
    ("student paper, bf16, 2 threads: % of the bf16 matmul peak", "paper", "student_peak_2t", 70.0, "%"),
    ("student course, best row: x real time at 16 kHz", "course", "student_realtime", 10.0, "x"),
)


def measured(kind: str, name: str, rows: list[Row], peaks: dict[tuple[str, int], float]) -> float | None:
    """One target's figure from this run's rows (None when its rows were not run)."""
    median = lambda row: row.rate(row.walls)[0]  # noqa: E731
    if kind == "teacher_compiled":
        row = best(rows, f"teacher {name}: cached generation, compiled")
        return median(row) if row else None
    if kind == "teacher_vs_peer":
        ours = best(rows, f"teacher {name}: cached generation, compiled")
        peer = best(rows, f"teacher {name}:", "(peer)")
        return median(ours) / median(peer) if ours and peer else None
    if kind in ("student_realtime_2t", "student_peak_2t"):
        row = best(rows, f"student {name}: synthesis bf16", "2 thread")
        if row is None:
            return None
        if kind == "student_realtime_2t":
            return median(row) / REAL_TIME_RATE[name]
        return 100 * row.flops / statistics.median(row.walls) / peaks[("bf16", 2)]
    row = best(rows, f"student {name}: synthesis")
    return median(row) / REAL_TIME_RATE[name] if row else None


def targets_table(rows: list[Row], peaks: dict[tuple[str, int], float], presets: list[str]) -> str:
    """Each speed target that this run measured: met, or by how much it falls short."""
    lines = [
        "| target | measured | bound | verdict | ceiling: at 100 % of this run's bf16 peak (2 threads) |",
        "|---|---:|---:|---|---:|",
    ]
    for label, name, kind, bound, unit in TARGETS:
        if name not in presets:
            continue
        value = measured(kind, name, rows, peaks)
        ceiling = "-"
        if "realtime" in kind and ("bf16", 2) in peaks:  # FLOPs counted from the config, every sample's
            ceiling = f"{rate(peaks[('bf16', 2)] / student_sample_flops(name) / REAL_TIME_RATE[name])} x"
        if value is None:
            verdict, shown = "not measured in this run" + (" (pass --peer r9y9 PATH)" if "peer" in kind else ""), "-"
        else:
            shown = f"{rate(value)} {unit}"
            short = f"short by {rate(bound - value)} {unit} ({100 * value / bound:.0f} % of the bound)"
            verdict = "met" if value >= bound else short
        lines.append(f"| {label} | {shown} | {rate(bound)} {unit} | {verdict} | {ceiling} |")
    return "\n".join(lines)


def machine_line() -> str:
    load = " / ".join(f"{v:.2f}" for v in os.getloadavg())
    return (
        f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, load average (1/5/15 min) "
        f"{load}: other processes share these cores, so compare rows of one run, not runs"
    )


# ----- memory and profile (optional) --------------------------------------------------------------------


MEMORY_PROBE = """
import sys, torch
from pwn_lib.config import STUDENT_PRESETS, preset
from pwn_lib.student import IAFStudent

def status_kib(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key + ":"))

torch.set_num_threads(1)
kind, seconds = sys.argv[1], float(sys.argv[2])
student = IAFStudent(preset(STUDENT_PRESETS, "paper")).eval()
fused = student.for_synthesis(torch.bfloat16)
c = torch.randn(1, 80, int(seconds * 24000) // 300) - 4.0
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # resets the peak (VmHWM) to the current resident size, so the peak below is this call's
before = status_kib("VmRSS")
if kind == "reference":
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        student.sample(c)
else:
    fused.sample(c, chunk=None if kind == "fused" else int(kind))
print((status_kib("VmHWM") - before) / 1024)
"""


def memory_lines(seconds: float = 10.0, tries: int = 2) -> list[str]:
    """Peak resident memory added by synthesising ``seconds`` of paper-preset audio, in fresh child processes.

    Linux only (/proc). The largest of ``tries`` runs: on a VM that reclaims memory proactively, a run can
    undercount. Weights, their fused copies and the conditioning are allocated before the peak is reset.
    """
    lines = [
        f"Student, paper preset, {seconds:g} s at 24 kHz, bf16: peak memory added by the synthesis call "
        f"(VmHWM after a reset through /proc/self/clear_refs, fresh process, largest of {tries} runs, MiB)"
    ]
    for kind, label in (
        ("reference", "reference (autocast)"),
        ("fused", "fused, one pass"),
        ("24000", "fused, chunks of 24,000 samples"),
    ):
        added = [
            float(
                subprocess.run(
                    [sys.executable, "-c", MEMORY_PROBE, kind, str(seconds)],
                    capture_output=True,
                    text=True,
                    check=True,
                    env={**os.environ, "OMP_NUM_THREADS": "1"},
                ).stdout
            )
            for _ in range(tries)
        ]
        lines.append(f"- {label}: {max(added):,.0f} MiB")
    return lines


def profile_lines(name: str) -> list[str]:
    """The top operators of the fused bf16 student and of the reference teacher step."""
    from torch.profiler import profile

    torch.set_num_threads(1)
    student = IAFStudent(preset(STUDENT_PRESETS, name)).eval().for_synthesis(torch.bfloat16)
    teacher = WaveNet(preset(TEACHER_PRESETS, name)).eval()
    frames = REAL_TIME_RATE[name] // student.student.cfg.hop_length
    out = []
    for label, fn in (
        (f"student {name}, fused bf16, 1 s", lambda: student.sample(mel(frames))),
        (
            f"teacher {name}, reference cached step, 64 steps",
            lambda: teacher.generate(mel(1), n_samples=64, progress=False),
        ),
    ):
        fn()
        with profile() as prof:
            fn()
        out += [f"\n{label}:", prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=8)]
    return out


# ----- main -----------------------------------------------------------------------------------------------


# ----------------------------------------------------------------------------- the class recipe's time to targets

# The class recipe's targets ("Distillation that works", on the valid curves a student run logs at each
# checkpoint): (label, TensorBoard tag, how the bound is read from the teacher's valid figures, met(value, bound)).
CLASS_TARGETS: tuple[tuple[str, str, Callable[[dict], float], Callable[[float, float], bool]], ...] = (
    ("voiced share >= 0.80 x real", "eval/valid_voiced_share_vs_real", lambda t: 0.80, lambda v, b: v >= b),
    ("power within 2 dB of real", "eval/valid_power_db", lambda t: 2.0, lambda v, b: abs(v) <= b),
    ("MCD <= 1.10 x teacher", "eval/valid_mcd", lambda t: 1.10 * t["mcd"], lambda v, b: v <= b),
    ("periodicity >= 0.90 x teacher", "eval/valid_periodicity", lambda t: 0.90 * t["periodicity"], lambda v, b: v >= b),
)
CLASS_BUDGET_S = 30 * 60


def run_curves(run_dir: str) -> tuple[dict[str, list[tuple[int, float, float]]], float]:
    """A run's TensorBoard scalars as ``{tag: [(step, seconds since the run began, value)]}`` and the run's start.

    The start is the first ``train/seconds`` event (logged at step ``log_every`` with the seconds per step) less
    that many steps at that rate, so a checkpoint's time includes every evaluation before it."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(os.path.join(run_dir, "tb"), size_guidance={"scalars": 0})
    events.Reload()
    tags = events.Tags()["scalars"]
    if "train/seconds" not in tags:
        raise SystemExit(f"--class-run {run_dir}: no train/seconds curve in {run_dir}/tb; is it a training run?")
    first = events.Scalars("train/seconds")[0]
    start = first.wall_time - first.step * first.value
    return {tag: [(e.step, e.wall_time - start, e.value) for e in events.Scalars(tag)] for tag in tags}, start


def teacher_valid_figures(teacher_dir: str) -> dict[str, float]:
    """The teacher's figures on the same valid utterances the student's curves use (pwn_lib.evaluate.QuickScore),
    rendered at its recorded sampling temperature."""
    from pwn_lib import vocoders
    from pwn_lib.evaluate import QuickScore

    teacher = vocoders.load(teacher_dir)
    return QuickScore(teacher.audio)(teacher)


def class_table(curves: dict[str, list[tuple[int, float, float]]], teacher: dict[str, float]) -> str:
    """Each class target: the bound, the first checkpoint that meets it (step, minutes) and the last value; then
    the first checkpoint that meets all of them and whether that is inside the 30-minute budget."""
    lines = ["| target | bound | first met at (step, min) | last checkpoint: value (step, min) |", "|---|---|---|---|"]
    met_steps: list[set[int]] = []
    for label, tag, bound_of, met in CLASS_TARGETS:
        points, bound = curves.get(tag, []), bound_of(teacher)
        hits = [(step, t) for step, t, value in points if met(value, bound)]
        met_steps.append({step for step, _ in hits})
        first = f"{hits[0][0]:,}, {hits[0][1] / 60:.1f}" if hits else "not met"
        last = f"{points[-1][2]:.3f} ({points[-1][0]:,}, {points[-1][1] / 60:.1f})" if points else "no curve"
        lines.append(f"| {label} | {bound:.3f} | {first} | {last} |")
    times = {step: t for step, t, _ in curves.get(CLASS_TARGETS[0][1], [])}
    together = sorted(set.intersection(*met_steps)) if met_steps else []
    if together:
        minutes = times[together[0]] / 60
        verdict = "inside" if minutes * 60 <= CLASS_BUDGET_S else "outside"
        lines.append(
            f"\nAll four first met together at step {together[0]:,}, {minutes:.1f} min: {verdict} the 30-min budget."
        )
    else:
        lines.append("\nThe four targets are never met together at one checkpoint.")
    lines.append("The PER target (<= teacher + 0.10) is not on the curves: python -m pwn_lib.evaluate scores it.")
    return "\n".join(lines)


def class_report(run_dir: str, teacher_dir: str) -> None:
    curves, _ = run_curves(run_dir)
    teacher = teacher_valid_figures(teacher_dir)
    print(f"## Class recipe: time to each target ({run_dir}, valid split, against {teacher_dir})\n")
    print(
        f"teacher on the same valid utterances: MCD {teacher['mcd']:.3f} dB, periodicity {teacher['periodicity']:.3f}"
        f", voiced share {teacher['voiced_share_vs_real']:.3f} x real\n"
    )
    print(class_table(curves, teacher))
    print(f"\n{machine_line()}")


def parse_args(argv: list[str] | None = None) -> Settings:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["course", "paper"], choices=sorted(TEACHER_PRESETS))
    parser.add_argument("--quick", action="store_true", help="a smoke run: 2 repeats of shorter calls")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per row (default 5; 2 with --quick)")
    parser.add_argument("--peer", nargs=2, metavar=("NAME", "PATH"), help="'r9y9 PATH': time that checkout too")
    parser.add_argument("--memory", action="store_true", help="peak memory of the student for 10 s of audio")
    parser.add_argument("--profile", action="store_true", help="top operators of the student and the teacher")
    parser.add_argument("--out", help="also write everything printed to this file (e.g. data/benchmarks/cpu.md)")
    parser.add_argument("--class-run", help="a student run's folder: print only its time to each class target")
    parser.add_argument("--teacher", default="data/checkpoints/teacher_course", help="the teacher of --class-run")
    args = parser.parse_args(argv)
    if args.peer and args.peer[0] != "r9y9":
        parser.error(f"--peer {args.peer[0]}: only 'r9y9' (r9y9/wavenet_vocoder) is known")
    settings = Settings(
        args.presets, peer=args.peer[1] if args.peer else None, memory=args.memory, profile=args.profile, out=args.out
    )
    settings.class_run, settings.teacher = args.class_run, args.teacher
    if args.quick:
        settings.repeats, settings.synthesis_seconds, settings.compiled_factor = 2, 0.25, 4
        settings.cached_steps = {"tiny": 128, "course": 256, "paper": 64}
    if args.repeats:
        settings.repeats = args.repeats
    return settings


class Tee(io.TextIOBase):
    """Standard output that is also written, line by line, to a file."""

    def __init__(self, path: str):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.file, self.stdout = open(path, "w"), sys.stdout

    def write(self, text: str) -> int:
        self.stdout.write(text)
        self.file.write(text)
        self.file.flush()
        return len(text)


def main(argv: list[str] | None = None) -> None:
    settings = parse_args(argv)
    if settings.class_run:
        if settings.out:
            with contextlib.redirect_stdout(Tee(settings.out)):
                return class_report(settings.class_run, settings.teacher)
        return class_report(settings.class_run, settings.teacher)
    if settings.out:
        with contextlib.redirect_stdout(Tee(settings.out)):
            return run(settings, argv)
    return run(settings, argv)


def run(settings: Settings, argv: list[str] | None) -> None:
    print(f"python scripts/benchmark.py {' '.join(sys.argv[1:] if argv is None else argv)}\n")
    seed_everything(0)
    start = time.perf_counter()
    print(machine_line())
    threads = tuple(sorted({1, *settings.student_threads}))
    peaks_measured = peak_rows(threads)
    run_interleaved(peaks_measured, settings.repeats)
    peaks = peaks_from(peaks_measured)
    print("\n## Matmul peak (same run)\n")
    print(table(peaks_measured, peaks))
    all_rows = []
    for name in settings.presets:
        rows = teacher_generation_rows(name, settings) + student_rows(name, settings)
        rows += training_rows(name, settings)
        run_interleaved(rows, settings.repeats)
        all_rows += rows
        print(f"\n## {name} preset (rows interleaved, {settings.repeats} repeats)\n")
        print(table(rows, peaks))
        print(f"\n### The paper's speed table, {name} preset (same run)\n")
        print(speed_table(name, rows))
    print("\n## Speed targets (same run)\n")
    print(targets_table(all_rows, peaks, settings.presets))
    if settings.memory:
        print("\n" + "\n".join(memory_lines()))
    if settings.profile:
        print("\n".join(profile_lines(settings.presets[-1])))
    print(f"\n{machine_line()}; benchmark took {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
