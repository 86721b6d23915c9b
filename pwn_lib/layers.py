"""The layers that the teacher and the student share (van den Oord et al., 2016, section 2; notebook 02).

1. :class:`CausalConv1d`: a dilated convolution that only looks at the past (notebook 02, section 1).
2. :class:`ResidualBlock`: gated ``tanh * sigmoid`` unit, residual path, optional skip path, local
   conditioning (upsampled log-mel) and optional global conditioning (speaker) (notebook 02, section 3).
3. :class:`ConditionUpsampler`: standardised log-mel frames ``(B, n_mels, F)`` to one vector per sample
   (notebook 02, section 4).

Shapes: ``B`` batch, ``T`` samples, ``F = T // hop_length`` frames, ``R`` residual channels,
``S`` skip channels, ``G`` gate channels (``G // 2`` after gating).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

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


@dataclass
class FusedBlock:
    """A :class:`ResidualBlock`'s weights rearranged for time-major synthesis: one GEMM in, one GEMM out.

    Rows are time steps, so a causal tap ``x[t - j * d]`` is a contiguous slice of a padded ``(B, pad + T, R)``
    buffer and a 1x1 convolution is a plain matrix product (the fast GEMM path, not the generic conv path).
    The pre-activation is one product of ``[x[t - (k-1)d], ..., x[t], c_t]`` with ``weight``: the dilated taps
    and the conditioning projection merged. ``tanh(f) = 1 - 2 sigmoid(-2 f)``: the filter half of ``weight`` and
    ``bias`` is scaled by -2, so one ``sigmoid`` over all G channels replaces ``tanh`` (about 5x the cost of
    ``sigmoid`` on a CPU) plus ``sigmoid``. The residual's sqrt(1/2) is folded into ``out_weight``/``out_bias``.
    The teacher's skip half is left out: this is for the student, whose blocks have no skip path.
    """

    dilation: int
    kernel_size: int
    weight: torch.Tensor  # (k * R + C_cond, G): taps oldest first, then the conditioning rows
    bias: torch.Tensor  # (G,)
    speaker: torch.Tensor | None  # (G_spk, G) or None
    out_weight: torch.Tensor  # (G // 2, R), times RESIDUAL_SCALE
    out_bias: torch.Tensor  # (R,), times RESIDUAL_SCALE, in the residual stream's dtype (float32 or float64)

    @classmethod
    def from_block(cls, block: ResidualBlock, dtype: torch.dtype) -> FusedBlock:
        """Rearrange ``block`` (no skip path) into GEMM operands of ``dtype``; the block itself is not changed."""
        if block.skip_channels:
            raise ValueError("FusedBlock is for blocks without a skip path (the student's); this one has skips")
        half = block.conv.out_channels // 2
        gate_scale = torch.cat([torch.full((half,), -2.0), torch.ones(half)]).to(block.conv.weight)
        taps = block.conv.weight.permute(2, 1, 0).reshape(-1, block.conv.out_channels)  # (k * R, G), oldest first
        rows = [taps] + ([block.cond.weight.squeeze(-1).T] if block.cond is not None else [])
        speaker = block.speaker.weight.T * gate_scale if block.speaker is not None else None
        return cls(
            dilation=block.conv.dilation[0],
            kernel_size=block.conv.kernel_size[0],
            weight=(torch.cat(rows) * gate_scale).to(dtype).contiguous(),
            bias=(block.conv.bias * gate_scale).to(dtype),
            speaker=speaker,
            out_weight=(block.out.weight.squeeze(-1).T * RESIDUAL_SCALE).to(dtype).contiguous(),
            out_bias=block.out.bias * RESIDUAL_SCALE,
        )

    def __call__(
        self, stream: BlockStream, cu: torch.Tensor | None, g_bias: torch.Tensor | None, tile_fn: TileFn | None = None
    ) -> None:
        """One block on ``stream`` (read its input, write its output, then swap), ``stream.tile`` rows at a time.

        ``cu: (B, T, C_cond)`` upsampled conditioning in the GEMM dtype or None; ``g_bias: (B, 1, G)`` this
        block's speaker term (``g @ speaker``) or None; ``tile_fn`` the maths of one tile (:func:`gated_tile`, or
        a compiled copy of it). Tiling keeps each product's operands in cache.
        """
        tile_fn = tile_fn or gated_tile
        length = stream.h.shape[1]
        bias = self.bias if g_bias is None else self.bias + g_bias
        shifts = [j * self.dilation for j in range(self.kernel_size - 1, -1, -1)]
        for start in range(0, length, stream.tile):
            stop = min(start + stream.tile, length)
            rows = [stream.taps[:, stream.pad - s + start : stream.pad - s + stop] for s in shifts]
            rows += [cu[:, start:stop]] if cu is not None else []
            out = stream.h_next[:, start:stop]
            out.copy_(
                tile_fn(
                    torch.cat(rows, dim=-1), self.weight, bias, self.out_weight, stream.h[:, start:stop], self.out_bias
                )
            )
            if stream.taps_next is not None:  # a separate GEMM-dtype copy (bf16): cast once, here
                stream.taps_next[:, stream.pad + start : stream.pad + stop].copy_(out)
        stream.swap()


TileFn = Callable[..., torch.Tensor]


def gated_tile(
    rows: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    out_weight: torch.Tensor,
    h: torch.Tensor,
    out_bias: torch.Tensor,
) -> torch.Tensor:
    """The maths of :class:`FusedBlock` on one tile of rows; ``rows: (B, n, k * R + C_cond)``, ``h: (B, n, R)``.

    ``sigmoid`` of the merged pre-activation, ``tanh(f) * sigmoid(g) = s_g - 2 s_f s_g`` (the filter half was
    scaled by -2), then ``h * sqrt(1/2) + z @ out_weight + out_bias`` (the scale is already in the weights).
    """
    if bias.dim() == 1:  # one bias for every row: added inside the product (addmm), saving a pass
        pre = torch.addmm(bias, rows.reshape(-1, rows.shape[-1]), weight).view(*rows.shape[:-1], -1)
    else:  # a speaker term per batch row, (B, 1, G)
        pre = torch.matmul(rows, weight).add_(bias)
    s = pre.sigmoid_()
    half = s.shape[-1] // 2
    z = torch.addcmul(s[..., half:], s[..., :half], s[..., half:], value=-2.0)
    return torch.add(torch.matmul(z, out_weight), h, alpha=RESIDUAL_SCALE).add_(out_bias)


class BlockStream:
    """The residual stream of a stack of :class:`FusedBlock`: time-major ``(B, T, R)``, double-buffered.

    ``h`` is the block input in ``stream_dtype`` (float32; float64 in tests) and ``taps: (B, pad + T, R)`` the
    same values in the GEMM dtype after ``pad`` rows of zeros (the causal padding), so that the tap
    ``x[t - j * d]`` of rows ``start..stop`` is the slice ``taps[:, pad - j * d + start : pad - j * d + stop]``.
    When both dtypes agree, ``h`` is a view into ``taps``. Each block writes ``h_next``/``taps_next``, then swaps.
    """

    def __init__(self, h: torch.Tensor, pad: int, dtype: torch.dtype, tile: int = 4096) -> None:
        batch, length, channels = h.shape
        self.pad, self.tile = pad, tile
        buffers = [torch.zeros(batch, pad + length, channels, dtype=dtype, device=h.device) for _ in range(2)]
        if dtype == h.dtype:
            self.taps, self.taps_next = buffers[0], None
            self.h, self.h_next = buffers[0][:, pad:], buffers[1][:, pad:]
            self._spare = buffers[1]
        else:
            self.taps, self.taps_next = buffers
            self.h, self.h_next = h.clone(), torch.empty_like(h)
        self.h.copy_(h)
        if self.taps_next is not None:
            self.taps[:, pad:].copy_(h)

    def swap(self) -> None:
        """The output just written becomes the next block's input."""
        self.h, self.h_next = self.h_next, self.h
        if self.taps_next is None:
            self.taps, self._spare = self._spare, self.taps
        else:
            self.taps, self.taps_next = self.taps_next, self.taps


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


class ConditionUpsampler(nn.Module):
    """Log-mel frames to one conditioning vector per sample: ``(B, n_mels, F) -> (B, n_mels, F * hop)``.

    ``mode="transpose"``: a stack of learned transposed convolutions (kernel 2s, stride s) whose
    strides multiply to ``hop_length``; each starts as linear interpolation between neighbouring
    frames (edge frames are replicated, so the ends hold their value). ``mode="repeat"``: repeat each frame
    ``hop_length`` times, then a learned 3-tap conv (initialised to the identity).
    Frame k lands on samples [k * hop, (k + 1) * hop).
    """

    def __init__(self, n_mels: int, hop_length: int, mode: str = "transpose", mean: float = 0.0, std: float = 1.0):
        super().__init__()
        self.mean, self.std = mean, std
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
    "BlockStream",
    "CausalConv1d",
    "ConditionUpsampler",
    "FusedBlock",
    "ResidualBlock",
    "gated_tile",
    "pointwise",
    "receptive_field",
    "shift_right",
    "stride_factors",
]
