"""The LJSpeech feature cache: built from an LJSpeech-shaped folder, rebuilt byte for byte from its manifest,
streamed from memory-mapped shards through DataLoader workers. Nothing downloads: the folder is made from the
embedded corpus."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pwn_lib.audio import dequantize, log_mel, quantize, save_audio
from pwn_lib.config import AUDIO_PRESETS
from pwn_lib.data import load_corpus
from pwn_lib.feature_cache import CachedWindows, build_cache, read_manifest, rebuild, verify

CLIPS = 5


@pytest.fixture(scope="module")
def ljspeech(tmp_path_factory):
    """An LJSpeech-1.1-shaped folder (metadata.csv, wavs/<id>.wav at 22,050 Hz) of a few embedded-corpus clips."""
    root = tmp_path_factory.mktemp("LJSpeech-1.1")
    lines = []
    for u in load_corpus("train", sample_rate=22_050)[:CLIPS]:
        save_audio(root / "wavs" / f"{u.id}.wav", u.audio, 22_050)
        lines.append(f"{u.id}|{u.text}|{u.text}")
    (root / "metadata.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def cache(ljspeech, tmp_path_factory):
    out = tmp_path_factory.mktemp("cache")
    build_cache(ljspeech, out, AUDIO_PRESETS["paper"], shard_size=2, progress=False)
    return out


def test_the_manifest_records_the_clips_shards_and_statistics(cache):
    manifest = read_manifest(cache)
    assert len(manifest["clips"]) == CLIPS and len(manifest["shards"]) == 3  # shards of 2, 2 and 1 clips
    assert manifest["audio"]["sample_rate"] == 24_000
    assert -12 < manifest["statistics"]["log_mel_mean"] < 0 < manifest["statistics"]["log_mel_std"]
    assert all(len(c["source_sha256"]) == 64 for c in manifest["clips"])
    assert verify(cache) == []


def test_the_cache_is_rebuilt_identically_from_its_manifest(cache, tmp_path):
    rebuild(cache, tmp_path, progress=False)
    assert verify(tmp_path) == []
    assert read_manifest(tmp_path)["shards"] == read_manifest(cache)["shards"]
    for shard in read_manifest(cache)["shards"]:
        for f in shard:
            assert (tmp_path / f["file"]).read_bytes() == (cache / f["file"]).read_bytes(), f["file"]


def test_verify_names_a_damaged_shard(cache, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(cache, copy)
    codes = np.load(copy / "audio-00001.npy")
    codes[100] ^= 1
    np.save(copy / "audio-00001.npy", codes)
    assert verify(copy) == ["audio-00001.npy"]


def test_windows_are_the_clip_resampled_quantised_and_its_log_mel(cache, ljspeech):
    from pwn_lib.audio import load_audio

    audio = AUDIO_PRESETS["paper"]
    windows = CachedWindows(cache, 2_400, audio, seed=3, length=16)
    item = windows[7]
    n, j = windows.locate(7)
    clip = read_manifest(cache)["clips"][n]
    x = load_audio(ljspeech / "wavs" / f"{clip['id']}.wav", audio.sample_rate)[: clip["frames"] * audio.hop_length]
    x = dequantize(quantize(x, audio.bits), audio.bits)
    hop = audio.hop_length
    assert item["audio"].shape == (1, 2_400) and item["mel"].shape == (audio.n_mels, 10)
    np.testing.assert_array_equal(item["audio"][0].numpy(), x[j * hop : j * hop + 2_400])
    np.testing.assert_array_equal(item["mel"].numpy(), log_mel(x, audio)[:, j : j + 10])
    assert torch.equal(windows[7]["audio"], CachedWindows(cache, 2_400, audio, seed=3, length=16)[7]["audio"])


def test_dataloader_workers_stream_the_same_items_as_the_main_process(cache):
    windows = CachedWindows(cache, 2_400, AUDIO_PRESETS["paper"], seed=0, length=8)
    windows[0]  # maps a shard here; the workers must map their own
    here = [windows[i]["audio"] for i in range(8)]
    loader = torch.utils.data.DataLoader(windows, batch_size=4, num_workers=2)
    there = torch.cat([batch["audio"] for batch in loader])
    assert torch.equal(there, torch.stack(here))
    assert isinstance(windows._shard(0)[0], np.memmap), "the shards must be memory-mapped, not loaded"


def test_a_cache_for_another_preset_is_refused(cache):
    with pytest.raises(ValueError, match="not this run's AudioConfig"):
        CachedWindows(cache, 2_048, AUDIO_PRESETS["course"])


def test_the_command_refuses_a_folder_without_clips_and_bad_counts_writing_nothing(tmp_path, capsys):
    from pwn_lib.feature_cache import main

    empty, out = tmp_path / "empty", tmp_path / "cache"
    empty.mkdir()
    with pytest.raises(SystemExit, match=r"empty/metadata.csv: missing; point at the LJSpeech-1.1 folder"):
        main(["build", str(empty), str(out)])
    (empty / "metadata.csv").write_text("\n")
    with pytest.raises(SystemExit, match=r"empty/metadata.csv: lists no clips"):
        main(["build", str(empty), str(out)])
    with pytest.raises(SystemExit, match=r"empty/manifest.json: missing, so .* is not a finished feature cache"):
        main(["verify", str(empty)])
    for flag in ("--shard-size", "--limit"):
        with pytest.raises(SystemExit):
            main(["build", str(empty), str(out), flag, "0"])
        assert f"argument {flag}: 0 is not >= 1" in capsys.readouterr().err
    assert not out.exists()


def test_a_build_that_fails_part_way_leaves_no_shards_and_no_manifest(ljspeech, tmp_path):
    source = tmp_path / "LJSpeech-1.1"
    (source / "wavs").mkdir(parents=True)
    ids = [line.split("|", 1)[0] for line in (ljspeech / "metadata.csv").read_text().splitlines()]
    for uid in ids:
        (source / "wavs" / f"{uid}.wav").write_bytes((ljspeech / "wavs" / f"{uid}.wav").read_bytes())
    (source / "metadata.csv").write_text((ljspeech / "metadata.csv").read_text())
    broken = source / "wavs" / f"{ids[3]}.wav"
    broken.write_bytes(b"RIFF not a wave file")
    out = tmp_path / "cache"
    build_cache(ljspeech, out, AUDIO_PRESETS["paper"], shard_size=1, progress=False)  # an older, finished cache
    with pytest.raises(Exception, match=ids[3]):
        build_cache(source, out, AUDIO_PRESETS["paper"], shard_size=1, progress=False)
    assert sorted(p.name for p in out.iterdir()) == []  # the failed build's shards 0-2 and the overwritten old cache
