# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Model answers · notebook 02 (WaveNet: dilated causal convolutions, gates, conditioning and fast generation)
#
# The instructor's version of the five exercises in `notebooks/02_wavenet_dilation.ipynb`; it runs in about 25 s in
# fast mode (`PWN_FAST=1`) on 2 CPU cores (12 to 28 s measured, while a training run and other jobs shared the
# machine).

# %%
import dataclasses
import math
import time

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pwn_lib.config import AUDIO_PRESETS, TEACHER_PRESETS, WaveNetConfig, fast_mode, pick, seed_everything
from pwn_lib.layers import (
    RESIDUAL_SCALE,
    CausalConv1d,
    ConditionUpsampler,
    ResidualBlock,
    receptive_field,
    stride_factors,
)
from pwn_lib.wavenet import WaveNet, dilations

seed_everything(0)
torch.set_num_threads(1)
print("fast mode:", fast_mode())


def causal_conv(x, w, dilation=1):  # notebook 02, section 1
    k = w.shape[-1]
    return F.conv1d(F.pad(x, ((k - 1) * dilation, 0)), w, dilation=dilation)


def same_conv(x, w, dilation=1):
    k = w.shape[-1]
    return F.conv1d(x, w, dilation=dilation, padding=(k - 1) * dilation // 2)


# %% [markdown]
# ## Exercise 02.1 · Where an impulse lands for k = 2, d = 4
#
# > **Exercise.** Before running anything, write down which outputs an impulse at $t_0 = 12$ reaches for $k = 2$,
# > $d = 4$. Then change `w` and `d` above and check.
#
# **Prediction.** $y_t = w_0\, x_{t-4} + w_1\, x_t$, so $x_{12}$ is read by $y_{12}$ (tap $j = 1$, weight $w_1$) and
# by $y_{16}$ (tap $j = 0$, weight $w_0$): outputs $t_0 + (k - 1 - j)\,d$ for $j = 0, \dots, k-1$, i.e. $\{12, 16\}$.
# Nothing before 12 reacts. The centred convolution pads $(k-1)d/2 = 2$ on each side, so it reads $x_{t-2}, x_{t+2}$
# and the impulse shows up at $\{10, 14\}$: output 10 has seen the future.

# %%
T, t0, k, d = 32, 12, 2, 4
w = torch.tensor([[[0.5, 1.0]]], dtype=torch.float64)  # w_0 = 0.5 (reads x_{t-4}), w_1 = 1.0 (reads x_t)
impulse = torch.zeros(1, 1, T, dtype=torch.float64)
impulse[..., t0] = 1.0
predicted = sorted(t0 + (k - 1 - j) * d for j in range(k))

y_causal = causal_conv(impulse, w, d)[0, 0]
layer = CausalConv1d(1, 1, kernel_size=k, dilation=d).double()
with torch.no_grad():
    layer.weight.copy_(w)
    layer.bias.zero_()
    y_library = layer(impulse)[0, 0]
y_same = same_conv(impulse, w, d)[0, 0]
reached = {name: torch.nonzero(y).flatten().tolist() for name, y in (("causal", y_causal), ("same", y_same))}
print("predicted:", predicted, "| causal conv reaches", reached["causal"], "with values", y_causal[predicted].tolist())
print("centred (same) conv reaches", reached["same"])
assert reached["causal"] == predicted == [12, 16]
assert torch.equal(y_library, y_causal) and y_causal[12] == w[0, 0, 1] and y_causal[16] == w[0, 0, 0]
assert reached["same"] == [t0 - d // 2, t0 + d // 2]

fig, axes = plt.subplots(1, 2, figsize=(11, 3), sharey=True)
for ax, (name, y) in zip(axes, [("causal", y_causal), ("non-causal (same)", y_same)], strict=True):
    ax.stem(np.arange(T), y.numpy())
    ax.axvline(t0, color="red", ls="--", label="impulse at $t_0$")
    ax.set(title=f"{name}: k={k}, d={d}", xlabel="time step t (samples)", ylabel="output $y_t$")
    ax.legend()
plt.show()

# %% [markdown]
# **Model answer.** With $k = 2$ and $d = 4$ the causal convolution is $y_t = w_0 x_{t-4} + w_1 x_t$, so an impulse at
# $t_0 = 12$ reaches exactly outputs 12 (through $w_1$, value 1.0) and 16 (through $w_0$, value 0.5), and nothing
# else: the general rule is $t_0 + (k-1-j)\,d$, $j = 0, \dots, k-1$, a span of $(k-1)d + 1 = 5$ samples with a gap of
# $d - 1 = 3$ untouched outputs between the taps. The code finds [12, 16], identical for `CausalConv1d`. For
# comparison the centred convolution reaches [10, 14]: output 10 reacts to an input two steps in its future.

# %% [markdown]
# ## Exercise 02.2 · An undilated stack with the paper's receptive field
#
# > **Exercise.** The paper preset uses 30 layers in 3 stacks of dilations $1 \dots 512$. How many layers would an
# > undilated stack with $k = 3$ need for the same receptive field?
#
# $\text{RF} = 1 + (k-1)\sum_l d_l = 1 + 2 \cdot 3 \cdot (1 + 2 + \dots + 512) = 1 + 2 \cdot 3 \cdot 1023 = 6139$. An
# undilated stack has $\text{RF} = 1 + 2L$, so $L = (6139 - 1)/2 = 3069$ layers.

# %%
paper = TEACHER_PRESETS["paper"]
rf_paper = receptive_field(paper.kernel_size, dilations(paper))
layers_needed = (rf_paper - 1) // (paper.kernel_size - 1)
rate = AUDIO_PRESETS["paper"].sample_rate
print(f"paper: {paper.layers} layers, dilations {sorted(set(dilations(paper)))}, RF {rf_paper} samples")
print(f"= {1000 * rf_paper / rate:.1f} ms at {rate} Hz; undilated k=3 needs L = {layers_needed} layers")
assert rf_paper == 1 + 2 * 3 * 1023 and receptive_field(3, [1] * layers_needed) == rf_paper
assert receptive_field(3, [1] * (layers_needed - 1)) < rf_paper


# Measured, not just the formula: push one impulse through real CausalConv1d layers (all weights 1, so nothing
# cancels) and count the outputs it reaches; "> 0" after each layer keeps the numbers from overflowing.
def reach(kernel_size, dilation_list, n):
    h = torch.zeros(1, 1, n, dtype=torch.float64)
    h[..., 0] = 1.0
    convs = {}
    for dil in dilation_list:
        if dil not in convs:
            convs[dil] = CausalConv1d(1, 1, kernel_size, dil).double()
            nn.init.ones_(convs[dil].weight)
            nn.init.zeros_(convs[dil].bias)
        with torch.no_grad():
            h = (convs[dil](h) > 0).double()
    return int(h.sum())


n = rf_paper + 100
start = time.perf_counter()
measured = {
    "dilated (paper)": reach(3, dilations(paper), n),
    f"undilated x {layers_needed}": reach(3, [1] * layers_needed, n),
}
print(measured, f"({time.perf_counter() - start:.1f} s)")
assert measured == {"dilated (paper)": rf_paper, f"undilated x {layers_needed}": rf_paper}

# %% [markdown]
# **Model answer.** The paper's teacher (30 layers, $k = 3$, dilations $1, 2, \dots, 512$ three times) sees
# $\text{RF} = 1 + 2 \cdot 3 \cdot 1023 = 6139$ samples (255.8 ms at 24 kHz). An undilated $k = 3$ stack adds 2 samples
# per layer, $\text{RF} = 1 + 2L$, so it needs $L = 3069$ layers, about 102 times as many, each as expensive as a
# dilated one (same taps, same channels): 102 times the parameters, the compute per sample, and the depth for
# gradients to cross. Pushing an impulse through real `CausalConv1d` stacks reaches 6139 outputs in both cases, as
# the formula says.

# %% [markdown]
# ## Exercise 02.3 · The factor $\sqrt{1/2}$ over 30 blocks
#
# > **Exercise.** Remove the factor $\sqrt{1/2}$ from `ScratchBlock`, stack 30 blocks with random weights, and plot
# > the standard deviation of the residual stream against depth with and without it.


# %%
class ScratchBlock(nn.Module):  # notebook 02, section 3, with the residual factor as an argument
    def __init__(self, residual, gate, skip, kernel_size, dilation, cond, scale=RESIDUAL_SCALE):
        super().__init__()
        half = gate // 2
        self.pad, self.scale = (kernel_size - 1) * dilation, scale
        self.filter_conv = nn.Conv1d(residual, half, kernel_size, dilation=dilation)
        self.gate_conv = nn.Conv1d(residual, half, kernel_size, dilation=dilation)
        self.filter_cond = nn.Conv1d(cond, half, 1, bias=False)
        self.gate_cond = nn.Conv1d(cond, half, 1, bias=False)
        self.residual = nn.Conv1d(half, residual, 1)
        self.skip = nn.Conv1d(half, skip, 1)

    def forward(self, h, c):
        past = F.pad(h, (self.pad, 0))
        z = torch.tanh(self.filter_conv(past) + self.filter_cond(c)) * torch.sigmoid(
            self.gate_conv(past) + self.gate_cond(c)
        )
        return (h + self.residual(z)) * self.scale, self.skip(z)


R, n_cond, length = pick(32, 64), 8, pick(2000, 8000)
block_dilations = [2 ** (i % 10) for i in range(30)]  # the paper's layout: 1 ... 512, three times
blocks = [ScratchBlock(R, 2 * R, R, 3, dil, n_cond).double() for dil in block_dilations]  # PyTorch's default init
h0 = torch.randn(4, R, length, dtype=torch.float64)
c = torch.randn(4, n_cond, length, dtype=torch.float64)

curves, added = {}, {}
with torch.no_grad():
    for name, scale in (("with sqrt(1/2)", math.sqrt(0.5)), ("without", 1.0)):
        h, stds, adds = h0, [h0.std().item()], []
        for block in blocks:
            block.scale = scale
            h_next, _ = block(h, c)
            adds.append((h_next / scale - h).var().item())  # Var(R z), what the block adds
            h = h_next
            stds.append(h.std().item())
        curves[name], added[name] = stds, adds
for name, stds in curves.items():
    print(f"{name:15s} std at depth 0, 5, 10, ..., 30:", "  ".join(f"{s:.3f}" for s in stds[::5]))

fig, ax = plt.subplots(figsize=(6.5, 4))
for name, stds in curves.items():
    ax.plot(range(31), stds, "o-", ms=3, label=name)
ax.set(
    xlabel="block (depth)", ylabel="std of the residual stream", title="30 random gated blocks, dilations 1..512 x 3"
)
ax.legend()
plt.show()

# %% [markdown]
# Checks. (1) The scaled scratch stack is the library's: copying its weights into 30 `pwn_lib.layers.ResidualBlock`s
# gives the same residual stream. (2) Without the factor the blocks' outputs add up almost independently:
# $\operatorname{Var}(h_{30}) \approx \operatorname{Var}(h_0) + \sum_l \operatorname{Var}(R z_l)$. (3) With it,
# $\operatorname{Var}(h_{l+1}) \approx \tfrac12(\operatorname{Var}(h_l) + \operatorname{Var}(R z_l))$ settles where
# $\operatorname{Var}(h) = \operatorname{Var}(R z)$, whatever the depth.

# %%
with torch.no_grad():
    h_scratch, h_library = h0, h0
    for block in blocks:
        block.scale = math.sqrt(0.5)
        library = ResidualBlock(R, 2 * R, R, 3, block.pad // 2, n_cond).double()
        library.conv.weight.copy_(torch.cat([block.filter_conv.weight, block.gate_conv.weight]))
        library.conv.bias.copy_(torch.cat([block.filter_conv.bias, block.gate_conv.bias]))
        library.cond.weight.copy_(torch.cat([block.filter_cond.weight, block.gate_cond.weight]))
        library.out.weight.copy_(torch.cat([block.residual.weight, block.skip.weight]))
        library.out.bias.copy_(torch.cat([block.residual.bias, block.skip.bias]))
        h_scratch, h_library = block(h_scratch, c)[0], library(h_library, c)[0]
torch.testing.assert_close(h_scratch, h_library)

var_sum = curves["without"][0] ** 2 + sum(added["without"])
fixed_point = float(np.mean(added["with sqrt(1/2)"][-10:]))
print(f"without: Var(h_30) = {curves['without'][-1] ** 2:.3f}, Var(h_0) + sum Var(R z_l) = {var_sum:.3f}")
print(f"with:    Var(h_30) = {curves['with sqrt(1/2)'][-1] ** 2:.4f}, ", end="")
print(f"mean Var(R z) of the last 10 blocks = {fixed_point:.4f}")
print(f"weight of h_0 left in h_30 through the residual path with the factor: sqrt(1/2)^30 = {0.5**15:.1e}")
assert abs(curves["without"][-1] ** 2 / var_sum - 1) < 0.1
assert abs(curves["with sqrt(1/2)"][-1] ** 2 / fixed_point - 1) < 0.3
assert all(b > a for a, b in zip(curves["without"], curves["without"][1:], strict=False))  # grows at every block

# %% [markdown]
# **Model answer.** Without the factor each block adds its output to the stream, and those outputs are nearly
# uncorrelated with it, so the variance grows linearly with depth: the std rises at every one of the 30 blocks, from
# 1.00 to 1.49 (variance 2.22, against $\operatorname{Var}(h_0) + \sum_l \operatorname{Var}(R z_l) = 2.31$
# predicted). With PyTorch's default initialisation each block adds only about 0.04 of variance, so the growth is
# slow here; larger block outputs (trained weights) make it proportionally faster, and a deep stack's later layers
# then see ever larger inputs and saturate their gates. With $\sqrt{1/2}$ the variance follows
# $v_{l+1} \approx (v_l + \operatorname{Var}(R z_l))/2$: it forgets its starting value geometrically (std 1.00 to
# 0.26 after 5 blocks) and settles at the fixed point $v = \operatorname{Var}(R z)$ (0.027 at depth 30 against
# 0.029 for the last blocks' $\operatorname{Var}(R z)$; std about 0.17), then stays flat to depth 30. So the factor
# makes the stream's scale **independent of depth**, set by what one block adds, not equal to the input's scale. The
# price: the stream is an exponentially weighted average of the last few blocks (the input keeps a weight of
# $\sqrt{1/2}^{30} = 3.1 \times 10^{-5}$ after 30 blocks); what carries every layer to the output is the skip
# path, summed with its own $1/\sqrt{L}$ factor. The scaled scratch stack equals 30 `pwn_lib.layers.ResidualBlock`s
# with the same weights.

# %% [markdown]
# ## Exercise 02.4 · The upsampler for a hop of 300, and hops of 293 and 294
#
# > **Exercise.** Build the upsampler for a hop of 300 samples (12.5 ms at 24 kHz; the `paper` preset uses 240)
# > and print its strides. Why does `pwn_lib` refuse a hop of 293, but not 294?
#
# `stride_factors` splits the hop into its prime factors, then greedily packs them, largest first, into strides of at
# most 16. $300 = 2^2 \cdot 3 \cdot 5^2$ gives $5$, then $5 \cdot 3 = 15$, then $2 \cdot 2 = 4$: strides [5, 15, 4].


# %%
def linear_upsample(c, hop, offset=0.0):  # notebook 02, section 4, with the frame centres moved by `offset`
    centres = np.arange(c.shape[-1]) * hop + (hop - 1) / 2 + offset
    t = np.arange(c.shape[-1] * hop)
    return np.stack([np.interp(t, centres, row) for row in c])


def centre_offset(strides):
    """How many samples after k hop + (hop - 1) / 2 a stack of pwn_lib's stages puts frame k's centre.

    From the crop of one stage of stride s (start = s + s // 2): the centre lands at k s + (s - 1) / 2 for even s and
    half a sample later for odd s; every later stage multiplies that half sample by its stride."""
    return sum(0.5 * (s % 2) * math.prod(strides[i + 1 :]) for i, s in enumerate(strides))


n_mels, frames = 80, 12
up_300 = ConditionUpsampler(n_mels, 300)
kernels = [2 * s for s in up_300.strides]
print(f"hop 300 = {' x '.join(map(str, up_300.strides))}: strides {up_300.strides}, kernels {kernels}")
print(f"(the paper preset in pwn_lib.config has hop {paper.hop_length}: strides {stride_factors(paper.hop_length)})")
ramp = torch.arange(frames, dtype=torch.float32).repeat(1, n_mels, 1)  # frame k holds the value k in every channel
with torch.no_grad():
    out = up_300(ramp)
    constant = up_300(torch.full((1, n_mels, frames), 3.0))
print(f"(1, {n_mels}, {frames}) -> {tuple(out.shape)}")
assert up_300.strides == [5, 15, 4] and math.prod(up_300.strides) == 300 and out.shape == (1, n_mels, frames * 300)
torch.testing.assert_close(constant, torch.full_like(constant, 3.0))  # each stage's weights sum to one

# On a ramp of frames the stages compose to linear interpolation, but with the frame centres moved by the odd strides.
interior = slice(400, (frames - 2) * 300)  # away from the held ends
shift = centre_offset(up_300.strides)
error_centred = np.abs(out[0, :, interior].numpy() - linear_upsample(ramp[0].numpy(), 300)[:, interior]).max()
np.testing.assert_allclose(
    out[0, :, interior].numpy(), linear_upsample(ramp[0].numpy(), 300, shift)[:, interior], atol=1e-4
)
print(
    f"at initialisation: linear interpolation between centres 300 k + 149.5 + {shift:g} samples "
    f"(against centres 300 k + 149.5 the error is {error_centred:.3f} frames = {300 * error_centred:.0f} samples)"
)
for hop in (256, paper.hop_length, 294, 300):
    print(
        f"  hop {hop}: strides {stride_factors(hop)}, frame centres {centre_offset(stride_factors(hop)):g} samples late"
    )

# %% [markdown]
# **293 is refused, 294 is not.** $294 = 2 \cdot 3 \cdot 7^2$ has no prime factor above 16, so `pwn_lib` builds it with
# strides [7, 7, 6]. The refusal rule (`stride_factors` raises `ValueError`) is *a prime factor larger than 16*; near
# 294 that catches, for example, 293 (prime), 291 = 3 · 97 and 289 = 17².

# %%
up_294 = ConditionUpsampler(n_mels, 294)
with torch.no_grad():
    shape_294 = tuple(up_294(ramp).shape)
print(f"hop 294: strides {up_294.strides}, (1, {n_mels}, {frames}) -> {shape_294}")
assert up_294.strides == [7, 7, 6] and shape_294 == (1, n_mels, frames * 294)


def largest_prime_factor(n):
    p, largest = 2, 1
    while n > 1:
        while n % p == 0:
            largest, n = p, n // p
        p += 1
    return largest


refused = []
for hop in range(280, 321):
    try:
        ConditionUpsampler(n_mels, hop)
    except ValueError:
        refused.append(hop)
print("hops in 280..320 that pwn_lib refuses:", refused)
assert refused == [hop for hop in range(280, 321) if largest_prime_factor(hop) > 16]
assert 294 not in refused and 293 in refused
print("refused for 293:", end=" ")
try:
    stride_factors(293)
except ValueError as err:
    print(err)
with torch.no_grad():  # the "repeat" upsampler has no strides to factor and takes any hop
    print("repeat mode, hop 293:", tuple(ConditionUpsampler(n_mels, 293, "repeat")(ramp).shape))

# %% [markdown]
# **Model answer.** For a hop of 300 samples (12.5 ms at 24 kHz) `ConditionUpsampler` builds three transposed
# convolutions with strides **[5, 15, 4]** (kernels 10, 30 and 8), whose product is 300: 12 frames become 3,600
# samples, and a constant stays constant. (The paper preset's hop of 240, 10 ms at 24 kHz, gives strides [15, 16].)
#
# **294 is accepted, 293 is not.** $294 = 2 \cdot 3 \cdot 7^2$ is accepted, with strides
# [7, 7, 6] (checked: 12 frames become 3,528 samples). What `pwn_lib` refuses is a hop with a prime factor larger
# than 16 (`stride_factors(hop, max_factor=16)` raises `ValueError`): every stage is a transposed convolution with an
# integer stride $s \le 16$ and kernel $2s$, and no product of such strides contains a prime $p > 16$, so that hop
# would need a single stage of stride $p$ with a kernel of $2p > 32$ taps. Between 280 and 320, 31 of the 41 hops are
# refused (printed above), including 293 (prime), 291 = 3 · 97, 295 = 5 · 59 and 289 = 17²; the neighbours 294,
# 297, 300 and 308 are accepted. The `"repeat"` upsampler accepts any hop, since it only repeats frames.
#
# **A finding for instructors (unfixed, the library is unchanged):** with odd strides the stages are not centred.
# One stage of stride $s$ crops from $s + \lfloor s/2 \rfloor$, which puts frame $k$'s centre at $ks + (s-1)/2$ only
# for even $s$ and half a sample later for odd $s$; later stages magnify that. For hop 300 the three stages together
# interpolate linearly between centres $300k + 149.5 + 32$: the frame centres land **32 samples late** (1.3 ms),
# which the assert above confirms to 1e-4 (against the centres $300k + 149.5$ the error is 0.107 frames). Hop 256
# ([16, 16]) is exact; the paper preset's hop 240 is 8 samples late and hop 294 is 24 late. A learned upsampler can
# absorb such a shift in training, but its initialisation does not do what the notebook's equation says for these
# hops.

# %% [markdown]
# ## Exercise 02.5 · Naive against cached generation past the receptive field
#
# > **Exercise.** Predict from the equation how the naive speed at $t \gg \text{RF}$ compares with the cached speed for
# > this model, then run `generate_naive` past the receptive field and measure it.
#
# **Prediction.** Past the receptive field a naive step reruns the whole network (input projection, every block, the
# head) on a window of RF positions to keep the last one, and a cached step runs the same layers on one position:
# $\text{naive} / \text{cached} = L \cdot \text{RF} \cdot kC^2 / (L \cdot kC^2) = \text{RF}$ in arithmetic, 2,047
# for the notebook's fast-mode model (10 layers, $k = 3$, dilations 1 ... 512). So the cached generator should be about
# 2,000 times faster per sample.

# %%
gen_cfg = pick(  # the notebook's generation model
    WaveNetConfig(layers=10, stacks=1, residual_channels=32, gate_channels=64, skip_channels=32, cond_channels=0),
    dataclasses.replace(TEACHER_PRESETS["course"], cond_channels=0),
)
model = WaveNet(gen_cfg).eval()
rf = model.receptive_field
print(f"model: {gen_cfg.layers} layers, receptive field {rf} samples; predicted arithmetic ratio {rf}")


class StepTimer:
    """Wraps a model's naive_step; records each step's window length and wall time (generate_naive calls it)."""

    def __init__(self, model):
        self.step, self.windows, self.times = model.naive_step, [], []

    def __call__(self, shifted, *args, **kwargs):
        start = time.perf_counter()
        out = self.step(shifted, *args, **kwargs)
        self.times.append(time.perf_counter() - start)
        self.windows.append(shifted.shape[-1])
        return out


def cached_seconds_per_sample(m, n):
    start = time.perf_counter()
    m.generate(n_samples=n, generator=torch.Generator().manual_seed(0), progress=False)
    return (time.perf_counter() - start) / n


# Naive step t reruns the stack on the last min(t + 1, RF) inputs (WaveNet.naive_step); from t = RF - 1 on, the
# window stays at RF. Time naive_step at growing windows for this model, and the cached generator per sample.
windows = [1, 128, 512, rf]
naive_ms = dict.fromkeys(windows, math.inf)
with torch.no_grad():
    history = 0.1 * torch.randn(1, 1, rf)
    for _ in range(5):  # interleaved repeats, best of 5: a change in the machine's load hits every window alike
        for w in windows:
            start = time.perf_counter()
            model.naive_step(history[..., -w:], None, None)
            naive_ms[w] = min(naive_ms[w], 1e3 * (time.perf_counter() - start))
cached_ms = 1e3 * cached_seconds_per_sample(model, pick(300, 2000))
print("naive step with a window of W samples:", ", ".join(f"W={w}: {t:.2f} ms" for w, t in naive_ms.items()))
print(f"cached: {cached_ms:.2f} ms per sample, whatever t")
print(f"at t >= RF: naive/cached x{naive_ms[rf] / cached_ms:.1f} measured, x{rf} predicted from the arithmetic")
assert naive_ms[rf] > 1.5 * naive_ms[1]  # the window's length does cost something

# %% [markdown]
# Running `generate_naive` itself past the receptive field of this model means 2,047 naive steps of 10 to 30 ms before
# it gets there, too long for an answer that should run in seconds. So we run it on the same widths with fewer layers,
# `pick(6, 10)` (receptive field 127 in fast mode), for four receptive fields (two in full mode), timing every step,
# and check that what it generates beyond the receptive field is exactly what the model predicts teacher-forced: the
# truncated window loses nothing.

# %%
short_cfg = dataclasses.replace(gen_cfg, layers=pick(6, 10))
short = WaveNet(short_cfg).eval()
short_rf = short.receptive_field
timer = StepTimer(short)
short.naive_step = timer
n_gen = pick(4, 2) * short_rf
start = time.perf_counter()
x_naive, params_naive = short.generate_naive(
    n_samples=n_gen, generator=torch.Generator().manual_seed(0), progress=False, return_params=True
)
naive_total = time.perf_counter() - start
with torch.no_grad():
    teacher_forced = short(x_naive)
print(
    f"generate_naive, {n_gen} samples = {n_gen // short_rf} RF (RF {short_rf}): {naive_total:.2f} s; "
    f"max |params - teacher-forced| {(params_naive - teacher_forced).abs().max():.1e}"
)
assert (params_naive - teacher_forced).abs().max() < 1e-5

step_ms = 1e3 * np.array(timer.times)
steady = float(np.median(step_ms[short_rf:]))
early = float(np.median(step_ms[: max(short_rf // 8, 1)]))
short_cached_ms = 1e3 * cached_seconds_per_sample(short, n_gen)
print(f"naive ms/step: first RF/8 steps {early:.2f}, steps t >= RF {steady:.2f} (median); cached {short_cached_ms:.2f}")
print(f"steady naive/cached x{steady / short_cached_ms:.1f}, predicted x{short_rf}")
# Why the cost stops growing: the window generate_naive hands to naive_step is min(t + 1, RF) samples long.
assert timer.windows == [min(t + 1, short_rf) for t in range(n_gen)]

fig, ax = plt.subplots(figsize=(7, 4))
ax.plot(step_ms, lw=0.6, label="generate_naive, each step")
ax.axhline(short_cached_ms, color="C1", label="generate (cached), mean per step")
ax.axvline(short_rf, color="grey", ls=":", label="receptive field")
ax.set(
    xlabel="step t (samples)",
    ylabel="wall time per step (ms)",
    yscale="log",
    title=f"naive steps: flat past t = RF = {short_rf}; cached far below",
)
ax.legend()
plt.show()

# %% [markdown]
# **Model answer.** The equation predicts that past the receptive field a naive step does RF times the arithmetic of a
# cached one, **2,047 times** for the notebook's model (10 layers, $k = 3$, dilations 1 ... 512), and that the naive
# cost per sample stops growing at $t = \text{RF}$, since the window is capped there. The second half holds:
# `generate_naive`, run for four receptive fields on a 6-layer model with the same widths (RF 127), hands `naive_step`
# a window of $\min(t + 1, \text{RF})$ samples (checked), and what it generates past the receptive field equals the
# teacher-forced pass (to 6e-8), so the truncated window loses nothing. The first half fails by orders of magnitude in
# wall-clock time. In the run that produced this text a naive step of the 10-layer model took 27.9 ms at a full window
# of 2,047 samples against 3.98 ms per cached sample: **about 7 times slower, not 2,047 times** (5.8 to 9.8 over seven
# runs on this shared machine). For the 6-layer model (predicted 127) the steady ratio was 2.4 (1.4 to 2.6 over the
# runs), and its naive steps cost about the same early and late (median 6.7 ms in the first 15 steps, 7.9 ms past the
# RF). The naive step grows only slowly with its window (7.7 ms at W=1, 8.5 at 128, 14.5 at 512, 27.9 at 2,047: a
# factor of 3.6 for 2,047 times the arithmetic). At batch 1 both generators are dominated by a fixed cost per PyTorch
# operation, not by arithmetic: a cached step runs dozens of tiny matrix products (32 x 64) per sample, each far too
# small to reach the CPU's arithmetic speed, while a naive step runs a similar number of operations, convolutions over
# 2,047 positions that do run near full speed. So operation counts, not FLOPs, decide at this size. The measured ratio
# should move towards the predicted one as each step carries more arithmetic (wider layers such as the paper's 512
# channels, or a batch of utterances) or less overhead (the compiled loop `generate(compiled=True)`); that was not
# measured here. What the queues always deliver is a cost per sample independent of the receptive field, which the
# naive generator cannot: its arithmetic grows with RF, and its wall time about doubled between W=512 and W=2,047.
