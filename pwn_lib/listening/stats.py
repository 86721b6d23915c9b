"""Analysis of listening-test ratings: MOS with two kinds of CI, paired tests, A/B tests, screening, the report.

Input is the ratings DataFrame of :meth:`pwn_lib.listening.store.RatingStore.ratings` (or a CSV export).

* MOS per system with a **t-based 95 % CI**, ``mean +- t_{0.975, n-1} s / sqrt(n)`` over all n ratings. This is
  the "4.41 +- 0.069" of the papers; it treats every rating as independent.
* A **two-way cluster bootstrap** CI: resample raters and utterances (each with replacement, independently) and
  recompute the MOS. It also counts the variation between raters and between sentences, which the t CI ignores.
* **Wilcoxon signed-rank** tests between systems on ratings paired by (rater, utterance), Holm-adjusted.
* **A/B**: a two-sided exact binomial test of "A preferred" against 1/2; "no preference" answers are dropped
  (the sign-test convention, default) or split evenly between the sides.
* **Per voice**: a test built from several voices (``build --voices``) also gets each voice's MOS per system.
* **Screening** (ITU-T P.808): a rater is kept only if every clip was played to the end, every trap clip got the
  spoken score, at least one gold clip was rated and each within ``gold_tolerance`` of its known score, and their
  ratings vary.

Notebook 09 derives the CI and the bootstrap from scratch before using these functions.
"""

from __future__ import annotations

import html
import itertools
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.stats

from pwn_lib.listening.stimuli import ListeningTest

ACR_LABELS = {5: "Excellent", 4: "Good", 3: "Fair", 2: "Poor", 1: "Bad"}  # ITU-T P.800 Annex B, listening quality
LEVEL = 0.95
MIN_VARIANCE = 0.15  # P.808 reference implementation's default: a rater who (nearly) always clicks one score is out
GOLD_TOLERANCE = 1
TIES = ("drop", "split")
SCREENING_CHECKS = ("all_played", "trap_ok", "gold_seen", "gold_ok", "variance_ok")
VOICES_KEY = "voices"  # test.json's metrics[VOICES_KEY]: utterance -> voice, written by `build --voices`


def mos_ratings(frame: pd.DataFrame) -> pd.DataFrame:
    """The MOS rows of the test proper (no gold or trap clips)."""
    return frame[(frame["kind"] == "mos") & (frame["role"] == "test")]


# ---------------------------------------------------------------------------------------------
# MOS and its confidence intervals
# ---------------------------------------------------------------------------------------------


