"""The IAF student: closed-form composition, strict causality in z, receptive field, shapes and scale."""

from __future__ import annotations

import pytest
import torch

from pwn_lib.flows import AutoregressiveAffine, collapse_affine_steps
from pwn_lib.student import INIT_OUTPUT_STD, IAFStudent, build_student, flow_dilations


def random_student(seed: int = 0, **overrides) -> IAFStudent:
    """A float64 tiny student whose last layers are large enough that every flow really moves x."""
    torch.manual_seed(seed)
    student = build_student("tiny", **overrides).double()
    with torch.no_grad():
        for flow in student.flows:
            flow.head[-1].weight.normal_(std=0.3)
            flow.head[-1].bias.normal_(std=0.3)
    return student


def inputs(student: IAFStudent, batch: int = 2, frames: int = 2, seed: int = 1):
    """(z, c, speaker) in float64 for ``student``: z (B, 1, T), c (B, n_mels, F) or None, speaker (B,) or None."""
    g = torch.Generator().manual_seed(seed)
    cfg = student.cfg
    length = frames * cfg.hop_length if cfg.cond_channels else 64
    z = torch.randn(batch, 1, length, generator=g, dtype=torch.float64)
    c = torch.randn(batch, cfg.cond_channels, frames, generator=g, dtype=torch.float64) if cfg.cond_channels else None
    speaker = torch.arange(batch) % cfg.n_speakers if cfg.n_speakers else None
    return z, c, speaker


CONFIGS = [dict(), dict(cond_channels=0), dict(n_speakers=3)]


