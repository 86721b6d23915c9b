# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Model answers · notebook 11 (Many speakers: one distilled model for every voice)
#
# The instructor's version of both exercises of notebook 11, on the shipped five-voice teacher
# (`data/checkpoints/teacher_speakers`) and the held-out windows of `pwn_lib.heldout` (each voice's test split, seed
# 1234). Fast mode (`PWN_FAST=1`) scores the first 2 of each voice's windows of 8,192 samples; full mode
# (`PWN_FAST` unset) the 16 that the checkpoint's metrics.json records. One CPU thread.

# %%
import time

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from pwn_lib.config import AUDIO_PRESETS, CHECKPOINT_DIR, pick, seed_everything
from pwn_lib.data import VOICES
from pwn_lib.heldout import heldout_windows, teacher_nll_bits
from pwn_lib.layers import shift_right
from pwn_lib.wavenet import WaveNet

seed_everything(0)
torch.set_num_threads(1)
started = time.perf_counter()
AUDIO = AUDIO_PRESETS["course"]
COUNT = pick(2, 16)
teacher = WaveNet.from_checkpoint(CHECKPOINT_DIR / "teacher_speakers").eval()
windows = {voice: heldout_windows(AUDIO, count=COUNT, voice=voice) for voice in VOICES}

# %% [markdown]
# ## Exercise 11.1 · The wrong speaker id
#
# > Score every voice's held-out windows under every speaker id with the five-voice teacher, a 5 × 5 table of bits
# > per sample (rows: the voice, columns: the id). Before you run it: is the diagonal the smallest entry of every
# > row? Which wrong ids should cost least (think of `en` and `es`)? Is the table symmetric?
#
# **Prediction, written before running.** The teacher was trained with each voice's own id, so the diagonal should
# be the smallest entry of its row, but only just: section 2 of the notebook shows the speaker terms are small beside
# the log-mel term, and English's id cost the other voices only a few hundredths of a bit. `en` and `es` share a
# reader, so their ids should be the cheapest swap. Symmetry is not to be expected: row $v$ column $s$ asks how
# well speaker $s$'s bias models voice $v$'s audio, and the rows differ in level by a whole bit (the recordings'
# noise floors), so compare each entry with its row's diagonal, not across rows.

# %%
table = pd.DataFrame(
    {
        VOICES[s]: {
            voice: teacher_nll_bits(teacher, [dict(w, speaker=torch.tensor(s)) for w in windows[voice]])
            for voice in VOICES
        }
        for s in range(len(VOICES))
    }
)
cost = table.sub(np.diag(table.to_numpy()), axis=0)  # each row minus its own id's NLL
print(f"bits per sample, {COUNT} windows of 8,192 samples per voice (rows: the voice's windows, columns: the id)")
print(table.round(3).to_string())
print("\nextra bits of each wrong id (row minus its diagonal)")
print(cost.round(3).to_string())
assert all(table.loc[v].idxmin() == v for v in VOICES), "the own id should give the lowest NLL of each row"
cheapest = {v: cost.loc[v].drop(v).idxmin() for v in VOICES}
asym = (cost - cost.T).abs().to_numpy().max()
print(f"\ncheapest wrong id per voice: {cheapest}; largest |cost[v, s] - cost[s, v]|: {asym:.3f} bits")

# %% [markdown]
# **Model answer.** In fast mode (2 windows per voice) the diagonal is the smallest entry of every row and the wrong
# ids cost 0.000 to 0.042 bits per sample; the cheapest wrong ids it prints (`en`: es, `es`: ru, `fr`: ru, `it`: fr,
# `ru`: fr) rest on differences of a thousandth of a bit, noise at two windows. The full run of this file (16 windows,
# the checkpoint's own yardstick; its diagonal repeats metrics.json: en 9.028, es 9.402, fr 9.130, it 10.391, ru
# 10.290) is the one to read. The own id wins every row; the wrong ids cost 0.003 to 0.039 bits. The prediction about
# `en` and `es` holds one way only: for English windows the `es` id is the cheapest wrong one (+0.014), but for
# Spanish windows the English id costs +0.020 and `fr` only +0.003. The clearest pattern is a column: English's id is
# the most expensive wrong id for every one of the four new voices (es +0.020, fr +0.017, it +0.039, ru +0.035), while
# `fr` and `ru` cost each other least (+0.005, +0.008). A reading to test, not a finding: every id started as the
# English teacher (the warm start), and what each new id learned is mostly "not English". The table is not symmetric
# (largest |cost[v, s] − cost[s, v]| 0.014 bits), as expected when rows ask different questions. All the costs are
# hundredths of a bit, beside the 0.06 to 0.14 bits the new voices gained over the English teacher in training: at
# this budget the id matters measurably, but little.
#
# **Rubric (2 points).** 1 point: the prediction, written first, says whether the diagonal is the minimum and which
# swap should be cheapest, with a reason. 1 point: the table read against the prediction, comparing each entry with
# its row's diagonal (not across rows, whose levels differ by the recordings), and an honest statement of how small
# the costs are beside the noise of two (or sixteen) windows.

