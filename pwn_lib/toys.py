"""Density distillation outside audio, where every density is exact: two moons, an AR series, small flows.

Beyond the paper (notebook 10's research section and its exercises). Audio hides the quantities that matter:
the teacher's density is exact but the student's is not, and the true data density is unknown. Here both
teacher and student are small normalizing flows (:mod:`pwn_lib.flows`) with a standard-logistic base (the
paper's noise), so every divergence between them can be computed, not only bounded:

- ``KL(q || p) = E_{x~q}[log q(x) - log p(x)]`` by Monte Carlo with a standard error, in either direction;
- in 2-D, by quadrature on a grid, with the Jensen-Shannon divergence as an independent check.

A MAF scores data in one parallel pass and samples sequentially; an IAF samples in one pass and must invert
sequentially to score data (notebook 01). The teacher here is a MAF fitted by maximum likelihood, like
WaveNet; the student is an IAF, like Parallel WaveNet's. Experiments (each ``fast`` switch is seconds on
one core, full is minutes) back four open questions:

- :func:`architecture_sweep` (Q1): the student's flows, channels and receptive field at a fixed step budget;
- :func:`toy_distillation` (Q2): distillation of two moons and of :func:`ar_series`;
- :func:`evolving_teacher` (Q3): the teacher is swapped part-way; what the student keeps and forgets;
- :func:`transfer_comparison` (Q5): PDD against maximum likelihood on teacher samples and against regression
  of the teacher's noise-to-sample map, at the same wall-clock budget.

Divergences are in nats per example (the joint density), unless a name says ``per_step``.
"""

from __future__ import annotations

import copy
import functools
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn

from pwn_lib.distill import freeze
from pwn_lib.distributions import Logistic
from pwn_lib.flows import (
    IAF,
    MADE,
    MAF,
    AffineStack,
    AutoregressiveAffine,
    CausalConvConditioner,
    Compose,
    Reverse,
    Transform,
    change_of_variables,
)

DataFn = Callable[[int, torch.Generator | None], torch.Tensor]
METHODS = ("reverse_kl", "forward_kl_ml", "regression", "renyi", "js")
GRAD_CLIP = 10.0  # max gradient norm in fit_ml and distil: keeps an early bad step from blowing up a flow

# The AR series (ar_series): x_t = AR_A x_{t-1} + AR_B tanh(x_{t-AR_LAG}) + AR_SCALE * logistic noise.
AR_A, AR_B, AR_LAG, AR_SCALE = 0.3, 0.8, 8, 0.25
AR_BURN_IN = 8 * AR_LAG  # steps simulated and dropped, so the kept window is (close to) stationary
MOONS_CENTRE, MOONS_SCALE = (0.5, 0.25), (0.87, 0.50)  # mean and std of the noiseless moons, per axis


def _check_positive_int(name: str, value: object, minimum: int = 1) -> int:
    """``value`` must be an int >= ``minimum`` (bools refused); returns it."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}={value!r}: use an integer >= {minimum}")
    return value


# --------------------------------------------------------------------------- data


def two_moons(n: int, noise: float = 0.1, generator: torch.Generator | None = None) -> torch.Tensor:
    """``(n, 2)`` points on two interleaved half circles, standardised to about zero mean and unit scale.

    Each point picks a moon with probability 1/2 and an angle theta ~ U(0, pi): the upper moon is
    ``(cos theta, sin theta)``, the lower ``(1 - cos theta, 1/2 - sin theta)``. Gaussian noise of standard
    deviation ``noise`` is added, then each axis is shifted and scaled by the noiseless moons' mean and std.
    """
    _check_positive_int("two_moons n", n)
    if not (isinstance(noise, (int, float)) and math.isfinite(noise) and noise >= 0):
        raise ValueError(f"two_moons noise={noise!r}: use a finite standard deviation >= 0 (0.1 is typical)")
    theta = math.pi * torch.rand(n, generator=generator)
    upper = torch.rand(n, generator=generator) < 0.5
    x = torch.where(upper, torch.cos(theta), 1.0 - torch.cos(theta))
    y = torch.where(upper, torch.sin(theta), 0.5 - torch.sin(theta))
    points = torch.stack([x, y], dim=-1) + noise * torch.randn(n, 2, generator=generator)
    return (points - torch.tensor(MOONS_CENTRE)) / torch.tensor(MOONS_SCALE)


def ar_series(n: int, length: int = 64, generator: torch.Generator | None = None) -> torch.Tensor:
    """``(n, length)`` windows of the stationary process ``x_t = a x_{t-1} + b tanh(x_{t-8}) + s e_t``.

    ``a, b, s = AR_A, AR_B, AR_SCALE`` (0.3, 0.8, 0.25) and ``e_t`` is standard logistic, so given its past
    ``x_t ~ L(a x_{t-1} + b tanh(x_{t-8}), s)`` exactly: the process is Markov of order 8 and its entropy rate
    is that of the noise, ``ln s + 2`` nats per step. It is stationary (``|a| < 1``, the lag-8 term is bounded)
    and starts from zeros ``AR_BURN_IN`` steps before the window. Its lag-8 correlation is about 0.7 while
    lags 3 to 6 are below 0.2, so a student whose receptive field is under 8 steps cannot see the dependence
    that matters: an IAF with receptive field m makes x_t and x_{t+8} independent when m < 8.
    """
    _check_positive_int("ar_series n", n)
    _check_positive_int("ar_series length", length, 2)
    steps = length + AR_BURN_IN
    noise = Logistic(torch.zeros(n, steps), torch.full((n, steps), math.log(AR_SCALE))).sample(generator)
    x = torch.zeros(n, steps)
    for t in range(steps):
        previous = x[:, t - 1] if t >= 1 else torch.zeros(n)
        far = x[:, t - AR_LAG] if t >= AR_LAG else torch.zeros(n)
        x[:, t] = AR_A * previous + AR_B * torch.tanh(far) + noise[:, t]
    return x[:, AR_BURN_IN:]


def ar_entropy_rate() -> float:
    """Entropy rate of :func:`ar_series` in nats per step: the logistic noise's ``ln s + 2``."""
    return math.log(AR_SCALE) + 2.0


# --------------------------------------------------------------------------- flows


