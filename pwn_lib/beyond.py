"""Notebook 10 at audio scale: extensions of density distillation on the course's own teacher and student.

Every arm distils a fresh course student with the class recipe's loss, KL + 0.1 power + 4.0 MR-STFT
(``configs/student_class.yaml``). The arms share the seed, the initialisation, the batches of real windows, and
the number of Adam steps under one cosine. Each arm changes one thing:

- **The divergence.** The paper's reverse KL, or a per-step Rényi divergence of order alpha
  (:func:`renyi_per_step`).
- **Several teachers.** The reverse KL to the per-step mixture of the teachers' conditionals, or the average of
  the reverse KLs to each (:func:`ensemble_cross_entropy`).
- **An evolving teacher.** The shipped teacher, swapped for a later one part-way (:func:`active_teachers`).
- **Adaptive weights.** A gradient balancer (:class:`GradientShares`), or a power weight driven by the measured
  power gap (:class:`PowerGapSchedule`).
- **Feature-based distillation.** A Gram loss on the teacher's own hidden states (:class:`TeacherFeatures`),
  compared with the paper's perceptual loss on the phone classifier's states.
- **The student's architecture.** Narrower, shallower, or with a shorter receptive field.

The arms train through :func:`pwn_lib.ablation.train_arm`, which is resumable and keeps one directory per arm. They
are scored together by :func:`pwn_lib.ablation.score_students`, with the metrics of ``python -m pwn_lib.evaluate``
on the test split::

    python -m pwn_lib.beyond train --arms reverse_kl,narrow --work-dir runs/beyond --threads 1
    python -m pwn_lib.beyond score --work-dir runs/beyond --out data/beyond/results.json

The toy-scale versions, where every density is exact, are in :mod:`pwn_lib.toys`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from pwn_lib.ablation import AblationConfig, Arm, CurveScore, score_students, shown, train_arm
from pwn_lib.artifacts import write_json
from pwn_lib.config import (
    AUDIO_PRESETS,
    CHECKPOINT_DIR,
    DATA_DIR,
    PERCEPTUAL_WEIGHT,
    REPO_ROOT,
    STUDENT_PRESETS,
    DistillLoss,
    to_dict,
)
from pwn_lib.data import AudioWindows, load_corpus
from pwn_lib.distill import (
    LogDensity,
    _student_pass,
    distillation_loss,
    freeze,
    logistic_draws,
    student_entropy,
    teacher_log_density,
)
from pwn_lib.distributions import Logistic
from pwn_lib.losses import LossFn, add_auxiliary_terms, perceptual_loss
from pwn_lib.phones import DEFAULT_CHECKPOINT as PHONES_CHECKPOINT
from pwn_lib.phones import Listener, load_phone_classifier
from pwn_lib.student import IAFStudent
from pwn_lib.trainer import Trainer
from pwn_lib.wavenet import WaveNet

# The teachers an arm may name. "stage8" is the best teacher trained so far (data/checkpoints/teacher_course/
# RECIPE.md, trial 9: test PER 0.335 at T 0.7, against the shipped teacher's 0.47). Its weights are not committed,
# because data/ is near its size limit, so an arm that names it needs configs/teacher_course_stage8.yaml's chain
# retrained first.
TEACHERS: dict[str, Path] = {
    "shipped": CHECKPOINT_DIR / "teacher_course",
    "stage8": DATA_DIR / "resume" / "teacher_stage8",
}
# The class recipe (configs/student_class.yaml): every arm's loss unless the arm says otherwise.
CLASS_RECIPE = DistillLoss(n_draws=4, power_weight=0.1, stft_weight=4.0)
# The teacher-feature Gram loss's weight. It makes that term, on the untrained student's first batch, as large as
# the perceptual term at the course's PERCEPTUAL_WEIGHT. Measured by `python -m pwn_lib.beyond sizes`.
FEATURE_WEIGHT = 1.3e3
BEYOND_DIR = DATA_DIR / "beyond"  # the recorded full runs notebook 10 plots
COMBINES = ("single", "mixture", "average", "swap")
DIVERGENCES = ("reverse_kl", "renyi")
WEIGHTINGS = ("fixed", "balancer", "power_gap")


@dataclass(frozen=True)
class BeyondArm:
    """One audio-scale arm: the class recipe with one change, described by ``note``.

    - ``teachers`` name entries of :data:`TEACHERS`.
    - ``combine`` is ``single`` (one teacher), ``mixture`` or ``average`` (several: :func:`ensemble_cross_entropy`),
      or ``swap``: the first teacher until a fraction ``swap_at`` of the steps, then the second.
    - ``divergence`` is ``reverse_kl`` or ``renyi``, of order ``alpha``.
    - ``weighting`` is ``fixed``, ``balancer`` (:class:`GradientShares` with ``shares``) or ``power_gap``
      (:class:`PowerGapSchedule`).
    - ``feature_weight`` > 0 adds the teacher-feature Gram loss.
    - ``student`` overrides fields of the course student, as (name, value) pairs.
    """

    name: str
    note: str
    loss: DistillLoss = CLASS_RECIPE
    teachers: tuple[str, ...] = ("shipped",)
    combine: str = "single"
    swap_at: float = 0.5
    divergence: str = "reverse_kl"
    alpha: float = 0.5
    weighting: str = "fixed"
    shares: tuple[tuple[str, float], ...] = (("kl", 0.5), ("mr_stft", 0.4), ("power", 0.1))
    feature_weight: float = 0.0
    student: tuple[tuple[str, object], ...] = ()

    def __post_init__(self) -> None:
        checks = [
            (self.combine in COMBINES, f"combine={self.combine!r}: choose one of {COMBINES}"),
            (self.divergence in DIVERGENCES, f"divergence={self.divergence!r}: choose one of {DIVERGENCES}"),
            (self.weighting in WEIGHTINGS, f"weighting={self.weighting!r}: choose one of {WEIGHTINGS}"),
            (all(t in TEACHERS for t in self.teachers), f"teachers={self.teachers}: name entries of {list(TEACHERS)}"),
            ((len(self.teachers) == 1) == (self.combine == "single"), "one teacher goes with combine='single'"),
            (self.combine != "swap" or len(self.teachers) == 2, "combine='swap' needs exactly two teachers"),
            (0 < self.swap_at < 1, f"swap_at={self.swap_at}: a fraction of the steps, strictly between 0 and 1"),
            (self.divergence != "renyi" or self.combine == "single", "the Rényi arm takes one teacher"),
            (self.divergence != "renyi" or 0 < self.alpha < 1, f"alpha={self.alpha}: use 0 < alpha < 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"arm {self.name!r}: {message}")


def course_student_config(**overrides: object) -> object:
    """The course student (the class recipe's) with the shipped teacher's log-mel standardisation and overrides."""
    base = dataclasses.replace(STUDENT_PRESETS["course"], log_mel_mean=-5.09, log_mel_std=2.32)
    return dataclasses.replace(base, **overrides)


ARMS: dict[str, BeyondArm] = {
    a.name: a
    for a in [
        BeyondArm("reverse_kl", "the class recipe: the paper's reverse KL + 0.1 power + 4.0 MR-STFT"),
        BeyondArm("renyi_0.5", "a per-step Rényi divergence of order 1/2 in place of the KL", divergence="renyi"),
        BeyondArm("stage8", "the reverse KL to the later, better teacher (stage 8) alone", teachers=("stage8",)),
        BeyondArm(
            "mixture",
            "the reverse KL to the per-step mixture of the shipped and stage-8 teachers",
            teachers=("shipped", "stage8"),
            combine="mixture",
        ),
        BeyondArm(
            "average",
            "the average of the reverse KLs to the shipped and the stage-8 teacher",
            teachers=("shipped", "stage8"),
            combine="average",
        ),
        BeyondArm(
            "swap",
            "the shipped teacher for the first half of the steps, then the stage-8 teacher",
            teachers=("shipped", "stage8"),
            combine="swap",
        ),
        BeyondArm(
            "balancer",
            "fixed shares of the gradient at the waveform: KL 0.5, MR-STFT 0.4, power 0.1",
            weighting="balancer",
        ),
        BeyondArm(
            "power_gap", "the power weight scaled by |power gap| / 2 dB, kept within 0.05-1.0", weighting="power_gap"
        ),
        BeyondArm(
            "perceptual",
            f"plus the phone classifier's Gram loss at the course weight {PERCEPTUAL_WEIGHT:g}",
            loss=dataclasses.replace(CLASS_RECIPE, perceptual_weight=PERCEPTUAL_WEIGHT),
        ),
        BeyondArm(
            "teacher_features",
            "plus a Gram loss on the teacher's own hidden states, sized like the perceptual loss",
            feature_weight=FEATURE_WEIGHT,
        ),
        BeyondArm("narrow", "16 residual channels per flow instead of 32", student=(("channels", 16),)),
        BeyondArm(
            "shallow",
            "flows of 3, 3, 3 and 5 layers instead of 6, 6, 6 and 10",
            student=(("flow_layers", (3, 3, 3, 5)),),
        ),
        BeyondArm(
            "short_field", "dilations up to 4 instead of 32: a shorter receptive field", student=(("max_dilation", 4),)
        ),
    ]
}


# ---------------------------------------------------------------------------------------------------------------
# Divergences and several teachers
# ---------------------------------------------------------------------------------------------------------------


def ensemble_cross_entropy(draws: Tensor, densities: Sequence[LogDensity], combine: str) -> Tensor:
    """Per-step cross-entropy of the student's step-t logistic against M teachers: ``(B, T)`` from ``(K, B, T)`` draws.

    ``densities[m]`` gives teacher m's step-t log density of the draws (:func:`pwn_lib.distill.teacher_log_density`).

    - ``mixture``: the teachers' conditionals mixed at each step, ``p_mix,t = (1/M) sum_m p_m,t``, so the estimate is
      ``-(1/K) sum_k [logsumexp_m log p_m,t(x'_k) - log M]``. This is the per-step ensemble of autoregressive models.
      It is not the mixture of the M sequence densities. On a window of 4,096 samples those log densities differ by
      hundreds of nats, so the sequence-level mixture would follow whichever teacher scores the sample higher.
    - ``average``: ``(1/M) sum_m H(q_t, p_m,t)``, so the KL is the average of the M reverse KLs. It is minimised where
      the teachers agree; the mixture is satisfied wherever any teacher has mass.

    With one teacher both equal :func:`pwn_lib.distill.cross_entropy_estimate`.
    """
    scores = torch.stack([density(draws) for density in densities])  # (M, K, B, T)
    if combine == "mixture":
        return -(torch.logsumexp(scores, dim=0) - math.log(len(densities))).mean(dim=0)
    if combine == "average":
        return -scores.mean(dim=(0, 1))
    raise ValueError(f"combine={combine!r}: ensemble_cross_entropy takes 'mixture' or 'average'")


def renyi_per_step(log_q: Tensor, log_p: Tensor, alpha: float) -> Tensor:
    """A K-draw estimate of the Rényi divergence of order ``alpha`` at each step, from draws of the student.

    Given log densities ``(K, B, T)`` of the student's own draws under the student (q) and the teacher (p),

        D_alpha(q_t || p_t) = 1 / (alpha - 1) * log E_q[(p_t / q_t)^(1 - alpha)]
                            ~ 1 / (alpha - 1) * [logsumexp_k (1 - alpha)(log p - log q) - log K],

    returned as ``(B, T)``. The log of a K-sample mean is biased for finite K: the estimate is an upper bound for
    ``alpha`` < 1 in expectation, by Jensen, and the bias shrinks as 1/K. As alpha tends to 1 the estimate becomes
    the KL estimate ``mean_k (log q - log p)``. The sum over steps of per-step Rényi divergences is a surrogate
    objective. Unlike the KL, the Rényi divergence of a sequence does not split by the chain rule into a sum over
    its conditionals.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha={alpha}: the per-step Rényi estimator takes 0 < alpha < 1")
    log_w = (1 - alpha) * (log_p - log_q)
    return (torch.logsumexp(log_w, dim=0) - math.log(log_w.shape[0])) / (alpha - 1)


def active_teachers(arm: BeyondArm, teachers: Sequence[WaveNet], step: int, steps: int) -> list[WaveNet]:
    """The teachers an arm distils from at ``step`` of ``steps``: the second one after the swap, else all of them."""
    if arm.combine == "swap":
        return [teachers[1] if step >= round(arm.swap_at * steps) else teachers[0]]
    return list(teachers)


# ---------------------------------------------------------------------------------------------------------------
# Feature-based distillation and adaptive weights
# ---------------------------------------------------------------------------------------------------------------


class TeacherFeatures:
    """The teacher's residual stream after each block, a feature extractor for :func:`pwn_lib.losses.perceptual_loss`.

    ``features(x)`` runs the teacher on ``x: (B, 1, T)`` with the conditioning ``c`` (and ``speaker``) given here and
    returns the states ``h_l: (B, residual_channels, T)`` that each block hands to the next. Forward hooks capture
    them, so the teacher's own code runs unchanged. With the Gram form of the perceptual loss the student is asked
    for the teacher's channel correlations on real audio, layer by layer (cf. Baranchuk et al. 2021, who distil the
    intermediate states of conditional flows). The phone classifier's perceptual loss asks the same of a network
    trained for another task.
    """

    def __init__(self, teacher: WaveNet, c: Tensor | None, speaker: Tensor | None = None):
        self.teacher, self.c, self.speaker = teacher, c, speaker

    def features(self, x: Tensor) -> list[Tensor]:
        captured: list[Tensor] = []
        hooks = [b.register_forward_hook(lambda _m, _i, out: captured.append(out[0])) for b in self.teacher.blocks]
        try:
            self.teacher(x, self.c, self.speaker)
        finally:
            for hook in hooks:
                hook.remove()
        return [h.float() for h in captured]


class GradientShares:
    """Adaptive weights that give each loss a fixed share of the gradient at the student's waveform.

    This is EnCodec's balancer in spirit (Défossez et al., 2022). Let ``g_i = dL_i/dx`` be loss i's gradient with
    respect to the student sample x, and let n_i be a running mean of ``||g_i||``. The weights
    ``lambda_i = (share_i / share_ref) * n_ref / n_i`` (``lambda_ref = 1``, the reference being the KL) make every
    weighted gradient at x as large as its share says, whatever each loss's own scale is at that point of training.
    The KL also reaches the student's weights through the draws' loc and scale, not only through x; only its part at
    x sets the reference. The norms are measured every ``every`` steps (each measurement is one backward pass per
    loss, to x only) and averaged with ``decay``. They are not part of the checkpoint, so a resumed run measures
    them afresh.
    """

    def __init__(self, shares: dict[str, float], reference: str = "kl", every: int = 10, decay: float = 0.8):
        if reference not in shares or any(v <= 0 for v in shares.values()):
            raise ValueError(f"shares={shares}: give every loss a positive share, the reference {reference!r} included")
        self.shares, self.reference, self.every, self.decay = dict(shares), reference, every, decay
        self.norms: dict[str, float] = {}
        self.measured_at = -1

    def measure(self, terms: dict[str, Tensor], x: Tensor) -> dict[str, float]:
        """``||dL_i/dx||`` for every loss with a share (the graph is kept for the training backward)."""
        return {
            name: torch.autograd.grad(terms[name], x, retain_graph=True)[0].float().norm().item()
            for name in self.shares
        }

    def weights(self, terms: dict[str, Tensor], x: Tensor, step: int) -> dict[str, float]:
        """The weights at ``step``, measuring the gradient norms anew when ``step`` is a multiple of ``every``."""
        if not self.norms or (step % self.every == 0 and step != self.measured_at):
            now = self.measure(terms, x)
            if not self.norms:
                self.norms = now
            else:
                self.norms = {k: self.decay * self.norms[k] + (1 - self.decay) * now[k] for k in now}
            self.measured_at = step
        ref = self.norms[self.reference]
        share_ref = self.shares[self.reference]
        return {
            name: (share / share_ref) * ref / max(self.norms[name], 1e-12)
            for name, share in self.shares.items()
            if name != self.reference
        }


class PowerGapSchedule:
    """The power loss's weight, driven by the measured power gap between the student's batch and the real one.

    ``weight = base * clip(|gap| / target_db, low, high)``, where gap is a running mean (``decay``) of
    ``power_db(student batch) - power_db(real batch)``. The class recipe's power target (within 2 dB of real) is the
    last target it meets (data/checkpoints/student_course/RECIPE.md), because 0.1 is a fortieth of the spectral
    loss's weight. Here the weight grows while the gap is wide, up to ``base * high``, and falls back to
    ``base * low`` once the gap is inside the target. The running mean is not part of the checkpoint.
    """

    def __init__(self, base: float, target_db: float = 2.0, low: float = 0.5, high: float = 10.0, decay: float = 0.9):
        if base <= 0 or target_db <= 0 or not 0 < low <= high:
            raise ValueError(
                f"PowerGapSchedule(base={base}, target_db={target_db}, low={low}, high={high}): need "
                "base > 0, target_db > 0 and 0 < low <= high"
            )
        self.base, self.target_db, self.low, self.high, self.decay = base, target_db, low, high, decay
        self.gap: float | None = None

    def weight(self, gap_db: float) -> float:
        """Fold one batch's gap (dB) into the running mean; the power weight for this step."""
        self.gap = gap_db if self.gap is None else self.decay * self.gap + (1 - self.decay) * gap_db
        return self.base * min(max(abs(self.gap) / self.target_db, self.low), self.high)


# ---------------------------------------------------------------------------------------------------------------
# The arms' loss
# ---------------------------------------------------------------------------------------------------------------


class Clock:
    """The trainer's step for a loss that changes during training. Bound once the Trainer exists; 0 before that."""

    def __init__(self) -> None:
        self.trainer: Trainer | None = None

    @property
    def step(self) -> int:
        return 0 if self.trainer is None else self.trainer.step


def divergence_terms(arm: BeyondArm, student: IAFStudent, teachers: Sequence[WaveNet], c: Tensor) -> dict[str, Tensor]:
    """The arm's divergence term on one batch: ``loss``, its named value, ``entropy`` and ``x: (B, 1, T)``.

    One teacher and the reverse KL is :func:`pwn_lib.distill.distillation_loss` itself, so the ``reverse_kl`` arm is
    the class recipe to the last bit.
    """
    recipe = arm.loss
    if arm.divergence == "reverse_kl" and len(teachers) == 1:
        return dict(
            distillation_loss(student, teachers[0], c, n_draws=recipe.n_draws, temperature=recipe.teacher_temperature)
        )
    for teacher in teachers:
        freeze(teacher)
    x, mu_tot, log_s_tot = _student_pass(student, c, None, None, None, "logistic")
    mu, log_s = mu_tot[:, 0], log_s_tot[:, 0]
    draws = logistic_draws(mu, log_s, recipe.n_draws)
    densities = [teacher_log_density(t, t(x, c), recipe.teacher_temperature) for t in teachers]
    entropy = student_entropy(log_s).mean()
    if arm.divergence == "renyi":
        log_q = Logistic(mu.expand_as(draws), log_s.expand_as(draws)).log_prob(draws)
        renyi = renyi_per_step(log_q, densities[0](draws), arm.alpha).mean()
        return {"loss": renyi, "renyi": renyi, "entropy": entropy, "x": x}
    cross_entropy = ensemble_cross_entropy(draws, densities, arm.combine).mean()
    kl = cross_entropy - entropy
    return {"loss": kl, "kl": kl, "entropy": entropy, "cross_entropy": cross_entropy, "x": x}


def arm_loss(
    arm: BeyondArm, teachers: Sequence[WaveNet], steps: int, clock: Clock, classifier: object | None = None
) -> LossFn:
    """The training loss of ``arm`` for :class:`pwn_lib.trainer.Trainer`: its divergence, then the class recipe's
    auxiliary terms (:func:`pwn_lib.losses.add_auxiliary_terms`), then the arm's feature term and weights.

    Every weight an arm changes is logged as ``w_<term>``, so the history shows the weights over training.
    """
    balancer = GradientShares(dict(arm.shares)) if arm.weighting == "balancer" else None
    schedule = PowerGapSchedule(arm.loss.power_weight) if arm.weighting == "power_gap" else None

    def loss_fn(model: IAFStudent, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        c, y = batch["mel"], batch["audio"]
        active = active_teachers(arm, teachers, clock.step, steps)
        terms = add_auxiliary_terms(divergence_terms(arm, model, active, c), arm.loss, y, classifier)
        x = terms["x"]
        logged: dict[str, float] = {}
        if arm.feature_weight > 0:
            terms["teacher_features"] = perceptual_loss(x.float(), y, TeacherFeatures(active[-1], c))
            terms["loss"] = terms["loss"] + arm.feature_weight * terms["teacher_features"]
        if schedule is not None:
            weight = schedule.weight(terms["batch_power_db"].item() - terms["real_power_db"].item())
            terms["loss"] = terms["loss"] + (weight - arm.loss.power_weight) * terms["power"]
            logged["w_power"] = weight
        if balancer is not None:
            lambdas = balancer.weights(terms, x, clock.step)
            terms["loss"] = terms["kl"] + sum(w * terms[name] for name, w in lambdas.items())
            logged.update({f"w_{name}": w for name, w in lambdas.items()})
        if arm.combine == "swap":
            logged["swapped"] = float(active[0] is teachers[1])
        scalars = {k: v.item() for k, v in terms.items() if k not in ("loss", "x")}
        return terms["loss"], {**scalars, **logged}

    return loss_fn


# ---------------------------------------------------------------------------------------------------------------
# Running and scoring the arms
# ---------------------------------------------------------------------------------------------------------------

# The course budget: every arm gets exactly this (a shortened class recipe; the full class recipe is 4,000 steps).
COURSE = AblationConfig(
    steps=1_000,
    batch_size=2,
    window=4_096,
    lr=1e-3,
    lr_schedule="cosine",
    lr_final=0.05,
    bf16=True,
    n_draws=4,
    log_every=25,
    curve_every=500,
    curve_utterances=3,
    curve_kl_windows=4,
    work_dir="runs/beyond",
)
TINY = dataclasses.replace(
    COURSE,
    steps=4,
    window=2_048,
    log_every=2,
    curve_every=2,
    curve_utterances=1,
    curve_kl_windows=1,
    test_utterances=2,
    test_max_seconds=0.25,
    bf16=False,
    work_dir="",
)


def load_teachers(arm: BeyondArm, device: str = "cpu") -> list[WaveNet]:
    """The arm's teachers, loaded and frozen, with a clear error when one has not been trained here."""
    missing = [name for name in arm.teachers if not (TEACHERS[name] / "model.safetensors").is_file()]
    if missing:
        raise FileNotFoundError(
            f"arm {arm.name!r} needs the teacher(s) {missing} at {[str(TEACHERS[m]) for m in missing]}; "
            "train stage 8 with configs/teacher_course_stage8.yaml's chain (data/checkpoints/teacher_course/RECIPE.md) "
            "or choose arms that use the shipped teacher only"
        )
    return [freeze(WaveNet.from_checkpoint(TEACHERS[name], device)) for name in arm.teachers]


def build_arm_student(arm: BeyondArm, cfg: AblationConfig, tiny: bool = False) -> IAFStudent:
    """The arm's fresh student under ``torch.manual_seed(cfg.seed)``: the course student with the arm's overrides."""
    torch.manual_seed(cfg.seed)
    overrides = dict(arm.student)
    if tiny:
        overrides = {"flow_layers": (2, 2), "channels": 8, "max_dilation": 2, **overrides}
    return IAFStudent(course_student_config(**overrides))


def run_arm(
    arm: BeyondArm,
    cfg: AblationConfig,
    shipped: WaveNet,
    classifier: object | None = None,
    progress: bool = True,
    tiny: bool = False,
) -> tuple[IAFStudent, dict]:
    """Train (or resume) one arm for ``cfg.steps`` steps; its averaged student and its record.

    The curve's held-out KL is always measured against the shipped teacher, so every arm is on one yardstick.
    """
    teachers = load_teachers(arm) if arm.teachers != ("shipped",) else [shipped]
    audio = AUDIO_PRESETS["course"]
    windows = AudioWindows(load_corpus("train"), cfg.window, audio, seed=cfg.seed, length=cfg.steps * cfg.batch_size)
    clock = Clock()
    if arm.loss.perceptual_weight > 0 and classifier is None:
        classifier = load_phone_classifier(PHONES_CHECKPOINT)
    student = build_arm_student(arm, cfg, tiny)
    started = time.perf_counter()
    averaged, record = train_arm(
        Arm(arm.name, arm.loss),
        shipped,
        windows,
        cfg,
        CurveScore(shipped, cfg, audio),
        classifier,
        progress,
        student=student,
        loss_fn=arm_loss(arm, teachers, cfg.steps, clock, classifier),
        bind=lambda t: setattr(clock, "trainer", t),
    )
    record["wall_seconds"] = round(time.perf_counter() - started, 1)
    record["receptive_field"] = averaged.receptive_field
    record["params"] = sum(p.numel() for p in averaged.parameters())
    return averaged, record


def forward_kl_cost(lengths: Sequence[int] = (512, 1024, 2048), seed: int = 0) -> dict:
    """What one forward-KL step costs against one reverse-KL step, measured at each window length.

    The forward KL, ``KL(P_T || P_S) = E_{x ~ P_T}[log p_T(x) - log q(x)]``, needs the teacher's own samples, which
    are sequential: :meth:`WaveNet.generate`, the compiled C loop when it is built. It also needs the student's
    density at those samples, ``log q(x) = log p_z(f^{-1}(x)) - sum_t log s_tot,t``, and inverting an IAF is
    sequential too: every flow needs T passes of its WaveNet, one per step, so the cost grows as T^2
    (:meth:`pwn_lib.flows.AutoregressiveAffine.inverse`, notebook 01's MAF/IAF asymmetry). The inversion is timed
    without gradients, so it is a lower bound on an ML step. The reverse-KL step is the whole training step:
    the KL alone (K = 4 draws), forward and backward. Returns ``{"rows": [...]}``, one row per length, in seconds,
    all measured in this one run.
    """
    audio = AUDIO_PRESETS["course"]
    teacher = freeze(WaveNet.from_checkpoint(TEACHERS["shipped"]))
    student = build_arm_student(ARMS["reverse_kl"], COURSE)
    rows = []
    for length in lengths:
        windows = AudioWindows(load_corpus("train"), length, audio, seed=seed, length=1)
        batch = torch.utils.data.default_collate([windows[0]])
        started = time.perf_counter()
        distillation_loss(student, teacher, batch["mel"], n_draws=CLASS_RECIPE.n_draws)["loss"].backward()
        reverse = time.perf_counter() - started
        student.zero_grad(set_to_none=True)
        with torch.no_grad():
            started = time.perf_counter()
            x = teacher.generate(
                batch["mel"],
                generator=torch.Generator().manual_seed(seed),
                progress=False,
                compiled=teacher.compiled_generation_available,
            )
            sampling = time.perf_counter() - started
            started = time.perf_counter()
            z = student.as_transform(batch["mel"]).inverse(x)
            inversion = time.perf_counter() - started
            roundtrip = (student(z, batch["mel"])[0] - x).abs().max().item()
        rows.append(
            {
                "length": length,
                "reverse_kl_step_s": round(reverse, 4),
                "teacher_sampling_s": round(sampling, 4),
                "student_inversion_s": round(inversion, 4),
                "forward_kl_lower_bound_s": round(sampling + inversion, 4),
                "ratio": round((sampling + inversion) / reverse, 1),
                "inversion_roundtrip_error": roundtrip,
            }
        )
    return {"rows": rows, "threads": torch.get_num_threads()}


def arm_dir(cfg: AblationConfig, arm: BeyondArm) -> Path:
    """Where ``arm`` keeps its resume state and its record (``record.json``)."""
    root = Path(cfg.work_dir)
    return (root if root.is_absolute() else REPO_ROOT / root) / arm.name


def pick_arms(names: str) -> list[BeyondArm]:
    """Arms from a comma-separated list of :data:`ARMS` names ("all" for every arm)."""
    wanted = list(ARMS) if names == "all" else [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in wanted if n not in ARMS]
    if unknown or not wanted:
        raise SystemExit(f"error: --arms {names!r}: unknown arm(s) {unknown}; choose from {', '.join(ARMS)} or 'all'")
    return [ARMS[n] for n in wanted]


def train_arms(
    arms: Sequence[BeyondArm], cfg: AblationConfig, progress: bool = True, tiny: bool = False
) -> dict[str, dict]:
    """Train each arm in turn (resuming any that stopped) and write its ``record.json``; the records.

    ``tiny`` shrinks every student to two flows of two layers (fast mode and the tests)."""
    if not cfg.work_dir:
        raise ValueError("train_arms keeps each arm's state in cfg.work_dir; give it one")
    for arm in arms:  # fail before any training when a teacher is missing
        load_teachers(arm) if arm.teachers != ("shipped",) else None
    shipped = freeze(WaveNet.from_checkpoint(TEACHERS["shipped"]))
    records = {}
    for arm in arms:
        _, record = run_arm(arm, cfg, shipped, progress=progress, tiny=tiny)
        record = {"arm": {**to_dict(arm), "loss": to_dict(arm.loss)}, **record}
        write_json(arm_dir(cfg, arm) / "record.json", record)
        records[arm.name] = record
    return records


def score_arms(cfg: AblationConfig, names: Sequence[str] | None = None, progress: bool = True) -> dict:
    """Score every finished arm in ``cfg.work_dir`` (or ``names``) on the test split, with the shipped student beside
    them and the shipped teacher's recorded row (its metrics.json, the same utterances and seed)."""
    audio = AUDIO_PRESETS["course"]
    names = [n for n in (names or ARMS) if (arm_dir(cfg, ARMS[n]) / "record.json").is_file()]
    if not names:
        raise SystemExit(f"error: no finished arm in {cfg.work_dir}; run python -m pwn_lib.beyond train first")
    students = {n: IAFStudent.from_checkpoint(arm_dir(cfg, ARMS[n])) for n in names}
    students["shipped_student"] = IAFStudent.from_checkpoint(CHECKPOINT_DIR / "student_course")
    test = score_students(students, cfg, audio, Listener(PHONES_CHECKPOINT), progress)
    recorded = json.loads((TEACHERS["shipped"] / "metrics.json").read_text())["evaluation"]
    records = {n: json.loads((arm_dir(cfg, ARMS[n]) / "record.json").read_text()) for n in names}
    cost = BEYOND_DIR / "forward_kl_cost.json"
    return {
        "config": to_dict(cfg),
        "arms": records,
        "forward_kl_cost": json.loads(cost.read_text()) if cost.is_file() else None,
        "test": test,
        "shipped_teacher_recorded": {
            "command": recorded["command"],
            "utterances_match": recorded["utterances"] == test["utterances"],
            "row": recorded["rows"]["teacher"],
        },
    }


def first_batch_sizes(cfg: AblationConfig = COURSE) -> dict[str, float]:
    """The perceptual and teacher-feature terms on the untrained course student's first batch (FEATURE_WEIGHT)."""
    audio = AUDIO_PRESETS["course"]
    windows = AudioWindows(load_corpus("train"), cfg.window, audio, seed=cfg.seed, length=cfg.batch_size)
    batch = torch.utils.data.default_collate([windows[i] for i in range(cfg.batch_size)])
    teacher = freeze(WaveNet.from_checkpoint(TEACHERS["shipped"]))
    student = build_arm_student(ARMS["reverse_kl"], cfg)
    torch.manual_seed(cfg.seed)
    with torch.no_grad():
        x, _, _ = _student_pass(student, batch["mel"], None, None, None, "logistic")
        y = batch["audio"]
        perceptual = perceptual_loss(x, y, load_phone_classifier(PHONES_CHECKPOINT)).item()
        features = perceptual_loss(x, y, TeacherFeatures(teacher, batch["mel"])).item()
    return {
        "perceptual": perceptual,
        "perceptual_weighted": PERCEPTUAL_WEIGHT * perceptual,
        "teacher_features": features,
        "matching_feature_weight": PERCEPTUAL_WEIGHT * perceptual / features,
    }


def main(argv: list[str] | None = None) -> int:
    """``python -m pwn_lib.beyond {train,score,sizes,cost}``: the audio-scale arms of notebook 10."""
    parser = argparse.ArgumentParser(
        prog="python -m pwn_lib.beyond", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("what", choices=("train", "score", "sizes", "cost"))
    parser.add_argument("--arms", default="all", help=f"comma-separated arm names: {', '.join(ARMS)} (default all)")
    parser.add_argument("--work-dir", default=COURSE.work_dir, help="each arm's resume state and record")
    parser.add_argument("--steps", type=int, default=COURSE.steps, help="steps per arm (every arm gets the same)")
    parser.add_argument(
        "--out",
        type=Path,
        help="score and cost: the JSON (default data/beyond/results.json, or "
        "data/beyond/forward_kl_cost.json for cost)",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.threads < 1:
        raise SystemExit(f"error: --steps {args.steps} and --threads {args.threads} must both be at least 1")
    torch.set_num_threads(args.threads)
    cfg = dataclasses.replace(COURSE, steps=args.steps, work_dir=args.work_dir)
    if args.what == "sizes":
        print(json.dumps(first_batch_sizes(cfg), indent=1))
        return 0
    if args.what == "cost":
        cost = {**forward_kl_cost(), "command": f"python -m pwn_lib.beyond cost --threads {args.threads}"}
        write_json(args.out or BEYOND_DIR / "forward_kl_cost.json", cost)
        print(json.dumps(cost, indent=1))
        return 0
    arms = pick_arms(args.arms)
    if args.what == "train":
        train_arms(arms, cfg)
        return 0
    args.out = args.out or BEYOND_DIR / "results.json"
    if args.out.is_dir():
        raise SystemExit(f"error: --out {args.out} is a folder; name the JSON file to write")
    results = score_arms(cfg, [a.name for a in arms])
    results["command"] = "python -m pwn_lib.beyond " + " ".join(
        argv if argv is not None else __import__("sys").argv[1:]
    )
    write_json(args.out, results)
    print(f"wrote {shown(args.out)}: {', '.join(results['arms'])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