def t_interval(scores: Sequence[float], level: float = LEVEL) -> tuple[float, float]:
    """(mean, half-width) of the t-based CI: ``t_{(1+level)/2, n-1} * s / sqrt(n)``, s with ddof=1."""
    x = np.asarray(scores, dtype=np.float64)
    if len(x) < 2:
        return (float(x.mean()) if len(x) else math.nan), math.nan
    half = scipy.stats.t.ppf((1 + level) / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
    return float(x.mean()), float(half)


def bootstrap_means(
    frame: pd.DataFrame, n_boot: int = 2000, seed: int = 0, systems: Sequence[str] | None = None
) -> tuple[list[str], np.ndarray]:
    """MOS of each system under ``n_boot`` two-way cluster resamples: ``(systems, means (n_boot, S))``.

    Each resample draws R raters from the R raters and U utterances from the U utterances, with replacement. A
    rating by rater r of utterance u then counts ``(times r drawn) * (times u drawn)`` times. A system with no
    rating in a resample gets NaN there.
    """
    rows = mos_ratings(frame)
    systems = list(systems) if systems is not None else sorted(rows["system"].unique())
    rows = rows[rows["system"].isin(systems)]
    raters, r_idx = np.unique(rows["rater"].to_numpy(), return_inverse=True)
    utts, u_idx = np.unique(rows["utterance"].to_numpy(), return_inverse=True)
    s_idx = pd.Categorical(rows["system"], categories=systems).codes
    score = rows["score"].to_numpy(dtype=np.float64)
    rng = np.random.default_rng(seed)
    wr = rng.multinomial(len(raters), np.full(len(raters), 1 / len(raters)), size=n_boot)  # (n_boot, R)
    wu = rng.multinomial(len(utts), np.full(len(utts), 1 / len(utts)), size=n_boot)  # (n_boot, U)
    weight = (wr[:, r_idx] * wu[:, u_idx]).astype(np.float64)  # (n_boot, N)
    onehot = np.eye(len(systems))[s_idx]  # (N, S)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = (weight * score) @ onehot / (weight @ onehot)
    return systems, means


def bootstrap_interval(
    frame: pd.DataFrame, n_boot: int = 2000, seed: int = 0, level: float = LEVEL, systems: Sequence[str] | None = None
) -> pd.DataFrame:
    """Percentile CI of each system's MOS from :func:`bootstrap_means`: columns system, boot_low, boot_high."""
    names, means = bootstrap_means(frame, n_boot, seed, systems)
    tail = (1 - level) / 2 * 100
    low, high = np.nanpercentile(means, [tail, 100 - tail], axis=0)
    return pd.DataFrame({"system": names, "boot_low": low, "boot_high": high})


def mos_table(
    frame: pd.DataFrame, test: ListeningTest | None = None, n_boot: int = 2000, seed: int = 0, level: float = LEVEL
) -> pd.DataFrame:
    """One row per system: ratings, raters, utterances, MOS, SD, t CI (``ci95`` half-width) and bootstrap CI.

    Sorted by MOS, best first. With ``test``, a ``role`` column says which is the hidden reference and the anchor.
    """
    rows = mos_ratings(frame)
    if rows.empty:
        raise ValueError("no MOS ratings of test trials to analyse (gold and trap trials are not counted)")
    out = []
    for system, group in rows.groupby("system"):
        mean, half = t_interval(group["score"], level)
        out.append(
            {
                "system": system,
                "ratings": len(group),
                "raters": group["rater"].nunique(),
                "utterances": group["utterance"].nunique(),
                "mos": mean,
                "sd": float(group["score"].std(ddof=1)) if len(group) > 1 else math.nan,
                "ci95": half,
                "t_low": mean - half,
                "t_high": mean + half,
            }
        )
    table = pd.DataFrame(out).merge(bootstrap_interval(frame, n_boot, seed, level), on="system")
    if test is not None:
        table.insert(1, "role", [test.systems.get(s, {}).get("role", "?") for s in table["system"]])
    return table.sort_values(["mos", "system"], ascending=[False, True]).reset_index(drop=True)


def utterance_voices(test: ListeningTest) -> dict[str, str]:
    """Each utterance's voice as the builder recorded it; empty for a test of one unnamed voice (built without
    ``--voices``, or before voices were recorded)."""
    return dict(test.metrics.get(VOICES_KEY, {}))


def mos_by_voice(
    frame: pd.DataFrame, test: ListeningTest, n_boot: int = 2000, seed: int = 0, level: float = LEVEL
) -> pd.DataFrame:
    """:func:`mos_table` of each voice's utterances (voices in the test's order), with columns ``voice`` and
    ``unseen`` (the system's training run did not include that voice: see ``build``); empty when the test records
    no voices."""
    voices = utterance_voices(test)
    rows = mos_ratings(frame)
    rows = rows.assign(voice=rows["utterance"].map(voices))
    tables = []
    for voice in dict.fromkeys(voices[u] for u in test.utterances if u in voices):
        mine = rows[rows["voice"] == voice].drop(columns="voice")
        if mine.empty:
            continue
        table = mos_table(mine, test, n_boot, seed, level)
        table.insert(1, "voice", voice)
        table.insert(2, "unseen", [voice in test.systems.get(s, {}).get("unseen_voices", []) for s in table["system"]])
        tables.append(table)
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()


# ---------------------------------------------------------------------------------------------
# Paired comparisons
# ---------------------------------------------------------------------------------------------


def paired_scores(frame: pd.DataFrame, a: str, b: str) -> pd.DataFrame:
    """Scores of systems ``a`` and ``b`` on the same (rater, utterance): columns rater, utterance, a, b."""
    rows = mos_ratings(frame)
    wide = rows[rows["system"].isin([a, b])].pivot_table(
        index=["rater", "utterance"], columns="system", values="score", aggfunc="mean"
    )
    if a not in wide or b not in wide:
        rated = sorted(rows["system"].unique())
        raise ValueError(f"no MOS ratings for {a!r} and {b!r} to pair; systems rated: {rated}")
    return wide.dropna(subset=[a, b]).reset_index().rename(columns={a: "a", b: "b"})[["rater", "utterance", "a", "b"]]


def paired_wilcoxon(frame: pd.DataFrame, a: str, b: str) -> dict:
    """Wilcoxon signed-rank test of ``a`` vs ``b`` on scores paired by (rater, utterance), two-sided.

    Zero differences are dropped (``zero_method="wilcox"``). The p-value is exact when at most 50 nonzero
    differences remain and none of their magnitudes tie; otherwise it is the normal approximation with the
    tie-corrected variance, which is what 1-5 ratings (full of ties) nearly always need. (scipy's own "auto"
    picks the exact null distribution even with ties, which that distribution does not describe.)
    """
    pairs = paired_scores(frame, a, b)
    diff = (pairs["a"] - pairs["b"]).to_numpy()
    nonzero = diff[diff != 0]
    out = {
        "a": a,
        "b": b,
        "pairs": len(pairs),
        "nonzero": len(nonzero),
        "mean_diff": float(diff.mean()),
        "statistic": math.nan,
        "p": 1.0,
        "method": "none",
    }
    if len(nonzero):
        ties = len(np.unique(np.abs(nonzero))) < len(nonzero)
        method = "exact" if len(nonzero) <= 50 and not ties else "approx"
        result = scipy.stats.wilcoxon(nonzero, zero_method="wilcox", alternative="two-sided", method=method)
        out.update(statistic=float(result.statistic), p=float(result.pvalue), method=method)
    return out


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (same order as given): step-down ``max_{j<=i} (m - j) p_(j)``, capped at 1."""
    p = np.asarray(pvalues, dtype=np.float64)
    order = np.argsort(p, kind="stable")
    scaled = np.maximum.accumulate((len(p) - np.arange(len(p))) * p[order])
    adjusted = np.empty_like(p)
    adjusted[order] = np.minimum(scaled, 1.0)
    return adjusted


def pairwise_wilcoxon(frame: pd.DataFrame, systems: Sequence[str] | None = None) -> pd.DataFrame:
    """:func:`paired_wilcoxon` for every pair of ``systems`` (default: all rated), with Holm-adjusted ``p_holm``."""
    systems = list(systems) if systems is not None else sorted(mos_ratings(frame)["system"].unique())
    table = pd.DataFrame([paired_wilcoxon(frame, a, b) for a, b in itertools.combinations(systems, 2)])
    table["p_holm"] = holm(table["p"])
    return table


def ab_preference(frame: pd.DataFrame, a: str, b: str, ties: str = "drop", level: float = LEVEL) -> dict:
    """A/B preference of ``a`` over ``b`` (whichever side each was on) with a two-sided exact binomial test.

    ``ties="drop"``: "no preference" answers are left out, the test is on a-preferred out of a-or-b-preferred.
    ``ties="split"``: half of them (rounded down) count for each side, an odd one left out.
    ``share_a`` is the tested proportion, with its Wilson CI.
    """
    if ties not in TIES:
        raise ValueError(f"ties={ties!r}; choose one of {TIES}")
    rows = frame[(frame["kind"] == "ab") & (frame["role"] == "test")]
    rows = rows[((rows["system"] == a) & (rows["system_b"] == b)) | ((rows["system"] == b) & (rows["system_b"] == a))]
    if rows.empty:
        raise ValueError(f"no A/B ratings of {a!r} against {b!r}")
    preferred = np.where(rows["choice"] == "A", rows["system"], np.where(rows["choice"] == "B", rows["system_b"], ""))
    n_a, n_b = int((preferred == a).sum()), int((preferred == b).sum())
    n_none = len(rows) - n_a - n_b
    k, n = (n_a, n_a + n_b) if ties == "drop" else (n_a + n_none // 2, n_a + n_b + 2 * (n_none // 2))
    out = {
        "a": a,
        "b": b,
        "trials": len(rows),
        "prefer_a": n_a,
        "prefer_b": n_b,
        "no_preference": n_none,
        "ties": ties,
        "k": k,
        "n": n,
        "share_a": math.nan,
        "share_low": math.nan,
        "share_high": math.nan,
        "p": 1.0,
    }
    if n:
        result = scipy.stats.binomtest(k, n, 0.5, alternative="two-sided")
        ci = result.proportion_ci(confidence_level=level, method="wilson")
        out.update(share_a=k / n, share_low=ci.low, share_high=ci.high, p=float(result.pvalue))
    return out


def ab_table(frame: pd.DataFrame, pairs: Sequence[tuple[str, str]] | None = None, ties: str = "drop") -> pd.DataFrame:
    """:func:`ab_preference` for each pair (default: every pair that was A/B tested)."""
    if pairs is None:
        rows = frame[(frame["kind"] == "ab") & (frame["role"] == "test")]
        pairs = sorted({tuple(sorted(p)) for p in zip(rows["system"], rows["system_b"], strict=True)})
    return pd.DataFrame([ab_preference(frame, a, b, ties) for a, b in pairs])


# ---------------------------------------------------------------------------------------------
# Rater screening (ITU-T P.808)
# ---------------------------------------------------------------------------------------------


def screen_raters(
    frame: pd.DataFrame, gold_tolerance: int = GOLD_TOLERANCE, min_variance: float = MIN_VARIANCE
) -> pd.DataFrame:
    """One row per rater with the P.808 checks and the verdict ``accepted`` (and ``reasons`` when not).

    * ``all_played``: every clip of every answered trial fired ``ended`` at least once;
    * ``trap_ok``: at least one trap clip was answered, each with exactly the spoken score;
    * ``gold_seen``: at least one gold clip was rated (a rater who stopped before any gold clip is unchecked);
    * ``gold_ok``: every gold clip was rated within ``gold_tolerance`` of its known score;
    * ``variance_ok``: the variance of the rater's test-trial MOS scores is at least ``min_variance``.
    """
    out = []
    for rater, rows in frame.groupby("rater"):
        mos = rows[rows["kind"] == "mos"]
        ab = rows[rows["kind"] == "ab"]
        traps, golds, tests = mos[mos["role"] == "trap"], mos[mos["role"] == "gold"], mos[mos["role"] == "test"]
        played = bool((rows["ended"] >= 1).all() and (ab["ended_b"].fillna(0) >= 1).all())
        trap_ok = bool(len(traps) > 0 and (traps["score"] == traps["expected"]).all())
        gold_ok = bool(((golds["score"] - golds["expected"]).abs() <= gold_tolerance).all())
        variance = float(tests["score"].var(ddof=1)) if len(tests) > 1 else math.nan
        variance_ok = bool(variance >= min_variance)
        checks = {
            "all_played": played,
            "trap_ok": trap_ok,
            "gold_seen": len(golds) > 0,
            "gold_ok": gold_ok,
            "variance_ok": variance_ok,
        }
        reasons = [name for name, ok in checks.items() if not ok]
        out.append(
            {
                "rater": rater,
                "mos_ratings": len(mos),
                "ab_ratings": len(ab),
                **checks,
                "variance": variance,
                "accepted": not reasons,
                "reasons": ", ".join(reasons),
            }
        )
    return pd.DataFrame(out)


def accepted(frame: pd.DataFrame, screening: pd.DataFrame) -> pd.DataFrame:
    """The ratings of the raters that :func:`screen_raters` accepted."""
    return frame[frame["rater"].isin(screening.loc[screening["accepted"], "rater"])]


# ---------------------------------------------------------------------------------------------
# Objective metrics, the plot and the report
# ---------------------------------------------------------------------------------------------

CHECKPOINT_FIGURES = {  # metrics.json key -> column name in the side-by-side table
    "heldout_nll_bits": "teacher NLL (bits/sample)",
    "heldout_kl": "student KL (nats/sample)",
    "phone_error_rate_generated": "phone error rate",
}


def objective_table(table: pd.DataFrame, test: ListeningTest) -> pd.DataFrame:
    """MOS beside the objective figures: each stimulus's log-mel distance to the real one (mean over utterances,
    from the test manifest) and the checkpoint's own held-out figures (from its metrics.json), where they exist."""
    distances = test.metrics.get("logmel_distance_to_real", {})
    checkpoints = test.metrics.get("checkpoint", {})
    rows = []
    for _, r in table.iterrows():
        row = {
            "system": r["system"],
            "mos": r["mos"],
            "ci95": r["ci95"],
            "log-mel distance to real": float(np.mean(list(distances[r["system"]].values())))
            if r["system"] in distances
            else math.nan,
        }
        for key, column in CHECKPOINT_FIGURES.items():
            row[column] = checkpoints.get(r["system"], {}).get(key, math.nan)
        rows.append(row)
    return pd.DataFrame(rows)


