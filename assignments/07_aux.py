# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [raw]
# # ASSIGNMENT CONFIG
# name: 07_aux
# init_cell: true
# check_all_cell: false
# export_cell: false
# solutions_pdf: false
# generate: true

# %% [markdown]
# # Assignment 07 · The auxiliary losses: power, level, and a contrast between utterances
#
# Goes with notebook 07 (auxiliary losses) and section 3.2 of the paper. You write the time-averaged power spectrum
# φ and the paper's power loss, work out the gain the power loss asks of a student, and build the "other
# utterance" pairing that the contrastive loss needs. Then you measure why a student trained on the KL alone
# whispers. The grader checks your functions against `pwn_lib.losses` in float64, against a grid search, and by
# drawing many pairings.
#
# **Points:** 9 autograded (questions 1–4) + 2 written (question 5). **Time:** about 20 seconds to run on 2 CPU
# cores (fast and full mode are the same here; question 5 loads the shipped teacher). Run each `grader.check` cell
# to see the public tests; hidden tests are added at grading.

# %%
import math

import torch

from pwn_lib import losses, vocoders
from pwn_lib.config import CHECKPOINT_DIR, AudioConfig, seed_everything
from pwn_lib.heldout import heldout_clip

seed_everything(0)
torch.set_default_dtype(torch.float64)  # exact comparisons with the library's losses

# %% [markdown]
# ## Question 1 · The time-averaged power spectrum φ
#
# Write `average_power(x, n_fft=1024, hop=256)` for audio `x` of shape `(B, 1, T)`. Cut `x` into frames of
# `n_fft` samples every `hop` samples (no padding: the first frame starts at sample 0, the last one ends at or
# before `T`), multiply each frame by a *periodic* Hann window `w` (`torch.hann_window(n_fft)`), take
# `|rfft|²`, average over the frames and divide by the window's energy `Σ w²`. Return `(B, n_fft // 2 + 1)`.
# The division makes φ a power per bin: white noise of variance σ² gives φ_k ≈ σ² away from the edges.
# Hint: `x.unfold(-1, n_fft, hop)`.

# %% [raw]
# # BEGIN QUESTION
# name: q1
# points: 3

# %% [raw]
# # BEGIN SOLUTION


# %%
def average_power(x, n_fft=1024, hop=256):
    # BEGIN SOLUTION
    window = torch.hann_window(n_fft, dtype=x.dtype)
    frames = x[:, 0].unfold(-1, n_fft, hop) * window  # (B, F, n_fft)
    power = torch.fft.rfft(frames, dim=-1).abs().square()  # (B, F, n_fft // 2 + 1)
    return power.mean(dim=1) / window.square().sum()
    # END SOLUTION


# %% [raw]
# # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
""" # BEGIN TEST CONFIG
points: 1
"""  # END TEST CONFIG
noise = 0.5 * torch.randn(2, 1, 16_000, generator=torch.Generator().manual_seed(0))
phi = average_power(noise)
assert phi.shape == (2, 513), "one value per rfft bin and batch row"
assert abs(phi[:, 10:500].mean().item() - 0.25) < 0.01, "white noise of variance 0.25 has power 0.25 per bin"

# %%
""" # BEGIN TEST CONFIG
points: 2
hidden: true
"""  # END TEST CONFIG
x = torch.randn(3, 1, 5_000, generator=torch.Generator().manual_seed(1))
assert torch.allclose(average_power(x), losses.average_power(x), rtol=1e-9, atol=1e-12)
assert torch.allclose(average_power(x, 512, 100), losses.average_power(x, 512, 100), rtol=1e-9, atol=1e-12)
t = torch.arange(8_192) / 16_000
sine = torch.sin(2 * math.pi * 1_000 * t).view(1, 1, -1)  # 1 kHz = bin 64 of a 1,024-point FFT at 16 kHz
phi = average_power(sine)
assert phi.argmax().item() == 64, "1 kHz is bin 64"
assert phi[0, :63].max() < 1e-12 * phi.max() and phi[0, 66:].max() < 1e-12 * phi.max(), "Hann: bins 63-65 only"

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION

# %% [markdown]
# ## Question 2 · The power loss
#
# Write `power_loss(x, y)`: the paper's `‖φ(x) − φ(y)‖²`, summed over frequency and averaged over the batch, with
# your `average_power` at its defaults. `x` is the student's audio, `y` real audio; their lengths may differ,
# since φ averages over time.

# %% [raw]
# # BEGIN QUESTION
# name: q2
# points: 2

