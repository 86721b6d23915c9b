"""Test design: anonymised rater ids, and each rater's seeded list of MOS and A/B trials.

* **MOS (ACR, ITU-T P.800 Annex B):** every system reads every utterance once, the hidden reference (real speech)
  and the low anchor included, plus the gold clips and one trap clip (ITU-T P.808), in an order shuffled per rater.
* **A/B preference:** every pair in ``test.ab_pairs`` on every utterance, each pair's sides drawn per trial.

The order depends only on the test and the rater id, so a rater who comes back gets the same list and resumes it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pwn_lib.listening.stimuli import ListeningTest

MOS, AB = "mos", "ab"
KINDS = (MOS, AB)


@dataclass(frozen=True)
class Trial:
    """One thing a rater judges.

    ``kind`` is "mos" or "ab"; ``index`` its 0-based position among the rater's trials of that kind; ``role`` is
    "test", "gold" or "trap". MOS: ``system`` is rated on ``path``. A/B: ``system`` plays as A (``path``) and
    ``system_b`` as B (``path_b``). Gold and trap trials carry the ``expected`` score.
    """

    kind: str
    index: int
    role: str
    system: str
    utterance: str
    path: Path
    system_b: str | None = None
    path_b: Path | None = None
    expected: int | None = None


def rater_id(name: str, test_name: str) -> str:
    """An anonymised, stable rater id: the first 10 hex digits of SHA-256 of (test, name).

    The same nickname gives the same id (so a rater can resume), different tests give unrelated ids. A hash of a
    guessable name is pseudonymous, not anonymous: for real anonymity hand out random codes as names.
    """
    cleaned = " ".join(name.split()).lower()
    if not cleaned:
        raise ValueError("rater name is empty; type a nickname or the code your instructor gave you")
    return "r" + hashlib.sha256(f"{test_name}\0{cleaned}".encode()).hexdigest()[:10]


def rater_rng(test: ListeningTest, rater: str, kind: str) -> np.random.Generator:
    """The generator behind one rater's order for ``kind``: seeded by the test's seed and name and the rater id."""
    digest = hashlib.sha256(f"{test.seed}\0{test.name}\0{rater}\0{kind}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _shuffle_test_first(items: list[dict], rng: np.random.Generator) -> list[dict]:
    """A random order whose first trial is a plain test trial (a warm-up before any control)."""
    order = [items[i] for i in rng.permutation(len(items))]
    first_test = next((i for i, item in enumerate(order) if item["role"] == "test"), 0)
    order[0], order[first_test] = order[first_test], order[0]
    return order


def mos_trials(test: ListeningTest, rater: str, n_traps: int = 1) -> list[Trial]:
    """The rater's MOS trials: systems x utterances, every gold clip, and ``n_traps`` trap clips drawn for them."""
    rng = rater_rng(test, rater, MOS)
    items = [
        {"role": "test", "system": s, "utterance": u, "path": test.path(s, u)}
        for s in test.systems
        for u in test.utterances
    ]
    golds = [c for c in test.controls if c["kind"] == "gold"]
    traps = [c for c in test.controls if c["kind"] == "trap"]
    if n_traps > len(traps):
        raise ValueError(f"{test.root}: n_traps={n_traps} but the test has only {len(traps)} trap clips")
    chosen = [traps[i] for i in sorted(rng.choice(len(traps), size=n_traps, replace=False))] if n_traps else []
    for control in golds + chosen:
        items.append(
            {
                "role": control["kind"],
                "system": control["name"],
                "utterance": control["utterance"],
                "path": test.root / control["file"],
                "expected": control["expected"],
            }
        )
    return [Trial(kind=MOS, index=i, **item) for i, item in enumerate(_shuffle_test_first(items, rng))]


def ab_trials(test: ListeningTest, rater: str) -> list[Trial]:
    """The rater's A/B trials: every pair on every utterance, sides drawn per trial, order shuffled."""
    rng = rater_rng(test, rater, AB)
    items = []
    for a, b in test.ab_pairs:
        for u in test.utterances:
            left, right = (b, a) if rng.random() < 0.5 else (a, b)
            items.append(
                {
                    "role": "test",
                    "system": left,
                    "system_b": right,
                    "utterance": u,
                    "path": test.path(left, u),
                    "path_b": test.path(right, u),
                }
            )
    return [Trial(kind=AB, index=i, **item) for i, item in enumerate(_shuffle_test_first(items, rng))]


def trials(test: ListeningTest, rater: str, kind: str) -> list[Trial]:
    """:func:`mos_trials` or :func:`ab_trials` by ``kind``."""
    if kind == MOS:
        return mos_trials(test, rater)
    if kind == AB:
        return ab_trials(test, rater)
    raise ValueError(f"kind={kind!r}; choose one of {KINDS}")


__all__ = ["AB", "KINDS", "MOS", "Trial", "ab_trials", "mos_trials", "rater_id", "rater_rng", "trials"]
