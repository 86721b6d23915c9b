"""Tests for pwn_lib.wavenet: causality, receptive field, upsampling, and cached == teacher-forced generation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pwn_lib.config import TEACHER_PRESETS, WaveNetConfig
from pwn_lib.layers import CausalConv1d, ConditionUpsampler, ResidualBlock, stride_factors
from pwn_lib.wavenet import WaveNet, build_teacher

LOG_MEL_MEAN, LOG_MEL_STD = -5.0, 2.5  # any standardisation: the upsampler applies the one it is given

HOP = 8
N_MELS = 5


def small_config(kernel_size: int = 3, conditioned: bool = True, speakers: int = 0, **overrides) -> WaveNetConfig:
    """Six layers in two stacks (dilations 1, 2, 4, 1, 2, 4) with tiny channel counts."""
    values = dict(
        layers=6,
        stacks=2,
        residual_channels=8,
        gate_channels=16,
        skip_channels=8,
        kernel_size=kernel_size,
        n_mixtures=3,
        cond_channels=N_MELS if conditioned else 0,
        hop_length=HOP,
        n_speakers=speakers,
        speaker_dim=4,
    )
    values.update(overrides)
    return WaveNetConfig(**values)


def inputs(cfg: WaveNetConfig, batch: int, frames: int, seed: int = 0):
    """Random log-mel (B, n_mels, frames) or None, and speaker ids (B,) or None."""
    g = torch.Generator().manual_seed(seed)
    c = torch.randn(batch, cfg.cond_channels, frames, generator=g) if cfg.cond_channels else None
    speaker = torch.randint(0, cfg.n_speakers, (batch,), generator=g) if cfg.n_speakers else None
    return c, speaker


def network_output(model: WaveNet, x, c, speaker) -> torch.Tensor:
    """The head's output before the location prior rho * x[t-1] is added: (B, C_out, T)."""
    seen = {}
    hook = model.head.register_forward_hook(lambda module, args, out: seen.setdefault("out", out))
    with torch.no_grad():
        model(x, c, speaker)
    hook.remove()
    return seen["out"]


