"""The four extra voices (data/speakers), load_voices, build-voices and a multi-speaker teacher on their windows."""

from __future__ import annotations

import gzip
import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from pwn_lib.audio import quantize
from pwn_lib.config import AudioConfig
from pwn_lib.corpus_tools import VOICE_MIN_TEST, VOICE_SOURCES, build_voice, choose_prompts, main, voice_debs
from pwn_lib.data import SPEAKERS_DIR, SPLITS, VOICES, AudioWindows, corpus_split, load_voices
from pwn_lib.integrity import IntegrityError
from pwn_lib.wavenet import build_teacher, teacher_loss
from tests.test_data import deb

EXTRA = ("es", "fr", "it", "ru")
# sha256 of the Debian bookworm packages, version 1.6.1-1, as `apt-cache show` lists them
PACKAGE_SHA256 = {
    "es": "e4e3b4281057d3b81b779298fd6be705f57411513955c518eed1bcaabbd615b8",
    "fr": "7add61d5e42279ecff1bbdf842a5a946ac3644fac9a0fe44384731aa7270c8e0",
    "it": "46b4cf7afc508a5fcfc051b7ea233251c0d195dd4ef83cc4b7facb4c6429b016",
    "ru": "673b4238a6b8269960f055d868c6a11083f7a0d00979167cb01554046b48ed9b",
}


@pytest.mark.parametrize("voice", EXTRA)
def test_committed_voice_names_its_package_license_and_speaker(voice):
    root = SPEAKERS_DIR / voice
    manifest = json.loads((root / "manifest.json").read_text())
    audio_deb, text_deb = voice_debs(voice)
    assert manifest["sources"][audio_deb]["sha256"] == PACKAGE_SHA256[voice]
    assert set(manifest["sources"]) == {audio_deb, text_deb}
    assert manifest["speaker_id"] == VOICES.index(voice)
    license_md = (root / "LICENSE.md").read_text()
    assert VOICE_SOURCES[voice]["license"] in license_md and VOICE_SOURCES[voice]["speaker"] in license_md
    split = corpus_split(root)
    assert set(split) == {f[len("wavs/") : -len(".flac")] for f in manifest["files"]}
    counts = Counter(split.values())
    assert counts["test"] >= VOICE_MIN_TEST and counts["valid"] >= 1 and counts["train"] > counts["test"]


def test_voices_fit_the_size_budget():
    flac = sum(p.stat().st_size for p in SPEAKERS_DIR.rglob("*.flac"))
    assert 8e6 < flac < 14e6


def test_load_voices_gives_five_speakers_with_fixed_ids():
    for split in SPLITS:
        utterances = load_voices(split)
        assert sorted({u.speaker for u in utterances}) == [0, 1, 2, 3, 4]
        for voice in EXTRA:
            ids = {u.id for u in utterances if u.speaker == VOICES.index(voice)}
            assert ids == {i for i, s in corpus_split(SPEAKERS_DIR / voice).items() if s == split}
    (fr,) = {u.speaker for u in load_voices("test", voices=("fr",))}
    assert fr == VOICES.index("fr") == 2
    with pytest.raises(ValueError, match="unknown"):
        load_voices(voices=("de",))


def test_load_voices_refuses_a_tampered_flac(tmp_path):
    shutil.copytree(SPEAKERS_DIR / "it", tmp_path / "it")
    first = sorted((tmp_path / "it" / "wavs").iterdir())[0]
    first.write_bytes(first.read_bytes()[:-1] + bytes([first.read_bytes()[-1] ^ 1]))
    with pytest.raises(IntegrityError, match=rf"voice it: .*{first.name}.*build-voices"):
        load_voices("all", voices=("en", "it"), speakers_root=tmp_path)
    assert len(load_voices("test", voices=("es",), speakers_root=SPEAKERS_DIR)) >= VOICE_MIN_TEST


