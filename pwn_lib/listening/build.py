"""Build a listening test from the shipped checkpoints on held-out (test split) utterances.

Every system renders the same loudest ``seconds`` of each utterance: the teacher and students from that crop's
log-mel (the same conditioning they were trained on) through :func:`pwn_lib.vocoders.render`, exactly as
``python -m pwn_lib.evaluate`` scores them; the codec and anchor conditions from the crop itself.

Systems (``--systems``, comma-separated):

* ``real``: the recording (the hidden reference);
* ``teacher``: ``data/checkpoints/teacher_course``, cached autoregressive generation at the sampling temperature its
  config.json records, in the compiled C loop on one CPU thread (batched over utterances, so the clip length sets
  the time);
* ``student``: ``data/checkpoints/student_course``, one parallel pass;
* ``mulaw8``: the recording through 8-bit mu-law, the 2016 WaveNet's output grid;
* ``anchor``: the low anchor, MNRU at Q = 10 dB (ITU-T P.810);
* ``NAME=DIR``: any other teacher or student checkpoint, e.g. a KL-only arm: ``kl=runs/student_kl``.

The controls are a gold pair (the real recording of another utterance, expected 5, and the same under MNRU at
Q = 0 dB, expected 1) and five trap clips (speech, then the corpus's own "press" and "one" ... "five").
"""

from __future__ import annotations

import json
from pathlib import Path

import librosa
import numpy as np
from tqdm.auto import tqdm

from pwn_lib import vocoders
from pwn_lib.artifacts import write_json
from pwn_lib.audio import load_audio, log_mel_distance, loudest_window
from pwn_lib.config import CHECKPOINT_DIR, DATA_DIR, REPO_ROOT, AudioConfig
from pwn_lib.data import load_corpus
from pwn_lib.listening.stats import CHECKPOINT_FIGURES
from pwn_lib.listening.stimuli import (
    MANIFEST,
    TARGET_LUFS,
    ListeningTest,
    StimulusError,
    mnru,
    mulaw_roundtrip,
    write_test,
)

DEFAULT_SYSTEMS = "real,teacher,student,mulaw8,anchor"
BUILTIN = {
    "real": "the held-out recording (hidden reference)",
    "teacher": "shipped course teacher, cached autoregressive generation from the real log-mel",
    "student": "shipped course student, one parallel pass from the real log-mel",
    "mulaw8": "the recording through 8-bit mu-law (mu = 255)",
    "anchor": "low anchor: MNRU, Q = 10 dB (ITU-T P.810)",
}
SHIPPED = {"teacher": CHECKPOINT_DIR / "teacher_course", "student": CHECKPOINT_DIR / "student_course"}
ANCHOR_Q_DB, GOLD_BAD_Q_DB = 10.0, 0.0
WORDS_DIR = DATA_DIR / "corpus" / "wavs"  # trap clips speak "press N" with the corpus's own recordings


def parse_systems(spec: str) -> dict[str, str | Path]:
    """``"real,teacher,kl=DIR"`` -> ``{"real": "real", "teacher": Path(...), "kl": Path("DIR")}``."""
    systems: dict[str, str | Path] = {}
    for item in (s.strip() for s in spec.split(",")):
        if not item:
            continue
        name, _, where = item.partition("=")
        if name in systems:
            raise StimulusError(f"--systems: {name!r} appears twice in {spec!r}")
        if where:
            systems[name] = Path(where)
        elif name in SHIPPED:
            systems[name] = SHIPPED[name]
        elif name in BUILTIN:
            systems[name] = name
        else:
            raise StimulusError(f"--systems: unknown system {name!r}; use {sorted(BUILTIN)} or NAME=CHECKPOINT_DIR")
    if not systems:
        raise StimulusError(f"--systems {spec!r} names no system")
    return systems


def heldout_crops(
    count: int, n_samples: int, seed: int, hop: int, exclude: set[str] = frozenset(), split: str = "test"
) -> dict[str, np.ndarray]:
    """``count`` utterances of ``split`` long enough for ``n_samples``, drawn with ``seed``: their loudest crops."""
    pool = [u for u in load_corpus(split) if len(u.audio) >= n_samples and u.id not in exclude]
    if len(pool) < count:
        raise StimulusError(
            f"only {len(pool)} {split}-split utterances last {n_samples} samples or more; "
            f"ask for fewer utterances (--utterances) or shorter clips (--seconds)"
        )
    chosen = sorted(np.random.default_rng(seed).choice(len(pool), size=count, replace=False))
    return {pool[i].id: loudest_window(pool[i].audio, n_samples, hop) for i in chosen}


def render(source: str | Path, crops: dict[str, np.ndarray], seed: int, audio: AudioConfig) -> dict[str, np.ndarray]:
    """One system's rendering of every crop (all of one length, whole hops): ``{utterance: (T,) float32}``."""
    if source == "real":
        return dict(crops)
    if source == "mulaw8":
        return {u: mulaw_roundtrip(x, bits=8) for u, x in crops.items()}
    if source == "anchor":
        return {u: mnru(x, ANCHOR_Q_DB, seed=seed + i) for i, (u, x) in enumerate(crops.items())}
    try:
        vocoder = vocoders.load(source)
    except (FileNotFoundError, ValueError) as error:
        raise StimulusError(str(error)) from error
    x = vocoders.render(vocoder, vocoders.mel_batch(list(crops.values()), audio), seed)
    return {u: x[i, 0].cpu().numpy().astype(np.float32) for i, u in enumerate(crops)}


