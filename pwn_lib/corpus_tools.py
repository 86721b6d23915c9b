"""Tools that make the data, apart from the code that reads it (:mod:`pwn_lib.data`).

- ``build-voices``: rebuild ``data/speakers/{es,fr,it,ru}`` (a few minutes each) from Debian's
  ``asterisk-core-sounds-<lang>-g722`` packages, with the same package and sample hash checks.
- ``build-corpus``: rebuild ``data/corpus`` from Debian's ``asterisk-core-sounds-en-g722`` package and check
  every hash against ``data/corpus/manifest.json`` (needs the ``corpus`` extra, G722).
- ``build-targets``: phonemise every transcript with espeak-ng into ``data/corpus/phones.tsv`` (the phone
  classifier's CTC targets, :mod:`pwn_lib.phones`).
- ``download-ljspeech``: LJSpeech-1.1 with a progress bar, resuming, and an integrity check.

Command line::

    python -m pwn_lib.corpus_tools build-corpus [--deb-dir DIR] [--out DIR]
    python -m pwn_lib.corpus_tools build-voices [es fr it ru] [--deb-dir DIR] [--out DIR]
    python -m pwn_lib.corpus_tools build-targets
    python -m pwn_lib.corpus_tools download-ljspeech [--dest DIR]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import http.client
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from pwn_lib.audio import save_audio
from pwn_lib.config import DATA_DIR
from pwn_lib.data import (
    CORPUS_DIR,
    LJSPEECH_SHA256,
    LJSPEECH_URL,
    SPEAKERS_DIR,
    TARGETS_PATH,
    VOICES,
    load_corpus,
)

# ---------------------------------------------------------------------------------------------
# Downloading LJSpeech: progress bar, HTTP Range resume, sha256 and tar check, atomic extraction
# ---------------------------------------------------------------------------------------------


class DownloadError(RuntimeError):
    """A download that did not complete or did not verify; the message says what to do."""


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk_size), b""):
            digest.update(block)
    return digest.hexdigest()


def _open_range(url: str, start: int, timeout: float) -> http.client.HTTPResponse | None:
    """GET ``url`` from byte ``start``; None when the server says the range is past the end (416)."""
    headers = {"Range": f"bytes={start}-"} if start else {}
    try:
        return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and start:
            return None
        raise DownloadError(f"{url}: HTTP {err.code} {err.reason}; check the URL") from None
    except (urllib.error.URLError, OSError) as err:
        raise DownloadError(f"{url}: cannot connect ({err}); check your connection and run again") from None


def _fetch(url: str, part: Path, progress: bool, timeout: float, chunk_size: int) -> None:
    """Download ``url`` into ``part``, appending to what is already there when the server allows it."""
    have = part.stat().st_size if part.exists() else 0
    response = _open_range(url, have, timeout)
    if response is None:
        return
    with response:
        if have and response.status != 206:
            have = 0  # the server ignored the Range header: start again
        size = response.headers.get("Content-Length")
        total = have + int(size) if size is not None else None
        with (
            open(part, "ab" if have else "wb") as f,
            tqdm(total=total, initial=have, unit="B", unit_scale=True, desc=part.name, disable=not progress) as bar,
        ):
            try:
                for block in iter(lambda: response.read(chunk_size), b""):
                    f.write(block)
                    bar.update(len(block))
            except (http.client.IncompleteRead, OSError) as err:
                raise DownloadError(
                    f"{url}: interrupted after {part.stat().st_size} bytes ({err}); run again to resume into {part}"
                ) from None
    got = part.stat().st_size
    if total is not None and got != total:
        raise DownloadError(f"{url}: interrupted after {got} of {total} bytes; run again to resume into {part}")


def _extract(archive: Path, dest: Path, folder: str) -> Path:
    """Extract ``archive`` (which must hold ``folder/``) next to itself, all or nothing."""
    tmp = Path(tempfile.mkdtemp(dir=dest, prefix=".extract-"))
    try:
        with tarfile.open(archive, "r|*") as tar:
            tar.extractall(tmp, filter="data")
        if not (tmp / folder).is_dir():
            raise DownloadError(f"{archive}: has no top-level folder {folder!r}; delete it and download again")
        os.replace(tmp / folder, dest / folder)
    except (tarfile.TarError, EOFError, OSError) as err:
        raise DownloadError(f"{archive}: corrupt archive ({err}); delete it and download again") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest / folder


def download_ljspeech(
    dest: str | os.PathLike = DATA_DIR,
    url: str = LJSPEECH_URL,
    sha256: str | None = LJSPEECH_SHA256,
    *,
    progress: bool = True,
    timeout: float = 60.0,
    chunk_size: int = 1 << 20,
) -> Path:
    """Download, verify and extract LJSpeech-1.1 (2.6 GB) into ``dest``; return the dataset folder.

    An interrupted download leaves ``<archive>.part`` and the next call resumes it with an HTTP Range
    request. The archive is renamed into place only once its sha256 matches, and it is extracted into
    a temporary folder that is renamed into place only if the whole tar stream reads cleanly.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    name = Path(urllib.parse.urlparse(url).path).name
    folder = re.sub(r"\.(tar(\.\w+)?|tgz)$", "", name)
    if (dest / folder / "metadata.csv").exists():
        return dest / folder
    if (dest / folder).exists():
        raise DownloadError(f"{dest / folder}: exists but has no metadata.csv; move it away and run again")
    archive, part = dest / name, dest / f"{name}.part"
    if not archive.exists():
        _fetch(url, part, progress, timeout, chunk_size)
        if sha256 is not None and (got := sha256_file(part)) != sha256:
            part.unlink()
            raise DownloadError(
                f"{url}: sha256 {got} does not match the expected {sha256}; "
                f"the partial file was deleted, run again to download afresh"
            )
        os.replace(part, archive)
    elif sha256 is not None and (got := sha256_file(archive)) != sha256:
        raise DownloadError(f"{archive}: sha256 {got} does not match the expected {sha256}; delete it and run again")
    return _extract(archive, dest, folder)


