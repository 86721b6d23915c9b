"""Listening-test statistics on fixed synthetic ratings with answers computed by hand (or by scipy)."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from pwn_lib.config import DATA_DIR
from pwn_lib.listening import load_test, read_ratings
from pwn_lib.listening.stats import (
    ab_preference,
    bootstrap_interval,
    bootstrap_means,
    holm,
    md_text,
    mos_table,
    objective_table,
    paired_wilcoxon,
    pairwise_wilcoxon,
    report,
    screen_raters,
    t_interval,
)


def mos_rows(entries: list[tuple[str, str, str, int]], role: str = "test") -> pd.DataFrame:
    """(rater, system, utterance, score) -> rating rows with every column the analysis reads."""
    return pd.DataFrame(
        [
            {
                "rater": r,
                "kind": "mos",
                "role": role,
                "system": s,
                "system_b": None,
                "utterance": u,
                "score": score,
                "choice": None,
                "expected": None,
                "ended": 1,
                "ended_b": None,
                "listening": "headphones",
            }
            for r, s, u, score in entries
        ]
    )


def ab_rows(entries: list[tuple[str, str, str]]) -> pd.DataFrame:
    """(system on A, system on B, choice) -> A/B rows."""
    return pd.DataFrame(
        [
            {
                "rater": f"r{i}",
                "kind": "ab",
                "role": "test",
                "system": a,
                "system_b": b,
                "utterance": "u",
                "score": None,
                "choice": c,
                "expected": None,
                "ended": 1,
                "ended_b": 1,
                "listening": "headphones",
            }
            for i, (a, b, c) in enumerate(entries)
        ]
    )


# -------------------------------------------------------------------------------------------- MOS and CIs


def test_t_interval_matches_hand_computation_and_scipy():
    mean, half = t_interval([1, 2, 3, 4, 5])
    # s = sqrt(2.5) = 1.58114, t_{0.975, 4} = 2.776445, half = 2.776445 * 1.58114 / sqrt(5) = 1.963243
    assert mean == 3.0
    assert half == pytest.approx(1.963243, abs=1e-6)
    low, high = scipy.stats.t.interval(0.95, 4, loc=3.0, scale=scipy.stats.sem([1, 2, 3, 4, 5]))
    assert (mean - half, mean + half) == pytest.approx((low, high))


def test_mos_table_counts_means_and_ignores_controls():
    rows = mos_rows(
        [(r, "a", u, s) for r, u, s in [("r1", "u1", 5), ("r1", "u2", 4), ("r2", "u1", 4), ("r2", "u2", 3)]]
        + [("r1", "b", "u1", 2), ("r2", "b", "u1", 1)]
    )
    rows = pd.concat([rows, mos_rows([("r1", "gold_good", "g", 1)], role="gold")], ignore_index=True)
    table = mos_table(rows, n_boot=200).set_index("system")
    assert list(table.index) == ["a", "b"]  # best first, the gold clip left out
    assert table.loc["a", "mos"] == 4.0 and table.loc["b", "mos"] == 1.5
    assert table.loc["a", "ratings"] == 4 and table.loc["a", "raters"] == 2 and table.loc["a", "utterances"] == 2
    assert table.loc["a", "ci95"] == pytest.approx(t_interval([5, 4, 4, 3])[1])


def test_bootstrap_of_two_constant_raters_has_the_known_distribution():
    # r1 always gives 2, r2 always 4. Resampling 2 raters with replacement gives MOS 2, 3 or 4 with
    # probabilities 1/4, 1/2, 1/4 (whatever the utterances), so the 95 % percentile interval is [2, 4].
    rows = mos_rows([("r1", "s", f"u{i}", 2) for i in range(5)] + [("r2", "s", f"u{i}", 4) for i in range(5)])
    _, means = bootstrap_means(rows, n_boot=4000, seed=1)
    values, counts = np.unique(means[:, 0], return_counts=True)
    assert list(values) == [2.0, 3.0, 4.0]
    assert counts / counts.sum() == pytest.approx([0.25, 0.5, 0.25], abs=0.03)
    ci = bootstrap_interval(rows, n_boot=4000, seed=1)
    assert (ci["boot_low"].item(), ci["boot_high"].item()) == (2.0, 4.0)


def test_bootstrap_weights_each_rating_by_its_rater_and_utterance_draws():
    # 1 rater, 2 utterances scoring 1 and 5: resampled utterances give 1, 3 or 5 with 1/4, 1/2, 1/4.
    rows = mos_rows([("r1", "s", "u1", 1), ("r1", "s", "u2", 5)])
    _, means = bootstrap_means(rows, n_boot=4000, seed=2)
    assert np.mean(means[:, 0] == 3.0) == pytest.approx(0.5, abs=0.03)
    assert np.mean(means[:, 0] == 1.0) == pytest.approx(0.25, abs=0.03)


def test_cluster_bootstrap_is_wider_than_the_t_interval_when_raters_disagree():
    # Six raters with biases -1.5 .. +1.5 and almost no other variation: 60 ratings look precise to the t CI,
    # but only six independent raters stand behind them.
    rng = np.random.default_rng(0)
    entries = [
        (f"r{r}", "s", f"u{u}", int(np.clip(round(3 + bias + rng.normal(0, 0.2)), 1, 5)))
        for r, bias in enumerate([-1.5, -1, -0.5, 0.5, 1, 1.5])
        for u in range(10)
    ]
    table = mos_table(mos_rows(entries), n_boot=2000).iloc[0]
    assert table["boot_high"] - table["boot_low"] > 2 * (2 * table["ci95"])


def test_bootstrap_is_reproducible_for_a_seed():
    rows = mos_rows([(f"r{r}", "s", f"u{u}", (r + u) % 5 + 1) for r in range(4) for u in range(3)])
    assert bootstrap_interval(rows, seed=3).equals(bootstrap_interval(rows, seed=3))


# -------------------------------------------------------------------------------------------- paired tests


def test_wilcoxon_exact_case_has_p_one_eighth():
    # Four pairs, differences 1, 2, 3, 4, all positive: the exact two-sided p is 2 / 2**4 = 0.125.
    rows = mos_rows(
        [(f"r{i}", "a", "u", a) for i, a in enumerate([2, 3, 4, 5])] + [(f"r{i}", "b", "u", 1) for i in range(4)]
    )
    result = paired_wilcoxon(rows, "a", "b")
    assert result["pairs"] == 4 and result["nonzero"] == 4 and result["mean_diff"] == 2.5
    assert result["p"] == pytest.approx(0.125)


def test_wilcoxon_with_ties_and_zeros_matches_the_normal_approximation_by_hand():
    a = [4, 4, 4, 5, 3, 3, 5, 4, 4, 2, 4, 4]
    b = [3, 3, 3, 3, 4, 3, 3, 3, 3, 4, 3, 3]
    rows = mos_rows(
        [(f"r{i}", "a", "u", x) for i, x in enumerate(a)] + [(f"r{i}", "b", "u", x) for i, x in enumerate(b)]
    )
    d = np.array(a) - np.array(b)
    d = d[d != 0]  # zero_method="wilcox": zero differences are dropped
    n = len(d)
    ranks = scipy.stats.rankdata(np.abs(d))  # average ranks for tied |d|
    t_plus = ranks[d > 0].sum()
    _, tie_counts = np.unique(np.abs(d), return_counts=True)
    var = n * (n + 1) * (2 * n + 1) / 24 - np.sum(tie_counts**3 - tie_counts) / 48
    z = (t_plus - n * (n + 1) / 4) / math.sqrt(var)
    p_hand = 2 * scipy.stats.norm.sf(abs(z))
    result = paired_wilcoxon(rows, "a", "b")
    assert result["nonzero"] == n == 11
    assert result["p"] == pytest.approx(p_hand, rel=1e-9)
    assert result["statistic"] == min(t_plus, ranks[d < 0].sum())


def test_wilcoxon_pairs_only_the_same_rater_and_utterance():
    rows = mos_rows(
        [
            ("r1", "a", "u1", 5),
            ("r1", "b", "u1", 3),
            ("r2", "a", "u1", 4),
            ("r3", "b", "u1", 1),
            ("r1", "a", "u2", 4),
            ("r1", "b", "u2", 4),
        ]
    )
    result = paired_wilcoxon(rows, "a", "b")
    assert result["pairs"] == 2 and result["nonzero"] == 1 and result["mean_diff"] == 1.0


def test_holm_adjustment_by_hand():
    # sorted 0.01, 0.03, 0.04 -> 3 * 0.01, max(0.03, 2 * 0.03), max(0.06, 1 * 0.04)
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    rows = mos_rows([(f"r{i}", s, "u", x) for i in range(6) for s, x in [("a", 5), ("b", 3), ("c", 1 + i % 2)]])
    table = pairwise_wilcoxon(rows)
    assert list(zip(table["a"], table["b"], strict=True)) == [("a", "b"), ("a", "c"), ("b", "c")]
    assert table["p_holm"].to_numpy() == pytest.approx(holm(table["p"]))


def test_ab_binomial_test_with_sides_mixed_and_ties_dropped_or_split():
    # "teacher" preferred 9 times (4 from side A, 5 from side B), "student" once, 3 without preference.
    entries = (
        [("teacher", "student", "A")] * 4
        + [("student", "teacher", "B")] * 5
        + [("teacher", "student", "B")]
        + [("student", "teacher", "none")] * 3
    )
    rows = ab_rows(entries)
    dropped = ab_preference(rows, "teacher", "student")
    assert (dropped["prefer_a"], dropped["prefer_b"], dropped["no_preference"]) == (9, 1, 3)
    assert dropped["p"] == pytest.approx(2 * (1 + 10) / 2**10)  # 2 P(X <= 1), X ~ Bin(10, 1/2)
    split = ab_preference(rows, "teacher", "student", ties="split")  # one tie each way, the odd one out
    assert (split["k"], split["n"]) == (10, 12)
    assert split["p"] == pytest.approx(2 * (1 + 12 + 66) / 2**12)
    assert ab_preference(rows, "student", "teacher")["prefer_a"] == 1
    with pytest.raises(ValueError, match="ties="):
        ab_preference(rows, "teacher", "student", ties="half")


# -------------------------------------------------------------------------------------------- screening


def _session(
    rater: str, scores: list[int], gold: tuple[int, int] = (5, 1), trap: tuple[int, int] = (3, 3), ended: int = 1
) -> pd.DataFrame:
    rows = mos_rows([(rater, "s", f"u{i}", x) for i, x in enumerate(scores)])
    controls = pd.DataFrame(
        [
            {
                "rater": rater,
                "kind": "mos",
                "role": "gold",
                "system": "gold_good",
                "utterance": "g",
                "score": gold[0],
                "expected": 5,
            },
            {
                "rater": rater,
                "kind": "mos",
                "role": "gold",
                "system": "gold_bad",
                "utterance": "g",
                "score": gold[1],
                "expected": 1,
            },
            {
                "rater": rater,
                "kind": "mos",
                "role": "trap",
                "system": "trap_3",
                "utterance": "g",
                "score": trap[0],
                "expected": trap[1],
            },
        ]
    )
    out = pd.concat([rows, controls], ignore_index=True)
    out["ended"] = ended
    return out


def test_p808_screening_rules():
    frame = pd.concat(
        [
            _session("good", [5, 4, 2, 1, 3]),
            _session("trap", [5, 4, 2, 1, 3], trap=(4, 3)),
            _session("gold", [5, 4, 2, 1, 3], gold=(3, 1)),  # 3 is 2 away from the gold clip's 5
            _session("edge", [5, 4, 2, 1, 3], gold=(4, 2)),  # 1 away from each: still fine
            _session("flat", [4, 4, 4, 4, 4], gold=(4, 2)),
            _session("deaf", [5, 4, 2, 1, 3], ended=0),
        ],
        ignore_index=True,
    )
    result = screen_raters(frame).set_index("rater")
    assert result.loc["good", "accepted"] and result.loc["edge", "accepted"]
    assert result.loc["trap", "reasons"] == "trap_ok"
    assert result.loc["gold", "reasons"] == "gold_ok"
    assert result.loc["flat", "reasons"] == "variance_ok" and result.loc["flat", "variance"] == 0.0
    assert result.loc["deaf", "reasons"] == "all_played"


def test_a_rater_who_rated_no_gold_clip_is_excluded_with_the_reason():
    quitter = _session("quit", [5, 4, 2, 1, 3])
    quitter = quitter[quitter["role"] != "gold"]  # stopped after the trap, before any gold clip
    frame = pd.concat([_session("good", [5, 4, 2, 1, 3]), quitter], ignore_index=True)
    result = screen_raters(frame).set_index("rater")
    assert result.loc["good", "accepted"] and result.loc["good", "gold_seen"]
    assert not result.loc["quit", "accepted"] and result.loc["quit", "reasons"] == "gold_seen"


def test_a_rater_who_stopped_before_any_gold_clip_no_longer_moves_the_anchor(example):
    test, frame = example
    kept = frame[frame["rater"].isin(screen_raters(frame).query("accepted")["rater"])]
    anchor = test.with_role("anchor")[0]
    rows = frame[(frame["rater"] == kept["rater"].iloc[0]) & (frame["kind"] == "mos")]
    tests = rows[rows["role"] == "test"]
    quitter = pd.concat([tests[tests["system"] == anchor].head(1), tests.head(1), rows[rows["role"] == "trap"].head(1)])
    quitter = quitter.assign(rater="quitter")  # a generous rater who stopped after 3 trials: anchor 5, trap right
    quitter.loc[quitter["role"] == "test", "score"] = [5, 3]
    screening = screen_raters(pd.concat([frame, quitter], ignore_index=True)).set_index("rater")
    assert screening.loc["quitter", "reasons"] == "gold_seen"  # passes every other check

    def anchor_mos(ratings):
        return ratings[(ratings["system"] == anchor) & (ratings["role"] == "test")]["score"].mean()

    kept_now = pd.concat([frame, quitter])[lambda f: f["rater"].isin(screening.index[screening["accepted"]])]
    assert anchor_mos(kept_now) == anchor_mos(kept)
    assert anchor_mos(pd.concat([kept, quitter])) > anchor_mos(kept)  # what keeping them would have done


HOSTILE = '<img src=x onerror="alert(1)">'


def test_report_escapes_names_and_fields_from_test_folders_and_ratings(example):
    mistune = pytest.importorskip("mistune")
    test, frame = example
    anchor = test.with_role("anchor")[0]
    evil = f"{anchor}{HOSTILE}"
    systems = {name: spec for name, spec in test.systems.items() if name != anchor}
    systems[evil] = test.systems[anchor]  # last: the clip length is read from the first system's files
    hostile_test = dataclasses.replace(test, name=f"t{HOSTILE}", systems=systems)
    monkey = frame.assign(system=frame["system"].replace(anchor, evil), listening=f"earbuds{HOSTILE}")
    text = report(monkey, hostile_test, n_boot=50, note=f"[click](javascript:alert(1)) {HOSTILE}")
    rendered = mistune.create_markdown(escape=False, plugins=["table"])(text)  # raw HTML passes, as in Jupyter
    assert "<img" not in rendered and "<a " not in rendered and "javascript:alert" in rendered
    assert rendered.count("&lt;img src=x onerror=&quot;alert(1)&quot;&gt;") == 5  # title, anchor x2, device, note
    plain = report(frame, test, n_boot=50)
    assert "real | reference" in plain and md_text("teacher") == "teacher"


# -------------------------------------------------------------------------------------------- the committed example


@pytest.fixture(scope="module")
def example():
    test = load_test(DATA_DIR / "listening" / "example")
    return test, read_ratings(DATA_DIR / "listening" / "example_ratings.csv", test.name)


def test_committed_example_gives_mos_and_ci_for_every_system(example):
    test, frame = example
    kept = frame[frame["rater"].isin(screen_raters(frame).query("accepted")["rater"])]
    table = mos_table(kept, test, n_boot=500)
    assert set(table["system"]) == set(test.systems)
    assert table[["mos", "ci95", "boot_low", "boot_high"]].notna().all().all()
    assert (table["ci95"] > 0).all() and (table["boot_low"] <= table["mos"]).all()
    assert table.iloc[0]["role"] == "reference" and table.iloc[-1]["role"] == "anchor"
    assert (~screen_raters(frame)["accepted"]).sum() == 2  # the two careless simulated raters


def test_report_states_what_p800_2_asks_and_objective_table(example):
    test, frame = example
    text = report(frame, test, n_boot=200)
    for needed in (
        "Test type",
        "Scale",
        "Raters",
        "Screening",
        "Ratings",
        "Listening conditions",
        "Excellent",
        "real | reference",
        "teacher vs student",
    ):
        assert needed in text
    table = objective_table(mos_table(frame, test, n_boot=100), test).set_index("system")
    assert table.loc["real", "log-mel distance to real"] == 0.0
    shipped = json.loads((DATA_DIR / "checkpoints" / "teacher_course" / "metrics.json").read_text())
    assert table.loc["teacher", "teacher NLL (bits/sample)"] == pytest.approx(shipped["heldout_nll_bits"], abs=1e-6)
    assert math.isnan(table.loc["mulaw8", "student KL (nats/sample)"])
