# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Model answers · notebook 03 (Output distributions: μ-law softmax, discretized mixture of logistics, Gaussian)
#
# The instructor's worked version of the four exercises of notebook 03; it runs in about a minute in fast mode
# (`PWN_FAST=1`) on the course's 2-core CPU (measured over four runs while other jobs shared the two cores: 50 to 74 s
# wall-clock, 29 to 35 s of CPU time).

# %%
import math

import numpy as np
import torch
from scipy.special import expit
from torch.utils.flop_counter import FlopCounterMode

from pwn_lib.audio import mulaw_decode, mulaw_encode, quantize
from pwn_lib.config import TEACHER_PRESETS, TRAIN_PRESETS, fast_mode, pick, seed_everything
from pwn_lib.data import load_corpus
from pwn_lib.distributions import DiscretizedMixLogistics, bin_centres, bin_width
from pwn_lib.wavenet import WaveNet

seed_everything(0)
torch.set_num_threads(1)
print("fast mode:", fast_mode())
SR = 16_000
utterances = load_corpus("train")  # "the corpus" below is the train split, as in notebook 03
audio = np.concatenate([u.audio for u in utterances]).astype(np.float64)
print(f"{len(utterances)} training utterances, {len(audio) / SR / 60:.1f} min at {SR} Hz")

# %% [markdown]
# ## Exercise 03.1 · The softmax head at paper size
#
# > **Exercise.** Redo the numbers for the `paper` presets (`TEACHER_PRESETS["paper"]`, `TRAIN_PRESETS["paper"]`).


# %%
def head_cost(c_out, teacher, train):
    """The notebook's head costs: the last 1x1 conv from S skip channels to c_out outputs."""
    s = teacher.skip_channels
    return {
        "parameters": s * c_out + c_out,
        "MFLOP per sample": 2 * s * c_out / 1e6,
        "logits per batch (GB, float32)": train.batch_size * train.window * c_out * 4 / 1e9,
    }


def body_flops_per_sample(cfg):
    """The notebook's count: per layer the dilated conv, the conditioning 1x1 and the residual and skip 1x1s."""
    per_layer = 2 * (
        cfg.kernel_size * cfg.residual_channels * cfg.gate_channels
        + cfg.cond_channels * cfg.gate_channels
        + cfg.gate_channels // 2 * (cfg.residual_channels + cfg.skip_channels)
    )
    return cfg.layers * per_layer


costs = {}
for name in ("course", "paper"):
    teacher, train = TEACHER_PRESETS[name], TRAIN_PRESETS[name]
    softmax, mol = head_cost(2**16, teacher, train), head_cost(3 * teacher.n_mixtures, teacher, train)
    body = body_flops_per_sample(teacher)
    costs[name] = softmax, mol, body
    print(f"{name}: S = {teacher.skip_channels}, batch {train.batch_size} x {train.window} samples")
    for label, cost in [("65,536-way softmax", softmax), (f"MoL, K = {teacher.n_mixtures}", mol)]:
        print(f"  {label:20s}", ", ".join(f"{k}: {v:,.4g}" for k, v in cost.items()))
    print(
        f"  residual layers: {body / 1e6:.2f} MFLOP per sample; the softmax head costs "
        f"{softmax['MFLOP per sample'] * 1e6 / body:.2f} times that"
    )

# %%
# Independent check: let PyTorch count the FLOPs of the paper teacher's residual layers and of a softmax head, on
# the meta device (shapes only, nothing allocated), and count the head's parameters.
paper = TEACHER_PRESETS["paper"]
T = 64
with torch.device("meta"):
    model = WaveNet(paper)
    head = torch.nn.Conv1d(paper.skip_channels, 2**16, 1)
    h, cu = torch.zeros(1, paper.residual_channels, T), torch.zeros(1, paper.cond_channels, T)
with FlopCounterMode(display=False) as counter:
    for block in model.blocks:
        h, _ = block(h, cu, None)
counted_body = counter.get_total_flops() / T
with FlopCounterMode(display=False) as counter:
    head(torch.zeros(1, paper.skip_channels, T, device="meta"))