def _word(name: str, sample_rate: int) -> np.ndarray:
    x = load_audio(WORDS_DIR / f"{name}.flac", sample_rate)
    return librosa.effects.trim(x, top_db=35)[0]


def control_clips(lead: np.ndarray, utterance: str, sample_rate: int, seed: int) -> list[tuple[dict, np.ndarray]]:
    """Gold clips (``lead`` itself, expected 5; under MNRU at 0 dB, expected 1) and trap clips "press 1".."press 5"."""
    gap = np.zeros(int(0.25 * sample_rate), dtype=np.float32)
    short = np.zeros(int(0.05 * sample_rate), dtype=np.float32)
    press = _word("vm-press", sample_rate)
    digits = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five"}
    clips = [
        ({"name": "gold_good", "kind": "gold", "utterance": utterance, "expected": 5, "note": "real recording"}, lead),
        (
            {
                "name": "gold_bad",
                "kind": "gold",
                "utterance": utterance,
                "expected": 1,
                "note": f"MNRU, Q = {GOLD_BAD_Q_DB:g} dB",
            },
            mnru(lead, GOLD_BAD_Q_DB, seed),
        ),
    ]
    head = lead[: int(0.8 * sample_rate)]
    for k, word in digits.items():
        spoken = np.concatenate([head, gap, press, short, _word(f"digits_{k}", sample_rate)])
        clips.append(
            (
                {
                    "name": f"trap_{k}",
                    "kind": "trap",
                    "utterance": utterance,
                    "expected": k,
                    "note": f"speech, then 'press {word}'",
                },
                spoken.astype(np.float32),
            )
        )
    return clips


def _shown(source: str | Path, system: str) -> str:
    """How the manifest names a system's source: a repository-relative checkpoint path, or the description."""
    if not isinstance(source, Path):
        return BUILTIN[system]
    resolved = source.resolve()
    return str(resolved.relative_to(REPO_ROOT)) if resolved.is_relative_to(REPO_ROOT) else str(source)


def _checkpoint_figures(source: str | Path) -> dict:
    if not isinstance(source, Path) or not (source / "metrics.json").is_file():
        return {}
    metrics = json.loads((source / "metrics.json").read_text())
    return {k: metrics[k] for k in (*CHECKPOINT_FIGURES, "steps") if k in metrics}


def stimulus_metrics(test: ListeningTest) -> dict:
    """Log-mel distance of every stored (loudness-normalised) stimulus to the real one, per system and utterance."""
    reference = (test.with_role("reference") or [None])[0]
    if reference is None:
        return {}
    real = {u: test.load(test.path(reference, u)) for u in test.utterances}
    return {
        s: {u: log_mel_distance(test.load(test.path(s, u)), real[u]) for u in test.utterances} for s in test.systems
    }


def build_test(
    out: str | Path,
    systems: str = DEFAULT_SYSTEMS,
    utterances: int = 8,
    seconds: float = 1.5,
    seed: int = 0,
    name: str | None = None,
    ab: str | None = None,
    loudness: float = TARGET_LUFS,
    command: str = "",
) -> ListeningTest:
    """Render, loudness-normalise and store a test in ``out``; see the module docstring for the systems.

    ``ab``: A/B pairs as ``"teacher:student,real:student"``; default teacher:student when both are built.
    """
    audio = AudioConfig()
    sources = parse_systems(systems)
    n_samples = vocoders.hop_samples(seconds, audio)
    crops = heldout_crops(utterances, n_samples, seed, audio.hop_length)
    stimuli = {}
    for system, source in tqdm(sources.items(), desc="render systems"):
        stimuli[system] = render(source, crops, seed, audio)
    gold_id, gold = next(iter(heldout_crops(1, n_samples, seed + 1, audio.hop_length, exclude=set(crops)).items()))
    roles = {
        s: {"role": "reference" if s == "real" else "anchor" if s == "anchor" else "system", "source": _shown(src, s)}
        for s, src in sources.items()
    }
    pairs = (
        [tuple(p.split(":")) for p in ab.split(",") if p]
        if ab
        else ([("teacher", "student")] if {"teacher", "student"} <= set(sources) else [])
    )
    for pair in pairs:
        if len(pair) != 2 or not set(pair) <= set(sources):
            raise StimulusError(f"--ab {ab!r}: each pair is SYSTEM:SYSTEM from {sorted(sources)}")
    test = write_test(
        out,
        name or Path(out).name,
        stimuli,
        audio.sample_rate,
        roles,
        controls=control_clips(gold, gold_id, audio.sample_rate, seed),
        ab_pairs=pairs,
        seed=seed,
        target_lufs=loudness,
        command=command,
    )
    test.metrics = {
        "logmel_distance_to_real": stimulus_metrics(test),
        "checkpoint": {s: f for s, src in sources.items() if (f := _checkpoint_figures(src))},
    }
    write_json(test.root / MANIFEST, test.as_manifest())
    return test


__all__ = [
    "BUILTIN",
    "DEFAULT_SYSTEMS",
    "build_test",
    "control_clips",
    "heldout_crops",
    "parse_systems",
    "render",
    "stimulus_metrics",
]
