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

Voices (``--voices en,es,fr,it,ru``, any of :data:`pwn_lib.data.VOICES`): the test then holds ``--utterances``
utterances of each named voice's own test split, their ids prefixed with the voice (``fr_conf-full``: a ``/`` would
put the stimulus in a subfolder, which a test folder does not read), and test.json's ``metrics.voices`` maps each
utterance to its voice, so the analysis reports MOS per system and voice. A multi-speaker checkpoint
(``n_speakers > 0``) renders each crop with its voice's speaker id (its position in ``VOICES``; the system's entry
records them as ``speaker_ids``); a single-speaker one renders every voice from its log-mel alone. A checkpoint may
render a voice it never learned: the test's voices that its config.json's ``train.voices`` does not list (a run that
records none learned the English corpus) are recorded as the system's ``unseen_voices``, and the per-voice MOS marks
them. Bad input (an unknown voice, a voice with too few long-enough test utterances, a multi-speaker checkpoint
without an id for a voice) is refused before anything is rendered. The real, mu-law and anchor conditions are the
voice's own recording, as for English; the gold and trap clips stay English. Without ``--voices`` the test is the
English corpus, unprefixed, as before (a multi-speaker checkpoint renders it as English, id 0).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import librosa
import numpy as np
import torch
from tqdm.auto import tqdm

from pwn_lib import vocoders
from pwn_lib.artifacts import read_config, write_json
from pwn_lib.audio import load_audio, log_mel_distance, loudest_window
from pwn_lib.config import CHECKPOINT_DIR, DATA_DIR, REPO_ROOT, AudioConfig
from pwn_lib.data import VOICES, load_voices
from pwn_lib.listening.stats import CHECKPOINT_FIGURES, VOICES_KEY
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


def parse_voices(spec: str | Sequence[str]) -> tuple[str, ...]:
    """``"en,fr"`` (or ``["en", "fr"]``) -> ``("en", "fr")``: known voices of :data:`pwn_lib.data.VOICES`, once each."""
    names = [v.strip() for v in (spec.split(",") if isinstance(spec, str) else spec)]
    names = [v for v in names if v]
    unknown = [v for v in names if v not in VOICES]
    if unknown:
        raise StimulusError(f"--voices: unknown voice(s) {unknown} in {spec!r}; choose from {','.join(VOICES)}")
    if not names or len(set(names)) != len(names):
        raise StimulusError(f"--voices {spec!r}: name each of {','.join(VOICES)} at most once, at least one")
    return tuple(names)


def utterance_id(voice: str, utterance: str) -> str:
    """The id of ``voice``'s ``utterance`` in a multi-voice test, unique across voices: ``fr_conf-full``."""
    return f"{voice}_{utterance}"


def heldout_crops(
    count: int,
    n_samples: int,
    seed: int,
    hop: int,
    exclude: set[str] = frozenset(),
    split: str = "test",
    voice: str | None = None,
) -> dict[str, np.ndarray]:
    """``count`` utterances of ``split`` long enough for ``n_samples``, drawn with ``seed``: their loudest crops.

    ``voice`` None: the English corpus, keyed by utterance id; a voice of :data:`pwn_lib.data.VOICES`: that voice's
    own split, keyed by :func:`utterance_id`. ``exclude``: keys to leave out.
    """
    found = load_voices(split, [voice or "en"])  # English is the embedded corpus
    key = (lambda u: u) if voice is None else (lambda u: utterance_id(voice, u))
    pool = [u for u in found if len(u.audio) >= n_samples and key(u.id) not in exclude]
    if len(pool) < count:
        raise StimulusError(
            f"{f'voice {voice}: ' if voice else ''}only {len(pool)} {split}-split utterances last {n_samples} "
            "samples or more; ask for fewer utterances (--utterances) or shorter clips (--seconds)"
        )
    chosen = sorted(np.random.default_rng(seed).choice(len(pool), size=count, replace=False))
    return {key(pool[i].id): loudest_window(pool[i].audio, n_samples, hop) for i in chosen}


