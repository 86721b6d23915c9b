# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Model answers · notebook 05 (The IAF student: audio in one parallel pass)
#
# The instructor's version of the exercises of notebook 05, with every answer measured by the code above it;
# 20–45 s in fast mode on 2 CPU cores shared with a training run (five runs with `PWN_FAST=1`).

# %%
import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from pwn_lib.config import AUDIO_PRESETS, STUDENT_PRESETS, fast_mode, pick, seed_everything
from pwn_lib.distributions import Logistic
from pwn_lib.layers import ResidualBlock, shift_right, stride_factors
from pwn_lib.student import build_student, flow_dilations

seed_everything(0)
torch.set_num_threads(1)
started = time.perf_counter()
print("fast mode:", fast_mode())

# %% [markdown]
# ## Exercise 05.1 · Removing the one-step shift
#
# > 1. Remove the one-step shift in `ScratchFlow.forward` (use `h = self.input(x_prev)`). Which check in section 1
# >    fails, and why is the map then no longer a valid IAF? (Two public reproductions made exactly this mistake.)
#
# We rebuild the notebook's `ScratchFlow` and a copy without the shift, with the same weights, and run the two
# checks of section 1 on both. The Jacobian comes from autograd, not from the flow's own `log_s`.


# %%
class ScratchFlow(nn.Module):
    # One IAF flow, as in notebook 05: (mu_t, log s_t) from x_prev[:, :, :t] only.
    def __init__(self, channels=16, dilations=(1, 2, 4), kernel_size=3, shift=True):
        super().__init__()
        self.shift = shift
        self.input = nn.Conv1d(1, channels, 1)
        self.blocks = nn.ModuleList(ResidualBlock(channels, 2 * channels, 0, kernel_size, d) for d in dilations)
        self.head = nn.Conv1d(channels, 2, 1)

    def forward(self, x_prev):  # x_prev: (B, 1, T)
        inp = F.pad(x_prev, (1, 0))[..., :-1] if self.shift else x_prev  # the exercise: drop the shift
        h = self.input(inp)
        for block in self.blocks:
            h, _ = block(h)
        mu, log_s = self.head(torch.relu(h)).chunk(2, dim=1)
        return mu, log_s


def checks(flow, z, t=10):
    mu, log_s = flow(z)
    z_perturbed = z.clone()
    z_perturbed[..., t:] += 1.0
    mu_p, log_s_p = flow(z_perturbed)
    causal = torch.equal(mu_p[..., : t + 1], mu[..., : t + 1]) and torch.equal(
        log_s_p[..., : t + 1], log_s[..., : t + 1]
    )
    jac = torch.autograd.functional.jacobian(lambda v: v * torch.exp(flow(v)[1]) + flow(v)[0], z)[0, 0, :, 0, 0, :]
    return {
        "check (a): mu, s at steps <= t unchanged": causal,
        "|change of mu_t| when z_t moves by 1": (mu_p[..., t] - mu[..., t]).abs().item(),
        "lower-triangular Jacobian": torch.equal(torch.triu(jac, 1), torch.zeros_like(jac)),
        "max |diag J - s_t|": (torch.diagonal(jac) - torch.exp(log_s[0, 0])).abs().max().item(),
        "log|det J| (autograd)": torch.linalg.slogdet(jac).logabsdet.item(),
        "sum_t log s_t": log_s.sum().item(),
    }


torch.manual_seed(0)
with_shift = ScratchFlow().double()
without_shift = ScratchFlow(shift=False).double()
without_shift.load_state_dict(with_shift.state_dict())
T = 32
zeros = torch.zeros(1, 1, T, dtype=torch.float64)
z = Logistic(zeros, zeros).sample(torch.Generator().manual_seed(0))
results = {"with shift": checks(with_shift, z), "without shift": checks(without_shift, z)}
for name in results["with shift"]:
    print(
        f"{name:38s}"
        + "".join(f"{str(r[name]) if isinstance(r[name], bool) else f'{r[name]:.6f}':>16s}" for r in results.values())
    )

