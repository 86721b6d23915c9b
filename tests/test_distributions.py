"""Tests for pwn_lib.distributions: every formula checked against an independent computation."""

from __future__ import annotations

import pytest
import torch

from pwn_lib.distributions import DiscretizedMixLogistics, bin_centres


def random_mol_params(k: int, n: int, generator: torch.Generator) -> torch.Tensor:
    """(1, 3K, N) float64 params with extreme scales and means at (and beyond) the edges."""
    logits = torch.randn(1, k, n, generator=generator, dtype=torch.float64) * 3
    means = torch.rand(1, k, n, generator=generator, dtype=torch.float64) * 2.4 - 1.2
    means[0, 0, :4] = torch.tensor([-1.0, 1.0, -1.0, 1.0], dtype=torch.float64)
    log_scales = torch.rand(1, k, n, generator=generator, dtype=torch.float64) * 14 - 12
    log_scales[0, 0, :4] = torch.tensor([-12.0, -12.0, 3.0, 3.0], dtype=torch.float64)
    return torch.cat([logits, means, log_scales], dim=1)


@pytest.mark.parametrize("bits", [8, 16])
def test_mol_probabilities_sum_to_one(bits: int) -> None:
    n_params = 12
    params = random_mol_params(k=5, n=n_params, generator=torch.Generator().manual_seed(bits))
    centres = bin_centres(bits, dtype=torch.float64)
    totals = torch.zeros(n_params, dtype=torch.float64)
    for chunk in centres.split(8192):
        tiled = params.expand(chunk.numel(), -1, -1)
        dist = DiscretizedMixLogistics(tiled, bits=bits, log_scale_min=-12.0)
        x = chunk[:, None].expand(-1, n_params)
        totals += dist.log_prob(x).exp().sum(dim=0)
    torch.testing.assert_close(totals, torch.ones_like(totals), atol=1e-4, rtol=0)