@pytest.mark.parametrize("overrides", CONFIGS)
def test_closed_form_equals_flows_applied_one_after_another(overrides):
    student = random_student(**overrides)
    z, c, speaker = inputs(student)
    x, mu_tot, log_s_tot = student(z, c, speaker)

    cu, g = student.conditioning(c, speaker, z.shape[-1])
    mus, scales, steps, x_seq = [], [], [], z
    for flow in student.flows:
        mu, log_s = flow.shift_and_log_scale(x_seq, cu, g)
        x_seq = x_seq * torch.exp(log_s) + mu
        mus.append(mu)
        scales.append(torch.exp(log_s))
        steps.append((mu, log_s))
    s_expected = torch.stack(scales).prod(dim=0)
    mu_expected = sum(
        mus[i] * torch.stack(scales[i + 1 :]).prod(dim=0) if i + 1 < len(mus) else mus[i] for i in range(len(mus))
    )

    torch.testing.assert_close(x, x_seq, rtol=0, atol=0)
    torch.testing.assert_close(torch.exp(log_s_tot), s_expected, rtol=1e-12, atol=0)
    torch.testing.assert_close(mu_tot, mu_expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(x, z * torch.exp(log_s_tot) + mu_tot, rtol=1e-12, atol=1e-12)
    assert max(float(m.detach().abs().max()) for m in mus) > 0.1, "flows are near-identity: the test would be vacuous"
    # The explicit closed form (pwn_lib.flows.collapse_affine_steps) gives the same pair.
    mu_collapsed, log_s_collapsed = collapse_affine_steps(steps)
    torch.testing.assert_close(mu_collapsed, mu_expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(log_s_collapsed, log_s_tot, rtol=1e-12, atol=1e-12)


def test_jacobian_is_lower_triangular_with_s_tot_on_the_diagonal():
    """x = g(z) is autoregressive in z: dx_t/dz_u = 0 for u > t and dx_t/dz_t = s_tot_t."""
    student = random_student(cond_channels=0)
    z = torch.randn(1, 1, 40, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    jac = torch.autograd.functional.jacobian(lambda v: student(v)[0], z)[0, 0, :, 0, 0, :]  # (T, T)
    _, _, log_s_tot = student(z)
    assert torch.equal(torch.triu(jac, diagonal=1), torch.zeros_like(jac))
    torch.testing.assert_close(torch.diagonal(jac), torch.exp(log_s_tot[0, 0]), rtol=1e-10, atol=0)


@pytest.mark.parametrize("overrides", CONFIGS)
@pytest.mark.parametrize("t", [0, 1, 37, 63])
def test_mu_and_s_at_t_ignore_z_from_t_on_but_depend_on_the_past(overrides, t):
    student = random_student(**overrides)
    z, c, speaker = inputs(student)
    x, mu_tot, log_s_tot = student(z, c, speaker)

    z_future = z.clone()
    z_future[..., t:] += torch.randn_like(z_future[..., t:])
    x2, mu2, log_s2 = student(z_future, c, speaker)
    assert torch.equal(mu2[..., : t + 1], mu_tot[..., : t + 1]), "mu_tot,t must not depend on z_t..z_T"
    assert torch.equal(log_s2[..., : t + 1], log_s_tot[..., : t + 1]), "s_tot,t must not depend on z_t..z_T"
    assert torch.equal(x2[..., :t], x[..., :t])
    assert not torch.equal(x2[..., t], x[..., t]), "x_t must depend on z_t"

    if t > 0:
        z_past = z.clone()
        z_past[..., t - 1] += 1.0
        _, mu3, log_s3 = student(z_past, c, speaker)
        assert (mu3[..., t] != mu_tot[..., t]).all(), "mu_tot,t must depend on z_{t-1}"
        assert (log_s3[..., t] != log_s_tot[..., t]).all(), "s_tot,t must depend on z_{t-1}"


def test_receptive_field_matches_the_gradient_support():
    student = random_student(cond_channels=0)
    z = torch.randn(1, 1, 90, dtype=torch.float64, requires_grad=True)
    t = 80
    student(z)[0][0, 0, t].backward()
    support = (z.grad[0, 0] != 0).nonzero().flatten()
    assert support.max().item() == t
    assert t - support.min().item() + 1 == student.receptive_field
    # 4 flows, each (k - 1) * (1 + 2) + 1 = 7 past samples, plus z_t itself
    assert student.receptive_field == 4 * 7 + 1


def test_dilations_cycle_up_to_max_dilation():
    assert flow_dilations(10, 32) == [1, 2, 4, 8, 16, 32, 1, 2, 4, 8]
    assert flow_dilations(30, 512) == [2**i for i in range(10)] * 3
    assert [f.dilations for f in build_student("course").flows][3] == [1, 2, 4, 8, 16, 32, 1, 2, 4, 8]
    with pytest.raises(ValueError, match="power of two"):
        flow_dilations(4, 24)


def test_shapes_initial_scale_and_sampling():
    torch.manual_seed(0)
    student = build_student("tiny")
    c = torch.randn(3, 80, 4)
    g = torch.Generator().manual_seed(5)
    z = student.draw_noise((3, 1, 4 * 256), c, g)
    x, mu_tot, log_s_tot = student(z, c)
    assert x.shape == mu_tot.shape == log_s_tot.shape == (3, 1, 1024)
    assert 0.5 * INIT_OUTPUT_STD < x.std().item() < 2 * INIT_OUTPUT_STD
    first = student.sample(c, generator=torch.Generator().manual_seed(7))
    again = student.sample(c, generator=torch.Generator().manual_seed(7))
    assert first.shape == (3, 1, 1024) and torch.equal(first, again)
    assert first.abs().max() <= 1.0
    assert student.sample(c, noise="gaussian").shape == (3, 1, 1024)


def test_log_scale_is_floored_per_flow():
    student = build_student("tiny", log_scale_min=-2.0)
    with torch.no_grad():
        for flow in student.flows:
            flow.head[-1].bias[1] = -50.0
    _, _, log_s_tot = student(torch.randn(1, 1, 512), torch.randn(1, 80, 2))
    assert torch.allclose(log_s_tot, torch.full_like(log_s_tot, -2.0 * len(student.flows)), atol=0.1)


def test_clear_errors():
    student = build_student("tiny")
    with pytest.raises(ValueError, match="frames"):
        student(torch.randn(1, 1, 500), torch.randn(1, 80, 2))
    with pytest.raises(ValueError, match="cond_channels"):
        student(torch.randn(1, 1, 512))
    with pytest.raises(ValueError, match="noise"):
        student.sample(torch.randn(1, 80, 2), noise="uniform")
    with pytest.raises(ValueError, match="unknown preset"):
        build_student("huge")


def test_bf16_autocast_keeps_the_composition_in_fp32_and_close_to_fp32():
    torch.manual_seed(0)
    student = build_student("tiny")
    c = torch.randn(2, 80, 2)
    z = student.draw_noise((2, 1, 512), c, torch.Generator().manual_seed(0))
    x32, mu32, log_s32 = student(z, c)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        x16, mu16, log_s16 = student(z, c)
    assert x16.dtype == mu16.dtype == log_s16.dtype == torch.float32
    assert (x16 - x32).abs().max() < 0.02 * x32.abs().max()


def test_every_flow_is_the_flows_modules_autoregressive_affine():
    student = build_student("tiny")
    assert all(isinstance(flow, AutoregressiveAffine) for flow in student.flows)