def test_choose_prompts_is_deterministic_and_fills_each_split():
    samples = {f"p{i:03d}": 16_000 * (1 + i % 5) for i in range(400)}
    chosen = choose_prompts(samples)
    assert chosen == choose_prompts(dict(reversed(samples.items())))
    seconds = Counter()
    for uid, split in chosen.items():
        seconds[split] += samples[uid] / 16_000
    assert 108 <= seconds["train"] < 114 and 18 <= seconds["valid"] < 24 and seconds["test"] >= 18
    assert sum(s == "test" for s in chosen.values()) >= VOICE_MIN_TEST
    assert choose_prompts({"long": 16_000 * 7}) == {}


@pytest.fixture
def voice_debs_dir(tmp_path) -> Path:
    g722 = pytest.importorskip("G722")
    rng = np.random.default_rng(0)
    names = [f"prompt-{i:02d}" for i in range(12)] + ["beep", "silence/1"]
    texts = {n: f"frase {n}" for n in names[:12]} | {"beep": "[un bip]", "silence/1": "silencio"}
    root = f"usr/share/asterisk/sounds/{VOICE_SOURCES['es']['folder']}/"
    audio = {
        f"{root}{n}.g722": g722.G722(16_000, 64_000).encode(
            (quantize(0.1 * rng.standard_normal(3_200).astype(np.float32)) - 2**15).astype(np.int16)
        )
        for n in names
    }
    transcripts = "\ufeff; Core Asterisk Sounds in Spanish\n\n" + "".join(f"{n}: {t}\n" for n, t in texts.items())
    audio_deb, text_deb = voice_debs("es")
    (tmp_path / "debs").mkdir()
    (tmp_path / "debs" / audio_deb).write_bytes(deb(audio))
    doc = "usr/share/doc/asterisk-core-sounds-es/core-sounds-es.txt.gz"
    (tmp_path / "debs" / text_deb).write_bytes(deb({doc: gzip.compress(transcripts.encode())}))
    return tmp_path / "debs"


def test_build_voices_checks_package_and_sample_hashes(tmp_path, voice_debs_dir, capsys):
    main(["build-voices", "es", "--deb-dir", str(voice_debs_dir), "--out", str(tmp_path / "v"), "--write-manifest"])
    assert "12 utterances" in capsys.readouterr().out
    out = tmp_path / "v" / "es"
    assert "CC-BY-SA-3.0" in (out / "LICENSE.md").read_text()
    assert "beep" not in corpus_split(out) and "silence_1" not in corpus_split(out)
    committed = out / "manifest.json"
    build_voice("es", voice_debs_dir, tmp_path / "again", manifest=committed)
    assert (tmp_path / "again" / "split.tsv").read_bytes() == (out / "split.tsv").read_bytes()
    manifest = json.loads(committed.read_text())
    manifest["files"]["wavs/prompt-03.flac"]["pcm_sha256"] = "0" * 64
    committed.write_text(json.dumps(manifest))
    with pytest.raises(SystemExit, match="wavs/prompt-03.flac: decoded samples differ from the manifest"):
        build_voice("es", voice_debs_dir, tmp_path / "third", manifest=committed)
    audio_deb = voice_debs("es")[0]
    manifest["sources"][audio_deb]["sha256"] = "f" * 64
    committed.write_text(json.dumps(manifest))
    with pytest.raises(SystemExit, match=rf"{audio_deb}: sha256 .* does not match the manifest's ffff"):
        build_voice("es", voice_debs_dir, tmp_path / "fourth", manifest=committed)
    assert not (tmp_path / "fourth").exists()


