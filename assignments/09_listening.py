# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [raw]
# # ASSIGNMENT CONFIG
# name: 09_listening
# init_cell: true
# check_all_cell: false
# export_cell: false
# solutions_pdf: false
# generate: true

# %% [markdown]
# # Assignment 09 · Listening tests: a MOS interval, an exact A/B test, and how many ratings you need
#
# Goes with notebook 09 (listening tests) and section 4 of the paper (its MOS table and A/B preferences). You
# compute the paper's "4.41 ± 0.069", test an A/B preference exactly, count preferences when the systems swap sides,
# and then measure how many ratings a test needs to tell two systems apart. The grader checks against
# `pwn_lib.listening.stats` and `scipy.stats`.
#
# **Points:** 7 autograded (questions 1–3) + 2 written (question 4). **Time:** about 10 seconds to run on 2 CPU
# cores (fast and full mode are the same here). Run each `grader.check` cell to see the public tests; hidden tests
# are added at grading.

# %%
import math

import numpy as np
import pandas as pd
import scipy.stats

from pwn_lib.config import seed_everything
from pwn_lib.listening import stats

seed_everything(0)

# %% [markdown]
# ## Question 1 · The MOS and its confidence interval
#
# Write `mos_interval(scores, level=0.95)`: the mean of the ratings and the half-width of the t-based interval,
# `t_{(1 + level)/2, n − 1} · s / √n`, with `s` the sample standard deviation (`ddof=1`). `scipy.stats.t.ppf`
# gives the quantile. Return `(mean, half_width)` as floats.

# %% [raw]
# # BEGIN QUESTION
# name: q1
# points: 2

# %% [raw]
# # BEGIN SOLUTION


# %%
def mos_interval(scores, level=0.95):
    # BEGIN SOLUTION
    x = np.asarray(scores, dtype=np.float64)
    half = scipy.stats.t.ppf((1 + level) / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
    return float(x.mean()), float(half)
    # END SOLUTION


# %% [raw]
# # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
""" # BEGIN TEST CONFIG
points: 1
"""  # END TEST CONFIG
mean, half = mos_interval([4, 4, 5, 5])
assert mean == 4.5, "the MOS is the mean rating"
assert abs(half - 3.182446305284263 * math.sqrt(1 / 3) / 2) < 1e-9, "t(0.975, 3) = 3.1824, s = sqrt(1/3), n = 4"

# %%
""" # BEGIN TEST CONFIG
points: 1
hidden: true
"""  # END TEST CONFIG
rng = np.random.default_rng(1)
for n, level in [(12, 0.95), (200, 0.95), (40, 0.99), (7, 0.9)]:
    scores = rng.integers(1, 6, size=n)
    mine, library = mos_interval(scores, level), stats.t_interval(scores, level)
    assert np.allclose(mine, library, rtol=1e-12), f"{mine} against {library} for n = {n}, level {level}"

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION

# %% [markdown]
# ## Question 2 · An exact A/B test
#
# In an A/B test `k` of `n` listeners (ties left out) preferred system A. Write `binomial_p(k, n)`: the two-sided
# exact binomial p-value of "A and B are preferred equally often" (p = 1/2), from `math.comb`, without
# `scipy.stats.binomtest`. With p = 1/2 the distribution is symmetric, so the two-sided p-value is twice the
# smaller tail, capped at 1.

# %% [raw]
# # BEGIN QUESTION
# name: q2
# points: 3

# %% [raw]
# # BEGIN SOLUTION


# %%
def binomial_p(k, n):
    # BEGIN SOLUTION
    tail = min(k, n - k)
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(tail + 1)) / 2**n)
    # END SOLUTION


# %% [raw]
# # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
""" # BEGIN TEST CONFIG
points: 1
"""  # END TEST CONFIG
assert binomial_p(5, 10) == 1.0, "an even split is no evidence"
assert abs(binomial_p(10, 10) - 2 / 1024) < 1e-15, "ten out of ten: both all-A and all-B count"
assert abs(binomial_p(0, 10) - binomial_p(10, 10)) < 1e-15, "the test is two-sided"

# %%
""" # BEGIN TEST CONFIG
points: 2
hidden: true
"""  # END TEST CONFIG
for n in (1, 7, 20, 61, 150):
    for k in range(n + 1):
        exact = scipy.stats.binomtest(k, n, 0.5, alternative="two-sided").pvalue
        assert abs(binomial_p(k, n) - exact) < 1e-12, f"k = {k}, n = {n}: {binomial_p(k, n)} against {exact}"

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION

# %% [markdown]
# ## Question 3 · Counting preferences when the systems swap sides
#
# A fair A/B test puts each system on the left ("A") in half of the trials, so a rater's "A" means different
# systems in different trials. Each trial is a dict `{"system": ..., "system_b": ..., "choice": "A" | "B" | ""}`:
# `system` was played as A, `system_b` as B, and `""` is "no preference". Write `preference(trials, a, b)`:
# `(k, n)`, the number of trials in which system `a` was preferred and the number with a preference either way,
# over the trials that compare `a` with `b` (in either order), ties left out.