# %% [raw]
# # BEGIN SOLUTION


# %%
def power_loss(x, y):
    # BEGIN SOLUTION
    return (average_power(x) - average_power(y)).square().sum(dim=-1).mean()
    # END SOLUTION


# %% [raw]
# # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
""" # BEGIN TEST CONFIG
points: 1
"""  # END TEST CONFIG
y = torch.randn(2, 1, 4_096, generator=torch.Generator().manual_seed(2))
assert power_loss(y, y).item() == 0.0 and power_loss(y, y).dim() == 0, "a scalar, zero for the same audio"
phi_y = losses.average_power(y)
expected = 9 * phi_y.square().sum(dim=-1).mean()
assert torch.allclose(power_loss(2 * y, y), expected), "gain 2 multiplies φ by 4: (4 - 1)² ‖φ(y)‖²"

# %%
""" # BEGIN TEST CONFIG
points: 1
hidden: true
"""  # END TEST CONFIG
x = torch.randn(3, 1, 6_000, generator=torch.Generator().manual_seed(3)) * torch.tensor([0.1, 1.0, 3.0]).view(3, 1, 1)
y = torch.randn(3, 1, 4_500, generator=torch.Generator().manual_seed(4))
assert torch.allclose(power_loss(x, y), losses.power_loss(x, y), rtol=1e-9)

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION

# %% [markdown]
# ## Question 3 · The gain the power loss asks for
#
# Scaling audio by a gain `a` multiplies φ by `a²`. Write `best_gain(x, y)`: the gain `a ≥ 0` that minimises
# `power_loss(a · x, y)` over one scalar `a` shared by the whole batch. Work it out in closed form (it is a
# least-squares problem in `a²`) and use `pwn_lib.losses.average_power` for φ, so that this question does not
# depend on question 1. A student that whispers at −20 dB asks for a gain of about 10.

# %% [raw]
# # BEGIN QUESTION
# name: q3
# points: 2

# %% [raw]
# # BEGIN SOLUTION


# %%
def best_gain(x, y):
    # BEGIN SOLUTION
    phi_x, phi_y = losses.average_power(x), losses.average_power(y)
    return ((phi_x * phi_y).sum() / phi_x.square().sum()).clamp_min(0.0).sqrt()
    # END SOLUTION


# %% [raw]
# # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
""" # BEGIN TEST CONFIG
points: 1
"""  # END TEST CONFIG
y = torch.randn(2, 1, 4_096, generator=torch.Generator().manual_seed(5))
assert abs(best_gain(0.1 * y, y).item() - 10.0) < 1e-9, "audio at -20 dB asks for a gain of 10"
assert abs(best_gain(y, y).item() - 1.0) < 1e-9, "the right level asks for no change"

# %%
""" # BEGIN TEST CONFIG
points: 1
hidden: true
"""  # END TEST CONFIG
x = torch.randn(2, 1, 4_096, generator=torch.Generator().manual_seed(6)).cumsum(-1) * 0.01  # a redder spectrum
y = torch.randn(2, 1, 5_000, generator=torch.Generator().manual_seed(7)) * torch.tensor([0.3, 2.0]).view(2, 1, 1)
a = best_gain(x, y).detach().requires_grad_(True)
(slope,) = torch.autograd.grad(losses.power_loss(a * x, y), a)
scale = losses.power_loss(0.5 * a.detach() * x, y)
assert abs(slope.item()) < 1e-9 * scale.item(), f"d loss / d a = {slope.item()} at your gain {a.item()}: not a minimum"
grid = torch.linspace(0.0, 3.0, 301) * a.detach()
assert min(losses.power_loss(g * x, y) for g in grid) >= losses.power_loss(a.detach() * x, y) - 1e-12

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION

# %% [markdown]
# ## Question 4 · Another utterance for the contrastive loss
#
# The contrastive loss, `KL(P_S(c₁) ‖ P_T(c₁)) − γ · KL(P_S(c₁) ‖ P_T(c₂))` (`pwn_lib.losses.contrastive_loss`),
# scores the student's samples under the teacher conditioned on *another* utterance `c₂`, taken from the same
# batch. Write `other_utterances(batch_size, generator)`: a random permutation `perm` of `0 .. batch_size − 1`
# with `perm[i] != i` for every `i` (a derangement), so that `c[perm]` gives each row another row's conditioning.
# Every derangement should be possible. With one row there is no other utterance: raise a `ValueError` that says
# so.

# %% [raw]
# # BEGIN QUESTION
# name: q4
# points: 2

