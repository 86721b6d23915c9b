"""Output distributions of the teacher and the student, each as a small class with ``log_prob`` and ``sample``.

Paper, section 2.1 (the 16-bit mixture of logistics); taught in notebook 03.

- :class:`Logistic`: the student's noise and the building block of the mixture.
- :class:`DiscretizedMixLogistics`: the teacher's output over b-bit audio (PixelCNN++, Salimans et al., 2017).
- :class:`Gaussian` and :func:`gaussian_kl`: ClariNet's single-Gaussian teacher and its closed-form KL.
- :class:`MuLawCategorical`: the original WaveNet's 256-way softmax over mu-law codes.

Inside this module audio is ``(B, T)`` in [-1, 1]; b-bit audio has 2**b bins of width ``2 / (2**b - 1)``
whose centres are ``k * width - 1``. The first and last bins also hold everything beyond -1 and 1.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F

from pwn_lib.audio import mulaw_decode, mulaw_encode, quantize
from pwn_lib.config import WaveNetConfig

_EPS = 1e-7  # keeps uniform draws strictly inside (0, 1)


def bin_width(bits: int) -> float:
    """Width of one quantisation bin of b-bit audio in [-1, 1]: ``2 / (2**bits - 1)``."""
    return 2.0 / (2**bits - 1)


def bin_centres(bits: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """All 2**bits bin centres, ``(2**bits,)`` from -1 to 1."""
    return torch.arange(2**bits, dtype=dtype) * bin_width(bits) - 1.0


def _uniform(shape: torch.Size, like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Uniform draws in (eps, 1 - eps), made on the CPU generator's device then moved next to ``like``."""
    u = torch.rand(shape, generator=generator, dtype=like.dtype, device=generator.device if generator else like.device)
    return u.to(like.device).clamp(_EPS, 1.0 - _EPS)


def _logistic_log_pdf(z: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """log pdf of a logistic at standardised point ``z = (x - loc) / scale``: ``-z - log s - 2 softplus(-z)``."""
    return -z - log_scale - 2.0 * F.softplus(-z)


def _log_bin_mass(centre: torch.Tensor, half_width: torch.Tensor) -> torch.Tensor:
    """``log(sigmoid(centre + h) - sigmoid(centre - h))`` for ``h = half_width > 0``, in standardised units.

    Uses sigmoid(a) - sigmoid(b) = (e^a - e^b) / ((1 + e^a)(1 + e^b)), so the log is
    ``a + log(-expm1(b - a)) - softplus(a) - softplus(b)``: no difference of two nearly equal CDFs is ever
    formed. The bin's width ``a - b = 2h`` is passed in, not recovered from the two rounded edges: when a
    component is much wider than a bin, ``a - b`` is a few ulps of ``a``, and rounding each edge separately
    would cost up to 5e-3 nats in float32. Far in a tail, or for scales much wider than a bin, it agrees
    with the usual fallback log pdf(centre) + log(bin width).
    """
    upper, lower = centre + half_width, centre - half_width
    return upper + torch.log(-torch.expm1(-2.0 * half_width)) - F.softplus(upper) - F.softplus(lower)


def _check_temperature(temperature: float) -> float:
    """A sampling temperature must be a finite number > 0 (1 = the model's own distribution)."""
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"sampling temperature must be a finite number > 0 (1.0 = unchanged), got {temperature!r}")
    return float(temperature)