# %% [markdown]
# ## Exercise 11.2 · Between two voices
#
# > The embedding table is a vector per voice, so any mixture $h(\alpha) = (1 - \alpha) h_{en} + \alpha h_{ru}$ is
# > a valid input to every gate. Score the Russian held-out windows for α from −0.5 to 1.5 by passing $h(\alpha)$ to
# > `net.net(shift_right(x), net.condition(c, T), g)`. Predict the shape of the curve first: where is its minimum,
# > and is it smooth?
#
# **Prediction, written before running.** Every gate offset $U_l h(\alpha)$ is linear in α, and the offsets are small,
# so the NLL should be a smooth, nearly quadratic function of α: a bowl with its minimum near α = 1 (the id the
# Russian windows were trained with), rising gently toward α = 0 (English's id, a few hundredths of a bit, as in
# 11.1) and past α = 1 (extrapolating beyond the Russian vector, which nothing in training asked for).


# %%
@torch.no_grad()
def nll_bits_with_vector(model: WaveNet, items: list[dict], g: torch.Tensor) -> float:
    """Mean NLL (bits per sample) of ``items`` with the speaker vector ``g: (speaker_dim,)`` in place of an id."""
    total, count = 0.0, 0
    for w in items:
        x, c = w["audio"][None], w["mel"][None]  # (1, 1, T), (1, n_mels, T // hop)
        params = model.net(shift_right(x), model.condition(c, x.shape[-1]), g[None])
        nll = -model.distribution(params).log_prob(x.squeeze(1)).double()
        total, count = total + nll.sum().item(), count + nll.numel()
    return total / count / np.log(2)


table_e = teacher.speaker_embedding.weight.detach()
h_en, h_ru = table_e[VOICES.index("en")], table_e[VOICES.index("ru")]
alphas = np.round(np.arange(-0.5, 1.51, pick(0.5, 0.25)), 2)
curve = {a: nll_bits_with_vector(teacher, windows["ru"], (1 - a) * h_en + a * h_ru) for a in alphas}
for a, bits in curve.items():
    print(f"alpha {a:+.2f}: {bits:.4f} bits per sample")
by_id = teacher_nll_bits(teacher, windows["ru"])
assert abs(curve[1.0] - by_id) < 1e-6, "alpha = 1 is Russian's own embedding row"
best = min(curve, key=curve.get)
gap = curve[0.0] - curve[1.0]
print(f"minimum at alpha = {best}; alpha 1 equals the id path ({by_id:.4f}); alpha 0 costs {gap:+.4f} bits")

fig, ax = plt.subplots(figsize=(5, 3.2))
ax.plot(list(curve), list(curve.values()), "o-")
ax.axvline(0, color="k", ls=":", label="English's vector")
ax.axvline(1, color="r", ls=":", label="Russian's vector")
ax.set(xlabel="α in h = (1 − α) h_en + α h_ru", ylabel="NLL of Russian windows (bits/sample)")
ax.legend(fontsize=8)
fig.tight_layout()
plt.show()
print(f"answers ran in {time.perf_counter() - started:.0f} s")

# %% [markdown]
# **Model answer.** Fast mode (α in steps of 0.5, 2 windows) prints 10.483, 10.439, 10.411, 10.397 and 10.397 bits for
# α = −0.5, 0, 0.5, 1 and 1.5: falling to α = 1, flat beyond. The full run (steps of 0.25, 16 windows) draws a smooth,
# slightly lopsided bowl: 10.365 at α = −0.5, 10.325 at α = 0 (English's vector, +0.035 bits, the cost of 11.1),
# 10.290 at α = 1 (equal to the id path, as the assert checks), the minimum 10.2901 at α = 1.25 and 10.293 at α = 1.5.
# The prediction holds on the shape: the offsets are linear in α and small, so the NLL is close to a quadratic in α.
# It holds on the minimum within the noise: α = 1.25 beats α = 1 by 0.0002 bits, far less than sixteen windows
# resolve, so the reading is "at about α = 1". What the prediction missed is how flat the curve is past the Russian
# vector: extrapolating half a vector further costs 0.003 bits. Both say the same as 11.1: the speaker vector moves
# this teacher only a little.
#
# **Rubric (2 points).** 1 point: a prediction of the minimum's place and the curve's shape, with the reason
# (offsets linear in α). 1 point: the plot, with α = 1 checked against the id path, and a reading that says where
# prediction and measurement agree or not, including what extrapolating past a voice's vector does.
