# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [raw]
# # ASSIGNMENT CONFIG
# name: 06_distillation
# init_cell: true
# check_all_cell: false
# export_cell: false
# solutions_pdf: false
# generate: true

# %% [markdown]
# # Assignment 06 · The KL estimator: analytic entropy, Monte Carlo cross-entropy, and other divergences
#
# Goes with notebook 06 (probability density distillation) and section 4 of the paper. Per step, the student is a
# logistic `L(mu, s)` and `D_KL(P_S ‖ P_T) = H(P_S, P_T) − H(P_S)`. You write the entropy in closed form and the
# cross-entropy as a reparameterised Monte Carlo estimate; the grader checks both against quadrature in float64.
# The last question is an experiment from the source's open questions: what other divergences than the KL do.
#
# **Points:** 7 autograded (questions 1–3) + 8 written (questions 4–7). **Time:** about 15 seconds to run on 2
# CPU cores (fast and full mode are the same here). Run each `grader.check` cell to see the public tests; hidden
# tests are added at grading.

# %%
import math

import torch

from pwn_lib.config import seed_everything
from pwn_lib.distill import cross_entropy_estimate, student_entropy
from pwn_lib.distributions import Logistic
from pwn_lib.toys import toy_distillation, transfer_comparison

seed_everything(0)
torch.set_default_dtype(torch.float64)
GRID = torch.linspace(-12.0, 12.0, 24001)  # quadrature grid for the checks: step 1e-3
DX = float(GRID[1] - GRID[0])


def two_bump_teacher(x):
    """log density of a teacher step: 0.7 L(-1, 0.2) + 0.3 L(1, 0.2), at x of any shape."""
    left = Logistic(torch.full_like(x, -1.0), torch.full_like(x, math.log(0.2))).log_prob(x) + math.log(0.7)
    right = Logistic(torch.full_like(x, 1.0), torch.full_like(x, math.log(0.2))).log_prob(x) + math.log(0.3)
    return torch.logaddexp(left, right)


# %% [markdown]
# ## Question 1 · The student's entropy is analytic
#
# The logistic `L(mu, s)` has density `e^{−u} / (s (1 + e^{−u})²)` with `u = (x − mu)/s`. Its entropy does not
# depend on `mu`. Write `logistic_entropy(log_s)` returning the entropy in nats, elementwise.

# %% [raw]
# # BEGIN QUESTION
# name: q1
# points: 2

# %% [raw]
# # BEGIN SOLUTION


# %%
def logistic_entropy(log_s):
    # BEGIN SOLUTION
    return log_s + 2.0
    # END SOLUTION


# %% [raw]
# # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
""" # BEGIN TEST CONFIG
points: 1
"""  # END TEST CONFIG
h = logistic_entropy(torch.tensor([0.0, 1.0]))
assert h.shape == (2,) and float(h[1] - h[0]) == 1.0, "an e-fold wider scale adds 1 nat"

# %%
""" # BEGIN TEST CONFIG
points: 1
hidden: true
"""  # END TEST CONFIG
log_s = torch.tensor(-0.7)
log_p = Logistic(torch.zeros_like(GRID) + 0.4, log_s.expand_as(GRID)).log_prob(GRID)
quadrature = float(-(log_p.exp() * log_p).sum() * DX)
assert abs(float(logistic_entropy(log_s)) - quadrature) < 1e-6
assert torch.allclose(logistic_entropy(torch.tensor([-3.0, 2.0])), student_entropy(torch.tensor([-3.0, 2.0])))

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION

# %% [markdown]
# ## Question 2 · The cross-entropy by reparameterised draws
#
# `H(P_S, P_T) = −E_{x∼L(mu,s)} log p_T(x)`. Draw `n_draws` uniforms `u` with `torch.rand(n_draws, *mu.shape,
# generator=generator)`, turn them into logistic samples `x = mu + s · log(u / (1 − u))` (differentiable in `mu`
# and `log_s`: this is how the gradient reaches the student), and return `−mean_k log_density(x_k)`, of `mu`'s
# shape. Write `cross_entropy_mc(mu, log_s, log_density, n_draws, generator)`.

# %% [raw]
# # BEGIN QUESTION
# name: q2
# points: 3

# %% [raw]
# # BEGIN SOLUTION


# %%
def cross_entropy_mc(mu, log_s, log_density, n_draws, generator):
    # BEGIN SOLUTION
    u = torch.rand(n_draws, *mu.shape, generator=generator).clamp(1e-12, 1 - 1e-12)
    x = mu + torch.exp(log_s) * torch.log(u / (1 - u))
    return -log_density(x).mean(dim=0)
    # END SOLUTION


