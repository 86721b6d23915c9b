"""The auxiliary-loss ablation of notebook 07: the same student, budget and batches, four loss recipes.

Arms (van den Oord et al., 2017, section 4.1):

1. ``kl``: probability density distillation alone;
2. ``kl+power``: plus the power loss;
3. ``kl+power+perceptual``: plus the Gram-matrix perceptual loss of the phone classifier;
4. ``kl+power+perceptual+contrastive``: the KL term replaced by the contrastive loss (gamma = 0.3).

Every arm starts from the same student initialisation (seed), sees the same batches of real
windows (``AudioWindows`` with the same seed) and runs the same number of Adam steps under the
same learning-rate schedule (:class:`pwn_lib.trainer.Trainer`).

- **Curves.** Every ``curve_every`` steps (and at step 0) each arm's averaged (EMA) weights are scored
  on the valid split by :class:`pwn_lib.evaluate.QuickScore` (voiced share, periodicity, power gap,
  MCD, ...) and by the held-out KL on fixed valid windows (:func:`pwn_lib.heldout.heldout_kl`).
- **Final scores.** Each arm's final averaged weights render the test split's utterances and are
  scored by :func:`pwn_lib.evaluate.evaluate_systems` (the metrics of ``python -m pwn_lib.evaluate``,
  the machine listener's PER included), next to the real, noise and silence reference rows.

With ``work_dir`` set, each arm keeps its resume state and its curve in ``work_dir/<arm>``: a stopped
run continues where it stopped, and a finished arm is only re-scored.

Command line (the course-scale run whose JSON notebook 07 plots)::

    python -m pwn_lib.train ablation --config configs/ablation_course.yaml --teacher data/checkpoints/teacher_course
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pwn_lib.artifacts import write_json
from pwn_lib.audio import save_audio
from pwn_lib.config import (
    AUDIO_PRESETS,
    CONTRASTIVE_GAMMA,
    DATA_DIR,
    PERCEPTUAL_WEIGHT,
    REPO_ROOT,
    AudioConfig,
    DistillLoss,
    TrainConfig,
    to_dict,
)
from pwn_lib.data import AudioWindows, load_corpus
from pwn_lib.evaluate import QuickScore, evaluate_systems, json_safe, pick_utterances, reference_systems
from pwn_lib.heldout import heldout_kl, heldout_windows
from pwn_lib.losses import LossFn, student_loss
from pwn_lib.phones import DEFAULT_CHECKPOINT as PHONES_CHECKPOINT
from pwn_lib.phones import Listener, PhoneClassifier, load_phone_classifier
from pwn_lib.student import IAFStudent, build_student
from pwn_lib.trainer import Trainer
from pwn_lib.vocoders import Vocoder, as_vocoder, crop_to_hops, mel_batch, render, render_clips
from pwn_lib.wavenet import WaveNet

ABLATION_DIR = DATA_DIR / "ablation"
# The figures each curve point keeps (QuickScore's keys, plus the held-out KL).
CURVE_METRICS = (
    "voiced_share",
    "voiced_share_vs_real",
    "periodicity",
    "power_db",
    "mcd",
    "mstft",
    "vuv_f1",
    "heldout_kl",
)


@dataclass(frozen=True)
class Arm:
    """One arm: a name and the loss recipe it trains with (0 switches a term off)."""

    name: str
    loss: DistillLoss


@dataclass(frozen=True)
class AblationConfig:
    """Budget and scale of one ablation run; every arm gets exactly this budget."""

    student: str = "course"  # a STUDENT_PRESETS name
    steps: int = 300
    batch_size: int = 2
    window: int = 4_096
    lr: float = 1e-3
    lr_schedule: str = "cosine"  # TrainConfig.lr_schedule: a cosine decay lets every arm settle by its last step
    lr_final: float = 0.05
    bf16: bool = False
    n_draws: int = DistillLoss.n_draws
    power_weight: float = 1.0  # the power term's weight in arms 2-4 (the course student's recipe)
    log_every: int = 10  # steps between rows of each arm's training history
    curve_every: int = 50  # steps between curve points (valid-split scores and held-out KL)
    curve_utterances: int = 3  # valid-split utterances QuickScore renders at each curve point
    curve_kl_windows: int = 4  # valid-split windows of 8,192 samples for the held-out KL curve
    test_utterances: int | None = None  # test-split utterances of 1-4 s scored at the end (None: all of them)
    test_max_seconds: float | None = None  # crop each test utterance (None: whole)
    work_dir: str = ""  # per-arm resume state and curves (relative to the repository); "" keeps nothing
    seed: int = 0


ABLATION_PRESETS: dict[str, AblationConfig] = {
    "tiny": AblationConfig(
        student="tiny",
        steps=12,
        batch_size=2,
        window=1_024,
        n_draws=2,
        log_every=4,
        curve_every=6,
        curve_utterances=1,
        curve_kl_windows=1,
        test_utterances=2,
        test_max_seconds=0.25,
    ),
    "course": AblationConfig(),
}


def paper_arms(cfg: AblationConfig) -> list[Arm]:
    """The paper's four arms, adding one term at a time (perceptual weight and gamma from :mod:`pwn_lib.config`)."""
    kl = DistillLoss(n_draws=cfg.n_draws, power_weight=0.0)
    power = DistillLoss(n_draws=cfg.n_draws, power_weight=cfg.power_weight)
    perceptual = dataclasses.replace(power, perceptual_weight=PERCEPTUAL_WEIGHT)
    contrastive = dataclasses.replace(perceptual, gamma=CONTRASTIVE_GAMMA)
    return [
        Arm("kl", kl),
        Arm("kl+power", power),
        Arm("kl+power+perceptual", perceptual),
        Arm("kl+power+perceptual+contrastive", contrastive),
    ]