# ---------------------------------------------------------------------------------------------
# Building the embedded corpus from the Debian packages
# ---------------------------------------------------------------------------------------------

AUDIO_DEB = "asterisk-core-sounds-en-g722_1.6.1-1_all.deb"
TEXT_DEB = "asterisk-core-sounds-en_1.6.1-1_all.deb"
_PROMPTS = "usr/share/asterisk/sounds/en_US_f_Allison/"
_TRANSCRIPTS = "usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz"
_SAMPLE_RATE = 16_000

_LICENSE_MD = """\
# The embedded corpus: Asterisk core prompts, voice of Allison Smith

The FLAC files in `wavs/` and the transcripts in `transcripts.tsv` are the English core prompts
of the Asterisk PBX, recorded by **Allison Smith** and published by **Digium, Inc.**
(Copyright (C) Digium, Inc.) under the
**Creative Commons Attribution-ShareAlike 3.0 Unported license (CC-BY-SA-3.0)**:
<https://creativecommons.org/licenses/by-sa/3.0/>.

Source: the Debian package `asterisk-core-sounds-en-g722` version 1.6.1-1 (G.722 audio, 16 kHz)
and, for the transcripts (`core-sounds-en.txt`), the Debian package `asterisk-core-sounds-en`
version 1.6.1-1. The sha256 of both .deb files is in `manifest.json`.

Changes made: the G.722 streams were decoded to 16 kHz 16-bit PCM and stored as FLAC; the
`silence/` files, the prompts whose transcript is only a bracketed description of a tone or
sound effect (e.g. `beep: [this is a simple beep tone]`, `confbridge-join: <beep ascending>`) and
`vm-intro` (a tone plays at its end) were left out; the slash in prompt names
became an underscore (`digits/1` is `digits_1`). `python -m pwn_lib.corpus_tools build-corpus` redoes all
of this from the .deb files.

This folder (audio, transcripts, split) is licensed CC-BY-SA-3.0 as a whole; the rest of the
repository keeps its own license.
"""


def split_of(uid: str) -> str:
    """Deterministic ~90/5/5 split from the sha256 of the id."""
    bucket = int(hashlib.sha256(uid.encode()).hexdigest()[:8], 16) % 100
    return "train" if bucket < 90 else "valid" if bucket < 95 else "test"


