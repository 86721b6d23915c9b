# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [raw]
# # ASSIGNMENT CONFIG
# name: 08_full
# init_cell: true
# check_all_cell: false
# export_cell: false
# solutions_pdf: false
# generate: true

# %% [markdown]
# # Assignment 08 · Full-scale training: sizes, gradient accumulation, and many processes
#
# Goes with notebook 08 (full-scale training) and section 4 of the paper. Before a multi-hour run you should know
# how big the model is, and that the tricks that make the batch fit — accumulating gradients over micro-batches,
# splitting the batch across processes — train the same model as one big batch would. You count a WaveNet's
# parameters from its config, accumulate gradients over micro-batches of unequal size, and number the micro-batches
# so that any split across processes sees the same windows. The grader checks against built models, against the
# full-batch gradient of a tiny float64 WaveNet, and against `pwn_lib.trainer`.
#
# **Points:** 8 autograded (questions 1–3) + 4 written (questions 4–5). **Time:** about 10 seconds to run on 2 CPU
# cores (fast and full mode are the same here). Run each `grader.check` cell to see the public tests; hidden tests
# are added at grading.

# %%
import dataclasses

import torch

from pwn_lib.config import TEACHER_PRESETS, seed_everything
from pwn_lib.distributed import World
from pwn_lib.toys import evolving_teacher
from pwn_lib.trainer import micro_batch_index as library_micro_batch_index
from pwn_lib.wavenet import WaveNet

seed_everything(0)
torch.set_default_dtype(torch.float64)  # gradients compared to 1e-10


def unconditioned(name, **changes):
    """A teacher preset without log-mel conditioning or speakers (the conditioning network is counted elsewhere)."""
    return dataclasses.replace(TEACHER_PRESETS[name], cond_channels=0, n_speakers=0, **changes)


# %% [markdown]
# ## Question 1 · How many parameters?
#
# Write `count_parameters(cfg)` for an unconditioned WaveNet config (`cfg.cond_channels == 0`, no speakers),
# from its fields alone, without building the model. The network (notebook 02) is:
# - an input 1×1 convolution from 1 channel to `R = cfg.residual_channels`;
# - `cfg.layers` residual blocks in all (over `cfg.stacks` stacks), each a dilated convolution of width
#   `k = cfg.kernel_size` from `R` to `G = cfg.gate_channels` channels (the gate's two halves), then a 1×1
#   convolution from the `G / 2` gated units to `R` residual plus `S = cfg.skip_channels` skip channels;
# - a head: ReLU, a 1×1 convolution `S → S`, ReLU, a 1×1 convolution `S → 3K` for a mixture of
#   `K = cfg.n_mixtures` logistics.
#
# Every convolution has a bias. Then check yourself with `sum(p.numel() for p in WaveNet(cfg).parameters())`.

# %% [raw]
# # BEGIN QUESTION
# name: q1
# points: 3

# %% [raw]
# # BEGIN SOLUTION