# the shifted flow's input is exactly the library's shift_right
assert torch.equal(F.pad(z, (1, 0))[..., :-1], shift_right(z))
good, bad = results["with shift"], results["without shift"]
assert good["check (a): mu, s at steps <= t unchanged"] and good["max |diag J - s_t|"] < 1e-12
assert not bad["check (a): mu, s at steps <= t unchanged"] and bad["lower-triangular Jacobian"]
assert bad["max |diag J - s_t|"] > 1e-3 and abs(bad["log|det J| (autograd)"] - bad["sum_t log s_t"]) > 1e-3

# %% [markdown]
# Without the shift, $x_t = z_t\, s_t(z_{\le t}) + \mu_t(z_{\le t})$ is a *non-linear* function of $z_t$. To show it
# need not be invertible, we fix the history $z_{<t}$ and sweep $z_t$ over $[-6, 6]$ (99.5 % of a logistic's
# mass), at every step $t$. Wherever $x_t(z_t)$ goes up and down, two noise values give the same output sample and
# no inverse exists. Whether that happens depends on the weights, so we try the flow above and the same flow
# with its head negated (an equally likely draw from the symmetric initialisation).


# %%
def folded_steps(flow, z, grid):
    # steps t at which z_t -> x_t (history fixed) is not monotonic on the grid
    steps = []
    with torch.no_grad():
        for t in range(z.shape[-1]):
            sweep = z.expand(len(grid), 1, z.shape[-1]).clone()
            sweep[:, 0, t] = grid
            mu, log_s = flow(sweep)
            slope = torch.diff((sweep * torch.exp(log_s) + mu)[:, 0, t])
            if (slope > 0).any() and (slope < 0).any():
                steps.append(t)
    return steps


grid = torch.linspace(-6, 6, pick(301, 1201), dtype=torch.float64)
negated = ScratchFlow(shift=False).double()
negated.load_state_dict(without_shift.state_dict())
with torch.no_grad():
    negated.head.weight.neg_()
folds = {"as initialised": folded_steps(without_shift, z, grid), "head negated": folded_steps(negated, z, grid)}
for name, steps in folds.items():
    print(f"no shift, {name:15s}: z_t -> x_t folds at {len(steps)} of {T} steps")
shifted_negated = ScratchFlow().double()
shifted_negated.load_state_dict(negated.state_dict())
assert folded_steps(shifted_negated, z, grid) == [], "with the shift every step is affine in z_t, slope s_t > 0"
assert len(folds["head negated"]) > 0

# %% [markdown]
# **Model answer.** Check **(a)** fails first. With the shift removed, perturbing $z_t, z_{t+1}, \dots$ changes
# $\mu_t$ (by 0.022 here, for a move of 1 in $z_t$) and $s_t$, because a causal convolution's output at $t$ sees its
# input at $t$. Check **(b)** then fails in its second half. The Jacobian is still lower-triangular, since the
# convolutions are still causal, but its diagonal is no longer $s_t$:
# $\partial x_t/\partial z_t = s_t + z_t\,\partial s_t/\partial z_t + \partial \mu_t/\partial z_t$, off from $s_t$
# by up to 0.65 here. So $\log|\det J| = 16.98$ (autograd), while the flow reports $\sum_t \log s_t = 14.99$.
# The map is no longer a valid IAF, for three reasons:
#
# 1. **It need not be invertible.** At step $t$ the map $z_t \mapsto x_t$ is non-linear in $z_t$. With the head
#    as initialised it happened to stay monotonic on $[-6, 6]$ at all 32 steps, but with the head negated (an
#    equally likely initialisation) it folds at 20 of the 32 steps: two values of $z_t$ give the same $x_t$. The
#    shifted flow with the same negated weights never folds, because it is affine in $z_t$ with slope $s_t > 0$.
#    Even where the no-shift map is monotonic, inverting it needs a root search per step instead of
#    $z_t = (x_t - \mu_t)/s_t$.
# 2. **Its density is wrong.** The change of variables needs the true diagonal, so the log-determinant the flow
#    reports, $\sum_t \log s_t$, is not its log-determinant.
# 3. **A step is no longer a logistic.** $x_t \mid z_{<t}$ is a non-linear transform of $z_t$. The stack no
#    longer collapses to $L(\mu_{tot,t}, s_{tot,t})$, and with that go notebook 06's analytic entropy
#    $\sum_t \ln s_{tot,t} + 2T$ and its $K$-draw cross-entropy. The student would be trained on a wrong KL and
#    nothing would complain, because every shape is still right. That is how the mistake survives in public code:
#    only a causality check, or the log-determinant compared with autograd, exposes it.