# %% [raw]
# # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
""" # BEGIN TEST CONFIG
points: 1
"""  # END TEST CONFIG
mu, log_s = torch.zeros(3), torch.zeros(3)
ce = cross_entropy_mc(mu, log_s, lambda x: -0.5 * x**2, 4000, torch.Generator().manual_seed(0))
assert ce.shape == (3,), "one estimate per step"
assert torch.allclose(ce, torch.full((3,), math.pi**2 / 6), atol=0.15), "E[x²/2] = π²/6 for the standard logistic"

# %%
""" # BEGIN TEST CONFIG
points: 2
hidden: true
"""  # END TEST CONFIG
mu = torch.tensor([-0.8, 0.3], requires_grad=True)
log_s = torch.tensor([-1.2, -0.5], requires_grad=True)
draws = cross_entropy_mc(mu, log_s, two_bump_teacher, 40000, torch.Generator().manual_seed(1))
log_q = [
    Logistic(m.expand_as(GRID), s.expand_as(GRID)).log_prob(GRID)
    for m, s in zip(mu.detach(), log_s.detach(), strict=True)
]
exact = torch.stack([-(q.exp() * two_bump_teacher(GRID)).sum() * DX for q in log_q])
assert torch.allclose(draws.detach(), exact, atol=0.05), f"{draws.detach()} against quadrature {exact}"
draws.sum().backward()
assert mu.grad is not None and mu.grad.abs().min() > 0, "the estimate must be differentiable in mu (reparameterised)"
generator = torch.Generator().manual_seed(2)
reference = cross_entropy_estimate(mu.detach(), log_s.detach(), two_bump_teacher, 40000, generator)
assert torch.allclose(draws.detach(), reference, atol=0.08), "and agree with pwn_lib.distill within Monte Carlo error"

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION

# %% [markdown]
# ## Question 3 · The KL, and that it is never negative
#
# Write `kl_mc(mu, log_s, log_density, n_draws, generator)`: your cross-entropy minus your entropy, per step.

# %% [raw]
# # BEGIN QUESTION
# name: q3
# points: 2

# %% [raw]
# # BEGIN SOLUTION


# %%
def kl_mc(mu, log_s, log_density, n_draws, generator):
    # BEGIN SOLUTION
    return cross_entropy_mc(mu, log_s, log_density, n_draws, generator) - logistic_entropy(log_s)
    # END SOLUTION


# %% [raw]
# # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
""" # BEGIN TEST CONFIG
points: 1
"""  # END TEST CONFIG
same = lambda x: Logistic(torch.zeros_like(x), torch.zeros_like(x)).log_prob(x)  # noqa: E731
kl = kl_mc(torch.zeros(1), torch.zeros(1), same, 20000, torch.Generator().manual_seed(0))
assert abs(float(kl)) < 0.02, "a student equal to its teacher has KL 0"

# %%
""" # BEGIN TEST CONFIG
points: 1
hidden: true
"""  # END TEST CONFIG
mu, log_s = torch.tensor([0.0, -1.0, 1.0]), torch.tensor([-1.0, -1.6, -2.5])
kl = kl_mc(mu, log_s, two_bump_teacher, 40000, torch.Generator().manual_seed(3))
log_q = [Logistic(m.expand_as(GRID), s.expand_as(GRID)).log_prob(GRID) for m, s in zip(mu, log_s, strict=True)]
exact = torch.stack([(q.exp() * (q - two_bump_teacher(GRID))).sum() * DX for q in log_q])
assert (exact > 0).all() and torch.allclose(kl, exact, atol=0.05), f"{kl} against quadrature {exact}"

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION

# %% [raw]
# # BEGIN QUESTION
# name: q4
# manual: true
# points: 2

# %% [markdown]
# ## Question 4 (written) · The variance of the estimate
#
# Run `kl_mc` 200 times with `n_draws` 1, 4 and 16 (different seeds) for `mu = 0`, `log_s = −1` against
# `two_bump_teacher`, and print the standard deviation of the estimates. How does it scale with `n_draws`, and why
# is the entropy term not a source of variance? Why does the paper use the analytic entropy and not a Monte Carlo
# one?

# %% [raw]
# # BEGIN SOLUTION

# %% [markdown]
# **Model answer.** The standard deviation falls as 1/√K (measured: 1.07, 0.58 and 0.29 nats for K = 1, 4 and 16,
# around a mean of 1.21 nats: each fourfold K halves it), because the draws are independent and the estimate is their
# mean. The entropy is computed in closed form from `log_s`, so it adds no noise; only the cross-entropy is sampled. A
# Monte Carlo entropy, `−log p_S(x)` at the same draws, would add its own variance and, worse, need the student's
# density at arbitrary points; the analytic `ln s + 2` per step is exact and free (notebook 05: `Σ log s_tot` comes
# with the sample), which is what makes the reverse KL cheap for an IAF student.
#
# **Rubric (2 points).** 1 point: measured standard deviations that fall as 1/√K. 1 point: the entropy is analytic
# (no variance, exact), so only the cross-entropy is estimated.

