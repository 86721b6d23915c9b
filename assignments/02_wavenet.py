# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [raw]
# # ASSIGNMENT CONFIG
# name: 02_wavenet
# init_cell: true
# check_all_cell: false
# export_cell: false
# solutions_pdf: false
# generate: true

# %% [markdown]
# # Assignment 02 · Causal dilated convolutions, the receptive field, and cached generation
#
# Goes with notebook 02 (WaveNet) and section 2 of the paper. You write a causal dilated convolution, the
# receptive-field formula, and one step of the queue-cached convolution that makes generation cost the same per
# sample. The grader checks them against `pwn_lib.layers.CausalConv1d`, by perturbing future inputs, by measuring
# the receptive field with gradients, and against the full teacher-forced pass.
#
# **Points:** 8 autograded (questions 1–3) + 2 written (question 4). **Time:** about 10 seconds to run on 2 CPU
# cores (fast and full mode are the same here). Run each `grader.check` cell to see the public tests; hidden tests
# are added at grading.

# %%
import torch
import torch.nn.functional as F

from pwn_lib.config import seed_everything
from pwn_lib.layers import CausalConv1d

seed_everything(0)
torch.set_default_dtype(torch.float64)  # exact comparisons with the library's layers

# %% [markdown]
# ## Question 1 · A causal dilated convolution
#
# Write `causal_conv(x, weight, bias, dilation)` for `x` of shape `(B, C_in, T)`, `weight` of shape
# `(C_out, C_in, k)` and `bias` of shape `(C_out,)`. It returns `(B, C_out, T)`, the same length as the input, and
# output `t` may read only `x[..., t - (k-1)·dilation], ..., x[..., t - dilation], x[..., t]`. Hint: pad on the left.

# %% [raw]
# # BEGIN QUESTION
# name: q1
# points: 3

# %% [raw]
# # BEGIN SOLUTION


# %%
def causal_conv(x, weight, bias, dilation):
    # BEGIN SOLUTION
    left = (weight.shape[-1] - 1) * dilation
    return F.conv1d(F.pad(x, (left, 0)), weight, bias, dilation=dilation)
    # END SOLUTION


# %% [raw]
# # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
""" # BEGIN TEST CONFIG
points: 1
"""  # END TEST CONFIG
x = torch.arange(6.0).view(1, 1, 6)
y = causal_conv(x, torch.tensor([[[1.0, 0.0]]]), torch.zeros(1), dilation=2)
assert y.shape == (1, 1, 6), "the output has the input's length"
assert torch.equal(y.view(-1), torch.tensor([0.0, 0.0, 0.0, 1.0, 2.0, 3.0])), "weight [1, 0] reads x[t - dilation]"

# %%
""" # BEGIN TEST CONFIG
points: 2
hidden: true
"""  # END TEST CONFIG
_ = torch.manual_seed(3)
layer = CausalConv1d(3, 4, kernel_size=3, dilation=4)
x = torch.randn(2, 3, 40)
assert torch.allclose(causal_conv(x, layer.weight, layer.bias, 4), layer(x), atol=1e-12)
later = x.clone()
later[..., 25:] += torch.randn_like(later[..., 25:])
before, after = (causal_conv(v, layer.weight, layer.bias, 4)[..., :25] for v in (x, later))
assert torch.equal(before, after), "an output must not read future inputs"

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION

# %% [markdown]
# ## Question 2 · The receptive field
#
# A stack of causal convolutions of width `k` with dilations `d_1, ..., d_L` makes output `t` depend on a window of
# past inputs. Write `receptive_field(kernel_size, dilations)` returning the window's length in samples (the
# number of inputs one output depends on). Check yourself: for `k = 2` and dilations `1, 2, 4, 8` it is 16.

# %% [raw]
# # BEGIN QUESTION
# name: q2
# points: 2

# %% [raw]
# # BEGIN SOLUTION


# %%
def receptive_field(kernel_size, dilations):
    # BEGIN SOLUTION
    return (kernel_size - 1) * sum(dilations) + 1
    # END SOLUTION


# %% [raw]
# # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
""" # BEGIN TEST CONFIG
points: 1
"""  # END TEST CONFIG
assert receptive_field(2, [1, 2, 4, 8]) == 16
assert receptive_field(3, [1]) == 3

# %%
""" # BEGIN TEST CONFIG
points: 1
hidden: true
"""  # END TEST CONFIG
_ = torch.manual_seed(4)
dil = [1, 2, 4, 1, 2, 4, 8]
stack = torch.nn.Sequential(*[CausalConv1d(2, 2, 3, d) for d in dil])
x = torch.randn(1, 2, 120, requires_grad=True)
stack(x)[0, :, -1].sum().backward()
measured = int((x.grad.abs().sum(1)[0] > 0).sum())
assert receptive_field(3, dil) == measured, f"measured by gradients: {measured}"

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION

