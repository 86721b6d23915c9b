"""Noise injection for the teacher (LPCNet's trick): the mu-law noise, the loss it feeds, and its recipe checks."""

from __future__ import annotations

import math

import pytest
import torch

from pwn_lib.audio import mulaw_noise
from pwn_lib.config import RecipeError
from pwn_lib.wavenet import build_teacher, teacher_loss


def expand(y: torch.Tensor, mu: int = 255) -> torch.Tensor:
    """The mu-law expansion y -> x for y >= 0, written out again here so that autograd gives dx/dy independently
    (the expansion is odd, so the slope at -y is the same; at 0 this is the one-sided slope of both halves)."""
    return torch.expm1(y * math.log1p(mu)) / mu


@pytest.mark.parametrize("amplitude", [0.0, 0.003, 0.05, 0.3])
def test_mulaw_noise_has_the_std_of_the_mulaw_slope_times_the_level(amplitude):
    level, n = 0.004, 200_000
    x = torch.full((n,), amplitude, dtype=torch.float64)
    noisy = mulaw_noise(x, level, generator=torch.Generator().manual_seed(0))
    # The slope dx/dy at this amplitude, by autograd through the expansion (not the formula in the docstring).
    y = torch.tensor(math.log1p(255 * amplitude) / math.log1p(255), dtype=torch.float64, requires_grad=True)
    (slope,) = torch.autograd.grad(expand(y), y)
    expected = level * slope.item()
    assert (noisy - x).std().item() == pytest.approx(expected, rel=0.02)
    assert (noisy - x).mean().item() == pytest.approx(0.0, abs=4 * expected / math.sqrt(n) + 1e-3 * expected)


def test_mulaw_noise_level_zero_is_the_identity_and_the_result_stays_in_range():
    x = torch.linspace(-1, 1, 101)
    assert mulaw_noise(x, 0.0) is x
    noisy = mulaw_noise(x, 0.5, generator=torch.Generator().manual_seed(1))
    assert noisy.abs().max() <= 1.0 and not torch.equal(noisy, x)


def batch_of(model, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    hop = model.cfg.hop_length
    return {
        "audio": 0.2 * torch.randn(2, 1, 8 * hop, generator=g).clamp(-4, 4) / 4,
        "mel": torch.randn(2, model.cfg.cond_channels, 8, generator=g),
        "speaker": torch.zeros(2, dtype=torch.long),
    }


def test_teacher_loss_with_input_noise_scores_the_clean_target_after_a_noisy_past():
    torch.manual_seed(0)
    model = build_teacher("tiny").eval()
    batch = batch_of(model)
    x = batch["audio"]
    plain, _ = teacher_loss(model, batch)
    assert plain.item() == teacher_loss(model, batch, input_noise=0.0)[0].item()
    assert model.loss(x, batch["mel"], past=x).item() == plain.item()  # past = x is the plain likelihood

    torch.manual_seed(7)
    noisy_loss, _ = teacher_loss(model, batch, input_noise=0.2)
    torch.manual_seed(7)
    past = mulaw_noise(x, 0.2)
    # Independently: run the full teacher-forced pass on the noisy copy, then score the clean samples bin by bin.
    params = model(past, batch["mel"])
    expected = -model.distribution(params).log_prob(x.squeeze(1)).mean()
    assert noisy_loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert noisy_loss.item() != pytest.approx(plain.item(), rel=1e-6)
    # Scoring the noisy copy itself would be a different number: the target is the clean x.
    assert noisy_loss.item() != pytest.approx(model.loss(past, batch["mel"]).item(), rel=1e-6)


def test_a_noisy_past_reaches_only_later_samples():
    torch.manual_seed(0)
    model = build_teacher("tiny").eval()
    batch = batch_of(model, seed=3)
    x, t = batch["audio"], 300
    past = mulaw_noise(x, 0.05, generator=torch.Generator().manual_seed(2))
    changed = past.clone()
    changed[..., t:] = 0.0  # the past from sample t on: it may move log p(x_s) only for s > t
    before = model.log_prob(x, batch["mel"], past=past)
    after = model.log_prob(x, batch["mel"], past=changed)
    torch.testing.assert_close(before[:, : t + 1], after[:, : t + 1])
    assert not torch.allclose(before[:, t + 1 :], after[:, t + 1 :])
    with pytest.raises(ValueError, match="past has shape"):
        model.log_prob(x, batch["mel"], past=past[..., :-1])


def test_input_noise_is_checked_in_the_recipe(tmp_path):
    from pwn_lib.train import build_parser, resolve

    recipe = tmp_path / "noisy.yaml"
    recipe.write_text("train:\n  input_noise: 0.02  # noise injection\n")
    args = build_parser().parse_args(["teacher", "--preset", "tiny", "--config", str(recipe)])
    assert resolve(args)["train"].input_noise == 0.02
    student = build_parser().parse_args(["student", "--preset", "tiny", "--config", str(recipe), "--teacher", "t"])
    with pytest.raises(RecipeError, match="input_noise .* applies to teachers only"):
        resolve(student)
    recipe.write_text("train:\n  input_noise: -0.1  # wrong\n")
    with pytest.raises(RecipeError, match="input_noise"):
        resolve(build_parser().parse_args(["teacher", "--preset", "tiny", "--config", str(recipe)]))
