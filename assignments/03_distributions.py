# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [raw]
# # ASSIGNMENT CONFIG
# name: 03_distributions
# init_cell: true
# check_all_cell: false
# export_cell: false
# solutions_pdf: false
# generate: true

# %% [markdown]
# # Assignment 03 · The 16-bit discretized mixture of logistics
#
# Goes with notebook 03 (output distributions) and section 2.1 of the paper. You quantise audio onto the 16-bit
# grid, write the log-probability of one discretized logistic with its exact edge bins, then the mixture. The
# grader checks them against a float64 reference, against `pwn_lib.distributions.DiscretizedMixLogistics`, and
# checks that the 65,536 bin masses sum to one.
#
# **Points:** 8 autograded (questions 1–3) + 2 written (question 4). **Time:** about 10 seconds to run on 2 CPU
# cores (fast and full mode are the same here). Run each `grader.check` cell to see the public tests; hidden tests
# are added at grading.
#
# Audio in `[-1, 1]` with `b` bits lives on `2^b` bin centres `c_k = k·Δ − 1`, `Δ = 2 / (2^b − 1)`. A logistic
# `L(μ, s)` gives bin `k` the mass `σ((c_k + Δ/2 − μ)/s) − σ((c_k − Δ/2 − μ)/s)`, except the first bin, which takes
# everything below its upper edge, `σ((c_0 + Δ/2 − μ)/s)`, and the last, which takes everything above its lower
# edge, `1 − σ((c_last − Δ/2 − μ)/s)`.

# %%
import math

import torch

from pwn_lib.config import seed_everything
from pwn_lib.distributions import DiscretizedMixLogistics, bin_centres

seed_everything(0)
torch.set_default_dtype(torch.float64)

# %% [markdown]
# ## Question 1 · Quantise onto the grid
#
# Write `quantize(x, bits)` returning the integer bin index `k` (a `torch.long` tensor, the shape of `x`) of the
# nearest centre; values beyond `[-1, 1]` go to the edge bins.

# %% [raw]
# # BEGIN QUESTION
# name: q1
# points: 2

# %% [raw]
# # BEGIN SOLUTION


# %%
def quantize(x, bits):
    # BEGIN SOLUTION
    delta = 2.0 / (2**bits - 1)
    return torch.round((x + 1.0) / delta).clamp(0, 2**bits - 1).long()
    # END SOLUTION


# %% [raw]
# # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
""" # BEGIN TEST CONFIG
points: 1
"""  # END TEST CONFIG
k = quantize(torch.tensor([-1.0, 0.0, 1.0, 1.5]), bits=2)
assert k.dtype == torch.long and k.tolist() == [0, 2, 3, 3], "2 bits: centres -1, -1/3, 1/3, 1"

# %%
""" # BEGIN TEST CONFIG
points: 1
hidden: true
"""  # END TEST CONFIG
centres = bin_centres(16, torch.float64)
k = torch.randint(0, 2**16, (1000,))
wobble = (torch.rand(1000) - 0.5) * 0.98 * (2 / (2**16 - 1))
assert torch.equal(quantize(centres[k] + wobble, 16), k)

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION

# %% [markdown]
# ## Question 2 · One discretized logistic
#
# Write `logistic_bin_log_prob(x, mu, log_s, bits)`: the log mass of the bin holding each `x` under `L(mu, s)`,
# `s = exp(log_s)`, all four tensors of one shape, with the exact edge bins above. Work in float64 (a 16-bit bin is
# 3·10⁻⁵ wide); `torch.sigmoid` and `torch.log` are enough, with one care: above the mean, far in the tail, both
# sigmoids round to 1 and their difference to 0. Since `σ(a) − σ(b) = σ(−b) − σ(−a)`, compute a bin above the mean
# from the mirrored form (and the last bin's `1 − σ(b)` as `σ(−b)`). The hidden tests go 250 scales into the tails.

# %% [raw]
# # BEGIN QUESTION
# name: q2
# points: 4

# %% [raw]
# # BEGIN SOLUTION


# %%
def logistic_bin_log_prob(x, mu, log_s, bits):
    # BEGIN SOLUTION
    delta = 2.0 / (2**bits - 1)
    k = quantize(x, bits)
    centre = k * delta - 1.0
    s = torch.exp(log_s)
    a, b = (centre + delta / 2 - mu) / s, (centre - delta / 2 - mu) / s  # standardised upper and lower edges
    inner = torch.where(centre > mu, torch.sigmoid(-b) - torch.sigmoid(-a), torch.sigmoid(a) - torch.sigmoid(b))
    mass = torch.where(k == 0, torch.sigmoid(a), torch.where(k == 2**bits - 1, torch.sigmoid(-b), inner))
    return torch.log(mass)
    # END SOLUTION


# %% [raw]
# # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
""" # BEGIN TEST CONFIG
points: 1
"""  # END TEST CONFIG
x = bin_centres(8, torch.float64)
logp = logistic_bin_log_prob(x, torch.full_like(x, 0.3), torch.full_like(x, -2.0), bits=8)
assert logp.shape == (256,) and torch.isfinite(logp).all()
assert abs(float(logp.exp().sum()) - 1.0) < 1e-12, "the 256 masses must sum to exactly one"