class Logistic:
    """Logistic distribution with location ``loc`` and log scale ``log_scale`` (broadcastable tensors).

    pdf(x) = e^{-z} / (s (1 + e^{-z})^2) with z = (x - loc) / s; cdf(x) = sigmoid(z); entropy = log s + 2.
    """

    def __init__(self, loc: torch.Tensor, log_scale: torch.Tensor) -> None:
        self.loc, self.log_scale = torch.broadcast_tensors(torch.as_tensor(loc), torch.as_tensor(log_scale))

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Log density of ``x`` (broadcast against loc), nats."""
        return _logistic_log_pdf((x - self.loc) * torch.exp(-self.log_scale), self.log_scale)

    def cdf(self, x: torch.Tensor) -> torch.Tensor:
        """P(X <= x)."""
        return torch.sigmoid((x - self.loc) * torch.exp(-self.log_scale))

    def icdf(self, u: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        """Quantile function: ``loc + s * (log u - log(1 - u))``; ``temperature`` multiplies the scale s."""
        noise = torch.log(u) - torch.log1p(-u)
        if temperature != 1.0:
            noise = temperature * noise
        return self.loc + torch.exp(self.log_scale) * noise

    def sample(self, generator: torch.Generator | None = None, temperature: float = 1.0) -> torch.Tensor:
        """One draw per element of ``loc`` by inverting the CDF of a uniform draw (scale times ``temperature``)."""
        return self.icdf(_uniform(self.loc.shape, self.loc, generator), _check_temperature(temperature))

    def entropy(self) -> torch.Tensor:
        """Differential entropy ``log s + 2`` nats."""
        return self.log_scale + 2.0


class DiscretizedMixLogistics:
    """Mixture of K logistics, discretised onto the 2**bits bins of audio in [-1, 1].

    ``params: (B, 3K, T)`` laid out ``[logit_probs (K) | means (K) | log_scales (K)]``. Log scales are
    floored at ``log_scale_min``. Bin k (centre c_k, width w) gets mass F(c_k + w/2) - F(c_k - w/2);
    the first bin gets F(c_0 + w/2) and the last 1 - F(c_last - w/2), so the masses sum to exactly 1.
    """

    def __init__(self, params: torch.Tensor, bits: int = 16, log_scale_min: float = -9.0) -> None:
        if params.dim() != 3 or params.shape[1] % 3 != 0:
            raise ValueError(
                f"DiscretizedMixLogistics needs params of shape (B, 3K, T), got {tuple(params.shape)}; "
                "the channel axis must hold [logit_probs | means | log_scales]"
            )
        self.bits = bits
        self.n_mixtures = params.shape[1] // 3
        # A 16-bit bin is 3e-5 wide: bf16/fp16 cannot even place it, so lower precisions are promoted.
        params = params.to(torch.promote_types(params.dtype, torch.float32))
        logits, means, log_scales = params.chunk(3, dim=1)
        self.log_weights = torch.log_softmax(logits, dim=1)  # (B, K, T)
        self.means = means
        self.log_scales = log_scales.clamp(min=log_scale_min)

    def _check(self, x: torch.Tensor) -> torch.Tensor:
        expected = (self.means.shape[0], self.means.shape[2])
        if tuple(x.shape) != expected:
            raise ValueError(f"DiscretizedMixLogistics expects x of shape (B, T) = {expected}, got {tuple(x.shape)}")
        return x.to(self.means.dtype).unsqueeze(1)

    def component_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Log mass of the bin holding ``x: (B, T)`` under each component, ``(B, K, T)``."""
        k = quantize(self._check(x), self.bits)  # values beyond [-1, 1] land in the edge bins
        half = 0.5 * bin_width(self.bits)
        centre = k.to(self.means.dtype) * bin_width(self.bits) - 1.0
        inv_s = torch.exp(-self.log_scales)
        mid, half_std = (centre - self.means) * inv_s, half * inv_s
        upper, lower = mid + half_std, mid - half_std
        first = upper - F.softplus(upper)  # log F(upper edge)
        last = -F.softplus(lower)  # log (1 - F(lower edge))
        inner = _log_bin_mass(mid, half_std)
        return torch.where(k == 0, first, torch.where(k == 2**self.bits - 1, last, inner))

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Log pmf of the bin holding each sample, ``x: (B, T)`` in [-1, 1] -> ``(B, T)`` nats."""
        return torch.logsumexp(self.log_weights + self.component_log_prob(x), dim=1)

    def log_density(self, x: torch.Tensor) -> torch.Tensor:
        """Continuous mixture log pdf at ``x: (B, T)`` -> ``(B, T)`` nats (for distillation, no binning)."""
        z = (self._check(x) - self.means) * torch.exp(-self.log_scales)
        return torch.logsumexp(self.log_weights + _logistic_log_pdf(z, self.log_scales), dim=1)

    def sample(self, generator: torch.Generator | None = None, temperature: float = 1.0) -> torch.Tensor:
        """One draw per step, ``(B, T)`` on the bin grid: pick a component (Gumbel-max), draw, clip, round.

        ``temperature`` < 1 sharpens the draw: the chosen logistic's scale is multiplied by it (the component
        choice is left alone). Temperature 1 is the model's own distribution.
        """
        gumbel = -torch.log(-torch.log(_uniform(self.log_weights.shape, self.means, generator)))
        choice = (self.log_weights + gumbel).argmax(dim=1, keepdim=True)
        loc = self.means.gather(1, choice).squeeze(1)
        log_scale = self.log_scales.gather(1, choice).squeeze(1)
        x = Logistic(loc, log_scale).sample(generator, temperature)
        return quantize(x, self.bits).to(x.dtype) * bin_width(self.bits) - 1.0

    def sharpened(self, temperature: float) -> DiscretizedMixLogistics:
        """The mixture that ``sample(temperature=...)`` draws from: every scale times ``temperature`` (after the
        floor), weights and means unchanged. ``temperature`` 1 returns ``self``."""
        if _check_temperature(temperature) == 1.0:
            return self
        out = copy.copy(self)
        out.log_scales = self.log_scales + math.log(temperature)
        return out

    def mean(self) -> torch.Tensor:
        """Mean of the mixture clipped to [-1, 1], ``(B, T)``; within half a bin of the discrete mean.

        For one logistic, E[clip(X, -1, 1)] = -1 + s (softplus((mu + 1) / s) - softplus((mu - 1) / s)).
        """
        s = torch.exp(self.log_scales)
        clipped = -1.0 + s * (F.softplus((self.means + 1.0) / s) - F.softplus((self.means - 1.0) / s))
        return (self.log_weights.exp() * clipped).sum(dim=1)


class Gaussian:
    """Normal distribution with ``loc`` and ``log_scale`` (log standard deviation), broadcastable tensors."""

    def __init__(self, loc: torch.Tensor, log_scale: torch.Tensor) -> None:
        self.loc, self.log_scale = torch.broadcast_tensors(torch.as_tensor(loc), torch.as_tensor(log_scale))

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Log density ``-((x - mu) / sigma)^2 / 2 - log sigma - log(2 pi) / 2`` nats."""
        z = (x - self.loc) * torch.exp(-self.log_scale)
        return -0.5 * z**2 - self.log_scale - 0.5 * math.log(2 * math.pi)

    def entropy(self) -> torch.Tensor:
        """Differential entropy ``log sigma + log(2 pi e) / 2`` nats."""
        return self.log_scale + 0.5 * math.log(2 * math.pi * math.e)

    def sharpened(self, temperature: float) -> Gaussian:
        """The normal that ``sample(temperature=...)`` draws from: standard deviation times ``temperature``."""
        if _check_temperature(temperature) == 1.0:
            return self
        return Gaussian(self.loc, self.log_scale + math.log(temperature))

    def sample(self, generator: torch.Generator | None = None, temperature: float = 1.0) -> torch.Tensor:
        """One draw per element of ``loc``; ``temperature`` multiplies the standard deviation."""
        device = generator.device if generator is not None else self.loc.device
        noise = torch.randn(self.loc.shape, generator=generator, dtype=self.loc.dtype, device=device)
        return self.loc + torch.exp(self.log_scale) * (_check_temperature(temperature) * noise.to(self.loc.device))


