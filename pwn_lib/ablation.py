"""The auxiliary-loss ablation of notebook 07: the same student, budget and batches, four loss recipes.

Arms (van den Oord et al., 2017, section 4.1):

1. ``kl``: probability density distillation alone;
2. ``kl+power``: plus the power loss;
3. ``kl+power+perceptual``: plus the Gram-matrix perceptual loss of the phone classifier;
4. ``kl+power+perceptual+contrastive``: the KL term replaced by the contrastive loss (gamma = 0.3).

Every arm starts from the same student initialisation (seed), sees the same batches of real
windows (``AudioWindows`` with the same seed) and runs the same number of Adam steps. Each arm is
then scored on held-out clips (valid split) by

- ``power_db``: output power ``10 log10(mean x^2)`` against the real clip's (``power_gap_db``);
- ``log_mel_distance``: :func:`pwn_lib.audio.log_mel_distance` to the real clip;
- ``teacher_nll``: the teacher's NLL of the student's samples, nats per sample (16-bit pmf).

Command line (the course-scale run whose JSON notebook 07 plots)::

    python -m pwn_lib.train ablation --config configs/ablation_course.yaml --teacher data/checkpoints/teacher_course
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pwn_lib.audio import log_mel, log_mel_distance, loudest_window, power_db
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
from pwn_lib.phones import DEFAULT_CHECKPOINT as PHONES_CHECKPOINT
from pwn_lib.phones import PhoneClassifier, load_phone_classifier
from pwn_lib.student import IAFStudent, build_student
from pwn_lib.train import Trainer, student_loss
from pwn_lib.wavenet import WaveNet

ABLATION_DIR = DATA_DIR / "ablation"


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
    n_draws: int = DistillLoss.n_draws
    eval_clips: int = 8
    eval_seconds: float = 1.0
    log_every: int = 10
    seed: int = 0


ABLATION_PRESETS: dict[str, AblationConfig] = {
    "tiny": AblationConfig(student="tiny", steps=12, batch_size=2, window=1_024, n_draws=2, eval_clips=2,
                           eval_seconds=0.25, log_every=4),
    "course": AblationConfig(),
}


def paper_arms(cfg: AblationConfig) -> list[Arm]:
    """The paper's four arms, adding one term at a time (weights from :mod:`pwn_lib.config`)."""
    kl = DistillLoss(n_draws=cfg.n_draws, power_weight=0.0)
    power = DistillLoss(n_draws=cfg.n_draws)
    perceptual = DistillLoss(n_draws=cfg.n_draws, perceptual_weight=PERCEPTUAL_WEIGHT)
    contrastive = DistillLoss(n_draws=cfg.n_draws, perceptual_weight=PERCEPTUAL_WEIGHT, gamma=CONTRASTIVE_GAMMA)
    return [Arm("kl", kl), Arm("kl+power", power), Arm("kl+power+perceptual", perceptual),
            Arm("kl+power+perceptual+contrastive", contrastive)]


def train_arm(arm: Arm, teacher: WaveNet, windows: AudioWindows, cfg: AblationConfig,
              classifier: PhoneClassifier | None = None, progress: bool = True) -> tuple[IAFStudent, list[dict]]:
    """Train a fresh student (seeded init) for ``cfg.steps`` steps of :class:`pwn_lib.train.Trainer`.

    No warm-up and no checkpoints; the raw (not averaged) weights are scored, as the budget is short.
    """
    torch.manual_seed(cfg.seed)
    student = build_student(cfg.student, hop_length=teacher.cfg.hop_length)
    train_cfg = TrainConfig(steps=cfg.steps, batch_size=cfg.batch_size, window=cfg.window, lr=cfg.lr, lr_warmup=0,
                            seed=cfg.seed, log_every=cfg.log_every, checkpoint_every=cfg.steps)
    trainer = Trainer(student, student_loss(teacher, arm.loss, classifier), train_cfg, None,
                      model_config=to_dict(student.cfg), kind=arm.name)
    history = trainer.fit(windows, progress=progress)
    return trainer.model.eval(), history


def held_out_clips(n_clips: int, seconds: float, audio: AudioConfig = AudioConfig()) -> list[np.ndarray]:
    """The loudest ``seconds`` (a whole number of hops) of the ``n_clips`` longest valid-split utterances."""
    n = int(seconds * audio.sample_rate) // audio.hop_length * audio.hop_length
    utterances = sorted(load_corpus("valid"), key=lambda u: (-len(u.audio), u.id))[:n_clips]
    return [loudest_window(u.audio, n, audio.hop_length) for u in utterances]


@torch.no_grad()
def evaluate_student(student: IAFStudent, teacher: WaveNet, clips: list[np.ndarray], seed: int = 0) -> dict:
    """Output power, log-mel distance and teacher NLL of the student's samples on real conditioning."""
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for y in clips:
        c = torch.from_numpy(log_mel(y))[None]
        x = student.sample(c, generator=generator)
        rows.append({"power_db": power_db(x), "real_power_db": power_db(y),
                     "log_mel_distance": log_mel_distance(x[0, 0].numpy(), y),
                     "teacher_nll": -teacher.log_prob(x, c).mean().item()})
    means = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
    means["power_gap_db"] = means["power_db"] - means["real_power_db"]
    return means


@torch.no_grad()
def evaluate_real(teacher: WaveNet, clips: list[np.ndarray]) -> dict:
    """Reference figures for the real clips: power and the teacher's NLL of real speech."""
    nll = [-teacher.log_prob(torch.from_numpy(y)[None, None], torch.from_numpy(log_mel(y))[None]).mean().item()
           for y in clips]
    return {"power_db": float(np.mean([power_db(y) for y in clips])), "teacher_nll": float(np.mean(nll))}


def run_ablation(teacher: WaveNet, arms: list[Arm] | None = None, cfg: AblationConfig = AblationConfig(),
                 classifier: PhoneClassifier | None = None, progress: bool = True) -> dict:
    """Train and score every arm with the same budget; a JSON-ready dict of the results.

    ``teacher`` is frozen by the distillation loss; ``classifier`` (for perceptual arms) defaults
    to the shipped phone classifier.
    """
    arms = paper_arms(cfg) if arms is None else arms
    if classifier is None and any(a.loss.perceptual_weight > 0 for a in arms):
        classifier = load_phone_classifier(PHONES_CHECKPOINT)
    teacher.eval()
    windows = AudioWindows(load_corpus("train"), cfg.window, AUDIO_PRESETS["course"], seed=cfg.seed,
                           length=cfg.steps * cfg.batch_size)
    clips = held_out_clips(cfg.eval_clips, cfg.eval_seconds)
    results = []
    for arm in arms:
        started = time.monotonic()
        student, history = train_arm(arm, teacher, windows, cfg, classifier, progress)
        seconds = time.monotonic() - started
        results.append({"arm": to_dict(arm), "train_seconds": round(seconds, 1), "history": history,
                        "eval": evaluate_student(student, teacher, clips, cfg.seed)})
    return {"config": to_dict(cfg), "real": evaluate_real(teacher, clips), "arms": results,
            "eval_clips": len(clips), "eval_samples_per_clip": len(clips[0])}


def shown(path: Path) -> str:
    """A path as recorded in the results JSON: relative to the repository when inside it."""
    resolved = Path(path).resolve()
    return str(resolved.relative_to(REPO_ROOT)) if resolved.is_relative_to(REPO_ROOT) else str(path)
