"""Simulated raters that drive the real rating pages from code: for tests, fast mode and the example ratings.

These are **not** measurements of any system. Each simulated rater answers from a stated model:

    score = clip(round(quality[system] + rater bias + utterance effect + noise), 1, 5)

with bias ~ N(0, 0.35^2) per rater, an effect ~ N(0, 0.25^2) per utterance shared by all systems, and noise
~ N(0, 0.7^2) per rating. Gold clips get 4.6 (expected 5) or 1.2 (expected 1) as their quality, and an attentive
rater answers a trap clip with its spoken number. A/B: the rater prefers the side with the higher
``quality + N(0, 0.8^2)`` and says "no preference" when the two are within 0.3. Two kinds of careless raters
exist so that screening has something to find: ``random`` (uniform answers) and ``straight`` (always 4).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from pwn_lib.listening.design import rater_id
from pwn_lib.listening.stimuli import ListeningTest, mnru, mulaw_roundtrip, write_test
from pwn_lib.listening.store import RatingStore
from pwn_lib.listening.widgets import LISTENING_DEVICES, ABPage, MOSPage, TrialPage, answer_from_code

# Hand-set latent qualities, chosen to look like a plausible outcome (real best, anchor worst). Not measured.
DEFAULT_QUALITY = {"real": 4.5, "mulaw8": 3.9, "teacher": 2.8, "student": 2.6, "anchor": 1.4}
GOLD_QUALITY = {5: 4.6, 1: 1.2}
BIAS_SD, UTTERANCE_SD, NOISE_SD, AB_SD, AB_TIE = 0.35, 0.25, 0.7, 0.8, 0.3


@dataclass
class SimulatedRater:
    """One simulated listener: ``behaviour`` is "attentive", "random" or "straight"."""

    name: str
    behaviour: str
    bias: float
    device: str

    def score(
        self, page: MOSPage, quality: dict[str, float], effect: dict[str, float], rng: np.random.Generator
    ) -> int:
        trial = page.current
        if self.behaviour == "random":
            return int(rng.integers(1, 6))
        if self.behaviour == "straight":
            return 4
        if trial.role == "trap":
            return int(trial.expected)
        q = GOLD_QUALITY[trial.expected] if trial.role == "gold" else quality.get(trial.system, 3.0)
        latent = q + self.bias + effect.get(trial.utterance, 0.0) + rng.normal(0.0, NOISE_SD)
        return int(np.clip(np.rint(latent), 1, 5))

    def choice(self, page: ABPage, quality: dict[str, float], rng: np.random.Generator) -> str:
        trial = page.current
        if self.behaviour == "random":
            return str(rng.choice(["A", "B", "none"]))
        if self.behaviour == "straight":
            return "A"
        d = quality.get(trial.system, 3.0) - quality.get(trial.system_b, 3.0) + rng.normal(0.0, AB_SD)
        return "none" if abs(d) < AB_TIE else ("A" if d > 0 else "B")


def toy_test(
    root, utterances: int = 3, seconds: float = 0.6, sample_rate: int = 16_000, name: str = "toy"
) -> ListeningTest:
    """A small synthetic test (harmonic tones, no checkpoints) for tests and demos, written to ``root``.

    Systems: ``real`` (the reference tones), ``coarse`` (4-bit mu-law) and ``anchor`` (MNRU, Q = 5 dB); one A/B
    pair (real, coarse); gold clips and five trap clips like a built test's (tones, not speech).
    """
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    tones = {
        f"u{i + 1}": (0.3 * np.sin(2 * np.pi * 110 * (i + 2) * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(
            np.float32
        )
        for i in range(utterances)
    }
    stimuli = {
        "real": tones,
        "coarse": {u: mulaw_roundtrip(x, bits=4) for u, x in tones.items()},
        "anchor": {u: mnru(x, 5.0, seed=i) for i, (u, x) in enumerate(tones.items())},
    }
    roles = {
        "real": {"role": "reference", "source": "tones"},
        "coarse": {"role": "system", "source": "4-bit mu-law"},
        "anchor": {"role": "anchor", "source": "MNRU 5 dB"},
    }
    lead = tones["u1"]
    controls = [
        ({"name": "gold_good", "kind": "gold", "utterance": "u1", "expected": 5}, lead),
        ({"name": "gold_bad", "kind": "gold", "utterance": "u1", "expected": 1}, mnru(lead, 0.0)),
    ]
    controls += [
        ({"name": f"trap_{k}", "kind": "trap", "utterance": "u1", "expected": k}, lead * (0.5 + 0.1 * k))
        for k in range(1, 6)
    ]
    return write_test(root, name, stimuli, sample_rate, roles, controls=controls, ab_pairs=[("real", "coarse")])


def simulated_raters(count: int, seed: int = 0, n_random: int = 1, n_straight: int = 1) -> list[SimulatedRater]:
    """``count`` raters, the last ``n_random + n_straight`` of them careless."""
    rng = np.random.default_rng(seed)
    behaviours = ["attentive"] * (count - n_random - n_straight) + ["random"] * n_random + ["straight"] * n_straight
    devices = rng.choice(LISTENING_DEVICES[:3], size=count, p=[0.7, 0.2, 0.1])
    return [
        SimulatedRater(f"simulated-{i + 1:02d}", b, float(rng.normal(0.0, BIAS_SD)), str(d))
        for i, (b, d) in enumerate(zip(behaviours, devices, strict=True))
    ]


def _drive(page: TrialPage, answer) -> int:
    n = 0
    while not page.finished:
        answer_from_code(page, answer(page))
        n += 1
    return n


def simulate_class(
    test: ListeningTest,
    store: RatingStore,
    raters: int = 12,
    quality: dict[str, float] | None = None,
    seed: int = 0,
    n_random: int = 1,
    n_straight: int = 1,
    ab: bool = True,
    progress: bool = True,
) -> list[str]:
    """Let ``raters`` simulated listeners rate ``test`` via :class:`MOSPage` and :class:`ABPage`; return their ids."""
    quality = {**DEFAULT_QUALITY, **(quality or {})}
    rng = np.random.default_rng(seed + 1)
    effect = {u: float(rng.normal(0.0, UTTERANCE_SD)) for u in test.utterances}
    ids = []
    for rater in tqdm(
        simulated_raters(raters, seed, n_random, n_straight), desc="simulated raters", disable=not progress
    ):
        rid = rater_id(rater.name, test.name)
        _drive(MOSPage(test, store, rid, rater.device), lambda p, rater=rater: rater.score(p, quality, effect, rng))
        if ab and test.ab_pairs:
            _drive(ABPage(test, store, rid, rater.device), lambda p, rater=rater: rater.choice(p, quality, rng))
        ids.append(rid)
    return ids


__all__ = ["DEFAULT_QUALITY", "SimulatedRater", "simulate_class", "simulated_raters", "toy_test"]
