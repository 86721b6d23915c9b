# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [raw]
# # ASSIGNMENT CONFIG
# name: 01_flows
# init_cell: true
# check_all_cell: false
# export_cell: false
# solutions_pdf: false
# generate: true

# %% [markdown]
# # Assignment 01 · The IAF step and its log-determinant
#
# Goes with notebook 01 (normalizing flows) and section 3 of the paper. You write the affine step of an inverse
# autoregressive flow (IAF), its log-determinant, and its sequential inverse; the grader checks them against
# PyTorch's autograd Jacobian in float64 and against the library's `pwn_lib.flows.MADE` conditioner.
#
# **Points:** 8 autograded (questions 1–3) + 2 written (question 4). **Time:** about 1 minute to run in fast mode on
# 2 CPU cores. Run each `grader.check` cell to see the public tests; hidden tests are added at grading.

# %%
import torch

from pwn_lib.config import seed_everything
from pwn_lib.flows import MADE

seed_everything(0)
torch.set_default_dtype(torch.float64)  # the checks compare with autograd Jacobians in float64

# %% [markdown]
# ## Question 1 · The affine step
#
# An IAF step maps noise `z` to `x = z · exp(log_s) + mu`, elementwise. Write `affine_step(z, mu, log_s)` for
# tensors of shape `(B, D)`, returning `x` of shape `(B, D)` and `log_det`, the log-absolute-determinant of
# `dx/dz` for each row, of shape `(B,)` (here `mu` and `log_s` do not depend on `z`).

# %% [raw]
# # BEGIN QUESTION
# name: q1
# points: 3

# %% [raw]
# # BEGIN SOLUTION


# %%
def affine_step(z, mu, log_s):
    # BEGIN SOLUTION
    x = z * torch.exp(log_s) + mu
    log_det = log_s.sum(dim=-1)
    # END SOLUTION
    return x, log_det


# %% [raw]
# # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
""" # BEGIN TEST CONFIG
points: 1
"""  # END TEST CONFIG
x, log_det = affine_step(torch.ones(2, 3), torch.zeros(2, 3), torch.zeros(2, 3))
assert x.shape == (2, 3) and log_det.shape == (2,), "x is (B, D) and log_det is (B,)"
assert torch.allclose(x, torch.ones(2, 3)) and torch.allclose(log_det, torch.zeros(2))

# %%
""" # BEGIN TEST CONFIG
points: 2
hidden: true
"""  # END TEST CONFIG
g = torch.Generator().manual_seed(11)
z, mu, log_s = (torch.randn(1, 5, generator=g) for _ in range(3))
jac = torch.autograd.functional.jacobian(lambda v: affine_step(v, mu, log_s)[0], z)[0, :, 0, :]
assert torch.allclose(affine_step(z, mu, log_s)[1], torch.linalg.slogdet(jac).logabsdet, atol=1e-10)
assert torch.allclose(affine_step(z, mu, log_s)[0], z * log_s.exp() + mu)

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION

# %% [markdown]
# ## Question 2 · One IAF step with an autoregressive conditioner
#
# In an IAF, `mu` and `log_s` come from a network that reads the noise: `mu_i, log_s_i = f(z_<i)`. Write
# `iaf_forward(made, z)` that computes them with `made(z)` (a `pwn_lib.flows.MADE`, whose output `i` reads only
# `z_<i`), then applies your affine step. The whole map `z -> x` now has a triangular Jacobian: say to yourself
# why `log_det` is still the sum of `log_s`.

# %% [raw]
# # BEGIN QUESTION
# name: q2
# points: 3

# %% [raw]
# # BEGIN SOLUTION


# %%
def iaf_forward(made, z):
    # BEGIN SOLUTION
    mu, log_s = made(z)
    return affine_step(z, mu, log_s)
    # END SOLUTION


