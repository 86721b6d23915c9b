"""The speed paths: the reference maths of the teacher and the student, rearranged to run fast (notebooks 04 and 06).

Nothing here is modelling. Each class computes what a reference method of :mod:`pwn_lib.wavenet` or
:mod:`pwn_lib.student` computes, on the same weights, and ``tests/test_fast_paths.py`` checks it against that
method:

1. :class:`FusedBlock`, :func:`gated_tile`, :class:`BlockStream`: a :class:`~pwn_lib.layers.ResidualBlock` without a
   skip path as one matrix product in and one out, on time-major rows, tiled to stay in cache.
2. :class:`StudentSynthesis`: ``IAFStudent.forward`` on fused blocks (float32 or bf16 products, optionally in
   chunks); ``IAFStudent.for_synthesis`` builds it.
3. :class:`CompiledCachedState`: the teacher's cached steps and its mixture-of-logistics sampler as one C loop
   (``pwn_lib/_fast/cached_mol.c``); ``WaveNet.generate(compiled=True)`` runs it.

This module sits below the models: it reads a teacher or a student through the attributes it needs (named in each
class's docstring) and never imports :mod:`pwn_lib.wavenet` or :mod:`pwn_lib.student`.

Shapes: ``B`` batch, ``T`` samples, ``R`` residual channels, ``S`` skip channels, ``G`` gate channels.
"""

from __future__ import annotations

import ctypes
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from pwn_lib import _fast
from pwn_lib.distributions import _check_temperature, _uniform, output_channels
from pwn_lib.flows import collapse_affine_steps
from pwn_lib.layers import RESIDUAL_SCALE, ResidualBlock, shift_right

# ----- a residual block as matrix products on time-major rows ---------------------------------------------


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


# ----- the student's synthesis ------------------------------------------------------------------------------