# %% [raw]
# # END SOLUTION

# %% [raw]
# # END QUESTION

# %% [raw]
# # BEGIN QUESTION
# name: q5
# manual: true
# points: 2

# %% [markdown]
# ## Question 5 (written, an open question of the source) · What do other divergences than the KL do?
#
# Parallel WaveNet minimises the reverse KL, `D_KL(P_S ‖ P_T)`, which needs only the student's samples. Other
# divergences weigh the two distributions differently. Run the cell below: it fits one logistic student to the
# two-bump teacher by quadrature, under the reverse KL, the forward KL `D_KL(P_T ‖ P_S)` and the Jensen–Shannon
# divergence, from the same start, and prints the fitted `mu`, `s` and the mass the student puts in the valley
# `|x| < 0.5` between the teacher's bumps. Say what each divergence does, relate it to the student's whisper of
# notebook 07, and say why the forward KL is not used for an IAF student although it covers both bumps.


# %%
def fit_one_logistic(divergence, steps=600):
    """Fit L(mu, s) to two_bump_teacher by Adam on the exact divergence (quadrature on a grid of step 3e-3)."""
    grid = torch.linspace(-6.0, 6.0, 4001)
    dx = float(grid[1] - grid[0])
    mu, log_s = torch.tensor(0.3, requires_grad=True), torch.tensor(0.0, requires_grad=True)
    optimiser = torch.optim.Adam([mu, log_s], lr=0.05)
    log_t = two_bump_teacher(grid)
    for _ in range(steps):
        log_q = Logistic(mu.expand_as(grid), log_s.expand_as(grid)).log_prob(grid)
        if divergence == "reverse KL":
            loss = (log_q.exp() * (log_q - log_t)).sum() * dx
        elif divergence == "forward KL":
            loss = (log_t.exp() * (log_t - log_q)).sum() * dx
        else:  # Jensen-Shannon: the mean of both KLs to the average density
            log_m = torch.logaddexp(log_q, log_t) - math.log(2.0)
            loss = 0.5 * ((log_q.exp() * (log_q - log_m)).sum() + (log_t.exp() * (log_t - log_m)).sum()) * dx
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    log_q = Logistic(mu.expand_as(grid), log_s.expand_as(grid)).log_prob(grid).detach()
    return float(mu.detach()), math.exp(float(log_s.detach())), float((log_q.exp() * (grid.abs() < 0.5)).sum() * dx)


valley = float((two_bump_teacher(GRID).exp() * (GRID.abs() < 0.5)).sum() * DX)
print(f"teacher: bumps at -1 (weight 0.7) and +1 (0.3), scale 0.2, valley mass {valley:.3f}")
for name in ("reverse KL", "forward KL", "Jensen-Shannon"):
    print("{:>15}: mu {:+.3f}, s {:.3f}, valley mass {:.3f}".format(name, *fit_one_logistic(name)))

# %% [raw]
# # BEGIN SOLUTION

# %% [markdown]
# **Model answer (measured on 2 cores, about 2 s).** The teacher puts 0.075 of its mass in the valley. The **reverse
# KL** is mode-seeking: the student sits on the larger bump (mu −0.99, s 0.21, valley mass 0.091) and ignores the
# other, because it pays only where the *student* puts mass that the teacher lacks. The **forward KL** is
# mass-covering: it spreads over both bumps (mu −0.52, close to the teacher's mean −0.4, s 0.58) and puts 0.34 of its
# mass in the valley, where the teacher has little: samples from it would often be implausible. The **Jensen–Shannon**
# divergence lands near the reverse KL here (mu −0.98, s 0.23, valley 0.11): bounded and symmetric, it still prefers
# one bump for a one-bump student. In audio the reverse KL's mode-seeking is why a KL-only student can settle on a
# cheap, quiet, noise-like mode (the whisper of notebook 07), and why the auxiliary losses are needed. The forward KL
# needs samples from the teacher (sequential, slow) and the student's density at those samples, which for an IAF needs
# the sequential inverse; the reverse KL needs neither.
#
# **Rubric (2 points).** 1 point: reverse KL mode-seeking and forward KL mass-covering, with the measured figures.
# 1 point: a consequence for distillation (whispering / mode collapse, auxiliary losses) and why the forward KL is
# not used (teacher samples and student inverse are both sequential).

# %% [raw]
# # END SOLUTION

# %% [raw]
# # END QUESTION


# %% [raw]
# # BEGIN QUESTION
# name: q6
# manual: true
# points: 2

