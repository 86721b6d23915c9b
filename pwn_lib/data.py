"""Speech data: the embedded corpus, LJSpeech, and random training windows with aligned log-mels (notebook 00).

The embedded corpus (``data/corpus``) is the Asterisk core prompts read by Allison Smith, decoded from
Debian's ``asterisk-core-sounds-en-g722`` package (CC-BY-SA-3.0, see ``data/corpus/LICENSE.md``).
Rebuilding it and downloading LJSpeech are tools, in :mod:`pwn_lib.corpus_tools`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from pwn_lib.audio import dequantize, load_audio, log_mel, quantize
from pwn_lib.config import DATA_DIR, AudioConfig
from pwn_lib.integrity import IntegrityError, require_intact

CORPUS_DIR = DATA_DIR / "corpus"
TARGETS_PATH = CORPUS_DIR / "phones.tsv"  # the phone classifier's CTC targets (corpus_tools build-targets)
SPLITS = ("train", "valid", "test")
CORPUS_FIX = (
    "Restore the committed files (`git checkout -- data/corpus`) or rebuild the corpus with "
    "`python -m pwn_lib.corpus_tools build-corpus`."
)

SPEAKERS_DIR = DATA_DIR / "speakers"
VOICES = ("en", "es", "fr", "it", "ru")  # speaker id = position: en is data/corpus, the rest data/speakers/<voice>
VOICES_FIX = (
    "Restore the committed files (`git checkout -- data/speakers`) or rebuild the voice with "
    "`python -m pwn_lib.corpus_tools build-voices`."
)

LJSPEECH_URL = "https://data.keithito.com/data/speech/LJSpeech-1.1.tar.bz2"
LJSPEECH_SHA256 = "be1a30453f28eb8dd26af4101ae40cbf2c50413b1bb21936cbcdc6fae3de8aa5"


@dataclass
class Utterance:
    """One recording: ``audio: (T,)`` float32 in [-1, 1] at ``sample_rate`` Hz, with its transcript."""

    id: str
    text: str
    audio: np.ndarray
    sample_rate: int
    speaker: int = 0

    @property
    def seconds(self) -> float:
        return len(self.audio) / self.sample_rate


# ---------------------------------------------------------------------------------------------
# Loading the embedded corpus and LJSpeech
# ---------------------------------------------------------------------------------------------


def _read_tsv(path: Path, columns: tuple[str, ...]) -> list[list[str]]:
    """Rows of a tab-separated file whose first line is exactly ``columns``."""
    if not path.exists():
        raise FileNotFoundError(
            f"{path}: missing; rebuild the corpus with `python -m pwn_lib.corpus_tools build-corpus`"
        )
    lines = path.read_text(encoding="utf-8").splitlines()
    if not lines or tuple(lines[0].split("\t")) != columns:
        raise ValueError(f"{path}: first line must be the header {columns}; rebuild the corpus")
    rows = [line.split("\t") for line in lines[1:] if line]
    for number, row in enumerate(rows, start=2):
        if len(row) != len(columns):
            raise ValueError(f"{path}:{number}: expected {len(columns)} tab-separated fields, got {len(row)}")
    return rows


def corpus_split(root: str | os.PathLike = CORPUS_DIR) -> dict[str, str]:
    """The committed split: utterance id -> "train" | "valid" | "test"."""
    return dict(_read_tsv(Path(root) / "split.tsv", ("id", "split")))


def corpus_transcripts(root: str | os.PathLike = CORPUS_DIR) -> dict[str, str]:
    """The committed transcripts: utterance id -> text."""
    return dict(_read_tsv(Path(root) / "transcripts.tsv", ("id", "text")))


def corpus_manifest(root: str | os.PathLike = CORPUS_DIR) -> dict[str, dict]:
    """The committed manifest's files: ``"wavs/<id>.flac"`` -> ``{"sha256", "samples", "pcm_sha256"}``."""
    path = Path(root) / "manifest.json"
    try:
        files = json.loads(path.read_text())["files"]
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: missing, so the corpus cannot be checked. {CORPUS_FIX}") from None
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{path}: not a corpus manifest ({err!r}). {CORPUS_FIX}") from None
    return files


