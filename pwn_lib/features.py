"""Feature statistics, computed from the training data by a tool (ParallelWaveGAN's ``compute-statistics``).

The teacher and the student standardise their log-mel conditioning, ``(c - mean) / std``, before
upsampling it (notebook 02, section 4): raw log-mels sit near -5 (down to -11.5 in silence), and fed
as they are, the conditioning terms grow until every gate saturates and no gradient reaches the
convolutions. The mean and standard deviation are one scalar each, over every mel channel and frame of
the train split, and they travel in the checkpoint's ``config.json`` (``model.log_mel_mean``,
``model.log_mel_std``).

Command line (writes the statistics of the committed corpus for an audio preset)::

    python -m pwn_lib.features --preset course
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pwn_lib.artifacts import LEGACY_LOG_MEL_STATS, write_json
from pwn_lib.audio import log_mel
from pwn_lib.config import AUDIO_PRESETS, DATA_DIR, PRESET_NAMES, AudioConfig, to_dict

STATS_PATH = DATA_DIR / "corpus" / "log_mel_stats.json"


def log_mel_statistics(signals: Sequence[np.ndarray], audio: AudioConfig) -> dict[str, float]:
    """Mean and standard deviation of :func:`pwn_lib.audio.log_mel` over every channel and frame of ``signals``."""
    total, total_sq, count = 0.0, 0.0, 0
    for x in signals:
        mel = log_mel(x, audio).astype(np.float64)
        total, total_sq, count = total + mel.sum(), total_sq + np.square(mel).sum(), count + mel.size
    mean = total / count
    return {"log_mel_mean": round(float(mean), 4), "log_mel_std": round(float(np.sqrt(total_sq / count - mean**2)), 4)}


def corpus_statistics(audio: AudioConfig, path: Path = STATS_PATH) -> dict[str, float]:
    """The statistics of the train split for ``audio``: read from ``path`` when it holds them, else computed."""
    if path.is_file():
        recorded = json.loads(path.read_text())
        if recorded.get("audio") == to_dict(audio):
            return {k: recorded[k] for k in LEGACY_LOG_MEL_STATS}
    from pwn_lib.data import load_corpus

    return log_mel_statistics([u.audio for u in load_corpus("train", sample_rate=audio.sample_rate)], audio)


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
    write_json(
        args.out,
        {
            **stats,
            "audio": to_dict(audio),
            "split": "train",
            "command": f"python -m pwn_lib.features --preset {args.preset}",
        },
    )
    print(stats, "->", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