def _deb_data(deb: Path) -> tarfile.TarFile:
    """The ``data.tar.*`` member of a Debian package (an ar archive), opened as a tar file."""
    raw = deb.read_bytes()
    if not raw.startswith(b"!<arch>\n"):
        raise ValueError(f"{deb}: not a Debian package (no ar header); download it again")
    pos = 8
    while pos + 60 <= len(raw):
        name, size = raw[pos : pos + 16].decode().strip().rstrip("/"), int(raw[pos + 48 : pos + 58])
        if name.startswith("data.tar"):
            return tarfile.open(fileobj=io.BytesIO(raw[pos + 60 : pos + 60 + size]), mode="r:*")
        pos += 60 + size + size % 2
    raise ValueError(f"{deb}: has no data.tar member; download it again")


def _members(tar: tarfile.TarFile) -> Iterator[tuple[str, bytes]]:
    for info in tar:
        if info.isfile():
            yield info.name.removeprefix("./"), tar.extractfile(info).read()


def _read_transcripts(deb: Path, member: str = _TRANSCRIPTS) -> dict[str, str]:
    """``name: text`` lines of core-sounds-<lang>.txt (``;`` starts a comment)."""
    text = dict(_members(_deb_data(deb))).get(member)
    if text is None:
        raise ValueError(f"{deb}: has no {member}; is this the right asterisk-core-sounds package?")
    pairs = (
        line.split(":", 1)
        for line in gzip.decompress(text).decode("utf-8-sig").splitlines()
        if line.strip() and not line.startswith(";") and ":" in line
    )
    return {name.strip(): words.strip() for name, words in pairs}


def _is_speech(name: str, text: str | None) -> bool:
    """False for the silence/ files, tones and sound effects.

    Those have a transcript that is only a ``[description]`` or ``<description>``; a prompt whose
    transcript says a tone plays, ``(simple tone sound plays)``, is left out too.
    """
    if text is None or name.startswith("silence/"):
        return False
    return not (re.fullmatch(r"\[.*\]|<.*>", text) or re.search(r"\([^)]*\btone\b[^)]*\)", text))


def _decode_prompts(
    deb: Path, transcripts: dict[str, str], prefix: str = _PROMPTS
) -> dict[str, tuple[str, np.ndarray]]:
    """id -> (text, int16 samples at 16 kHz) for every spoken prompt in the G.722 package."""
    try:
        from G722 import G722
    except ImportError:
        raise SystemExit("build-corpus needs the G.722 decoder: pip install 'pwn_lib[corpus]'") from None
    prompts = {}
    for member, payload in _members(_deb_data(deb)):
        if not (member.startswith(prefix) and member.endswith(".g722")):
            continue
        name = member[len(prefix) : -len(".g722")]
        if _is_speech(name, transcripts.get(name)):
            pcm = np.asarray(G722(_SAMPLE_RATE, 64_000).decode(payload), dtype=np.int16)
            uid = name.replace("/", "_")
            if uid in prompts:
                raise ValueError(f"{deb}: two prompts map to the id {uid!r}")
            prompts[uid] = (transcripts[name], pcm)
    return prompts


def _fetch_debs(where: Path, debs: Sequence[str] = (AUDIO_DEB, TEXT_DEB)) -> Path:
    """``apt-get download`` the packages (both English ones by default) into ``where``."""
    pins = [f"{deb.split('_')[0]}={deb.split('_')[1]}" for deb in debs]
    where.chmod(0o755)  # apt's unprivileged _apt user must be able to write here
    try:
        subprocess.run(["apt-get", "download", *pins], cwd=where, check=True)
    except (OSError, subprocess.CalledProcessError) as err:
        raise SystemExit(
            f"apt-get download {' '.join(pins)} failed ({err}); download the .deb files "
            "from packages.debian.org and pass --deb-dir"
        ) from None
    return where


