"""Normalizing flows from scratch: the change of variables, affine transforms, MADE, MAF and IAF.

Paper, section 3 (inverse autoregressive flows); taught in notebook 01. The student (notebook 05) is built
from :class:`AutoregressiveAffine` and :class:`AffineStack`.

A transform maps ``x -> y`` with ``forward``, undoes it with ``inverse`` and reports
``log_abs_det_jacobian(x, y)``. Every transform here has a triangular Jacobian, so that method returns
one term per coordinate, ``(..., D)``: ``log |dy_i / dx_i|``. Their sum over the last axis is
``log |det dy/dx|``; for autoregressive transforms each term belongs to one step, which is how the
student's per-sample log-scales appear in Parallel WaveNet.

MAF and IAF share one transform, :class:`AutoregressiveAffine` (``y_i = x_i * s(x_<i) + mu(x_<i)``,
parallel forward, sequential inverse). They differ only in the direction they use it:

- :class:`IAF` samples with the parallel direction ``x = T(z)`` and must invert sequentially to score data.
- :class:`MAF` scores data with the parallel direction ``z = T(x)`` and must invert sequentially to sample.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from pwn_lib.distributions import Gaussian, Logistic

# --------------------------------------------------------------------------- change of variables


def change_of_variables(log_prob_z: torch.Tensor, log_abs_det_dx_dz: torch.Tensor) -> torch.Tensor:
    """Density of ``x = f(z)``: ``log p_x(x) = log p_z(z) - log |det dx/dz|`` (shapes broadcast)."""
    return log_prob_z - log_abs_det_dx_dz


def transformed_log_prob(
    transform: Transform, base_log_prob: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor
) -> torch.Tensor:
    """log p_x(x) per coordinate when ``x = transform(z)`` and ``z ~ base``; ``x: (..., D) -> (..., D)``.

    Sum over the last axis for the joint log density.
    """
    z = transform.inverse(x)
    return change_of_variables(base_log_prob(z), transform.log_abs_det_jacobian(z, x))


# --------------------------------------------------------------------------- transforms


class Transform(nn.Module):
    """A bijection ``x: (..., D) -> y: (..., D)`` with a triangular Jacobian.

    ``**context`` carries conditioning that the transform reads but does not transform (the student's
    upsampled log-mel ``c`` and speaker vector ``g``); transforms without conditioning ignore it.
    """

    def forward(self, x: torch.Tensor, **context: Any) -> torch.Tensor:
        return self.forward_and_log_det(x, **context)[0]

    def inverse(self, y: torch.Tensor, **context: Any) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} must implement inverse(y)")

    def log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor, **context: Any) -> torch.Tensor:
        """Per-coordinate ``log |dy_i / dx_i|``, ``(..., D)``; sum over the last axis for log |det J|."""
        return self.forward_and_log_det(x, **context)[1]

    def forward_and_log_det(self, x: torch.Tensor, **context: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """``(y, log_abs_det_jacobian(x, y))``. Subclasses override this (one pass for both), or override
        ``forward`` and ``log_abs_det_jacobian`` instead, as notebook 01's ``Sinh`` does."""
        cls = type(self)
        if cls.forward is Transform.forward or cls.log_abs_det_jacobian is Transform.log_abs_det_jacobian:
            raise NotImplementedError(
                f"{cls.__name__} must implement forward_and_log_det(x), or both forward and log_abs_det_jacobian"
            )
        y = self.forward(x, **context)
        return y, self.log_abs_det_jacobian(x, y, **context)


