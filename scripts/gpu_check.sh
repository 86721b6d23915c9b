#!/usr/bin/env bash
# The GPU check of notebook 08, in one script, under 8 minutes on one GPU:
#   1. paper-preset teacher training steps in bf16 (configs/teacher_paper.yaml's batch and window);
#   2. paper-preset student distillation steps (configs/student_paper.yaml), the frozen teacher scoring them;
#   3. the student's parallel synthesis against the teacher's cached generation at batch 1 (the paper's speed table);
#   4. a 1-GPU torchrun run of the teacher recipe.
# It prints samples/s, peak memory and the student/teacher synthesis ratio as a Markdown table and, on CUDA,
# writes it to data/benchmarks/gpu.md, naming the GPU. On a machine without a GPU it runs on the CPU
# with small settings (a smoke test; nothing is written):
#   scripts/gpu_check.sh                                  # on a GPU
#   STEPS=1 WINDOW=1200 BATCH=1 SECONDS_GENERATED=0.02 scripts/gpu_check.sh   # CPU smoke test
# Knobs (environment): STEPS (timed steps, default 20), WINDOW, BATCH (default: the recipes'),
# SECONDS_GENERATED (audio length for the synthesis rows, default 0.5), PYTHON (default .venv/bin/python).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
scratch=${SCRATCH:-${TMPDIR:-/tmp}/pwn_gpu_check}
rm -rf "$scratch" && mkdir -p "$scratch"
export STEPS=${STEPS:-20} SECONDS_GENERATED=${SECONDS_GENERATED:-0.5} SCRATCH="$scratch"

# 4. The 1-GPU torchrun run (first, so its process has the GPU to itself).
torchrun_steps=$(( STEPS < 10 ? STEPS : 10 ))
extra=()
[ -n "${WINDOW:-}" ] && extra+=(--window "$WINDOW")
[ -n "${BATCH:-}" ] && extra+=(--batch-size "$BATCH")
started=$SECONDS
"$python" -m torch.distributed.run --standalone --nproc_per_node 1 -m pwn_lib.train teacher --preset paper \
    --config configs/teacher_paper.yaml --steps "$torchrun_steps" --no-eval --fresh --out "$scratch/torchrun" \
    "${extra[@]}" > "$scratch/torchrun.log" 2>&1 || { tail -n 30 "$scratch/torchrun.log"; exit 1; }
export TORCHRUN_SECONDS=$(( SECONDS - started ))

# 1-3, and the table.
"$python" - <<'PY'
import datetime
import json
import os
import time
from pathlib import Path

import torch
import yaml

from pwn_lib.config import AUDIO_PRESETS, REPO_ROOT, DistillLoss, TrainConfig, from_dict
from pwn_lib.data import AudioWindows, load_corpus
from pwn_lib.losses import student_loss
from pwn_lib.student import build_student
from pwn_lib.trainer import Trainer
from pwn_lib.wavenet import build_teacher, teacher_loss

cuda = torch.cuda.is_available()
device = torch.device("cuda" if cuda else "cpu")
steps, seconds = int(os.environ["STEPS"]), float(os.environ["SECONDS_GENERATED"])
audio = AUDIO_PRESETS["paper"]
stats = {"log_mel_mean": -5.0, "log_mel_std": 2.3}  # speed does not depend on the standardisation
utterances = load_corpus("train", sample_rate=audio.sample_rate)


def sync() -> None:
    if cuda:
        torch.cuda.synchronize()


def recipe(kind: str) -> TrainConfig:
    section = yaml.safe_load((REPO_ROOT / "configs" / f"{kind}_paper.yaml").read_text())["train"]
    for key, env in (("window", "WINDOW"), ("batch_size", "BATCH")):
        if os.environ.get(env):
            section[key] = int(os.environ[env])
    return from_dict(TrainConfig, {**section, "steps": steps + 2, "lr_warmup": 0})