def _write_corpus(
    out: Path,
    prompts: dict[str, tuple[str, np.ndarray]],
    sources: dict,
    splits: dict[str, str] | None = None,
    license_md: str = _LICENSE_MD,
) -> dict:
    """Write FLACs, transcripts, split (``splits``, else :func:`split_of`), license; return the new manifest."""
    (out / "wavs").mkdir(parents=True, exist_ok=True)
    files = {}
    for uid, (text, pcm) in tqdm(sorted(prompts.items()), desc="FLAC"):
        if "\t" in text or "\n" in text:
            raise ValueError(f"transcript of {uid!r} contains a tab or newline: {text!r}")
        path = save_audio(out / "wavs" / f"{uid}.flac", pcm, _SAMPLE_RATE)
        files[f"wavs/{uid}.flac"] = {
            "sha256": sha256_file(path),
            "samples": len(pcm),
            "pcm_sha256": hashlib.sha256(pcm.astype("<i2").tobytes()).hexdigest(),
        }
    ids = sorted(prompts)
    (out / "transcripts.tsv").write_text("id\ttext\n" + "".join(f"{i}\t{prompts[i][0]}\n" for i in ids))
    split = splits.get if splits is not None else split_of
    (out / "split.tsv").write_text("id\tsplit\n" + "".join(f"{i}\t{split(i)}\n" for i in ids))
    (out / "LICENSE.md").write_text(license_md)
    seconds = sum(f["samples"] for f in files.values()) / _SAMPLE_RATE
    return {
        "sample_rate": _SAMPLE_RATE,
        "utterances": len(files),
        "seconds": round(seconds, 3),
        "sources": sources,
        "files": files,
    }


def _compare(old: dict, new: dict) -> list[str]:
    """Problems of ``new`` against the committed manifest; FLAC-byte-only differences just warn."""
    problems = [
        f"{deb}: sha256 {new['sources'].get(deb, {}).get('sha256')} != {entry['sha256']}"
        for deb, entry in old["sources"].items()
        if new["sources"].get(deb, {}).get("sha256") != entry["sha256"]
    ]
    missing, extra = sorted(set(old["files"]) - set(new["files"])), sorted(set(new["files"]) - set(old["files"]))
    problems += [f"{f}: in the manifest but not rebuilt" for f in missing]
    problems += [f"{f}: rebuilt but not in the manifest" for f in extra]
    for f in sorted(set(old["files"]) & set(new["files"])):
        if old["files"][f]["pcm_sha256"] != new["files"][f]["pcm_sha256"]:
            problems.append(f"{f}: decoded samples differ from the manifest")
        elif old["files"][f]["sha256"] != new["files"][f]["sha256"]:
            warnings.warn(f"{f}: same samples but different FLAC bytes (another libFLAC version?)", stacklevel=2)
    return problems


def build_corpus(
    deb_dir: str | os.PathLike | None = None,
    out: str | os.PathLike = CORPUS_DIR,
    manifest: str | os.PathLike | None = CORPUS_DIR / "manifest.json",
) -> dict:
    """Rebuild the embedded corpus from the two .deb files and check it against ``manifest``.

    ``deb_dir=None`` fetches the packages with ``apt-get download``. The .deb sha256 is checked before
    anything is decoded; afterwards every FLAC's sample hash must match. ``manifest=None`` skips the
    check and writes a fresh ``out/manifest.json`` (what the maintainers ran once).
    """
    out = Path(out)
    committed = json.loads(Path(manifest).read_text()) if manifest is not None else None
    with tempfile.TemporaryDirectory() as tmp:
        debs = Path(deb_dir) if deb_dir is not None else _fetch_debs(Path(tmp))
        sources = {}
        for deb in (AUDIO_DEB, TEXT_DEB):
            if not (debs / deb).exists():
                raise SystemExit(f"{debs / deb}: missing; pass --deb-dir with both {AUDIO_DEB} and {TEXT_DEB}")
            sources[deb] = {"sha256": sha256_file(debs / deb), "bytes": (debs / deb).stat().st_size}
            if committed is not None and sources[deb]["sha256"] != committed["sources"][deb]["sha256"]:
                raise SystemExit(
                    f"{debs / deb}: sha256 {sources[deb]['sha256']} does not match the manifest's "
                    f"{committed['sources'][deb]['sha256']}; refusing to build from a different package"
                )
        prompts = _decode_prompts(debs / AUDIO_DEB, _read_transcripts(debs / TEXT_DEB))
        fresh = _write_corpus(out, prompts, sources)
    if committed is not None:
        problems = _compare(committed, fresh)
        if problems:
            raise SystemExit("the rebuilt corpus does not match the manifest:\n  " + "\n  ".join(problems))
    (out / "manifest.json").write_text(json.dumps(fresh, indent=1, sort_keys=True) + "\n")
    return fresh


