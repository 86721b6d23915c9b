"""Listening tests (notebook 09): MOS (ACR) and A/B preference tests that a class can run.

The pieces, in the order a test uses them:

* :mod:`~pwn_lib.listening.stimuli`: the test folder (a folder per system, loudness-normalised), validation;
* :mod:`~pwn_lib.listening.build`: ``python -m pwn_lib.listening build`` renders one from the shipped checkpoints;
* :mod:`~pwn_lib.listening.design`: anonymised rater ids, seeded trial orders, gold and trap trials (ITU-T P.808);
* :mod:`~pwn_lib.listening.widgets`: the MOS and A/B pages (ipywidgets 8 and a small anywidget audio player);
* :mod:`~pwn_lib.listening.store`: one SQLite file (WAL) holding one row per rating;
* :mod:`~pwn_lib.listening.stats`: MOS with t and cluster-bootstrap CIs, Wilcoxon, binomial A/B, screening, report;
* :mod:`~pwn_lib.listening.simulate`: simulated raters that drive the pages from code.

The paper's claim "no loss of quality" (van den Oord et al., 2017, Table 1: teacher 4.41 +- 0.069, student
4.41 +- 0.078) is a MOS of this kind.
"""

from pwn_lib.listening.design import AB, MOS, Trial, ab_trials, mos_trials, rater_id, trials
from pwn_lib.listening.stats import (
    ACR_LABELS,
    ab_preference,
    ab_table,
    accepted,
    bootstrap_interval,
    bootstrap_means,
    holm,
    mos_table,
    objective_table,
    paired_wilcoxon,
    pairwise_wilcoxon,
    plot_mos,
    report,
    screen_raters,
    t_interval,
)
from pwn_lib.listening.stimuli import (
    TARGET_LUFS,
    ListeningTest,
    StimulusError,
    load_test,
    loudness_lufs,
    mnru,
    mulaw_roundtrip,
    normalize_loudness,
)
from pwn_lib.listening.store import (
    BadRatingsWarning,
    DuplicateRatingError,
    Rating,
    RatingStore,
    SchemaVersionError,
    StoreError,
    invalid_ratings,
    read_ratings,
)
from pwn_lib.listening.widgets import ABPage, ClipPlayer, ListeningSession, MOSPage, answer_from_code

__all__ = [
    "AB",
    "ABPage",
    "ACR_LABELS",
    "BadRatingsWarning",
    "ClipPlayer",
    "DuplicateRatingError",
    "ListeningSession",
    "ListeningTest",
    "MOS",
    "MOSPage",
    "Rating",
    "RatingStore",
    "SchemaVersionError",
    "StimulusError",
    "StoreError",
    "TARGET_LUFS",
    "Trial",
    "ab_preference",
    "ab_table",
    "ab_trials",
    "accepted",
    "answer_from_code",
    "bootstrap_interval",
    "bootstrap_means",
    "holm",
    "load_test",
    "loudness_lufs",
    "mnru",
    "mos_table",
    "mos_trials",
    "mulaw_roundtrip",
    "normalize_loudness",
    "objective_table",
    "paired_wilcoxon",
    "pairwise_wilcoxon",
    "plot_mos",
    "rater_id",
    "invalid_ratings",
    "read_ratings",
    "report",
    "screen_raters",
    "t_interval",
    "trials",
]