# %% [markdown]
# ## Question 6 (written, an open question of the source) · Density distillation outside audio
#
# Nothing in the KL estimator is about audio. `pwn_lib.toys.toy_distillation` trains a MAF teacher by maximum
# likelihood on two moons (2-D) and on a time series, then distils an IAF student from each by the reverse KL with
# the library's flows, and prints the exact KLs before and after (and, in 2-D, by quadrature on a grid). What
# carries over from audio, what does the exactness let you check that audio does not, and what would change for
# images or text?


# %%
toys = toy_distillation(fast=True)  # about 6 s on one core
for t in toys["tasks"]:
    print(t["task"], {k: t[k] for k in ("steps", "before", "after")}, t.get("grid_after", ""))

# %% [raw]
# # BEGIN SOLUTION

# %% [markdown]
# **Model answer (measured, 2 cores).** Everything carries over: a MAF teacher (density in one pass, sampling
# sequential) and an IAF student (sampling in one pass, its own density free) are notebook 01's pair, and the reverse
# KL needs only the student's samples and the teacher's density. Fast run: two moons from 8.35 to 0.33 nats per
# example in 300 steps (quadrature 0.30; forward KL 0.97 → 0.39), the series from 2.20 to 0.030 nats per step in
# 100 steps; the full run (1,500 and 600 steps): moons 8.28 → 0.18 (quadrature 0.16, JS 0.039), series 2.36 →
# 0.033. Exact densities make every divergence a number with an error bar, so estimators can be checked against
# quadrature, and the forward KL shows what the reverse KL hides: the student covers less of the moons than it
# fits (0.21 against 0.16). For images or text: images need a flow over a 2-D autoregressive order (PixelCNN-like
# teacher); discrete tokens have no reparameterised sample, so the continuous relaxation fails and one distils the
# per-step distributions instead (sequence-level KD).
#
# **Rubric (2 points).** 1 point: the measured before/after KLs, and that exact densities allow checking the
# estimate (quadrature, forward KL). 1 point: a correct limit elsewhere (discrete data has no reparameterised
# sample; the autoregressive order of the teacher must exist).

# %% [raw]
# # END SOLUTION

# %% [raw]
# # END QUESTION


# %% [raw]
# # BEGIN QUESTION
# name: q7
# manual: true
# points: 2

# %% [markdown]
# ## Question 7 (written, an open question of the source) · PDD against other ways of transferring knowledge
#
# Three ways to make a fast student from a slow teacher, at the same wall-clock budget
# (`pwn_lib.toys.transfer_comparison`): PDD (the reverse KL on the student's own samples), maximum likelihood of
# the student on teacher samples (the forward KL: it needs the teacher's sequential sampler and the IAF's sequential
# inverse), and regression of the student's output on the teacher's sample from the same noise. Compare cost and
# effect, and say which the paper's setting (a 24,000-step sequence) favours.


# %%
transfer = transfer_comparison(fast=True)  # about 13 s on one core (a 1.5 s and a 2 s budget per method)
for t in transfer["tasks"]:
    print(
        f"{t['task']:6s} {t['method']:13s} {t['steps_done']:4d} steps, {1000 * t['seconds_per_step']:7.1f} ms/step,"
        f" teacher sampling {t['teacher_sampling_share']:.0%}:"
        f" KL(S||T) {t['reverse_kl']:.3f}, KL(T||S) {t['forward_kl']:.3f}"
    )

# %% [raw]
# # BEGIN SOLUTION

# %% [markdown]
# **Model answer (measured, 2 cores; the steps done depend on the machine).** Full run (15 s for moons, 30 s
# for the 64-step series): on the series PDD made 1,442 steps at 21 ms and reached KL(S‖T) 0.027 / KL(T‖S) 0.032,
# regression only 149 steps (202 ms, 91 % of it sampling the teacher sequentially) and 0.084 / 0.094, maximum
# likelihood 24 steps (1,265 ms: the student's inverse is sequential too) and 0.400 / 0.269. In 2-D, where
# sequential means two steps, the costs are near each other and regression on shared noise even wins (0.078 /
# 0.063 against PDD's 0.159 / 0.182): copying a smooth deterministic map is easy when teacher samples are cheap. The
# fast run shows the same order on the series (PDD 0.029, regression 0.19, ML 0.24). Over a 24,000-step waveform
# every teacher sample costs 24,000 sequential steps, so only PDD, which never samples the teacher, stays cheap;
# that is the paper's reason for it.
#
# **Rubric (2 points).** 1 point: the cost difference measured (teacher sampling and the IAF inverse are
# sequential in the sequence length). 1 point: the effect at equal budget, including where another method wins
# (short sequences, cheap teacher samples) and why the paper's setting favours PDD.

# %% [raw]
# # END SOLUTION

# %% [raw]
# # END QUESTION