# ---------------------------------------------------------------------------------------------
# The other voices (data/speakers/<voice>): a few minutes of each of four more Debian packages
# ---------------------------------------------------------------------------------------------

# voice -> what its Debian package and copyright file say. The speaker and license are copied from
# /usr/share/doc/asterisk-core-sounds-<lang>-g722/copyright (its "Files: <lang>-*" stanza; for es the
# "Files: *" stanza, whose prompts folder is es_MX_f_Allison: the same speaker as the English corpus).
VOICE_SOURCES: dict[str, dict[str, str]] = {
    "es": {
        "folder": "es_MX_f_Allison",
        "language": "Spanish (Mexico)",
        "speaker": "Allison Smith (the English corpus's speaker; prompts folder es_MX_f_Allison)",
        "copyright": "2003-2010, Allison Smith; financial contributions by Digium, Inc.",
        "license": "CC-BY-SA-3.0",
        "license_url": "https://creativecommons.org/licenses/by-sa/3.0/",
    },
    "fr": {
        "folder": "fr_CA_f_June",
        "language": "French (Canada)",
        "speaker": "June Wallack",
        "copyright": "2006-2008, June Wallack; translated by Clod Patry, Kristopher Lalletti and June Wallack",
        "license": "CC-BY-SA-3.0",
        "license_url": "https://creativecommons.org/licenses/by-sa/3.0/",
    },
    "it": {
        "folder": "it_IT_m_Carlo",
        "language": "Italian (Italy)",
        "speaker": "Carlo Flora",
        "copyright": "2012 Carlo Flora; translated by Silvia Petrin",
        "license": "CC-BY-3.0",
        "license_url": "https://creativecommons.org/licenses/by/3.0/",
    },
    "ru": {
        "folder": "ru_RU_f_IvrvoiceRU",
        "language": "Russian (Russia)",
        "speaker": "not named; provided by Maxim Topal (ivrvoice.ru), prompts folder ru_RU_f_IvrvoiceRU",
        "copyright": "2010, Maxim (Maxim Topal)",
        "license": "CC-BY-3.0",
        "license_url": "https://creativecommons.org/licenses/by/3.0/",
    },
}
VOICE_VERSION = "1.6.1-1"
# Seconds of audio kept per split and voice (FLAC of these voices takes about 1.2 MB a minute, and all
# four must fit in about 14 MB), and the fewest prompts the test split may have.
VOICE_SECONDS = {"train": 108.0, "valid": 18.0, "test": 18.0}
VOICE_MIN_TEST = 8
VOICE_MAX_PROMPT = 6.0  # seconds: longer prompts are left out, so no split overshoots by much

_VOICE_LICENSE = """\
# Voice `{voice}`: Asterisk core prompts in {language}

The FLAC files in `wavs/` and the transcripts in `transcripts.tsv` are a few minutes of the Asterisk
PBX core prompts in {language}, from the Debian package `{audio}` version {version}
(G.722 audio, 16 kHz) and, for the transcripts, the Debian package `{text}` version {version}.
The sha256 of both .deb files is in `manifest.json`.

- Speaker, as the package's copyright file states it: **{speaker}**
- Copyright: {copyright}
- License: **{license}**: <{license_url}>

Changes made: the G.722 streams were decoded to 16 kHz 16-bit PCM and stored as FLAC. Only spoken
prompts (the English corpus's speech filter) of at most {max_prompt:.0f} s were kept, and of those the
first by name in each split (`split.tsv`, fixed by file) until the split holds {train:.0f} s of train,
{valid:.0f} s of valid and {test:.0f} s of test audio and at least 8 test prompts. The slash in prompt names
became an underscore. `python -m pwn_lib.corpus_tools build-voices {voice}` redoes all of this from the .deb files.

This folder (audio, transcripts, split) is licensed {license} as a whole; the rest of the repository
keeps its own license.
"""


def voice_debs(voice: str) -> tuple[str, str]:
    """The (G.722 audio, transcripts) .deb file names of ``voice``."""
    return (
        f"asterisk-core-sounds-{voice}-g722_{VOICE_VERSION}_all.deb",
        f"asterisk-core-sounds-{voice}_{VOICE_VERSION}_all.deb",
    )


