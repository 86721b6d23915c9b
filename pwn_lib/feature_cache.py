"""LJSpeech at scale: a one-time feature cache, memory-mapped, and windows streamed from it (notebook 08).

:func:`build_cache` reads an LJSpeech-shaped folder (``metadata.csv`` + ``wavs/<id>.wav``) once, resamples
each clip to the preset's rate, quantises it to the preset's bit depth, computes its log-mel, and writes
shards of ``shard_size`` clips: ``audio-NNNNN.npy`` (uint16 codes, concatenated) and ``mel-NNNNN.npy``
(``(n_mels, frames)`` float32, concatenated). ``manifest.json`` records the AudioConfig, the log-mel
statistics (ParallelWaveGAN's ``compute-statistics``), every clip's offsets and the SHA-256 of every source
file and every shard (and the shard's size), so :func:`rebuild` makes the same bytes again and :func:`verify`
checks them. :class:`CachedWindows` checks the shards when it opens a cache: their sizes every time, their
SHA-256 once per version of a file (:mod:`pwn_lib.integrity`).

:class:`CachedWindows` draws the same kind of items as :class:`pwn_lib.data.AudioWindows` (item ``i`` a
function of ``(seed, i)`` only) from ``np.load(mmap_mode="r")`` views: DataLoader workers each map the
shards and read only the windows they return, so the 24 hours of LJSpeech never sit in RAM.

    python -m pwn_lib.feature_cache build LJSpeech-1.1 runs/ljspeech_paper --preset paper
    python -m pwn_lib.feature_cache verify runs/ljspeech_paper
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from pwn_lib.artifacts import write_json
from pwn_lib.audio import AudioError, dequantize, load_audio, log_mel, quantize
from pwn_lib.config import AUDIO_PRESETS, PRESET_NAMES, AudioConfig, at_least_one, from_dict, to_dict
from pwn_lib.integrity import mismatches, require_intact, sha256

MANIFEST = "manifest.json"
_SHARD_NAME = {"audio": "audio-{number:05d}.npy", "mel": "mel-{number:05d}.npy"}
VERSION = 1


def ljspeech_clips(root: Path, limit: int | None = None) -> list[str]:
    """The clip ids of an LJSpeech-shaped folder, in metadata.csv order."""
    meta = Path(root) / "metadata.csv"
    if not meta.is_file():
        raise FileNotFoundError(
            f"{meta}: missing; point at the LJSpeech-1.1 folder (metadata.csv + wavs/), or "
            "download it once with `python -m pwn_lib.corpus_tools download-ljspeech`"
        )
    ids = [line.split("|", 1)[0] for line in meta.read_text(encoding="utf-8").splitlines() if line.strip()]
    return ids[:limit]


def _write_shard(out: Path, number: int, codes: list[np.ndarray], mels: list[np.ndarray]) -> list[dict]:
    names = {kind: name.format(number=number) for kind, name in _SHARD_NAME.items()}
    np.save(out / names["audio"], np.concatenate(codes).astype(np.uint16))
    np.save(out / names["mel"], np.concatenate(mels, axis=1).astype(np.float32))
    return [
        {"file": name, "sha256": sha256(out / name), "bytes": (out / name).stat().st_size} for name in names.values()
    ]


def build_cache(
    source: Path, out: Path, audio: AudioConfig, shard_size: int = 500, limit: int | None = None, progress: bool = True
) -> dict:
    """Write the feature cache of the LJSpeech-shaped folder ``source`` into ``out``; return its manifest.

    Each clip is trimmed to a whole number of hops (``frames * hop_length`` samples, ``frames`` log-mel
    frames). ``limit`` keeps the first clips only. The manifest is written last, so a cache without one
    is unfinished and is rebuilt; a build that fails part-way (a bad clip) removes the shards it wrote.
    """
    source, out = Path(source), Path(out)
    if audio.bits > 16:
        raise ValueError(f"AudioConfig.bits={audio.bits}: the cache stores uint16 codes, at most 16 bits")
    if shard_size < 1 or (limit is not None and limit < 1):
        raise ValueError(f"shard_size={shard_size}, limit={limit}: both must be >= 1 (limit may be left out)")
    ids = ljspeech_clips(source, limit)
    if not ids:
        raise FileNotFoundError(f"{source / 'metadata.csv'}: lists no clips; point at the LJSpeech-1.1 folder")
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)  # the shards are about to change: an older cache here is gone
    try:
        return _build_shards(source, out, audio, ids, shard_size, limit, progress)
    except BaseException:  # a bad clip part-way: take this build's shards away again (nothing half-built stays)
        for name in _SHARD_NAME.values():
            for stale in out.glob(name.replace("{number:05d}", "[0-9]" * 5)):
                stale.unlink(missing_ok=True)
        raise


def _build_shards(
    source: Path, out: Path, audio: AudioConfig, ids: list[str], shard_size: int, limit: int | None, progress: bool
) -> dict:
    clips, shards, codes, mels = [], [], [], []
    total, total_sq, count = 0.0, 0.0, 0
    audio_offset = mel_offset = 0
    for uid in tqdm(ids, desc="feature cache", disable=not progress):
        path = source / "wavs" / f"{uid}.wav"
        x = load_audio(path, audio.sample_rate)
        frames = len(x) // audio.hop_length
        if frames == 0:
            continue
        k = quantize(x[: frames * audio.hop_length], audio.bits)
        mel = log_mel(dequantize(k, audio.bits), audio)
        total, total_sq, count = (
            total + mel.sum(dtype=np.float64),
            total_sq + np.square(mel, dtype=np.float64).sum(),
            count + mel.size,
        )
        clips.append(
            {
                "id": uid,
                "source_sha256": sha256(path),
                "shard": len(shards),
                "audio_offset": audio_offset,
                "mel_offset": mel_offset,
                "frames": frames,
            }
        )
        codes.append(k)
        mels.append(mel)
        audio_offset, mel_offset = audio_offset + frames * audio.hop_length, mel_offset + frames
        if len(codes) == shard_size:
            shards.append(_write_shard(out, len(shards), codes, mels))
            codes, mels, audio_offset, mel_offset = [], [], 0, 0
    if codes:
        shards.append(_write_shard(out, len(shards), codes, mels))
    if not clips:
        raise ValueError(f"{source}: no clip of at least hop_length={audio.hop_length} samples")
    mean = total / count
    manifest = {
        "version": VERSION,
        "source": str(source),
        "audio": to_dict(audio),
        "shard_size": shard_size,
        "limit": limit,
        "statistics": {
            "log_mel_mean": round(float(mean), 4),
            "log_mel_std": round(float(np.sqrt(total_sq / count - mean**2)), 4),
        },
        "seconds": round(sum(c["frames"] for c in clips) * audio.hop_length / audio.sample_rate, 2),
        "shards": shards,
        "clips": clips,
        "command": f"python -m pwn_lib.feature_cache build {source} {out} (shard_size={shard_size}, limit={limit})",
    }
    write_json(out / MANIFEST, manifest)
    return manifest


def _build_hint(cache: Path) -> str:
    return f"`python -m pwn_lib.feature_cache build LJSPEECH_DIR {cache} --preset paper`"


def read_manifest(cache: Path) -> dict:
    """The cache's manifest; a clear error when the cache is missing, unfinished or its manifest damaged."""
    path = Path(cache) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: missing, so {cache} is not a finished feature cache; build it with {_build_hint(cache)}"
        )
    try:
        manifest = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON ({err}); build the cache again with {_build_hint(cache)}") from None
    if not isinstance(manifest, dict) or not {"audio", "shards", "clips"} <= set(manifest):
        raise ValueError(f"{path}: not a feature-cache manifest; build the cache again with {_build_hint(cache)}")
    return manifest


