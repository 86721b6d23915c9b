"""Tests for pwn_lib.distributions: every formula checked against an independent computation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import special, stats

from pwn_lib.audio import mulaw_decode, mulaw_encode
from pwn_lib.config import WaveNetConfig
from pwn_lib.distributions import (
    DiscretizedMixLogistics,
    Gaussian,
    Logistic,
    MuLawCategorical,
    bin_centres,
    bin_width,
    gaussian_kl,
    output_channels,
    output_distribution,
)

F64 = torch.float64


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def mol_params(logits, means, log_scales) -> torch.Tensor:
    """(1, 3K, 1) float64 params from three length-K lists."""
    return torch.tensor([logits + means + log_scales], dtype=F64)[..., None]


def random_mol_params(k: int, n: int, generator: torch.Generator) -> torch.Tensor:
    """(1, 3K, N) float64 params with extreme scales and means at (and beyond) the edges."""
    logits = torch.randn(1, k, n, generator=generator, dtype=F64) * 3
    means = torch.rand(1, k, n, generator=generator, dtype=F64) * 2.4 - 1.2
    means[0, 0, :4] = torch.tensor([-1.0, 1.0, -1.0, 1.0], dtype=F64)
    log_scales = torch.rand(1, k, n, generator=generator, dtype=F64) * 14 - 12
    log_scales[0, 0, :4] = torch.tensor([-12.0, -12.0, 3.0, 3.0], dtype=F64)
    return torch.cat([logits, means, log_scales], dim=1)


def all_bin_probs(params: torch.Tensor, bits: int, log_scale_min: float = -12.0) -> torch.Tensor:
    """pmf over every bin for each of the N columns of ``params: (1, 3K, N)`` -> (2**bits, N)."""
    n = params.shape[-1]
    pieces = []
    for chunk in bin_centres(bits, dtype=params.dtype).split(8192):
        dist = DiscretizedMixLogistics(params.expand(chunk.numel(), -1, -1), bits, log_scale_min)
        pieces.append(dist.log_prob(chunk[:, None].expand(-1, n)).exp())
    return torch.cat(pieces)


# ---------------------------------------------------------------- Logistic


def test_logistic_matches_scipy() -> None:
    loc, log_scale = torch.tensor(0.3, dtype=F64), torch.tensor(-1.2, dtype=F64)
    x = torch.linspace(-3, 3, 41, dtype=F64)
    ref = stats.logistic(loc=0.3, scale=math.exp(-1.2))
    np.testing.assert_allclose(Logistic(loc, log_scale).log_prob(x).numpy(), ref.logpdf(x.numpy()), rtol=1e-10)
    np.testing.assert_allclose(Logistic(loc, log_scale).cdf(x).numpy(), ref.cdf(x.numpy()), rtol=1e-10)


def test_logistic_entropy_matches_monte_carlo() -> None:
    dist = Logistic(torch.full((200_000,), 0.5, dtype=F64), torch.full((200_000,), -0.7, dtype=F64))
    log_p = dist.log_prob(dist.sample(gen(1)))
    estimate, stderr = -log_p.mean().item(), log_p.std().item() / math.sqrt(log_p.numel())
    assert abs(estimate - (-0.7 + 2.0)) < 4 * stderr
    assert dist.entropy()[0].item() == pytest.approx(1.3)


# ---------------------------------------------------------------- discretized mixture of logistics


@pytest.mark.parametrize("bits", [8, 16])
def test_mol_probabilities_sum_to_one(bits: int) -> None:
    params = random_mol_params(k=5, n=12, generator=gen(bits))
    totals = all_bin_probs(params, bits).sum(dim=0)
    torch.testing.assert_close(totals, torch.ones_like(totals), atol=1e-4, rtol=0)


def test_mol_sums_to_one_in_float32_with_teacher_floor() -> None:
    params = random_mol_params(k=10, n=6, generator=gen(3)).float()
    totals = all_bin_probs(params, bits=16, log_scale_min=-9.0).double().sum(dim=0)
    torch.testing.assert_close(totals, torch.ones_like(totals), atol=1e-4, rtol=0)


def test_edge_bins_are_exactly_the_first_and_last_bins() -> None:
    """16-bit bins near -1 are ordinary bins; only bin 0 collects the left tail (no +-0.999 thresholds)."""
    bits, w = 16, bin_width(16)
    mean, log_scale = -0.9995, -8.0
    dist = DiscretizedMixLogistics(mol_params([0.0], [mean], [log_scale]).expand(1, 3, 4), bits)
    x = torch.tensor([[-1.5, -1.0, -1.0 + w, -0.9995]], dtype=F64)
    ref = Logistic(torch.tensor(mean, dtype=F64), torch.tensor(log_scale, dtype=F64))
    centre = torch.round((x[0, 3] + 1) / w) * w - 1
    expected = torch.stack(
        [
            ref.cdf(torch.tensor(-1 + w / 2, dtype=F64)),
            ref.cdf(torch.tensor(-1 + w / 2, dtype=F64)),
            ref.cdf(torch.tensor(-1 + 1.5 * w, dtype=F64)) - ref.cdf(torch.tensor(-1 + 0.5 * w, dtype=F64)),
            ref.cdf(centre + w / 2) - ref.cdf(centre - w / 2),
        ]
    ).log()
    torch.testing.assert_close(dist.log_prob(x)[0], expected, rtol=1e-9, atol=0)
    top = DiscretizedMixLogistics(mol_params([0.0], [0.99], [-3.0]), bits).log_prob(torch.ones(1, 1, dtype=F64))
    edge = torch.sigmoid(torch.tensor((1 - w / 2 - 0.99) / math.exp(-3.0))).item()
    assert top.item() == pytest.approx(math.log(1 - edge))


def test_tiny_bin_masses_match_the_pdf_times_width_fallback() -> None:
    """Far tails and wide scales: naive cdf differences underflow in float32, the stable form does not."""
    bits, w = 16, bin_width(16)
    params = mol_params([0.0], [0.0], [-9.0]).expand(1, 3, 3).clone()
    params[0, 2, 2] = 2.0  # a scale far wider than a bin
    x = torch.tensor([[0.004, -0.006, 0.3]], dtype=F64)
    dist32 = DiscretizedMixLogistics(params.float(), bits)
    centre = (torch.round((x + 1) / w) * w - 1).float()
    fallback = dist32.log_density(centre) + math.log(w)
    got = dist32.log_prob(x.float())
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, fallback, rtol=1e-4, atol=1e-3)
    s = torch.exp(params[0, 2]).float()
    naive = torch.sigmoid((centre + w / 2) / s) - torch.sigmoid((centre - w / 2) / s)
    exact = DiscretizedMixLogistics(params, bits).log_prob(x)
    assert naive[0, 0] == 0, "the right tail should underflow in the naive form"
    assert abs(naive[0, 2].log().item() - exact[0, 2].item()) > 1e-3, "a wide scale should lose precision naively"
    # float32 places a bin near 0 to ~6e-8, i.e. ~5e-4 scales at the floor s = e^-9: agree to 2e-3 nats.
    assert (got.double() - exact).abs().max().item() < 2e-3


def test_mol_log_prob_gradients_are_finite_for_extreme_parameters() -> None:
    params = random_mol_params(k=4, n=64, generator=gen(5)).float().requires_grad_()
    x = torch.rand(1, 64, generator=gen(6)) * 2 - 1
    x[0, :3] = torch.tensor([-1.0, 1.0, 0.0])
    DiscretizedMixLogistics(params, 16).log_prob(x).sum().backward()
    assert torch.isfinite(params.grad).all()


def test_low_precision_params_are_promoted_to_float32() -> None:
    params = random_mol_params(k=3, n=8, generator=gen(14))
    x = torch.rand(1, 8, generator=gen(15), dtype=F64) * 2 - 1
    got = DiscretizedMixLogistics(params.bfloat16(), 16).log_prob(x.bfloat16())
    assert got.dtype == torch.float32 and torch.isfinite(got).all()
    same_values_in_float32 = DiscretizedMixLogistics(params.bfloat16().float(), 16).log_prob(x.bfloat16().float())
    torch.testing.assert_close(got, same_values_in_float32)


def test_log_scale_floor_is_applied() -> None:
    sharp = DiscretizedMixLogistics(mol_params([0.0], [0.0], [-30.0]), bits=8, log_scale_min=-9.0)
    floor = DiscretizedMixLogistics(mol_params([0.0], [0.0], [-9.0]), bits=8, log_scale_min=-9.0)
    x = torch.full((1, 1), 2 * bin_width(8), dtype=F64)
    assert sharp.log_prob(x).item() == floor.log_prob(x).item()
    assert sharp.log_scales.min().item() == -9.0


def scipy_mol_pmf(logits, means, log_scales, bits: int) -> np.ndarray:
    """pmf of every b-bit bin from scipy's logistic CDF (float64), edge bins taking the tails (no pwn_lib code)."""
    width = 2 / (2**bits - 1)
    edges = np.concatenate([[-np.inf], np.arange(2**bits - 1) * width - 1 + width / 2, [np.inf]])
    weights = np.exp(logits) / np.exp(logits).sum()
    cdfs = [stats.logistic.cdf(edges, loc=m, scale=np.exp(s)) for m, s in zip(means, log_scales, strict=True)]
    return sum(w * np.diff(cdf) for w, cdf in zip(weights, cdfs, strict=True))