class CurveScore:
    """One curve point: QuickScore's valid-split figures and the held-out KL of a student's averaged weights."""

    def __init__(self, teacher: WaveNet, cfg: AblationConfig, audio: AudioConfig):
        self.teacher = teacher
        self.quick = QuickScore(audio, "valid", cfg.curve_utterances)
        self.windows = heldout_windows(audio, count=cfg.curve_kl_windows, split="valid")

    def __call__(self, student: IAFStudent, step: int) -> dict[str, float]:
        scores = self.quick(student)
        scores["heldout_kl"] = heldout_kl(student, self.teacher, self.windows)
        return {"step": step, **{k: float(scores[k]) for k in CURVE_METRICS}}


def _arm_dir(cfg: AblationConfig, arm: Arm) -> Path | None:
    if not cfg.work_dir:
        return None
    root = Path(cfg.work_dir)
    return (root if root.is_absolute() else REPO_ROOT / root) / arm.name.replace("+", "_")


def train_arm(
    arm: Arm,
    teacher: WaveNet,
    windows: AudioWindows,
    cfg: AblationConfig,
    curve: CurveScore,
    classifier: PhoneClassifier | None = None,
    progress: bool = True,
    *,
    student: IAFStudent | None = None,
    loss_fn: LossFn | None = None,
    bind: Callable[[Trainer], None] | None = None,
) -> tuple[IAFStudent, dict]:
    """Train (or resume) a fresh student (seeded init) for ``cfg.steps`` steps; its averaged weights and record.

    The record holds the training ``history``, the ``curve`` (a point every ``cfg.curve_every`` steps and
    at step 0), and the time spent: ``train_seconds`` (optimiser steps, wall), ``curve_seconds`` and
    ``cpu_seconds`` (process CPU time of training and curves together).

    ``student`` (built under ``torch.manual_seed(cfg.seed)`` by the caller) replaces the ``cfg.student`` preset,
    ``loss_fn`` replaces ``student_loss(teacher, arm.loss, classifier)``, and ``bind(trainer)`` is called once the
    Trainer exists (for losses that read its step): :mod:`pwn_lib.beyond`'s arms use all three.
    """
    torch.manual_seed(cfg.seed)
    if student is None:
        student = build_student(cfg.student, hop_length=teacher.cfg.hop_length)
    train_cfg = TrainConfig(
        steps=cfg.steps,
        batch_size=cfg.batch_size,
        window=cfg.window,
        lr=cfg.lr,
        lr_warmup=0,
        lr_schedule=cfg.lr_schedule,
        lr_final=cfg.lr_final,
        bf16=cfg.bf16,
        seed=cfg.seed,
        log_every=cfg.log_every,
        checkpoint_every=cfg.curve_every,
    )
    out = _arm_dir(cfg, arm)
    trainer = Trainer(
        student,
        loss_fn or student_loss(teacher, arm.loss, classifier),
        train_cfg,
        out,
        model_config=to_dict(student.cfg),
        kind="student",
        extra_config={"audio": to_dict(AUDIO_PRESETS["course"]), "ablation_arm": arm.name},
    )
    if bind is not None:
        bind(trainer)
    record = {"curve": [], "curve_seconds": 0.0, "cpu_seconds": 0.0}
    if trainer.resume() and (out / "arm.json").is_file():
        record = json.loads((out / "arm.json").read_text())
        record["curve"] = [p for p in record["curve"] if p["step"] <= trainer.step]
        if progress:
            print(f"resuming arm {arm.name} at step {trainer.step} from {out}")
    cpu_started = time.process_time()
    cpu_before = record["cpu_seconds"]

    def add_point(t: Trainer) -> dict:
        started = time.perf_counter()
        point = curve(t.averaged_model(), t.step)
        record["curve"].append(point)
        record["curve_seconds"] += time.perf_counter() - started
        record["cpu_seconds"] = cpu_before + time.process_time() - cpu_started
        if out is not None:
            write_json(out / "arm.json", json_safe(record))
        return {f"valid_{k}": v for k, v in point.items() if k != "step"}

    if not record["curve"]:
        add_point(trainer)
    trainer.fit(windows, on_checkpoint=add_point, progress=progress)
    record["cpu_seconds"] = cpu_before + time.process_time() - cpu_started
    record.update(history=trainer.history, train_seconds=round(trainer.train_seconds, 1), steps=trainer.step)
    return trainer.averaged_model(), record