def _voice_split(uid: str) -> str:
    """Deterministic ~80/10/10 split from the sha256 of the id."""
    bucket = int(hashlib.sha256(uid.encode()).hexdigest()[:8], 16) % 10
    return "train" if bucket < 8 else "valid" if bucket < 9 else "test"


def choose_prompts(samples: dict[str, int], sample_rate: int = _SAMPLE_RATE) -> dict[str, str]:
    """id -> split of the prompts kept: by id order, each split until it holds its ``VOICE_SECONDS``.

    ``samples`` maps every spoken prompt's id to its length; prompts over ``VOICE_MAX_PROMPT`` seconds are
    skipped, and the test split keeps going until it holds at least ``VOICE_MIN_TEST`` prompts too.
    """
    kept, seconds = {}, dict.fromkeys(VOICE_SECONDS, 0.0)
    for uid in sorted(samples):
        if samples[uid] > VOICE_MAX_PROMPT * sample_rate:
            continue
        split = _voice_split(uid)
        count = sum(s == split for s in kept.values())
        if seconds[split] >= VOICE_SECONDS[split] and (split != "test" or count >= VOICE_MIN_TEST):
            continue
        kept[uid], seconds[split] = split, seconds[split] + samples[uid] / sample_rate
    return kept


def build_voice(
    voice: str,
    deb_dir: str | os.PathLike | None = None,
    out: str | os.PathLike | None = None,
    manifest: str | os.PathLike | None = "committed",
) -> dict:
    """Rebuild ``data/speakers/<voice>`` from its two .deb files and check it against ``manifest``.

    As :func:`build_corpus`: the .deb sha256 is checked before anything is decoded, and every FLAC's
    decoded samples after; a mismatch refuses. ``manifest="committed"`` is the committed
    ``data/speakers/<voice>/manifest.json`` (read before anything is written); ``manifest=None`` writes a
    fresh one (what the maintainers ran once).
    """
    if voice not in VOICE_SOURCES:
        raise SystemExit(f"voice {voice!r}: choose one of {sorted(VOICE_SOURCES)}")
    out = Path(out) if out is not None else SPEAKERS_DIR / voice
    if manifest == "committed":
        manifest = SPEAKERS_DIR / voice / "manifest.json"
    committed = json.loads(Path(manifest).read_text()) if manifest is not None else None
    audio_deb, text_deb = voice_debs(voice)
    with tempfile.TemporaryDirectory() as tmp:
        debs = Path(deb_dir) if deb_dir is not None else _fetch_debs(Path(tmp), (audio_deb, text_deb))
        sources = {}
        for deb in (audio_deb, text_deb):
            if not (debs / deb).exists():
                raise SystemExit(f"{debs / deb}: missing; pass --deb-dir with both {audio_deb} and {text_deb}")
            sources[deb] = {"sha256": sha256_file(debs / deb), "bytes": (debs / deb).stat().st_size}
            if committed is not None and sources[deb]["sha256"] != committed["sources"][deb]["sha256"]:
                raise SystemExit(
                    f"{debs / deb}: sha256 {sources[deb]['sha256']} does not match the manifest's "
                    f"{committed['sources'][deb]['sha256']}; refusing to build from a different package"
                )
        transcripts = _read_transcripts(
            debs / text_deb, f"usr/share/doc/asterisk-core-sounds-{voice}/core-sounds-{voice}.txt.gz"
        )
        prompts = _decode_prompts(
            debs / audio_deb, transcripts, f"usr/share/asterisk/sounds/{VOICE_SOURCES[voice]['folder']}/"
        )
        splits = choose_prompts({uid: len(pcm) for uid, (_, pcm) in prompts.items()})
        if out.exists():
            for old in (out / "wavs").glob("*.flac"):
                old.unlink()
        license_md = _VOICE_LICENSE.format(
            voice=voice,
            audio=audio_deb.split("_")[0],
            text=text_deb.split("_")[0],
            version=VOICE_VERSION,
            max_prompt=VOICE_MAX_PROMPT,
            **VOICE_SOURCES[voice],
            **VOICE_SECONDS,
        )
        fresh = _write_corpus(out, {u: prompts[u] for u in splits}, sources, splits, license_md)
    fresh |= {"voice": voice, "speaker_id": VOICES.index(voice), "package": audio_deb.split("_")[0]}
    fresh |= {"version": VOICE_VERSION, "speaker": VOICE_SOURCES[voice]["speaker"]}
    fresh |= {"license": VOICE_SOURCES[voice]["license"]}
    if committed is not None:
        problems = _compare(committed, fresh)
        if problems:
            raise SystemExit(f"the rebuilt voice {voice} does not match the manifest:\n  " + "\n  ".join(problems))
    (out / "manifest.json").write_text(json.dumps(fresh, indent=1, sort_keys=True) + "\n")
    return fresh