def _shard_files(manifest: dict) -> dict[str, dict]:
    """Every shard file of a manifest: name -> ``{"file", "sha256", "bytes"}`` (no size in older manifests)."""
    return {f["file"]: f for shard in manifest["shards"] for f in shard}


def rebuild(cache: Path, out: Path, source: Path | None = None, progress: bool = True) -> dict:
    """Build again, into ``out``, the cache that ``cache/manifest.json`` describes (from ``source`` if the
    corpus moved); the result must have the same hashes (:func:`verify`)."""
    manifest = read_manifest(cache)
    return build_cache(
        Path(source or manifest["source"]),
        out,
        from_dict(AudioConfig, manifest["audio"]),
        manifest["shard_size"],
        manifest["limit"],
        progress,
    )


def verify(cache: Path) -> list[str]:
    """The shards that differ from the manifest (an empty list for an intact cache), every one hashed again."""
    return list(mismatches(Path(cache), _shard_files(read_manifest(cache)), cached=False))


class CachedWindows(torch.utils.data.Dataset):
    """Random windows of a feature cache, streamed from memory-mapped shards (notebook 08).

    The same items as :class:`pwn_lib.data.AudioWindows`: item ``i`` depends only on ``(seed, i)``; a clip is
    picked with probability proportional to its number of window positions, then a start frame uniformly.
    Clips shorter than the window are left out. The shards are checked against the manifest first (a changed
    one is refused, by name), then mapped lazily in each DataLoader worker.

    Items: ``{"audio": (1, window) float32, "mel": (n_mels, window // hop) float32, "speaker": () long}``.
    """

    def __init__(self, cache: Path, window: int, cfg: AudioConfig, seed: int = 0, length: int = 10_000):
        self.cache, self.window, self.cfg, self.seed, self.length = Path(cache), window, cfg, seed, length
        manifest = read_manifest(cache)
        if from_dict(AudioConfig, manifest["audio"]) != cfg:
            raise ValueError(
                f"{cache} was built for {manifest['audio']}, not this run's AudioConfig {to_dict(cfg)}; "
                "build a cache for this preset"
            )
        if window <= 0 or window % cfg.hop_length:
            raise ValueError(f"window={window} must be a positive multiple of hop_length={cfg.hop_length}")
        require_intact(
            self.cache,
            _shard_files(manifest),
            self.cache / MANIFEST,
            f"Build the cache again: `{manifest.get('command', _build_hint(self.cache))}`.",
        )
        hop_frames = window // cfg.hop_length
        clips = [c for c in manifest["clips"] if c["frames"] >= hop_frames]
        if not clips:
            raise ValueError(f"{cache}: no clip is as long as the window ({window} samples)")
        self.table = np.array(
            [[c["shard"], c["audio_offset"], c["mel_offset"], c["frames"]] for c in clips], dtype=np.int64
        )
        self.files = [(shard[0]["file"], shard[1]["file"]) for shard in manifest["shards"]]
        self.positions = self.table[:, 3] - hop_frames + 1
        self.weights = self.positions / self.positions.sum()
        self.statistics = manifest["statistics"]
        self._maps: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def __getstate__(self) -> dict:  # workers map the shards themselves
        return {**self.__dict__, "_maps": {}}

    def __len__(self) -> int:
        return self.length

    def _shard(self, number: int) -> tuple[np.ndarray, np.ndarray]:
        if number not in self._maps:
            audio, mel = self.files[number]
            self._maps[number] = (np.load(self.cache / audio, mmap_mode="r"), np.load(self.cache / mel, mmap_mode="r"))
        return self._maps[number]

    def locate(self, i: int) -> tuple[int, int]:
        """Item ``i`` as (clip row n, start frame j): a function of ``(seed, i)`` only."""
        if not 0 <= i < self.length:
            raise IndexError(f"index {i} out of range for CachedWindows of length {self.length}")
        rng = np.random.default_rng([self.seed, i])
        n = int(rng.choice(len(self.table), p=self.weights))
        return n, int(rng.integers(self.positions[n]))

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        n, j = self.locate(i)
        shard, audio_offset, mel_offset, _ = (int(v) for v in self.table[n])
        codes, mel = self._shard(shard)
        hop, frames = self.cfg.hop_length, self.window // self.cfg.hop_length
        start = audio_offset + j * hop
        audio = dequantize(np.asarray(codes[start : start + self.window], dtype=np.int64), self.cfg.bits)
        return {
            "audio": torch.from_numpy(audio).unsqueeze(0),
            "mel": torch.from_numpy(np.array(mel[:, mel_offset + j : mel_offset + j + frames], dtype=np.float32)),
            "speaker": torch.tensor(0, dtype=torch.long),
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pwn_lib.feature_cache",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="build the cache of an LJSpeech-shaped folder")
    build.add_argument("source", type=Path)
    build.add_argument("out", type=Path)
    build.add_argument("--preset", default="paper", choices=PRESET_NAMES, help="the AudioConfig preset")
    build.add_argument("--shard-size", type=at_least_one, default=500, help="clips per shard")
    build.add_argument("--limit", type=at_least_one, help="the first LIMIT clips only")
    check = sub.add_parser("verify", help="check every shard's SHA-256 against the manifest")
    check.add_argument("cache", type=Path)
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            manifest = build_cache(args.source, args.out, AUDIO_PRESETS[args.preset], args.shard_size, args.limit)
            print(f"{len(manifest['clips'])} clips, {manifest['seconds']} s, {manifest['statistics']} -> {args.out}")
            return 0
        bad = verify(args.cache)
    except (FileNotFoundError, AudioError) as error:
        raise SystemExit(f"error: {error}") from None
    print("intact" if not bad else f"differ from the manifest: {bad}")
    return 1 if bad else 0


__all__ = ["CachedWindows", "build_cache", "ljspeech_clips", "read_manifest", "rebuild", "sha256", "verify"]


if __name__ == "__main__":
    raise SystemExit(main())
