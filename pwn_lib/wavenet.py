"""The WaveNet teacher (van den Oord et al., 2016; 2017), read top to bottom.

1. :class:`CausalConv1d`: a dilated convolution that only looks at the past.
2. :class:`ResidualBlock`: gated ``tanh * sigmoid`` unit, residual path, optional skip path,
   local conditioning (upsampled log-mel) and optional global conditioning (speaker).
3. :class:`ConditionUpsampler`: log-mel frames ``(B, n_mels, F)`` to one vector per sample.
4. :class:`WaveNet`: input projection, dilation stacks, output head, and the two generators:
   :meth:`WaveNet.generate` (cached queues, Paine et al. 2016, O(layers) per sample) and
   :meth:`WaveNet.generate_naive` (recomputes the whole receptive field every sample).

Shapes: ``B`` batch, ``T`` samples, ``F = T // hop_length`` frames, ``R`` residual channels,
``S`` skip channels, ``G`` gate channels (``G // 2`` after gating).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from pwn_lib.config import TEACHER_PRESETS, WaveNetConfig, preset
from pwn_lib.distributions import Distribution, output_channels, output_distribution

# Mean and std of pwn_lib.audio.log_mel over the corpus's train split (measured): conditioning is standardised.
LOG_MEL_MEAN, LOG_MEL_STD = -5.09, 2.32
RESIDUAL_SCALE = math.sqrt(0.5)  # keeps the residual stream's variance constant with depth


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


class ConditionUpsampler(nn.Module):
    """Log-mel frames to one conditioning vector per sample: ``(B, n_mels, F) -> (B, n_mels, F * hop)``.

    ``mode="transpose"``: a stack of learned transposed convolutions (kernel 2s, stride s) whose
    strides multiply to ``hop_length``; each starts as linear interpolation between neighbouring
    frames (edge frames are replicated, so the ends hold their value). ``mode="repeat"``: repeat each frame
    ``hop_length`` times, then a learned 3-tap conv (initialised to the identity).
    Frame k lands on samples [k * hop, (k + 1) * hop).
    """

    def __init__(self, n_mels: int, hop_length: int, mode: str = "transpose"):
        super().__init__()
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
        """c: (B, n_mels, F) log-mel -> (B, n_mels, F * hop_length), standardised first.

        Raw log-mels sit near -5 (down to -11.5 in silence); fed as they are, the conditioning terms
        grow until every gate saturates and no gradient reaches the convolutions (seen in a course
        teacher after 4,250 steps: conv gradients ~1e-8, the mel ignored).
        """
        c = (c - LOG_MEL_MEAN) / LOG_MEL_STD
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


def dilations(cfg: WaveNetConfig) -> list[int]:
    """Dilation of every layer: 1, 2, ..., 2**(layers // stacks - 1), repeated ``stacks`` times."""
    if cfg.layers % cfg.stacks:
        raise ValueError(f"WaveNetConfig.layers={cfg.layers} must be a multiple of stacks={cfg.stacks}")
    per_stack = cfg.layers // cfg.stacks
    return [2 ** (i % per_stack) for i in range(cfg.layers)]


def receptive_field(kernel_size: int, dilation_list: list[int]) -> int:
    """How many past samples one output depends on: ``(k - 1) * sum(dilations) + 1``."""
    return (kernel_size - 1) * sum(dilation_list) + 1


class WaveNet(nn.Module):
    """Autoregressive model of 16-bit audio: ``params[..., t]`` describes ``p(x_t | x_<t, c, speaker)``."""

    def __init__(self, cfg: WaveNetConfig):
        super().__init__()
        if cfg.skip_channels <= 0:
            raise ValueError(f"WaveNetConfig.skip_channels={cfg.skip_channels}: the teacher needs a skip path (> 0)")
        self.cfg = cfg
        self.dilations = dilations(cfg)
        self.input = nn.Conv1d(1, cfg.residual_channels, 1)
        self.upsample = (
            ConditionUpsampler(cfg.cond_channels, cfg.hop_length, cfg.upsample) if cfg.cond_channels else None
        )
        self.speaker_embedding = nn.Embedding(cfg.n_speakers, cfg.speaker_dim) if cfg.n_speakers else None
        global_channels = cfg.speaker_dim if cfg.n_speakers else 0
        self.blocks = nn.ModuleList(
            ResidualBlock(cfg.residual_channels, cfg.gate_channels, cfg.skip_channels, cfg.kernel_size, d,
                          cfg.cond_channels, global_channels)
            for d in self.dilations
        )
        self.head = nn.Sequential(
            nn.ReLU(), nn.Conv1d(cfg.skip_channels, cfg.skip_channels, 1),
            nn.ReLU(), nn.Conv1d(cfg.skip_channels, output_channels(cfg), 1),
        )
        with torch.no_grad():  # a small last layer: every sample starts near the same broad distribution
            self.head[-1].weight.mul_(0.1)

    @property
    def receptive_field(self) -> int:
        """Number of past samples x[t - receptive_field : t] that ``params[..., t]`` depends on."""
        return receptive_field(self.cfg.kernel_size, self.dilations)

    # ----- teacher-forced pass -------------------------------------------------------------
    def forward(
        self, x: torch.Tensor, c: torch.Tensor | None = None, speaker: torch.Tensor | None = None
    ) -> torch.Tensor:
        """x: (B, 1, T) audio in [-1, 1]; c: (B, n_mels, T // hop) log-mel; speaker: (B,) ids.

        Returns params (B, C_out, T): ``params[..., t]`` is the distribution of x[..., t] given x[..., :t].
        """
        shifted = F.pad(x, (1, 0))[..., :-1]  # position t sees x[t - 1]
        return self.net(shifted, self.condition(c, x.shape[-1]), self.speaker_vector(speaker))

    def net(self, shifted: torch.Tensor, cu: torch.Tensor | None, g: torch.Tensor | None) -> torch.Tensor:
        """The stack without the shift: shifted (B, 1, T), cu (B, n_mels, T) upsampled, g (B, speaker_dim).

        Under bf16 autocast only the convolutions inside the blocks run in bf16: the input projection,
        the residual stream, the skip sum and the head stay fp32, because a 16-bit sample and the
        mixture means need more precision than bf16's 8-bit mantissa.
        """
        device = shifted.device.type
        with torch.autocast(device, enabled=False):
            h = self.input(shifted)
        skips = 0.0
        for block in self.blocks:
            h, skip = block(h, cu, g)  # h stays fp32: fp32 input + bf16 residual promotes to fp32
            skips = skips + skip.to(h.dtype)
        with torch.autocast(device, enabled=False):
            return self.add_previous_sample(self.head(skips * (1.0 / math.sqrt(len(self.blocks)))), shifted)

    def add_previous_sample(self, params: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
        """Shift the location channels of params by rho * x[t - 1], rho = ``cfg.previous_sample_weight``.

        params: (B, C_out, T) or (B, C_out); previous: (B, 1, T) or (B, 1), the input shifted by one.
        The MoL means (channels K..2K) or the Gaussian mean (channel 0) become rho * x[t-1] + network output.
        """
        rho = self.cfg.previous_sample_weight
        if rho == 0.0 or self.cfg.output == "mulaw":
            return params
        start, stop = (self.cfg.n_mixtures, 2 * self.cfg.n_mixtures) if self.cfg.output == "mol" else (0, 1)
        return torch.cat([params[:, :start], params[:, start:stop] + rho * previous, params[:, stop:]], dim=1)

    def condition(self, c: torch.Tensor | None, n_samples: int) -> torch.Tensor | None:
        """Upsample c: (B, n_mels, F) to (B, n_mels, n_samples); None when conditioning is off."""
        if self.upsample is None:
            if c is not None:
                raise ValueError("this WaveNet has cond_channels=0 but got c; pass c=None or set cond_channels")
            return None
        if c is None:
            raise ValueError(f"this WaveNet is conditioned (cond_channels={self.cfg.cond_channels}); pass c")
        if c.shape[1] != self.cfg.cond_channels:
            raise ValueError(f"c has {c.shape[1]} channels but cond_channels={self.cfg.cond_channels}")
        if c.shape[-1] * self.cfg.hop_length < n_samples:
            raise ValueError(
                f"c has {c.shape[-1]} frames, covering {c.shape[-1] * self.cfg.hop_length} samples < "
                f"{n_samples}; pass T // hop_length frames with T a multiple of hop_length={self.cfg.hop_length}"
            )
        return self.upsample(c)[..., :n_samples]

    def speaker_vector(self, speaker: torch.Tensor | None) -> torch.Tensor | None:
        """speaker: (B,) ids -> (B, speaker_dim) embeddings; None when global conditioning is off."""
        if self.speaker_embedding is None:
            if speaker is not None:
                raise ValueError("this WaveNet has n_speakers=0 but got speaker ids; pass speaker=None")
            return None
        if speaker is None:
            raise ValueError(f"this WaveNet has n_speakers={self.cfg.n_speakers}; pass speaker (B,) ids")
        return self.speaker_embedding(speaker)

    # ----- likelihood ---------------------------------------------------------------------
    def distribution(self, params: torch.Tensor) -> Distribution:
        """The output distribution object for params (B, C_out, T) (MoL, Gaussian or mu-law).

        bf16 params are promoted to float32 (a 16-bit bin is narrower than bf16 can place); float64 stays float64.
        """
        return output_distribution(params.to(torch.promote_types(params.dtype, torch.float32)), self.cfg)

    def log_prob(
        self, x: torch.Tensor, c: torch.Tensor | None = None, speaker: torch.Tensor | None = None
    ) -> torch.Tensor:
        """x: (B, 1, T) -> (B, T) log p(x_t | x_<t, c) in nats, teacher-forced."""
        params = self(x, c, speaker)
        return self.distribution(params).log_prob(x.squeeze(1).to(torch.promote_types(params.dtype, torch.float32)))

    def loss(
        self, x: torch.Tensor, c: torch.Tensor | None = None, speaker: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Mean negative log-likelihood in nats per sample (a scalar)."""
        return -self.log_prob(x, c, speaker).mean()

    # ----- generation -------------------------------------------------------------------------
    def _generation_inputs(
        self, c: torch.Tensor | None, n_samples: int | None, speaker: torch.Tensor | None
    ) -> tuple[int, int, torch.Tensor | None, torch.Tensor | None]:
        """Resolve (batch, n_samples, upsampled c (B, n_mels, T) or None, speaker vector or None)."""
        if n_samples is None:
            if c is None:
                raise ValueError("unconditional generation needs n_samples")
            n_samples = c.shape[-1] * self.cfg.hop_length
        batch = c.shape[0] if c is not None else speaker.shape[0] if speaker is not None else 1
        return batch, n_samples, self.condition(c, n_samples), self.speaker_vector(speaker)

    def _sample_step(self, params: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """params: (B, C_out) -> one sample per batch row, (B,)."""
        return self.distribution(params.unsqueeze(-1)).sample(generator=generator)[:, 0]

    @torch.no_grad()
    def generate(
        self,
        c: torch.Tensor | None = None,
        n_samples: int | None = None,
        speaker: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        progress: bool = True,
        return_params: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Fast ancestral sampling with per-layer queues (Paine et al., 2016): O(layers) per sample.

        c: (B, n_mels, F) log-mel (None when unconditional, then n_samples is required);
        n_samples defaults to F * hop_length. Returns x (B, 1, T), and with ``return_params`` also
        the per-step distribution parameters (B, C_out, T).
        """
        batch, n_samples, cu, g = self._generation_inputs(c, n_samples, speaker)
        state = CachedState(self, batch, cu, g)
        like = {"device": self.input.weight.device, "dtype": self.input.weight.dtype}  # float64 models stay float64
        x = torch.zeros(batch, 1, n_samples, **like)
        params_all = torch.zeros(batch, output_channels(self.cfg), n_samples, **like) if return_params else None
        previous = torch.zeros(batch, 1, **like)
        for t in tqdm(range(n_samples), desc="cached generation", disable=not progress, leave=False):
            params = state.step(previous, t)
            previous = self._sample_step(params, generator).unsqueeze(1)
            x[:, 0, t] = previous[:, 0]
            if params_all is not None:
                params_all[:, :, t] = params
        return (x, params_all) if return_params else x

    @torch.no_grad()
    def generate_naive(
        self,
        c: torch.Tensor | None = None,
        n_samples: int | None = None,
        speaker: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        progress: bool = True,
        return_params: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Ancestral sampling that reruns the network on the last ``receptive_field`` samples each step.

        Same arguments and result as :meth:`generate`; O(receptive_field * layers) per sample.
        """
        batch, n_samples, cu, g = self._generation_inputs(c, n_samples, speaker)
        like = {"device": self.input.weight.device, "dtype": self.input.weight.dtype}
        shifted = torch.zeros(batch, 1, n_samples + 1, **like)  # shifted[..., t] = x[..., t - 1]
        params_all = torch.zeros(batch, output_channels(self.cfg), n_samples, **like) if return_params else None
        for t in tqdm(range(n_samples), desc="naive generation", disable=not progress, leave=False):
            start = max(0, t + 1 - self.receptive_field)
            window_c = cu[..., start : t + 1] if cu is not None else None
            shifted[:, 0, t + 1], params = self.naive_step(shifted[..., start : t + 1], window_c, g, generator)
            if params_all is not None:
                params_all[:, :, t] = params
        x = shifted[..., 1:]
        return (x, params_all) if return_params else x

    def naive_step(
        self,
        shifted: torch.Tensor,
        cu: torch.Tensor | None,
        g: torch.Tensor | None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One step of :meth:`generate_naive`: rerun the stack on the last W <= receptive_field inputs.

        shifted: (B, 1, W) holding x[t - W .. t - 1]; cu: (B, n_mels, W) upsampled conditioning at
        t - W + 1 .. t, or None; g: (B, speaker_dim) or None. Returns (x_t (B,), params (B, C_out)).
        """
        params = self.net(shifted, cu, g)[..., -1]
        return self._sample_step(params, generator), params


class _LayerQueue:
    """Ring buffer of one layer's last ``(k - 1) * d`` inputs, time-major: ((k - 1) * d, B, R)."""

    def __init__(self, batch: int, channels: int, kernel_size: int, dilation: int, like: torch.Tensor):
        self.buffer = torch.zeros((kernel_size - 1) * dilation, batch, channels, dtype=like.dtype, device=like.device)
        self.offsets = [j * dilation for j in range(kernel_size - 1, 0, -1)]  # oldest tap first

    def read_write(self, h: torch.Tensor, t: int) -> torch.Tensor:
        """h: (B, R) the input at step t -> (B, k, R) inputs at t - (k-1)d, ..., t - d, t; then store h."""
        size = self.buffer.shape[0]
        window = torch.stack([self.buffer[(t - o) % size] for o in self.offsets] + [h], dim=1)
        if size:
            self.buffer[t % size] = h
        return window


class CachedState:
    """Per-layer queues plus step-ready weights and conditioning for :meth:`WaveNet.generate`.

    The dilated convs and the head become (C_in, C_out) matrices for ``torch.addmm``; the conditioning terms of
    all layers are computed ``chunk`` steps at a time with one matrix product.
    """

    def __init__(
        self, model: WaveNet, batch: int, cu: torch.Tensor | None, g: torch.Tensor | None, chunk: int = 256
    ):
        cfg, like = model.cfg, model.input.weight
        self.n_layers, self.chunk, self.cu = len(model.blocks), chunk, cu
        self.queues = [_LayerQueue(batch, cfg.residual_channels, cfg.kernel_size, d, like) for d in model.dilations]
        self.input = _matrix(model.input)
        # conv weight (G, R, k) -> (k * R, G) to match the (B, k, R) window flattened
        self.convs = [
            b.conv.weight.permute(2, 1, 0).reshape(-1, b.conv.out_channels).contiguous() for b in model.blocks
        ]
        self.conv_biases = [b.conv.bias.expand(batch, -1) for b in model.blocks]
        if g is not None:  # speaker terms are constant over time: fold them into the biases
            self.conv_biases = [bias + b.speaker(g) for bias, b in zip(self.conv_biases, model.blocks, strict=True)]
        self.blocks = list(model.blocks)
        self.add_previous_sample = model.add_previous_sample
        self.head = [_matrix(layer) for layer in model.head if isinstance(layer, nn.Conv1d)]
        self.skip_scale = 1.0 / math.sqrt(self.n_layers)
        if cu is not None:
            self.cond_weight = torch.cat([b.cond.weight.squeeze(-1) for b in model.blocks], dim=0)  # (L*G, n_mels)

    def _conditioning(self, t: int) -> list[torch.Tensor] | None:
        """Per-layer conditioning terms (B, G) at step t, recomputed for a whole chunk when t enters it."""
        if self.cu is None:
            return None
        if t % self.chunk == 0:
            frames = self.cu[:, :, t : t + self.chunk].permute(2, 0, 1)  # (chunk, B, n_mels)
            self._cond = (frames @ self.cond_weight.T).chunk(self.n_layers, dim=-1)  # L x (chunk, B, G)
        return [c[t % self.chunk] for c in self._cond]

    def step(self, previous: torch.Tensor, t: int) -> torch.Tensor:
        """previous: (B, 1) the sample x[t - 1] (zeros at t = 0) -> params for x[t]: (B, C_out)."""
        h = torch.addmm(self.input[1], previous, self.input[0])  # (B, R)
        cond = self._conditioning(t)
        skips = 0.0
        for i, block in enumerate(self.blocks):  # the same layer maths as ResidualBlock.forward, one step
            window = self.queues[i].read_write(h, t).flatten(1)  # (B, k * R)
            a = torch.addmm(self.conv_biases[i], window, self.convs[i])  # (B, G)
            if cond is not None:
                a = a + cond[i]
            h, skip = block.finish(h, a)
            skips = skips + skip
        out = skips * self.skip_scale
        for weight, bias in self.head:
            out = torch.addmm(bias, torch.relu(out), weight)
        return self.add_previous_sample(out, previous)


def _matrix(layer: nn.Conv1d) -> tuple[torch.Tensor, torch.Tensor]:
    """A 1x1 conv as (weight (C_in, C_out), bias (C_out,)) for ``torch.addmm``."""
    return layer.weight.squeeze(-1).T.contiguous(), layer.bias


def build_teacher(preset_name: str = "course", **overrides) -> WaveNet:
    """A freshly initialised teacher from ``TEACHER_PRESETS[preset_name]`` with field overrides."""
    return WaveNet(preset(TEACHER_PRESETS, preset_name, **overrides))


__all__ = [
    "CachedState", "CausalConv1d", "ConditionUpsampler", "ResidualBlock", "WaveNet", "build_teacher",
    "dilations", "pointwise", "receptive_field", "stride_factors",
]