# %%
""" # BEGIN TEST CONFIG
points: 2
hidden: true
"""  # END TEST CONFIG
_ = torch.manual_seed(6)
x = torch.cat([torch.rand(200) * 2 - 1, torch.tensor([-1.0, 1.0, -1.2, 0.0])])
mu, log_s = torch.rand(204) * 1.6 - 0.8, torch.rand(204) * 3 - 5
reference = DiscretizedMixLogistics(torch.stack([torch.zeros(204), mu, log_s]).view(1, 3, 204)).log_prob(x.view(1, -1))
assert torch.allclose(logistic_bin_log_prob(x, mu, log_s, 16), reference.view(-1), atol=1e-6)

# %%
""" # BEGIN TEST CONFIG
points: 1
hidden: true
"""  # END TEST CONFIG
x = bin_centres(16, torch.float64)
logp = logistic_bin_log_prob(x, torch.full_like(x, 0.95), torch.full_like(x, -3.0), 16)
assert abs(float(logp.exp().sum()) - 1.0) < 1e-9, "the last bin must take the tail above 1"
low_edge = math.log(1 / (1 + math.exp(-((-1 + 1 / (2**16 - 1)) - 0.95) / math.exp(-3.0))))
assert abs(float(logp[0]) - low_edge) < 1e-9, "the first bin takes everything below its upper edge"

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION

# %% [markdown]
# ## Question 3 · The mixture
#
# A mixture of `K` logistics with weights `π = softmax(logits)` gives each bin `Σ_i π_i · mass_i`. Write
# `mixture_log_prob(x, logits, mu, log_s, bits)` for `x` of shape `(N,)` and the other three of shape `(K, N)`,
# returning `(N,)` log masses. Stay in log space (`torch.log_softmax`, `torch.logsumexp`): a weight of 10⁻³⁰⁰
# must not turn into zero.

# %% [raw]
# # BEGIN QUESTION
# name: q3
# points: 2

# %% [raw]
# # BEGIN SOLUTION


# %%
def mixture_log_prob(x, logits, mu, log_s, bits):
    # BEGIN SOLUTION
    components = logistic_bin_log_prob(x.expand_as(mu), mu, log_s, bits)
    return torch.logsumexp(torch.log_softmax(logits, dim=0) + components, dim=0)
    # END SOLUTION


# %% [raw]
# # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
""" # BEGIN TEST CONFIG
points: 1
"""  # END TEST CONFIG
x = torch.tensor([0.0, 0.5])
one = logistic_bin_log_prob(x, torch.zeros(2), torch.full((2,), -3.0), 16)
two = mixture_log_prob(x, torch.zeros(2, 2), torch.zeros(2, 2), torch.full((2, 2), -3.0), 16)
assert two.shape == (2,) and torch.allclose(one, two), "two equal components are one component"

# %%
""" # BEGIN TEST CONFIG
points: 1
hidden: true
"""  # END TEST CONFIG
_ = torch.manual_seed(8)
K, N = 4, 300
logits, mu, log_s = torch.randn(K, N) * 3, torch.rand(K, N) * 1.6 - 0.8, torch.rand(K, N) * 3 - 5
x = torch.rand(N) * 2 - 1
reference = DiscretizedMixLogistics(torch.cat([logits, mu, log_s]).unsqueeze(0)).log_prob(x.view(1, -1))
assert torch.allclose(mixture_log_prob(x, logits, mu, log_s, 16), reference.view(-1), atol=1e-6)

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
# ## Question 4 (written) · Why not a 65,536-way softmax?
#
# The original WaveNet modelled 8-bit μ-law audio with a 256-way softmax. Parallel WaveNet models 16-bit audio with
# a mixture of 10 logistics. Give two reasons, with numbers, why a softmax over all 65,536 values of 16-bit audio
# is a poor choice, and say what the edge bins of your `logistic_bin_log_prob` are for.

# %% [raw]
# # BEGIN SOLUTION

# %% [markdown]
# **Model answer.** (1) Cost: the output layer maps S skip channels to 65,536 logits per sample; with S = 256 that
# is 16.8 M weights and 16.8 M multiply-adds per sample, more than the rest of the network, and one training batch
# of 8 × 8,000 samples holds 4.2 G logits (17 GB in float32) before their gradients. A mixture of 10 logistics needs
# 30 outputs per sample. (2) Data: a softmax treats the values as unordered classes, so each needs its own
# evidence; in 20 minutes of speech about a third of the 65,536 values never occur and their logits never learn,
# while a MoL's bins come from a smooth CDF, so neighbouring values share evidence. The edge bins absorb all the
# logistic's mass beyond the grid (below c_0 + Δ/2 and above c_last − Δ/2), so the 65,536 masses sum to exactly one
# for any μ and s; without them mass would leak and the loss would not be a log-likelihood.
#
# **Rubric (2 points).** 1 point: one quantitative cost or data argument (output-layer size or logits memory, or
# unseen classes / no ordinal sharing), with a number. 1 point: the edge bins make the pmf normalised (tails
# beyond ±1 go into the first and last bins).

# %% [raw]
# # END SOLUTION

# %% [raw]
# # END QUESTION