def train_rate(model, loss_fn, cfg: TrainConfig) -> tuple[float, float]:
    """samples/s over ``steps`` steps after 2 warm-up steps, and the peak memory in GiB."""
    windows = AudioWindows(utterances, cfg.window, audio, seed=0, length=cfg.batch_size * (steps + 2))
    trainer = Trainer(model, loss_fn, cfg, None, model_config={}, kind="gpu_check", device=device)
    batches = list(torch.utils.data.DataLoader(windows, batch_size=cfg.batch_size))
    move = [{k: v.to(device) for k, v in b.items()} for b in batches]
    for batch in move[:2]:
        trainer.train_step(batch)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    sync()
    started = time.perf_counter()
    for batch in move[2:]:
        trainer.train_step(batch)
    sync()
    rate = steps * cfg.batch_size * cfg.window / (time.perf_counter() - started)
    return rate, (torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan"))


rows = []
teacher_cfg = recipe("teacher")
rate, memory = train_rate(build_teacher("paper", **stats), teacher_loss, teacher_cfg)
rows.append(("teacher training, bf16", f"{teacher_cfg.batch_size} x {teacher_cfg.window}", rate, memory))

teacher = build_teacher("paper", **stats).to(device).eval().requires_grad_(False)
student_cfg = recipe("student")
loss = student_loss(teacher, DistillLoss(n_draws=4, power_weight=1.0))
rate, memory = train_rate(build_student("paper", **stats), loss, student_cfg)
rows.append(("student distillation, bf16", f"{student_cfg.batch_size} x {student_cfg.window}", rate, memory))

frames = max(1, int(seconds * audio.sample_rate) // audio.hop_length)
mel = torch.randn(1, audio.n_mels, frames, device=device) * 2.3 - 5.0
student = build_student("paper", **stats).to(device).eval()
synthesis = {}
with torch.no_grad():
    for name, run in (("student", lambda: student.sample(mel)), ("teacher", lambda: teacher.generate(mel))):
        run() if name == "student" else None  # warm-up of the parallel pass
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        sync()
        started = time.perf_counter()
        run()
        sync()
        synthesis[name] = frames * audio.hop_length / (time.perf_counter() - started)
        memory = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
        label = "student parallel synthesis" if name == "student" else "teacher cached generation"
        rows.append((f"{label}, batch 1, fp32", f"1 x {frames * audio.hop_length}", synthesis[name], memory))

metrics = json.loads((Path(os.environ["SCRATCH"]) / "torchrun" / "metrics.json").read_text())
speed = metrics["speed"]
rows.append((f"torchrun, 1 process, teacher recipe ({metrics['steps']} steps incl. start-up)",
             f"{speed['global_batch']} x {json.loads((Path(os.environ['SCRATCH']) / 'torchrun' / 'config.json').read_text())['train']['window']}",
             speed["samples_per_second"] or float("nan"), float("nan")))

name = torch.cuda.get_device_name() if cuda else "CPU (smoke test, no GPU)"
lines = [f"# GPU check: {name}", "",
         f"`scripts/gpu_check.sh`, {datetime.date.today()}, torch {torch.__version__}, {steps} timed steps after 2 warm-up; "
         f"torchrun run {float(os.environ['TORCHRUN_SECONDS']):.0f} s wall.", "",
         "| what | batch x samples | samples/s | peak memory (GiB) |", "|---|---|---:|---:|"]
lines += [f"| {what} | {shape} | {rate:,.0f} | {memory:.2f} |" for what, shape, rate, memory in rows]
ratio = synthesis["student"] / synthesis["teacher"]
realtime = synthesis["student"] / audio.sample_rate
lines += ["", f"Student / teacher synthesis speed at batch 1: **{ratio:,.0f}x**; the student runs at "
          f"{realtime:,.1f}x real time at {audio.sample_rate} Hz (the paper: more than 20x real time)."]
table = "\n".join(lines) + "\n"
print(table)
if cuda:
    out = REPO_ROOT / "data" / "benchmarks" / "gpu.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(table)
    print("written to", out)
PY
