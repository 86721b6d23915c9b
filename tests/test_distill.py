"""Probability density distillation: the Monte Carlo KL is unbiased, its variance falls with K, the Gaussian
closed form matches Monte Carlo, and the frozen teacher receives no gradient while the student does."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate

from pwn_lib.distill import (
    distillation_loss,
    freeze,
    gaussian_distillation_loss,
    kl_estimate,
    student_entropy,
    teacher_log_density,
)
from pwn_lib.distributions import DiscretizedMixLogistics, Gaussian, Logistic, gaussian_kl
from pwn_lib.student import build_student
from pwn_lib.wavenet import build_teacher


def logistic_log_pdf(x: np.ndarray, loc: float, scale: float) -> np.ndarray:
    z = (x - loc) / scale
    return -z - math.log(scale) - 2.0 * np.logaddexp(0.0, -z)


def numerical_kl(log_q, log_p, lo: float, hi: float) -> float:
    """KL(q || p) = integral of q (log q - log p) over [lo, hi] by adaptive quadrature (float64)."""
    value, error = integrate.quad(lambda x: math.exp(log_q(x)) * (log_q(x) - log_p(x)), lo, hi, limit=400)
    assert error < 1e-8
    return value


STUDENT = (0.1, 0.12)  # loc, scale of the student's per-step logistic L(mu_tot, s_tot)


def student_params(n_steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    mu = torch.full((1, n_steps), STUDENT[0], dtype=torch.float64)
    return mu, torch.full_like(mu, math.log(STUDENT[1]))


def logistic_teacher(loc: float, scale: float):
    def log_density(draws: torch.Tensor) -> torch.Tensor:
        base = Logistic(torch.tensor(loc, dtype=draws.dtype), torch.tensor(math.log(scale), dtype=draws.dtype))
        return base.log_prob(draws)

    return log_density


MIXTURE = torch.tensor([[[0.3], [-0.5], [-0.2], [0.25], [-2.0], [-1.5]]], dtype=torch.float64)  # (1, 3K, 1), K = 2


def mixture_teacher(draws: torch.Tensor) -> torch.Tensor:
    """The continuous density of a fixed 2-component MoL, through the library's DiscretizedMixLogistics."""
    n_draws, batch, length = draws.shape
    dist = DiscretizedMixLogistics(MIXTURE.expand(n_draws * batch, 6, length))
    return dist.log_density(draws.reshape(n_draws * batch, length)).reshape(draws.shape)


def mixture_log_pdf(x: float) -> float:
    logits, means, log_scales = MIXTURE[0, :, 0].numpy().reshape(3, 2)
    log_w = logits - np.logaddexp.reduce(logits)
    comps = [log_w[k] + logistic_log_pdf(np.array(x), means[k], math.exp(log_scales[k])) for k in range(2)]
    return float(np.logaddexp.reduce(comps))


def student_log_pdf(x: float) -> float:
    return float(logistic_log_pdf(np.array(x), *STUDENT))


@pytest.mark.parametrize(
    "teacher, teacher_log_pdf",
    [
        (logistic_teacher(-0.05, 0.2), lambda x: float(logistic_log_pdf(np.array(x), -0.05, 0.2))),
        (mixture_teacher, mixture_log_pdf),
    ],
    ids=["logistic", "mixture"],
)
def test_monte_carlo_kl_is_unbiased(teacher, teacher_log_pdf):
    exact = numerical_kl(student_log_pdf, teacher_log_pdf, -8.0, 8.0)
    per_seed = []
    for seed in range(300):
        mu, log_s = student_params(50)
        estimate = kl_estimate(mu, log_s, teacher, n_draws=2, generator=torch.Generator().manual_seed(seed))
        per_seed.append(estimate.mean().item())
    mean, standard_error = np.mean(per_seed), np.std(per_seed, ddof=1) / math.sqrt(len(per_seed))
    assert standard_error < 0.05 * exact, "too few seeds for the comparison to mean anything"
    assert abs(mean - exact) < 3 * standard_error, f"MC {mean:.5f} +- {standard_error:.5f} vs quadrature {exact:.5f}"


def test_estimator_variance_falls_as_one_over_k():
    mu, log_s = student_params(20_000)
    variances = {
        k: kl_estimate(mu, log_s, mixture_teacher, n_draws=k, generator=torch.Generator().manual_seed(k)).var().item()
        for k in (1, 4, 16)
    }
    assert 3.0 < variances[1] / variances[4] < 5.3
    assert 3.0 < variances[4] / variances[16] < 5.3


def test_entropy_is_log_scale_plus_two():
    log_s = torch.tensor([[-3.0, 0.0, 1.5]])
    torch.testing.assert_close(student_entropy(log_s), log_s + 2.0)
    exact = -integrate.quad(lambda x: math.exp(student_log_pdf(x)) * student_log_pdf(x), -8, 8)[0]
    assert abs(student_entropy(torch.tensor(math.log(STUDENT[1]), dtype=torch.float64)).item() - exact) < 1e-8


