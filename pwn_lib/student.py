"""The Parallel WaveNet student: a stack of inverse autoregressive flows (van den Oord et al., 2017, section 3).

Taught in notebook 05. The student turns white logistic noise ``z ~ Logistic(0, 1)`` into audio in one
parallel pass. Flow i is the autoregressive affine transform of :mod:`pwn_lib.flows` (notebook 01),

    x^i_t = x^{i-1}_t * s^i_t + mu^i_t,   (mu^i_t, log s^i_t) = WaveNet_i(x^{i-1}_{<t}, c)

with ``x^0 = z`` and a WaveNet without skip paths as its conditioner (:class:`IAFFlow`). Because
(mu^i_t, s^i_t) only see the *past* of their input (the input is shifted right by one step before the causal
convolutions), the stack collapses to a single logistic per step (:func:`pwn_lib.flows.collapse_affine_steps`):

    x_t = z_t * s_tot_t + mu_tot_t,   s_tot = prod_i s^i,   mu_tot = sum_i mu^i prod_{j>i} s^j,

and both (mu_tot_t, s_tot_t) depend only on z_{<t}. Distillation (``pwn_lib.distill``) needs exactly these.
:meth:`IAFStudent.for_synthesis` returns the same computation fused for speed, from :mod:`pwn_lib.fast_paths`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
from torch import nn

from pwn_lib.artifacts import Checkpointed
from pwn_lib.config import (
    AUDIO_PRESETS,
    STUDENT_PRESETS,
    StudentConfig,
    preset,
    standardisation,
)
from pwn_lib.distributions import Gaussian, Logistic
from pwn_lib.fast_paths import StudentSynthesis
from pwn_lib.flows import AffineStack, AutoregressiveAffine, Conditioned
from pwn_lib.layers import ConditionUpsampler, ResidualBlock, receptive_field, shift_right
from pwn_lib.sizes import check_fits

INIT_OUTPUT_STD = 0.05  # standard deviation of the student's output at initialisation (speech is ~0.05-0.1)
LOGISTIC_STD = math.pi / math.sqrt(3.0)  # standard deviation of Logistic(0, 1)
NOISE_KINDS = ("logistic", "gaussian")


def flow_dilations(n_layers: int, max_dilation: int) -> list[int]:
    """Dilations 1, 2, 4, ..., max_dilation, repeated until there are ``n_layers`` of them."""
    if max_dilation < 1 or max_dilation & (max_dilation - 1):
        raise ValueError(f"StudentConfig.max_dilation={max_dilation} must be a power of two (e.g. 32 or 512)")
    cycle = int(math.log2(max_dilation)) + 1
    return [2 ** (layer % cycle) for layer in range(n_layers)]


class IAFFlow(AutoregressiveAffine):
    """One flow: :class:`pwn_lib.flows.AutoregressiveAffine` whose conditioner is a WaveNet without skip paths.

    The WaveNet reads x^{i-1} shifted right by one step, so ``shift_and_log_scale(x_prev: (B, 1, T),
    c: (B, n_mels, T) upsampled | None, g: (B, speaker_dim) | None)`` returns ``(mu, log_s)``, each
    ``(B, 1, T)``, where step t only depends on ``x_prev[..., :t]``. ``forward_and_log_det`` then gives
    ``(x_prev * s + mu, log_s)``; ``inverse`` undoes it step by step.
    """

    def __init__(self, n_layers: int, cfg: StudentConfig, init_log_scale: float) -> None:
        super().__init__()
        self.dilations = flow_dilations(n_layers, cfg.max_dilation)
        self.kernel_size = cfg.kernel_size
        self.log_scale_min = cfg.log_scale_min
        global_channels = cfg.speaker_dim if cfg.n_speakers > 0 else 0
        self.input = nn.Conv1d(1, cfg.channels, kernel_size=1)
        self.blocks = nn.ModuleList(
            ResidualBlock(cfg.channels, 2 * cfg.channels, 0, cfg.kernel_size, d, cfg.cond_channels, global_channels)
            for d in self.dilations
        )
        self.head = nn.Sequential(
            nn.ReLU(), nn.Conv1d(cfg.channels, cfg.channels, 1), nn.ReLU(), nn.Conv1d(cfg.channels, 2, 1)
        )
        self._init_output(init_log_scale)

    def _init_output(self, init_log_scale: float) -> None:
        """Small last layer: the flow starts close to ``x -> x * exp(init_log_scale)`` (mu ~ 0)."""
        last = self.head[-1]
        nn.init.normal_(last.weight, std=1e-3)
        with torch.no_grad():
            last.bias.copy_(torch.tensor([0.0, init_log_scale]))

    @property
    def receptive_field(self) -> int:
        """Past samples x^{i-1}_{t-R..t-1} that (mu_t, s_t) see: ``(k - 1) * sum(dilations) + 1`` (the shift adds 1)."""
        return receptive_field(self.kernel_size, self.dilations)

    def shift_and_log_scale(
        self, x_prev: torch.Tensor, c: torch.Tensor | None = None, g: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The conditioner. Under bf16 autocast only the block convolutions run in bf16, as in the teacher: the input
        projection, the residual stream and the head stay in the input's dtype (audio needs > 8 mantissa bits).
        """
        device = x_prev.device.type
        with torch.autocast(device, enabled=False):
            h = self.input(shift_right(x_prev))
        for block in self.blocks:
            h, _ = block(h, c, g)  # fp32 stream + bf16 residual promotes back to fp32
        with torch.autocast(device, enabled=False):
            mu, log_s = self.head(h).chunk(2, dim=1)
        return mu, log_s.clamp(min=self.log_scale_min)