def sampled_bin_counts(logits, means, log_scales, bits: int, n: int, seed: int) -> np.ndarray:
    dist = DiscretizedMixLogistics(mol_params(logits, means, log_scales).expand(1, 3 * len(logits), n), bits)
    codes = torch.round((dist.sample(gen(seed))[0] + 1) / bin_width(bits)).long()
    return torch.bincount(codes, minlength=2**bits).double().numpy()


def chi_square_pvalue(counts: np.ndarray, pmf: np.ndarray) -> float:
    """Chi-square goodness of fit; bins expecting fewer than 5 draws are pooled into one."""
    expected = pmf * counts.sum()
    keep = expected >= 5
    observed = np.concatenate([counts[keep], [counts[~keep].sum()]])
    predicted = np.concatenate([expected[keep], [expected[~keep].sum()]])
    return stats.chisquare(observed, predicted * observed.sum() / predicted.sum()).pvalue


# At 16 bits the scales are a few bins wide (e^-9 is 4 bins), so a half-bin error in the sampler shows.
SAMPLER_CASES = {
    8: ([0.0, 1.0, -0.5], [-0.3, 0.2, 0.97], [-3.0, -2.5, -3.5]),
    16: ([0.0, 0.5, -0.5], [-0.3, 0.2004, 0.9995], [-9.0, -8.5, -8.0]),
}


