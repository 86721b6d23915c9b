"""pwn_lib.data: the committed corpus, LJSpeech loading and download, AudioWindows, build-corpus."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import io
import json
import socket
import tarfile
import threading
from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile as sf
import torch

from pwn_lib.audio import dequantize, load_audio, log_mel, quantize, save_audio
from pwn_lib.config import AudioConfig
from pwn_lib.corpus_tools import (
    AUDIO_DEB,
    TEXT_DEB,
    DownloadError,
    build_corpus,
    download_ljspeech,
    main,
    sha256_file,
    split_of,
)
from pwn_lib.data import CORPUS_DIR, SPLITS, AudioWindows, Utterance, corpus_split, load_corpus, load_ljspeech

CFG = AudioConfig()


@pytest.fixture(scope="module")
def corpus() -> dict[str, list[Utterance]]:
    return {split: load_corpus(split) for split in SPLITS}


# --- the committed corpus ------------------------------------------------------------------


def test_splits_are_disjoint_cover_the_corpus_and_match_the_split_file(corpus):
    ids = {split: {u.id for u in utts} for split, utts in corpus.items()}
    assert not ids["train"] & ids["valid"] and not ids["train"] & ids["test"] and not ids["valid"] & ids["test"]
    everything = [u.id for u in load_corpus("all")]
    assert sorted(everything) == everything and set(everything) == ids["train"] | ids["valid"] | ids["test"]
    assert {split: len(v) for split, v in ids.items()} == {"train": 471, "valid": 40, "test": 39}
    assert all(split_of(i) == s for i, s in corpus_split().items())


def test_corpus_is_speech_at_16_khz_with_transcripts(corpus):
    utts = [u for utts in corpus.values() for u in utts]
    assert len(utts) == 550
    assert all(u.sample_rate == 16_000 and u.audio.dtype == np.float32 and u.text for u in utts)
    assert not [u.id for u in utts if u.id.startswith("silence") or u.text.startswith(("[", "<"))]
    minutes = sum(u.seconds for u in utts) / 60
    assert 24.0 < minutes < 24.5
    rms = np.array([np.sqrt(np.mean(u.audio.astype(np.float64) ** 2)) for u in utts])
    assert rms.min() > 0.02  # no silent files slipped through
    assert all(np.array_equal(dequantize(quantize(u.audio)), u.audio) for u in utts[:50])  # 16-bit grid


def test_committed_files_match_the_manifest():
    manifest = json.loads((CORPUS_DIR / "manifest.json").read_text())
    flacs = sorted(f"wavs/{p.name}" for p in (CORPUS_DIR / "wavs").glob("*.flac"))
    assert flacs == sorted(manifest["files"]) and len(flacs) == manifest["utterances"] == 550
    for name, entry in manifest["files"].items():
        assert sha256_file(CORPUS_DIR / name) == entry["sha256"], name
    assert sum((CORPUS_DIR / f).stat().st_size for f in flacs) < 30e6
    assert set(manifest["sources"]) == {AUDIO_DEB, TEXT_DEB}
    license_text = (CORPUS_DIR / "LICENSE.md").read_text()
    assert all(word in license_text for word in ("Allison Smith", "Digium", "CC-BY-SA-3.0", "1.6.1-1"))


def test_load_corpus_rejects_unknown_split_and_missing_files(tmp_path):
    with pytest.raises(ValueError, match="split='dev'"):
        load_corpus("dev")
    with pytest.raises(FileNotFoundError, match="transcripts.tsv: missing.*build-corpus"):
        load_corpus("train", root=tmp_path)


# --- AudioWindows --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def few(corpus) -> list[Utterance]:
    return corpus["valid"][:6]


def test_windows_are_deterministic_given_seed_and_index(few):
    a, b = AudioWindows(few, 4096, CFG, seed=3, length=20), AudioWindows(few, 4096, CFG, seed=3, length=20)
    backwards = [b[i] for i in reversed(range(20))][::-1]
    for i in range(20):
        assert torch.equal(a[i]["audio"], backwards[i]["audio"]) and torch.equal(a[i]["mel"], backwards[i]["mel"])
    other = AudioWindows(few, 4096, CFG, seed=4, length=20)
    assert [a.locate(i) for i in range(20)] != [other.locate(i) for i in range(20)]


def test_window_of_n_samples_carries_exactly_n_over_hop_aligned_frames(few):
    hop = CFG.hop_length
    for window in (1024, 4096):
        ds = AudioWindows(few, window, CFG, seed=0, length=8)
        for i in range(8):
            item, (n, j) = ds[i], ds.locate(i)
            frames = window // hop
            assert item["audio"].shape == (1, window) and item["mel"].shape == (CFG.n_mels, frames)
            x = dequantize(quantize(few[n].audio))
            np.testing.assert_array_equal(item["audio"][0].numpy(), x[j * hop : j * hop + window])
            # Frames whose FFT window lies inside the audio window equal the window's own log-mel.
            inner = slice(CFG.n_fft // (2 * hop), frames - CFG.n_fft // (2 * hop))
            own = log_mel(item["audio"][0].numpy(), CFG)
            np.testing.assert_allclose(item["mel"][:, inner].numpy(), own[:, inner], atol=1e-4)


def test_window_items_are_typed_on_the_grid_and_batch(few):
    ds = AudioWindows(few, 1024, CFG, length=4)
    item = ds[0]
    assert item["audio"].dtype == torch.float32 and item["mel"].dtype == torch.float32
    assert item["speaker"].dtype == torch.long and item["speaker"].shape == ()
    assert torch.equal(dequantize(quantize(item["audio"])).float(), item["audio"])
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert batch["audio"].shape == (4, 1, 1024) and batch["mel"].shape == (4, CFG.n_mels, 4)


def test_short_utterances_are_padded_with_near_silence():
    short = Utterance("s", "", np.full(700, 0.5, dtype=np.float32), 16_000, speaker=2)
    ds = AudioWindows([short], 1024, CFG, length=3)
    item = ds[2]
    assert ds.locate(2) == (0, 0) and item["speaker"].item() == 2
    np.testing.assert_allclose(item["audio"][0, 700:].numpy(), 1 / 65535, atol=1e-7)


def test_windows_favour_long_utterances():
    quiet = np.zeros(16 * 256, dtype=np.float32)
    utts = [Utterance("long", "", np.zeros(100 * 256, dtype=np.float32), 16_000), Utterance("short", "", quiet, 16_000)]
    ds = AudioWindows(utts, 1024, CFG, length=400)
    counts = np.bincount([ds.locate(i)[0] for i in range(400)], minlength=2)
    assert counts[0] > 4 * counts[1] > 0  # 97 vs 13 window positions


def test_audio_windows_errors(few):
    with pytest.raises(ValueError, match="window=1000 must be a positive multiple of hop_length=256"):
        AudioWindows(few, 1000, CFG)
    with pytest.raises(ValueError, match=r"\[16000\] Hz but cfg.sample_rate is 22050"):
        AudioWindows(few, 1024, AudioConfig(sample_rate=22_050))
    with pytest.raises(ValueError, match="at least one utterance"):
        AudioWindows([], 1024, CFG)
    with pytest.raises(IndexError, match="index 5 out of range"):
        AudioWindows(few, 1024, CFG, length=5)[5]


# --- LJSpeech: a folder of the same shape built from the corpus -----------------------------


def make_ljspeech(root: Path, utterances: list[Utterance]) -> Path:
    (root / "wavs").mkdir(parents=True)
    lines = []
    for k, u in enumerate(utterances, start=1):
        uid = f"LJ001-{k:04d}"
        save_audio(root / "wavs" / f"{uid}.wav", librosa.resample(u.audio, orig_sr=16_000, target_sr=22_050), 22_050)
        lines.append(f"{uid}|{u.text}|{u.text.lower()}")
    (root / "metadata.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def ljspeech(tmp_path_factory, corpus) -> Path:
    return make_ljspeech(tmp_path_factory.mktemp("lj") / "LJSpeech-1.1", corpus["test"][:4])


def test_load_ljspeech_reads_metadata_and_wavs_at_22050(ljspeech, corpus):
    utts = load_ljspeech(ljspeech)
    assert [u.id for u in utts] == ["LJ001-0001", "LJ001-0002", "LJ001-0003", "LJ001-0004"]
    assert [u.text for u in utts] == [u.text.lower() for u in corpus["test"][:4]]
    assert all(u.sample_rate == 22_050 for u in utts)
    assert abs(utts[0].seconds - corpus["test"][0].seconds) < 1e-3
    assert len(load_ljspeech(ljspeech, limit=2)) == 2
    back = load_ljspeech(ljspeech, sample_rate=16_000, limit=1)[0]
    assert back.sample_rate == 16_000 and abs(len(back.audio) - len(corpus["test"][0].audio)) <= 1


def test_audio_windows_work_on_ljspeech(ljspeech):
    cfg = AudioConfig(sample_rate=22_050, fmax=8_000.0)
    item = AudioWindows(load_ljspeech(ljspeech), 2048, cfg, length=2)[1]
    assert item["audio"].shape == (1, 2048) and item["mel"].shape == (80, 8)


def test_load_ljspeech_errors_name_the_file_and_line(tmp_path, ljspeech):
    with pytest.raises(FileNotFoundError, match=r"metadata.csv: missing.*download-ljspeech"):
        load_ljspeech(tmp_path)
    (tmp_path / "metadata.csv").write_text("LJ001-0001|ok|ok\nLJ001-0002|no normalized text\n")
    with pytest.raises(ValueError, match=r"metadata.csv:2: expected 'id\|text\|normalized text', got 2"):
        load_ljspeech(tmp_path)


# --- download_ljspeech against a local HTTP server on loopback -------------------------------


class ArchiveServer(http.server.ThreadingHTTPServer):
    """Serves one payload at any path; can cut the next response short and can ignore Range."""

    payload = b""
    cut_after: int | None = None
    honour_range = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), RangeHandler)
        self.ranges: list[str | None] = []


class RangeHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        server: ArchiveServer = self.server
        data, wanted = server.payload, self.headers.get("Range")
        server.ranges.append(wanted)
        start = int(wanted.removeprefix("bytes=").rstrip("-")) if wanted and server.honour_range else 0
        if start >= len(data) and start:
            self.send_response(416)
            self.end_headers()
            return
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        body, server.cut_after = data[start : start + server.cut_after] if server.cut_after else data[start:], None
        self.wfile.write(body)
        self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def archive(ljspeech) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:bz2") as tar:
        tar.add(ljspeech, arcname="LJSpeech-1.1")
    return buffer.getvalue()


@pytest.fixture
def server(archive):
    srv = ArchiveServer()
    srv.payload = archive
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def url_of(server: ArchiveServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}/LJSpeech-1.1.tar.bz2"


def fetch(dest: Path, server: ArchiveServer, sha256: str | None) -> Path:
    return download_ljspeech(dest, url_of(server), sha256, progress=False, timeout=10, chunk_size=4096)


def test_download_verifies_and_extracts(tmp_path, server, archive, ljspeech):
    folder = fetch(tmp_path, server, hashlib.sha256(archive).hexdigest())
    assert folder == tmp_path / "LJSpeech-1.1"
    assert [u.id for u in load_ljspeech(folder)] == [u.id for u in load_ljspeech(ljspeech)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["LJSpeech-1.1", "LJSpeech-1.1.tar.bz2"]
    assert fetch(tmp_path, server, "0" * 64) == folder and server.ranges == [None]  # done: no new request


def test_interrupted_download_resumes_with_a_range_request(tmp_path, server, archive):
    half = len(archive) // 2
    server.cut_after = half
    with pytest.raises(DownloadError, match=rf"interrupted after {half} of {len(archive)} bytes; run again"):
        fetch(tmp_path, server, hashlib.sha256(archive).hexdigest())
    assert (tmp_path / "LJSpeech-1.1.tar.bz2.part").stat().st_size == half
    assert not (tmp_path / "LJSpeech-1.1").exists()
    folder = fetch(tmp_path, server, hashlib.sha256(archive).hexdigest())
    assert server.ranges == [None, f"bytes={half}-"]
    assert (tmp_path / "LJSpeech-1.1.tar.bz2").read_bytes() == archive
    assert len(load_ljspeech(folder)) == 4


def test_resume_restarts_when_the_server_ignores_range(tmp_path, server, archive):
    (tmp_path / "LJSpeech-1.1.tar.bz2.part").write_bytes(b"stale bytes")
    server.honour_range = False
    fetch(tmp_path, server, hashlib.sha256(archive).hexdigest())
    assert (tmp_path / "LJSpeech-1.1.tar.bz2").read_bytes() == archive


def test_checksum_mismatch_deletes_the_download_and_extracts_nothing(tmp_path, server):
    with pytest.raises(DownloadError, match="does not match the expected 0000.*run again"):
        fetch(tmp_path, server, "0" * 64)
    assert list(tmp_path.iterdir()) == []


def test_corrupt_archive_extracts_nothing(tmp_path, server, archive):
    server.payload = archive[: len(archive) // 2]
    with pytest.raises(DownloadError, match=r"LJSpeech-1.1.tar.bz2: corrupt archive"):
        fetch(tmp_path, server, None)
    assert [p.name for p in tmp_path.iterdir()] == ["LJSpeech-1.1.tar.bz2"]


def test_a_half_extracted_folder_is_not_overwritten(tmp_path, server):
    (tmp_path / "LJSpeech-1.1" / "wavs").mkdir(parents=True)
    with pytest.raises(DownloadError, match=r"LJSpeech-1.1: exists but has no metadata.csv; move it away"):
        fetch(tmp_path, server, None)
    assert server.ranges == []


def test_unreachable_server_says_what_to_do(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again, so nothing listens there
    url = f"http://127.0.0.1:{port}/LJSpeech-1.1.tar.bz2"
    with pytest.raises(DownloadError, match=r"cannot connect.*run again"):
        download_ljspeech(tmp_path, url, None, progress=False, timeout=5)


# --- build-corpus from (small, synthetic) Debian packages ---------------------------------


def ar_archive(members: dict[str, bytes]) -> bytes:
    out = [b"!<arch>\n"]
    for name, data in members.items():
        header = f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}`\n".encode()
        out += [header, data, b"\n" * (len(data) % 2)]
    return b"".join(out)


def deb(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:xz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"./{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return ar_archive({"debian-binary": b"2.0\n", "control.tar.xz": b"", "data.tar.xz": buffer.getvalue()})


@pytest.fixture
def debs(tmp_path, corpus) -> Path:
    g722 = pytest.importorskip("G722")
    prompts = {
        "hello": corpus["test"][0].audio,
        "digits/1": corpus["test"][1].audio,
        "silence/1": np.zeros(1600, dtype=np.float32),
        "beep": corpus["test"][2].audio,
        "confbridge-join": corpus["test"][3].audio,
        "vm-intro": corpus["test"][4].audio,
    }
    transcripts = (
        "; Core Asterisk Sounds\n\nhello: Hello.\ndigits/1: one\nbeep: [this is a simple beep tone]\n"
        "confbridge-join: <beep ascending>\nvm-intro: Leave a message. (simple tone sound plays)\n"
    )
    root = "usr/share/asterisk/sounds/en_US_f_Allison/"
    audio = {
        f"{root}{name}.g722": g722.G722(16_000, 64_000).encode((quantize(x) - 2**15).astype(np.int16))
        for name, x in prompts.items()
    }
    (tmp_path / "debs").mkdir()
    (tmp_path / "debs" / AUDIO_DEB).write_bytes(deb(audio))
    doc = "usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz"
    (tmp_path / "debs" / TEXT_DEB).write_bytes(deb({doc: gzip.compress(transcripts.encode())}))
    return tmp_path / "debs"


def test_build_corpus_keeps_speech_only_and_writes_split_transcripts_license(tmp_path, debs, capsys):
    main(["build-corpus", "--deb-dir", str(debs), "--out", str(tmp_path / "c"), "--write-manifest"])
    assert "2 utterances" in capsys.readouterr().out
    out = tmp_path / "c"
    assert sorted(p.name for p in (out / "wavs").iterdir()) == ["digits_1.flac", "hello.flac"]
    assert (out / "transcripts.tsv").read_text() == "id\ttext\ndigits_1\tone\nhello\tHello.\n"
    assert corpus_split(out) == {"digits_1": split_of("digits_1"), "hello": split_of("hello")}
    assert "CC-BY-SA-3.0" in (out / "LICENSE.md").read_text()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["sources"][AUDIO_DEB]["sha256"] == sha256_file(debs / AUDIO_DEB)
    assert manifest["files"]["wavs/hello.flac"]["sha256"] == sha256_file(out / "wavs" / "hello.flac")
    x, rate = sf.read(str(out / "wavs" / "hello.flac"), dtype="int16")
    assert rate == 16_000
    assert manifest["files"]["wavs/hello.flac"]["pcm_sha256"] == hashlib.sha256(x.tobytes()).hexdigest()
    assert len(load_audio(out / "wavs" / "hello.flac")) == manifest["files"]["wavs/hello.flac"]["samples"]


def test_rebuild_checks_hashes_against_the_manifest(tmp_path, debs):
    build_corpus(debs, tmp_path / "first", manifest=None)
    committed = tmp_path / "first" / "manifest.json"
    build_corpus(debs, tmp_path / "again", manifest=committed)
    for name in ("wavs/hello.flac", "transcripts.tsv", "split.tsv", "manifest.json"):
        assert (tmp_path / "again" / name).read_bytes() == (tmp_path / "first" / name).read_bytes()
    manifest = json.loads(committed.read_text())
    manifest["files"]["wavs/hello.flac"]["pcm_sha256"] = "0" * 64
    committed.write_text(json.dumps(manifest))
    with pytest.raises(SystemExit, match="wavs/hello.flac: decoded samples differ from the manifest"):
        build_corpus(debs, tmp_path / "third", manifest=committed)
    manifest["sources"][AUDIO_DEB]["sha256"] = "f" * 64
    committed.write_text(json.dumps(manifest))
    with pytest.raises(SystemExit, match=rf"{AUDIO_DEB}: sha256 .* does not match the manifest's ffff"):
        build_corpus(debs, tmp_path / "fourth", manifest=committed)
    assert not (tmp_path / "fourth").exists()


def test_committed_manifest_names_the_real_debian_packages():
    sources = json.loads((CORPUS_DIR / "manifest.json").read_text())["sources"]
    assert sources[AUDIO_DEB]["sha256"] == "38c5261820b406dcb0ecb37675720da2b0864850690690352ca52707eb623806"
    assert sources[TEXT_DEB]["sha256"] == "973e797d28e37fa6ca3c0a9d6fa717e77cf1268ae916bf09fd3503113cdffa50"
