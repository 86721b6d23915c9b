# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [raw]
# # ASSIGNMENT CONFIG
# name: 04_teacher
# init_cell: true
# check_all_cell: false
# export_cell: false
# solutions_pdf: false
# generate: true

# %% [markdown]
# # Assignment 04 · The teacher: likelihood in bits, and ancestral sampling
#
# Goes with notebook 04 (training the teacher) and section 2 of the paper. You turn the teacher-forced negative
# log-likelihood into bits per sample, then write ancestral sampling the slow way, one full forward pass per
# sample. The grader checks your sampler against the library's queue-cached `WaveNet.generate`: with the same
# random generator, the two must draw the very same audio.
#
# **Points:** 6 autograded (questions 1–2) + 2 written (question 3). **Time:** about 15 seconds to run on 2 CPU
# cores (fast and full mode are the same here: a tiny random teacher; notebook 04 trains a real one). Run each
# `grader.check` cell to see the public tests; hidden tests are added at grading.

# %%
import dataclasses
import math

import torch

from pwn_lib.config import TEACHER_PRESETS, seed_everything
from pwn_lib.wavenet import WaveNet

seed_everything(0)
torch.set_default_dtype(torch.float64)  # float64: the slow and the cached sampler agree to the last bit
# A random tiny teacher (4 layers, receptive field 13 samples) on 8 mel channels, one frame per 16 samples, so
# that the slow sampler below finishes in a second; the real teacher of notebook 04 is the same class.
cfg = dataclasses.replace(TEACHER_PRESETS["tiny"], hop_length=16, cond_channels=8, log_mel_mean=-5.0, log_mel_std=2.0)
teacher = WaveNet(cfg).eval()
mel = torch.randn(1, cfg.cond_channels, 6) * 2.0 - 5.0  # six frames: 96 samples to generate

# %% [markdown]
# ## Question 1 · Bits per sample
#
# `teacher(x, c)` returns the output distribution's parameters `(B, 3K, T)` for audio `x` of shape `(B, 1, T)`,
# teacher-forced: position `t` sees `x[..., :t]` only. `teacher.distribution(params).log_prob(x[:, 0])` gives
# `log p(x_t | x_<t, c)` in nats, `(B, T)`. Write `bits_per_sample(model, x, c)`: the mean negative
# log-likelihood over all samples, in **bits** (a Python float). 16-bit audio that the model knew nothing about
# would cost 16 bits per sample.

# %% [raw]
# # BEGIN QUESTION
# name: q1
# points: 2

# %% [raw]
# # BEGIN SOLUTION


# %%
def bits_per_sample(model, x, c):
    # BEGIN SOLUTION
    with torch.no_grad():
        log_p = model.distribution(model(x, c)).log_prob(x[:, 0])
    return float(-log_p.mean() / math.log(2.0))
    # END SOLUTION


# %% [raw]
# # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
""" # BEGIN TEST CONFIG
points: 1
"""  # END TEST CONFIG
x = torch.rand(1, 1, 96) * 0.2 - 0.1
bits = bits_per_sample(teacher, x, mel)
assert isinstance(bits, float) and 0 < bits < 30, f"{bits} bits per sample"

# %%
""" # BEGIN TEST CONFIG
points: 1
hidden: true
"""  # END TEST CONFIG
x = torch.rand(2, 1, 96) * 0.2 - 0.1
c = torch.randn(2, cfg.cond_channels, 6) - 5.0
with torch.no_grad():
    nats = float(teacher.loss(x, c))

assert abs(bits_per_sample(teacher, x, c) - nats / math.log(2)) < 1e-9

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION

# %% [markdown]
# ## Question 2 · Ancestral sampling, the slow way
#
# Write `sample_slowly(model, c, generator)`: start from `x = 0` of shape `(B, 1, T)`, `T = frames × hop_length`,
# and for each `t` in order run the **whole** teacher on `x`, take the parameters at position `t`, draw
# `x_t` with `model.distribution(params[..., t : t + 1]).sample(generator=generator)` (shape `(B, 1)`), and write
# it into `x`. Return `x`. Because position `t` only sees `x[..., :t]`, the zeros not yet filled in never matter.
# Draw exactly one sample per step from `generator`, in order: the grader replays the same generator through
# `model.generate`, which keeps one queue per layer and does O(layers) work per sample instead of a whole pass.

# %% [raw]
# # BEGIN QUESTION
# name: q2
# points: 4

# %% [raw]
# # BEGIN SOLUTION


# %%
def sample_slowly(model, c, generator):
    # BEGIN SOLUTION
    x = torch.zeros(c.shape[0], 1, c.shape[-1] * model.cfg.hop_length)
    with torch.no_grad():
        for t in range(x.shape[-1]):
            params = model(x, c)[..., t : t + 1]
            x[:, :, t] = model.distribution(params).sample(generator=generator)
    return x
    # END SOLUTION


# %% [raw]
# # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
""" # BEGIN TEST CONFIG
points: 1
"""  # END TEST CONFIG
x = sample_slowly(teacher, mel, torch.Generator().manual_seed(0))
assert x.shape == (1, 1, 96), "six frames of 16 samples"
assert x.abs().max() <= 1 and x.std() > 0, "audio in [-1, 1], not all zeros"

# %%
""" # BEGIN TEST CONFIG
points: 3
hidden: true
"""  # END TEST CONFIG
c = torch.randn(2, cfg.cond_channels, 6) - 5.0
slow = sample_slowly(teacher, c, torch.Generator().manual_seed(7))
fast = teacher.generate(c, generator=torch.Generator().manual_seed(7), progress=False)
assert torch.equal(slow, fast), "the same generator must give the same audio as the cached sampler"

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
# ## Question 3 (written) · Why a low NLL is not yet good speech
#
# Time `sample_slowly` against `teacher.generate` on the same mel and give the ratio. Then answer: training and
# `bits_per_sample` see real audio in every position (teacher forcing), but sampling feeds the model its own
# draws. Why can a teacher with a good held-out NLL still generate noisy, drifting audio, and what does sampling at
# a temperature below 1 (notebook 04) do about it, at what price?

# %% [raw]
# # BEGIN SOLUTION

# %% [markdown]
# **Model answer.** Measured on 2 cores for these 96 samples: 0.18 s for the slow sampler against 0.07 s for the
# cached one, a ratio of about 2.5, which grows with the length (the slow one reruns a pass over all T samples at each
# step, so its total cost grows as T², the cached one's as T) and with the receptive field. Teacher forcing trains
# each step's distribution on real pasts only; at sampling time every draw is a little off the data, and the next step
# conditions on that draw, so errors compound (exposure bias): broad per-step distributions add noise in every sample,
# which the model then takes as signal. The NLL averages log-probabilities and rewards broad distributions that cover
# the data; it does not measure how the model behaves on its own outputs. A temperature below 1 narrows each step's
# logistic, so fewer wild draws are fed back (cleaner voicing, less hiss); the price is a distribution that no longer
# matches the data (duller, over-smoothed audio, and at low temperatures buzz or silence), which the course measures
# as a worse MCD and PER below about 0.6.
#
# **Rubric (2 points).** 1 point: a measured ratio and the reason (a whole pass per sample against queues).
# 1 point: exposure bias (own draws fed back, errors compound; NLL measured on real pasts) and the temperature's
# trade-off (less noise fed back, at the cost of matching the data).

# %% [raw]
# # END SOLUTION

# %% [raw]
# # END QUESTION