def test_a_tiny_five_speaker_teacher_trains_on_the_voice_windows():
    torch.manual_seed(0)
    utterances = [u for u in load_voices("test") if u.seconds >= 0.1]
    windows = AudioWindows(utterances, 1_024, AudioConfig(), seed=0, length=8)
    batch = torch.utils.data.default_collate([windows[i] for i in range(4)])
    assert batch["speaker"].shape == (4,) and batch["speaker"].dtype == torch.long
    model = build_teacher("tiny", n_speakers=len(VOICES))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(6):
        loss, _ = teacher_loss(model, batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert model.speaker_embedding.weight.grad[batch["speaker"]].abs().sum() > 0
    other = dict(batch, speaker=(batch["speaker"] + 1) % len(VOICES))
    assert teacher_loss(model, other)[0].item() != pytest.approx(teacher_loss(model, batch)[0].item())


def test_the_speakers_recipe_selects_the_five_voices_and_needs_a_speaker_per_voice(tmp_path):
    from pwn_lib.config import REPO_ROOT, RecipeError
    from pwn_lib.train import build_parser, resolve

    recipe = REPO_ROOT / "configs" / "teacher_speakers.yaml"
    resolved = resolve(build_parser().parse_args(["teacher", "--config", str(recipe), "--preset", "tiny"]))
    assert resolved["train"].voices == VOICES and resolved["model"].n_speakers == len(VOICES)
    fewer = tmp_path / "fewer.yaml"
    fewer.write_text(recipe.read_text().replace("n_speakers: 5 ", "n_speakers: 2 "))
    with pytest.raises(RecipeError, match="n_speakers >= 5"):
        resolve(build_parser().parse_args(["teacher", "--config", str(fewer)]))
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text(recipe.read_text().replace("[en, es, fr, it, ru]", "[en, de]"))
    with pytest.raises(RecipeError, match="train.voices"):
        resolve(build_parser().parse_args(["teacher", "--config", str(unknown)]))


def test_a_five_speaker_student_distils_with_the_speaker_ids_of_the_batch():
    from pwn_lib.config import DistillLoss
    from pwn_lib.losses import recipe_terms
    from pwn_lib.student import build_student

    torch.manual_seed(0)
    utterances = [u for u in load_voices("test") if u.seconds >= 0.1]
    batch = torch.utils.data.default_collate([AudioWindows(utterances, 1_024, seed=1, length=4)[i] for i in range(4)])
    teacher = build_teacher("tiny", n_speakers=len(VOICES))
    with torch.no_grad():
        teacher.speaker_embedding.weight.mul_(20)  # speakers the teacher tells apart
    student = build_student("tiny", n_speakers=len(VOICES))
    recipe = DistillLoss(power_weight=0.0, stft_weight=0.0, perceptual_weight=0.0)
    kl = recipe_terms(recipe, student, teacher, batch, generator=torch.Generator().manual_seed(0))["kl"]
    kl.backward()
    assert torch.isfinite(kl) and student.speaker_embedding.weight.grad[batch["speaker"]].abs().sum() > 0
    other = dict(batch, speaker=(batch["speaker"] + 1) % len(VOICES))
    kl_other = recipe_terms(recipe, student, teacher, other, generator=torch.Generator().manual_seed(0))["kl"]
    assert kl_other.item() != pytest.approx(kl.item())


def test_a_single_speaker_recipe_takes_one_voice_and_no_speaker_ids(tmp_path):
    """configs/teacher_voice_<voice>.yaml: n_speakers 0 with exactly one voice resolves; two voices without
    speaker ids are refused naming the fix."""
    from pwn_lib.config import REPO_ROOT, RecipeError
    from pwn_lib.train import build_parser, resolve

    for voice in EXTRA:
        recipe = REPO_ROOT / "configs" / f"teacher_voice_{voice}.yaml"
        resolved = resolve(build_parser().parse_args(["teacher", "--config", str(recipe)]))
        assert resolved["train"].voices == (voice,) and resolved["model"].n_speakers == 0
    two = tmp_path / "two.yaml"
    two.write_text(recipe.read_text().replace(f"voices: [{voice}]", "voices: [es, fr]"))
    with pytest.raises(RecipeError, match="single-speaker model"):
        resolve(build_parser().parse_args(["teacher", "--config", str(two)]))


def test_heldout_windows_of_a_voice_come_from_its_test_split_with_its_id():
    from pwn_lib.heldout import heldout_windows

    test_audio = {u.id: u.audio for u in load_voices("test", ["fr"])}
    windows = heldout_windows(AudioConfig(), window=2_048, count=4, voice="fr")
    assert {int(w["speaker"]) for w in windows} == {VOICES.index("fr")}
    for w in windows:  # every window is a stretch of some fr test utterance (after 16-bit quantisation)
        x = w["audio"].numpy().ravel()
        assert any(
            len(a) >= len(x)
            and np.abs(np.lib.stride_tricks.sliding_window_view(a, len(x))[::256] - x).max(1).min() < 1e-4
            for a in test_audio.values()
        )
    english = heldout_windows(AudioConfig(), window=2_048, count=4)
    assert {int(w["speaker"]) for w in english} == {0}


def test_the_shipped_five_voice_teacher_reproduces_each_voices_heldout_nll():
    """data/checkpoints/teacher_speakers: English's and Russian's held-out NLL as recorded (the other voices are
    the same code path), each with its speaker id; Russian windows scored as English (id 0) cost more bits, so the
    id is used."""
    from pwn_lib.config import AUDIO_PRESETS, CHECKPOINT_DIR
    from pwn_lib.heldout import heldout_windows, teacher_nll_bits
    from pwn_lib.wavenet import WaveNet

    directory = CHECKPOINT_DIR / "teacher_speakers"
    recorded = json.loads((directory / "metrics.json").read_text())
    teacher = WaveNet.from_checkpoint(directory)
    assert teacher.cfg.n_speakers == len(VOICES)
    assert set(recorded) >= {f"heldout_nll_bits_{voice}" for voice in VOICES}
    for voice in ("en", "ru"):
        windows = heldout_windows(AUDIO_PRESETS["course"], voice=voice)
        nll = teacher_nll_bits(teacher, windows)
        assert nll == pytest.approx(recorded[f"heldout_nll_bits_{voice}"], abs=0.01), voice
    as_english = [dict(w, speaker=torch.tensor(0)) for w in heldout_windows(AUDIO_PRESETS["course"], voice="ru")]
    assert teacher_nll_bits(teacher, as_english) > recorded["heldout_nll_bits_ru"] + 0.005


def test_the_shipped_five_voice_student_reproduces_each_voices_heldout_kl():
    """data/checkpoints/student_speakers: English's and Russian's held-out KL to the five-voice teacher as recorded
    (4 test windows each, fixed noise seed); Russian windows distilled with English's id (0) are further from the
    teacher, so the student uses the id."""
    from pwn_lib.config import AUDIO_PRESETS, CHECKPOINT_DIR
    from pwn_lib.heldout import heldout_kl, heldout_windows
    from pwn_lib.student import IAFStudent
    from pwn_lib.wavenet import WaveNet

    directory = CHECKPOINT_DIR / "student_speakers"
    recorded = json.loads((directory / "metrics.json").read_text())
    student = IAFStudent.from_checkpoint(directory)
    teacher = WaveNet.from_checkpoint(CHECKPOINT_DIR / "teacher_speakers")
    assert student.cfg.n_speakers == len(VOICES)
    assert set(recorded) >= {f"heldout_kl_{voice}" for voice in VOICES}
    for voice in ("en", "ru"):
        windows = heldout_windows(AUDIO_PRESETS["course"], count=4, voice=voice)
        assert heldout_kl(student, teacher, windows) == pytest.approx(recorded[f"heldout_kl_{voice}"], abs=1e-3)
    as_english = [
        dict(w, speaker=torch.tensor(0)) for w in heldout_windows(AUDIO_PRESETS["course"], count=4, voice="ru")
    ]
    assert heldout_kl(student, teacher, as_english) > recorded["heldout_kl_ru"] + 0.02
