"""Bad audio and changed data are refused by name before any expensive work: a WAV cut in its data section, a
sample-rate bomb, a clip hours long, a changed corpus FLAC and a tampered feature-cache shard."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from pwn_lib import config, integrity
from pwn_lib.audio import MAX_SECONDS, AudioError, load_audio, save_audio
from pwn_lib.config import AUDIO_PRESETS
from pwn_lib.data import CORPUS_DIR, corpus_split, load_corpus, load_ljspeech
from pwn_lib.feature_cache import CachedWindows, build_cache, verify
from pwn_lib.integrity import IntegrityError

SR = 16_000


@pytest.fixture(autouse=True)
def hash_cache(tmp_path, monkeypatch) -> Path:
    """Each test remembers verified hashes in its own scratch folder."""
    monkeypatch.setattr(config, "SCRATCH_DIR", tmp_path / "scratch")
    return tmp_path / "scratch" / integrity.HASH_CACHE


def noise(seconds: float, sr: int = SR) -> np.ndarray:
    return np.random.default_rng(0).uniform(-0.5, 0.5, int(seconds * sr)).astype(np.float32)


def wav_with_header(path: Path, frames: int, sample_rate: int, data_bytes: int) -> Path:
    """A 16-bit mono WAV whose header declares ``frames`` at ``sample_rate`` and whose data section holds
    ``data_bytes`` bytes (a sparse file: no disk space is used for the zeros)."""
    sf.write(path, np.zeros(1, dtype=np.int16), sample_rate, subtype="PCM_16")
    head = bytearray(path.read_bytes()[:44])
    assert head[36:40] == b"data"
    head[4:8] = (36 + 2 * frames).to_bytes(4, "little")
    head[40:44] = (2 * frames).to_bytes(4, "little")
    with open(path, "wb") as f:
        f.write(head)
        f.truncate(44 + data_bytes)
    return path


@pytest.fixture
def no_decoding(monkeypatch):
    """Make decoding and resampling fail loudly, to show that a refusal comes from the header alone."""

    def forbidden(*args, **kwargs):
        raise AssertionError("the file was decoded or resampled before it was refused")

    monkeypatch.setattr(sf, "read", forbidden)
    monkeypatch.setattr("librosa.resample", forbidden)


# --- audio files ----------------------------------------------------------------------------


def test_a_wav_cut_in_its_data_section_is_refused_by_name(tmp_path):
    path = save_audio(tmp_path / "full.wav", noise(1.0), SR)
    assert len(load_audio(path)) == SR
    cut = tmp_path / "cut.wav"
    cut.write_bytes(path.read_bytes()[: 44 + SR])  # the header still declares 16,000 frames; 8,000 are there
    with pytest.raises(AudioError, match=r"cut\.wav: the header declares 16000 frames but the data holds only 8000"):
        load_audio(cut)


def test_a_wav_with_an_odd_sized_chunk_before_its_data_still_loads(tmp_path):
    """The header walk honours RIFF's padding of odd-sized chunks (here a 3-byte LIST chunk)."""
    path = save_audio(tmp_path / "plain.wav", noise(0.25), SR)
    raw = path.read_bytes()
    extra = b"LIST" + (3).to_bytes(4, "little") + b"abc\x00"
    padded = bytearray(raw[:36] + extra + raw[36:])
    padded[4:8] = (len(padded) - 8).to_bytes(4, "little")
    (tmp_path / "padded.wav").write_bytes(bytes(padded))
    np.testing.assert_array_equal(load_audio(tmp_path / "padded.wav"), load_audio(path))


@pytest.mark.parametrize("rate", [1, 3_999, 192_001])
def test_a_sample_rate_bomb_is_refused_from_the_header_before_resampling(tmp_path, rate, no_decoding):
    # 200 KB at 1 Hz would be resampled to 1.6e9 samples (13 GB) at 16 kHz.
    path = wav_with_header(tmp_path / "bomb.wav", 100_000, rate, 200_000)
    start = time.perf_counter()
    with pytest.raises(AudioError, match=rf"bomb\.wav: the header declares a sample rate of {rate} Hz, outside"):
        load_audio(path)
    assert time.perf_counter() - start < 1.0


def test_the_rate_limits_are_inclusive(tmp_path):
    for rate in (4_000, 192_000):
        x = load_audio(save_audio(tmp_path / f"r{rate}.wav", noise(0.1, rate), rate), None)
        assert len(x) == int(0.1 * rate)


def test_a_target_rate_outside_the_limits_is_refused(tmp_path):
    path = save_audio(tmp_path / "ok.wav", noise(0.1), SR)
    with pytest.raises(ValueError, match="sample_rate=1;"):
        load_audio(path, 1)


def test_a_three_hour_wav_is_refused_before_decoding_with_how_to_split_it(tmp_path, no_decoding):
    frames = 3 * 3600 * SR
    path = wav_with_header(tmp_path / "long.wav", frames, SR, 2 * frames)  # 346 MB, sparse
    with pytest.raises(AudioError, match=r"long\.wav: 10,800 s long, more than max_seconds=600 s.*sox.*max_seconds"):
        load_audio(path)


def test_max_seconds_is_the_stated_limit_and_can_be_raised(tmp_path):
    assert MAX_SECONDS == 600.0
    path = save_audio(tmp_path / "two.wav", noise(2.0), SR)
    with pytest.raises(AudioError, match="max_seconds=1 s"):
        load_audio(path, max_seconds=1.0)
    assert len(load_audio(path, max_seconds=2.0)) == len(load_audio(path, max_seconds=None)) == 2 * SR


