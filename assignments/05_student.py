# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [raw]
# # ASSIGNMENT CONFIG
# name: 05_student
# init_cell: true
# check_all_cell: false
# export_cell: false
# solutions_pdf: false
# generate: true

# %% [markdown]
# # Assignment 05 · The IAF student: a stack of flows is one logistic per step
#
# Goes with notebook 05 (the IAF student) and section 3 of the paper. You collapse a stack of affine flows into
# the single per-step logistic `L(mu_tot, s_tot)` that distillation uses, then write the student's log-density
# of its own sample. The grader checks the collapse against applying the flows one by one, and the log-density
# against the change of variables with the full autograd Jacobian of the real `pwn_lib.student.IAFStudent`.
#
# **Points:** 6 autograded (questions 1–2) + 4 written (questions 3–4). **Time:** about 10 seconds to run on 2 CPU
# cores (fast and full mode are the same here). Run each `grader.check` cell to see the public tests; hidden tests
# are added at grading.

# %%
import dataclasses

import torch
import torch.nn.functional as F

from pwn_lib.config import STUDENT_PRESETS, seed_everything
from pwn_lib.flows import collapse_affine_steps
from pwn_lib.student import IAFStudent
from pwn_lib.toys import architecture_sweep

seed_everything(0)
torch.set_default_dtype(torch.float64)

# %% [markdown]
# ## Question 1 · Collapse the stack
#
# Flow `i` maps its input `x^(i-1)` to `x^(i) = x^(i-1) · s_i + mu_i`, with `x^(0) = z`, and (`mu_i`, `log s_i`)
# computed from the past of `x^(i-1)`. Write `collapse(steps)` for `steps`, a list of `(mu_i, log_s_i)` tensor
# pairs of one shape, in the order applied; return `(mu_tot, log_s_tot)` with `x^(n) = z · exp(log_s_tot) + mu_tot`.

# %% [raw]
# # BEGIN QUESTION
# name: q1
# points: 3

# %% [raw]
# # BEGIN SOLUTION


# %%
def collapse(steps):
    # BEGIN SOLUTION
    mu_tot, log_s_tot = torch.zeros_like(steps[0][0]), torch.zeros_like(steps[0][1])
    for mu, log_s in steps:
        mu_tot = mu_tot * torch.exp(log_s) + mu
        log_s_tot = log_s_tot + log_s
    return mu_tot, log_s_tot
    # END SOLUTION


# %% [raw]
# # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
""" # BEGIN TEST CONFIG
points: 1
"""  # END TEST CONFIG
mu, log_s = torch.tensor([0.5]), torch.tensor([0.3])
mu_tot, log_s_tot = collapse([(mu, log_s)])
assert torch.allclose(mu_tot, mu) and torch.allclose(log_s_tot, log_s), "one flow is its own collapse"
shift_by_1 = (torch.tensor([1.0]), torch.tensor([0.0]))
scale_by_2 = (torch.tensor([0.0]), torch.log(torch.tensor([2.0])))
mu_tot, log_s_tot = collapse([shift_by_1, scale_by_2])
assert torch.allclose(mu_tot, torch.tensor([2.0])), "shift by 1, then scale by 2: the shift is scaled too"

# %%
""" # BEGIN TEST CONFIG
points: 2
hidden: true
"""  # END TEST CONFIG
_ = torch.manual_seed(9)
steps = [(torch.randn(3, 7), torch.randn(3, 7) * 0.5) for _ in range(4)]
z = torch.randn(3, 7)
x = z.clone()
for mu, log_s in steps:
    x = x * torch.exp(log_s) + mu

mu_tot, log_s_tot = collapse(steps)
assert torch.allclose(z * torch.exp(log_s_tot) + mu_tot, x, atol=1e-12)
assert all(torch.allclose(a, b) for a, b in zip(collapse(steps), collapse_affine_steps(steps), strict=True))

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION

# %% [markdown]
# ## Question 2 · The student scores its own sample
#
# The student draws `z_t ~ Logistic(0, 1)` and computes `x, mu_tot, log_s_tot = student(z, c)`, each `(B, 1, T)`.
# Given `z_<t`, `x_t` is the logistic `L(mu_tot_t, s_tot_t)`, so by the change of variables
# `log p_S(x) = Σ_t [log p_z(z_t) − log s_tot_t]`, with the standard logistic's `log p_z(z) = −z − 2·softplus(−z)`.
# Write `student_log_prob(z, log_s_tot)` returning `(B,)`: the log-density of each row's whole sample, in nats.
# No inverse and no Jacobian is needed: this is why the student's entropy is free.

# %% [raw]
# # BEGIN QUESTION
# name: q2
# points: 3

# %% [raw]
# # BEGIN SOLUTION


# %%
def student_log_prob(z, log_s_tot):
    # BEGIN SOLUTION
    log_pz = -z - 2.0 * F.softplus(-z)
    return (log_pz - log_s_tot).flatten(1).sum(dim=1)
    # END SOLUTION


# %% [raw]
# # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
""" # BEGIN TEST CONFIG
points: 1
"""  # END TEST CONFIG
lp = student_log_prob(torch.zeros(2, 1, 5), torch.zeros(2, 1, 5))
assert lp.shape == (2,), "one log-density per batch row"
assert torch.allclose(lp, torch.full((2,), 5 * torch.log(torch.tensor(0.25)).item())), "p_z(0) = 1/4 per step"
lp = student_log_prob(torch.zeros(1, 1, 1), torch.log(torch.full((1, 1, 1), 2.0)))
assert torch.allclose(lp, torch.log(torch.tensor([0.125]))), "a scale of 2 spreads the density: p_x = p_z / 2"

# %%
""" # BEGIN TEST CONFIG
points: 2
hidden: true
"""  # END TEST CONFIG
_ = torch.manual_seed(10)
cfg = dataclasses.replace(STUDENT_PRESETS["tiny"], cond_channels=0)
student = IAFStudent(cfg)
with torch.no_grad():
    for p in student.parameters():
        _ = p.add_(0.2 * torch.randn_like(p))

z = torch.distributions.Uniform(1e-6, 1 - 1e-6).sample((1, 1, 12)).logit()
x, mu_tot, log_s_tot = student(z)
jac = torch.autograd.functional.jacobian(lambda v: student(v.view(1, 1, 12))[0].view(12), z.view(12))
assert torch.allclose(jac, torch.tril(jac)), "the real student is autoregressive in z"
logistic_noise = torch.distributions.TransformedDistribution(
    torch.distributions.Uniform(0.0, 1.0), [torch.distributions.SigmoidTransform().inv]
)
log_pz = logistic_noise.log_prob(z).sum()
expected = log_pz - torch.linalg.slogdet(jac).logabsdet
assert torch.allclose(student_log_prob(z, log_s_tot), expected.view(1), atol=1e-9)

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION

# %% [raw]
# # BEGIN QUESTION
# name: q3
# manual: true
# points: 2

# %% [markdown]
# ## Question 3 (written) · The one-step shift
#
# Each flow computes (`mu_t`, `s_t`) with a causal WaveNet over its input **shifted right by one step**, so they
# depend on `z_<t` only. Suppose the shift is left out, so `mu_t` and `s_t` also read `z_t`. Which of your two
# answers above breaks, and why? What would the hidden test's Jacobian look like, and what would the student's
# training then optimise instead of its true log-density?

# %% [raw]
# # BEGIN SOLUTION

