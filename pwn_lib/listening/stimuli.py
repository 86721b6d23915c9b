"""Listening-test stimuli: one folder per system, the same utterance ids in each, loudness-normalised.

A test folder (what ``python -m pwn_lib.listening build`` writes)::

    DIR/test.json               the manifest: systems and their roles, utterances, A/B pairs, controls, metrics,
                                the SHA-256 of every clip
    DIR/<system>/<utt>.flac     one 16-bit mono stimulus per system and utterance, all at one sample rate
    DIR/controls/<name>.flac    gold clips (known quality) and trap clips (a spoken "press N"), ITU-T P.808

Every stimulus is normalised to the same integrated loudness (ITU-R BS.1770, measured by pyloudnorm) before it is
stored, so that listeners compare quality, not level. Roles: ``reference`` is the hidden reference (real speech,
rated like any system without being named), ``anchor`` the low anchor (MNRU noise, ITU-T P.810), ``system``
everything else. Notebook 09 teaches all of this.
"""

from __future__ import annotations

import hashlib
import io
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyloudnorm
import soundfile as sf

from pwn_lib.artifacts import write_json
from pwn_lib.audio import mulaw_decode, mulaw_encode, save_audio

MANIFEST = "test.json"
TEST_SCHEMA = 1
TARGET_LUFS = -26.0  # the active speech level of ITU-T P.800 / P.808 test material (-26 dBov)
CONTROL_DIR = "controls"
ROLES = ("reference", "anchor", "system")
AUDIO_SUFFIXES = (".flac", ".wav")
BLOCK_SECONDS = 0.4  # BS.1770's gating block: shorter clips have no defined loudness


class StimulusError(ValueError):
    """A test folder or stimulus that cannot be used; the message names the file or value and what to do."""


# ---------------------------------------------------------------------------------------------
# Signal processing: loudness, the low anchor, the 8-bit mu-law condition
# ---------------------------------------------------------------------------------------------


