# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Model answers · notebook 09 (Listening tests: MOS and A/B preference)
#
# The instructor's version of every exercise of notebook 09, run on the course's example test and its simulated
# ratings; 25–50 s in fast mode on 2 CPU cores shared with a training run (four runs with `PWN_FAST=1`).

# %%
import math
import tempfile
import time

import librosa
import numpy as np
import pandas as pd
import torch

from pwn_lib import vocoders
from pwn_lib.audio import load_audio, log_mel_distance
from pwn_lib.config import (
    AUDIO_PRESETS,
    CHECKPOINT_DIR,
    DATA_DIR,
    SCRATCH_DIR,
    DistillLoss,
    TrainConfig,
    fast_mode,
    pick,
    seed_everything,
    to_dict,
)
from pwn_lib.data import AudioWindows, load_corpus
from pwn_lib.listening import (
    ab_table,
    load_test,
    mnru,
    mos_table,
    normalize_loudness,
    pairwise_wilcoxon,
    read_ratings,
    screen_raters,
)
from pwn_lib.listening.build import build_test
from pwn_lib.losses import student_loss
from pwn_lib.metrics import score_clip
from pwn_lib.student import build_student
from pwn_lib.trainer import Trainer

seed_everything(0)
torch.set_num_threads(1)
started = time.perf_counter()
LISTENING = DATA_DIR / "listening"
test = load_test(LISTENING / "example")
ratings = read_ratings(LISTENING / "example_ratings.csv", test.name)
print("fast mode:", fast_mode())


def kept_ratings(frame: pd.DataFrame, **screening) -> pd.DataFrame:
    verdicts = screen_raters(frame, **screening)
    return frame[frame["rater"].isin(verdicts.loc[verdicts["accepted"], "rater"])]


kept = kept_ratings(ratings)
print(f"{ratings['rater'].nunique()} raters, {kept['rater'].nunique()} kept at the default gold tolerance of 1")

# %% [markdown]
# ## Exercise 09.1 · A stricter gold check, and ties split
#
# > 1. Re-run the analysis with `screen_raters(ratings, gold_tolerance=0)` and with `ab_table(kept, ties="split")`.
# >    Which conclusions change? Write down, before looking, which way you expect the A/B p-value to move.
#
# **Prediction, written before running.** Splitting the "no preference" answers half to each side adds as many
# votes to the losing side as to the winning one, so the tested share moves towards 1/2; with the same evidence
# spread over more, more balanced trials, the two-sided binomial p-value should *rise*. A gold tolerance of 0 asks
# every rater to give the clean gold clip exactly 5 and the MNRU gold clip exactly 1, so raters who said 4 for a
# clean recording will be dropped: fewer raters, wider intervals, weaker paired tests.

# %%
strict = screen_raters(ratings, gold_tolerance=0)
kept_strict = kept_ratings(ratings, gold_tolerance=0)
print(f"gold_tolerance=0 keeps {strict['accepted'].sum()} of {len(strict)} raters")
print(strict.loc[~strict["accepted"], ["rater", "reasons"]].to_string(index=False))

columns = ["system", "raters", "mos", "ci95", "boot_low", "boot_high"]
for label, frame in (("tolerance 1", kept), ("tolerance 0", kept_strict)):
    print(f"\nMOS, {label}:")
    print(mos_table(frame, test, n_boot=1000, seed=0)[columns].round(2).to_string(index=False))

wilcoxon = {label: pairwise_wilcoxon(frame) for label, frame in (("tol1", kept), ("tol0", kept_strict))}
both = wilcoxon["tol1"][["a", "b", "p_holm"]].merge(wilcoxon["tol0"][["a", "b", "p_holm"]], on=["a", "b"])
both.columns = ["a", "b", "p_holm, tolerance 1", "p_holm, tolerance 0"]
print("\nWilcoxon, Holm-adjusted:")
print(both.to_string(index=False, float_format=lambda v: f"{v:.2g}"))