@pytest.mark.parametrize("bits", [8, 16])
def test_mol_sampling_histogram_matches_scipy_pmf(bits: int) -> None:
    logits, means, log_scales = SAMPLER_CASES[bits]
    pmf = scipy_mol_pmf(logits, means, log_scales, bits)
    assert (pmf * 100_000 >= 5).sum() > 40
    assert chi_square_pvalue(sampled_bin_counts(logits, means, log_scales, bits, 100_000, 7), pmf) > 1e-3


def test_sampler_histogram_test_rejects_a_half_bin_shift() -> None:
    """The test above can fail: draws moved by half a bin (floor instead of round) are rejected."""
    logits, means, log_scales = SAMPLER_CASES[16]
    counts = sampled_bin_counts(logits, means, log_scales, 16, 100_000, 7)
    shifted = np.roll(counts, 1)  # every draw one bin up: the smallest error the grid can show
    assert chi_square_pvalue(shifted, scipy_mol_pmf(logits, means, log_scales, 16)) < 1e-6


def test_mol_sampling_at_a_temperature_matches_scipy_pmf_with_scales_times_it() -> None:
    """Temperature t samples each chosen logistic with scale s * t (weights unchanged): checked against scipy."""
    logits, means, log_scales = SAMPLER_CASES[8]
    t = 0.6
    dist = DiscretizedMixLogistics(mol_params(logits, means, log_scales).expand(1, 9, 100_000), 8)
    codes = torch.round((dist.sample(gen(7), temperature=t)[0] + 1) / bin_width(8)).long()
    counts = torch.bincount(codes, minlength=256).double().numpy()
    sharpened = [s + math.log(t) for s in log_scales]
    assert chi_square_pvalue(counts, scipy_mol_pmf(logits, means, sharpened, 8)) > 1e-3
    assert chi_square_pvalue(counts, scipy_mol_pmf(logits, means, log_scales, 8)) < 1e-6  # it can fail
    plain = dist.sample(gen(7))
    assert torch.equal(plain, dist.sample(gen(7), temperature=1.0))


def test_sharpened_mol_has_scipy_pmf_with_scales_times_the_temperature() -> None:
    """``sharpened(t)`` is the distribution ``sample(temperature=t)`` draws from (the test above): its bin masses."""
    logits, means, log_scales = SAMPLER_CASES[8]
    t = 0.6
    dist = DiscretizedMixLogistics(mol_params(logits, means, log_scales).expand(1, 9, 256), 8)
    codes = torch.arange(256)
    got = dist.sharpened(t).log_prob((codes.double() * bin_width(8) - 1)[None])[0].exp().numpy()
    want = scipy_mol_pmf(logits, means, [s + math.log(t) for s in log_scales], 8)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)
    assert dist.sharpened(1.0) is dist
    assert not np.allclose(dist.log_prob((codes.double() * bin_width(8) - 1)[None])[0].exp().numpy(), want)


