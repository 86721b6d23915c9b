"""Tests for pwn_lib.flows: log-dets against autograd Jacobians, inverses, and the IAF's one-step shift."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from pwn_lib.distributions import Gaussian
from pwn_lib.flows import (
    IAF,
    MADE,
    MAF,
    AutoregressiveAffine,
    CausalConvConditioner,
    Compose,
    ElementwiseAffine,
    Reverse,
    Transform,
    autoregressive_stack,
    transformed_log_prob,
)

F64 = torch.float64
D = 6


def randomised(module: nn.Module, seed: int, std: float = 0.5) -> nn.Module:
    """Float64 copy with every parameter redrawn, so no layer sits at its identity initialisation."""
    generator = torch.Generator().manual_seed(seed)
    module = module.double()
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=generator, dtype=F64) * std)
    return module


def student_transform(**overrides) -> tuple[Transform, torch.Tensor]:
    """The real student (tiny preset, randomised, float64) as a transform of z: (2, 1, D), with its conditioning."""
    from pwn_lib.student import build_student

    torch.manual_seed(0)
    student = randomised(build_student("tiny", **overrides), 12, std=0.15)  # larger is ill-conditioned
    g = torch.Generator().manual_seed(13)
    c = torch.randn(2, 80, D // 2, generator=g, dtype=F64) if student.cfg.cond_channels else None
    speaker = torch.arange(2) % student.cfg.n_speakers if student.cfg.n_speakers else None
    return student.as_transform(c, speaker, n_samples=D), torch.randn(2, 1, D, generator=g, dtype=F64)


def cases() -> dict[str, tuple[Transform, torch.Tensor]]:
    """Every transform with an input batch: (n, D) vectors, or (B, 1, D) sequences for the student."""
    return {
        "elementwise": (randomised(ElementwiseAffine(D), 0), x_batch()),
        "reverse": (Reverse(), x_batch()),
        "made": (randomised(AutoregressiveAffine(MADE(D, hidden=16)), 1), x_batch()),
        "causal_conv": (randomised(AutoregressiveAffine(CausalConvConditioner(channels=4, layers=2)), 2), x_batch()),
        "stack": (
            randomised(Compose([autoregressive_stack(D, n_layers=3, hidden=16), ElementwiseAffine(D)]), 3),
            x_batch(),
        ),
        "student": student_transform(cond_channels=0),
        "student_conditioned": student_transform(hop_length=2, n_speakers=3),
    }


AUTOREGRESSIVE = ("made", "causal_conv", "student", "student_conditioned")


def x_batch(seed: int = 10, n: int = 3) -> torch.Tensor:
    return torch.randn(n, D, generator=torch.Generator().manual_seed(seed), dtype=F64)


def jacobian_of_one(transform: Transform, x: torch.Tensor) -> torch.Tensor:
    """(D, D) Jacobian of the transform at one batch element ``x: (..., D)`` (batch axis dropped)."""
    return torch.autograd.functional.jacobian(lambda v: transform(v[None])[0].reshape(-1), x).reshape(D, D)


@pytest.mark.parametrize("name", list(cases()))
def test_log_det_matches_autograd_jacobian(name: str) -> None:
    transform, batch = cases()[name]
    for i, x in enumerate(batch):
        if name.startswith("student"):  # the conditioning is per batch row: score the whole batch instead
            jacobian = torch.autograd.functional.jacobian(lambda v, i=i: transform(v)[i].reshape(-1), batch)[:, i]
            jacobian = jacobian.reshape(D, D)
            got = transform.log_abs_det_jacobian(batch, transform(batch))[i].sum()
        else:
            jacobian = jacobian_of_one(transform, x)
            got = transform.log_abs_det_jacobian(x[None], transform(x[None]))[0].sum()
        expected = torch.linalg.slogdet(jacobian).logabsdet
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", list(cases()))
def test_inverse_undoes_forward(name: str) -> None:
    transform, x = cases()[name]
    torch.testing.assert_close(transform.inverse(transform(x)), x, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(transform(transform.inverse(x)), x, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", AUTOREGRESSIVE)
def test_autoregressive_jacobians_are_lower_triangular_and_use_the_past(name: str) -> None:
    transform, batch = cases()[name]
    jacobian = torch.autograd.functional.jacobian(lambda v: transform(v)[0].reshape(-1), batch)[:, 0].reshape(D, D)
    assert torch.equal(jacobian.triu(1), torch.zeros_like(jacobian)), name
    assert jacobian.tril(-1).abs().max() > 1e-3, f"{name}: output t ignores the past, the test would be vacuous"


@pytest.mark.parametrize("conditioner", [MADE(12, hidden=32), CausalConvConditioner(channels=8, layers=3)])
def test_iaf_one_step_shift(conditioner: nn.Module) -> None:
    """mu_t, s_t ignore z_t..z_T and depend on z_<t: the IAF's x_t = z_t s(z_<t) + mu(z_<t)."""
    conditioner = randomised(conditioner, 4)
    generator = torch.Generator().manual_seed(5)
    z = torch.randn(1, 12, generator=generator, dtype=F64)
    mu, log_s = conditioner(z)
    for t in range(1, 12):
        future = z.clone()
        future[:, t:] = torch.randn(1, 12 - t, generator=generator, dtype=F64) * 3
        mu_f, log_s_f = conditioner(future)
        assert torch.equal(mu_f[:, : t + 1], mu[:, : t + 1]) and torch.equal(log_s_f[:, : t + 1], log_s[:, : t + 1])
        past = z.clone()
        past[:, t - 1] += 1.0
        mu_p, log_s_p = conditioner(past)
        assert torch.equal(mu_p[:, :t], mu[:, :t])
        assert (mu_p[:, t] - mu[:, t]).abs().item() > 1e-6 and (log_s_p[:, t] - log_s[:, t]).abs().item() > 1e-6