def final_clips(cfg: AblationConfig, audio: AudioConfig) -> tuple[list, list[np.ndarray]]:
    """The test-split utterances of the final scoring and their clips (whole hops, optionally cropped)."""
    utterances = pick_utterances("test", cfg.test_utterances)
    limit = int(cfg.test_max_seconds * audio.sample_rate) if cfg.test_max_seconds else None
    return utterances, [crop_to_hops(u.audio, audio.hop_length, limit) for u in utterances]


def score_students(
    students: dict[str, IAFStudent],
    cfg: AblationConfig,
    audio: AudioConfig,
    listener: Listener | None,
    progress: bool = True,
) -> dict:
    """``python -m pwn_lib.evaluate``'s table for the arms' students and the real, noise and silence rows."""
    utterances, clips = final_clips(cfg, audio)
    signals = reference_systems(clips)
    for name, student in students.items():
        signals[name] = render_clips(as_vocoder(student, name), clips, audio, progress=progress)
    results = evaluate_systems(signals, utterances, clips, audio, listener, progress=progress)
    results.update(
        split="test",
        utterances=[u.id for u in utterances],
        seconds=round(sum(len(x) for x in clips) / audio.sample_rate, 2),
    )
    return json_safe(results)


def run_ablation(
    teacher: WaveNet,
    arms: list[Arm] | None = None,
    cfg: AblationConfig = AblationConfig(),
    classifier: PhoneClassifier | None = None,
    listener: Listener | None = None,
    progress: bool = True,
) -> dict:
    """Train and score every arm with the same budget; a JSON-ready dict of the results.

    ``teacher`` is frozen by the distillation loss; ``classifier`` (for perceptual arms) and ``listener``
    (the PER) default to the shipped phone classifier. Each arm's ``eval`` holds its final test-split
    means (metrics that are undefined for it, such as F0 RMSE without voiced frames, are left out);
    ``test`` holds the whole table with 95 % CIs and per-utterance values.
    """
    arms = paper_arms(cfg) if arms is None else arms
    if classifier is None and any(a.loss.perceptual_weight > 0 for a in arms):
        classifier = load_phone_classifier(PHONES_CHECKPOINT)
    listener = listener or Listener(PHONES_CHECKPOINT)
    teacher.eval()
    audio = AUDIO_PRESETS["course"]
    windows = AudioWindows(load_corpus("train"), cfg.window, audio, seed=cfg.seed, length=cfg.steps * cfg.batch_size)
    curve = CurveScore(teacher, cfg, audio)
    students, records = {}, []
    for arm in arms:
        students[arm.name], record = train_arm(arm, teacher, windows, cfg, curve, classifier, progress)
        records.append({"arm": to_dict(arm), **record})
    test = score_students(students, cfg, audio, listener, progress)
    for row in records:
        means = test["systems"][row["arm"]["name"]]
        row["eval"] = {k: v["mean"] for k, v in means.items() if v["mean"] is not None}
    real_share = test["systems"]["real"]["voiced_share"]["mean"]
    for row in records:
        row["eval"]["voiced_share_vs_real"] = row["eval"]["voiced_share"] / real_share if real_share else 0.0
    return {
        "config": to_dict(cfg),
        "arms": records,
        "test": test,
        "real_valid_voiced_share": float(np.mean([t.voiced.mean() for t in curve.quick.tracks])),
    }