counted_head = counter.get_total_flops() / T
teacher_params = sum(p.numel() for p in model.parameters())
softmax, mol, body = costs["paper"]
unseen = int((np.bincount(quantize(audio, 16), minlength=2**16) == 0).sum())
print(f"{unseen:,} of the 65,536 classes ({unseen / 2**16:.0%}) never occur in the training set")
print(f"FlopCounterMode: residual layers {counted_body / 1e6:.2f} MFLOP/sample, softmax head {counted_head / 1e6:.2f}")
print(
    f"the whole paper teacher (MoL head) has {teacher_params:,} parameters; "
    f"a softmax head alone {softmax['parameters']:,}"
)
assert counted_body == body and counted_head == softmax["MFLOP per sample"] * 1e6
assert sum(p.numel() for p in head.parameters()) == softmax["parameters"]

# %% [markdown]
# **Model answer.** At paper size (S = 256 skip channels, batches of 32 clips of 7,680 samples) a 65,536-way softmax
# head has 16,842,752 parameters, costs 33.55 MFLOP per sample and produces 64.42 GB of float32 logits per training
# batch (as much again for their gradients), against 7,710 parameters, 0.015 MFLOP and 0.03 GB for the MoL with K = 10.
# The head alone would have more than half as many parameters as the whole 31.2-million-parameter teacher. What changes
# from the course preset is the *relative* compute: the paper's 512-channel residual layers cost 61.44 MFLOP per sample
# (confirmed by `FlopCounterMode`), so the softmax head adds 0.55 times the body rather than the 29 times it adds to the
# small course teacher (8.39 against 0.29 MFLOP). At paper size the FLOPs are no longer the argument against the
# softmax; the memory is (64 GB of logits per batch does not fit on a 2017 GPU), and so are the data: 21,855 of the
# 65,536 classes (33 %) never occur in the training set, and neighbouring values share no evidence, at any model size.

# %% [markdown]
# ## Exercise 03.2 · μ-law on the quietest frames
#
# > **Exercise.** Compute the SNR of 8-bit μ-law on the quietest 10 % of 20 ms frames of the corpus, and compare it
# > with 8-bit linear on the same frames.


# %%
def linear(x, bits):
    step = 2 / (2**bits - 1)
    return np.rint((np.clip(x, -1, 1) + 1) / step) * step - 1


def snr_db(x, x_hat):
    return 10 * np.log10(np.sum(x**2) / np.sum((x - x_hat) ** 2))