# %%
drop, split = ab_table(kept), ab_table(kept, ties="split")
print(drop[["a", "b", "prefer_a", "prefer_b", "no_preference", "k", "n", "share_a", "p"]].round(3).to_string())
print(split[["a", "b", "prefer_a", "prefer_b", "no_preference", "k", "n", "share_a", "p"]].round(3).to_string())


def binomial_two_sided(k: int, n: int) -> float:
    # exact two-sided test against 1/2, from the pmf (sum of outcomes no more likely than k), no scipy
    pmf = [math.comb(n, i) / 2**n for i in range(n + 1)]
    return min(1.0, sum(p for p in pmf if p <= pmf[k] * (1 + 1e-7)))


for table in (drop, split):
    row = table.iloc[0]
    assert math.isclose(row["p"], binomial_two_sided(int(row["k"]), int(row["n"])), rel_tol=1e-9)
row_drop, row_split = drop.iloc[0], split.iloc[0]
assert row_split["k"] == row_drop["k"] + row_drop["no_preference"] // 2
assert abs(row_split["share_a"] - 0.5) < abs(row_drop["share_a"] - 0.5) and row_split["p"] > row_drop["p"]
student_vs_teacher = both.query("a == 'student' and b == 'teacher'").iloc[0]
print(
    f"student vs teacher (Wilcoxon, Holm): p = {student_vs_teacher['p_holm, tolerance 1']:.4f} with "
    f"{kept['rater'].nunique()} raters, {student_vs_teacher['p_holm, tolerance 0']:.4f} with "
    f"{kept_strict['rater'].nunique()}"
)

# %% [markdown]
# **Model answer.** *Screening.* With `gold_tolerance=0` only 5 of the 12 raters survive (against 10 at the
# default tolerance of 1). The five attentive raters who rated the clean gold clip 4 instead of 5 (or the MNRU
# clip 2 instead of 1) are now thrown out along with the two careless ones. That is far stricter than P.808
# intends. A 4 for a clean recording is a normal answer, and the gold check is there to catch raters who are not
# listening, not to demand one exact score. The *ranking* of the five systems does not change (real > mulaw8 >
# teacher > student > anchor), and neither does any significance verdict. Each MOS now rests on 30 ratings
# instead of 60, so every interval widens: the student's t half-width goes from 0.22 to 0.30 and its bootstrap
# interval from [2.05, 2.82] to [1.97, 2.90]. The paired tests all weaken. Student against teacher goes from
# p_holm = 0.0023 to 0.024, still below 5 %, so "the student is rated below the teacher" survives, on half the
# raters. The cost of the strict rule is data, not a changed conclusion. With a smaller test it would flip
# the student/teacher verdict first, because that is the smallest difference.
#
# *Ties.* As predicted, splitting the 25 "no preference" answers (12 to each side, the odd one dropped) moves the
# student's share from 13/35 = 0.371 to 25/59 = 0.424, and the p-value goes **up**, from 0.175 to 0.298. Neither
# is significant, so the A/B conclusion ("no detectable preference between student and teacher in 60 trials")
# does not change. The split convention is more conservative whenever ties are common. The exact two-sided
# binomial p-values, recomputed from the pmf without scipy, agree with `ab_table`. Note the contrast with the
# MOS: on the same raters the Wilcoxon test finds the teacher better (p_holm 0.0023), while the A/B test, with
# 42 % of its trials tied, cannot tell the two apart. An A/B test in which almost half the answers are "no
# preference" loses most of its power to the ties.

# %% [markdown]
# ## Exercise 09.2 · How many raters for ±0.1?
#
# > 2. How many raters would the example test need for a cluster-bootstrap half-width of 0.1 on the student?
# >    Subsample raters from `kept` (5, 10, and all), recompute `mos_table`, and extrapolate with $1/\sqrt{R}$.
#
# `kept` holds 10 raters, so "10" and "all" are the same subset; we add 3 and 7 to see the trend, and average the
# half-width over random rater subsets of each size (every subset, when there are few).