def loudness_lufs(x: np.ndarray, sample_rate: int, name: str = "clip") -> float:
    """Integrated loudness of mono ``x: (T,)`` in LUFS (ITU-R BS.1770-4, K-weighted, gated 400 ms blocks)."""
    if len(x) < BLOCK_SECONDS * sample_rate + 1:
        raise StimulusError(
            f"{name}: {len(x) / sample_rate:.2f} s is shorter than BS.1770's {BLOCK_SECONDS} s "
            "block, so its loudness is undefined; use clips of at least 0.5 s (--seconds)"
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # log10(0) of silent blocks, reported below instead
        return float(pyloudnorm.Meter(sample_rate).integrated_loudness(np.asarray(x, dtype=np.float64)))


def normalize_loudness(
    x: np.ndarray, sample_rate: int, target_lufs: float = TARGET_LUFS, name: str = "clip"
) -> np.ndarray:
    """``x: (T,)`` scaled to ``target_lufs`` integrated loudness; refuses silence and gains that would clip."""
    measured = loudness_lufs(x, sample_rate, name)
    if not np.isfinite(measured):
        raise StimulusError(
            f"{name}: silent (loudness -inf LUFS), so it cannot be loudness-normalised; "
            "check the system that produced it"
        )
    y = np.asarray(x, dtype=np.float64) * 10.0 ** ((target_lufs - measured) / 20.0)
    peak = float(np.abs(y).max())
    if peak > 1.0:
        raise StimulusError(
            f"{name}: at {target_lufs} LUFS its peak would be {peak:.2f} (> 1, clipping); "
            "pass a lower target (--loudness, e.g. -30)"
        )
    return y.astype(np.float32)


def mnru(x: np.ndarray, q_db: float, seed: int = 0) -> np.ndarray:
    """Modulated Noise Reference Unit (ITU-T P.810): ``y = x (1 + 10^(-Q/20) n)``, ``n`` unit white Gaussian.

    The speech-to-modulated-noise ratio is ``Q`` dB; ``Q`` of 0-10 dB sounds "bad" to "poor". Returns float32
    ``(T,)``, clipped to [-1, 1].
    """
    noise = np.random.default_rng(seed).standard_normal(len(x))
    return np.clip(x * (1.0 + 10.0 ** (-q_db / 20.0) * noise), -1.0, 1.0).astype(np.float32)


def mulaw_roundtrip(x: np.ndarray, bits: int = 8) -> np.ndarray:
    """``x: (T,)`` through ``bits``-bit mu-law (mu = 2**bits - 1) and back: the 8-bit WaveNet's output grid."""
    mu = 2**bits - 1
    return mulaw_decode(mulaw_encode(np.asarray(x, dtype=np.float32), mu), mu)


# ---------------------------------------------------------------------------------------------
# The test folder
# ---------------------------------------------------------------------------------------------


@dataclass
class ListeningTest:
    """A validated test folder (see the module docstring); :func:`write_test` writes one, :func:`load_test` opens it.

    ``systems`` maps each system name to its description (``role``, and where it came from); ``controls`` lists
    the gold and trap clips as dicts with ``name``, ``kind`` ("gold" | "trap"), ``file``, ``utterance`` and
    ``expected`` (the score a careful listener gives: 5 or 1 for gold clips, the spoken number for trap clips).
    """

    root: Path
    name: str
    sample_rate: int
    systems: dict[str, dict]
    utterances: list[str]
    ab_pairs: list[tuple[str, str]] = field(default_factory=list)
    controls: list[dict] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    seed: int = 0
    loudness_lufs: float = TARGET_LUFS
    command: str = ""
    sha256: dict[str, str] = field(default_factory=dict)

    def path(self, system: str, utterance: str) -> Path:
        """The stimulus file of ``system`` reading ``utterance``."""
        if system not in self.systems:
            raise StimulusError(f"{self.root}: no system {system!r}; this test has {sorted(self.systems)}")
        return _stimulus_file(self.root / system, utterance)

    def control(self, name: str) -> dict:
        for entry in self.controls:
            if entry["name"] == name:
                return entry
        raise StimulusError(f"{self.root}: no control clip {name!r}; it has {[c['name'] for c in self.controls]}")

    def control_path(self, name: str) -> Path:
        return self.root / self.control(name)["file"]

    def load(self, path: Path) -> np.ndarray:
        """A stimulus as float32 ``(T,)``, verified in full (see :meth:`read_clip`)."""
        return self.read_clip(path)[0]

    def read_clip(self, path: Path) -> tuple[np.ndarray, str]:
        """A stimulus as float32 ``(T,)`` and the SHA-256 of its bytes, verified in full.

        The whole file is decoded: it must give every frame its header declares (a cut file does not), be mono
        at the test's sample rate, and match the hash test.json records for it (where it records one: tests
        built before hashes were recorded have none). Any failure is a :class:`StimulusError` naming the file.
        """
        path = Path(path)
        if not path.is_file():
            raise StimulusError(f"{path}: missing stimulus; rebuild the test (python -m pwn_lib.listening build)")
        raw = path.read_bytes()
        digest = hashlib.sha256(raw).hexdigest()
        try:
            info = sf.info(io.BytesIO(raw))
            x, _ = sf.read(io.BytesIO(raw), dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError) as err:
            raise StimulusError(f"{path}: not a readable audio file ({err}); rebuild the test") from None
        if info.samplerate != self.sample_rate:
            raise StimulusError(
                f"{path}: sample rate {info.samplerate} Hz, but test {self.root} is {self.sample_rate} Hz; every "
                f"stimulus must share one rate: resample the file to {self.sample_rate} Hz or rebuild the test"
            )
        if info.channels != 1:
            raise StimulusError(f"{path}: {info.channels} channels; stimuli must be mono, rebuild the test")
        if len(x) != info.frames or info.frames == 0:
            raise StimulusError(
                f"{path}: cut short: it decodes to {len(x)} of the {info.frames} frames its header declares; "
                "rebuild the test"
            )
        recorded = self.sha256.get(path.relative_to(self.root).as_posix()) if path.is_relative_to(self.root) else None
        if recorded is not None and recorded != digest:
            raise StimulusError(
                f"{path}: its bytes differ from the SHA-256 recorded in {self.root / MANIFEST} (was the test "
                "rebuilt or the file replaced?); reload the test, or rebuild it"
            )
        return x[:, 0], digest

    def clip_seconds(self) -> float:
        """Duration of the first stimulus (the builder crops every utterance to the same length)."""
        return float(sf.info(str(self.path(next(iter(self.systems)), self.utterances[0]))).duration)

    def role(self, system: str) -> str:
        return self.systems[system]["role"]

    def with_role(self, role: str) -> list[str]:
        return [name for name, spec in self.systems.items() if spec["role"] == role]

    def as_manifest(self) -> dict:
        return {
            "schema_version": TEST_SCHEMA,
            "name": self.name,
            "sample_rate": self.sample_rate,
            "systems": self.systems,
            "utterances": self.utterances,
            "ab_pairs": [list(p) for p in self.ab_pairs],
            "controls": self.controls,
            "metrics": self.metrics,
            "seed": self.seed,
            "loudness_lufs": self.loudness_lufs,
            "command": self.command,
            "sha256": self.sha256,
        }


def _stimulus_file(folder: Path, utterance: str) -> Path:
    for suffix in AUDIO_SUFFIXES:
        candidate = folder / f"{utterance}{suffix}"
        if candidate.is_file():
            return candidate
    return folder / f"{utterance}{AUDIO_SUFFIXES[0]}"


def _ids_on_disk(folder: Path) -> set[str]:
    return {p.stem for p in folder.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES}


def _check_utterance_sets(root: Path, systems: list[str], utterances: list[str]) -> None:
    """Every system folder must hold exactly the manifest's utterance ids."""
    for system in systems:
        if not (root / system).is_dir():
            raise StimulusError(
                f"{root / system}: missing system folder (test.json lists system {system!r}); "
                "rebuild the test or remove the system from test.json"
            )
    on_disk = {system: _ids_on_disk(root / system) for system in systems}
    expected = set(utterances)
    problems = []
    for system, ids in on_disk.items():
        missing, extra = sorted(expected - ids), sorted(ids - expected)
        if missing:
            problems.append(f"{system} lacks {missing} (e.g. missing stimulus {root / system / missing[0]}.flac)")
        if extra:
            problems.append(f"{system} has extra {extra} not in test.json")
    if problems:
        raise StimulusError(
            f"{root}: the systems have different utterance sets; every system folder must hold "
            f"the same utterance ids as test.json's 'utterances': "
            + "; ".join(problems)
            + ". Rebuild the test, or add or remove those files."
        )


def _check_clips(test: ListeningTest) -> None:
    """Every stimulus and control clip decodes in full, mono, at the test's rate, matching its recorded hash."""
    for path in [test.path(s, u) for s in test.systems for u in test.utterances]:
        test.read_clip(path)
    for control in test.controls:
        test.read_clip(test.root / control["file"])


def load_test(root: str | Path) -> ListeningTest:
    """Open and validate a test folder: manifest, system folders, utterance sets, and every clip decoded in full
    (sample rate, mono, no frame missing, the recorded SHA-256)."""
    root = Path(root)
    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        raise StimulusError(
            f"{manifest_path}: not found, so {root} is not a listening test; build one with "
            "`python -m pwn_lib.listening build --out DIR` (data/listening/example is shipped)"
        )
    try:
        m = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as err:
        raise StimulusError(f"{manifest_path}: not valid JSON ({err}); rebuild the test") from None
    if m.get("schema_version") != TEST_SCHEMA:
        raise StimulusError(
            f"{manifest_path}: test schema version {m.get('schema_version')!r}, but this pwn_lib "
            f"reads version {TEST_SCHEMA}; rebuild the test with this pwn_lib"
        )
    missing = [key for key in ("name", "sample_rate", "systems", "utterances") if key not in m]
    if missing:
        raise StimulusError(
            f"{manifest_path}: lacks the key(s) {missing}; rebuild the test (python -m pwn_lib.listening build)"
        )
    for name, spec in m["systems"].items():
        if spec.get("role") not in ROLES:
            raise StimulusError(f"{manifest_path}: system {name!r} has role {spec.get('role')!r}; use one of {ROLES}")
    test = ListeningTest(
        root=root,
        name=m["name"],
        sample_rate=int(m["sample_rate"]),
        systems=m["systems"],
        utterances=list(m["utterances"]),
        ab_pairs=[tuple(p) for p in m.get("ab_pairs", [])],
        controls=list(m.get("controls", [])),
        metrics=m.get("metrics", {}),
        seed=m.get("seed", 0),
        loudness_lufs=m.get("loudness_lufs", TARGET_LUFS),
        command=m.get("command", ""),
        sha256=m.get("sha256", {}),
    )
    for a, b in test.ab_pairs:
        if a not in test.systems or b not in test.systems:
            raise StimulusError(f"{manifest_path}: A/B pair ({a}, {b}) names a system not in {sorted(test.systems)}")
    _check_utterance_sets(root, list(test.systems), test.utterances)
    _check_clips(test)
    return test


def _clear_previous(root: Path) -> None:
    """Remove the stimuli of an earlier test in ``root`` (so no stale utterance lingers); refuse other folders."""
    if not root.exists() or not any(root.iterdir()):
        return
    manifest = root / MANIFEST
    if not manifest.is_file():
        raise StimulusError(f"{root}: exists, is not empty and holds no {MANIFEST}; choose a new folder for the test")
    old = json.loads(manifest.read_text())
    for folder in [*old.get("systems", {}), CONTROL_DIR]:
        if (root / folder).is_dir():
            for path in (root / folder).iterdir():
                if path.suffix.lower() in AUDIO_SUFFIXES:
                    path.unlink()
    manifest.unlink()


def write_test(
    root: str | Path,
    name: str,
    stimuli: dict[str, dict[str, np.ndarray]],
    sample_rate: int,
    roles: dict[str, dict],
    *,
    controls: list[tuple[dict, np.ndarray]] = (),
    ab_pairs: list[tuple[str, str]] = (),
    metrics: dict | None = None,
    seed: int = 0,
    target_lufs: float = TARGET_LUFS,
    command: str = "",
) -> ListeningTest:
    """Loudness-normalise and store ``stimuli[system][utterance] = (T,) float audio``; return the loaded test.

    ``roles[system]`` describes each system (it must hold ``role``); ``controls`` pairs each control's manifest
    entry (without ``file``) with its audio. Files are written atomically, the manifest last. An earlier test in
    ``root`` is replaced; any other non-empty folder is refused.
    """
    root = Path(root)
    _clear_previous(root)
    systems = list(stimuli)
    utterances = sorted(stimuli[systems[0]])
    for system in systems:
        if sorted(stimuli[system]) != utterances:
            raise StimulusError(
                f"write_test: system {system!r} has utterances {sorted(stimuli[system])}, "
                f"{systems[0]!r} has {utterances}; every system needs the same ids"
            )
    for system in systems:
        for utt in utterances:
            x = normalize_loudness(stimuli[system][utt], sample_rate, target_lufs, name=f"{system}/{utt}")
            save_audio(root / system / f"{utt}.flac", x, sample_rate)
    entries = []
    for entry, audio in controls:
        entry = {**entry, "file": f"{CONTROL_DIR}/{entry['name']}.flac"}
        save_audio(
            root / entry["file"], normalize_loudness(audio, sample_rate, target_lufs, entry["name"]), sample_rate
        )
        entries.append(entry)
    test = ListeningTest(
        root=root,
        name=name,
        sample_rate=sample_rate,
        systems={s: roles[s] for s in systems},
        utterances=utterances,
        ab_pairs=list(ab_pairs),
        controls=entries,
        metrics=metrics or {},
        seed=seed,
        loudness_lufs=target_lufs,
        command=command,
    )
    files = [f"{s}/{u}.flac" for s in systems for u in utterances] + [e["file"] for e in entries]
    test.sha256 = {f: hashlib.sha256((root / f).read_bytes()).hexdigest() for f in files}
    write_json(root / MANIFEST, test.as_manifest())
    return load_test(root)


__all__ = [
    "CONTROL_DIR",
    "MANIFEST",
    "ROLES",
    "TARGET_LUFS",
    "TEST_SCHEMA",
    "ListeningTest",
    "StimulusError",
    "load_test",
    "loudness_lufs",
    "mnru",
    "mulaw_roundtrip",
    "normalize_loudness",
    "write_test",
]
