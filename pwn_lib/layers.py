"""The layers that the teacher and the student share (van den Oord et al., 2016, section 2; notebook 02).

1. :class:`CausalConv1d`: a dilated convolution that only looks at the past (notebook 02, section 1).
2. :class:`ResidualBlock`: gated ``tanh * sigmoid`` unit, residual path, optional skip path, local
   conditioning (upsampled log-mel) and optional global conditioning (speaker) (notebook 02, section 3).
3. :class:`ConditionUpsampler`: standardised log-mel frames ``(B, n_mels, F)`` to one vector per sample
   (notebook 02, section 4), optionally after :class:`ConditionContext`, a few non-causal convolutions that give
   each frame its neighbours' context.

Shapes: ``B`` batch, ``T`` samples, ``F = T // hop_length`` frames, ``R`` residual channels,
``S`` skip channels, ``G`` gate channels (``G // 2`` after gating).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

RESIDUAL_SCALE = math.sqrt(0.5)  # keeps the residual stream's variance constant with depth


def shift_right(x: torch.Tensor) -> torch.Tensor:
    """``x: (B, C, T)`` -> ``(B, C, T)`` with ``out[..., t] = x[..., t - 1]`` and zero at t = 0."""
    return F.pad(x, (1, 0))[..., :-1]


class CausalConv1d(nn.Conv1d):
    """A dilated 1-D convolution whose output at time t only sees inputs at times <= t.

    The input is padded on the left by ``(kernel_size - 1) * dilation`` zeros, so the output
    has the same length as the input.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, dilation: int = 1):
        super().__init__(in_channels, out_channels, kernel_size, dilation=dilation)
        self.left_pad = (kernel_size - 1) * dilation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C_in, T) -> (B, C_out, T)."""
        return super().forward(F.pad(x, (self.left_pad, 0)))


class ResidualBlock(nn.Module):
    """One WaveNet layer: ``z = tanh(W_f * x + V_f c + U_f g) * sigmoid(W_g * x + V_g c + U_g g)``.

    The residual output is ``(x + W_r z) * sqrt(1/2)``; the skip output is ``W_s z`` (or None
    when ``skip_channels == 0``, the student's layout, where ``W_r`` then maps z to the next layer).
    ``gate_channels`` counts both halves (filter and gate), so z has ``gate_channels // 2`` channels.
    """

    def __init__(
        self,
        residual_channels: int,
        gate_channels: int,
        skip_channels: int,
        kernel_size: int,
        dilation: int,
        cond_channels: int = 0,
        global_channels: int = 0,
    ):
        super().__init__()
        if gate_channels % 2:
            raise ValueError(f"gate_channels={gate_channels} must be even (filter half + gate half)")
        self.residual_channels = residual_channels
        self.skip_channels = skip_channels
        self.conv = CausalConv1d(residual_channels, gate_channels, kernel_size, dilation)
        self.cond = nn.Conv1d(cond_channels, gate_channels, 1, bias=False) if cond_channels else None
        self.speaker = nn.Linear(global_channels, gate_channels, bias=False) if global_channels else None
        self.out = nn.Conv1d(gate_channels // 2, residual_channels + skip_channels, 1)

    def gate_input(self, x: torch.Tensor, c: torch.Tensor | None, g: torch.Tensor | None) -> torch.Tensor:
        """Pre-activation ``(B, G, T)`` from x: (B, R, T), c: (B, C_cond, T) and g: (B, G_spk)."""
        a = self.conv(x)
        if self.cond is not None:
            if c is None:
                raise ValueError("this ResidualBlock has cond_channels > 0: pass c (B, cond_channels, T)")
            a = a + self.cond(c)
        if self.speaker is not None:
            if g is None:
                raise ValueError("this ResidualBlock has global_channels > 0: pass g (B, global_channels)")
            a = a + self.speaker(g).unsqueeze(-1)
        return a

    def finish(self, x: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Gate the pre-activation a: (B, G, ...) and apply the residual/skip 1x1 convs; x: (B, R, ...)."""
        filt, gate = a.chunk(2, dim=1)
        out = pointwise(self.out, torch.tanh(filt) * torch.sigmoid(gate))
        residual, skip = out.split([self.residual_channels, self.skip_channels], dim=1)
        return (x + residual) * RESIDUAL_SCALE, (skip if self.skip_channels else None)

    def forward(
        self, x: torch.Tensor, c: torch.Tensor | None = None, g: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x: (B, R, T), c: (B, C_cond, T) upsampled conditioning, g: (B, G_spk) speaker vector.

        Returns (residual_out (B, R, T), skip (B, S, T) or None).
        """
        return self.finish(x, self.gate_input(x, c, g))


def pointwise(layer: nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
    """Apply a 1x1 conv to x: (B, C, T), or to a single time step x: (B, C) as a matrix product."""
    if x.dim() == 3:
        return layer(x)
    return F.linear(x, layer.weight.squeeze(-1), layer.bias)


def stride_factors(hop_length: int, max_factor: int = 16) -> list[int]:
    """Split ``hop_length`` into integer strides <= max_factor whose product is hop_length (256 -> [16, 16])."""
    primes, n, p = [], hop_length, 2
    while n > 1:
        while n % p == 0:
            primes.append(p)
            n //= p
        p += 1
    if any(q > max_factor for q in primes):
        raise ValueError(f"hop_length={hop_length} has a prime factor > {max_factor}; choose a smoother hop")
    factors, current = [], 1
    for q in sorted(primes, reverse=True):
        if current * q > max_factor:
            factors.append(current)
            current = 1
        current *= q
    return factors + [current] if current > 1 else factors


class ConditionContext(nn.Module):
    """A residual conditioning network over log-mel frames: ``c + W_out relu(conv_L(... relu(conv_1(c))))``.

    Each conv has kernel ``kernel_size`` and no causal mask (the whole log-mel is known before synthesis), so
    ``layers`` of them give each frame ``layers * (kernel_size // 2)`` frames of context on either side. ``W_out``
    starts at zero: the network starts as the identity, and a teacher trained without it warm-starts unchanged.
    A course addition, not in the paper (WaveRNN and LPCNet put such a network before their upsamplers).
    """

    def __init__(self, n_mels: int, layers: int, hidden: int, kernel_size: int = 5):
        super().__init__()
        widths = [n_mels] + [hidden] * layers
        self.convs = nn.ModuleList(
            nn.Conv1d(a, b, kernel_size, padding=kernel_size // 2, padding_mode="replicate")
            for a, b in zip(widths[:-1], widths[1:], strict=True)
        )
        self.out = nn.Conv1d(hidden, n_mels, 1)
        with torch.no_grad():
            self.out.weight.zero_()
            self.out.bias.zero_()

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        """c: (B, n_mels, F) standardised log-mel -> (B, n_mels, F), the same frames with context mixed in."""
        h = c
        for conv in self.convs:
            h = torch.relu(conv(h))
        return c + self.out(h)


class ConditionUpsampler(nn.Module):
    """Log-mel frames to one conditioning vector per sample: ``(B, n_mels, F) -> (B, n_mels, F * hop)``.

    ``mode="transpose"``: a stack of learned transposed convolutions (kernel 2s, stride s) whose
    strides multiply to ``hop_length``; each starts as linear interpolation between neighbouring
    frames (edge frames are replicated, so the ends hold their value). ``mode="repeat"``: repeat each frame
    ``hop_length`` times, then a learned 3-tap conv (initialised to the identity).
    Frame k lands on samples [k * hop, (k + 1) * hop). ``context_layers > 0`` runs a :class:`ConditionContext`
    of that depth and ``context_channels`` hidden channels over the standardised frames first.
    """

    def __init__(
        self,
        n_mels: int,
        hop_length: int,
        mode: str = "transpose",
        mean: float = 0.0,
        std: float = 1.0,
        context_layers: int = 0,
        context_channels: int = 128,
    ):
        super().__init__()
        self.mean, self.std = mean, std
        self.context = ConditionContext(n_mels, context_layers, context_channels) if context_layers else None
        if mode not in ("transpose", "repeat"):
            raise ValueError(f"upsample mode {mode!r} unknown; use 'transpose' or 'repeat'")
        self.mode, self.hop_length = mode, hop_length
        if mode == "transpose":
            self.strides = stride_factors(hop_length)
            self.layers = nn.ModuleList(
                nn.ConvTranspose1d(n_mels, n_mels, 2 * s, stride=s, bias=False) for s in self.strides
            )
            for layer in self.layers:
                _init_as_interpolation(layer)
        else:
            self.strides = [hop_length]
            self.layers = nn.ModuleList([nn.Conv1d(n_mels, n_mels, 3, padding=1, bias=False)])
            with torch.no_grad():
                self.layers[0].weight.zero_()
                self.layers[0].weight[:, :, 1].copy_(torch.eye(n_mels))

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        """c: (B, n_mels, F) log-mel -> (B, n_mels, F * hop_length), standardised first: ``(c - mean) / std``.

        Raw log-mels sit near -5 (down to -11.5 in silence); fed as they are, the conditioning terms grow
        until every gate saturates and no gradient reaches the convolutions. ``mean`` and ``std`` are the
        training data's statistics (:mod:`pwn_lib.features`), stored in the model's config.
        """
        c = (c - self.mean) / self.std
        if self.context is not None:
            c = self.context(c)
        if self.mode == "repeat":
            return self.layers[0](c.repeat_interleave(self.hop_length, dim=-1))
        for s, layer in zip(self.strides, self.layers, strict=True):
            frames = c.shape[-1]
            padded = F.pad(c, (1, 1), mode="replicate")  # edge frames get a neighbour equal to themselves
            start = s + s // 2  # (F + 3) * s outputs -> F * s, frame k centred in [k * s, (k + 1) * s)
            c = layer(padded)[..., start : start + frames * s]
        return c


def _init_as_interpolation(layer: nn.ConvTranspose1d) -> None:
    """Set a (kernel 2s, stride s) transposed conv to per-channel linear interpolation between frames.

    Each output sample gets weights (m + 0.5) / s and 1 - (m + 0.5) / s from its two nearest frames.
    """
    s = layer.stride[0]
    ramp = 1.0 - (torch.arange(2 * s, dtype=torch.float32) - (s - 0.5)).abs() / s  # peaks at the centre
    with torch.no_grad():
        layer.weight.zero_()
        for ch in range(layer.in_channels):
            layer.weight[ch, ch] = ramp


def receptive_field(kernel_size: int, dilation_list: list[int]) -> int:
    """How many past samples one output depends on: ``(k - 1) * sum(dilations) + 1``."""
    return (kernel_size - 1) * sum(dilation_list) + 1


__all__ = [
    "RESIDUAL_SCALE",
    "CausalConv1d",
    "ConditionContext",
    "ConditionUpsampler",
    "ResidualBlock",
    "pointwise",
    "receptive_field",
    "shift_right",
    "stride_factors",
]
