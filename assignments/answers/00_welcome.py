# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Model answers · notebook 00 (Welcome: Parallel WaveNet from first principles)
#
# The instructor's version of the exercise in `notebooks/00_welcome.ipynb`; it runs in about 10 s in fast mode
# (`PWN_FAST=1`) on 2 CPU cores (7 to 25 s measured, while a training run and other jobs shared the machine).

# %%
import dataclasses

import librosa
import numpy as np
import torch

from pwn_lib.audio import log_mel
from pwn_lib.config import AudioConfig, WaveNetConfig, fast_mode, pick, seed_everything
from pwn_lib.data import AudioWindows, load_corpus
from pwn_lib.layers import stride_factors
from pwn_lib.wavenet import WaveNet

seed_everything(0)
torch.set_num_threads(1)
print("fast mode:", fast_mode())

# %% [markdown]
# ## Exercise 00.1 · A hop of 200 samples
#
# > **Exercise.** Change `hop_length` in an `AudioConfig` to 200 (and `window` to a multiple of it).
# > How many frames does a 1-second utterance get now? Check your answer with `log_mel`. Which
# > later quantity would this change in the teacher (hint: the conditioning upsampler)?
#
# Prediction: a 1-second clip has 16,000 samples, and `log_mel` keeps $\lfloor T / \text{hop} \rfloor$ frames, so
# hop 200 gives $16000 / 200 = 80$ frames (hop 256 gave $\lfloor 16000 / 256 \rfloor = 62$). We check it with
# `log_mel`, and against the notebook's from-scratch log-mel (librosa directly) at the new hop.

# %%
cfg_256 = AudioConfig()
cfg_200 = dataclasses.replace(cfg_256, hop_length=200)


def log_mel_from_scratch(x, cfg):  # notebook 00, section 2
    stft = np.abs(librosa.stft(x, n_fft=cfg.n_fft, hop_length=cfg.hop_length, win_length=cfg.win_length, center=True))
    W = librosa.filters.mel(sr=cfg.sample_rate, n_fft=cfg.n_fft, n_mels=cfg.n_mels, fmin=cfg.fmin, fmax=cfg.fmax)
    frames = len(x) // cfg.hop_length
    return np.log(np.maximum(W @ stft[:, :frames], cfg.log_mel_floor))


corpus = {split: load_corpus(split) for split in ("train", "test")}
u = next(u for u in corpus["test"] if u.seconds > 1.0)
one_second = u.audio[: cfg_200.sample_rate]
frames = {}
for cfg in (cfg_256, cfg_200):
    mel = log_mel(one_second, cfg)
    frames[cfg.hop_length] = mel.shape[1]
    stft_frames = librosa.stft(one_second, n_fft=cfg.n_fft, hop_length=cfg.hop_length, center=True).shape[1]
    print(
        f"hop {cfg.hop_length}: log_mel of 1 s of {u.id!r} has shape {mel.shape} "
        f"({cfg.sample_rate / cfg.hop_length:.1f} frames/s; librosa's centred STFT has {stft_frames}, "
        "the extra last frame is dropped)"
    )
    assert np.allclose(mel, log_mel_from_scratch(one_second, cfg), atol=1e-4)