@pytest.mark.parametrize("kernel_size", [2, 3])
@pytest.mark.parametrize("conditioned", [True, False])
@pytest.mark.parametrize("speakers", [0, 3])
def test_cached_generation_equals_teacher_forced_pass(kernel_size, conditioned, speakers):
    """float64, so that a wrong queue tap shows far above rounding; every row's network output must vary."""
    torch.manual_seed(100 + kernel_size * 10 + conditioned * 2 + speakers)  # seeds whose rows all stay alive
    model = WaveNet(small_config(kernel_size, conditioned, speakers)).double()
    with torch.no_grad():  # a larger last layer than training's 0.1x start, so the network's part is not tiny
        model.head[-1].weight.mul_(30.0)
    frames = -(-2 * model.receptive_field // HOP) + 1  # more than twice the receptive field
    c, speaker = inputs(model.cfg, 2, frames)
    c = c.double() if c is not None else None
    n = frames * HOP
    x, params = model.generate(
        c, n_samples=n, speaker=speaker, progress=False, return_params=True, generator=torch.Generator().manual_seed(1)
    )
    batch = 1 if c is None and speaker is None else 2  # unconditional generation draws one waveform
    assert x.shape == (batch, 1, n) and params.shape == (batch, 9, n) and x.dtype == torch.float64
    assert n >= 2 * model.receptive_field
    with torch.no_grad():
        reference = model(x, c, speaker)
    assert (params - reference).abs().max().item() < 1e-10
    # Each row's own network output (not just the rho * x[t-1] prior) must move, or the queues go untested.
    varying = network_output(model, x, c, speaker).std(dim=-1).amax(dim=1)
    assert (varying > 1e-3).all(), f"a batch row has a dead head: time-std per row {varying.tolist()}"


def test_dead_head_check_catches_a_row_whose_output_is_constant():
    torch.manual_seed(0)
    model = WaveNet(small_config(speakers=3)).double()
    with torch.no_grad():
        model.head[1].bias.fill_(-1e3)  # every head ReLU off: params are a constant plus the prior
    c, speaker = inputs(model.cfg, 2, 4)
    x = model.generate(c.double(), speaker=speaker, progress=False, generator=torch.Generator().manual_seed(1))
    assert (network_output(model, x, c.double(), speaker).std(dim=-1).amax(dim=1) < 1e-12).all()


def test_generation_keeps_a_float64_model_in_float64():
    torch.manual_seed(0)
    model = WaveNet(small_config(speakers=2)).double()
    c, speaker = inputs(model.cfg, 2, 6)
    fast = model.generate(c.double(), speaker=speaker, progress=False, generator=torch.Generator().manual_seed(3))
    slow = model.generate_naive(c.double(), speaker=speaker, progress=False, generator=torch.Generator().manual_seed(3))
    assert fast.dtype == slow.dtype == torch.float64
    assert torch.equal(fast, slow)
    assert model.log_prob(fast, c.double(), speaker).dtype == torch.float64


@pytest.mark.parametrize("output", ["mol", "gaussian"])
def test_location_prior_adds_rho_times_the_previous_sample_in_both_passes(output):
    torch.manual_seed(0)
    absolute = WaveNet(small_config(output=output, previous_sample_weight=0.0))
    relative = WaveNet(small_config(output=output, previous_sample_weight=0.95))
    relative.load_state_dict(absolute.state_dict())
    c, _ = inputs(absolute.cfg, 2, 4)
    x = torch.rand(2, 1, 4 * HOP) - 0.5
    with torch.no_grad():
        difference = relative(x, c) - absolute(x, c)
    previous = torch.nn.functional.pad(x, (1, 0))[..., :-1]
    location = slice(3, 6) if output == "mol" else slice(0, 1)
    torch.testing.assert_close(difference[:, location], 0.95 * previous.expand_as(difference[:, location]))
    difference[:, location] = 0
    assert difference.abs().max() == 0, "only the location channels may change"
    generated, params = relative.generate(
        c, progress=False, return_params=True, generator=torch.Generator().manual_seed(1)
    )
    with torch.no_grad():
        assert (params - relative(generated, c)).abs().max().item() < 1e-5


@pytest.mark.parametrize("output", ["gaussian", "mulaw"])
def test_cached_generation_other_output_heads(output):
    torch.manual_seed(0)
    model = WaveNet(small_config(output=output))
    c, _ = inputs(model.cfg, 1, 6)
    x, params = model.generate(c, progress=False, return_params=True, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (params - model(x, c)).abs().max().item() < 1e-5


def test_naive_and_cached_generators_draw_the_same_samples():
    torch.manual_seed(0)
    model = WaveNet(small_config(speakers=2))
    c, speaker = inputs(model.cfg, 2, 6)
    fast = model.generate(c, speaker=speaker, progress=False, generator=torch.Generator().manual_seed(3))
    slow = model.generate_naive(c, speaker=speaker, progress=False, generator=torch.Generator().manual_seed(3))
    other = model.generate(c, speaker=speaker, progress=False, generator=torch.Generator().manual_seed(4))
    assert (fast - slow).abs().max().item() < 1e-4  # equal up to rare bin flips from float rounding
    assert (fast - other).abs().max().item() > 1e-3


def influencing_inputs(model: WaveNet, t: int, n: int) -> torch.Tensor:
    """Indices s of the inputs x[s] with a non-zero gradient of params[..., t] (float64)."""
    x = (torch.rand(1, 1, n, dtype=torch.float64) * 2 - 1).requires_grad_()
    model(x)[..., t].sum().backward()
    return torch.nonzero(x.grad[0, 0]).flatten()


@pytest.mark.parametrize("kernel_size", [2, 3])
def test_receptive_field_formula_matches_gradient(kernel_size):
    torch.manual_seed(0)
    model = WaveNet(small_config(kernel_size, conditioned=False)).double()
    rf = model.receptive_field
    assert rf == (kernel_size - 1) * (1 + 2 + 4) * 2 + 1
    t = rf + 5
    seen = influencing_inputs(model, t, t + 10)
    assert seen.tolist() == list(range(t - rf, t))  # exactly the previous rf samples, never x[t] itself


def test_output_at_t_does_not_depend_on_present_or_future():
    torch.manual_seed(0)
    cfg = small_config(conditioned=False)
    model = WaveNet(cfg).double()
    x = torch.rand(1, 1, 64, dtype=torch.float64) * 2 - 1
    t = 40
    changed = x.clone()
    changed[..., t:] = torch.rand(1, 1, 64 - t, dtype=torch.float64)
    with torch.no_grad():
        before, after = model(x), model(changed)
    assert torch.allclose(before[..., : t + 1], after[..., : t + 1], atol=1e-12, rtol=0)
    assert (before[..., t + 1] - after[..., t + 1]).abs().max() > 1e-6  # x[t] does reach step t + 1


def test_causal_conv_keeps_length_and_ignores_the_future():
    conv = CausalConv1d(2, 3, kernel_size=3, dilation=4).double()
    x = torch.randn(1, 2, 30, dtype=torch.float64)
    y = conv(x)
    x2 = x.clone()
    x2[..., 20:] = 0
    assert y.shape == (1, 3, 30)
    assert torch.allclose(conv(x2)[..., :20], y[..., :20])


def test_residual_block_shapes_with_and_without_skip():
    x = torch.randn(2, 8, 20)
    c = torch.randn(2, 5, 20)
    g = torch.randn(2, 4)
    out, skip = ResidualBlock(8, 16, 6, 3, 2, cond_channels=5, global_channels=4)(x, c, g)
    assert out.shape == (2, 8, 20) and skip.shape == (2, 6, 20)
    out, skip = ResidualBlock(8, 16, 0, 3, 2)(x)
    assert out.shape == (2, 8, 20) and skip is None
    with pytest.raises(ValueError, match="pass c"):
        ResidualBlock(8, 16, 6, 3, 2, cond_channels=5)(x)


@pytest.mark.parametrize("hop", [8, 12, 256, 300])
@pytest.mark.parametrize("mode", ["transpose", "repeat"])
def test_upsampler_output_is_frames_times_hop(hop, mode):
    up = ConditionUpsampler(N_MELS, hop, mode)
    assert up(torch.randn(2, N_MELS, 7)).shape == (2, N_MELS, 7 * hop)


@pytest.mark.parametrize("hop", [256, 300])
def test_stride_factors_multiply_to_hop(hop):
    factors = stride_factors(hop)
    assert torch.tensor(factors).prod().item() == hop and max(factors) <= 16


@pytest.mark.parametrize("mode", ["transpose", "repeat"])
def test_upsampler_starts_as_interpolation_and_frames_land_on_their_samples(mode):
    up = ConditionUpsampler(N_MELS, 16, mode, LOG_MEL_MEAN, LOG_MEL_STD)
    constant = up(torch.full((1, N_MELS, 5), -4.0))
    assert torch.allclose(constant, torch.tensor((-4.0 - LOG_MEL_MEAN) / LOG_MEL_STD))  # standardised, edges too
    step = torch.zeros(1, N_MELS, 5)
    step[..., 2] = 1.0  # frame 2 covers samples [32, 48)
    response = up(LOG_MEL_MEAN + LOG_MEL_STD * step)[0, 0]
    assert response[32:48].min() > 0.45 and response[:16].abs().max() == 0 and response[64:].abs().max() == 0


def test_transpose_upsampler_starts_as_linear_interpolation_between_frame_centres():
    frames = torch.randn(1, 1, 6, dtype=torch.float64)
    up = ConditionUpsampler(1, 16, "transpose", LOG_MEL_MEAN, LOG_MEL_STD).double()
    centres = torch.arange(6, dtype=torch.float64) * 16 + 7.5
    t = torch.arange(96, dtype=torch.float64)
    expected = torch.from_numpy(np.interp(t.numpy(), centres.numpy(), frames[0, 0].numpy()))
    assert torch.allclose(up(LOG_MEL_MEAN + LOG_MEL_STD * frames)[0, 0], expected)


def test_loss_is_finite_and_shapes_under_bf16_autocast():
    torch.manual_seed(0)
    model = WaveNet(small_config(speakers=2))
    x = torch.rand(2, 1, 64) * 2 - 1
    c, speaker = inputs(model.cfg, 2, 8)
    assert model.log_prob(x, c, speaker).shape == (2, 64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        params = model(x, c, speaker)
        loss = model.loss(x, c, speaker)
    loss.backward()
    assert params.dtype == torch.float32  # the head runs in fp32: mixture means need > 8 mantissa bits
    assert torch.isfinite(loss) and loss.dtype == torch.float32
    assert abs(loss.item() - model.loss(x, c, speaker).item()) < 0.05 * abs(loss.item())
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_missing_or_unexpected_conditioning_is_a_clear_error():
    model = WaveNet(small_config())
    x = torch.zeros(1, 1, 32)
    with pytest.raises(ValueError, match="pass c"):
        model(x)
    with pytest.raises(ValueError, match="frames"):
        model(x, torch.zeros(1, N_MELS, 2))
    with pytest.raises(ValueError, match="cond_channels=0"):
        WaveNet(small_config(conditioned=False))(x, torch.zeros(1, N_MELS, 4))


def test_presets_build_with_the_documented_receptive_fields():
    assert build_teacher("tiny").receptive_field == 2 * (1 + 2) * 2 + 1
    assert TEACHER_PRESETS["paper"].kernel_size == 3  # the paper: 30 layers, 3 stacks of 1..512, filter 3
    assert build_teacher("paper").receptive_field == 2 * 1023 * 3 + 1
    with pytest.raises(ValueError, match="multiple of stacks"):
        build_teacher("tiny", layers=5)


def test_overfit_a_sine_then_generate_it():
    """End to end: 300 Adam steps on a 1 kHz sine, then the cached generator's output peaks at 1 kHz."""
    torch.manual_seed(0)
    rate, f0, n = 16_000, 1_000.0, 1024
    x = (0.5 * torch.sin(2 * torch.pi * f0 * torch.arange(n) / rate))[None, None]
    model = WaveNet(
        WaveNetConfig(
            layers=4, stacks=1, residual_channels=16, gate_channels=32, skip_channels=16, n_mixtures=1, cond_channels=0
        )
    )
    untrained = model.generate(n_samples=n, progress=False, generator=torch.Generator().manual_seed(0))[0, 0]
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(300):
        loss = model.loss(x)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    y = model.generate(n_samples=n, progress=False, generator=torch.Generator().manual_seed(0))[0, 0]

    def peak_hz(signal: torch.Tensor) -> float:
        spectrum = torch.fft.rfft(signal * torch.hann_window(n)).abs()
        return torch.fft.rfftfreq(n, 1 / rate)[spectrum.argmax()].item()

    assert abs(peak_hz(y) - f0) <= rate / n  # within one FFT bin
    assert abs(y.std().item() - 0.5 / 2**0.5) < 0.05
    assert abs(peak_hz(untrained) - f0) > rate / n or abs(untrained.std().item() - 0.5 / 2**0.5) >= 0.05


# ----- the conditioning network before the upsampler (layers.ConditionContext)
def test_conditioning_network_starts_as_the_identity_and_sees_six_frames_each_side():
    """At init a teacher with cond_layers equals one without (same weights); after a nudge of its output layer,
    changing frame k moves the upsampled conditioning on frames k - 6 .. k + 6 (3 layers of kernel 5) only."""
    torch.manual_seed(0)
    plain = WaveNet(small_config())
    grown = WaveNet(small_config(cond_layers=3, cond_hidden=6))
    missing, unexpected = grown.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(key.startswith("upsample.context.") for key in missing)
    frames = 20
    c, _ = inputs(plain.cfg, 2, frames)
    x = torch.rand(2, 1, frames * HOP) - 0.5
    with torch.no_grad():
        assert torch.equal(plain(x, c), grown(x, c))
        grown.upsample.context.out.weight.normal_()
        k = 10
        moved = c.clone()
        moved[:, :, k] += 1.0
        changed = (grown.upsample.context(moved) - grown.upsample.context(c)).abs().amax(dim=(0, 1))
    assert (changed[k - 6 : k + 7] > 0).all() and (changed[: k - 6] == 0).all() and (changed[k + 7 :] == 0).all()


def test_cached_generation_equals_teacher_forced_pass_with_a_conditioning_network():
    torch.manual_seed(7)
    model = WaveNet(small_config(cond_layers=2, cond_hidden=6)).double()
    with torch.no_grad():
        model.upsample.context.out.weight.normal_()
        model.head[-1].weight.mul_(30.0)
    frames = -(-2 * model.receptive_field // HOP) + 1
    c, _ = inputs(model.cfg, 2, frames)
    x, params = model.generate(
        c.double(), progress=False, return_params=True, generator=torch.Generator().manual_seed(1)
    )
    with torch.no_grad():
        assert (params - model(x, c.double())).abs().max().item() < 1e-10