# %%
def count_parameters(cfg):
    # BEGIN SOLUTION
    r, g, s, k = cfg.residual_channels, cfg.gate_channels, cfg.skip_channels, cfg.kernel_size
    block = k * r * g + g + (g // 2 + 1) * (r + s)
    head = (s + 1) * s + (s + 1) * 3 * cfg.n_mixtures
    return 2 * r + cfg.layers * block + head
    # END SOLUTION


# %% [raw]
# # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
""" # BEGIN TEST CONFIG
points: 1
"""  # END TEST CONFIG
cfg = unconditioned("tiny")
assert count_parameters(cfg) == sum(p.numel() for p in WaveNet(cfg).parameters()), "the tiny preset"

# %%
""" # BEGIN TEST CONFIG
points: 2
hidden: true
"""  # END TEST CONFIG
for cfg in [
    unconditioned("course"),
    unconditioned("paper"),
    unconditioned("tiny", kernel_size=2, skip_channels=24, n_mixtures=5),
    unconditioned("tiny", layers=6, stacks=3, residual_channels=8, gate_channels=20),
]:
    assert count_parameters(cfg) == sum(p.numel() for p in WaveNet(cfg).parameters()), cfg

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION

# %% [markdown]
# ## Question 2 · Gradient accumulation
#
# A batch that does not fit in memory is split into micro-batches; each one's loss is back-propagated and the
# gradients add up in `.grad` before one optimiser step. Write `accumulated_gradient(model, x, sizes)`: split the
# batch `x` of shape `(B, 1, T)` into consecutive micro-batches of the given `sizes` (they sum to `B` and may be
# unequal), back-propagate each micro-batch's `model.loss(...)` with the right weight, and return the gradients
# as a list in `model.parameters()` order. The result must equal the gradient of `model.loss(x)` on the whole batch
# (the mean NLL per sample). Start from zeroed gradients.

# %% [raw]
# # BEGIN QUESTION
# name: q2
# points: 3

# %% [raw]
# # BEGIN SOLUTION


# %%
def accumulated_gradient(model, x, sizes):
    # BEGIN SOLUTION
    model.zero_grad(set_to_none=True)
    for micro in torch.split(x, list(sizes)):
        (model.loss(micro) * micro.shape[0] / x.shape[0]).backward()  # each micro-batch's share of the mean
    return [p.grad.clone() for p in model.parameters()]
    # END SOLUTION


# %% [raw]
# # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
""" # BEGIN TEST CONFIG
points: 1
"""  # END TEST CONFIG
_ = torch.manual_seed(1)
model = WaveNet(unconditioned("tiny"))
x = torch.rand(4, 1, 256) * 2 - 1
full = torch.autograd.grad(model.loss(x), list(model.parameters()))
accumulated = accumulated_gradient(model, x, [2, 2])
assert len(accumulated) == len(full), "one gradient per parameter"
assert all(torch.allclose(a, f, atol=1e-10) for a, f in zip(accumulated, full, strict=True)), "two equal halves"

# %%
""" # BEGIN TEST CONFIG
points: 2
hidden: true
"""  # END TEST CONFIG
_ = torch.manual_seed(2)
model = WaveNet(unconditioned("tiny"))
x = torch.rand(5, 1, 300) * 2 - 1
full = torch.autograd.grad(model.loss(x), list(model.parameters()))
for sizes in ([2, 3], [1, 1, 3], [5], [1, 1, 1, 1, 1]):
    accumulated = accumulated_gradient(model, x, sizes)
    assert all(torch.allclose(a, f, atol=1e-10) for a, f in zip(accumulated, full, strict=True)), sizes

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION

# %% [markdown]
# ## Question 3 · Which micro-batch does each process take?
#
# With `ranks` processes (DistributedDataParallel), each accumulating `accum` micro-batches per step, the training
# data is one long sequence of micro-batches numbered 0, 1, 2, ... Write
# `micro_batch_index(step, micro, accum, rank, ranks)`: the number of micro-batch `micro` (0 ≤ micro < accum) of
# optimiser step `step` on process `rank`. Two rules:
# - no two processes take the same micro-batch, and every number is taken once: each step takes the next
#   `ranks · accum` numbers;
# - one process accumulating `ranks · accum` micro-batches takes, at each step, exactly the micro-batches that
#   `ranks` processes take together: a run may move between one GPU and eight without changing what it sees.

# %% [raw]
# # BEGIN QUESTION
# name: q3
# points: 2

# %% [raw]
# # BEGIN SOLUTION


# %%
def micro_batch_index(step, micro, accum, rank, ranks):
    # BEGIN SOLUTION
    return (step * ranks + rank) * accum + micro
    # END SOLUTION


# %% [raw]
# # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
""" # BEGIN TEST CONFIG
points: 1
"""  # END TEST CONFIG
for ranks, accum in [(1, 1), (2, 3), (4, 2), (8, 1)]:
    for step in range(3):
        taken = [micro_batch_index(step, m, accum, r, ranks) for r in range(ranks) for m in range(accum)]
        alone = [micro_batch_index(step, m, ranks * accum, 0, 1) for m in range(ranks * accum)]
        assert sorted(taken) == list(range(step * ranks * accum, (step + 1) * ranks * accum)), (ranks, accum, step)
        assert sorted(taken) == sorted(alone), "one process sees what all the processes see together"


# %%
""" # BEGIN TEST CONFIG
points: 1
hidden: true
"""  # END TEST CONFIG
for ranks, accum, step in [(2, 3, 5), (3, 1, 7), (4, 4, 2), (1, 6, 9)]:
    for rank in range(ranks):
        world = World(rank=rank, size=ranks)
        for m in range(accum):
            assert micro_batch_index(step, m, accum, rank, ranks) == library_micro_batch_index(step, m, accum, world)

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
# ## Question 4 (written) · One global batch
#
# The course trains its teacher with 4 windows of 4,096 samples per step on one CPU thread. On a machine with 8
# GPUs you want the same run, only faster. What are the global batch and the number of windows each GPU sees per
# step for `--batch-size 4 --grad-accum 1` on 8 processes, and for `--batch-size 1 --grad-accum 4` on one
# process? Which of these settings reproduce the one-thread recipe exactly, which change it, and what would you
# have to change in the recipe (learning rate, steps) if you chose to grow the global batch 8 times instead? Use
# your answers to questions 2 and 3.

# %% [raw]
# # BEGIN SOLUTION

# %% [markdown]
# **Model answer.** The global batch is `batch_size × grad_accum × ranks` windows per optimiser step. 8 processes
# with batch 4 and no accumulation make a global batch of 32 (4 per GPU): 8 times the recipe's 4, so it is a
# different run. One process with batch 1 and 4 micro-batches makes 4, the recipe's global batch: by question 2 its
# gradient equals the 4-window gradient exactly (up to rounding), so only memory and time change. To use 8 GPUs and
# keep the recipe exactly, split the same 4 windows over fewer processes (4 processes of batch 1), or keep 4 per
# GPU and accept the larger batch; by question 3 the micro-batch numbering makes the data each step sees
# independent of how it is split, which is why `pwn_lib.trainer` lets a run resume on another number of processes
# when `grad_accum × processes` is unchanged. Growing the global batch 8 times averages 8 times as many windows per
# step: the gradient noise falls, so the same number of steps is 8 times the data; keep the number of windows seen
# (steps ÷ 8) or keep the steps and raise the learning rate (linearly with the batch, as a first guess, or by √8 for
# Adam), with a warm-up, and check the held-out NLL curve against the one-thread run.
#
# **Rubric (2 points).** 1 point: the two global batches (32 and 4) and which one reproduces the recipe, with the
# reason (accumulated gradient = full-batch gradient). 1 point: a sound change for a larger global batch (fewer
# steps for the same data, or a higher learning rate with warm-up), checked against a curve.

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
# ## Question 5 (written, an open question of the source) · What if the teacher keeps evolving?
#
# At scale the teacher may still be training while its student distils. `pwn_lib.toys.evolving_teacher`
# distils an IAF student on two moons from teacher A, from teacher B, and from A swapped for B half-way, in two
# scenarios: B a later checkpoint of A's training, and B trained on shifted data; it prints the exact KLs to both
# teachers. What does the student keep of A after the swap, and what would you do at scale?


# %%
evolving = evolving_teacher(fast=True)  # about 12 s on one core
for s in evolving["scenarios"]:
    print(f"{s['scenario']}: KL(A||B) {s['kl_A_to_B']:.3f}")
    for run, r in s["runs"].items():
        print(f"  from {run:8s} KL(S||A) {r['kl_to_A']:.3f}  KL(S||B) {r['kl_to_B']:.3f}")

# %% [raw]
# # BEGIN SOLUTION

# %% [markdown]
# **Model answer (measured, 2 cores).** It keeps almost nothing: the reverse KL pulls the student to the
# teacher of the moment. Full run (1,500 steps, swap at 750): with B a later checkpoint (KL(A‖B) 0.33), A-then-B ends
# at KL(S‖B) 0.149, as good as distilling from B throughout (0.160), and its KL to A rose from 0.146 at the swap to
# 0.21–0.29, B's own distance; with B trained on shifted data (KL(A‖B) 4.85) it ends at 0.137 to B and 4.07 to A,
# forgetting A entirely. The fast run (300 steps) agrees: 0.005 → 0.31 to A after the swap. So a late swap costs
# nothing when the teacher improves, and nothing of the old teacher is retained when it moves: distilling from the
# teacher's latest checkpoint is safe, while keeping old behaviour needs a mixture or an average of KLs over
# teachers (notebook 10's multi-teacher section) or replay.
#
# **Rubric (2 points).** 1 point: the student tracks the current teacher and forgets the old one, with the
# measured KLs. 1 point: a practical consequence (swap to the latest checkpoint freely; to retain, distil from several
# teachers or replay).

# %% [raw]
# # END SOLUTION

# %% [raw]
# # END QUESTION