# %% [markdown]
# ## Exercise 05.2 · The paper student's reach, and throughput against channels
#
# > 2. With the `paper` preset, how many milliseconds of 24 kHz audio does one output sample depend on? How does the
# >    sampling throughput of section 3 change with the number of channels?
#
# **Reach.** Three ways: the library's `receptive_field`, the formula $1 + \sum_i [1 + (k-1)\sum_\ell d_\ell]$ from
# the dilations of `STUDENT_PRESETS["paper"]`, and the support of $\partial x_t / \partial z$ measured with autograd.
# For the gradient we build the paper student with 8 channels instead of 64: the receptive field depends only on the
# layers, kernel and dilations, not on the width, and 8 channels make the 60-layer pass over 12,480 samples quick.
# Its last layers get random weights of std 0.3 instead of the tiny initialisation, so that no gradient path
# underflows to exactly zero in float64.

# %%
cfg = STUDENT_PRESETS["paper"]
sample_rate = AUDIO_PRESETS["paper"].sample_rate
formula = 1 + sum(1 + (cfg.kernel_size - 1) * sum(flow_dilations(n, cfg.max_dilation)) for n in cfg.flow_layers)
narrow = build_student("paper", channels=8).double()
with torch.no_grad():
    for f in narrow.flows:
        f.head[-1].weight.normal_(std=0.3, generator=torch.Generator().manual_seed(0))
frames = math.ceil((formula + 1) / cfg.hop_length)
length = frames * cfg.hop_length
noise = torch.randn(1, 1, length, dtype=torch.float64, generator=torch.Generator().manual_seed(1)).requires_grad_(True)
narrow(noise, torch.zeros(1, cfg.cond_channels, frames, dtype=torch.float64))[0][0, 0, -1].backward()
support = (noise.grad[0, 0] != 0).nonzero().flatten()
measured = length - support.min().item()
assert formula == build_student("paper").receptive_field == narrow.receptive_field == measured == len(support)
print(f"paper student: formula {formula}, library {narrow.receptive_field}, gradient support {measured} samples")
print(f"  = {1000 * formula / sample_rate:.1f} ms at {sample_rate} Hz")
far = noise.grad[0, 0].abs()
print(f"|dx_t/dz_u| at lag 0: {far[-1]:.2e}; at lag {measured - 1}: {far[support.min()]:.2e}")

# %% [markdown]
# **Throughput against channels.** We time `sample` of the `course` student (the section 3 model) at 16, 32, 64 and
# 128 channels on the same conditioning, best of three, and count its FLOPs with `torch.utils.flop_counter`. The
# count is checked against a closed form. A flow with $L$ layers and $C$ channels costs, per sample,
# $2C$ (input) $+ L\,[2kC\cdot 2C + 2 n_{mel} \cdot 2C + 2C^2]$ (dilated taps, conditioning, output projection)
# $+ 2C^2 + 4C$ (head). The shared upsampler costs $\sum_j 2 n_{mel}^2 \cdot 2 s_j \cdot L_{in,j} / T$, which does not
# depend on $C$.


# %%
def closed_form_flops_per_sample(cfg, frames: int) -> float:
    c, k, m = cfg.channels, cfg.kernel_size, cfg.cond_channels
    per_layer = 2 * k * c * 2 * c + 2 * m * 2 * c + 2 * c * c
    flows = sum(2 * c + n * per_layer + 2 * c * c + 2 * c * 2 for n in cfg.flow_layers)
    upsampler, length = 0, frames
    for s in stride_factors(cfg.hop_length):
        upsampler += 2 * m * m * 2 * s * (length + 2)  # a transposed conv on the frames padded by one at each end
        length *= s
    return flows + upsampler / (frames * cfg.hop_length)