def plot_mos(table: pd.DataFrame, ax=None):
    """Bar plot of MOS per system with the t CI (error bars) and the cluster-bootstrap CI (thin lines beside)."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(1.3 * len(table) + 2, 3.4))
    x = np.arange(len(table))
    ax.bar(x, table["mos"], color=[f"C{i}" for i in range(len(table))], alpha=0.8)
    ax.errorbar(x - 0.08, table["mos"], yerr=table["ci95"], fmt="none", ecolor="k", capsize=4, label="t 95 % CI")
    ax.vlines(
        x + 0.08, table["boot_low"], table["boot_high"], color="0.35", lw=2, label="rater x utterance bootstrap 95 % CI"
    )
    ax.set_xticks(x, table["system"])
    ax.set_ylim(1, 5)
    ax.set_yticks(range(1, 6), [f"{k} {ACR_LABELS[k]}" for k in range(1, 6)])
    ax.set_xlabel("system")
    ax.set_ylabel("MOS (ACR, 1-5)")
    ax.legend(loc="upper right", fontsize=8)
    return ax


_MARKDOWN_SPECIAL = str.maketrans({c: "\\" + c for c in "\\`*_[]()#|!~{}"} | {"\n": " ", "\r": " "})


def md_text(value) -> str:
    """``value`` as literal text inside Markdown: HTML escaped and Markdown's punctuation backslash-escaped.

    Names and fields come from test folders and ratings files written by others; rendered with ``Markdown`` (as
    notebook 09 does) a raw ``<img onerror=...>`` in them would run. One line, safe inside a table cell.
    """
    return html.escape(str(value).translate(_MARKDOWN_SPECIAL))


def _fmt_table(table: pd.DataFrame) -> str:
    """The MOS table in Markdown; a per-voice table (:func:`mos_by_voice`) gets a voice column."""
    by_voice = "voice" in table
    lines = [
        f"| system | {'voice | ' if by_voice else ''}role | ratings | raters | MOS ± 95 % CI (t) | bootstrap 95 % CI |",
        f"|---|{'---|' if by_voice else ''}---|---|---|---|---|",
    ]
    for _, r in table.iterrows():
        voice = f"{md_text(r['voice'])}{' (not trained on it)' if r['unseen'] else ''} | " if by_voice else ""
        lines.append(
            f"| {md_text(r['system'])} | {voice}{md_text(r.get('role', ''))} | {r['ratings']} | {r['raters']} | "
            f"{r['mos']:.2f} ± {r['ci95']:.2f} | [{r['boot_low']:.2f}, {r['boot_high']:.2f}] |"
        )
    return "\n".join(lines)


def _voices(test: ListeningTest) -> str:
    """`` (en 2, fr 2)``: utterances per voice, for the report's stimuli line (empty for a one-voice test)."""
    counts = pd.Series(utterance_voices(test)).value_counts(sort=False)
    return f" ({', '.join(f'{md_text(v)} {n}' for v, n in counts.items())})" if len(counts) > 1 else ""


