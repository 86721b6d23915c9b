"""Tests for pwn_lib.losses: each loss against its equation, computed independently with NumPy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from pwn_lib.losses import (
    MAGNITUDE_FLOOR,
    average_power,
    contrastive_loss,
    gram_matrix,
    mr_stft_loss,
    perceptual_loss,
    power_loss,
)


def _speechlike(batch: int = 2, length: int = 4096, seed: int = 0) -> torch.Tensor:
    """(B, 1, T) float64: a few harmonics with an envelope plus noise, amplitude ~0.3."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(length, dtype=torch.float64) / 16_000
    f0 = 120 + 80 * torch.rand(batch, 1, 1, generator=g, dtype=torch.float64)
    harmonics = sum(torch.sin(2 * torch.pi * k * f0 * t) / k for k in range(1, 6))
    envelope = 0.5 + 0.5 * torch.sin(2 * torch.pi * 3 * t)
    noise = 0.02 * torch.randn(batch, 1, length, generator=g, dtype=torch.float64)
    return 0.15 * envelope * harmonics + noise


def _numpy_power(x: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """|rfft(frame * periodic Hann)|^2 for each uncentred frame. x: (T,) -> (n_fft // 2 + 1, F)."""
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    frames = [x[i : i + n_fft] * window for i in range(0, len(x) - n_fft + 1, hop)]
    return np.abs(np.fft.rfft(np.stack(frames), axis=-1)).T ** 2


def _numpy_phi(x: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """Time-averaged power divided by the Hann window energy (3 n_fft / 8 for a periodic Hann)."""
    return _numpy_power(x, n_fft, hop).mean(axis=-1) / (3 * n_fft / 8)


class _TinyFeatures(nn.Module):
    """A random two-layer conv net on raw audio with a features() list, standing in for the phone classifier."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv1d(1, 8, 64, stride=16).double()
        self.conv2 = nn.Conv1d(8, 8, 5, stride=2).double()

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        h1 = torch.tanh(self.conv1(x))
        return [h1, torch.tanh(self.conv2(h1))]


def test_power_loss_zero_for_identical_signals() -> None:
    y = _speechlike()
    assert power_loss(y, y.clone()).item() == 0.0


@pytest.mark.parametrize("gain", [0.1, 0.5, 2.0])
def test_power_loss_scales_with_gain_squared(gain: float) -> None:
    y = _speechlike()
    phi = _numpy_phi(y[0, 0].numpy(), 1024, 256), _numpy_phi(y[1, 0].numpy(), 1024, 256)
    expected = np.mean([(gain**2 - 1) ** 2 * np.sum(p**2) for p in phi])
    got = power_loss(gain * y, y).item()
    assert got > 0
    assert got == pytest.approx(expected, rel=1e-9)


def test_average_power_matches_numpy() -> None:
    y = _speechlike(batch=1)
    expected = _numpy_phi(y[0, 0].numpy(), 512, 128)
    np.testing.assert_allclose(average_power(y, 512, 128)[0].numpy(), expected, rtol=1e-9, atol=1e-15)


def test_average_power_of_white_noise_is_its_variance() -> None:
    noise = 0.1 * torch.randn(1, 1, 160_000, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    phi = average_power(noise)[0, 1:-1]
    assert phi.mean().item() == pytest.approx(0.01, rel=0.02)


def test_power_loss_rejects_short_clips() -> None:
    with pytest.raises(ValueError, match="shorter than n_fft"):
        power_loss(torch.zeros(1, 1, 100), torch.zeros(1, 1, 100))


def test_mr_stft_matches_hand_computation() -> None:
    x, y = _speechlike(seed=1), _speechlike(seed=2)
    resolutions = ((512, 128, 512), (1024, 256, 1024), (2048, 512, 2048))
    per_resolution = []
    for n_fft, hop, _ in resolutions:
        sc, logmag = [], []
        for b in range(x.shape[0]):
            mx = np.sqrt(np.maximum(_numpy_power(x[b, 0].numpy(), n_fft, hop), MAGNITUDE_FLOOR**2))
            my = np.sqrt(np.maximum(_numpy_power(y[b, 0].numpy(), n_fft, hop), MAGNITUDE_FLOOR**2))
            sc.append(np.linalg.norm(my - mx) / np.linalg.norm(my))
            logmag.append(np.abs(np.log(my) - np.log(mx)))
        per_resolution.append(np.mean(sc) + np.mean(np.stack(logmag)))
    assert mr_stft_loss(x, y, resolutions).item() == pytest.approx(np.mean(per_resolution), rel=1e-9)
    assert mr_stft_loss(y, y).item() == 0.0


def test_contrastive_reduces_to_kl_when_gamma_zero() -> None:
    kl_same, kl_other = torch.tensor(0.7, dtype=torch.float64), torch.tensor(2.5, dtype=torch.float64)
    assert contrastive_loss(kl_same, kl_other, gamma=0.0).item() == 0.7
    assert contrastive_loss(kl_same, kl_other).item() == pytest.approx(0.7 - 0.3 * 2.5)


def test_gram_matrix_equation() -> None:
    f = torch.randn(2, 3, 7, dtype=torch.float64)
    expected = torch.einsum("bct,bdt->bcd", f, f) / (3 * 7)
    torch.testing.assert_close(gram_matrix(f), expected)


@pytest.mark.parametrize("kind", ["gram", "feature"])
def test_perceptual_loss_zero_for_identical_and_positive_otherwise(kind: str) -> None:
    net = _TinyFeatures()
    y = _speechlike()
    assert perceptual_loss(y, y.clone(), net, kind=kind).item() == 0.0
    assert perceptual_loss(0.3 * y, y, net, kind=kind).item() > 0.0


def test_perceptual_loss_rejects_unknown_kind() -> None:
    with pytest.raises(ValueError, match="'gram' or 'feature'"):
        perceptual_loss(torch.zeros(1, 1, 256), torch.zeros(1, 1, 256), _TinyFeatures(), kind="style")


@pytest.mark.parametrize(
    "loss",
    [
        lambda x, y: power_loss(x, y),
        lambda x, y: mr_stft_loss(x, y),
        lambda x, y: perceptual_loss(x, y, _TinyFeatures(), kind="gram"),
        lambda x, y: perceptual_loss(x, y, _TinyFeatures(), kind="feature"),
        lambda x, y: contrastive_loss(power_loss(x, y), mr_stft_loss(x, y)),
    ],
    ids=["power", "mr_stft", "perceptual_gram", "perceptual_feature", "contrastive"],
)
def test_gradients_finite_including_silence(loss) -> None:
    y = _speechlike()
    x = (0.5 * _speechlike(seed=3)).requires_grad_(True)
    x_silent = torch.zeros_like(y).requires_grad_(True)
    for inp in (x, x_silent):
        value = loss(inp, y)
        (grad,) = torch.autograd.grad(value, inp)
        assert torch.isfinite(value)
        assert torch.isfinite(grad).all()
    # Spectral losses are even in x, so their gradient vanishes at exact silence; away from it, it must not.
    (grad,) = torch.autograd.grad(loss(x, y), x)
    assert grad.abs().sum() > 0


def _tiny_pair() -> tuple:
    from pwn_lib.student import build_student
    from pwn_lib.wavenet import build_teacher

    torch.manual_seed(0)
    return build_student("tiny", hop_length=64).double(), build_teacher("tiny", hop_length=64).double()


def kl_to_teacher_on_other_conditioning(student, teacher, c1, c2, seed: int) -> float:
    """KL(P_S(c1) || P_T(c2)) per sample, written out from the equations with no pwn_lib loss code.

    The student sample x is redrawn from the same noise (same generator seed); its per-step entropy is
    log s_tot + 2; the cross-entropy is -log p_T(x_t | x_<t, c2) under the teacher's continuous mixture.
    """
    z = student.draw_noise(
        (c1.shape[0], 1, c1.shape[-1] * student.cfg.hop_length),
        next(student.parameters()),
        torch.Generator().manual_seed(seed),
    )
    with torch.no_grad():
        x, _, log_s_tot = student(z, c1)
        params = teacher(x, c2)
    k = teacher.cfg.n_mixtures
    logits, means = params[:, :k], params[:, k : 2 * k]
    log_scales = params[:, 2 * k :].clamp(min=teacher.cfg.log_scale_min)
    u = (x - means) * torch.exp(-log_scales)  # x: (B, 1, T) broadcasts over the K components
    log_pdf = -u - log_scales - 2 * torch.log1p(torch.exp(-u))
    log_p = torch.logsumexp(torch.log_softmax(logits, dim=1) + log_pdf, dim=1)
    return (-log_p.mean() - (log_s_tot + 2).mean()).item()


def test_contrastive_distillation_reduces_to_distillation_kl_when_gamma_zero() -> None:
    from pwn_lib.distill import distillation_loss
    from pwn_lib.losses import contrastive_distillation_loss

    student, teacher = _tiny_pair()
    with torch.no_grad():  # an untrained teacher barely hears c; make c2 matter so that swapping it shows
        teacher.head[-1].weight.mul_(30.0)
        teacher.head[-1].bias[2 * teacher.cfg.n_mixtures :] = -4.0  # sharp components: their means matter
        for block in teacher.blocks:
            block.cond.weight.mul_(10.0)
    c = torch.randn(2, 80, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    out = contrastive_distillation_loss(
        student, teacher, c, c.roll(1, 0), gamma=0.0, generator=torch.Generator().manual_seed(5)
    )
    reference = distillation_loss(student, teacher, c, generator=torch.Generator().manual_seed(5))
    assert out["loss"].item() == pytest.approx(reference["kl"].item(), rel=1e-12)
    with_gamma = contrastive_distillation_loss(
        student, teacher, c, c.roll(1, 0), gamma=0.3, generator=torch.Generator().manual_seed(5)
    )
    kl_other = kl_to_teacher_on_other_conditioning(student, teacher, c, c.roll(1, 0), seed=5)
    assert with_gamma["kl_other"].item() == pytest.approx(kl_other, rel=1e-9)
    assert with_gamma["loss"].item() == pytest.approx(reference["kl"].item() - 0.3 * kl_other, rel=1e-9)
    # The reference can tell c2 from c1: scoring on the wrong conditioning moves it 10^4 times the tolerance.
    assert abs(kl_to_teacher_on_other_conditioning(student, teacher, c, c, seed=5) - kl_other) > 1e-4
    grads = torch.autograd.grad(with_gamma["loss"], list(student.parameters()), allow_unused=True)
    assert all(torch.isfinite(g).all() for g in grads if g is not None)
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