class IAFStudent(Checkpointed, nn.Module):
    """A stack of ``len(cfg.flow_layers)`` IAF flows sharing one conditioning upsampler (and speaker table).

    ``forward(z: (B, 1, T), c: (B, n_mels, T // hop) | None, speaker: (B,) | None) -> (x, mu_tot, log_s_tot)``,
    each ``(B, 1, T)``, in one parallel pass; ``x == z * exp(log_s_tot) + mu_tot``.
    """

    checkpoint_kind, config_class = "student", StudentConfig
    check_fits = staticmethod(check_fits)  # refuse a checkpoint config too large to build (pwn_lib.sizes)

    def __init__(self, cfg: StudentConfig) -> None:
        super().__init__()
        if not cfg.flow_layers:
            raise ValueError("StudentConfig.flow_layers is empty; give at least one flow, e.g. (10, 10, 10, 30)")
        self.cfg = cfg
        self.upsample = (
            ConditionUpsampler(cfg.cond_channels, cfg.hop_length, cfg.upsample, *standardisation(cfg))
            if cfg.cond_channels
            else None
        )
        self.speaker_embedding = nn.Embedding(cfg.n_speakers, cfg.speaker_dim) if cfg.n_speakers > 0 else None
        init_log_scale = math.log(INIT_OUTPUT_STD / LOGISTIC_STD) / len(cfg.flow_layers)
        self.flows = AffineStack([IAFFlow(n, cfg, init_log_scale) for n in cfg.flow_layers])

    @property
    def receptive_field(self) -> int:
        """Samples of z that x_t depends on: z_t itself plus each flow's reach into the past."""
        return 1 + sum(flow.receptive_field for flow in self.flows)

    def conditioning(
        self, c: torch.Tensor | None, speaker: torch.Tensor | None, n_samples: int
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Upsample ``c: (B, n_mels, F)`` to ``(B, n_mels, n_samples)`` and embed ``speaker: (B,)``."""
        if (c is None) != (self.upsample is None):
            raise ValueError(
                f"IAFStudent has cond_channels={self.cfg.cond_channels}: pass c exactly when cond_channels > 0"
            )
        if c is not None:
            if c.shape[-1] * self.cfg.hop_length != n_samples:
                raise ValueError(
                    f"conditioning has {c.shape[-1]} frames but the noise has {n_samples} samples; "
                    f"need frames * hop_length ({self.cfg.hop_length}) == samples"
                )
            c = self.upsample(c)
        if (speaker is None) != (self.speaker_embedding is None):
            raise ValueError(f"IAFStudent has n_speakers={self.cfg.n_speakers}: pass speaker exactly when it is > 0")
        g = self.speaker_embedding(speaker) if speaker is not None else None
        return c, g

    def forward(
        self, z: torch.Tensor, c: torch.Tensor | None = None, speaker: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``z: (B, 1, T)`` noise -> ``(x, mu_tot, log_s_tot)``, each ``(B, 1, T)``.

        The flows run as one :class:`pwn_lib.flows.AffineStack`: its log-det is ``log s_tot`` (the diagonal
        of dx/dz) and its closed-form collapse gives ``mu_tot``, so ``x == z * s_tot + mu_tot``.
        """
        cu, g = self.conditioning(c, speaker, z.shape[-1])
        return self.flows.forward_and_collapse(z, c=cu, g=g)

    def as_transform(
        self, c: torch.Tensor | None = None, speaker: torch.Tensor | None = None, n_samples: int | None = None
    ) -> Conditioned:
        """The student as a :class:`pwn_lib.flows.Transform` ``z: (B, 1, T) -> x`` for these frames and speakers.

        It has ``forward``, ``inverse`` (sequential, T passes) and ``log_abs_det_jacobian``, so the flows'
        generic property tests cover the real student.
        """
        n_samples = c.shape[-1] * self.cfg.hop_length if c is not None else n_samples
        cu, g = self.conditioning(c, speaker, n_samples)
        return Conditioned(self.flows, c=cu, g=g)

    def for_synthesis(
        self, dtype: torch.dtype = torch.float32, compile: bool = False, tile: int = 4096
    ) -> StudentSynthesis:
        """This student's fast synthesis path (:class:`pwn_lib.fast_paths.StudentSynthesis`), equal to
        :meth:`forward` within float rounding; rebuild it after changing the weights.

        ``dtype`` of the block products (float32 or bfloat16); ``tile`` rows per product.
        """
        return StudentSynthesis(self, dtype, compile, tile)

    def draw_noise(
        self,
        shape: tuple[int, ...],
        like: torch.Tensor,
        generator: torch.Generator | None = None,
        noise: str = "logistic",
    ) -> torch.Tensor:
        """``z`` of ``shape`` on ``like``'s device/dtype: Logistic(0, 1) (Parallel WaveNet) or N(0, 1) (ClariNet)."""
        if noise not in NOISE_KINDS:
            raise ValueError(f"noise={noise!r} is unknown; use one of {NOISE_KINDS}")
        zeros = torch.zeros(shape, dtype=like.dtype, device=like.device)
        base = Logistic(zeros, zeros) if noise == "logistic" else Gaussian(zeros, zeros)
        return base.sample(generator)

    def noise_for(
        self,
        c: torch.Tensor | None,
        speaker: torch.Tensor | None = None,
        n_samples: int | None = None,
        generator: torch.Generator | None = None,
        noise: str = "logistic",
    ) -> torch.Tensor:
        """The noise ``z: (B, 1, T)`` that :meth:`sample` turns into audio for ``c: (B, n_mels, F)``, T = F * hop.

        Without conditioning pass ``c=None`` and ``n_samples`` (batch size 1, or ``len(speaker)``).
        """
        if c is None and n_samples is None:
            raise ValueError("sampling without conditioning (c=None) needs n_samples, the length of the audio")
        batch = c.shape[0] if c is not None else (len(speaker) if speaker is not None else 1)
        length = c.shape[-1] * self.cfg.hop_length if c is not None else n_samples
        return self.draw_noise((batch, 1, length), next(self.parameters()), generator, noise)

    @torch.no_grad()
    def sample(
        self,
        c: torch.Tensor | None,
        speaker: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        n_samples: int | None = None,
        noise: str = "logistic",
    ) -> torch.Tensor:
        """Audio ``(B, 1, T)`` clipped to [-1, 1] for ``c: (B, n_mels, F)`` (T = F * hop), all steps at once.

        Without conditioning pass ``c=None`` and ``n_samples`` (batch size 1, or ``len(speaker)``).
        """
        x, _, _ = self(self.noise_for(c, speaker, n_samples, generator, noise), c, speaker)
        return x.clamp(-1.0, 1.0)


def build_student(preset_name: str = "course", **overrides: Any) -> IAFStudent:
    """An :class:`IAFStudent` from a named preset (``tiny``, ``course``, ``paper``) with field overrides.

    The log-mel statistics default to those of the corpus's train split for the preset's audio.
    """
    from pwn_lib.features import corpus_statistics

    cfg = preset(STUDENT_PRESETS, preset_name, **overrides)
    if cfg.cond_channels and cfg.log_mel_mean is None:
        cfg = dataclasses.replace(cfg, **corpus_statistics(AUDIO_PRESETS[preset_name]))
    return IAFStudent(cfg)


__all__ = ["INIT_OUTPUT_STD", "IAFFlow", "IAFStudent", "build_student", "flow_dilations"]