def report(
    frame: pd.DataFrame,
    test: ListeningTest,
    *,
    gold_tolerance: int = GOLD_TOLERANCE,
    min_variance: float = MIN_VARIANCE,
    n_boot: int = 2000,
    seed: int = 0,
    ties: str = "drop",
    note: str = "",
) -> str:
    """A Markdown report with what ITU-T P.800.2 asks to state: test type, scale, raters, ratings, screening,
    listening conditions, and the results (MOS table, A/B table)."""
    screening = screen_raters(frame, gold_tolerance, min_variance)
    kept = accepted(frame, screening)
    failed = {c: int((~screening[c]).sum()) for c in SCREENING_CHECKS}
    devices = kept.drop_duplicates("rater")["listening"].fillna("not stated").value_counts()
    lines = [
        f"## Listening test report: {md_text(test.name)}",
        "",
        f"- **Test type:** listening-only absolute category rating (ACR, ITU-T P.800 Annex B) with hidden reference "
        f"({', '.join(map(md_text, test.with_role('reference'))) or 'none'}) and low anchor "
        f"({', '.join(map(md_text, test.with_role('anchor'))) or 'none'})"
        + (
            "; A/B preference (paired comparison) of "
            + ", ".join(f"{md_text(a)} vs {md_text(b)}" for a, b in test.ab_pairs)
            if test.ab_pairs
            else ""
        )
        + ".",
        "- **Scale:** listening quality, 5 Excellent, 4 Good, 3 Fair, 2 Poor, 1 Bad; A/B: A, B or no preference "
        f"(ties {'dropped' if ties == 'drop' else 'split evenly'} in the binomial test).",
        f"- **Stimuli:** {len(test.systems)} systems x {len(test.utterances)} held-out utterances{_voices(test)}, "
        f"{test.clip_seconds():.1f} s each, {test.sample_rate} Hz mono 16-bit, "
        f"loudness-normalised to {test.loudness_lufs:g} LUFS "
        "(ITU-R BS.1770); order randomised per rater; A/B sides randomised per trial.",
        f"- **Raters:** {len(screening)} took part, {int(screening['accepted'].sum())} kept after screening.",
        f"- **Screening (ITU-T P.808):** every clip played to the end ({failed['all_played']} failed), trap clip "
        f"answered with the spoken score ({failed['trap_ok']} failed), a gold clip rated ({failed['gold_seen']} "
        f"failed), gold clips within ±{gold_tolerance} of their known score ({failed['gold_ok']} failed), score "
        f"variance ≥ {min_variance} ({failed['variance_ok']} failed).",
        f"- **Ratings:** {len(mos_ratings(kept))} MOS ratings of test trials and "
        f"{int(((kept['kind'] == 'ab') & (kept['role'] == 'test')).sum())} A/B judgements from kept raters "
        "(gold and trap trials excluded).",
        "- **Listening conditions:** self-reported device: "
        + (", ".join(f"{md_text(k)} ({v})" for k, v in devices.items()) or "none recorded")
        + "; browser playback in JupyterLab, level set by each listener, room not controlled.",
        "- **Statistics:** MOS ± t-based 95 % CI over ratings; 95 % percentile CI from a bootstrap resampling "
        f"raters and utterances ({n_boot} resamples).",
    ]
    if note:
        lines.append(f"- **Note:** {md_text(note)}")
    lines += ["", _fmt_table(mos_table(kept, test, n_boot, seed))]
    if len(set(utterance_voices(test).values())) > 1:
        lines += ["", "MOS per voice:", "", _fmt_table(mos_by_voice(kept, test, n_boot, seed))]
    if test.ab_pairs and (kept["kind"] == "ab").any():
        ab = ab_table(kept, ties=ties)
        lines += ["", "| A/B | prefer first | prefer second | no preference | p (binomial) |", "|---|---|---|---|---|"]
        lines += [
            f"| {md_text(r['a'])} vs {md_text(r['b'])} | {r['prefer_a']} | {r['prefer_b']} | "
            f"{r['no_preference']} | {r['p']:.3g} |"
            for _, r in ab.iterrows()
        ]
    return "\n".join(lines)


__all__ = [
    "ACR_LABELS",
    "GOLD_TOLERANCE",
    "MIN_VARIANCE",
    "TIES",
    "ab_preference",
    "ab_table",
    "accepted",
    "bootstrap_interval",
    "bootstrap_means",
    "holm",
    "md_text",
    "mos_by_voice",
    "mos_ratings",
    "mos_table",
    "objective_table",
    "paired_scores",
    "paired_wilcoxon",
    "pairwise_wilcoxon",
    "plot_mos",
    "report",
    "screen_raters",
    "t_interval",
    "utterance_voices",
]