def test_closed_form_gaussian_kl_matches_monte_carlo():
    f64 = torch.float64
    q = Gaussian(torch.tensor([0.2, -0.1], dtype=f64), torch.tensor([math.log(0.3), math.log(0.05)], dtype=f64))
    p = Gaussian(torch.tensor([-0.1, 0.0], dtype=f64), torch.tensor([math.log(0.5), math.log(0.08)], dtype=f64))
    closed = gaussian_kl(q, p)
    g = torch.Generator().manual_seed(0)
    x = Gaussian(q.loc.expand(200_000, 2), q.log_scale.expand(200_000, 2)).sample(g)
    terms = q.log_prob(x) - p.log_prob(x)
    mc, se = terms.mean(0), terms.std(0) / math.sqrt(terms.shape[0])
    assert (se < 0.05 * closed).all()
    assert ((mc - closed).abs() < 3 * se).all(), f"closed form {closed} vs MC {mc} +- {se}"


def tiny_pair(output: str = "mol"):
    torch.manual_seed(0)
    return build_student("tiny"), build_teacher("tiny", output=output)


def test_no_gradient_reaches_the_teacher_and_the_student_gets_finite_grads():
    student, teacher = tiny_pair()
    teacher.train()
    c = torch.randn(2, 80, 2)
    out = distillation_loss(student, teacher, c, n_draws=3, generator=torch.Generator().manual_seed(0))
    assert set(out) == {"loss", "kl", "entropy", "cross_entropy", "x"}
    assert out["x"].shape == (2, 1, 512)
    torch.testing.assert_close(out["kl"], out["cross_entropy"] - out["entropy"])
    out["x"].retain_grad()
    out["loss"].backward()

    assert not teacher.training
    assert all(p.grad is None for p in teacher.parameters())
    assert out["x"].grad is not None and out["x"].grad.abs().sum() > 0, "no gradient flows back through x"
    for name, p in student.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert all(flow.head[-1].weight.grad.abs().sum() > 0 for flow in student.flows)


def test_teacher_density_scores_every_draw_under_its_own_step():
    _, teacher = tiny_pair()
    freeze(teacher)
    x = 0.05 * torch.randn(2, 1, 512)
    params = teacher(x, torch.randn(2, 80, 2))
    draws = 0.05 * torch.randn(3, 2, 512)
    scores = teacher_log_density(teacher, params)(draws)
    expected = teacher.distribution(params).log_density(draws[1])
    torch.testing.assert_close(scores[1], expected)


@pytest.mark.parametrize("output", ["mol", "gaussian"])
def test_distilling_at_a_temperature_equals_a_teacher_with_its_log_scales_shifted(output):
    """Temperature t scores under scales times t: the same KL as a copy of the teacher whose log-scale outputs
    are raised by ln t in its last layer's bias (no scale sits at the floor here, so the floor cannot differ)."""
    student, teacher = tiny_pair(output)
    shifted = build_teacher("tiny", output=output)
    shifted.load_state_dict(teacher.state_dict())
    t, k = 0.6, teacher.cfg.n_mixtures if output == "mol" else 1
    with torch.no_grad():
        shifted.head[-1].bias[-k:] += math.log(t)
    c = torch.randn(2, 80, 2, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert (teacher(torch.zeros(2, 1, 512), c)[:, -k:] > teacher.cfg.log_scale_min + 1).all()
        got = distillation_loss(student, teacher, c, generator=torch.Generator().manual_seed(2), temperature=t)
        want = distillation_loss(student, shifted, c, generator=torch.Generator().manual_seed(2))
        plain = distillation_loss(student, teacher, c, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(got["kl"], want["kl"], rtol=1e-5, atol=1e-5)
    assert abs(got["kl"].item() - plain["kl"].item()) > 1e-3


def test_gaussian_distillation_kl_matches_monte_carlo_on_the_same_sample():
    student, teacher = tiny_pair("gaussian")
    student.double()
    teacher.double()
    c = torch.randn(1, 80, 2, dtype=torch.float64)
    out = gaussian_distillation_loss(student, teacher, c, generator=torch.Generator().manual_seed(4))
    assert set(out) == {"loss", "kl", "regulariser", "entropy", "cross_entropy", "x"}

    z = student.draw_noise((1, 1, 512), c, torch.Generator().manual_seed(4), "gaussian")
    x, mu, log_s = student(z, c)
    assert torch.equal(x, out["x"])
    p = teacher.distribution(teacher(x, c))
    q = Gaussian(mu[:, 0], log_s[:, 0])
    draws = Gaussian(q.loc.expand(400, -1, -1), q.log_scale.expand(400, -1, -1)).sample(
        torch.Generator().manual_seed(1)
    )
    terms = (q.log_prob(draws) - p.log_prob(draws)).detach().flatten()
    mc, se = terms.mean().item(), terms.std().item() / math.sqrt(terms.numel())
    assert abs(out["kl"].item() - mc) < 3 * se
    expected_reg = 4.0 * ((p.log_scale - q.log_scale) ** 2).mean()
    torch.testing.assert_close(out["regulariser"], expected_reg)
    torch.testing.assert_close(out["loss"], out["kl"] + expected_reg)

    out["loss"].backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(torch.isfinite(p.grad).all() for p in student.parameters())


def test_clear_errors():
    student, teacher = tiny_pair()
    with pytest.raises(ValueError, match="output='gaussian'"):
        gaussian_distillation_loss(student, teacher, torch.randn(1, 80, 2))
    with pytest.raises(ValueError, match="no density"):
        teacher_log_density(build_teacher("tiny", output="mulaw"), torch.zeros(1, 256, 4))
    with pytest.raises(ValueError, match="at least one draw"):
        distillation_loss(student, teacher, torch.randn(1, 80, 2), n_draws=0)