def example_utterance(cfg: AblationConfig, audio: AudioConfig) -> tuple[str, np.ndarray]:
    """The test utterance whose renderings notebook 07 shows: the one a quarter of the way up the final scoring's
    lengths (1.4 s in the course run), short enough for the teacher to generate in minutes on one CPU thread."""
    utterances, clips = final_clips(cfg, audio)
    quarter = len(utterances) // 4
    return utterances[quarter].id, clips[quarter]


@torch.no_grad()
def render_examples(
    cfg: AblationConfig,
    teacher: WaveNet | Vocoder,
    arms: list[Arm] | None = None,
    out_dir: Path | None = None,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Real audio, the teacher and every finished arm's student (from ``cfg.work_dir``) on :func:`example_utterance`.

    Each model renders (:func:`pwn_lib.vocoders.render`) from the real clip's log-mel with ``seed``; a teacher
    checkpoint loaded with :func:`pwn_lib.vocoders.load` samples at its recorded temperature. With ``out_dir``
    the clips are also written there as ``<name>.wav`` (16-bit, the name's ``+`` as ``_``).
    Returns ``{"real": ..., "teacher": ..., arm name: ...}``, each ``(T,)``.
    """
    if not cfg.work_dir:
        raise ValueError("render_examples loads the arms' students from cfg.work_dir; this config has none")
    audio = AUDIO_PRESETS["course"]
    name, clip = example_utterance(cfg, audio)
    mel = mel_batch([clip], audio)
    clips = {"real": clip, "teacher": render(teacher, mel, seed)}
    for arm in paper_arms(cfg) if arms is None else arms:
        clips[arm.name] = render(IAFStudent.from_checkpoint(_arm_dir(cfg, arm)), mel, seed)
    clips = {k: np.asarray(v, dtype=np.float32).reshape(-1)[: len(clip)] for k, v in clips.items()}
    if out_dir is not None:
        for key, x in clips.items():
            save_audio(Path(out_dir) / f"{key.replace('+', '_')}.wav", np.clip(x, -1, 1), audio.sample_rate)
        write_json(
            Path(out_dir) / "examples.json",
            {"utterance": name, "seed": seed, "sample_rate": audio.sample_rate, "clips": list(clips)},
        )
    return clips


def shown(path: Path) -> str:
    """A path as recorded in the results JSON: relative to the repository when inside it."""
    resolved = Path(path).resolve()
    return str(resolved.relative_to(REPO_ROOT)) if resolved.is_relative_to(REPO_ROOT) else str(path)


def main(argv: list[str] | None = None) -> int:
    """``python -m pwn_lib.ablation examples``: write the example renderings of a finished run (notebook 07)."""
    import argparse

    import yaml

    from pwn_lib.config import CHECKPOINT_DIR, from_dict
    from pwn_lib.vocoders import load

    parser = argparse.ArgumentParser(prog="python -m pwn_lib.ablation", description=main.__doc__)
    parser.add_argument("what", choices=("examples",))
    parser.add_argument("--config", type=Path, default=REPO_ROOT / "configs" / "ablation_course.yaml")
    parser.add_argument("--teacher", type=Path, default=CHECKPOINT_DIR / "teacher_course")
    parser.add_argument("--out", type=Path, default=ABLATION_DIR / "ablation_course_examples")
    args = parser.parse_args(argv)
    section = yaml.safe_load(args.config.read_text()).get("ablation", {})
    cfg = from_dict(AblationConfig, {**to_dict(AblationConfig()), **section})
    render_examples(cfg, load(args.teacher), out_dir=args.out)
    print(f"examples written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