# %% [raw]
# # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
""" # BEGIN TEST CONFIG
points: 1
"""  # END TEST CONFIG
made = MADE(4, hidden=16)
_ = torch.nn.init.normal_(made.out.weight, std=0.5)
z = torch.randn(3, 4)
mu, log_s = made(z)
x, log_det = iaf_forward(made, z)
assert torch.allclose(x, z * log_s.exp() + mu) and torch.allclose(log_det, log_s.sum(-1))

# %%
""" # BEGIN TEST CONFIG
points: 2
hidden: true
"""  # END TEST CONFIG
_ = torch.manual_seed(5)
made = MADE(6, hidden=32)
_ = torch.nn.init.normal_(made.out.weight, std=0.5)
_ = torch.nn.init.normal_(made.out.bias, std=0.5)
z = torch.randn(1, 6)
jac = torch.autograd.functional.jacobian(lambda v: iaf_forward(made, v)[0], z)[0, :, 0, :]
assert torch.allclose(jac, torch.tril(jac)), "x_i must not depend on z_j for j > i"
assert torch.allclose(iaf_forward(made, z)[1], torch.linalg.slogdet(jac).logabsdet, atol=1e-10)

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION

# %% [markdown]
# ## Question 3 · Scoring data needs the inverse, one dimension at a time
#
# To score an `x` the flow did not draw, you need `z = T^{-1}(x)`. Since `mu_i` and `log_s_i` depend on `z_<i`,
# `z` has to be recovered in order: `z_i = (x_i - mu_i) · exp(-log_s_i)`, calling `made` once per dimension.
# Write `iaf_inverse(made, x)` returning `z` of shape `(B, D)`.

# %% [raw]
# # BEGIN QUESTION
# name: q3
# points: 2

# %% [raw]
# # BEGIN SOLUTION


# %%
def iaf_inverse(made, x):
    # BEGIN SOLUTION
    z = torch.zeros_like(x)
    for i in range(x.shape[-1]):
        mu, log_s = made(z)
        z[:, i] = (x[:, i] - mu[:, i]) * torch.exp(-log_s[:, i])
    return z
    # END SOLUTION


# %% [raw]
# # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
""" # BEGIN TEST CONFIG
points: 1
"""  # END TEST CONFIG
made = MADE(3, hidden=8)
x = torch.randn(2, 3)
assert torch.allclose(iaf_inverse(made, x), x), "a MADE with zero output weights is the identity flow"

# %%
""" # BEGIN TEST CONFIG
points: 1
hidden: true
"""  # END TEST CONFIG
_ = torch.manual_seed(7)
made = MADE(5, hidden=32)
_ = torch.nn.init.normal_(made.out.weight, std=0.5)
z = torch.randn(4, 5)
assert torch.allclose(iaf_inverse(made, iaf_forward(made, z)[0]), z, atol=1e-10)

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
# ## Question 4 (written) · Why the student can be trained at all
#
# Your `iaf_forward` is one parallel pass and your `iaf_inverse` needs `D` passes. In probability density
# distillation the student is an IAF and the teacher is an autoregressive WaveNet. Which of the two directions does
# the distillation loss need from the student, and which from the teacher? Why is that the cheap combination?

# %% [raw]
# # BEGIN SOLUTION

# %% [markdown]
# **Model answer.** The loss is an expectation over the student's own samples, x = T(z) with z drawn from logistic
# noise. The student only needs the forward direction: its sample and its log-density log p_S(x) = log p(z) −
# Σ log s come from the same single parallel pass, with no inverse. The teacher must score those samples, log
# p_T(x), and an autoregressive model scores given data in one parallel, teacher-forced pass (its slow direction is
# sampling). So both models run in their fast direction; the forward KL would need the student's inverse (D
# sequential passes) on the teacher's samples (T sequential steps), the slow direction of both.
#
# **Rubric (2 points).** 1 point: the student samples and scores its own samples in one pass (forward direction
# only, log-det from the same pass). 1 point: the teacher scores in parallel (teacher forcing), and the
# combination avoids both sequential directions (or names the forward KL as the expensive alternative).

# %% [raw]
# # END SOLUTION

# %% [raw]
# # END QUESTION