# %%
raters = np.array(sorted(kept["rater"].unique()))
rng = np.random.default_rng(0)
draws = pick(12, 40)
half_widths = {}
for size in (3, 5, 7, len(raters)):
    widths = []
    for _ in range(draws if size < len(raters) else 1):
        subset = rng.choice(raters, size=size, replace=False)
        row = mos_table(kept[kept["rater"].isin(subset)], n_boot=pick(500, 2000), seed=1).set_index("system")
        widths.append((row.loc["student", "boot_high"] - row.loc["student", "boot_low"]) / 2)
    half_widths[size] = float(np.mean(widths))
sizes = np.array(list(half_widths))
hw = np.array(list(half_widths.values()))
slope = np.polyfit(np.log(sizes), np.log(hw), 1)[0]
needed = len(raters) * (half_widths[len(raters)] / 0.1) ** 2
for size, value in half_widths.items():
    print(f"R = {size:2d} raters: student bootstrap half-width {value:.3f}")
print(f"log-log slope {slope:.2f} (1/sqrt(R) is -0.5); extrapolated raters for +-0.1: {needed:.0f}")

# %% [markdown]
# The $1/\sqrt{R}$ rule assumes the raters are the only thing resampled. The two-way bootstrap also resamples
# the **six sentences**, and adding raters does nothing to that part. We split the variance by hand: a bootstrap over
# raters alone (sentences fixed) and one over sentences alone (raters fixed); their variances should roughly add up
# to the two-way one. The sentence part is a floor under the half-width, whatever the number of raters.

# %%
student = kept[(kept["kind"] == "mos") & (kept["role"] == "test") & (kept["system"] == "student")]
_, r_index = np.unique(student["rater"], return_inverse=True)
_, u_index = np.unique(student["utterance"], return_inverse=True)
scores = student["score"].to_numpy(dtype=float)
B = pick(4000, 20000)
n_r, n_u = r_index.max() + 1, u_index.max() + 1
w_r = rng.multinomial(n_r, np.full(n_r, 1 / n_r), size=B)[:, r_index]
w_u = rng.multinomial(n_u, np.full(n_u, 1 / n_u), size=B)[:, u_index]
sd = {
    name: float(np.std((w * scores).sum(1) / w.sum(1)))
    for name, w in (("raters only", w_r), ("sentences only", w_u), ("both", w_r * w_u))
}
for name, value in sd.items():
    print(f"bootstrap SD of the student's MOS, {name:14s}: {value:.3f} -> half-width ~ {1.96 * value:.3f}")
assert abs(sd["raters only"] ** 2 + sd["sentences only"] ** 2 - sd["both"] ** 2) < 0.25 * sd["both"] ** 2
floor = 1.96 * sd["sentences only"]
rater_part = 1.96 * sd["raters only"]
needed_two_way = n_r * (rater_part / math.sqrt(0.1**2 - floor**2)) ** 2 if floor < 0.1 else math.inf
print(f"sentence floor {floor:.3f}; raters needed with {n_u} sentences: {needed_two_way:.0f}")
# a balanced design: each part gets half the variance of a +-0.1 interval, each shrinking as 1/sqrt(its count)
part = 0.1 / math.sqrt(2)
print(
    f"balanced design for +-0.1: {n_r * (rater_part / part) ** 2:.0f} raters and "
    f"{n_u * (floor / part) ** 2:.0f} sentences"
)

