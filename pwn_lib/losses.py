"""The auxiliary losses of Parallel WaveNet (van den Oord et al., 2017, section 4.1), plus MR-STFT.

Distilling with the KL alone lets the student settle on quiet, whispering audio: a low-power
sample is cheap under the KL. The paper adds three terms, each a plain function here:

- :func:`power_loss`: ``||phi(x) - phi(y)||^2`` where ``phi`` is the STFT power averaged over time;
- :func:`perceptual_loss`: distance between a phone classifier's layer features (Gram or plain);
- :func:`contrastive_loss`: ``KL(P_S(c1) || P_T(c1)) - gamma * KL(P_S(c1) || P_T(c2))``.

:func:`recipe_terms` combines them as a :class:`pwn_lib.config.DistillLoss` recipe says. Taught in notebook 07.

:func:`mr_stft_loss` (spectral convergence + log magnitude over three resolutions, as in
Parallel WaveGAN) is the modern replacement for the power loss.

All functions take audio as ``(B, 1, T)`` or ``(B, T)`` float tensors in [-1, 1] and are
differentiable with respect to ``x`` (the student's output).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import torch
from torch import Tensor

from pwn_lib.audio import power_db
from pwn_lib.config import CONTRASTIVE_GAMMA, DistillLoss
from pwn_lib.distill import distillation_loss, teacher_log_density
from pwn_lib.student import IAFStudent
from pwn_lib.wavenet import WaveNet

# Defaults for 16 kHz audio: 1024-point FFT (64 ms Hann window), hop 256 (16 ms).
POWER_N_FFT = 1024
POWER_HOP = 256
# MR-STFT resolutions (n_fft, hop, win): 32/64/128 ms windows with 75 % overlap at 16 kHz.
MR_STFT_RESOLUTIONS: tuple[tuple[int, int, int], ...] = ((512, 128, 512), (1024, 256, 1024), (2048, 512, 2048))
MAGNITUDE_FLOOR = 1e-5  # |STFT| is clamped here before the log and the division: finite gradients at silence

# What :class:`pwn_lib.trainer.Trainer` minimises: ``loss_fn(model, batch) -> (loss, logged floats)``.
LossFn = Callable[[torch.nn.Module, dict[str, Tensor]], tuple[Tensor, dict[str, float]]]


class FeatureExtractor(Protocol):
    """Anything with ``features(x: (B, 1, T)) -> list of (B, C_l, F_l)``, e.g. ``pwn_lib.phones.PhoneClassifier``."""

    def features(self, x: Tensor) -> list[Tensor]: ...


def _as_batch(x: Tensor, name: str) -> Tensor:
    """``(B, 1, T)`` or ``(B, T)`` -> ``(B, T)``."""
    if x.dim() == 3 and x.shape[1] == 1:
        return x[:, 0]
    if x.dim() == 2:
        return x
    raise ValueError(f"{name} must be (B, 1, T) or (B, T) audio; got shape {tuple(x.shape)}")


def stft_power(x: Tensor, n_fft: int = POWER_N_FFT, hop: int = POWER_HOP, win: int | None = None) -> Tensor:
    """Short-time power spectrum ``|STFT(x)|^2`` with a periodic Hann window, no centring.

    x: (B, 1, T) or (B, T) audio, T >= win. Returns (B, n_fft // 2 + 1, F) with
    F = 1 + (T - n_fft) // hop. ``win`` (default ``n_fft``) is zero-padded to ``n_fft``.
    """
    x = _as_batch(x, "x")
    win = n_fft if win is None else win
    if x.shape[-1] < n_fft:
        raise ValueError(
            f"signal of {x.shape[-1]} samples is shorter than n_fft={n_fft}; use a longer clip or a smaller n_fft"
        )
    window = torch.hann_window(win, dtype=x.dtype, device=x.device)
    spec = torch.stft(x, n_fft, hop_length=hop, win_length=win, window=window, center=False, return_complex=True)
    return spec.real.square() + spec.imag.square()


def average_power(x: Tensor, n_fft: int = POWER_N_FFT, hop: int = POWER_HOP, win: int | None = None) -> Tensor:
    """phi(x): the STFT power averaged over time, divided by the window energy sum(w^2).

    x: (B, 1, T) -> (B, n_fft // 2 + 1). The normalisation puts phi in units of signal power per
    bin: white noise of variance sigma^2 has E[phi_k] = sigma^2 for 0 < k < n_fft / 2.
    """
    win = n_fft if win is None else win
    energy = torch.hann_window(win, dtype=x.dtype, device=x.device).square().sum()
    return stft_power(x, n_fft, hop, win).mean(dim=-1) / energy


def power_loss(x: Tensor, y: Tensor, n_fft: int = POWER_N_FFT, hop: int = POWER_HOP, win: int | None = None) -> Tensor:
    """The paper's power loss ``||phi(x) - phi(y)||^2``, summed over frequency, averaged over the batch.

    phi is :func:`average_power` (time-averaged STFT power per bin, normalised by the window energy,
    so a silent student against speech at -15 dB costs about 100 rather than 10^7).

    x: (B, 1, T) student audio; y: (B, 1, T') real audio (T' may differ: phi averages over time).
    Defaults: n_fft 1024, hop 256, Hann window of n_fft samples (64 ms / 16 ms at 16 kHz).
    Scaling x by a gain a multiplies phi(x) by a^2, so ``power_loss(a * y, y) = (a^2 - 1)^2 ||phi(y)||^2``.
    Returns a scalar.
    """
    diff = average_power(x, n_fft, hop, win) - average_power(y, n_fft, hop, win)
    return diff.square().sum(dim=-1).mean()


def stft_magnitude(x: Tensor, n_fft: int, hop: int, win: int) -> Tensor:
    """``max(|STFT(x)|, MAGNITUDE_FLOOR)``: (B, 1, T) -> (B, n_fft // 2 + 1, F). See :func:`stft_power`."""
    return stft_power(x, n_fft, hop, win).clamp_min(MAGNITUDE_FLOOR**2).sqrt()


def spectral_convergence(mag_x: Tensor, mag_y: Tensor) -> Tensor:
    """``|| |Y| - |X| ||_F / || |Y| ||_F`` per example, averaged. mag_*: (B, K, F) -> scalar."""
    num = (mag_y - mag_x).flatten(1).norm(dim=-1)
    den = mag_y.flatten(1).norm(dim=-1)
    return (num / den).mean()


def log_magnitude_distance(mag_x: Tensor, mag_y: Tensor) -> Tensor:
    """Mean ``|log|Y| - log|X||`` over batch, frequency and time. mag_*: (B, K, F) -> scalar."""
    return (mag_y.log() - mag_x.log()).abs().mean()


def mr_stft_loss(x: Tensor, y: Tensor, resolutions: Sequence[tuple[int, int, int]] = MR_STFT_RESOLUTIONS) -> Tensor:
    """Multi-resolution STFT loss: mean over resolutions of (spectral convergence + log magnitude L1).

    x: (B, 1, T) student audio; y: (B, 1, T) real audio (time-aligned, same T).
    resolutions: (n_fft, hop, win) triples; the default (512, 128, 512), (1024, 256, 1024),
    (2048, 512, 2048) are 32/64/128 ms Hann windows at 16 kHz. Magnitudes are floored at
    ``MAGNITUDE_FLOOR``. Returns a scalar.
    """
    if x.shape != y.shape:
        raise ValueError(f"mr_stft_loss compares aligned clips; got x {tuple(x.shape)} and y {tuple(y.shape)}")
    total = x.new_zeros(())
    for n_fft, hop, win in resolutions:
        mag_x, mag_y = stft_magnitude(x, n_fft, hop, win), stft_magnitude(y, n_fft, hop, win)
        total = total + spectral_convergence(mag_x, mag_y) + log_magnitude_distance(mag_x, mag_y)
    return total / len(resolutions)


def gram_matrix(f: Tensor) -> Tensor:
    """Gram matrix of a feature map, normalised by its size. f: (B, C, F) -> (B, C, C) = f f^T / (C F)."""
    _, channels, frames = f.shape
    return f @ f.transpose(1, 2) / (channels * frames)


def perceptual_loss(x: Tensor, y: Tensor, classifier: FeatureExtractor, kind: str = "gram") -> Tensor:
    """Perceptual loss from a phone classifier's layer features, summed over layers.

    x: (B, 1, T) student audio; y: (B, 1, T') real audio. ``classifier.features`` maps audio to a
    list of (B, C_l, F_l) feature maps and must be differentiable in its input.
    kind="gram" (the paper's best, style form): mean squared difference of :func:`gram_matrix`
    per layer; it ignores timing, so T' may differ from T.
    kind="feature": mean squared difference of the feature maps themselves (needs T' == T).
    Returns a scalar.
    """
    if kind not in ("gram", "feature"):
        raise ValueError(f"perceptual_loss kind must be 'gram' or 'feature', got {kind!r}")
    feats_x, feats_y = classifier.features(x), classifier.features(y)
    total = x.new_zeros(())
    for fx, fy in zip(feats_x, feats_y, strict=True):
        if kind == "gram":
            total = total + (gram_matrix(fx) - gram_matrix(fy)).square().mean()
        else:
            if fx.shape != fy.shape:
                raise ValueError(
                    f"feature perceptual loss needs aligned clips; got maps {tuple(fx.shape)} vs {tuple(fy.shape)}"
                )
            total = total + (fx - fy).square().mean()
    return total


def contrastive_loss(kl_same: Tensor, kl_other: Tensor, gamma: float = CONTRASTIVE_GAMMA) -> Tensor:
    """``KL(P_S(c1) || P_T(c1)) - gamma * KL(P_S(c1) || P_T(c2))``.

    kl_same: KL of the student (conditioned on c1) to the teacher on the same c1;
    kl_other: KL of the same student samples to the teacher conditioned on another
    utterance's c2. Any matching shapes (usually scalars, nats per sample). gamma = 0.3 in the paper
    (:data:`pwn_lib.config.CONTRASTIVE_GAMMA`).
    """
    return kl_same - gamma * kl_other


def contrastive_distillation_loss(
    student: IAFStudent,
    teacher: WaveNet,
    c1: Tensor,
    c2: Tensor,
    speaker: Tensor | None = None,
    gamma: float = CONTRASTIVE_GAMMA,
    n_draws: int = DistillLoss.n_draws,
    generator: torch.Generator | None = None,
    temperature: float = 1.0,
) -> dict[str, Tensor]:
    """The contrastive loss for real conditioning: one student sample on c1, scored by the teacher on c1 and c2.

    c1: (B, n_mels, F) the utterance the student renders; c2: (B, n_mels, F) other utterances
    (e.g. ``c1.roll(1, 0)``). ``kl`` = KL(P_S(c1) || P_T(c1)) comes from
    :func:`pwn_lib.distill.distillation_loss` (K-draw estimator). ``kl_other`` = KL(P_S(c1) || P_T(c2))
    uses the same sample x and a one-draw cross-entropy, ``-log p_T(x_t | x_<t, c2)``, which is unbiased
    because x_t itself is a draw from the student's step-t logistic. Returns the distillation dict with
    ``loss`` replaced by :func:`contrastive_loss` and ``kl_other`` added (nats per sample).
    """
    same = distillation_loss(
        student, teacher, c1, speaker, n_draws=n_draws, generator=generator, temperature=temperature
    )
    x = same["x"]
    log_density_other = teacher_log_density(teacher, teacher(x, c2, speaker), temperature)
    kl_other = -log_density_other(x[:, 0].unsqueeze(0)).mean() - same["entropy"]
    return {**same, "loss": contrastive_loss(same["kl"], kl_other, gamma), "kl_other": kl_other}


def recipe_terms(
    recipe: DistillLoss,
    student: IAFStudent,
    teacher: WaveNet,
    batch: dict[str, Tensor],
    classifier: FeatureExtractor | None = None,
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    """The student's training loss under ``recipe`` for ``{"audio": (B, 1, T), "mel": (B, n_mels, T // hop)}``
    (and ``"speaker": (B,)`` ids, used when the student has ``n_speakers > 0``).

    ``loss`` = KL (or, with ``recipe.gamma > 0``, the contrastive loss against ``mel.roll(1, 0)``)
    + power_weight * power + stft_weight * MR-STFT + perceptual_weight * Gram perceptual loss. Returns
    every term as a scalar, plus ``x: (B, 1, T)`` the student sample. The one loss the command line
    (``python -m pwn_lib.train student``), the ablation and the notebooks share.
    """
    c, y = batch["mel"], batch["audio"]
    speaker = batch["speaker"] if student.cfg.n_speakers else None  # a multi-speaker student and its teacher
    if recipe.gamma > 0:
        terms = contrastive_distillation_loss(
            student,
            teacher,
            c,
            c.roll(1, 0),
            speaker,
            gamma=recipe.gamma,
            n_draws=recipe.n_draws,
            generator=generator,
            temperature=recipe.teacher_temperature,
        )
    else:
        terms = distillation_loss(
            student,
            teacher,
            c,
            speaker,
            n_draws=recipe.n_draws,
            generator=generator,
            temperature=recipe.teacher_temperature,
        )
    return add_auxiliary_terms(dict(terms), recipe, y, classifier)


def add_auxiliary_terms(
    terms: dict[str, Tensor], recipe: DistillLoss, y: Tensor, classifier: FeatureExtractor | None = None
) -> dict[str, Tensor]:
    """Add ``recipe``'s weighted power, MR-STFT and perceptual terms to a distillation dict, in place; returns it.

    ``terms`` holds ``loss`` (the divergence so far) and ``x: (B, 1, T)``, the student sample; ``y: (B, 1, T)`` is
    the real audio. Each term with a positive weight is stored under its name and added, times its weight, to
    ``loss``; ``batch_power_db`` and ``real_power_db`` record the two signals' power.
    """
    x = terms["x"].float()
    weighted = {
        "power": (recipe.power_weight, lambda: power_loss(x, y)),
        "mr_stft": (recipe.stft_weight, lambda: mr_stft_loss(x, y)),
        "perceptual": (recipe.perceptual_weight, lambda: perceptual_loss(x, y, classifier)),
    }
    if recipe.perceptual_weight > 0 and classifier is None:
        raise ValueError("this loss recipe has perceptual_weight > 0: pass classifier=load_phone_classifier()")
    for name, (weight, term) in weighted.items():
        if weight > 0:
            terms[name] = term()
            terms["loss"] = terms["loss"] + weight * terms[name]
    terms["batch_power_db"] = torch.tensor(power_db(x.detach()))
    terms["real_power_db"] = torch.tensor(power_db(y))
    return terms


def student_loss(teacher: WaveNet, recipe: DistillLoss, classifier: FeatureExtractor | None = None) -> LossFn:
    """The student's training loss for :class:`pwn_lib.trainer.Trainer` under ``recipe`` (:func:`recipe_terms`),
    with every term logged; ``teacher`` is frozen and closed over, never a submodule of the trained model."""

    def loss_fn(model: IAFStudent, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        terms = recipe_terms(recipe, model, teacher, batch, classifier)
        return terms["loss"], {k: v.item() for k, v in terms.items() if k not in ("loss", "x")}

    return loss_fn
