"""The auxiliary-loss ablation of notebook 07: the same student, budget and batches, four loss recipes.

Arms (van den Oord et al., 2017, section 3.2):

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

    python -m pwn_lib.ablation --preset course --out data/ablation/ablation_course.json \\
        --teacher data/checkpoints/teacher_course
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from pwn_lib.artifacts import write_json
from pwn_lib.audio import log_mel, log_mel_distance, loudest_window, power_db
from pwn_lib.config import CHECKPOINT_DIR, DATA_DIR, REPO_ROOT, STUDENT_PRESETS, AudioConfig, preset, to_dict
from pwn_lib.data import AudioWindows, load_corpus
from pwn_lib.distill import distillation_loss
from pwn_lib.losses import contrastive_distillation_loss, perceptual_loss, power_loss
from pwn_lib.phones import DEFAULT_CHECKPOINT as PHONES_CHECKPOINT
from pwn_lib.phones import PhoneClassifier, load_phone_classifier
from pwn_lib.student import IAFStudent
from pwn_lib.train import load_teacher
from pwn_lib.wavenet import WaveNet, build_teacher

ABLATION_DIR = DATA_DIR / "ablation"


@dataclass(frozen=True)
class Arm:
    """One loss recipe: weights of the auxiliary terms (0 switches a term off) and the contrastive gamma."""

    name: str
    power: float = 0.0
    perceptual: float = 0.0
    gamma: float = 0.0


@dataclass(frozen=True)
class AblationConfig:
    """Budget and scale of one ablation run; every arm gets exactly this budget."""

    student: str = "course"  # a STUDENT_PRESETS name
    steps: int = 300
    batch_size: int = 2
    window: int = 4_096
    lr: float = 1e-3
    n_draws: int = 4
    # Measured for an untrained student (noise at ~-26 dB) on 4096-sample speech windows: power loss ~15-150,
    # Gram perceptual loss of the shipped phone classifier ~0.008, KL ~3 nats/sample. For noise the Gram loss
    # falls as the level drops (notebook 07), so the power term is weighted to dominate it early on.
    power_weight: float = 0.1
    perceptual_weight: float = 100.0
    gamma: float = 0.3
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
    """The four arms of issue 6, with the weights of ``cfg``."""
    p, q, g = cfg.power_weight, cfg.perceptual_weight, cfg.gamma
    return [Arm("kl"), Arm("kl+power", power=p), Arm("kl+power+perceptual", power=p, perceptual=q),
            Arm("kl+power+perceptual+contrastive", power=p, perceptual=q, gamma=g)]


def arm_loss(arm: Arm, student: IAFStudent, teacher: WaveNet, batch: dict[str, Tensor],
             classifier: PhoneClassifier | None, n_draws: int, generator: torch.Generator) -> dict[str, Tensor]:
    """The training loss of ``arm`` on a batch ``{"audio": (B, 1, T), "mel": (B, n_mels, T // hop)}``.

    Returns the terms (scalars) including ``loss``, plus ``x: (B, 1, T)`` the student sample.
    """
    c, y = batch["mel"], batch["audio"]
    if arm.gamma > 0:
        out = contrastive_distillation_loss(student, teacher, c, c.roll(1, 0), gamma=arm.gamma, n_draws=n_draws,
                                            generator=generator)
    else:
        out = distillation_loss(student, teacher, c, n_draws=n_draws, generator=generator)
    terms = dict(out)
    if arm.power > 0:
        terms["power"] = power_loss(out["x"], y)
        terms["loss"] = terms["loss"] + arm.power * terms["power"]
    if arm.perceptual > 0:
        if classifier is None:
            raise ValueError(f"arm {arm.name!r} needs the phone classifier; pass classifier=load_phone_classifier()")
        terms["perceptual"] = perceptual_loss(out["x"], y, classifier)
        terms["loss"] = terms["loss"] + arm.perceptual * terms["perceptual"]
    return terms


def train_arm(arm: Arm, teacher: WaveNet, windows: AudioWindows, cfg: AblationConfig,
              classifier: PhoneClassifier | None = None, progress: bool = True) -> tuple[IAFStudent, list[dict]]:
    """Train a fresh student (seeded init) for ``cfg.steps`` Adam steps on the first windows of ``windows``."""
    torch.manual_seed(cfg.seed)
    student = IAFStudent(preset(STUDENT_PRESETS, cfg.student, hop_length=teacher.cfg.hop_length))
    opt = torch.optim.Adam(student.parameters(), lr=cfg.lr)
    generator = torch.Generator().manual_seed(cfg.seed)
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(windows, range(cfg.steps * cfg.batch_size)),
                                         batch_size=cfg.batch_size, shuffle=False)
    history = []
    for step, batch in enumerate(tqdm(loader, desc=arm.name, disable=not progress), 1):
        terms = arm_loss(arm, student, teacher, batch, classifier, cfg.n_draws, generator)
        if not torch.isfinite(terms["loss"]):
            raise FloatingPointError(f"arm {arm.name!r}: non-finite loss at step {step}; lower lr (now {cfg.lr})")
        opt.zero_grad(set_to_none=True)
        terms["loss"].backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        opt.step()
        if step % cfg.log_every == 0 or step == cfg.steps:
            row = {k: v.item() for k, v in terms.items() if k != "x"}
            x = terms["x"].detach()
            row.update(step=step, batch_power_db=power_db(x), real_power_db=power_db(batch["audio"]))
            history.append(row)
    return student.eval(), history


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
    if classifier is None and any(a.perceptual > 0 for a in arms):
        classifier = load_phone_classifier(PHONES_CHECKPOINT)
    teacher.eval()
    windows = AudioWindows(load_corpus("train"), cfg.window, seed=cfg.seed, length=cfg.steps * cfg.batch_size)
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


def fit_tiny_teacher(steps: int = 60, batch_size: int = 2, window: int = 1_024, lr: float = 3e-3,
                     seed: int = 0) -> WaveNet:
    """A ``tiny`` teacher trained for a few seconds (fast mode and tests); the real one comes from
    ``python -m pwn_lib.train teacher --preset course``."""
    torch.manual_seed(seed)
    teacher = build_teacher("tiny")
    windows = AudioWindows(load_corpus("train"), window, seed=seed + 1, length=steps * batch_size)
    loader = torch.utils.data.DataLoader(windows, batch_size=batch_size, shuffle=False)
    opt = torch.optim.Adam(teacher.parameters(), lr=lr)
    for batch in loader:
        loss = teacher.loss(batch["audio"], batch["mel"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return teacher.eval()


def _shown(path: Path) -> str:
    """A path as recorded in the results JSON: relative to the repository when inside it."""
    resolved = Path(path).resolve()
    return str(resolved.relative_to(REPO_ROOT)) if resolved.is_relative_to(REPO_ROOT) else str(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pwn_lib.ablation", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="course", choices=sorted(ABLATION_PRESETS))
    parser.add_argument("--out", type=Path, default=ABLATION_DIR / "ablation_course.json")
    parser.add_argument("--teacher", type=Path, default=CHECKPOINT_DIR / "teacher_course")
    parser.add_argument("--classifier", type=Path, default=PHONES_CHECKPOINT)
    parser.add_argument("--steps", type=int, help="Adam steps per arm (overrides the preset)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = ABLATION_PRESETS[args.preset]
    if args.steps:
        cfg = AblationConfig(**{**to_dict(cfg), "steps": args.steps})
    teacher = load_teacher(args.teacher)
    results = run_ablation(teacher, cfg=cfg, classifier=load_phone_classifier(args.classifier))
    results.update(teacher=_shown(args.teacher), classifier=_shown(args.classifier), preset=args.preset,
                   command="python -m pwn_lib.ablation " + " ".join(map(shlex.quote, argv or sys.argv[1:])))
    write_json(args.out, results)
    for row in results["arms"]:
        print(row["arm"]["name"], {k: round(v, 3) for k, v in row["eval"].items()})
    print("real:", results["real"], "->", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