def _summary(manifest: dict, out: Path) -> str:
    mb = sum((out / f).stat().st_size for f in manifest["files"]) / 1e6
    return f"{manifest['utterances']} utterances, {manifest['seconds'] / 60:.1f} min, {mb:.1f} MB of FLAC in {out}"


# ---------------------------------------------------------------------------------------------
# Phone targets: every transcript phonemised once with espeak-ng (data/corpus/phones.tsv)
# ---------------------------------------------------------------------------------------------

ESPEAK_COMMAND = ("espeak-ng", "-q", "-x", "--sep=_", "-v", "en-us")

# espeak-ng (en-us, ``-x`` mnemonics, stress removed) -> ARPAbet. Variants with a trailing digit
# or '#' fall back to their base symbol (see :func:`espeak_to_arpabet`).
ESPEAK_TO_ARPABET: dict[str, tuple[str, ...]] = {
    "@": ("AH",),
    "@-": ("AH",),
    "@L": ("AH", "L"),
    "3": ("ER",),
    "3:": ("ER",),
    "a": ("AE",),
    "aa": ("AE",),
    "a#": ("AH",),
    "A:": ("AA",),
    "A@": ("AA", "R"),
    "0": ("AA",),
    "O": ("AO",),
    "O:": ("AO",),
    "O@": ("AO", "R"),
    "o@": ("AO", "R"),
    "V": ("AH",),
    "VR": ("AH", "R"),
    "E": ("EH",),
    "e@": ("EH", "R"),
    "I": ("IH",),
    "IR": ("IH", "R"),
    "i": ("IY",),
    "i:": ("IY",),
    "i@": ("IH", "R"),
    "U": ("UH",),
    "u:": ("UW",),
    "U@": ("UH", "R"),
    "aI": ("AY",),
    "aU": ("AW",),
    "eI": ("EY",),
    "OI": ("OY",),
    "oU": ("OW",),
    "aI@": ("AY", "ER"),
    "aI3": ("AY", "ER"),
    "aU@": ("AW", "ER"),
    "p": ("P",),
    "b": ("B",),
    "t": ("T",),
    "d": ("D",),
    "k": ("K",),
    "g": ("G",),
    "f": ("F",),
    "v": ("V",),
    "T": ("TH",),
    "D": ("DH",),
    "s": ("S",),
    "z": ("Z",),
    "S": ("SH",),
    "Z": ("ZH",),
    "h": ("HH",),
    "m": ("M",),
    "n": ("N",),
    "N": ("NG",),
    "l": ("L",),
    "r": ("R",),
    "w": ("W",),
    "j": ("Y",),
    "tS": ("CH",),
    "dZ": ("JH",),
    "*": ("T",),
    "?": ("T",),
    "x": ("K",),
    "n-": ("N",),
    "m-": ("M",),
    "l-": ("L",),
    "r-": ("R",),
}
_STRESS = str.maketrans("", "", "',%=!")  # stress, and '!' (espeak's pause/emphasis prefix)
_NOT_PHONES = frozenset({"", ":", "::", ";", "-"})  # lengthening, linking and pause markers


def espeak_to_arpabet(symbol: str) -> tuple[str, ...]:
    """Map one espeak-ng ``-x`` phoneme (stress marks allowed) to ARPAbet phones.

    Unknown symbols raise ``KeyError`` naming the symbol: add it to :data:`ESPEAK_TO_ARPABET`.
    """
    s = symbol.translate(_STRESS)
    if s in _NOT_PHONES:
        return ()
    candidates = (s, s.rstrip("0123456789"), s.rstrip("0123456789#"), s.replace("#", "").rstrip("0123456789"))
    for key in candidates:
        if key in ESPEAK_TO_ARPABET:
            return ESPEAK_TO_ARPABET[key]
    raise KeyError(f"espeak phoneme {symbol!r} has no ARPAbet mapping; add it to corpus_tools.ESPEAK_TO_ARPABET")


