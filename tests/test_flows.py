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


def transforms() -> dict[str, Transform]:
    return {
        "elementwise": randomised(ElementwiseAffine(D), 0),
        "reverse": Reverse(),
        "made": randomised(AutoregressiveAffine(MADE(D, hidden=16)), 1),
        "causal_conv": randomised(AutoregressiveAffine(CausalConvConditioner(channels=4, layers=2)), 2),
        "stack": randomised(Compose([autoregressive_stack(D, n_layers=3, hidden=16), ElementwiseAffine(D)]), 3),
    }


def x_batch(seed: int = 10, n: int = 3) -> torch.Tensor:
    return torch.randn(n, D, generator=torch.Generator().manual_seed(seed), dtype=F64)


@pytest.mark.parametrize("name", list(transforms()))
def test_log_det_matches_autograd_jacobian(name: str) -> None:
    transform = transforms()[name]
    for x in x_batch():
        jacobian = torch.autograd.functional.jacobian(lambda v: transform(v[None])[0], x)
        expected = torch.linalg.slogdet(jacobian).logabsdet
        got = transform.log_abs_det_jacobian(x[None], transform(x[None]))[0].sum()
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", list(transforms()))
def test_inverse_undoes_forward(name: str) -> None:
    transform, x = transforms()[name], x_batch()
    torch.testing.assert_close(transform.inverse(transform(x)), x, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(transform(transform.inverse(x)), x, rtol=1e-9, atol=1e-9)


def test_autoregressive_jacobians_are_lower_triangular() -> None:
    for name in ("made", "causal_conv"):
        transform = transforms()[name]
        jacobian = torch.autograd.functional.jacobian(lambda v, t=transform: t(v[None])[0], x_batch()[0])
        assert torch.equal(jacobian.triu(1), torch.zeros_like(jacobian)), name


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