def load_corpus(
    split: str = "train", root: str | os.PathLike = CORPUS_DIR, sample_rate: int = 16_000, fix: str = CORPUS_FIX
) -> list[Utterance]:
    """The embedded corpus: one speaker, 16 kHz FLAC, sorted by id.

    Every FLAC read is checked against ``root/manifest.json`` first (:func:`pwn_lib.integrity.require_intact`:
    a changed file is refused, by name).

    Args:
        split: "train", "valid", "test" or "all".
        root: the corpus folder (``data/corpus`` by default).
        sample_rate: resample to this rate if it is not 16 kHz.
        fix: the advice an integrity error ends with.
    """
    if split not in (*SPLITS, "all"):
        raise ValueError(f"split={split!r}; choose one of {(*SPLITS, 'all')}")
    root = Path(root)
    texts = corpus_transcripts(root)
    ids = sorted(i for i, s in corpus_split(root).items() if split in ("all", s))
    recorded = corpus_manifest(root)
    unlisted = [i for i in ids if f"wavs/{i}.flac" not in recorded]
    if unlisted:
        raise IntegrityError(
            f"{root / 'manifest.json'} does not list {len(unlisted)} clip(s) of the split, e.g. {unlisted[:3]}. {fix}"
        )
    require_intact(root, {f"wavs/{i}.flac": recorded[f"wavs/{i}.flac"] for i in ids}, root / "manifest.json", fix)
    return [Utterance(i, texts[i], load_audio(root / "wavs" / f"{i}.flac", sample_rate), sample_rate) for i in ids]


def load_voices(
    split: str = "train",
    voices: Sequence[str] = VOICES,
    corpus_root: str | os.PathLike = CORPUS_DIR,
    speakers_root: str | os.PathLike = SPEAKERS_DIR,
    sample_rate: int = 16_000,
) -> list[Utterance]:
    """The five voices (English and ``data/speakers/{es,fr,it,ru}``), each utterance with its speaker id.

    ``Utterance.speaker`` is the voice's position in :data:`VOICES` (English 0), whatever subset ``voices``
    asks for, so a model with ``n_speakers=len(VOICES)`` sees the same id for a voice in every run. English
    is :func:`load_corpus`; every other voice's FLACs are checked against its own ``manifest.json`` the same
    way (:func:`pwn_lib.integrity.require_intact`) before they are read. Sorted by voice, then id.
    """
    unknown = [v for v in voices if v not in VOICES]
    if unknown:
        raise ValueError(f"voices {unknown} unknown; choose from {VOICES}")
    utterances = []
    for voice in voices:
        root = Path(corpus_root) if voice == "en" else Path(speakers_root) / voice
        try:
            found = load_corpus(split, root, sample_rate, fix=CORPUS_FIX if voice == "en" else VOICES_FIX)
        except IntegrityError as err:
            raise IntegrityError(f"voice {voice}: {err}") from None
        speaker = VOICES.index(voice)
        utterances += [Utterance(u.id, u.text, u.audio, u.sample_rate, speaker) for u in found]
    return utterances


def load_ljspeech(
    root: str | os.PathLike, sample_rate: int = 22_050, limit: int | None = None, progress: bool = False
) -> list[Utterance]:
    """LJSpeech-1.1: ``root/metadata.csv`` lines ``id|text|normalized text`` and ``root/wavs/<id>.wav``.

    The normalized text is used (the raw text when it is empty). All 13,100 clips take about 7.6 GB
    as float32; pass ``limit`` to load the first ``limit`` clips only.
    """
    root = Path(root)
    meta = root / "metadata.csv"
    if not meta.exists():
        raise FileNotFoundError(
            f"{meta}: missing; point root at the LJSpeech-1.1 folder or run "
            "`python -m pwn_lib.corpus_tools download-ljspeech`"
        )
    lines = [line for line in meta.read_text(encoding="utf-8").splitlines() if line.strip()][:limit]
    entries = []
    for number, line in enumerate(lines, start=1):
        fields = line.split("|")
        if len(fields) != 3:
            raise ValueError(f"{meta}:{number}: expected 'id|text|normalized text', got {len(fields)} field(s)")
        entries.append(fields)
    utterances = []
    for uid, text, normalized in tqdm(entries, desc="LJSpeech", disable=not progress):
        audio = load_audio(root / "wavs" / f"{uid}.wav", sample_rate)
        utterances.append(Utterance(uid, normalized or text, audio, sample_rate))
    return utterances