class ToyFlow(nn.Module):
    """A MAF or IAF density over vectors ``(n, D)`` or sequences ``(n, T)``, with a standard-logistic base.

    Build with :meth:`maf` or :meth:`iaf`. The generative map is ``x = f(u)`` with ``u ~ L(0, 1)^D``:

    - MAF: ``u = T(x)`` in one pass, so ``log p(x) = sum_i [log p_u(u_i) + log |du_i/dx_i|]`` is parallel,
      and sampling inverts T one coordinate at a time (D passes per flow);
    - IAF: ``x = T(u)`` in one pass, so sampling and the density of its own samples are parallel, and
      scoring external data inverts T sequentially.

    Vectors use :class:`~pwn_lib.flows.MADE` conditioners with a :class:`~pwn_lib.flows.Reverse` between
    flows; sequences use :class:`~pwn_lib.flows.CausalConvConditioner` flows in one time direction
    (an :class:`~pwn_lib.flows.AffineStack`), so ``receptive_field`` is defined.
    """

    def __init__(self, kind: str, transform: Transform, dim: int, receptive_field: int | None = None) -> None:
        super().__init__()
        if kind not in ("maf", "iaf"):
            raise ValueError(f"ToyFlow kind={kind!r} is unknown; use 'maf' (teacher) or 'iaf' (student)")
        self.kind, self.dim, self._receptive_field = kind, dim, receptive_field
        self.flow = (MAF if kind == "maf" else IAF)(transform, base="logistic")

    @classmethod
    def maf(cls, dim: int, flows: int = 4, width: int = 64, layers: int = 2, *, series: bool = False) -> ToyFlow:
        """A MAF over ``dim`` coordinates (the sequence length if ``series``); see :meth:`build`."""
        return cls.build("maf", dim, flows, width, layers, series=series)

    @classmethod
    def iaf(cls, dim: int, flows: int = 4, width: int = 64, layers: int = 2, *, series: bool = False) -> ToyFlow:
        """An IAF over ``dim`` coordinates (the sequence length if ``series``); see :meth:`build`."""
        return cls.build("iaf", dim, flows, width, layers, series=series)

    @classmethod
    def build(cls, kind: str, dim: int, flows: int, width: int, layers: int, *, series: bool = False) -> ToyFlow:
        """``flows`` autoregressive affines, each identity at initialisation.

        Vectors: MADE with ``layers`` hidden layers of ``width`` units. Sequences: a causal conv conditioner
        with ``width`` channels and ``layers`` dilated convs (1, 2, 4, ...), which sees R = 2**layers past
        steps; stacking K flows lets x_t see ``K * R`` past steps of the noise (IAF), or makes the density a
        Markov chain of that order (MAF).
        """
        _check_positive_int(f"ToyFlow dim (the {'sequence length' if series else 'dimension'})", dim, 2)
        for name, value in (("flows", flows), ("width", width), ("layers", layers)):
            _check_positive_int(f"ToyFlow {name}", value)
        if series:
            conditioners = [CausalConvConditioner(width, layers) for _ in range(flows)]
            transform = AffineStack([AutoregressiveAffine(c) for c in conditioners])
            return cls(kind, transform, dim, flows * conditioners[0].receptive_field)
        parts: list[Transform] = []
        for i in range(flows):
            if i > 0:
                parts.append(Reverse())
            parts.append(AutoregressiveAffine(MADE(dim, width, layers)))
        return cls(kind, Compose(parts), dim)

    @property
    def receptive_field(self) -> int | None:
        """Past steps that x_t depends on (IAF: of the noise; MAF: of x); None for a vector flow."""
        return self._receptive_field

    @property
    def is_series(self) -> bool:
        return self._receptive_field is not None

    def _dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def _check_x(self, x: torch.Tensor, what: str = "x") -> torch.Tensor:
        if x.dim() != 2 or x.shape[-1] != self.dim:
            raise ValueError(
                f"{self.kind.upper()} over {self.dim} coordinates needs {what} of shape (n, {self.dim}), "
                f"got {tuple(x.shape)}"
            )
        return x.to(self._dtype())

    def noise(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``(n, D)`` standard-logistic base noise in the flow's dtype."""
        zeros = torch.zeros(_check_positive_int("n", n), self.dim, dtype=self._dtype())
        return Logistic(zeros, zeros).sample(generator)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Exact ``log p(x)`` per example, ``x: (n, D) -> (n,)`` nats (IAF: sequential inverse first)."""
        return self.flow.log_prob(self._check_x(x)).sum(-1)

    def to_noise(self, x: torch.Tensor) -> torch.Tensor:
        """The noise ``u = f^{-1}(x)``, ``(n, D)``: one pass for a MAF, sequential for an IAF."""
        return self.flow.inverse(self._check_x(x))

    def sample_from_noise(self, u: torch.Tensor) -> torch.Tensor:
        """``x = f(u)``, ``(n, D)``: one pass for an IAF, sequential for a MAF; differentiable in u and weights."""
        return self.flow.forward(self._check_x(u, "u"))

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``(n, D)`` draws: base noise through :meth:`sample_from_noise`."""
        return self.sample_from_noise(self.noise(n, generator))

    def sample_from_noise_with_log_prob(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, log p(x))`` for ``x = f(u)``: ``log p(x) = sum_i log p_u(u_i) - log |det dx/du|``.

        IAF: one parallel pass gives both. MAF: the sequential inverse gives x, then one parallel pass scores it.
        """
        u = self._check_x(u, "u")
        if self.kind == "maf":
            x = self.flow.forward(u)
            return x, self.log_prob(x)
        x, log_det = self.flow.transform.forward_and_log_det(u)
        return x, change_of_variables(self.flow.base_log_prob(u), log_det).sum(-1)

    def sample_with_log_prob(
        self, n: int, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` draws and their exact log density, ``((n, D), (n,))``; reparameterised in the weights."""
        return self.sample_from_noise_with_log_prob(self.noise(n, generator))


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _seeded(seed: int, build: Callable[[], ToyFlow]) -> ToyFlow:
    """``build()`` with torch's global RNG seeded (initial weights), leaving the caller's RNG state as it was."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return build()


# --------------------------------------------------------------------------- maximum likelihood


def _step(optimiser: torch.optim.Optimizer, params: list[nn.Parameter], loss: torch.Tensor) -> None:
    optimiser.zero_grad(set_to_none=True)
    loss.backward()
    nn.utils.clip_grad_norm_(params, GRAD_CLIP)
    optimiser.step()


def fit_ml(
    flow: ToyFlow,
    data_fn: DataFn,
    steps: int,
    lr: float = 1e-3,
    batch: int = 256,
    generator: torch.Generator | None = None,
) -> dict[str, list]:
    """Train ``flow`` by maximum likelihood: Adam on the NLL ``-mean_x log p(x)`` of fresh batches.

    ``data_fn(batch, generator) -> (batch, D)`` draws training data. Minimising the NLL minimises
    ``KL(p_data || p_flow) = NLL - H(p_data)``. Returns ``{"step": [...], "nll": [...]}`` (nats per example).
    A MAF scores a batch in one pass; an IAF would need its sequential inverse for every step.
    """
    _check_positive_int("fit_ml steps", steps)
    _check_positive_int("fit_ml batch", batch)
    _check_lr(lr)
    flow.requires_grad_(True).train()
    params = list(flow.parameters())
    optimiser = torch.optim.Adam(params, lr=lr)
    history: dict[str, list] = {"step": [], "nll": []}
    for step in range(1, steps + 1):
        x = data_fn(batch, generator)
        if step == 1 and tuple(x.shape) != (batch, flow.dim):
            raise ValueError(
                f"fit_ml data_fn({batch}, generator) returned shape {tuple(x.shape)}; "
                f"the flow needs ({batch}, {flow.dim})"
            )
        nll = -flow.log_prob(x).mean()
        _step(optimiser, params, nll)
        history["step"].append(step)
        history["nll"].append(nll.item())
    return history


def _check_lr(lr: float) -> None:
    if isinstance(lr, bool) or not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"learning rate lr={lr!r}: use a finite number > 0 (1e-3 is typical for Adam)")


# --------------------------------------------------------------------------- divergences


def _check_same_space(a: ToyFlow, b: ToyFlow, what: str) -> None:
    if a.dim != b.dim:
        raise ValueError(
            f"{what}: the two flows model different spaces ({a.dim} and {b.dim} coordinates); "
            "build the student with the teacher's dimension"
        )


def _estimate(difference: torch.Tensor) -> tuple[float, float]:
    """Mean of per-sample ``log a(x) - log b(x)`` and its standard error ``std / sqrt(n)``."""
    n = difference.numel()
    return difference.mean().item(), (difference.std() / math.sqrt(n)).item()


@torch.no_grad()
def _kl_by_sampling(a: ToyFlow, b: ToyFlow, n: int, generator: torch.Generator | None) -> tuple[float, float]:
    """KL(a || b) = E_{x~a}[log a(x) - log b(x)]: draw from a (with its exact log density), score under b."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ValueError(f"n={n!r} samples: a standard error needs at least 2 (1000 is typical)")
    _check_same_space(a, b, "KL")
    x, log_a = a.sample_with_log_prob(n, generator)
    return _estimate(log_a - b.log_prob(x))


def reverse_kl(
    student: ToyFlow, teacher: ToyFlow, n: int = 1000, generator: torch.Generator | None = None
) -> tuple[float, float]:
    """``(KL(q_S || p_T), standard error)`` by Monte Carlo on student samples: what PDD minimises.

    For an IAF student the draws and ``log q_S`` come from one parallel pass; a MAF teacher scores them in one.
    """
    return _kl_by_sampling(student, teacher, n, generator)


def forward_kl(
    teacher: ToyFlow, student: ToyFlow, n: int = 1000, generator: torch.Generator | None = None
) -> tuple[float, float]:
    """``(KL(p_T || q_S), standard error)`` by Monte Carlo on teacher samples: what ML on teacher samples minimises.

    A MAF teacher samples sequentially and an IAF student scores them with its sequential inverse.
    """
    return _kl_by_sampling(teacher, student, n, generator)


def _check_plane(student, teacher, what: str) -> None:
    if student.dim != 2 or teacher.dim != 2 or student.is_series or teacher.is_series:
        raise ValueError(
            f"{what} integrates over the plane; got flows over {student.dim} and "
            f"{teacher.dim} coordinates: use reverse_kl / forward_kl beyond 2-D"
        )


@torch.no_grad()
def _grid_log_densities(student, teacher, lim: float, points: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """``(log q, log p, h^2)`` at the ``points**2`` cell centres of [-lim, lim]^2, in float64."""
    if not (isinstance(lim, (int, float)) and math.isfinite(lim) and lim > 0):
        raise ValueError(f"grid_divergences lim={lim!r}: use a finite half-width > 0 (6 covers unit-scale data)")
    _check_positive_int("grid_divergences points", points, 2)
    h = 2.0 * lim / points
    centres = torch.linspace(-lim + h / 2, lim - h / 2, points, dtype=torch.float64)
    grid = torch.cartesian_prod(centres, centres)
    log_q = torch.cat([student.log_prob(chunk).double() for chunk in grid.split(65536)])
    log_p = torch.cat([teacher.log_prob(chunk).double() for chunk in grid.split(65536)])
    return log_q, log_p, h * h


def grid_divergences(student, teacher, lim: float = 6.0, points: int = 300) -> dict[str, float]:
    """Divergences between two 2-D densities by the midpoint rule on ``points**2`` cells of [-lim, lim]^2.

    With cell area ``h^2`` and densities q (student), p (teacher) at the cell centres, in float64:
    ``reverse_kl = sum q ln(q/p) h^2``, ``forward_kl = sum p ln(p/q) h^2`` and the Jensen-Shannon divergence
    ``js = (sum p ln(p/m) + sum q ln(q/m)) h^2 / 2`` with ``m = (p + q) / 2`` (0 <= js <= ln 2). The masses
    ``sum q h^2`` and ``sum p h^2`` should be about 1; a shortfall is mass outside the square.
    ``missed_mass = sum p [q < p / 10] h^2`` is the teacher's mass where the student puts under a tenth of
    the teacher's density: near 0 for a mode-covering student, large for a mode-seeking one.

    ``teacher`` may be a :class:`TeacherEnsemble`; for ``combine="geometric"`` its density is unnormalised, so
    ``teacher_mass`` is its normaliser Z and ``reverse_kl`` is the average of the members' KLs (see there).
    """
    _check_plane(student, teacher, "grid_divergences")
    log_q, log_p, area = _grid_log_densities(student, teacher, lim, points)
    q, p = log_q.exp(), log_p.exp()
    log_m = torch.logaddexp(log_q, log_p) - math.log(2.0)
    return {
        "reverse_kl": (q * (log_q - log_p)).sum().item() * area,
        "forward_kl": (p * (log_p - log_q)).sum().item() * area,
        "js": 0.5 * ((p * (log_p - log_m)).sum() + (q * (log_q - log_m)).sum()).item() * area,
        "student_mass": q.sum().item() * area,
        "teacher_mass": p.sum().item() * area,
        "missed_mass": (p * (log_q < log_p - math.log(10.0))).sum().item() * area,
    }


def grid_renyi(student, teacher, alpha: float, lim: float = 6.0, points: int = 300) -> float:
    """``D_alpha(q || p) = ln(sum q^alpha p^(1-alpha) h^2) / (alpha - 1)`` by the midpoint rule (see
    :func:`grid_divergences`); ``alpha = 1`` gives the reverse KL, its limit."""
    _check_plane(student, teacher, "grid_renyi")
    _check_alpha(alpha, allow_one=True)
    log_q, log_p, area = _grid_log_densities(student, teacher, lim, points)
    if alpha == 1:
        return ((log_q.exp() * (log_q - log_p)).sum() * area).item()
    log_integral = torch.logsumexp(alpha * log_q + (1 - alpha) * log_p, 0) + math.log(area)
    return (log_integral / (alpha - 1)).item()


# --------------------------------------------------------------------------- other divergences


def _check_alpha(alpha: float, allow_one: bool = False) -> float:
    ok = isinstance(alpha, (int, float)) and not isinstance(alpha, bool) and math.isfinite(alpha) and alpha > 0
    if not ok or (alpha == 1 and not allow_one):
        raise ValueError(
            f"Renyi alpha={alpha!r}: use a finite alpha > 0"
            + (", not 1 (alpha = 1 is the reverse KL: use reverse_kl)" if not allow_one else "")
        )
    return float(alpha)


def renyi_estimate(log_q: torch.Tensor, log_p: torch.Tensor, alpha: float) -> tuple[float, float]:
    """``(D_alpha(q || p), standard error)`` from ``n`` draws ``x_i ~ q`` and their log densities ``(n,)``.

    Derivation. ``D_alpha(q || p) = ln(int q^alpha p^(1-alpha) dx) / (alpha - 1)`` and
    ``int q^alpha p^(1-alpha) dx = E_{x~q}[w(x)]`` with ``w = (p / q)^(1-alpha)``, so the estimator is
    ``ln(mean_i w_i) / (alpha - 1)``, computed as a logsumexp. As alpha -> 1, ``ln E[w] ~ (1-alpha) E[ln p/q]``
    and D_alpha -> KL(q || p). D_alpha grows with alpha: alpha -> 0 only asks that q's support lie in p's,
    alpha = 1/2 is symmetric in spirit (``-2 ln`` of the Bhattacharyya coefficient), alpha > 1 penalises
    ``q > p`` harder than the reverse KL does: the smaller alpha, the less mode-seeking.

    Bias: the mean of the w_i is unbiased, its log is not. To second order (delta method)
    ``E[ln mean w] = ln E[w] - Var(w) / (2 n E[w]^2)``, so the estimate is biased by
    ``-Var(w) / (2 n (alpha - 1) E[w]^2)``: upwards for alpha < 1, O(1/n), and consistent. The standard error
    is the delta method's ``std(w) / (|alpha - 1| sqrt(n) mean(w))``. For alpha in [1/2, 1) the variance is
    finite whatever the tails: ``E_q[w^2] = E_q[(p/q)^b]`` with ``b = 2(1 - alpha)`` in (0, 1], which is at
    most ``E_q[p/q]^b <= 1`` by Jensen's inequality.
    """
    alpha = _check_alpha(alpha)
    n = log_q.numel()
    if n < 2:
        raise ValueError(f"renyi_estimate got n={n} samples: a standard error needs at least 2")
    log_w = (1 - alpha) * (log_p - log_q).double()
    log_mean = torch.logsumexp(log_w, 0) - math.log(n)
    relative = torch.exp(log_w - log_mean).std() / math.sqrt(n)  # std(w) / mean(w) / sqrt(n)
    return (log_mean / (alpha - 1)).item(), (relative / abs(alpha - 1)).item()


def _js_terms(log_q: torch.Tensor, log_p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ln q - ln m, ln p - ln m)`` with ``m = (p + q) / 2``, stably."""
    log_m = torch.logaddexp(log_q, log_p) - math.log(2.0)
    return log_q - log_m, log_p - log_m


def js_estimate(
    log_q_s: torch.Tensor,
    log_p_s: torch.Tensor,
    log_q_t: torch.Tensor | None = None,
    log_p_t: torch.Tensor | None = None,
) -> tuple[float, float]:
    """``(JS(p, q), standard error)`` from student draws (``log_q_s, log_p_s`` at ``x ~ q``) and, if given,
    teacher draws (``log_q_t, log_p_t`` at ``x ~ p``).

    Derivation. ``JS = KL(q || m) / 2 + KL(p || m) / 2`` with ``m = (p + q) / 2``, so ``0 <= JS <= ln 2``.

    - Two-sided (teacher draws given): ``mean_s (ln q - ln m) / 2 + mean_t (ln p - ln m) / 2``. Both means
      are unbiased and every term is bounded (``ln q - ln m <= ln 2``), so the variance is finite; but the
      teacher draws cost a MAF's sequential sampling.
    - Student only: importance-weight the second term, ``E_p[g] = E_q[(p / q) g]``, giving the per-draw value
      ``(ln q - ln m) / 2 + (p / q)(ln p - ln m) / 2``. Unbiased, no teacher sampling, so it can train an IAF
      student in one parallel pass (``distil(method="js")``); its variance grows with ``E_q[(p / q)^2]``, i.e.
      where the teacher has mass the student lacks.
    """
    a, b = _js_terms(log_q_s.double(), log_p_s.double())
    if log_q_t is None and log_p_t is None:
        return _estimate(0.5 * a + 0.5 * torch.exp(log_p_s.double() - log_q_s.double()) * b)
    if log_q_t is None or log_p_t is None:
        raise ValueError("js_estimate needs both log_q_t and log_p_t (the teacher draws), or neither")
    a_t, b_t = _js_terms(log_q_t.double(), log_p_t.double())
    mean = 0.5 * a.mean() + 0.5 * b_t.mean()
    variance = 0.25 * a.var() / a.numel() + 0.25 * b_t.var() / b_t.numel()
    return mean.item(), variance.sqrt().item()


@torch.no_grad()
def renyi_divergence(
    student: ToyFlow, teacher, alpha: float = 0.5, n: int = 1000, generator: torch.Generator | None = None
) -> tuple[float, float]:
    """``(D_alpha(q_S || p_T), standard error)`` by :func:`renyi_estimate` on ``n`` student draws (one parallel
    pass of an IAF student, one of a MAF teacher)."""
    _check_positive_int("renyi_divergence n", n, 2)
    _check_same_space(student, teacher, "renyi_divergence")
    x, log_q = student.sample_with_log_prob(n, generator)
    return renyi_estimate(log_q, teacher.log_prob(x), alpha)


@torch.no_grad()
def js_divergence(
    student: ToyFlow, teacher, n: int = 1000, generator: torch.Generator | None = None, teacher_draws: bool = True
) -> tuple[float, float]:
    """``(JS(p_T, q_S), standard error)`` by :func:`js_estimate`: two-sided on ``n`` draws from each model
    (``teacher_draws=True``: the teacher samples sequentially, the student scores them by its sequential
    inverse) or importance-weighted on ``n`` student draws only."""
    _check_positive_int("js_divergence n", n, 2)
    _check_same_space(student, teacher, "js_divergence")
    x, log_q = student.sample_with_log_prob(n, generator)
    if not teacher_draws:
        return js_estimate(log_q, teacher.log_prob(x))
    x_t, log_p_t = teacher.sample_with_log_prob(n, generator)
    return js_estimate(log_q, teacher.log_prob(x), student.log_prob(x_t), log_p_t)


# --------------------------------------------------------------------------- several teachers


class TeacherEnsemble(nn.Module):
    """M frozen teachers combined into one target density, for reverse-KL distillation from all of them.

    - ``combine="mixture"``: ``p_mix = (1/M) sum_m p_m``, exact: ``ln p_mix = logsumexp_m ln p_m - ln M``.
      It samples (pick a member uniformly, sample it), so forward KL and ML work too. Reverse KL to it
      asks the student to sit where *any* teacher has mass; this is the density analogue of ensemble
      distillation's target, the members' average prediction (Malinin et al., Ensemble Distribution
      Distillation, ICLR 2020, which distil the members' spread as well).
    - ``combine="geometric"``: ``ln g~ = (1/M) sum_m ln p_m``, unnormalised. Since
      ``(1/M) sum_m KL(q || p_m) = E_q[ln q - (1/M) sum_m ln p_m] = KL(q || g) - ln Z`` with
      ``g = g~ / Z`` and ``Z = int prod_m p_m^(1/M) dx <= 1`` (geometric <= arithmetic mean), the reverse KL
      to ``g~`` *is* the average of the KLs: it is minimised by q = g, which lives where *all* teachers agree,
      and its minimum is ``-ln Z >= 0`` (0 only if the teachers are equal). It has no sampler.
    """

    def __init__(self, teachers: list[ToyFlow], combine: str = "mixture") -> None:
        super().__init__()
        if combine not in ("mixture", "geometric"):
            raise ValueError(f"TeacherEnsemble combine={combine!r} is unknown; use 'mixture' or 'geometric'")
        if len(teachers) < 2:
            raise ValueError(f"TeacherEnsemble needs at least 2 teachers, got {len(teachers)}")
        for t in teachers[1:]:
            _check_same_space(teachers[0], t, "TeacherEnsemble")
        self.members, self.combine = nn.ModuleList(teachers), combine
        self.dim, self.is_series = teachers[0].dim, teachers[0].is_series

    @property
    def can_sample(self) -> bool:
        return self.combine == "mixture"

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """``(n, D) -> (n,)``: ``ln p_mix`` (exact) or ``(1/M) sum_m ln p_m`` (unnormalised)."""
        logs = torch.stack([m.log_prob(x) for m in self.members])
        if self.combine == "mixture":
            return torch.logsumexp(logs, 0) - math.log(len(self.members))
        return logs.mean(0)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``(n, D)`` draws from the mixture: member ``k_i ~ U{1..M}``, then ``x_i ~ p_{k_i}``."""
        if not self.can_sample:
            raise ValueError(
                "a geometric TeacherEnsemble has no sampler; train with reverse_kl / renyi / js, "
                "or use combine='mixture'"
            )
        pick = torch.randint(len(self.members), (_check_positive_int("n", n),), generator=generator)
        x = torch.empty(n, self.dim)
        for k, member in enumerate(self.members):
            rows = (pick == k).nonzero().flatten()
            if len(rows):
                x[rows] = member.sample(len(rows), generator).to(x.dtype)
        return x

    def sample_with_log_prob(self, n: int, generator: torch.Generator | None = None):
        x = self.sample(n, generator)
        return x, self.log_prob(x)


# --------------------------------------------------------------------------- distillation


def _reverse_kl_loss(student: ToyFlow, teacher: ToyFlow, batch: int, generator) -> tuple[torch.Tensor, float]:
    """PDD: ``mean(log q_S(x) - log p_T(x))`` on the student's own reparameterised draws; no teacher sampling."""
    x, log_q = student.sample_with_log_prob(batch, generator)
    return (log_q - teacher.log_prob(x)).mean(), 0.0


def _forward_kl_ml_loss(student: ToyFlow, teacher: ToyFlow, batch: int, generator) -> tuple[torch.Tensor, float]:
    """ML on teacher samples: ``-mean log q_S(x)``, x ~ p_T; equals KL(p_T || q_S) + H(p_T)."""
    start = time.perf_counter()
    with torch.no_grad():
        x = teacher.sample(batch, generator)
    sampled = time.perf_counter() - start
    return -student.log_prob(x).mean(), sampled


def _regression_loss(student: ToyFlow, teacher: ToyFlow, batch: int, generator) -> tuple[torch.Tensor, float]:
    """Distil the deterministic map: ``mean ||f_S(u) - f_T(u)||^2`` for shared base noise u."""
    u = student.noise(batch, generator)
    start = time.perf_counter()
    with torch.no_grad():
        target = teacher.sample_from_noise(u)
    sampled = time.perf_counter() - start
    return ((student.sample_from_noise(u) - target) ** 2).sum(-1).mean(), sampled


def _renyi_loss(student: ToyFlow, teacher, batch: int, generator, alpha: float = 0.5) -> tuple[torch.Tensor, float]:
    """``ln(mean (p_T / q_S)^(1-alpha)) / (alpha - 1)`` on the student's reparameterised draws (the Renyi
    variational bound of Li & Turner, NeurIPS 2016; :func:`renyi_estimate`). Its gradient is that of a
    consistent, O(1/batch)-biased estimate of D_alpha; no teacher sampling."""
    x, log_q = student.sample_with_log_prob(batch, generator)
    log_w = (1 - alpha) * (teacher.log_prob(x) - log_q)
    return (torch.logsumexp(log_w, 0) - math.log(batch)) / (alpha - 1), 0.0


def _js_loss(student: ToyFlow, teacher, batch: int, generator) -> tuple[torch.Tensor, float]:
    """The student-only, importance-weighted JS estimate of :func:`js_estimate` on reparameterised draws:
    ``mean[(ln q - ln m) / 2 + (p / q)(ln p - ln m) / 2]``. For every weight vector it equals
    ``int h_theta(x) dx`` in expectation (``h = (q ln(q/m) + p ln(p/m)) / 2``), so its pathwise gradient is
    unbiased for the gradient of JS; no teacher sampling."""
    x, log_q = student.sample_with_log_prob(batch, generator)
    log_p = teacher.log_prob(x)
    a, b = _js_terms(log_q, log_p)
    return (0.5 * a + 0.5 * torch.exp(log_p - log_q) * b).mean(), 0.0


LOSSES = {
    "reverse_kl": _reverse_kl_loss,
    "forward_kl_ml": _forward_kl_ml_loss,
    "regression": _regression_loss,
    "renyi": _renyi_loss,
    "js": _js_loss,
}


@dataclass
class DistilHistory:
    """What :func:`distil` measured. Seconds are training wall time only (evaluations excluded).

    ``step``, ``seconds``, ``loss``: one entry per training step. ``teacher_seconds``: the part of ``seconds``
    spent drawing teacher samples (sequential for a MAF). ``evals``: one dict per evaluation with ``step``,
    ``seconds``, ``teacher`` (the name trained against) and ``reverse_kl``, ``reverse_kl_se``,
    ``forward_kl``, ``forward_kl_se``, each a dict from teacher name ("teacher", or "old" and "new" with a
    swap) to nats per example. ``swapped_at``: the first step trained against the new teacher.
    """

    method: str
    step: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    evals: list[dict] = field(default_factory=list)
    teacher_seconds: float = 0.0
    swapped_at: int | None = None

    @property
    def steps_done(self) -> int:
        return len(self.step)

    @property
    def seconds_per_step(self) -> float:
        return self.seconds[-1] / max(self.steps_done, 1) if self.seconds else 0.0

    @property
    def final(self) -> dict:
        return self.evals[-1]

    def as_dict(self) -> dict:
        return asdict(self) | {"steps_done": self.steps_done, "seconds_per_step": self.seconds_per_step}


class _Evaluator:
    """KL to each named teacher on fixed noise and fixed teacher samples, so successive evaluations differ
    only through the student (common random numbers): reverse KL on ``f_S(u)`` for one fixed u, forward KL
    on one fixed set of teacher draws with their log densities, drawn once per teacher."""

    def __init__(self, teachers: dict[str, ToyFlow], n: int, seed: int, dim: int) -> None:
        self.teachers = teachers
        self.u = Logistic(torch.zeros(n, dim), torch.zeros(n, dim)).sample(_generator(seed))
        with torch.no_grad():
            self.draws = {
                name: t.sample_with_log_prob(n, _generator(seed + 1))
                for name, t in teachers.items()
                if getattr(t, "can_sample", True)
            }

    @torch.no_grad()
    def __call__(self, student: ToyFlow) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {
            k: {} for k in ("reverse_kl", "reverse_kl_se", "forward_kl", "forward_kl_se")
        }
        x, log_q = student.sample_from_noise_with_log_prob(self.u)
        for name, teacher in self.teachers.items():
            out["reverse_kl"][name], out["reverse_kl_se"][name] = _estimate(log_q - teacher.log_prob(x))
            if name not in self.draws:  # an unnormalised target (TeacherEnsemble "geometric"): no forward KL
                out["forward_kl"][name] = out["forward_kl_se"][name] = math.nan
                continue
            x_t, log_p = self.draws[name]
            out["forward_kl"][name], out["forward_kl_se"][name] = _estimate(log_p - student.log_prob(x_t))
        return out


def _check_distil_args(student, teacher, method, budget_s, steps, batch, lr, teacher_swap, eval_every, eval_n, alpha):
    if method not in METHODS:
        raise ValueError(f"distil method={method!r} is unknown; use one of {', '.join(METHODS)}")
    if method == "renyi":
        _check_alpha(alpha)
    if method == "regression" and isinstance(teacher, TeacherEnsemble):
        raise ValueError("distil method='regression' needs one teacher's noise-to-sample map, not a TeacherEnsemble")
    if method == "forward_kl_ml" and not getattr(teacher, "can_sample", True):
        raise ValueError(
            "distil method='forward_kl_ml' samples the teacher, and a geometric TeacherEnsemble has no sampler; "
            "use reverse_kl, renyi or js"
        )
    if budget_s is None and steps is None:
        raise ValueError("distil needs a budget: give budget_s (training wall seconds) or steps, or both")
    if budget_s is not None and not (isinstance(budget_s, (int, float)) and math.isfinite(budget_s) and budget_s > 0):
        raise ValueError(f"distil budget_s={budget_s!r}: use a finite number of seconds > 0")
    if steps is not None:
        _check_positive_int("distil steps", steps)
    _check_positive_int("distil batch", batch)
    _check_positive_int("distil eval_every", eval_every)
    _check_positive_int("distil eval_n", eval_n, 2)
    _check_lr(lr)
    _check_same_space(student, teacher, "distil")
    if teacher_swap is not None:
        if not (isinstance(teacher_swap, tuple) and len(teacher_swap) == 2 and isinstance(teacher_swap[1], ToyFlow)):
            raise ValueError("distil teacher_swap must be (at, new_teacher): at an int step or float seconds")
        at, new_teacher = teacher_swap
        _check_same_space(student, new_teacher, "distil teacher_swap")
        if isinstance(at, bool) or not isinstance(at, (int, float)) or not at > 0:
            raise ValueError(f"distil teacher_swap at={at!r}: use an int step or float seconds > 0")
        if isinstance(at, int) and steps is not None and at >= steps:
            raise ValueError(
                f"distil teacher_swap at step {at} is not before the end (steps={steps}); swap earlier or train longer"
            )
        if isinstance(at, float) and budget_s is not None and at >= budget_s:
            raise ValueError(
                f"distil teacher_swap at {at} s is not before the end (budget_s={budget_s}); "
                "swap earlier or train longer"
            )


def distil(
    student: ToyFlow,
    teacher: ToyFlow,
    method: str = "reverse_kl",
    budget_s: float | None = None,
    steps: int | None = None,
    batch: int = 128,
    lr: float = 1e-3,
    generator: torch.Generator | None = None,
    teacher_swap: tuple[int | float, ToyFlow] | None = None,
    eval_every: int = 50,
    eval_n: int = 1000,
    eval_seed: int = 12345,
    alpha: float = 0.5,
) -> DistilHistory:
    """Transfer a frozen ``teacher`` into ``student`` with Adam, until ``steps`` or ``budget_s`` training seconds.

    ``method``:

    - "reverse_kl" (PDD): minimise ``KL(q_S || p_T) = E_{x~q_S}[log q_S(x) - log p_T(x)]`` on the student's
      own draws, gradients through x (reparameterisation); an IAF student and a MAF teacher are both parallel.
    - "forward_kl_ml": maximum likelihood of the student on teacher draws, ``KL(p_T || q_S) + H(p_T)``;
      a MAF teacher samples sequentially and an IAF student scores with its sequential inverse.
    - "regression": ``||f_S(u) - f_T(u)||^2`` for shared noise u; the teacher's sequential sampling again.
    - "renyi": the Renyi divergence ``D_alpha(q_S || p_T)`` (``alpha``, default 1/2) on the student's draws,
      :func:`_renyi_loss`; parallel like PDD, less mode-seeking for alpha < 1.
    - "js": the Jensen-Shannon divergence, importance-weighted on the student's draws (:func:`_js_loss`).

    ``teacher`` may be a :class:`TeacherEnsemble` (several teachers in one target); a "geometric" one has no
    sampler, so only the student-sample methods apply and its forward KL is reported as nan.

    ``teacher_swap=(at, new_teacher)`` trains against ``new_teacher`` from step ``at`` (an int) or once ``at``
    training seconds (a float) have passed; evaluations then report KL to both "old" and "new", and one is
    made just before the swap. Evaluations (every ``eval_every`` steps, at the start and at the end) use
    fixed noise and fixed teacher draws (:class:`_Evaluator`); their time is not counted. Teachers are frozen
    in place (:func:`pwn_lib.distill.freeze`).
    """
    _check_distil_args(student, teacher, method, budget_s, steps, batch, lr, teacher_swap, eval_every, eval_n, alpha)
    loss_fn = functools.partial(LOSSES[method], alpha=alpha) if method == "renyi" else LOSSES[method]
    teachers = {"teacher": teacher} if teacher_swap is None else {"old": teacher, "new": teacher_swap[1]}
    for t in teachers.values():
        freeze(t)
    student.requires_grad_(True).train()
    evaluate = _Evaluator(teachers, eval_n, eval_seed, student.dim)
    params = list(student.parameters())
    optimiser = torch.optim.Adam(params, lr=lr)
    history = DistilHistory(method)
    current = "teacher" if teacher_swap is None else "old"
    elapsed = 0.0

    def record_eval() -> None:
        history.evals.append({"step": history.steps_done, "seconds": elapsed, "teacher": current} | evaluate(student))

    record_eval()
    while True:
        if teacher_swap is not None and current == "old":
            at = teacher_swap[0]
            if (isinstance(at, int) and history.steps_done >= at) or (isinstance(at, float) and elapsed >= at):
                if history.evals[-1]["step"] != history.steps_done:
                    record_eval()
                current, history.swapped_at = "new", history.steps_done + 1
        start = time.perf_counter()
        loss, sampled = loss_fn(student, teachers[current], batch, generator)
        _step(optimiser, params, loss)
        elapsed += time.perf_counter() - start
        history.teacher_seconds += sampled
        history.step.append(history.steps_done + 1)
        history.seconds.append(elapsed)
        history.loss.append(loss.item())
        done = (steps is not None and history.steps_done >= steps) or (budget_s is not None and elapsed >= budget_s)
        if done or history.steps_done % eval_every == 0:
            record_eval()
        if done:
            return history


# --------------------------------------------------------------------------- experiments

# Sizes: teacher_steps of ML for the teacher, steps of distillation for the student.
MOONS = {
    "fast": {"teacher_steps": 300, "steps": 300, "flows": 4, "width": 32},
    "full": {"teacher_steps": 3000, "steps": 1500, "flows": 6, "width": 64},
}
SERIES = {
    "fast": {"length": 24, "teacher_steps": 200, "steps": 100},
    "full": {"length": 64, "teacher_steps": 1500, "steps": 600},
}


def _size(table: dict, fast: bool) -> dict:
    if not isinstance(fast, bool):
        raise ValueError(f"fast={fast!r}: use True (seconds on one core) or False (minutes)")
    return table["fast" if fast else "full"]


def moons_teacher(fast: bool, seed: int = 0, rotate: float = 0.0, steps: int | None = None) -> ToyFlow:
    """A MAF fitted by ML to :func:`two_moons` (rotated by ``rotate`` radians), with seeded weights and data.

    ``steps`` (default: the size's ``teacher_steps``) of the same seeded run: fewer steps give an earlier
    checkpoint of the same training. Each call returns a fresh copy; the fit is done once per process.
    """
    return copy.deepcopy(
        _moons_teacher(_size(MOONS, fast)["teacher_steps"] if steps is None else steps, fast, seed, rotate)
    )


@functools.lru_cache(maxsize=8)
def _moons_teacher(steps: int, fast: bool, seed: int, rotate: float) -> ToyFlow:
    size = _size(MOONS, fast)
    teacher = _seeded(seed, lambda: ToyFlow.maf(2, size["flows"], size["width"]))
    c, s = math.cos(rotate), math.sin(rotate)
    rotation = torch.tensor([[c, s], [-s, c]])
    fit_ml(teacher, lambda n, g: two_moons(n, generator=g) @ rotation, steps, lr=2e-3, generator=_generator(seed + 1))
    return teacher


def moons_student(fast: bool, seed: int = 1) -> ToyFlow:
    size = _size(MOONS, fast)
    return _seeded(seed, lambda: ToyFlow.iaf(2, size["flows"], size["width"]))


def series_student(fast: bool, seed: int = 1) -> ToyFlow:
    """The default series student: an IAF of 4 flows, 16 channels, 3 dilated convs (receptive field 32)."""
    length = _size(SERIES, fast)["length"]
    return _seeded(seed, lambda: ToyFlow.iaf(length, 4, 16, 3, series=True))


def series_teacher(fast: bool, seed: int = 0) -> ToyFlow:
    """A MAF over :func:`ar_series` windows, receptive field 16 >= the lag 8, fitted by ML (a fresh copy of a
    fit done once per process)."""
    return copy.deepcopy(_series_teacher(fast, seed))


@functools.lru_cache(maxsize=4)
def _series_teacher(fast: bool, seed: int) -> ToyFlow:
    size = _size(SERIES, fast)
    teacher = _seeded(seed, lambda: ToyFlow.maf(size["length"], 2, 16, 3, series=True))
    fit_ml(
        teacher,
        lambda n, g: ar_series(n, size["length"], g),
        size["teacher_steps"],
        lr=3e-3,
        batch=128,
        generator=_generator(seed + 1),
    )
    return teacher


def _series_nll_per_step(teacher: ToyFlow, n: int, seed: int) -> float:
    with torch.no_grad():
        return -teacher.log_prob(ar_series(n, teacher.dim, _generator(seed))).mean().item() / teacher.dim


def _kl_summary(student: ToyFlow, teacher: ToyFlow, n: int, seed: int, per: int = 1) -> dict[str, float]:
    """Reverse and forward KL (MC, fixed seeds) with standard errors, divided by ``per`` (the length)."""
    rev, rev_se = reverse_kl(student, teacher, n, _generator(seed))
    fwd, fwd_se = forward_kl(teacher, student, n, _generator(seed + 1))
    values = {"reverse_kl": rev, "reverse_kl_se": rev_se, "forward_kl": fwd, "forward_kl_se": fwd_se}
    return {name: value / per for name, value in values.items()}


def architecture_sweep(fast: bool = True, seed: int = 0) -> dict:
    """Q1: IAF students of growing receptive field distilled (reverse KL) from one series teacher, same steps.

    Grid: flows in {1, 2, 4} x channels x conv layers (receptive field ``flows * 2**layers``). Reports the
    exact reverse and forward KL per time step after a fixed number of steps, and seconds per step. The
    AR lag is 8: students with receptive field < 8 make x_t and x_{t+8} independent, so they cannot match.
    """
    size = _size(SERIES, fast)
    channels, layers = ((8,), (1, 3)) if fast else ((8, 32), (1, 2, 3))
    steps, eval_n = (60, 256) if fast else (400, 2000)
    teacher = series_teacher(fast, seed)
    rows = []
    for flows in (1, 2, 4):
        for width in channels:
            for n_layers in layers:
                student = _seeded(
                    seed + 1, lambda f=flows, w=width, k=n_layers: ToyFlow.iaf(size["length"], f, w, k, series=True)
                )
                history = distil(
                    student,
                    teacher,
                    "reverse_kl",
                    steps=steps,
                    batch=64,
                    lr=3e-3,
                    generator=_generator(seed + 2),
                    eval_every=steps,
                    eval_n=16,
                )
                rows.append(
                    {
                        "flows": flows,
                        "channels": width,
                        "layers": n_layers,
                        "receptive_field": student.receptive_field,
                        "params": sum(p.numel() for p in student.parameters()),
                        "seconds_per_step": history.seconds_per_step,
                    }
                    | _kl_summary(student, teacher, eval_n, seed + 3, size["length"])
                )
    rows.sort(key=lambda r: (r["receptive_field"], r["params"]))
    return {
        "question": "Q1",
        "length": size["length"],
        "lag": AR_LAG,
        "steps": steps,
        "rows": rows,
        "teacher_nll_per_step": _series_nll_per_step(teacher, eval_n, seed + 4),
        "entropy_rate": ar_entropy_rate(),
    }


def toy_distillation(fast: bool = True, seed: int = 0) -> dict:
    """Q2: reverse-KL distillation outside audio, on two moons and on the AR series; KL before and after.

    In 2-D the Monte Carlo KLs are checked against quadrature (:func:`grid_divergences`). For the series the
    teacher's NLL per step on fresh data is compared with the exact entropy rate ``ln s + 2``: their gap is
    (up to the first steps' marginal) the teacher's own KL per step from the data.
    """
    moons, series = _size(MOONS, fast), _size(SERIES, fast)
    eval_n = 500 if fast else 4000
    out = {"question": "Q2", "tasks": []}
    for task in ("moons", "series"):
        if task == "moons":
            teacher, student = moons_teacher(fast, seed), moons_student(fast, seed + 1)
            steps, per, batch = moons["steps"], 1, 256
        else:
            teacher = series_teacher(fast, seed)
            student = series_student(fast, seed + 1)
            steps, per, batch = series["steps"], series["length"], 64
        before = _kl_summary(student, teacher, eval_n, seed + 3, per)
        history = distil(
            student,
            teacher,
            "reverse_kl",
            steps=steps,
            batch=batch,
            lr=2e-3,
            generator=_generator(seed + 2),
            eval_every=steps,
            eval_n=16,
        )
        row = {
            "task": task,
            "steps": steps,
            "seconds": history.seconds[-1],
            "per": "example" if per == 1 else "step",
            "before": before,
            "after": _kl_summary(student, teacher, eval_n, seed + 3, per),
        }
        if task == "moons":
            row["grid_after"] = grid_divergences(student, teacher, 6.0, 200 if fast else 400)
        else:
            row["teacher_nll_per_step"] = _series_nll_per_step(teacher, eval_n, seed + 4)
            row["entropy_rate"] = ar_entropy_rate()
        out["tasks"].append(row)
    return out


def evolving_teacher(fast: bool = True, seed: int = 0) -> dict:
    """Q3: the teacher changes part-way through distillation. What does the student keep and forget?

    Two scenarios on two moons: "checkpoint" (A = the ML teacher after 10% of its steps, B = the same
    teacher trained on) and "shift" (A on two moons, B on two moons rotated by 90 degrees). Three students
    with the same initial weights and N steps each: from A throughout, from B throughout, and from A for
    N/2 steps then from B. Reported: reverse KL (grid quadrature) of each final student to A and to B, and
    for the swap run the KL to A just before the swap; its rise afterwards is what was forgotten.
    """
    size = _size(MOONS, fast)
    steps = size["steps"]
    full_b = moons_teacher(fast, seed)
    early = moons_teacher(fast, seed, steps=max(size["teacher_steps"] // 10, 1))
    teachers = {"checkpoint": (early, full_b), "shift": (full_b, moons_teacher(fast, seed + 10, rotate=math.pi / 2))}
    points = 150 if fast else 300
    scenarios = []
    for name, (a, b) in teachers.items():
        runs = {}
        for run, (first, swap) in {"A": (a, None), "B": (b, None), "A_then_B": (a, (steps // 2, b))}.items():
            student = moons_student(fast, seed + 1)
            history = distil(
                student,
                first,
                "reverse_kl",
                steps=steps,
                batch=256,
                lr=2e-3,
                generator=_generator(seed + 2),
                teacher_swap=swap,
                eval_every=steps,
                eval_n=500,
            )
            runs[run] = {
                "kl_to_A": grid_divergences(student, a, 6.0, points)["reverse_kl"],
                "kl_to_B": grid_divergences(student, b, 6.0, points)["reverse_kl"],
            }
            if swap is not None:
                at_swap = next(e for e in history.evals if e["step"] == steps // 2)
                runs[run]["mc_kl_to_A_at_swap"] = at_swap["reverse_kl"]["old"]
                runs[run]["mc_kl_to_A_at_end"] = history.final["reverse_kl"]["old"]
        scenarios.append(
            {"scenario": name, "kl_A_to_B": grid_divergences(a, b, 6.0, points)["reverse_kl"], "runs": runs}
        )
    return {"question": "Q3", "steps": steps, "scenarios": scenarios}


def transfer_comparison(fast: bool = True, seed: int = 0) -> dict:
    """Q5: PDD, ML on teacher samples and regression of the noise-to-sample map, at one wall-clock budget.

    Each method trains the same initial student against the same MAF teacher for ``budget_s`` training
    seconds. PDD needs one parallel pass of each model per step; ML needs the teacher's sequential sampling
    and the student's sequential inverse; regression needs the teacher's sequential sampling. Reported per
    method: steps done, seconds per step (and the part spent sampling the teacher), final reverse and forward KL.
    """
    series = _size(SERIES, fast)
    budget = {"moons": 1.5, "series": 2.0} if fast else {"moons": 15.0, "series": 30.0}
    eval_n = 500 if fast else 2000
    out = {"question": "Q5", "budget_s": budget, "tasks": []}
    for task in ("moons", "series"):
        if task == "moons":
            teacher, per, batch = moons_teacher(fast, seed), 1, 256
        else:
            teacher, per, batch = series_teacher(fast, seed), series["length"], 64
        for method in METHODS:
            student = moons_student(fast, seed + 1) if task == "moons" else series_student(fast, seed + 1)
            history = distil(
                student,
                teacher,
                method,
                budget_s=budget[task],
                batch=batch,
                lr=2e-3,
                generator=_generator(seed + 2),
                eval_every=10**9,
                eval_n=16,
            )
            out["tasks"].append(
                {
                    "task": task,
                    "method": method,
                    "steps_done": history.steps_done,
                    "seconds": history.seconds[-1],
                    "seconds_per_step": history.seconds_per_step,
                    "teacher_sampling_share": history.teacher_seconds / history.seconds[-1],
                    "per": "example" if per == 1 else "step",
                }
                | _kl_summary(student, teacher, eval_n, seed + 3, per)
            )
    return out


def _partly_distilled_moons_pair(fast: bool, seed: int) -> tuple[ToyFlow, ToyFlow]:
    """The moons teacher and a student after a fifth of the usual reverse-KL steps: a pair that still differs."""
    teacher, student = moons_teacher(fast, seed), moons_student(fast, seed + 1)
    steps = _size(MOONS, fast)["steps"] // 5
    distil(student, teacher, steps=steps, batch=256, lr=2e-3, generator=_generator(seed + 2), eval_every=steps)
    return freeze(student), teacher


def divergence_estimators(fast: bool = True, seed: int = 0, alpha: float = 0.5) -> dict:
    """Issue item 1: bias and spread of each Monte Carlo divergence estimator against quadrature (two moons).

    One teacher and a partly distilled student; for each sample size n, ``repeats`` independent estimates of
    the reverse KL (student draws), the forward KL (teacher draws), the Renyi D_alpha (student draws), JS
    two-sided (n draws of each) and JS importance-weighted (student draws only). Reported per estimator and n:
    the exact value (grid), bias = mean - exact, sd (the spread over repeats), the mean reported standard
    error, RMSE and milliseconds per estimate (teacher draws are a MAF's sequential sampling).
    """
    _size(MOONS, fast)
    sizes, repeats = ((10, 100, 1000), 40) if fast else ((10, 100, 1000, 10000), 300)
    points = 200 if fast else 400
    student, teacher = _partly_distilled_moons_pair(fast, seed)
    grid = grid_divergences(student, teacher, 6.0, points)
    exact = {
        "reverse_kl": grid["reverse_kl"],
        "forward_kl": grid["forward_kl"],
        "renyi": grid_renyi(student, teacher, alpha, 6.0, points),
        "js_two_sided": grid["js"],
        "js_student_only": grid["js"],
    }
    estimators = {
        "reverse_kl": lambda n, g: reverse_kl(student, teacher, n, g),
        "forward_kl": lambda n, g: forward_kl(teacher, student, n, g),
        "renyi": lambda n, g: renyi_divergence(student, teacher, alpha, n, g),
        "js_two_sided": lambda n, g: js_divergence(student, teacher, n, g, teacher_draws=True),
        "js_student_only": lambda n, g: js_divergence(student, teacher, n, g, teacher_draws=False),
    }
    rows = []
    for name, estimate in estimators.items():
        for n in sizes:
            start = time.perf_counter()
            values, errors = zip(*(estimate(n, _generator(seed + 100 + r)) for r in range(repeats)), strict=True)
            seconds = (time.perf_counter() - start) / repeats
            v = torch.tensor(values, dtype=torch.float64)
            rows.append(
                {
                    "estimator": name,
                    "n": n,
                    "exact": exact[name],
                    "bias": v.mean().item() - exact[name],
                    "bias_se": (v.std() / math.sqrt(repeats)).item(),
                    "sd": v.std().item(),
                    "mean_reported_se": sum(errors) / repeats,
                    "rmse": ((v - exact[name]) ** 2).mean().sqrt().item(),
                    "ms_per_estimate": 1e3 * seconds,
                }
            )
    return {"item": "divergences", "alpha": alpha, "repeats": repeats, "exact": exact, "rows": rows}


# The student of divergence_comparison: one flow, so it cannot bend a conditional into two moons, and the
# divergence decides what it gives up.
SMALL_STUDENT = {"fast": {"flows": 1, "width": 32}, "full": {"flows": 1, "width": 64}}
DIVERGENCE_METHODS = ("reverse_kl", "forward_kl_ml", "renyi", "js")


def divergence_comparison(fast: bool = True, seed: int = 0, alpha: float = 0.5, keep_students: bool = False) -> dict:
    """Issue item 1: one teacher, one step budget, four training divergences; mode-seeking vs mode-covering.

    A one-flow IAF student (:data:`SMALL_STUDENT`) is trained on two moons by the reverse KL (PDD), ML on
    teacher draws (forward KL, through the student's sequential inverse), Renyi D_alpha and JS (both on the
    student's own draws). Each result is scored by quadrature in every divergence, with ``missed_mass`` (the
    teacher's mass where q < p / 10). A second table times a few steps of every method on the AR series
    teacher (T steps): a MAF samples and an IAF inverts in T sequential passes, the MAF/IAF asymmetry of
    notebook 01, so ML's cost per step grows with T while the student-sample methods stay one pass.
    ``keep_students=True`` adds ``"students"`` (method -> trained flow) and ``"teacher"``, for plots (not JSON).
    """
    moons, series = _size(MOONS, fast), _size(SERIES, fast)
    small = _size(SMALL_STUDENT, fast)
    steps, points, timed_steps = moons["steps"], (150 if fast else 300), (3 if fast else 10)
    teacher = moons_teacher(fast, seed)
    rows, students = [], {}
    for method in DIVERGENCE_METHODS:
        student = _seeded(seed + 1, lambda: ToyFlow.iaf(2, small["flows"], small["width"]))
        history = distil(
            student,
            teacher,
            method,
            steps=steps,
            batch=256,
            lr=3e-3,
            generator=_generator(seed + 2),
            eval_every=steps,
            eval_n=16,
            alpha=alpha,
        )
        students[method] = student
        rows.append(
            {
                "method": method,
                "steps": steps,
                "seconds_per_step": history.seconds_per_step,
                "teacher_sampling_share": history.teacher_seconds / history.seconds[-1],
                "renyi": grid_renyi(student, teacher, alpha, 6.0, points),
            }
            | grid_divergences(student, teacher, 6.0, points)
        )
    series_teacher_ = series_teacher(fast, seed)
    cost = []
    for method in DIVERGENCE_METHODS:
        history = distil(
            series_student(fast, seed + 1),
            series_teacher_,
            method,
            steps=timed_steps,
            batch=64,
            lr=2e-3,
            generator=_generator(seed + 2),
            eval_every=timed_steps,
            eval_n=2,
            alpha=alpha,
        )
        cost.append(
            {
                "method": method,
                "task": f"series T={series['length']}",
                "seconds_per_step": history.seconds_per_step,
                "teacher_sampling_share": history.teacher_seconds / history.seconds[-1],
            }
        )
    out = {"item": "divergences", "alpha": alpha, "student": small, "rows": rows, "series_cost": cost}
    return out | ({"students": students, "teacher": teacher} if keep_students else {})


def multi_teacher(fast: bool = True, seed: int = 0, keep_students: bool = False) -> dict:
    """Issue item 2: one student, two MAF teachers; the KL to their mixture against the average of the KLs.

    Scenarios: "seeds" (two teachers fitted to two moons from different seeds: they agree) and "shift" (two
    moons and two moons rotated by 90 degrees: they overlap only where the arms cross). Students, same
    initial weights and steps: "mixture" (reverse KL to p_mix, :class:`TeacherEnsemble` "mixture"),
    "average" (the average of the reverse KLs, "geometric") and "mixture_ml" (ML on mixture draws: forward
    KL, the analogue of ensemble distillation's average-prediction target). Reported by quadrature: KL of
    the student to each teacher, their average, reverse and forward KL to the mixture, the mixture's
    missed mass, and ``-ln Z``, the average-of-KLs objective's floor. ``keep_students=True`` adds
    ``"students"`` and ``"teachers"`` (flows, for plots) to each scenario.
    """
    size = _size(MOONS, fast)
    steps, points = size["steps"], (150 if fast else 300)
    pairs = {
        "seeds": (moons_teacher(fast, seed), moons_teacher(fast, seed + 20)),
        "shift": (moons_teacher(fast, seed), moons_teacher(fast, seed + 10, rotate=math.pi / 2)),
    }
    scenarios = []
    for name, (a, b) in pairs.items():
        mixture, geometric = TeacherEnsemble([a, b], "mixture"), TeacherEnsemble([a, b], "geometric")
        runs, students = {}, {}
        for run, (target, method) in {
            "mixture": (mixture, "reverse_kl"),
            "average": (geometric, "reverse_kl"),
            "mixture_ml": (mixture, "forward_kl_ml"),
        }.items():
            student = moons_student(fast, seed + 1)
            distil(
                student,
                target,
                method,
                steps=steps,
                batch=256,
                lr=2e-3,
                generator=_generator(seed + 2),
                eval_every=steps,
                eval_n=16,
            )
            students[run] = student
            to_a, to_b = (grid_divergences(student, t, 6.0, points)["reverse_kl"] for t in (a, b))
            mix = grid_divergences(student, mixture, 6.0, points)
            runs[run] = {
                "kl_to_1": to_a,
                "kl_to_2": to_b,
                "average_kl": (to_a + to_b) / 2,
                "kl_to_mixture": mix["reverse_kl"],
                "mixture_to_student_kl": mix["forward_kl"],
                "mixture_missed_mass": mix["missed_mass"],
            }
        z = grid_divergences(a, geometric, 6.0, points)["teacher_mass"]
        scenarios.append(
            {
                "scenario": name,
                "kl_1_to_2": grid_divergences(a, b, 6.0, points)["reverse_kl"],
                "average_kl_floor": -math.log(z),
                "runs": runs,
            }
            | ({"students": students, "teachers": (a, b)} if keep_students else {})
        )
    return {"item": "multi_teacher", "steps": steps, "scenarios": scenarios}


__all__ = [
    "AR_A",
    "AR_B",
    "AR_LAG",
    "AR_SCALE",
    "DIVERGENCE_METHODS",
    "DistilHistory",
    "METHODS",
    "SMALL_STUDENT",
    "TeacherEnsemble",
    "ToyFlow",
    "ar_entropy_rate",
    "ar_series",
    "architecture_sweep",
    "distil",
    "divergence_comparison",
    "divergence_estimators",
    "evolving_teacher",
    "fit_ml",
    "forward_kl",
    "grid_divergences",
    "grid_renyi",
    "js_divergence",
    "js_estimate",
    "moons_teacher",
    "moons_student",
    "multi_teacher",
    "renyi_divergence",
    "renyi_estimate",
    "reverse_kl",
    "series_student",
    "series_teacher",
    "toy_distillation",
    "transfer_comparison",
    "two_moons",
]