def phonemize(text: str) -> list[str]:
    """Transcript -> ARPAbet phones via the espeak-ng binary (build time only)."""
    if shutil.which(ESPEAK_COMMAND[0]) is None:
        raise RuntimeError(
            "espeak-ng is not installed; `apt-get install espeak-ng` (only needed to rebuild "
            f"{TARGETS_PATH}, which is committed)"
        )
    out = subprocess.run([*ESPEAK_COMMAND, text], check=True, capture_output=True, text=True).stdout
    phones: list[str] = []
    for word in out.split():
        for symbol in word.split("_"):
            for phone in espeak_to_arpabet(symbol):
                if not (phone == "R" and phones[-1:] == ["R"]):  # "U@" + "r" in "your": one R
                    phones.append(phone)
    return phones


def build_targets(path: Path = TARGETS_PATH) -> dict[str, list[str]]:
    """Phonemise every corpus transcript and write ``id<TAB>phones`` to ``path``."""
    targets = {u.id: phonemize(u.text) for u in load_corpus("all")}
    Path(path).write_text("".join(f"{uid}\t{' '.join(p)}\n" for uid, p in sorted(targets.items())))
    return targets


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pwn_lib.corpus_tools", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build-corpus", help="rebuild data/corpus from the Debian packages")
    build.add_argument(
        "--deb-dir", type=Path, help=f"folder holding {AUDIO_DEB} and {TEXT_DEB} (default: apt-get download them)"
    )
    build.add_argument("--out", type=Path, default=CORPUS_DIR, help="output folder (default: %(default)s)")
    build.add_argument(
        "--manifest",
        type=Path,
        default=CORPUS_DIR / "manifest.json",
        help="manifest to check against (default: %(default)s)",
    )
    build.add_argument(
        "--write-manifest", action="store_true", help="skip the check and write a fresh manifest (maintainers only)"
    )
    voices = commands.add_parser("build-voices", help="rebuild data/speakers/<voice> from the Debian packages")
    voices.add_argument("voices", nargs="*", default=sorted(VOICE_SOURCES), help="default: all of %(default)s")
    voices.add_argument(
        "--deb-dir", type=Path, help="folder holding the voices' .deb files (default: apt-get download them)"
    )
    voices.add_argument("--out", type=Path, default=SPEAKERS_DIR, help="parent folder (default: %(default)s)")
    voices.add_argument(
        "--write-manifest", action="store_true", help="skip the check and write fresh manifests (maintainers only)"
    )
    commands.add_parser("build-targets", help=f"phonemise the corpus transcripts with espeak-ng into {TARGETS_PATH}")
    lj = commands.add_parser("download-ljspeech", help="download, verify and extract LJSpeech-1.1 (2.6 GB)")
    lj.add_argument("--dest", type=Path, default=DATA_DIR, help="destination folder (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.command == "build-corpus":
        manifest = None if args.write_manifest else args.manifest
        print(_summary(build_corpus(args.deb_dir, args.out, manifest), args.out))
    elif args.command == "build-voices":
        for voice in args.voices:
            out = args.out / voice
            built = build_voice(voice, args.deb_dir, out, None if args.write_manifest else "committed")
            print(f"{voice}: {_summary(built, out)}")
    elif args.command == "build-targets":
        print(f"wrote {len(build_targets())} phone sequences to {TARGETS_PATH}")
    else:
        print(download_ljspeech(args.dest))


if __name__ == "__main__":
    main(sys.argv[1:])


__all__ = [
    "AUDIO_DEB",
    "VOICE_SECONDS",
    "VOICE_SOURCES",
    "ESPEAK_TO_ARPABET",
    "TEXT_DEB",
    "DownloadError",
    "build_corpus",
    "build_targets",
    "build_voice",
    "choose_prompts",
    "download_ljspeech",
    "espeak_to_arpabet",
    "main",
    "phonemize",
    "sha256_file",
    "split_of",
    "voice_debs",
]