assert frames == {256: 16_000 // 256, 200: 16_000 // 200} == {256: 62, 200: 80}

# %% [markdown]
# Training windows must now be a multiple of 200: the course's 4,096-sample window is refused, and a window of
# `pick(1000, 4000)` samples carries exactly window / 200 frames.

# %%
try:
    AudioWindows(corpus["train"], window=4096, cfg=cfg_200, length=10)
    raise AssertionError("a window that is not a multiple of the hop should be refused")
except ValueError as err:
    print("refused:", err)

window = pick(1000, 4000)
windows = AudioWindows(corpus["train"], window=window, cfg=cfg_200, seed=0, length=10)
item = windows[0]
print({name: tuple(value.shape) for name, value in item.items()})
assert item["mel"].shape == (cfg_200.n_mels, window // 200)

# %% [markdown]
# **What changes in the teacher.** The conditioning upsampler must turn each frame into `hop_length` samples, so the
# teacher's `WaveNetConfig.hop_length` has to change with the features. Its transposed-convolution strides are the
# factorisation of the hop into factors of at most 16 (`pwn_lib.layers.stride_factors`): 256 = 16 x 16 becomes
# 200 = 5 x 10 x 4, three learned stages instead of two, with kernels 2s of 10, 20 and 8 taps.

# %%
tiny = dict(layers=4, stacks=2, residual_channels=8, gate_channels=16, skip_channels=8, n_mixtures=2)
teacher_200 = WaveNet(WaveNetConfig(**tiny, hop_length=200)).eval()
teacher_256 = WaveNet(WaveNetConfig(**tiny)).eval()
for teacher in (teacher_256, teacher_200):
    up = teacher.upsample
    weights = sum(layer.weight.numel() for layer in up.layers)
    print(f"teacher hop {up.hop_length}: upsampler strides {up.strides}, {weights:,} upsampler weights")
assert teacher_200.upsample.strides == stride_factors(200) == [5, 10, 4]
assert int(np.prod(teacher_200.upsample.strides)) == 200

# At initialisation the stages interpolate linearly between the frames; with the odd first stride (5) the frame
# centres land half a stage-1 sample, 0.5 x 10 x 4 = 20 samples, after k hop + (hop - 1) / 2 (exercise 02.4).
ramp = torch.arange(10.0).repeat(1, cfg_200.n_mels, 1)
with torch.no_grad():
    ramp_up = teacher_200.upsample(ramp)[0, 0].numpy()
t_mid = np.arange(200, 1800)
np.testing.assert_allclose(ramp_up[t_mid], (t_mid - 99.5 - 20) / 200, atol=1e-4)
print("upsampler at initialisation: frame k centred at sample 200 k + 99.5 + 20")

audio, mel = item["audio"][None], item["mel"][None]
with torch.no_grad():
    cu = teacher_200.condition(mel, window)
    params = teacher_200(audio, mel)
print(f"{mel.shape[-1]} frames -> conditioning {tuple(cu.shape)}; params {tuple(params.shape)}")
assert cu.shape == (1, cfg_200.n_mels, window) and params.shape[-1] == window

# %% [markdown]
# A warning for instructors: a teacher left at hop 256 does **not** refuse hop-200 features as long as the frames
# cover the window (here 5 x 256 >= 1000). It upsamples each frame to 256 samples and crops, so frame k lands on
# samples [256 k, 256 (k + 1)) instead of [200 k, 200 (k + 1)): silently misaligned conditioning.

# %%
with torch.no_grad():
    cu_wrong = teacher_256.condition(mel, window)
starts = {hop: [hop * k for k in range(mel.shape[-1])] for hop in (200, 256)}
print(f"hop-256 teacher accepted {mel.shape[-1]} hop-200 frames: conditioning {tuple(cu_wrong.shape)}")
print(f"frames start at samples {starts[256]} instead of {starts[200]}")
print(f"frame {mel.shape[-1] - 1} starts at {starts[256][-1]}, past the {window}-sample window: cropped away")
assert cu_wrong.shape == cu.shape

# %% [markdown]
# **Model answer.** With `hop_length = 200` a 1-second utterance (16,000 samples at 16 kHz) gets
# $16000 / 200 = 80$ log-mel frames instead of $\lfloor 16000 / 256 \rfloor = 62$; `log_mel` returns shape (80, 80)
# and agrees with the from-scratch librosa computation (librosa's centred STFT has 81 frames, `log_mel` drops the
# last). The window must be a multiple of 200 (4,096 is refused; 1,000 samples carry 5 frames). In the teacher the
# conditioning upsampler changes: it must stretch each frame to 200 samples, so `WaveNetConfig.hop_length` must be
# 200 as well, and its learned transposed convolutions become three stages with strides [5, 10, 4] (kernels 10, 20
# and 8) instead of two of [16, 16], each initialised as linear interpolation, with 243,200 weights instead of
# 409,600 for 80 mel channels. The conditioning also gets denser: 80 frames per second instead of 62.5. Because the
# first stride is odd, pwn_lib's initial interpolation puts each frame's centre 20 samples after $200k + 99.5$ (checked
# above; see the model answer to exercise 02.4). And the teacher must be told: one left at hop 256 accepts the 5
# frames of a 1,000-sample window without error, starts frame k at sample 256 k instead of 200 k (frame 3 at 768
# instead of 600) and crops frame 4 away entirely.