# %% [markdown]
# **Model answer.** The student's cluster-bootstrap half-width is 0.58 with 3 raters, 0.53 with 5, 0.41 with 7
# and 0.37 with all 10 kept raters (3, 5 and 7 averaged over 12 random subsets). Extrapolating from the 10-rater
# figure with $1/\sqrt{R}$ gives $R \approx 10 \times (0.371/0.1)^2 \approx 138$ raters. That number is too
# optimistic. The measured log-log slope is only −0.39, flatter than −0.5, and splitting the bootstrap variance
# shows why. With the sentences fixed, the raters alone give a half-width of 0.27. With the raters fixed, the six
# sentences alone give 0.24. The two variances add up to roughly the two-way one (0.39); the check passes. More
# raters shrink only the first part, so with these six sentences the half-width can never fall below about 0.24,
# and ±0.1 cannot be reached with any number of raters (the script prints `inf`). The test needs **more sentences
# as well as more raters**. Splitting the variance evenly between the two parts, and scaling each as one over
# the square root of its count, gives about 143 raters *and* 68 sentences. (With 3 or 5 raters the bootstrap
# also underestimates the spread, by about a factor $(R-1)/R$ in variance, which flattens the slope a little
# more.) The same arithmetic explains the paper's ±0.069: it needs many sentences as well as many listeners.

# %% [markdown]
# ## Exercise 09.3 · The KL-only arm in a listening test
#
# > 3. Add the KL-only arm of notebook 07 to a test: train a student with `--config` holding only the KL term
# >    (`loss: {power_weight: 0}`), then `python -m pwn_lib.listening build --systems real,student,kl=DIR,anchor
# >    --ab student:kl --out ...`, and rate it yourself. Does your ear agree with the log-mel distance?
#
# **What is done here.** A course-scale KL-only student takes hours on this CPU (notebook 07's recorded arm is
# 1,000 steps). So (a) we train a *tiny* KL-only student for a few seconds against the shipped teacher, with
# the same loss recipe as `loss: {power_weight: 0}`, save it as a checkpoint outside the repository, and build the
# test exactly as the exercise asks, through `build_test` (the function behind `python -m pwn_lib.listening
# build`); (b) for a KL-only student that has really converged we use the renderings that notebook 07's recorded
# course-scale ablation committed (`data/ablation/ablation_course_examples/`), and put each one through the
# listening test's own loudness normalisation and log-mel distance. **Nobody listened**: the "ear" half of the
# question is for the learner. We give the measurable half, and the voicing measures that predict what an ear
# hears.

# %%
SCRATCH_DIR.mkdir(parents=True, exist_ok=True)
work = tempfile.mkdtemp(prefix="answers09_", dir=SCRATCH_DIR)
teacher = vocoders.load(CHECKPOINT_DIR / "teacher_course").model
audio_cfg = AUDIO_PRESETS["course"]
seed_everything(0)
kl_student = build_student(pick("tiny", "course"), hop_length=teacher.cfg.hop_length)
train_cfg = TrainConfig(steps=pick(20, 1_000), batch_size=2, window=pick(1_024, 4_096), lr=1e-3, lr_warmup=0)
windows = AudioWindows(load_corpus("train"), train_cfg.window, audio_cfg, seed=2, length=train_cfg.steps * 2)
trainer = Trainer(
    kl_student,
    student_loss(teacher, DistillLoss(power_weight=0.0)),  # = a recipe with `loss: {power_weight: 0}`
    train_cfg,
    None,
    model_config=to_dict(kl_student.cfg),
    kind="student",
)
trainer.fit(windows, progress=False)
kl_dir = trainer.averaged_model().save(f"{work}/student_kl", audio=audio_cfg)
print(f"KL-only student ({kl_student.cfg.flow_layers} flows, {train_cfg.steps} steps) saved to {kl_dir}")

small = build_test(
    f"{work}/kl_test",
    systems=f"real,student,kl={kl_dir},anchor",
    ab="student:kl",
    utterances=pick(2, 6),
    seconds=pick(0.5, 1.5),
    seed=1,
)
distances = small.metrics["logmel_distance_to_real"]
print(f"built {small.root.name}: systems {sorted(small.systems)}, A/B pairs {small.ab_pairs}")
for system in small.systems:
    print(f"  {system:8s} log-mel distance to real: {np.mean(list(distances[system].values())):.3f}")