def gaussian_kl(p: Gaussian, q: Gaussian) -> torch.Tensor:
    """KL(p || q) elementwise in nats: ``log(sq/sp) + (sp^2 + (mp - mq)^2) / (2 sq^2) - 1/2``."""
    var_ratio = torch.exp(2.0 * (p.log_scale - q.log_scale))
    mean_term = ((p.loc - q.loc) * torch.exp(-q.log_scale)) ** 2
    return q.log_scale - p.log_scale + 0.5 * (var_ratio + mean_term) - 0.5


class MuLawCategorical:
    """Softmax over the 256 mu-law codes of the original WaveNet. ``logits: (B, 256, T)``."""

    def __init__(self, logits: torch.Tensor) -> None:
        if logits.dim() != 3 or logits.shape[1] != 256:
            raise ValueError(f"MuLawCategorical needs logits of shape (B, 256, T), got {tuple(logits.shape)}")
        self.log_probs = torch.log_softmax(logits, dim=1)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Log probability of the mu-law code of ``x: (B, T)`` in [-1, 1] -> ``(B, T)`` nats."""
        codes = torch.as_tensor(mulaw_encode(x.clamp(-1.0, 1.0)), device=x.device).long()
        return self.log_probs.gather(1, codes.unsqueeze(1)).squeeze(1)

    def sample(self, generator: torch.Generator | None = None, temperature: float = 1.0) -> torch.Tensor:
        """Draw codes (Gumbel-max on ``log_probs / temperature``) and decode them to ``(B, T)`` audio in [-1, 1]."""
        gumbel = -torch.log(-torch.log(_uniform(self.log_probs.shape, self.log_probs, generator)))
        codes = (self.log_probs / _check_temperature(temperature) + gumbel).argmax(dim=1)
        return torch.as_tensor(mulaw_decode(codes), dtype=self.log_probs.dtype, device=codes.device)


Distribution = DiscretizedMixLogistics | Gaussian | MuLawCategorical


def output_channels(cfg: WaveNetConfig) -> int:
    """Channels the teacher must output for ``cfg.output``: 3K for "mol", 2 for "gaussian", 256 for "mulaw"."""
    if cfg.output == "mol":
        return 3 * cfg.n_mixtures
    if cfg.output == "gaussian":
        return 2
    if cfg.output == "mulaw":
        return 256
    raise ValueError(f"WaveNetConfig.output={cfg.output!r} is unknown; use 'mol', 'gaussian' or 'mulaw'")


def output_distribution(params: torch.Tensor, cfg: WaveNetConfig) -> Distribution:
    """The distribution object for teacher outputs ``params: (B, output_channels(cfg), T)``."""
    if params.dim() != 3 or params.shape[1] != output_channels(cfg):
        raise ValueError(
            f"output {cfg.output!r} needs params of shape (B, {output_channels(cfg)}, T), got {tuple(params.shape)}"
        )
    if cfg.output == "mol":
        return DiscretizedMixLogistics(params, bits=cfg.bits, log_scale_min=cfg.log_scale_min)
    if cfg.output == "gaussian":
        return Gaussian(params[:, 0], params[:, 1].clamp(min=cfg.log_scale_min))
    return MuLawCategorical(params)


__all__ = [
    "DiscretizedMixLogistics",
    "Distribution",
    "Gaussian",
    "Logistic",
    "MuLawCategorical",
    "bin_centres",
    "bin_width",
    "gaussian_kl",
    "output_channels",
    "output_distribution",
]