FRAME = SR // 50  # 20 ms, cut within each utterance so that no frame straddles two of them
frames = np.concatenate(
    [u.audio[: len(u.audio) // FRAME * FRAME].astype(np.float64).reshape(-1, FRAME) for u in utterances]
)
level = np.sqrt(np.mean(frames**2, axis=1))
quiet = frames[np.argsort(level)[: math.ceil(0.1 * len(frames))]]
mulaw8 = mulaw_decode(mulaw_encode(quiet)).astype(np.float64)
linear8 = linear(quiet, 8)
power = np.mean(quiet**2)
print(f"{len(quiet):,} of {len(frames):,} frames; their level {10 * np.log10(power):.1f} dBFS")
for name, x_hat in [("8-bit mu-law", mulaw8), ("8-bit linear", linear8)]:
    per_frame = 10 * np.log10(np.sum(quiet**2, axis=1) / np.sum((quiet - x_hat) ** 2, axis=1))
    print(f"{name}: {snr_db(quiet, x_hat):6.1f} dB over the frames pooled, median frame {np.median(per_frame):6.1f} dB")
print(
    f"all frames, for comparison: mu-law {snr_db(frames, mulaw_decode(mulaw_encode(frames)).astype(np.float64)):.1f}"
    f" dB, linear {snr_db(frames, linear(frames, 8)):.1f} dB; 16-bit on the quiet frames (step^2 / 12): "
    f"{10 * np.log10(power / (bin_width(16) ** 2 / 12)):.1f} dB"
)

# %%
# Independent predictions. mu-law: a quantiser with a local step of (2 / mu) dx/dy, dx/dy = ln(1 + mu)(1 + mu|x|)/mu,
# adds noise of variance step^2 / 12 at each sample (the high-resolution approximation of companding).
MU = 255
local_step = 2 / MU * np.log1p(MU) * (1 + MU * np.abs(quiet)) / MU
predicted_mulaw = 10 * np.log10(np.sum(quiet**2) / np.sum(local_step**2 / 12))
# linear: 2**8 levels, an even number, so no level at zero; a quiet sample becomes +-half a step (a square wave).
half_step = bin_width(8) / 2
on_half_step = np.mean(np.isclose(np.abs(linear8), half_step))
predicted_linear = 10 * np.log10(power / half_step**2)
print(
    f"mu-law: smallest local step {local_step.min():.2e}, predicted {predicted_mulaw:.1f} dB; "
    f"linear: {on_half_step:.1%} of samples at +-{half_step:.5f}, "
    f"predicted {predicted_linear:.1f} dB"
)
assert abs(snr_db(quiet, mulaw8) - predicted_mulaw) < 1.0
assert on_half_step > 0.99 and abs(snr_db(quiet, linear8) - predicted_linear) < 1.0

# %% [markdown]
# **Model answer.** The quietest 10 % of the 20 ms frames (6,105 of 61,046, together at −67.8 dBFS) keep 17.9 dB of SNR
# under 8-bit μ-law, but −19.1 dB under 8-bit linear: the linear error is larger than the signal (median frame 9.4 dB
# against −28.1 dB). Over all frames the two differ by only 2.7 dB (37.9 against 35.2 dB), so μ-law's advantage is
# almost entirely in the quiet passages, 37 dB there. Both figures are what theory predicts: μ-law's local step near
# zero is $2\ln(1+\mu)/\mu^2 \approx 1.7\cdot10^{-4}$, and its step²/12 noise gives a predicted 17.9 dB; 8-bit linear
# has 256 levels, an even number, so none at zero, and 100 % of these quiet samples land on ±Δ/2 = ±0.0039 — a square
# wave of half a step, predicting −19.6 dB. For scale, 16-bit audio would still give only 33.3 dB on these frames. μ-law
# pays for this on loud passages: a full-scale sine gets 6.02 · 8 + 1.76 ≈ 50 dB from 8-bit linear, but μ-law stays near
# 37 dB at every level (notebook 03's SNR curve).

# %% [markdown]
# ## Exercise 03.3 · Refitting the MoL at 8 bits, and with a lower scale floor
#
# > **Exercise.** Refit with `bits=8` on the 8-bit counts. How many bits per sample does the MoL need now, and how
# > does the gap to the empirical entropy change? Then try `log_scale_min=-12` at 16 bits: can a component now
# > follow the peak at 0, and does the optimiser stay stable?


# %%
def counts_of(bits):
    return np.bincount(quantize(audio, bits), minlength=2**bits)


def fit_mol(counts, bits, init, steps, log_scale_min=-9.0, mean_lr=0.05):
    """The notebook's fit (Adam, lr 0.05, on the occupied bins' counts), with an optional own learning rate for
    the means. Returns the parameters (3K,), the loss after each step and each step's narrowest effective scale."""
    occupied = torch.from_numpy(np.flatnonzero(counts))
    weights = torch.from_numpy(counts[occupied.numpy()]).double() / counts.sum()
    x = (occupied.double() * bin_width(bits) - 1)[None]
    logits, means, log_scales = (t.clone().requires_grad_() for t in init.double().chunk(3))
    optimiser = torch.optim.Adam([{"params": [logits, log_scales]}, {"params": [means], "lr": mean_lr}], lr=0.05)
    trace, narrowest = [], []
    for _ in range(steps):
        params = torch.cat([logits, means, log_scales])[None, :, None]
        dist = DiscretizedMixLogistics(params.expand(1, -1, x.shape[1]), bits, log_scale_min)
        loss = -(weights * dist.log_prob(x)[0]).sum() / math.log(2)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        trace.append(loss.item())
        narrowest.append(dist.log_scales.min().item())
    return torch.cat([logits, means, log_scales]).detach(), np.array(trace), np.array(narrowest)


def entropy_bits(counts):
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum())


def mol_pmf_from_scratch(params, bits, log_scale_min=-9.0):
    """The notebook's float64 NumPy pmf over all 2**bits bins, from [logits | means | log-scales]."""
    logits, means, log_scales = np.split(params.numpy(), 3)
    step = 2 / (2**bits - 1)
    centres = np.arange(2**bits) * step - 1
    s = np.exp(np.maximum(log_scales, log_scale_min))[:, None]
    upper, lower = expit((centres + step / 2 - means[:, None]) / s), expit((centres - step / 2 - means[:, None]) / s)
    upper[:, -1], lower[:, 0] = 1.0, 0.0  # the edge bins take the tails
    w = np.exp(logits - logits.max())
    return (w / w.sum()) @ (upper - lower)


def score(params, counts, bits, log_scale_min=-9.0):
    """Bits per sample of the final parameters, from scratch; checked against the library's log_prob."""
    pmf = mol_pmf_from_scratch(params, bits, log_scale_min)
    occupied = np.flatnonzero(counts)
    p_hat = counts[occupied] / counts.sum()
    bits_per_sample = float(-p_hat @ np.log2(pmf[occupied]))
    x = torch.from_numpy(occupied * bin_width(bits) - 1)[None]
    dist = DiscretizedMixLogistics(params[None, :, None].expand(1, -1, x.shape[1]), bits, log_scale_min)
    library = -(torch.from_numpy(p_hat) * dist.log_prob(x)[0]).sum().item() / math.log(2)
    assert abs(pmf.sum() - 1) < 1e-9 and abs(bits_per_sample - library) < 1e-6
    assert bits_per_sample >= entropy_bits(counts) - 1e-9  # Gibbs: no pmf beats the empirical entropy
    return bits_per_sample


K, STEPS = pick(4, 6), pick(150, 400)
notebook_init = torch.cat([torch.zeros(K), torch.linspace(-0.1, 0.1, K), torch.linspace(-6, -2, K)])
fitted, scores = {}, {}
for bits in (8, 16):
    counts = counts_of(bits)
    fitted[bits] = fit_mol(counts, bits, notebook_init, STEPS)  # (params, loss trace, narrowest log-scale)
    scores[bits] = entropy_bits(counts), score(fitted[bits][0], counts, bits)
    print(
        f"{bits:2d} bits: MoL {scores[bits][1]:.3f} bits per sample (the loop's last loss, before the last step: "
        f"{fitted[bits][1][-1]:.3f}), empirical entropy {scores[bits][0]:.3f}, gap "
        f"{scores[bits][1] - scores[bits][0]:.3f} bits"
    )
print(
    f"entropy difference 16 - 8 bits: {scores[16][0] - scores[8][0]:.3f} bits; log2(65535 / 255) = "
    f"{math.log2(65535 / 255):.3f} for a density smooth on the scale of an 8-bit bin"
)
counts8 = counts_of(8)
print(f"the two 8-bit bins around 0 hold {counts8[127:129].sum() / counts8.sum():.1%} of all samples")

# %%
# log_scale_min = -12 at 16 bits. First the notebook's fit unchanged: does the floor of -9 ever bind?
counts16 = counts_of(16)
entropy16 = entropy_bits(counts16)
at_9, trace_9, _ = fitted[16]  # the fit above, at the default floor of -9
at_12, trace_12, narrow_12 = fit_mol(counts16, 16, notebook_init, STEPS, log_scale_min=-12.0)
print(
    f"notebook init: narrowest log-scale over the fit {narrow_12.min():.2f}; {score(at_9, counts16, 16):.3f} bits "
    f"at floor -9, {score(at_12, counts16, 16, -12.0):.3f} at floor -12; identical: {torch.equal(at_9, at_12)}"
)
assert narrow_12.min() > -9 and torch.equal(at_9, at_12)  # the clamp never acts, so the floor cannot matter

# %%
# Then give the fit a fifth component placed on the peak (mean 0, log-scale -10). With the notebook's lr of 0.05
# for every parameter, follow that component's mean over the first steps.
peak_init = torch.cat(
    [torch.zeros(K + 1), torch.linspace(-0.1, 0.1, K), torch.zeros(1), torch.linspace(-6, -2, K), torch.tensor([-10.0])]
)
for steps in (1, 10):
    kicked, _, _ = fit_mol(counts16, 16, peak_init, steps, log_scale_min=-12.0)
    print(
        f"lr 0.05 for the means, after {steps:2d} step(s): peak component's mean {kicked[2 * K + 1].item():+.4f}, "
        f"log-scale {kicked[-1].item():.2f} ({abs(kicked[2 * K + 1].item()) / bin_width(16):,.0f} bins from 0)"
    )
peak_fits = {}
for floor in (-12.0, -9.0):  # a 50x smaller step for the means keeps the component on the peak
    params, trace, _ = fit_mol(counts16, 16, peak_init, STEPS, log_scale_min=floor, mean_lr=1e-3)
    weight = torch.softmax(params[: K + 1], 0)[-1].item()
    peak_fits[floor] = score(params, counts16, 16, floor), trace
    print(
        f"mean lr 1e-3, floor {floor:g}: {peak_fits[floor][0]:.3f} bits (gap {peak_fits[floor][0] - entropy16:.3f}); "
        f"peak component: weight {weight:.3f}, mean {params[2 * K + 1].item():+.1e}, effective log-scale "
        f"{max(params[-1].item(), floor):.2f}; losses finite: {np.isfinite(trace).all()}, largest rise between "
        f"steps {np.diff(trace).max():.2f} bits"
    )
print(
    f"the notebook's fit: {scores[16][1]:.3f} bits (gap {scores[16][1] - entropy16:.3f}), largest rise "
    f"{np.diff(trace_9).max():.2f} bits"
)
assert np.isfinite(peak_fits[-12.0][1]).all() and peak_fits[-12.0][0] < scores[16][1] - 0.05
middle = counts16[2**15 - 50 : 2**15 + 50]
fwhm = 2 * math.log(3 + 2 * math.sqrt(2))  # a logistic's full width at half maximum, in units of its scale
print(
    f"the corpus's peak at 0 is {np.count_nonzero(middle >= middle.max() / 2)} bins wide at half height; a logistic "
    f"of log-scale -9.25 is {fwhm * math.exp(-9.25) / bin_width(16):.1f} bins wide, one at the floor -9 "
    f"{fwhm * math.exp(-9.0) / bin_width(16):.1f} bins"
)

# %% [markdown]
# **Model answer.** *8 bits.* On the 8-bit counts the MoL (K = 4, 150 steps) needs 5.796 bits per sample against an
# empirical entropy of 5.787: a gap of 0.010 bits, against 0.174 bits at 16 bits (13.700 against 13.526; the notebook
# prints 13.71, the loss before the last step). At 8 bits the awkward feature of the data, the narrow peak at 0, falls
# inside the two bins around 0 (24.0 % of all samples), so its shape no longer has to be modelled. It is also why the
# entropy falls by only 7.740 bits from 16 to 8 bits instead of the log₂(65535/255) = 8.006 bits a density smooth on the
# scale of an 8-bit bin would lose.
#
# *log_scale_min = −12 at 16 bits.* With the notebook's initialisation the floor never acts: the narrowest scale during
# the whole fit is e^−6.33, so floors of −9 and −12 give bit-identical fits (13.700 bits). To see whether a component
# can follow the peak, start a fifth one on it (mean 0, log-scale −10). With Adam at the notebook's lr of 0.05, the
# first step moves its mean to −0.0500, 1,638 bins away, and after ten steps it is 6,860 bins away: it has lost the
# peak, even with the floor at −12, because Adam moves each parameter by about lr per step, whatever the gradient, and
# 0.05 is 1,638 bins, some 180 times the width of the peak (9 bins at half height). With a learning rate of 1e-3 for the
# means the component stays on the peak (weight 0.092, mean −1.5e-5, the centre of the bin just below 0) and the fit
# drops to 13.559 bits (gap 0.033) at floor −12. So yes, at −12 a component can follow the peak, but it settles at a
# log-scale of −9.25, hardly below the old floor, and the same fit with the floor at −9 does as well, marginally better
# (13.554 bits, gap 0.028): the peak is 9 bins wide at half height, and a logistic at the floor is already narrow enough
# to cover it (14.3 bins wide at −9, 11.1 at −9.25). The optimiser stays stable at −12: every loss is finite, and the
# largest rise between two steps is 0.51 bits at either floor (0.29 bits in the notebook's fit); Adam's oscillation sets
# those rises, not the floor. What kept the MoL off the peak was the step size on the means, not `log_scale_min`.

# %% [markdown]
# ## Exercise 03.4 · A third component, 6 bits, and the most mass in one bin
#
# > **Exercise.** Add a third slider group for a third component, and a dropdown (`widgets.Dropdown`) that switches
# > between 8 and 6 bits. Which parameter setting puts the most mass in a single bin?
#
# Answered without widgets: the sliders' ranges become arrays and the dropdown a loop over `bits`.

# %%
SLIDERS = {"mean": np.round(np.arange(-1.3, 1.3001, 0.01), 2), "log_scale": np.round(np.arange(-12, 0.001, 0.1), 1)}
DROPDOWN = (8, 6)


def pmf_of(weights, means, log_scales, bits):
    """Bin masses (2**bits,) of a mixture of len(weights) components: what the plot's bars show."""
    w = torch.as_tensor(weights, dtype=torch.float64).clamp_min(1e-12)
    p = torch.cat([w.log(), torch.as_tensor(means).double(), torch.as_tensor(log_scales).double()])
    centres = bin_centres(bits, torch.float64)
    return (
        DiscretizedMixLogistics(p[None, :, None].expand(len(centres), -1, -1), bits)
        .log_prob(centres[:, None])[:, 0]
        .exp()
    )


three = pmf_of([0.5, 0.3, 0.2], [-0.3, 0.5, 0.9], [-3.0, -2.0, -4.0], bits=6)
print(f"three components at 6 bits: {len(three)} bins, total mass {three.sum().item():.12f}")
assert len(three) == 64 and abs(three.sum().item() - 1) < 1e-9

# %%
# A mixture's mass in a bin is the weighted mean of its components' masses there, so no mixture beats its best
# component: search one component over the whole slider grid, for each bit depth.
M, L = np.meshgrid(SLIDERS["mean"], SLIDERS["log_scale"], indexing="ij")
best_mass = {}
for bits in DROPDOWN:
    centres = bin_centres(bits, torch.float64)
    grid = torch.tensor(np.stack([np.zeros(M.size), M.ravel(), L.ravel()]))[None].expand(len(centres), -1, -1)
    masses = DiscretizedMixLogistics(grid, bits).log_prob(centres[:, None].expand(-1, M.size)).exp()  # (bins, grid)
    interior = masses[1:-1].max(0).values.view(M.shape)
    edge = masses[[0, -1]].max(0).values.view(M.shape)
    best_mass[bits] = interior, edge
    i, j = np.unravel_index(int(torch.maximum(interior, edge).argmax()), M.shape)
    print(
        f"{bits} bits, bin width {bin_width(bits):.5f}: largest single-bin mass on the grid "
        f"{max(interior.max().item(), edge.max().item()):.15f} at mean {M[i, j]:+.2f}, log-scale {L[i, j]:g}"
    )
    for log_s in (-9, -7, -6, -5, -4, -3, -2, -1, 0):
        j = int(np.flatnonzero(SLIDERS["log_scale"] == log_s)[0])
        print(
            f"  log s {log_s:3d}: best interior bin {interior[:, j].max().item():.4f}, "
            f"best edge bin {edge[:, j].max().item():.4f}"
        )

# %%
# Closed forms. A logistic of scale s centred on a bin centre puts tanh(width / 4s) in that bin (the most an
# interior bin can get); one with mean mu beyond the last bin puts sigmoid((mu - 1 + width / 2) / s) in it.
for bits in DROPDOWN:
    interior, edge = best_mass[bits]
    s = torch.tensor(np.exp(np.maximum(SLIDERS["log_scale"], -9.0)))
    width = bin_width(bits)
    # the bound holds on the whole grid, to float64 bin masses' accuracy: F.softplus, inside the library's stable
    # log-mass, returns x itself above x = 20, so masses near 1 can be off by up to e^-20 = 2e-9
    assert (interior <= torch.tanh(width / (4 * s)) + 1e-8).all()
    means = SLIDERS["mean"]
    on_centre = torch.tensor((np.abs(np.rint((means + 1) / width) * width - 1 - means) < 1e-9) & (np.abs(means) < 1))
    if on_centre.any():  # and is reached where a slider value is a bin centre (8 bits: 0.2 is bin 153; 6 bits: none)
        torch.testing.assert_close(interior[on_centre].amax(0), torch.tanh(width / (4 * s)), rtol=0, atol=1e-8)
    print(f"{bits} bits: slider means on an interior bin centre: {means[on_centre.numpy()].tolist()}")
    torch.testing.assert_close(edge.amax(0), torch.sigmoid((1.3 - 1 + width / 2) / s), rtol=0, atol=1e-8)
    widest = {
        "interior": math.log(width / (4 * math.atanh(0.99))),
        "edge": math.log((1.3 - 1 + width / 2) / math.log(99)),
    }
    x = width / (4 * math.exp(-9.0))
    print(
        f"{bits} bits: at the floor an interior bin on its centre holds tanh({x:.1f}) = "
        f"1 - {2 / (math.exp(2 * x) + 1):.1e}; 99 % in one bin needs log s <= {widest['interior']:.2f} "
        "(interior bin, mean on its centre)"
        f" or <= {widest['edge']:.2f} (last bin, mean 1.3)"
    )
# the weighted-mean argument, checked on random three-component mixtures from the slider ranges
rng = np.random.default_rng(0)
for _ in range(200):
    w, mu, log_s = rng.dirichlet(np.ones(3)), rng.uniform(-1.3, 1.3, 3), rng.uniform(-12, 0, 3)
    bits = int(rng.choice(DROPDOWN))
    components = max(pmf_of([1.0], [mu[k]], [log_s[k]], bits).max().item() for k in range(3))
    assert pmf_of(w, mu, log_s, bits).max().item() <= components + 1e-12

# %% [markdown]
# **Model answer.** The third component cannot help: a mixture's mass in any bin is the weighted mean of its components'
# masses there (checked on 200 random three-component mixtures), so the most mass in one bin comes from putting all the
# weight on one component (or giving all three the same mean and scale) and choosing that component's mean and log-scale
# well. Searched over the whole slider grid, the answer is **a narrow component sitting on one bin**: log-scale at the
# floor of −9 (anything lower is clamped to −9 and changes nothing) with the mean on a bin centre, or beyond ±1. The bin
# then gets all the mass: an 8-bit interior bin holds tanh(15.9) = 1 − 3.2e-14 of it, a 6-bit one tanh(64.3), and an end
# bin with the mean at ±1.3 even more. The first grid point the search finds is mean −1.30, log-scale −12 (that is, −9),
# where the first bin takes everything (the library prints 1.000000000000000; its float64 masses near 1 are good to
# about 2e-9 only, see the comment in the code). An interior bin gets at most tanh(Δ/4s), reached only when the mean is
# on the bin's centre (at 8 bits the slider values −0.6, −0.2, 0.2 and 0.6 are bin centres; at 6 bits none is): 1.0000
# at log s = −9, but 0.9732 at −7, 0.6590 at −6 and 0.1066 at −4. The **edge bins are far more forgiving**: they hold
# the whole tail, so a mean of ±1.3 keeps 0.9978 of the mass in the end bin at log s = −3, 0.9043 at −2 and still 0.5754
# at 0 (a mean beyond an edge always leaves more than half in that bin). The dropdown's 6 bits make every bin 4.05 times
# wider (0.03175 against 0.00784), so an interior bin reaches the same mass with a 4.05 times wider scale: 99 % in one
# interior bin needs log s ≤ −7.21 at 8 bits but only ≤ −5.81 at 6 bits (measured: 0.9967 at −6 and 0.8267 at −5), while
# the edge bin hardly changes (−2.72 against −2.68), because its mass depends on how far the mean lies beyond the edge,
# not on the bin's width.