def test_load_ljspeech_refuses_a_bomb_in_a_users_folder(tmp_path, no_decoding):
    (tmp_path / "wavs").mkdir()
    (tmp_path / "metadata.csv").write_text("LJ001-0001|text|text\n")
    wav_with_header(tmp_path / "wavs" / "LJ001-0001.wav", 100_000, 1, 200_000)
    with pytest.raises(AudioError, match=r"LJ001-0001\.wav: the header declares a sample rate of 1 Hz"):
        load_ljspeech(tmp_path)


# --- the embedded corpus against data/corpus/manifest.json ----------------------------------


@pytest.fixture
def corpus(tmp_path) -> Path:
    """A copy of the corpus's test split with its manifest, split and transcripts."""
    root = tmp_path / "corpus"
    (root / "wavs").mkdir(parents=True)
    for name in ("manifest.json", "split.tsv", "transcripts.tsv"):
        shutil.copy2(CORPUS_DIR / name, root / name)
    for uid, split in corpus_split().items():
        if split == "test":
            shutil.copy2(CORPUS_DIR / "wavs" / f"{uid}.flac", root / "wavs" / f"{uid}.flac")
    return root


def first_test_clip() -> str:
    return min(uid for uid, split in corpus_split().items() if split == "test")


def test_a_silenced_corpus_flac_is_refused_by_name(corpus):
    uid = first_test_clip()
    path = corpus / "wavs" / f"{uid}.flac"
    save_audio(path, np.zeros(len(load_audio(path)), dtype=np.float32), SR)
    with pytest.raises(IntegrityError, match=rf"manifest\.json: wavs/{uid}\.flac: its SHA-256 differs.*build-corpus"):
        load_corpus("test", root=corpus)


def test_a_missing_corpus_flac_or_manifest_is_refused(corpus):
    uid = first_test_clip()
    (corpus / "wavs" / f"{uid}.flac").unlink()
    with pytest.raises(IntegrityError, match=rf"wavs/{uid}\.flac: missing"):
        load_corpus("test", root=corpus)
    (corpus / "manifest.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"manifest\.json: missing.*build-corpus"):
        load_corpus("test", root=corpus)


def test_corpus_hashes_are_computed_once_then_only_for_changed_files(corpus, monkeypatch, hash_cache):
    hashed = []
    real = integrity.sha256
    monkeypatch.setattr(integrity, "sha256", lambda path: hashed.append(Path(path).name) or real(path))
    n = len(load_corpus("test", root=corpus))
    assert len(hashed) == n and hash_cache.is_file()
    hashed.clear()
    load_corpus("test", root=corpus)
    assert hashed == []
    uid = first_test_clip()
    path = corpus / "wavs" / f"{uid}.flac"
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1_000_000_000))
    load_corpus("test", root=corpus)
    assert hashed == [f"{uid}.flac"]


def test_a_changed_file_with_a_remembered_size_and_time_is_still_caught_once_its_time_changes(corpus):
    uid = first_test_clip()
    path = corpus / "wavs" / f"{uid}.flac"
    load_corpus("test", root=corpus)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # same size, new content, new modification time
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=rf"wavs/{uid}\.flac: its SHA-256 differs"):
        load_corpus("test", root=corpus)


# --- the feature cache against its manifest -------------------------------------------------


@pytest.fixture
def feature_cache(tmp_path) -> Path:
    source = tmp_path / "ljspeech"
    lines = []
    for u in load_corpus("valid")[:2]:
        save_audio(source / "wavs" / f"{u.id}.wav", u.audio, SR)
        lines.append(f"{u.id}|{u.text}|{u.text}")
    (source / "metadata.csv").write_text("\n".join(lines) + "\n")
    build_cache(source, tmp_path / "cache", AUDIO_PRESETS["tiny"], shard_size=1, progress=False)
    return tmp_path / "cache"


def test_a_tampered_shard_is_refused_when_the_cache_is_opened(feature_cache):
    audio = AUDIO_PRESETS["tiny"]
    CachedWindows(feature_cache, 1_024, audio)
    codes = np.load(feature_cache / "audio-00001.npy")
    codes[100] ^= 1
    np.save(feature_cache / "audio-00001.npy", codes)
    with pytest.raises(IntegrityError, match=r"audio-00001\.npy: its SHA-256 differs.*feature_cache build"):
        CachedWindows(feature_cache, 1_024, audio)
    assert verify(feature_cache) == ["audio-00001.npy"]


def test_a_cut_shard_is_refused_by_its_size(feature_cache, monkeypatch):
    CachedWindows(feature_cache, 1_024, AUDIO_PRESETS["tiny"])  # every shard verified and remembered
    path = feature_cache / "mel-00000.npy"
    recorded = path.stat().st_size
    path.write_bytes(path.read_bytes()[:-4])
    monkeypatch.setattr(integrity, "sha256", lambda path: pytest.fail("a size mismatch needs no hashing"))
    with pytest.raises(IntegrityError, match=rf"mel-00000\.npy: {recorded - 4} bytes, the manifest records {recorded}"):
        CachedWindows(feature_cache, 1_024, AUDIO_PRESETS["tiny"])


def test_a_damaged_feature_cache_manifest_is_refused_by_name(feature_cache):
    (feature_cache / "manifest.json").write_text('{"audio": ')
    with pytest.raises(ValueError, match=r"manifest\.json: not valid JSON.*feature_cache build"):
        CachedWindows(feature_cache, 1_024, AUDIO_PRESETS["tiny"])
