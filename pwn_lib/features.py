"""Feature statistics, computed from the training data by a tool (ParallelWaveGAN's ``compute-statistics``).

The teacher and the student standardise their log-mel conditioning, ``(c - mean) / std``, before
upsampling it (notebook 02, section 4): raw log-mels sit near -5 (down to -11.5 in silence), and fed
as they are, the conditioning terms grow until every gate saturates and no gradient reaches the
convolutions. The mean and standard deviation are one scalar each, over every mel channel and frame of
the train split, and they travel in the checkpoint's ``config.json`` (``model.log_mel_mean``,
``model.log_mel_std``).

They are computed once by a tool and stored, never while a recipe is resolved: a feature cache stores
its own in its manifest (:mod:`pwn_lib.feature_cache`), and this module's command line stores the embedded
corpus's for each audio preset in ``data/corpus/log_mel_stats.json``. :func:`corpus_statistics` is the one
function that reads them (the command line, ``build_teacher`` and ``build_student`` all call it)::

    python -m pwn_lib.features --preset course
    python -m pwn_lib.features --preset paper
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pwn_lib.artifacts import write_json
from pwn_lib.audio import log_mel
from pwn_lib.config import AUDIO_PRESETS, DATA_DIR, PRESET_NAMES, AudioConfig, to_dict
from pwn_lib.feature_cache import read_manifest

STATS_PATH = DATA_DIR / "corpus" / "log_mel_stats.json"
STATISTICS = ("log_mel_mean", "log_mel_std")


def log_mel_statistics(signals: Sequence[np.ndarray], audio: AudioConfig) -> dict[str, float]:
    """Mean and standard deviation of :func:`pwn_lib.audio.log_mel` over every channel and frame of ``signals``."""
    total, total_sq, count = 0.0, 0.0, 0
    for x in signals:
        mel = log_mel(x, audio).astype(np.float64)
        total, total_sq, count = total + mel.sum(), total_sq + np.square(mel).sum(), count + mel.size
    mean = total / count
    return {"log_mel_mean": round(float(mean), 4), "log_mel_std": round(float(np.sqrt(total_sq / count - mean**2)), 4)}


def corpus_statistics(audio: AudioConfig, data: Path | None = None, path: Path = STATS_PATH) -> dict[str, float]:
    """The stored log-mel statistics of the training data for ``audio``: ``{"log_mel_mean", "log_mel_std"}``.

    ``data`` is a feature cache (its manifest holds them); without it, the embedded corpus's train split, whose
    statistics ``path`` holds per AudioConfig. Reads no audio: statistics that were never stored are an error
    that says which command stores them.
    """
    if data is not None:
        manifest = read_manifest(data)
        if manifest["audio"] != to_dict(audio):
            raise ValueError(
                f"{Path(data) / 'manifest.json'}: the cache was built with audio {manifest['audio']}, but this run's "
                f"audio is {to_dict(audio)}; build a cache for it or make the recipe's audio section match"
            )
        return {k: manifest["statistics"][k] for k in STATISTICS}
    entries = json.loads(path.read_text())["statistics"] if path.is_file() else []
    for entry in entries:
        if entry["audio"] == to_dict(audio):
            return {k: entry[k] for k in STATISTICS}
    raise LookupError(
        f"{path} holds no log-mel statistics for audio {to_dict(audio)}; store them with "
        "`python -m pwn_lib.features --preset NAME` (or set model.log_mel_mean and model.log_mel_std in the recipe)"
    )


def store_statistics(stats: dict[str, float], audio: AudioConfig, command: str, path: Path = STATS_PATH) -> None:
    """Add (or replace) the statistics for ``audio`` in ``path``, keeping those of other AudioConfigs."""
    entries = json.loads(path.read_text())["statistics"] if path.is_file() else []
    kept = [e for e in entries if e["audio"] != to_dict(audio)]
    entry = {**stats, "audio": to_dict(audio), "command": command}
    write_json(path, {"split": "train", "statistics": [*kept, entry]})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pwn_lib.features", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="course", choices=PRESET_NAMES, help="the AudioConfig preset")
    parser.add_argument("--out", type=Path, default=STATS_PATH)
    args = parser.parse_args(argv)
    from pwn_lib.data import load_corpus

    audio = AUDIO_PRESETS[args.preset]
    stats = log_mel_statistics([u.audio for u in load_corpus("train", sample_rate=audio.sample_rate)], audio)
    store_statistics(stats, audio, f"python -m pwn_lib.features --preset {args.preset}", args.out)
    print(stats, "->", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