# %% [markdown]
# **Model answer.** Without the shift `x_t = z_t · s_t(z_≤t) + mu_t(z_≤t)` is no longer affine in `z_t`: its
# derivative is `s_t + z_t ∂s_t/∂z_t + ∂mu_t/∂z_t`, not `s_t`. The collapse (question 1) is still algebra, but
# question 2 breaks: `x_t` given `z_<t` is no longer the logistic `L(mu_tot, s_tot)`, and `Σ log s_tot` is no longer
# the log-determinant. The Jacobian stays lower-triangular (still causal), but its diagonal differs from
# `s_tot`, and the map may not even be invertible (the diagonal can cross zero). Training would use a wrong
# entropy, `Σ log s_tot` instead of `Σ log |∂x_t/∂z_t|`, so the student could shrink `s_tot` to gain "entropy" it
# does not have, and the KL it reports is not a KL. Two public reproductions made exactly this mistake.
#
# **Rubric (2 points).** 1 point: the per-step logistic / log-det of question 2 breaks because `x_t` is no longer
# affine in `z_t` with slope `s_t`. 1 point: the diagonal of the Jacobian no longer equals `s_tot` (so the entropy
# term, and with it the KL, is wrong).

# %% [raw]
# # END SOLUTION

# %% [raw]
# # END QUESTION


# %% [raw]
# # BEGIN QUESTION
# name: q4
# manual: true
# points: 2

# %% [markdown]
# ## Question 4 (written, an open question of the source) · How does the student's architecture matter?
#
# Outside audio every density is exact, so the question can be measured. `pwn_lib.toys.architecture_sweep`
# distils IAF students of different sizes from one MAF teacher of a time series whose step t depends on step t − 8,
# all for the same number of steps, and prints the exact reverse and forward KL per time step. Which of flows,
# channels and receptive field matters, and why? What does it say about the paper's student (four flows, each a
# WaveNet of receptive field far beyond a pitch period)?


# %%
sweep = architecture_sweep(fast=True)  # about 10 s on one core; fast=False is the full sweep (7 min)
print(f"teacher NLL {sweep['teacher_nll_per_step']:.3f} nats/step, entropy rate {sweep['entropy_rate']:.3f}")
for r in sweep["rows"]:
    print(
        f"flows {r['flows']} channels {r['channels']:2d} layers {r['layers']}"
        f" receptive field {r['receptive_field']:2d}:"
        f" KL(S||T) {r['reverse_kl']:.3f} +- {r['reverse_kl_se']:.3f}, KL(T||S) {r['forward_kl']:.3f},"
        f" {1000 * r['seconds_per_step']:.1f} ms/step"
    )

# %% [raw]
# # BEGIN SOLUTION

# %% [markdown]
# **Model answer (measured, 2 cores).** The receptive field of a single flow's conditioner decides it. In the full
# sweep (400 steps, `scripts/beyond_toys.py`, `data/beyond/toys.json`) every student whose one flow sees fewer than
# 8 steps stays at KL(S‖T) 0.176–0.189 nats/step whatever its channels (8 or 32) or flows (1, 2 or 4), while one
# flow of receptive field 8 drops to 0.097, 16 to 0.055–0.058 and 32 to 0.034–0.041; four channels-8 flows of
# receptive field 32 do best (0.034), and quadrupling channels buys nothing (0.041) at 2–3x the cost per step.
# Stacking shallow flows does not add their reach in practice: four one-layer flows (a nominal reach of 8) sit at
# 0.189. The fast run shows the same order at 60 steps (0.17–0.18 below, 0.063 at receptive field 32). So the
# student must see as far back as the data's dependencies reach, inside each flow: for speech, a pitch period
# (2.5–12.5 ms, 40–200 samples at 16 kHz), which the paper's flows of 10–30 layers cover; width is the cheap lever.
#
# **Rubric (2 points).** 1 point: the receptive field (per flow) decides, with the measured figures (flat
# below the lag, falling above). 1 point: channels and more shallow flows do not substitute for it, and the
# consequence for an audio student (cover a pitch period).

# %% [raw]
# # END SOLUTION

# %% [raw]
# # END QUESTION