class ElementwiseAffine(Transform):
    """``y = x * exp(log_scale) + loc`` with learnable ``loc, log_scale: (D,)`` (zero-initialised: identity)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.loc = nn.Parameter(torch.zeros(dim))
        self.log_scale = nn.Parameter(torch.zeros(dim))

    def forward_and_log_det(self, x: torch.Tensor, **context: Any) -> tuple[torch.Tensor, torch.Tensor]:
        return x * torch.exp(self.log_scale) + self.loc, self.log_scale.expand_as(x)

    def inverse(self, y: torch.Tensor, **context: Any) -> torch.Tensor:
        return (y - self.loc) * torch.exp(-self.log_scale)


class Reverse(Transform):
    """Reverses the coordinates, so that the next autoregressive layer sees them in the other order."""

    def forward_and_log_det(self, x: torch.Tensor, **context: Any) -> tuple[torch.Tensor, torch.Tensor]:
        return x.flip(-1), torch.zeros_like(x)

    def inverse(self, y: torch.Tensor, **context: Any) -> torch.Tensor:
        return y.flip(-1)


class Compose(Transform):
    """Apply ``transforms`` in order, each with the same ``**context``; the log-det terms add up."""

    def __init__(self, transforms: Sequence[Transform]) -> None:
        super().__init__()
        self.transforms = nn.ModuleList(transforms)

    def inverse(self, y: torch.Tensor, **context: Any) -> torch.Tensor:
        for transform in reversed(self.transforms):
            y = transform.inverse(y, **context)
        return y

    def forward_and_log_det(self, x: torch.Tensor, **context: Any) -> tuple[torch.Tensor, torch.Tensor]:
        total = torch.zeros_like(x)
        for transform in self.transforms:
            x, log_det = transform.forward_and_log_det(x, **context)
            total = total + log_det
        return x, total


class Conditioned(Transform):
    """``transform`` with its ``**context`` fixed, so it maps ``x`` alone (for generic flow code and tests)."""

    def __init__(self, transform: Transform, **context: Any) -> None:
        super().__init__()
        self.transform, self.context = transform, context

    def forward_and_log_det(self, x: torch.Tensor, **context: Any) -> tuple[torch.Tensor, torch.Tensor]:
        return self.transform.forward_and_log_det(x, **self.context)

    def inverse(self, y: torch.Tensor, **context: Any) -> torch.Tensor:
        return self.transform.inverse(y, **self.context)


# --------------------------------------------------------------------------- conditioners


class MaskedLinear(nn.Linear):
    """``nn.Linear`` whose weight is multiplied by a fixed 0/1 ``mask: (out_features, in_features)``."""

    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__(mask.shape[1], mask.shape[0])
        self.register_buffer("mask", mask.to(self.weight.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


class MADE(nn.Module):
    """Masked autoencoder (Germain et al., 2015): ``x: (B, D) -> (mu, log_s)`` each ``(B, D)``.

    Output i depends only on ``x_<i`` (so output 0 is a learned constant). Input i has degree i + 1,
    hidden units cycle through degrees 1..D-1, and a unit may read a unit of lower or equal degree
    (strictly lower for the outputs). The output layer starts at zero, so the flow starts as the identity.
    """

    def __init__(self, dim: int, hidden: int = 64, layers: int = 2) -> None:
        super().__init__()
        self.dim = dim
        degrees = [torch.arange(1, dim + 1)]
        degrees += [torch.arange(hidden) % max(dim - 1, 1) + 1 for _ in range(layers)]
        self.hidden = nn.ModuleList(
            MaskedLinear(deg_out[:, None] >= deg_in[None, :])
            for deg_in, deg_out in zip(degrees, degrees[1:], strict=False)
        )
        out_mask = degrees[0][:, None] > degrees[-1][None, :]
        self.out = MaskedLinear(out_mask.repeat(2, 1))
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, **context: Any) -> tuple[torch.Tensor, torch.Tensor]:
        h = x
        for layer in self.hidden:
            h = torch.tanh(layer(h))
        mu, log_s = self.out(h).chunk(2, dim=-1)
        return mu, log_s


class CausalConvConditioner(nn.Module):
    """A tiny WaveNet-like conditioner over sequences: ``x: (B, T) -> (mu, log_s)`` each ``(B, T)``.

    The input is shifted right by one step, then ``layers`` dilated causal convolutions (dilation
    1, 2, 4, ...) with residual tanh units see only the past: output t depends on ``x_<t`` only.
    Its parameter count does not depend on T, which is what lets MAF and IAF be timed on growing T.
    """

    def __init__(self, channels: int = 16, layers: int = 4, kernel_size: int = 2) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.inp = nn.Conv1d(1, channels, 1)
        self.convs = nn.ModuleList(nn.Conv1d(channels, channels, kernel_size, dilation=2**i) for i in range(layers))
        self.out = nn.Conv1d(channels, 2, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, **context: Any) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.inp(F.pad(x, (1, -1)).unsqueeze(1))  # (B, C, T), step t holds x_{t-1}
        for conv in self.convs:
            h = h + torch.tanh(conv(F.pad(h, ((self.kernel_size - 1) * conv.dilation[0], 0))))
        mu, log_s = self.out(h).unbind(1)
        return mu, log_s

    @property
    def receptive_field(self) -> int:
        """How many past steps output t can see."""
        return 1 + sum((self.kernel_size - 1) * conv.dilation[0] for conv in self.convs)


class AutoregressiveAffine(Transform):
    """``y_i = x_i * exp(log_s_i(x_<i)) + mu_i(x_<i)``: one parallel pass forward, D passes to invert.

    ``conditioner(x: (..., D), **context) -> (mu, log_s)`` each ``(..., D)`` with output i a function of
    ``x_<i`` only (:class:`MADE` for vectors, :class:`CausalConvConditioner` for sequences). A subclass may
    instead override :meth:`shift_and_log_scale`: the student's flows do, with a WaveNet as the conditioner
    (:class:`pwn_lib.student.IAFFlow`). Paper, section 3; taught in notebook 01, sections 2 and 5.
    """

    def __init__(self, conditioner: nn.Module | None = None) -> None:
        super().__init__()
        if conditioner is not None:
            self.conditioner = conditioner

    def shift_and_log_scale(self, x: torch.Tensor, **context: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mu, log_s)``, each shaped like ``x``; step i sees only ``x[..., :i]``."""
        return self.conditioner(x, **context)

    def affine_step(self, x: torch.Tensor, **context: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(y, mu, log_s)``: the output and the step's shift and log-scale, from one conditioner pass."""
        mu, log_s = self.shift_and_log_scale(x, **context)
        return x * torch.exp(log_s) + mu, mu, log_s

    def forward_and_log_det(self, x: torch.Tensor, **context: Any) -> tuple[torch.Tensor, torch.Tensor]:
        y, _, log_s = self.affine_step(x, **context)
        return y, log_s

    def inverse(self, y: torch.Tensor, **context: Any) -> torch.Tensor:
        """Sequential: step i needs x_<i, so it takes D conditioner passes."""
        x = torch.zeros_like(y)
        for i in range(y.shape[-1]):
            mu, log_s = self.shift_and_log_scale(x, **context)
            x = x.clone()
            x[..., i] = (y[..., i] - mu[..., i]) * torch.exp(-log_s[..., i])
        return x


def collapse_affine_steps(
    steps: Sequence[tuple[torch.Tensor, torch.Tensor]],
) -> tuple[torch.Tensor, torch.Tensor]:
    """The closed form of stacked affine steps ``x <- x * s_i + mu_i``: one affine map ``x = z * s_tot + mu_tot``.

    ``steps`` holds ``(mu_i, log_s_i)`` in the order applied. ``log s_tot = sum_i log s_i`` and
    ``mu_tot = sum_i mu_i prod_{j>i} s_j``, accumulated as ``mu_tot <- mu_tot * s_i + mu_i``. For the
    student every (mu_i, s_i) at step t depends only on z_<t, so x_t is a single logistic
    L(mu_tot_t, s_tot_t) given the past (paper, section 3; notebook 05, section 2).
    """
    mu_tot = torch.zeros_like(steps[0][0])
    log_s_tot = torch.zeros_like(steps[0][1])
    for mu, log_s in steps:
        mu_tot = mu_tot * torch.exp(log_s) + mu
        log_s_tot = log_s_tot + log_s
    return mu_tot, log_s_tot


class AffineStack(Transform):
    """Autoregressive affine transforms applied in order, with the closed form of their composition.

    Indexable and iterable like ``nn.ModuleList`` (its layers are children ``0``, ``1``, ...). Besides the
    usual ``forward_and_log_det`` it offers :meth:`forward_and_collapse`, which also returns ``mu_tot``:
    the Parallel WaveNet student is an ``AffineStack`` of WaveNet-conditioned flows (notebook 05).
    """

    def __init__(self, layers: Sequence[AutoregressiveAffine]) -> None:
        super().__init__()
        for i, layer in enumerate(layers):
            self.add_module(str(i), layer)

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def __getitem__(self, index: int) -> AutoregressiveAffine:
        return list(self._modules.values())[index]

    def forward_and_collapse(self, x: torch.Tensor, **context: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(y, mu_tot, log_s_tot)`` with ``y = x * exp(log_s_tot) + mu_tot``; ``log_s_tot`` is the log-det."""
        steps = []
        for layer in self:
            x, mu, log_s = layer.affine_step(x, **context)
            steps.append((mu, log_s))
        mu_tot, log_s_tot = collapse_affine_steps(steps)
        return x, mu_tot, log_s_tot

    def forward_and_log_det(self, x: torch.Tensor, **context: Any) -> tuple[torch.Tensor, torch.Tensor]:
        y, _, log_s_tot = self.forward_and_collapse(x, **context)
        return y, log_s_tot

    def inverse(self, y: torch.Tensor, **context: Any) -> torch.Tensor:
        for layer in reversed(list(self)):
            y = layer.inverse(y, **context)
        return y


def autoregressive_stack(dim: int, n_layers: int = 4, hidden: int = 64) -> Compose:
    """``n_layers`` MADE autoregressive affines with a :class:`Reverse` between consecutive layers."""
    layers: list[Transform] = []
    for i in range(n_layers):
        if i > 0:
            layers.append(Reverse())
        layers.append(AutoregressiveAffine(MADE(dim, hidden)))
    return Compose(layers)


# --------------------------------------------------------------------------- flow distributions


class Flow(nn.Module):
    """A density p(x) made by pushing base noise z through a generative map ``x = f(z)``.

    ``base`` is "logistic" (Parallel WaveNet's noise) or "normal". Subclasses define the direction.
    ``forward(z) -> x``, ``inverse(x) -> z`` and ``log_abs_det_jacobian(z, x)`` describe f itself.
    """

    def __init__(self, transform: Transform, base: str = "normal") -> None:
        super().__init__()
        if base not in ("normal", "logistic"):
            raise ValueError(f"Flow base {base!r} is unknown; use 'normal' or 'logistic'")
        self.transform = transform
        self.base = base

    def _zeros(self, n: int, dim: int) -> torch.Tensor:
        """``(n, dim)`` zeros in the flow's parameter dtype (the default dtype for a parameter-free flow)."""
        dtype = next(self.parameters(), torch.zeros(())).dtype
        return torch.zeros(n, dim, dtype=dtype)

    def _base(self, like: torch.Tensor) -> Gaussian | Logistic:
        zeros = torch.zeros_like(like)
        return Gaussian(zeros, zeros) if self.base == "normal" else Logistic(zeros, zeros)

    def base_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """Per-coordinate log density of standard base noise, same shape as ``z``."""
        return self._base(z).log_prob(z)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Per-coordinate log density terms ``(B, D)``; their sum over D is log p(x)."""
        z = self.inverse(x)
        return change_of_variables(self.base_log_prob(z), self.log_abs_det_jacobian(z, x))

    def sample(self, n: int, dim: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``(n, dim)`` draws: base noise through ``forward``."""
        return self.forward(self._base(self._zeros(n, dim)).sample(generator))


class IAF(Flow):
    """Inverse autoregressive flow: ``x = T(z)``, so ``x_t = z_t * s(z_<t) + mu(z_<t)``.

    Sampling is one parallel pass; scoring external data needs the sequential inverse.
    """

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.transform(z)

    def inverse(self, x: torch.Tensor) -> torch.Tensor:
        return self.transform.inverse(x)

    def log_abs_det_jacobian(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.transform.log_abs_det_jacobian(z, x)

    def sample_and_log_prob(
        self, n: int, dim: int, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, log_prob)`` of the flow's own samples in one parallel pass (no inversion needed)."""
        z = self._base(self._zeros(n, dim)).sample(generator)
        x, log_det = self.transform.forward_and_log_det(z)
        return x, change_of_variables(self.base_log_prob(z), log_det)


class MAF(Flow):
    """Masked autoregressive flow: ``z = T(x)``, so ``x_t = (z_t - mu(x_<t)) / s(x_<t)``.

    Scoring data is one parallel pass; sampling needs the sequential inverse (like the WaveNet teacher).
    """

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.transform.inverse(z)

    def inverse(self, x: torch.Tensor) -> torch.Tensor:
        return self.transform(x)

    def log_abs_det_jacobian(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return -self.transform.log_abs_det_jacobian(x, z)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        z, log_det = self.transform.forward_and_log_det(x)
        return change_of_variables(self.base_log_prob(z), -log_det)


__all__ = [
    "AutoregressiveAffine",
    "CausalConvConditioner",
    "Compose",
    "Conditioned",
    "ElementwiseAffine",
    "Flow",
    "IAF",
    "MADE",
    "MAF",
    "MaskedLinear",
    "Reverse",
    "Transform",
    "autoregressive_stack",
    "change_of_variables",
    "AffineStack",
    "collapse_affine_steps",
    "transformed_log_prob",
]