# %% [raw]
# # BEGIN SOLUTION


# %%
def other_utterances(batch_size, generator):
    # BEGIN SOLUTION
    if batch_size < 2:
        raise ValueError(f"a batch of {batch_size} has no other utterance to contrast with; use at least 2 rows")
    while True:  # rejection: about e tries on average, and every derangement is equally likely
        perm = torch.randperm(batch_size, generator=generator)
        if (perm != torch.arange(batch_size)).all():
            return perm
    # END SOLUTION


# %% [raw]
# # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
""" # BEGIN TEST CONFIG
points: 1
"""  # END TEST CONFIG
generator = torch.Generator().manual_seed(8)
assert other_utterances(2, generator).tolist() == [1, 0], "two rows can only swap"
for batch_size in range(2, 7):
    for _ in range(50):
        perm = other_utterances(batch_size, generator)
        assert sorted(perm.tolist()) == list(range(batch_size)), "a permutation of the rows"
        assert (perm != torch.arange(batch_size)).all(), f"row kept its own conditioning: {perm.tolist()}"


# %%
""" # BEGIN TEST CONFIG
points: 1
hidden: true
"""  # END TEST CONFIG
generator = torch.Generator().manual_seed(9)
seen = {tuple(other_utterances(4, generator).tolist()) for _ in range(400)}
assert len(seen) == 9, f"4 rows have 9 derangements; {len(seen)} appeared in 400 draws"
try:
    other_utterances(1, generator)
    raise AssertionError("one row must be refused")
except ValueError as error:
    assert "other" in str(error)

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION

# %% [raw]
# # BEGIN QUESTION
# name: q5
# manual: true
# points: 2

# %% [markdown]
# ## Question 5 (written) · Why a student trained on the KL alone whispers
#
# Run the cell below. It scores one second of real held-out speech under the shipped teacher, conditioned on that
# speech's own log-mel frames, at several gains, and white noise of the same power. Which is most probable per
# sample? What does that mean for the reverse KL, `H(P_S, P_T) − H(P_S)`, which rewards the student for putting
# its samples where the teacher's density is high? Which term of notebook 07 removes the incentive, and what does
# your `best_gain` say it asks of a student at −20 dB?

# %%
torch.set_num_threads(2)
teacher = vocoders.load(CHECKPOINT_DIR / "teacher_course").model.float().eval()
speech, mel = heldout_clip(AudioConfig(), seconds=1.0, split="valid")  # (1, 1, 16000), (1, 80, 62)
noise = torch.randn(speech.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float32) * speech.std()
with torch.no_grad():
    clips = {"real": speech, "real x 0.5": 0.5 * speech, "real x 0.1": 0.1 * speech}
    clips.update({"white noise, same power": noise, "white noise x 0.1": 0.1 * noise})
    for name, clip in clips.items():
        bits = -teacher.log_prob(clip.float(), mel.float()).mean().item() / math.log(2)
        print(f"{name:>24}: {bits:6.2f} bits per sample")

# %% [raw]
# # BEGIN SOLUTION

# %% [markdown]
# **Model answer (measured on 2 cores, about 15 s).** Under the shipped teacher, with the same log-mel conditioning,
# the real second costs 10.26 bits per sample, the same speech at half its amplitude 9.55, at a tenth 9.04; white
# noise of the speech's power costs 24.8 and at a tenth 15.1. So the teacher finds *quieter* versions of the right
# speech more probable per sample: its logistics narrow around the location prior ρ·x[t−1], and small samples sit
# near it. The reverse KL's cross-entropy term `H(P_S, P_T)` is the teacher's NLL of the student's own samples, so a
# student lowers it by turning itself down; the entropy term does not tie the level to the conditioning, and
# nothing in the KL compares the student's loudness with real speech. Noise is far less probable, so the student
# keeps the speech-like envelope and loses the level: it whispers. The power loss `‖φ(x) − φ(y)‖²` compares the
# average spectrum with real audio's and grows as `(a² − 1)²`; for a student at −20 dB `best_gain` asks for a gain
# of 10 (+20 dB), and the loss's gradient points there.
#
# **Rubric (2 points).** 1 point: the measured figures and the conclusion that quieter speech is more probable
# under the teacher, so minimising the KL (its cross-entropy term) pulls the level down. 1 point: the power loss
# names the level against real audio (φ scales as a²), with the gain of 10 from question 3 or the (a² − 1)² form.

# %% [raw]
# # END SOLUTION

# %% [raw]
# # END QUESTION
