"""Probability density distillation (van den Oord et al., 2017, section 4) and ClariNet's Gaussian variant.

Taught in notebook 06.

The student P_S is trained to minimise

    D_KL(P_S || P_T) = H(P_S, P_T) - H(P_S)

against a frozen autoregressive teacher P_T. Both terms are sums over time steps of per-step terms, because
given z_{<t} the student's x_t is a single logistic L(mu_tot_t, s_tot_t) (see :mod:`pwn_lib.student`):

- entropy, analytic: H(P_S) = E_z[ sum_t ln s_tot_t ] + 2T;
- cross-entropy: H(P_S, P_T) = sum_t E_{x_<t}[ H(L(mu_tot_t, s_tot_t), p_T(. | x_<t)) ]. One student sample
  x gives every x_<t; the teacher is run ONCE, in parallel, on x; the inner cross-entropy at each t is
  estimated with K reparameterised draws x'_t ~ L(mu_tot_t, s_tot_t) scored under the teacher's step-t
  distribution. This is the paper's low-variance estimator: the K draws only re-sample step t.

Choice of teacher density: the draws are scored with the teacher's *continuous* mixture-of-logistics density
(:meth:`DiscretizedMixLogistics.log_density`), not the pmf of the 16-bit bin. The pmf is piecewise constant
in x'_t, so it would pass no reparameterised gradient to (mu_tot, s_tot); and at 16 bits it equals
density * bin width wherever the teacher's scales are wider than a bin, i.e. it only adds the constant
``-ln(bin width)`` ~ 10.4 nats to the cross-entropy. Both entropies are then differential entropies and the
KL is a proper, non-negative KL between continuous densities.

All returned terms are means per audio sample (nats per time step), averaged over the batch.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from pwn_lib.config import DistillLoss
from pwn_lib.distributions import Gaussian, Logistic, gaussian_kl
from pwn_lib.student import IAFStudent
from pwn_lib.wavenet import WaveNet

LogDensity = Callable[[torch.Tensor], torch.Tensor]
CLARINET_LAMBDA = 4.0  # weight of the log-scale regulariser in ClariNet (Ping et al., 2019)


def freeze(teacher: WaveNet) -> WaveNet:
    """Put the teacher in eval mode and switch off gradients to its weights (in place); returns it."""
    teacher.eval()
    teacher.requires_grad_(False)
    return teacher


def logistic_draws(
    mu: torch.Tensor, log_s: torch.Tensor, n_draws: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``n_draws`` reparameterised draws from L(mu, s): ``(K, *mu.shape)``, differentiable in mu and log_s."""
    if n_draws < 1:
        raise ValueError(f"n_draws={n_draws}: the cross-entropy needs at least one draw per step")
    shape = (n_draws, *mu.shape)
    return Logistic(mu.expand(shape), log_s.expand(shape)).sample(generator)  # loc + s * logit(u)


def student_entropy(log_s_tot: torch.Tensor) -> torch.Tensor:
    """Per-step entropy of the student, ``ln s_tot_t + 2`` nats, same shape as ``log_s_tot``."""
    return Logistic(torch.zeros_like(log_s_tot), log_s_tot).entropy()