class StudentSynthesis:
    """The student prepared for fast synthesis: same weights and outputs, fused and time-major.

    ``IAFStudent.for_synthesis(dtype)`` builds it; ``synthesis(z, c, speaker, chunk)`` returns
    ``(x, mu_tot, log_s_tot)`` like ``IAFStudent.forward``, within float rounding of it. Each block is a
    :class:`FusedBlock`: the dilated taps and the per-block mel projection are one matrix
    product on time-major rows, and the gate costs one ``sigmoid``. With ``dtype=torch.bfloat16`` those products
    run in bf16; the input projection, the residual stream, the head and the flow composition stay float32,
    because x and mu_tot need more than bf16's 8-bit mantissa (a 16-bit sample step is 3e-5).

    ``chunk``: synthesise each flow ``chunk`` samples at a time with ``receptive_field`` samples of overlap
    (memory O(chunk) per layer instead of O(T)); the seams equal the one-pass result because an output only
    sees that far back. ``compile=True`` compiles the per-tile maths (:func:`gated_tile`) with
    :func:`torch.compile`, which fuses its element-wise steps; the first call pays the compilation (tens of
    seconds per tile shape). ``tile``: rows per matrix product, so that its operands stay in cache.

    ``student`` is read through ``conditioning(c, speaker, T)``, ``noise_for`` and ``flows``: each with ``input``,
    ``blocks`` (ResidualBlocks without skips), ``head``, ``receptive_field`` and ``log_scale_min``.
    """

    def __init__(
        self, student: nn.Module, dtype: torch.dtype = torch.float32, compile: bool = False, tile: int = 4096
    ) -> None:
        self.student, self.dtype, self.tile = student, dtype, tile
        self.stream_dtype = torch.promote_types(dtype, torch.float32)  # float64 stays float64 (for tests)
        with torch.no_grad():
            self.flows = [_FlowPlan(flow, dtype, self.stream_dtype) for flow in student.flows]
        self.tile_fn = torch.compile(gated_tile, dynamic=False) if compile else gated_tile

    @torch.no_grad()
    def __call__(
        self,
        z: torch.Tensor,
        c: torch.Tensor | None = None,
        speaker: torch.Tensor | None = None,
        chunk: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``z: (B, 1, T)`` noise, ``c: (B, n_mels, T // hop)`` -> ``(x, mu_tot, log_s_tot)``, each (B, 1, T)."""
        if chunk is not None and chunk < 1:
            raise ValueError(f"chunk={chunk} must be a positive number of samples (or None for one pass)")
        cu, g = self.student.conditioning(c, speaker, z.shape[-1])
        cu = cu.transpose(1, 2).to(self.dtype).contiguous() if cu is not None else None  # (B, T, n_mels)
        x, steps = z[:, 0].to(self.stream_dtype), []
        for plan in self.flows:
            g_biases = [g.to(self.dtype) @ b.speaker for b in plan.blocks] if g is not None else None
            mu, log_s = self._flow(plan, x, cu, g_biases, chunk)
            steps.append((mu, log_s))
            x = x * torch.exp(log_s) + mu
        mu_tot, log_s_tot = collapse_affine_steps(steps)
        return x.unsqueeze(1), mu_tot.unsqueeze(1), log_s_tot.unsqueeze(1)

    @torch.no_grad()
    def sample(
        self,
        c: torch.Tensor | None,
        speaker: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        n_samples: int | None = None,
        noise: str = "logistic",
        chunk: int | None = None,
    ) -> torch.Tensor:
        """``IAFStudent.sample`` on the fast path: the same noise for the same generator, audio (B, 1, T)."""
        x, _, _ = self(self.student.noise_for(c, speaker, n_samples, generator, noise), c, speaker, chunk)
        return x.clamp(-1.0, 1.0)

    def _flow(
        self,
        plan: _FlowPlan,
        x: torch.Tensor,
        cu: torch.Tensor | None,
        g_biases: list[torch.Tensor] | None,
        chunk: int | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One flow's ``(mu, log_s)``, each (B, T), from its input ``x: (B, T)``; in chunks when asked."""
        length = x.shape[-1]
        if chunk is None or chunk >= length:
            return _conditioner(plan, x, cu, g_biases, self.tile_fn, self.tile)
        mus, log_ss = [], []
        for start in range(0, length, chunk):
            stop, first = min(start + chunk, length), max(0, start - plan.receptive_field)
            window_c = cu[:, first:stop] if cu is not None else None
            mu, log_s = _conditioner(plan, x[:, first:stop], window_c, g_biases, self.tile_fn, self.tile)
            mus.append(mu[:, start - first :])
            log_ss.append(log_s[:, start - first :])
        return torch.cat(mus, dim=1), torch.cat(log_ss, dim=1)


class _FlowPlan:
    """One ``IAFFlow``'s weights as GEMM operands: blocks in ``dtype``, input and head in ``stream``."""

    def __init__(self, flow: nn.Module, dtype: torch.dtype, stream: torch.dtype) -> None:
        self.dtype, self.receptive_field, self.log_scale_min = dtype, flow.receptive_field, flow.log_scale_min
        self.input_weight = flow.input.weight[:, 0, 0].to(stream)  # (R,): a 1x1 conv from one channel
        self.input_bias = flow.input.bias.to(stream)
        self.blocks = [FusedBlock.from_block(block, dtype) for block in flow.blocks]
        self.pad = max((b.kernel_size - 1) * b.dilation for b in self.blocks)
        self.head = [
            (layer.weight.squeeze(-1).T.to(stream).contiguous(), layer.bias.to(stream))
            for layer in flow.head
            if isinstance(layer, nn.Conv1d)
        ]


def _conditioner(
    plan: _FlowPlan,
    x: torch.Tensor,
    cu: torch.Tensor | None,
    g_biases: list[torch.Tensor] | None,
    tile_fn: TileFn,
    tile: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``IAFFlow.shift_and_log_scale`` on time-major rows: ``x: (B, T)`` -> ``(mu, log_s)``, each (B, T)."""
    batch, length = x.shape
    h = torch.addcmul(plan.input_bias, shift_right(x).unsqueeze(-1), plan.input_weight)  # (B, T, R)
    stream = BlockStream(h, plan.pad, plan.dtype, tile)
    for i, block in enumerate(plan.blocks):
        block(stream, cu, g_biases[i].unsqueeze(1) if g_biases is not None else None, tile_fn)
    out = stream.h.reshape(batch * length, -1)
    for weight, bias in plan.head:
        out = torch.addmm(bias, torch.relu(out), weight)
    mu, log_s = out.view(batch, length, 2).unbind(-1)
    return mu, log_s.clamp(min=plan.log_scale_min)


# ----- the teacher's compiled cached generation -------------------------------------------------------------


def compiled_generation_available(model: nn.Module) -> bool:
    """Whether :class:`CompiledCachedState` can run ``model``: a float32 CPU "mol" teacher, library built."""
    weight = model.input.weight
    return (
        model.cfg.output == "mol"
        and weight.dtype == torch.float32
        and weight.device.type == "cpu"
        and _fast.library() is not None
    )


class CompiledCachedState:
    """``CachedState`` and the mixture-of-logistics sampler as one C loop (``pwn_lib/_fast/cached_mol.c``).

    A step of the course teacher at batch 1 is ~0.2 MFLOP, but the reference step makes ~300 torch calls of a
    few microseconds each: Python and dispatch, not arithmetic, set its speed. Here torch prepares the weights
    once and, per chunk of ``chunk`` steps, the conditioning terms of every layer (one matrix product) and the
    random draws (the same calls, in the same order, as ``WaveNet._sample_step`` makes one step at a time),
    and C runs the steps. float32 only, output "mol" only.

    ``model`` is read through ``cfg``, ``input``, ``blocks``, ``dilations`` and ``head`` (the teacher's layout).
    """

    def __init__(
        self,
        model: nn.Module,
        batch: int,
        cu: torch.Tensor | None,
        g: torch.Tensor | None,
        chunk: int = 256,
        temperature: float = 1.0,
    ):
        cfg = model.cfg
        if cfg.output != "mol" or model.input.weight.dtype != torch.float32 or model.input.weight.device.type != "cpu":
            raise ValueError(
                f"generate(compiled=True) needs a float32 CPU teacher with output 'mol' (got {cfg.output!r}, "
                f"{model.input.weight.dtype} on {model.input.weight.device}); use compiled=False"
            )
        self.lib = _fast.library()
        if self.lib is None:
            raise RuntimeError(_fast.BUILD_HINT)
        self.model, self.batch, self.cu, self.chunk = model, batch, cu, chunk
        self.temperature = _check_temperature(temperature)
        blocks, residual = model.blocks, cfg.residual_channels
        skip_scale = 1.0 / math.sqrt(len(blocks))
        with torch.no_grad():
            self.weights = [
                tensor.detach().float().contiguous()
                for tensor in (
                    model.input.weight[:, 0, 0],
                    model.input.bias,
                    torch.stack([b.conv.weight.flip(-1).permute(2, 1, 0) for b in blocks]),  # tap j: j * d steps back
                    torch.stack([b.out.weight[:residual, :, 0].T for b in blocks]) * RESIDUAL_SCALE,
                    torch.stack([b.out.bias[:residual] for b in blocks]) * RESIDUAL_SCALE,
                    torch.stack([b.out.weight[residual:, :, 0].T for b in blocks]) * skip_scale,
                    sum(b.out.bias[residual:] for b in blocks) * skip_scale,
                    *[
                        p
                        for layer in model.head
                        if isinstance(layer, nn.Conv1d)
                        for p in (layer.weight[:, :, 0].T, layer.bias)
                    ],
                )
            ]
            bias = torch.stack([b.conv.bias for b in blocks]).unsqueeze(1).expand(-1, batch, -1)  # (L, B, G)
            if g is not None:
                bias = bias + torch.stack([b.speaker(g) for b in blocks])
            self.bias = bias.float()
            self.cond_weight = (
                torch.cat([b.cond.weight.squeeze(-1) for b in blocks]).float() if cu is not None else None
            )  # (L * G, n_mels)
        self.dilations = torch.tensor(model.dilations, dtype=torch.int32)
        queue_rows = sum((cfg.kernel_size - 1) * d for d in model.dilations)
        self.ring = torch.zeros(queue_rows * batch * residual)

    def _conditioning(self, t: int, n: int) -> torch.Tensor:
        """Every layer's conditioning + speaker + bias at steps t .. t + n - 1: (n, L, B, G), contiguous."""
        bias = self.bias.unsqueeze(0)
        if self.cu is None:
            return bias.expand(n, -1, -1, -1).contiguous()
        frames = self.cu[:, :, t : t + n].permute(2, 0, 1).float()  # (n, B, n_mels)
        layers, _, gates = self.bias.shape
        cond = (frames @ self.cond_weight.T).view(n, self.batch, layers, gates).transpose(1, 2)
        return (cond + bias).contiguous()

    def _draws(self, n: int, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Gumbel noise (n, B, K) and logistic noise (n, B): per step, K * B uniforms for the component, then B."""
        k = self.model.cfg.n_mixtures
        u = _uniform((n, self.batch * (k + 1)), self.bias, generator).cpu()
        gumbel = -torch.log(-torch.log(u[:, : self.batch * k]))
        component = u[:, self.batch * k :]
        noise = torch.log(component) - torch.log1p(-component)
        if self.temperature != 1.0:  # the order of Logistic.icdf's products, so the draws stay equal
            noise = self.temperature * noise
        return gumbel.contiguous(), noise.contiguous()

    def run(
        self, n_samples: int, generator: torch.Generator | None, progress: bool = False, return_params: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Generate ``n_samples`` steps: x (B, 1, T) and, with ``return_params``, params (B, C_out, T)."""
        cfg, batch, p = self.model.cfg, self.batch, _fast.pointer
        x = torch.zeros(batch, 1, n_samples)
        params_all = torch.zeros(batch, output_channels(cfg), n_samples) if return_params else None
        previous = torch.zeros(batch)
        sizes = [cfg.residual_channels, cfg.gate_channels, cfg.skip_channels, cfg.kernel_size]
        for t in tqdm(range(0, n_samples, self.chunk), desc="compiled generation", disable=not progress, leave=False):
            n = min(self.chunk, n_samples - t)
            cond, (gumbel, noise) = self._conditioning(t, n), self._draws(n, generator)
            x_out = torch.empty(n, batch)
            params = torch.empty(n, batch, output_channels(cfg)) if return_params else None
            w = [p(tensor) for tensor in self.weights]
            status = self.lib.pwn_cached_mol(
                batch,
                n,
                t,
                len(self.model.blocks),
                *sizes,
                p(self.dilations),
                w[0],
                w[1],
                w[2],
                p(cond),
                *w[3:],
                cfg.n_mixtures,
                ctypes.c_float(cfg.previous_sample_weight),
                ctypes.c_float(cfg.log_scale_min),
                cfg.bits,
                p(self.ring),
                p(gumbel),
                p(noise),
                p(previous),
                p(x_out),
                p(params),
            )
            if status:
                raise ValueError("compiled generation supports at most 1024 channels per layer")
            x[:, 0, t : t + n] = x_out.T
            if params_all is not None:
                params_all[:, :, t : t + n] = params.permute(1, 2, 0)
        return (x, params_all) if return_params else x


__all__ = [
    "BlockStream",
    "CompiledCachedState",
    "FusedBlock",
    "StudentSynthesis",
    "TileFn",
    "compiled_generation_available",
    "gated_tile",
]