# %%
EXAMPLES = DATA_DIR / "ablation" / "ablation_course_examples"
sr = audio_cfg.sample_rate
clips = {name: load_audio(EXAMPLES / f"{name}.wav", sr) for name in ("real", "teacher", "kl", "kl_power")}
clips["anchor"] = mnru(clips["real"], 10.0, seed=0)  # the test's low anchor: MNRU at Q = 10 dB
normalised = {name: normalize_loudness(x, sr) for name, x in clips.items()}  # what the listener would hear
real = normalised["real"]
rows = []
for name, x in normalised.items():
    scores = score_clip(x, real, audio_cfg)
    rows.append(
        {
            "system": name,
            "log-mel distance": log_mel_distance(x, real),
            "log-mel distance, raw": log_mel_distance(clips[name], clips["real"]),
            "voiced share": scores["voiced_share"],
            "periodicity": scores["periodicity"],
            "power before normalising (dB)": score_clip(clips[name], clips["real"], audio_cfg)["power_db"],
            "gain to -26 LUFS (dB)": 20 * np.log10(np.abs(x).max() / np.abs(clips[name]).max()),
        }
    )
table = pd.DataFrame(rows).set_index("system")
print(f"course-scale renderings of {EXAMPLES.name}, loudness-normalised to -26 LUFS as in the test:")
print(table.round(3).to_string())

# independent check of the distance: mean |log-mel difference| recomputed with librosa directly


def log_mel_by_hand(x):
    mel = librosa.feature.melspectrogram(
        y=x, sr=sr, n_fft=1024, hop_length=256, win_length=1024, n_mels=80, fmin=40.0, fmax=7600.0, power=1.0
    )
    return np.log(np.maximum(mel[:, : len(x) // 256], 1e-5))


by_hand = np.abs(log_mel_by_hand(normalised["kl"]) - log_mel_by_hand(real)).mean()
assert math.isclose(by_hand, table.loc["kl", "log-mel distance"], rel_tol=1e-4)
assert table.loc["kl", "voiced share"] < table.loc["teacher", "voiced share"]
print(f"run time so far: {time.perf_counter() - started:.0f} s")

# %% [markdown]
# **Model answer.** The pipeline works end to end. The KL-only recipe (`DistillLoss(power_weight=0)`, the
# `loss: {power_weight: 0}` of the exercise) trains through the course's `Trainer` and saves as a student
# checkpoint. `build_test(..., systems="real,student,kl=DIR,anchor", ab="student:kl")` renders it beside the
# shipped student and writes the A/B pair `student:kl` into the manifest. The tiny 20-step student built here is
# noise (log-mel distance 2.31, against 0.68 for the shipped student and 1.22 for the anchor), and says nothing
# about the real arm.
#
# The converged, course-scale KL-only arm (notebook 07's recorded rendering) shows that **the log-mel distance's
# verdict depends on the level**. On the raw renderings it is 1.16 for the KL-only whisper, only 11 % above the
# teacher's 1.04, and it ranks the whisper ahead of the `kl+power` arm (1.29) and the MNRU anchor (1.39). That is
# the failure notebook 07 describes. The listening test plays every stimulus at −26 LUFS: the real clip goes
# down 10.0 dB and the whisper up 7.1 dB, 17 dB relative to the real clip. Its noise, much too strong in the
# bands where speech is quiet, then dominates, and its distance jumps to 2.25, the worst of all. So on the stimuli a
# listener actually hears, the metric agrees with what the voicing measures predict: the KL-only arm is never voiced
# (voiced share 0.000, periodicity 0.27, against 0.61 and 0.94 for the real clip). It is a whisper with the
# sentence's timing and envelope but no pitch, and we expect an ear to put it last among the models and to prefer the
# shipped student in the A/B. The agreement does not reach the middle of the table. On the normalised stimuli the
# metric still puts the MNRU anchor (1.32, a clip built to be rated "Bad") closer to real speech than the `kl+power`
# arm (1.45), and it ranks them the other way round on the raw renderings. Which order is right is what the learner's
# own rating, pooled with a class's (section 6), has to settle. **No one listened here.** The ear half of the
# exercise is not answered by this file. We give only the measured half and a prediction from the voicing measures.