# ---------------------------------------------------------------------------------------------
# Random training windows
# ---------------------------------------------------------------------------------------------


class AudioWindows(torch.utils.data.Dataset):
    """Random fixed-length windows of 16-bit-quantised audio with their aligned log-mel frames.

    Item ``i`` depends only on ``(seed, i)``. An utterance is picked with probability proportional
    to its number of window positions, then a start ``j * hop`` uniformly; the window
    ``audio[j*hop : j*hop + window]`` carries mel frames ``j .. j + window // hop - 1`` of the whole
    utterance's log-mel (computed once per utterance and cached). Utterances shorter than the
    window are padded with the grid value nearest zero.

    Items: ``{"audio": (1, window) float32, "mel": (n_mels, window // hop) float32, "speaker": () long}``.
    """

    def __init__(
        self,
        utterances: Sequence[Utterance],
        window: int,
        cfg: AudioConfig = AudioConfig(),
        seed: int = 0,
        length: int = 10_000,
    ):
        if not utterances:
            raise ValueError("AudioWindows needs at least one utterance")
        if window <= 0 or window % cfg.hop_length:
            raise ValueError(f"window={window} must be a positive multiple of hop_length={cfg.hop_length}")
        rates = {u.sample_rate for u in utterances}
        if rates != {cfg.sample_rate}:
            raise ValueError(
                f"utterances are at {sorted(rates)} Hz but cfg.sample_rate is {cfg.sample_rate}; "
                "load them at the config's rate"
            )
        self.utterances = list(utterances)
        self.window, self.cfg, self.seed, self.length = window, cfg, seed, length
        self.frames = np.array([max(len(u.audio), window) // cfg.hop_length for u in self.utterances])
        self.positions = self.frames - window // cfg.hop_length + 1
        self.weights = self.positions / self.positions.sum()
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return self.length

    def features(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Utterance ``n`` as (quantised audio ``(F * hop,)``, log-mel ``(n_mels, F)``), cached."""
        if n not in self._cache:
            length = self.frames[n] * self.cfg.hop_length
            x = self.utterances[n].audio
            x = np.pad(x, (0, max(0, length - len(x))))[:length]
            x = dequantize(quantize(x, self.cfg.bits), self.cfg.bits)
            self._cache[n] = (x, log_mel(x, self.cfg))
        return self._cache[n]

    def locate(self, i: int) -> tuple[int, int]:
        """Item ``i`` as (utterance index n, start frame j): a function of ``(seed, i)`` only."""
        if not 0 <= i < self.length:
            raise IndexError(f"index {i} out of range for AudioWindows of length {self.length}")
        rng = np.random.default_rng([self.seed, i])
        n = int(rng.choice(len(self.utterances), p=self.weights))
        return n, int(rng.integers(self.positions[n]))

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        n, j = self.locate(i)
        x, mel = self.features(n)
        hop = self.cfg.hop_length
        audio = x[j * hop : j * hop + self.window]
        frames = mel[:, j : j + self.window // hop]
        return {
            "audio": torch.from_numpy(audio.copy()).unsqueeze(0),
            "mel": torch.from_numpy(frames.copy()),
            "speaker": torch.tensor(self.utterances[n].speaker, dtype=torch.long),
        }


__all__ = [
    "CORPUS_DIR",
    "LJSPEECH_SHA256",
    "LJSPEECH_URL",
    "SPEAKERS_DIR",
    "SPLITS",
    "VOICES",
    "TARGETS_PATH",
    "AudioWindows",
    "Utterance",
    "corpus_manifest",
    "corpus_split",
    "corpus_transcripts",
    "load_corpus",
    "load_ljspeech",
    "load_voices",
]