def test_made_output_zero_is_constant_and_initial_flow_is_identity() -> None:
    made = MADE(D, hidden=16)
    x = x_batch().float()
    mu, log_s = made(x)
    assert torch.equal(mu, torch.zeros_like(mu)) and torch.equal(log_s, torch.zeros_like(log_s))
    made = randomised(made, 6)
    mu, _ = made(x_batch(n=5))
    assert torch.allclose(mu[:, 0], mu[0, 0].expand(5))


@pytest.mark.parametrize("flow_cls", [MAF, IAF])
@pytest.mark.parametrize("base", ["normal", "logistic"])
def test_flow_log_prob_is_change_of_variables(flow_cls: type, base: str) -> None:
    flow = flow_cls(randomised(autoregressive_stack(D, n_layers=2, hidden=16), 7), base=base)
    for x in x_batch(n=2):
        inverse_jacobian = torch.autograd.functional.jacobian(lambda v: flow.inverse(v[None])[0], x)
        z = flow.inverse(x[None])
        expected = flow.base_log_prob(z).sum() + torch.linalg.slogdet(inverse_jacobian).logabsdet
        torch.testing.assert_close(flow.log_prob(x[None]).sum(), expected, rtol=1e-10, atol=1e-10)


def test_maf_and_iaf_sample_then_score() -> None:
    transform = randomised(autoregressive_stack(D, n_layers=2, hidden=16), 8)
    iaf, maf = IAF(transform, base="logistic"), MAF(transform, base="logistic")
    generator = torch.Generator().manual_seed(9)
    x, log_p = iaf.sample_and_log_prob(4, D, generator)
    torch.testing.assert_close(log_p, iaf.log_prob(x), rtol=1e-9, atol=1e-9)
    x_maf = maf.sample(4, D, generator)
    torch.testing.assert_close(maf.forward(maf.inverse(x_maf)), x_maf, rtol=1e-9, atol=1e-9)


def test_transformed_log_prob_of_an_affine_gaussian_is_a_gaussian() -> None:
    affine = ElementwiseAffine(1).double()
    with torch.no_grad():
        affine.loc.fill_(0.7)
        affine.log_scale.fill_(-0.3)
    x = torch.linspace(-3, 3, 13, dtype=F64)[:, None]
    base = Gaussian(torch.zeros(1, dtype=F64), torch.zeros(1, dtype=F64))
    expected = Gaussian(torch.tensor(0.7, dtype=F64), torch.tensor(-0.3, dtype=F64)).log_prob(x)
    torch.testing.assert_close(transformed_log_prob(affine, base.log_prob, x), expected)


def test_maf_fits_a_correlated_gaussian() -> None:
    """One MADE layer can represent x2 | x1 ~ N(0.8 x1, 0.6^2): its NLL must reach the true entropy."""
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(11)
    x1 = torch.randn(4096, generator=generator)
    data = torch.stack([x1, 0.8 * x1 + 0.6 * torch.randn(4096, generator=generator)], dim=1)
    flow = MAF(Compose([AutoregressiveAffine(MADE(2, hidden=16))]))
    optimiser = torch.optim.Adam(flow.parameters(), lr=2e-2)
    for _ in range(300):
        optimiser.zero_grad()
        loss = -flow.log_prob(data).sum(-1).mean()
        loss.backward()
        optimiser.step()
    entropy = math.log(2 * math.pi * math.e) + math.log(0.6)
    assert loss.item() == pytest.approx(entropy, abs=0.05)


def test_unknown_base_is_refused() -> None:
    with pytest.raises(ValueError, match="'uniform'"):
        IAF(Reverse(), base="uniform")