n_frames = pick(16, 63)
channel_counts = (16, 32, 64, 128)
rows = []
for channels in channel_counts:
    model = build_student("course", channels=channels).eval()
    c = torch.zeros(1, 80, n_frames)
    with FlopCounterMode(display=False) as counter:
        model.sample(c)
    flops = counter.get_total_flops() / (n_frames * model.cfg.hop_length)
    assert math.isclose(flops, closed_form_flops_per_sample(model.cfg, n_frames), rel_tol=1e-12)
    times = []
    for seed in range(3):
        t0 = time.perf_counter()
        model.sample(c, generator=torch.Generator().manual_seed(seed))
        times.append(time.perf_counter() - t0)
    rate = n_frames * model.cfg.hop_length / min(times)
    rows.append((channels, flops, rate))
rate_of = {channels: rate for channels, _, rate in rows}
print(f"course student, {n_frames * 256} samples, 1 thread, best of 3")
print(" C | MFLOP/sample | timesteps/s | x real time | GFLOP/s achieved")
for channels, flops, rate in rows:
    print(f"{channels:3d} | {flops / 1e6:12.3f} | {rate:11,.0f} | {rate / 16_000:11.2f} | {flops * rate / 1e9:8.1f}")
log_c = np.log([r[0] for r in rows])
flop_slope = np.polyfit(log_c[-2:], np.log([r[1] for r in rows][-2:]), 1)[0]
rate_slope = np.polyfit(log_c, np.log([r[2] for r in rows]), 1)[0]
print(f"FLOPs grow as C^{flop_slope:.2f} between 64 and 128 channels; throughput falls as C^{rate_slope:.2f} overall")
print(f"run time: {time.perf_counter() - started:.0f} s")

# %% [markdown]
# **Model answer.** *Reach.* One output sample of the `paper` student depends on **12,281 samples of noise, i.e.
# 511.7 ms at 24 kHz**: $z_t$ itself, plus $3 \times 2{,}047$ for the three 10-layer flows (dilations 1…512, width
# 3), plus 6,139 for the 30-layer flow. The formula, the library's `receptive_field` and the gradient support
# measured by autograd agree exactly. That is twice the paper teacher's 6,139 samples. It is an upper bound on
# what matters: at this (random) initialisation $|\partial x_t / \partial z_u|$ falls from $3 \times 10^{-2}$ at
# lag 0 to $2 \times 10^{-88}$ at the far edge. The *effective* receptive field is far shorter than the nominal
# one, and only training decides how much of the 512 ms the student uses.
#
# *Throughput.* The cost per sample is quadratic in the width: about $14 C^2 \sum_i L_i$ for the dilated taps and
# the projections, plus a term linear in $C$ for the conditioning ($320\,C$ per layer) and a constant for the
# upsampler. The FLOP count matches this closed form exactly, and between 64 and 128 channels it grows as
# $C^{1.79}$, on its way to $C^2$. The measured throughput falls more slowly than the FLOPs rise. In the fast-mode
# run whose output is above (4,096 samples, one core shared with another job) it fell from 45,700 to 6,000
# timesteps/s between 16 and 128 channels, about $C^{-1.0}$, while the FLOPs grew 28-fold. Narrow models do not
# keep the CPU busy. At 16 channels the matrix products are tiny, per-call overhead and the elementwise gating
# dominate, and the run achieves 12.5 GFLOP/s. At 128 channels the products are large enough to run nearer the
# matmul peak, at 46.6 GFLOP/s. So at these sizes doubling the width costs 1.4 to 2.5 times the time, and the
# factor tends to 4 once the products are large. The FLOP counts are exact. The timings are not: over four runs
# on this loaded machine the drop from 16 to 128 channels ranged from 7.6-fold to 14-fold (slopes $C^{-1.0}$ to
# $C^{-1.3}$), but every run showed the same shape, throughput falling more slowly than the FLOPs grow.