# %% [raw]
# # BEGIN QUESTION
# name: q3
# points: 2

# %% [raw]
# # BEGIN SOLUTION


# %%
def preference(trials, a, b):
    # BEGIN SOLUTION
    k = n = 0
    for trial in trials:
        if {trial["system"], trial["system_b"]} != {a, b} or trial["choice"] not in ("A", "B"):
            continue
        chosen = trial["system"] if trial["choice"] == "A" else trial["system_b"]
        k, n = k + (chosen == a), n + 1
    return k, n
    # END SOLUTION


# %% [raw]
# # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
""" # BEGIN TEST CONFIG
points: 1
"""  # END TEST CONFIG
trials = [
    {"system": "student", "system_b": "teacher", "choice": "A"},  # student preferred
    {"system": "teacher", "system_b": "student", "choice": "B"},  # student preferred, on the right
    {"system": "teacher", "system_b": "student", "choice": "A"},  # teacher preferred
    {"system": "teacher", "system_b": "student", "choice": ""},  # no preference
    {"system": "real", "system_b": "student", "choice": "B"},  # another pair
]
assert preference(trials, "student", "teacher") == (2, 3), "student preferred twice, in 3 trials with a choice"
assert preference(trials, "teacher", "student") == (1, 3), "the same trials seen from the teacher's side"

# %%
""" # BEGIN TEST CONFIG
points: 1
hidden: true
"""  # END TEST CONFIG
rng = np.random.default_rng(2)
systems = ["real", "teacher", "student"]
trials = []
for _ in range(300):
    left, right = rng.choice(systems, size=2, replace=False)
    trials.append({"system": str(left), "system_b": str(right), "choice": str(rng.choice(["A", "B", ""]))})
frame = pd.DataFrame(trials).assign(kind="ab", role="test")
for a, b in [("student", "teacher"), ("teacher", "real"), ("real", "student")]:
    reference = stats.ab_preference(frame, a, b, ties="drop")
    assert preference(trials, a, b) == (reference["k"], reference["n"]), (a, b, reference)

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
# ## Question 4 (written) · How many ratings does a test need?
#
# The cell below simulates listening tests. For MOS, two systems whose true means are 0.2 apart (3.9 and 4.1,
# ratings rounded to 1–5 with a spread of 0.9, about what course tests measure), compared by Welch's t-test; for
# A/B, a system truly preferred in 60 % of trials, tested exactly. It prints the share of simulated tests that
# find the difference at p < 0.05 (the test's power). About how many ratings per system, and how many A/B trials,
# give a power of 0.8? Your class has 20 learners with 15 minutes each: which design would you run to compare the
# shipped teacher with its student, and why?

# %%
rng = np.random.default_rng(0)


def simulated_ratings(mean, n, tests):
    return np.clip(np.rint(rng.normal(mean, 0.9, size=(tests, n))), 1, 5)


for n in (50, 100, 200, 400):
    low, high = simulated_ratings(3.9, n, 1000), simulated_ratings(4.1, n, 1000)
    power = (scipy.stats.ttest_ind(low, high, axis=1, equal_var=False).pvalue < 0.05).mean()
    print(f"MOS, {n:3d} ratings per system: power {power:.2f}")
for n in (25, 50, 100, 200, 400):
    wins = rng.binomial(n, 0.6, size=2000)
    power = np.mean([scipy.stats.binomtest(int(k), n, 0.5).pvalue < 0.05 for k in wins])
    print(f"A/B, {n:3d} trials: power {power:.2f}")

# %% [raw]
# # BEGIN SOLUTION

# %% [markdown]
# **Model answer (measured, 2 cores, about 2 s).** MOS with a true gap of 0.2: power 0.17 at 50 ratings per
# system, 0.31 at 100, 0.53 at 200 and 0.83 at 400, so about 400 ratings per system (half-width of each interval
# about 1.96 · 0.87 / √400 ≈ 0.085). A/B with a true 60 % preference: power 0.15 at 25 trials, 0.24 at 50, 0.47 at
# 100, 0.79 at 200 and 0.98 at 400, so about 200 trials. Twenty learners with 15 minutes each, at about 10 s per MOS
# rating or 20 s per A/B trial (two clips), give about 1,800 MOS ratings or 900 A/B trials: enough for either.
# The A/B test answers "is the student as good as its teacher?" directly, pairs the same sentence so sentence
# difficulty cancels, and needs half the trials of the MOS comparison for a comparable difference; the MOS gives an
# absolute scale comparable with the paper's table, and with 900 ratings per system only for two systems. For the
# teacher-against-student question: an A/B test with both orders balanced, about 200+ trials, and screening
# (notebook 09's trap and gold clips) so that careless raters do not dilute the power.
#
# **Rubric (2 points).** 1 point: the two sample sizes read from the measured power (about 400 ratings per system;
# about 200 A/B trials). 1 point: a design that fits the class's time budget with a reason (paired comparison,
# sentence effects cancel, fewer trials; or MOS for an absolute scale), mentioning balance or screening.

# %% [raw]
# # END SOLUTION

# %% [raw]
# # END QUESTION