def cross_entropy_estimate(
    mu_tot: torch.Tensor,
    log_s_tot: torch.Tensor,
    log_density: LogDensity,
    n_draws: int = DistillLoss.n_draws,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Per-step Monte Carlo estimate of H(L(mu_tot_t, s_tot_t), p_T,t), same shape as ``mu_tot`` (nats).

    ``log_density`` maps draws ``(K, *mu_tot.shape)`` to their log density under the teacher's
    step-t distribution, same shape. The estimate is ``-(1/K) sum_k log p_T,t(x'_k)``, unbiased for any K.
    """
    draws = logistic_draws(mu_tot, log_s_tot, n_draws, generator)
    return -log_density(draws).mean(dim=0)


def kl_estimate(
    mu_tot: torch.Tensor,
    log_s_tot: torch.Tensor,
    log_density: LogDensity,
    n_draws: int = DistillLoss.n_draws,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Per-step estimate of KL(L(mu_tot_t, s_tot_t) || p_T,t): Monte Carlo cross-entropy minus analytic entropy."""
    cross_entropy = cross_entropy_estimate(mu_tot, log_s_tot, log_density, n_draws, generator)
    return cross_entropy - student_entropy(log_s_tot)


def teacher_log_density(teacher: WaveNet, params: torch.Tensor, temperature: float = 1.0) -> LogDensity:
    """The teacher's per-step continuous log density as a function of draws ``(K, B, T)`` -> ``(K, B, T)``.

    ``params: (B, C_out, T)`` is the teacher's output on the student sample; it is repeated K times along
    the batch so every draw at step t is scored under the same step-t distribution. ``temperature`` < 1
    scores under the sharpened step distributions that ``teacher.generate(temperature=...)`` samples
    (every scale times it): the student is then distilled from the teacher as it is sampled.
    """
    output = teacher.cfg.output
    if output not in ("mol", "gaussian"):
        raise ValueError(
            f"teacher output {output!r} has no density to distil from; train the teacher with output='mol' "
            "(Parallel WaveNet) or 'gaussian' (ClariNet)"
        )

    def log_density(draws: torch.Tensor) -> torch.Tensor:
        n_draws, batch, length = draws.shape
        dist = teacher.distribution(params.repeat(n_draws, 1, 1)).sharpened(temperature)
        flat = draws.reshape(n_draws * batch, length)
        scores = dist.log_density(flat) if output == "mol" else dist.log_prob(flat)
        return scores.reshape(n_draws, batch, length)

    return log_density


def _student_pass(
    student: IAFStudent,
    c: torch.Tensor | None,
    speaker: torch.Tensor | None,
    n_samples: int | None,
    generator: torch.Generator | None,
    noise: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Draw z and run the student once: ``(x, mu_tot, log_s_tot)``, each ``(B, 1, T)``."""
    if c is None and n_samples is None:
        raise ValueError("distillation without conditioning needs n_samples")
    batch = c.shape[0] if c is not None else (len(speaker) if speaker is not None else 1)
    length = c.shape[-1] * student.cfg.hop_length if c is not None else n_samples
    z = student.draw_noise((batch, 1, length), next(student.parameters()), generator, noise)
    return student(z, c, speaker)


def distillation_loss(
    student: IAFStudent,
    teacher: WaveNet,
    c: torch.Tensor | None,
    speaker: torch.Tensor | None = None,
    n_draws: int = DistillLoss.n_draws,
    generator: torch.Generator | None = None,
    n_samples: int | None = None,
    temperature: float = 1.0,
) -> dict[str, torch.Tensor]:
    """Parallel WaveNet's KL(P_S || P_T) for conditioning ``c: (B, n_mels, F)`` (and ``speaker: (B,)``).

    ``temperature``: distil from the teacher sampled at that temperature (:func:`teacher_log_density`).

    Returns ``loss`` (= ``kl``), ``kl``, ``entropy``, ``cross_entropy`` (scalars, nats per audio sample,
    batch-averaged) and ``x: (B, 1, T)``, the student sample the teacher scored. The teacher is frozen
    (:func:`freeze`); gradients reach the student through x (via the teacher's parameters at each step)
    and through the reparameterised draws (via mu_tot and s_tot).
    """
    freeze(teacher)
    x, mu_tot, log_s_tot = _student_pass(student, c, speaker, n_samples, generator, "logistic")
    params = teacher(x, c, speaker)
    log_density = teacher_log_density(teacher, params, temperature)
    cross_entropy = cross_entropy_estimate(mu_tot[:, 0], log_s_tot[:, 0], log_density, n_draws, generator).mean()
    entropy = student_entropy(log_s_tot).mean()
    kl = cross_entropy - entropy
    return {"loss": kl, "kl": kl, "entropy": entropy, "cross_entropy": cross_entropy, "x": x}


def gaussian_distillation_loss(
    student: IAFStudent,
    teacher: WaveNet,
    c: torch.Tensor | None,
    speaker: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    n_samples: int | None = None,
    regulariser_weight: float = CLARINET_LAMBDA,
) -> dict[str, torch.Tensor]:
    """ClariNet (Ping et al., 2019): Gaussian IAF student, Gaussian teacher, closed-form KL per step.

    The student is driven by z ~ N(0, 1), so x_t ~ N(mu_tot_t, s_tot_t^2) given z_<t; the teacher (trained
    with ``output="gaussian"``) gives N(mu_p,t, sigma_p,t^2) on the student sample. Per step

        KL(q || p) = ln(sigma_p / sigma_q) + (sigma_q^2 + (mu_q - mu_p)^2) / (2 sigma_p^2) - 1/2,

    plus the regulariser ``lambda (ln sigma_p - ln sigma_q)^2`` (lambda = 4) that keeps the scales matched
    early in training. Returns ``loss`` (= kl + regulariser), ``kl``, ``regulariser``, ``entropy``,
    ``cross_entropy`` (= kl + entropy) as nats per audio sample, and ``x: (B, 1, T)``. A student trained
    this way must be sampled with Gaussian noise too: ``student.sample(c, noise="gaussian")``.
    """
    if teacher.cfg.output != "gaussian":
        raise ValueError(
            f"gaussian_distillation_loss needs a teacher with output='gaussian', got {teacher.cfg.output!r}; "
            "use distillation_loss for a mixture-of-logistics teacher"
        )
    freeze(teacher)
    x, mu_tot, log_s_tot = _student_pass(student, c, speaker, n_samples, generator, "gaussian")
    p = teacher.distribution(teacher(x, c, speaker))
    q = Gaussian(mu_tot[:, 0], log_s_tot[:, 0])
    kl = gaussian_kl(q, p).mean()
    regulariser = regulariser_weight * ((p.log_scale - q.log_scale) ** 2).mean()
    entropy = q.entropy().mean()
    return {
        "loss": kl + regulariser,
        "kl": kl,
        "regulariser": regulariser,
        "entropy": entropy,
        "cross_entropy": kl + entropy,
        "x": x,
    }


__all__ = [
    "CLARINET_LAMBDA",
    "cross_entropy_estimate",
    "distillation_loss",
    "freeze",
    "gaussian_distillation_loss",
    "kl_estimate",
    "logistic_draws",
    "student_entropy",
    "teacher_log_density",
]