def voice_crops(
    voices: Sequence[str], count: int, n_samples: int, seed: int, hop: int
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """:func:`heldout_crops` of each voice (``count`` each, the same ``seed``), in ``voices`` order: the crops and
    each crop's voice. English draws the same utterances as a test built without voices."""
    crops, voice_of = {}, {}
    for voice in voices:
        found = heldout_crops(count, n_samples, seed, hop, voice=voice)
        crops.update(found)
        voice_of.update(dict.fromkeys(found, voice))
    return crops, voice_of


def trained_voices(directory: Path) -> tuple[str, ...] | None:
    """The voices a checkpoint learned: its config.json's ``train.voices``, the English corpus when the run
    recorded none, None (unknown) when the config records no training run (a model saved by hand)."""
    config = read_config(directory)
    return tuple(config["train"].get("voices") or ("en",)) if "train" in config else None


def speaker_ids(system: str, vocoder: vocoders.Vocoder, voice_of: dict[str, str]) -> dict[str, int] | None:
    """Each crop's speaker id for a multi-speaker ``vocoder`` (its voice's position in :data:`VOICES`), None for a
    single-speaker one; a :class:`StimulusError` when ``n_speakers`` has no id for one of the voices."""
    n_speakers = vocoder.model.cfg.n_speakers
    if not n_speakers:
        return None
    uncovered = sorted({v for v in voice_of.values() if VOICES.index(v) >= n_speakers}, key=VOICES.index)
    if uncovered:
        raise StimulusError(
            f"system {system!r} ({vocoder.path}) has n_speakers={n_speakers}, so no speaker id for voice(s) "
            f"{uncovered} (ids {[VOICES.index(v) for v in uncovered]}); drop them from --voices or use a "
            f"checkpoint with n_speakers >= {VOICES.index(uncovered[-1]) + 1}"
        )
    return {u: VOICES.index(v) for u, v in voice_of.items()}


def load_system(source: str | Path, name: str | None = None) -> str | vocoders.Vocoder:
    """A checkpoint's :class:`~pwn_lib.vocoders.Vocoder` (loaded before any rendering, so that a bad directory
    fails first); a built-in condition's name as it is."""
    if not isinstance(source, Path):
        return source
    try:
        return vocoders.load(source, name)
    except (FileNotFoundError, ValueError) as error:
        raise StimulusError(str(error)) from error


def render(
    source: str | Path | vocoders.Vocoder,
    crops: dict[str, np.ndarray],
    seed: int,
    audio: AudioConfig,
    speakers: dict[str, int] | None = None,
) -> dict[str, np.ndarray]:
    """One system's rendering of every crop (all of one length, whole hops): ``{utterance: (T,) float32}``.

    A checkpoint renders all crops in one batch from their log-mels, each with its id in ``speakers`` when given
    (a multi-speaker checkpoint: :func:`speaker_ids`).
    """
    if source == "real":
        return dict(crops)
    if source == "mulaw8":
        return {u: mulaw_roundtrip(x, bits=8) for u, x in crops.items()}
    if source == "anchor":
        return {u: mnru(x, ANCHOR_Q_DB, seed=seed + i) for i, (u, x) in enumerate(crops.items())}
    vocoder = source if isinstance(source, vocoders.Vocoder) else load_system(Path(source))
    ids = None if speakers is None else torch.tensor([speakers[u] for u in crops], dtype=torch.long)
    x = vocoders.render(vocoder, vocoders.mel_batch(list(crops.values()), audio), seed, speaker=ids)
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


def ab_pairs(ab: str | None, systems: Sequence[str]) -> list[tuple[str, str]]:
    """``"teacher:student,real:student"`` -> pairs of ``systems``; default teacher:student when both are built."""
    if not ab:
        return [("teacher", "student")] if {"teacher", "student"} <= set(systems) else []
    pairs = [tuple(p.split(":")) for p in ab.split(",") if p]
    for pair in pairs:
        if len(pair) != 2 or not set(pair) <= set(systems):
            raise StimulusError(f"--ab {ab!r}: each pair is SYSTEM:SYSTEM from {sorted(systems)}")
    return pairs


def _role(system: str, source: str | Path, loaded, speakers: dict | None, voice_of: dict[str, str]) -> dict:
    """A system's manifest entry: role and source; for a checkpoint, the speaker id it rendered each voice with
    (multi-speaker) and the voices of the test its training run did not include."""
    entry = {
        "role": "reference" if system == "real" else "anchor" if system == "anchor" else "system",
        "source": _shown(source, system),
    }
    if speakers is not None:
        entry["speaker_ids"] = dict(sorted({voice_of[u]: i for u, i in speakers.items()}.items(), key=lambda p: p[1]))
    if isinstance(loaded, vocoders.Vocoder) and (trained := trained_voices(loaded.path)) is not None:
        unseen = sorted(set(voice_of.values()) - set(trained), key=VOICES.index)
        if unseen:
            entry["unseen_voices"] = unseen
    return entry


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
    voices: str | Sequence[str] | None = None,
) -> ListeningTest:
    """Render, loudness-normalise and store a test in ``out``; see the module docstring for the systems.

    ``ab``: A/B pairs as ``"teacher:student,real:student"``; default teacher:student when both are built.
    ``voices``: ``"en,fr"`` or a sequence, ``utterances`` of each voice's test split (None: the English corpus).
    Every input is checked (systems, voices, utterances, checkpoints and their speaker ids, A/B pairs) before
    anything is rendered.
    """
    audio = AudioConfig()
    sources = parse_systems(systems)
    named = parse_voices(voices) if voices is not None else None
    n_samples = vocoders.hop_samples(seconds, audio)
    if named is None:
        crops = heldout_crops(utterances, n_samples, seed, audio.hop_length)
        voice_of = dict.fromkeys(crops, "en")
    else:
        crops, voice_of = voice_crops(named, utterances, n_samples, seed, audio.hop_length)
    lead = heldout_crops(1, n_samples, seed + 1, audio.hop_length, set(crops), voice=None if named is None else "en")
    gold_id, gold = next(iter(lead.items()))  # English, another utterance than the test's
    pairs = ab_pairs(ab, list(sources))
    loaded = {s: load_system(src, s) for s, src in sources.items()}
    speakers = {s: speaker_ids(s, v, voice_of) if isinstance(v, vocoders.Vocoder) else None for s, v in loaded.items()}
    stimuli = {}
    for system, source in tqdm(loaded.items(), desc="render systems"):
        stimuli[system] = render(source, crops, seed, audio, speakers[system])
    roles = {s: _role(s, src, loaded[s], speakers[s], voice_of) for s, src in sources.items()}
    controls = control_clips(gold, gold_id, audio.sample_rate, seed)
    if named is not None:
        controls = [({**entry, "voice": "en"}, clip) for entry, clip in controls]
    test = write_test(
        out,
        name or Path(out).name,
        stimuli,
        audio.sample_rate,
        roles,
        controls=controls,
        ab_pairs=pairs,
        seed=seed,
        target_lufs=loudness,
        command=command,
    )
    test.metrics = {
        "logmel_distance_to_real": stimulus_metrics(test),
        "checkpoint": {s: f for s, src in sources.items() if (f := _checkpoint_figures(src))},
    }
    if named is not None:
        test.metrics[VOICES_KEY] = {u: voice_of[u] for u in test.utterances}
    write_json(test.root / MANIFEST, test.as_manifest())
    return test


__all__ = [
    "BUILTIN",
    "DEFAULT_SYSTEMS",
    "ab_pairs",
    "build_test",
    "control_clips",
    "heldout_crops",
    "load_system",
    "parse_systems",
    "parse_voices",
    "render",
    "speaker_ids",
    "stimulus_metrics",
    "trained_voices",
    "utterance_id",
    "voice_crops",
]