# %% [markdown]
# ## Question 3 · One cached step
#
# Generation makes one output at a time. Re-running the convolution over the whole past at each step wastes work:
# output `t` only needs `k` taps. Keep a **queue** of the last `(k-1)·dilation` inputs, oldest first, of shape
# `(B, C_in, (k-1)·dilation)`. Write `conv_step(queue, x_t, weight, bias, dilation)` that takes the new input
# `x_t` of shape `(B, C_in)` and returns the output `y_t` of shape `(B, C_out)` and the updated queue (the same
# shape, now ending with `x_t`). Started from a queue of zeros, the steps must reproduce `causal_conv` exactly.

# %% [raw]
# # BEGIN QUESTION
# name: q3
# points: 3

# %% [raw]
# # BEGIN SOLUTION


# %%
def conv_step(queue, x_t, weight, bias, dilation):
    # BEGIN SOLUTION
    window = torch.cat([queue, x_t.unsqueeze(-1)], dim=-1)  # (B, C_in, (k-1) d + 1)
    taps = window[..., ::dilation]  # the k inputs output t reads, oldest first
    y_t = torch.einsum("oik,bik->bo", weight, taps) + bias
    return y_t, window[..., 1:]
    # END SOLUTION


# %% [raw]
# # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
""" # BEGIN TEST CONFIG
points: 1
"""  # END TEST CONFIG
w, b = torch.ones(1, 1, 2), torch.zeros(1)
y_t, queue = conv_step(torch.tensor([[[5.0, 7.0]]]), torch.tensor([[1.0]]), w, b, dilation=2)
assert y_t.shape == (1, 1) and queue.shape == (1, 1, 2), "y_t is (B, C_out); the queue keeps its shape"
assert float(y_t) == 6.0, "weight [1, 1] at dilation 2 adds x[t - 2] = 5 and x[t] = 1"
assert torch.equal(queue, torch.tensor([[[7.0, 1.0]]])), "the oldest input leaves, x_t joins at the end"

# %%
""" # BEGIN TEST CONFIG
points: 2
hidden: true
"""  # END TEST CONFIG
_ = torch.manual_seed(5)
layer = CausalConv1d(3, 2, kernel_size=3, dilation=5)
x = torch.randn(2, 3, 30)
queue, outputs = torch.zeros(2, 3, 10), []
for t in range(30):
    y_t, queue = conv_step(queue, x[..., t], layer.weight, layer.bias, 5)
    outputs.append(y_t)

cached = torch.stack(outputs, dim=-1)
assert torch.allclose(cached, layer(x), atol=1e-12), "the cached steps must equal the teacher-forced pass"

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
# ## Question 4 (written) · What the queues buy, and what they cannot
#
# The paper's teacher has 30 layers of width `k = 2` in 3 stacks of dilations 1, 2, ..., 512. Work out its
# receptive field with your `receptive_field`. About how much work per generated sample do the queues save once
# `t` is past the receptive field? Why does the cached teacher still generate only a few hundred samples per second
# on a GPU (the paper: 172 timesteps/s), when its teacher-forced pass scores a whole second of audio at once?

# %% [raw]
# # BEGIN SOLUTION

# %% [markdown]
# **Model answer.** RF = (2 − 1) · 3 · (1 + 2 + ... + 512) + 1 = 3 · 1023 + 1 = 3,070 samples (128 ms at 24 kHz).
# Without queues each new sample reruns every layer over its whole window, about L · RF · k · C² multiply-adds;
# with queues each layer computes one output from its k taps, about L · k · C², so the saving is a factor of about
# RF ≈ 3,000. But the cost that remains is sequential: sample t must be drawn before step t + 1 can start, so one
# second of 24 kHz audio needs 24,000 dependent network evaluations, each a chain of 30 small matrix-vector
# products that cannot fill a GPU; latency per step (kernel launches, memory round trips), not arithmetic, sets
# the speed. Teacher forcing knows every x_<t in advance, so all T outputs are computed in one parallel pass.
#
# **Rubric (2 points).** 1 point: the receptive field 3,070 (or 3,069 with a stated convention) and a saving of
# the order of the receptive field. 1 point: the remaining bottleneck is the sequential dependence of each sample
# on the previous one (latency, poor parallelism), absent in the teacher-forced pass.

# %% [raw]
# # END SOLUTION

# %% [raw]
# # END QUESTION