def test_gaussian_and_mulaw_temperatures_sharpen_and_bad_temperatures_are_refused() -> None:
    x = Gaussian(torch.zeros(200_000, dtype=F64), torch.zeros(200_000, dtype=F64)).sample(gen(1), temperature=0.5)
    assert x.std().item() == pytest.approx(0.5, rel=0.01)
    logits = torch.randn(1, 256, 2_000, generator=gen(2), dtype=F64)
    cold = MuLawCategorical(logits).sample(gen(3), temperature=1e-6)
    torch.testing.assert_close(cold, torch.as_tensor(mulaw_decode(logits.argmax(dim=1)), dtype=F64))
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="temperature"):
            Logistic(torch.zeros(3), torch.zeros(3)).sample(gen(0), temperature=bad)


def stable_log_bin_mass(centre: np.ndarray, half: float, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """log(F(c + h) - F(c - h)) in float64, subtracting on the side of the mean where the CDFs are small."""
    a, b = (centre + half - mean) / scale, (centre - half - mean) / scale
    below = np.log(special.expit(a) - special.expit(b))
    above = np.log(special.expit(-b) - special.expit(-a))
    return np.where(a + b < 0, below, above)


def test_float32_mol_log_prob_is_accurate_when_a_component_is_much_wider_than_a_bin() -> None:
    n, bits = 20_000, 16
    g = gen(21)
    means = torch.rand(n, generator=g, dtype=F64) * 1.6 - 0.8
    log_scales = torch.rand(n, generator=g, dtype=F64) * 3 - 2.5  # scales 0.08 to 1.6: 2,700 to 54,000 bins
    codes = torch.randint(1, 2**bits - 1, (n,), generator=g)
    x = codes.double() * bin_width(bits) - 1  # bin centres, so float32 rounding cannot move x to another bin
    params = torch.stack([torch.zeros_like(means), means, log_scales])[None]
    got = DiscretizedMixLogistics(params.float(), bits).log_prob(x.float()[None])[0].double().numpy()
    ref = stable_log_bin_mass(x.numpy(), bin_width(bits) / 2, means.numpy(), log_scales.exp().numpy())
    assert np.abs(got - ref).max() < 5e-5
    # The form this replaced, log(-expm1(lower - upper)) with each edge rounded to float32 on its own, is 100x worse.
    m32, s32, c32 = means.float(), log_scales.float().exp(), x.float()
    upper, lower = (c32 + bin_width(bits) / 2 - m32) / s32, (c32 - bin_width(bits) / 2 - m32) / s32
    separate = upper + torch.log(-torch.expm1(lower - upper)) - F.softplus(upper) - F.softplus(lower)
    assert np.abs(separate.double().numpy() - ref).max() > 1e-3


def test_mol_samples_lie_on_the_bin_grid() -> None:
    dist = DiscretizedMixLogistics(random_mol_params(3, 500, gen(8)).float(), bits=16)
    x = dist.sample(gen(9)).double()
    k = (x + 1) / bin_width(16)
    assert (x.abs() <= 1).all() and (k - k.round()).abs().max() < 1e-2


def test_mol_mean_is_within_half_a_bin_of_the_discrete_mean() -> None:
    bits = 8
    params = random_mol_params(k=3, n=10, generator=gen(10))
    exact = (all_bin_probs(params, bits) * bin_centres(bits, F64)[:, None]).sum(dim=0)
    got = DiscretizedMixLogistics(params, bits, log_scale_min=-12.0).mean()[0]
    assert (got - exact).abs().max().item() <= bin_width(bits) / 2


def test_mol_log_density_integrates_to_one_and_matches_logistic() -> None:
    params = mol_params([0.2, -0.4], [-0.5, 0.4], [-2.0, -1.0])
    x = torch.linspace(-30, 30, 600_001, dtype=F64)
    dist = DiscretizedMixLogistics(params.expand(1, 6, x.numel()), bits=16)
    pdf = dist.log_density(x[None]).exp()[0]
    assert torch.trapezoid(pdf, x).item() == pytest.approx(1.0, abs=1e-6)
    w = torch.softmax(torch.tensor([0.2, -0.4], dtype=F64), 0)
    ref = sum(w[i] * Logistic(params[0, 2 + i, 0], params[0, 4 + i, 0]).log_prob(x).exp() for i in range(2))
    torch.testing.assert_close(pdf, ref)


def test_mol_rejects_wrong_shapes() -> None:
    with pytest.raises(ValueError, match="3K"):
        DiscretizedMixLogistics(torch.zeros(1, 4, 5))
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        DiscretizedMixLogistics(torch.zeros(1, 3, 5)).log_prob(torch.zeros(1, 1, 5))


# ---------------------------------------------------------------- Gaussian


def test_gaussian_matches_scipy_and_entropy() -> None:
    g = Gaussian(torch.tensor(0.1, dtype=F64), torch.tensor(-0.5, dtype=F64))
    x = torch.linspace(-2, 2, 9, dtype=F64)
    np.testing.assert_allclose(g.log_prob(x).numpy(), stats.norm(0.1, math.exp(-0.5)).logpdf(x.numpy()), rtol=1e-12)
    assert g.entropy().item() == pytest.approx(stats.norm(0.1, math.exp(-0.5)).entropy())


def test_gaussian_kl_closed_form_matches_monte_carlo() -> None:
    n = 400_000
    p = Gaussian(torch.full((n,), 0.3, dtype=F64), torch.full((n,), -1.0, dtype=F64))
    q = Gaussian(torch.full((n,), -0.2, dtype=F64), torch.full((n,), -0.4, dtype=F64))
    x = p.sample(gen(11))
    ratio = p.log_prob(x) - q.log_prob(x)
    closed = gaussian_kl(p, q)[0].item()
    assert abs(ratio.mean().item() - closed) < 4 * ratio.std().item() / math.sqrt(n)
    assert gaussian_kl(p, p).abs().max().item() == 0.0


# ---------------------------------------------------------------- mu-law


def test_mulaw_round_trip_is_within_the_quantisation_step() -> None:
    mu = 255
    x = torch.linspace(-1, 1, 100_001, dtype=F64)
    codes = torch.as_tensor(mulaw_encode(x, mu=mu)).long()
    assert codes.min().item() == 0 and codes.max().item() == mu
    x_hat = torch.as_tensor(mulaw_decode(codes, mu=mu)).double()
    # Rounding moves y = F(x) by at most half a code (1 / mu), so x_hat lies in F^-1([y - 1/mu, y + 1/mu]).
    y = torch.sign(x) * torch.log1p(mu * x.abs()) / math.log1p(mu)
    y_edges = torch.stack([y - 1 / mu, y + 1 / mu]).clamp(-1, 1)
    x_edges = torch.sign(y_edges) * torch.expm1(y_edges.abs() * math.log1p(mu)) / mu
    bound = torch.maximum(x - x_edges[0], x_edges[1] - x)
    assert ((x_hat - x).abs() <= bound + 1e-6).all()


def test_mulaw_categorical_normalised_and_samples_match() -> None:
    logits = torch.randn(1, 256, 1, generator=gen(12), dtype=F64)
    levels = torch.as_tensor(mulaw_decode(torch.arange(256)), dtype=F64)
    dist = MuLawCategorical(logits.expand(256, -1, -1))
    assert dist.log_prob(levels[:, None]).exp().sum().item() == pytest.approx(1.0, abs=1e-9)
    n = 60_000
    draws = MuLawCategorical(logits.expand(1, -1, n)).sample(gen(13))[0]
    codes = torch.bucketize(draws, (levels[1:] + levels[:-1]) / 2)
    counts = torch.bincount(codes, minlength=256).double().numpy()
    expected = (torch.softmax(logits[0, :, 0], 0) * n).numpy()
    assert stats.chisquare(counts, expected).pvalue > 1e-3


# ---------------------------------------------------------------- choosing the output


@pytest.mark.parametrize(
    ("output", "channels", "kind"),
    [
        ("mol", 30, DiscretizedMixLogistics),
        ("gaussian", 2, Gaussian),
        ("mulaw", 256, MuLawCategorical),
    ],
)
def test_output_distribution_matches_config(output: str, channels: int, kind: type) -> None:
    cfg = WaveNetConfig(output=output, n_mixtures=10)
    assert output_channels(cfg) == channels
    assert isinstance(output_distribution(torch.zeros(2, channels, 7), cfg), kind)
    with pytest.raises(ValueError, match=output):
        output_distribution(torch.zeros(2, channels + 1, 7), cfg)


def test_unknown_output_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="'softmax'"):
        output_channels(WaveNetConfig(output="softmax"))
