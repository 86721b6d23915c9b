"""pwn_lib.vocoders: one way from a checkpoint to audio, and every caller renders through it to the same bits."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from pwn_lib import _fast, heldout, vocoders
from pwn_lib import evaluate as ev
from pwn_lib.ablation import ABLATION_PRESETS, Arm, example_utterance, render_examples
from pwn_lib.audio import load_audio, log_mel_distance, save_audio
from pwn_lib.config import AUDIO_PRESETS, CHECKPOINT_DIR, DistillLoss
from pwn_lib.data import load_corpus
from pwn_lib.listening import build
from pwn_lib.student import IAFStudent, build_student
from pwn_lib.wavenet import WaveNet, build_teacher

AUDIO = AUDIO_PRESETS["course"]
HOP = AUDIO.hop_length
SHIPPED = {"teacher": CHECKPOINT_DIR / "teacher_course", "student": CHECKPOINT_DIR / "student_course"}


def tiny_checkpoint(kind: str, directory: Path, sampling: dict | None = None) -> Path:
    """A tiny randomly initialised teacher or student saved as a checkpoint (config.json ``sampling`` if given)."""
    torch.manual_seed(0)
    model = build_teacher("tiny") if kind == "teacher" else build_student("tiny")
    model.save(directory)
    if sampling is not None:
        config = json.loads((directory / "config.json").read_text())
        (directory / "config.json").write_text(json.dumps({**config, "sampling": sampling}))
    return directory


def mel_of(seconds: float, utterance: int = 0) -> torch.Tensor:
    """(1, n_mels, F) log-mel of the start of a test utterance, whole hops."""
    clip = vocoders.crop_to_hops(ev.pick_utterances("test")[utterance].audio, HOP, int(seconds * AUDIO.sample_rate))
    return vocoders.mel_batch([clip], AUDIO)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """The shipped teacher and student, and a tiny random one of each."""
    root = tmp_path_factory.mktemp("tiny")
    tiny = {f"tiny {kind}": tiny_checkpoint(kind, root / kind) for kind in ("teacher", "student")}
    return {**{f"shipped {k}": v for k, v in SHIPPED.items()}, **tiny}


# ----------------------------------------------------------------------------- load


def test_load_lets_config_json_pick_the_class(checkpoints, tmp_path):
    for name, directory in checkpoints.items():
        vocoder = vocoders.load(directory)
        kind = name.split()[-1]
        assert vocoder.kind == kind and vocoder.name == kind and vocoder.path == directory
        assert type(vocoder.model) is {"teacher": WaveNet, "student": IAFStudent}[kind]
        assert not vocoder.model.training and vocoder.audio == AUDIO
    assert vocoders.load(SHIPPED["student"], name="row").name == "row"
    with pytest.raises(ValueError, match="kind 'phone_classifier'.*only \\['student', 'teacher'\\]"):
        vocoders.load(CHECKPOINT_DIR / "phones_course")
    with pytest.raises(FileNotFoundError, match="not a checkpoint directory \\(no config.json\\)"):
        vocoders.load(tmp_path)


def test_a_model_object_is_a_vocoder_of_its_class():
    teacher, student = build_teacher("tiny"), build_student("tiny")
    assert vocoders.as_vocoder(teacher).kind == "teacher" and vocoders.as_vocoder(student, "arm").name == "arm"
    assert vocoders.as_vocoder(teacher).sampling == {} and vocoders.as_vocoder(teacher).temperature == 1.0
    with pytest.raises(TypeError, match="Linear does not render audio"):
        vocoders.as_vocoder(torch.nn.Linear(1, 1))


def test_teacher_samples_at_its_recorded_temperature_unless_overridden(tmp_path):
    teacher = tiny_checkpoint("teacher", tmp_path / "t", {"temperature": 0.5})
    assert vocoders.load(teacher).sampling == {"temperature": 0.5}
    assert vocoders.load(teacher, temperature=0.9).temperature == 0.9
    assert (
        vocoders.load(SHIPPED["teacher"]).temperature
        == json.loads((SHIPPED["teacher"] / "config.json").read_text())["sampling"]["temperature"]
    )
    assert vocoders.load(tiny_checkpoint("teacher", tmp_path / "plain")).sampling == {}
    mel = mel_of(0.05)
    vocoder = vocoders.load(teacher)
    recorded = vocoders.render(vocoder, mel, seed=3)
    by_hand = vocoder.model.generate(
        mel,
        generator=torch.Generator().manual_seed(3),
        progress=False,
        compiled=_fast.library() is not None,
        temperature=0.5,
    )
    assert torch.equal(recorded, by_hand)
    assert torch.equal(
        vocoders.render(vocoder, mel, seed=3, temperature=1.0),
        vocoders.render(vocoders.load(teacher, temperature=1.0), mel, seed=3),
    )
    assert (recorded - vocoders.render(vocoder, mel, seed=3, temperature=1.0)).abs().max() > 1e-3


def test_sampling_options_are_checked(tmp_path):
    with pytest.raises(ValueError, match="only a teacher's 'temperature'"):
        vocoders.load(tiny_checkpoint("teacher", tmp_path / "t", {"top_k": 3}))
    with pytest.raises(ValueError, match="only a teacher's 'temperature'"):
        vocoders.load(tiny_checkpoint("student", tmp_path / "s", {"temperature": 0.7}))
    with pytest.raises(ValueError, match="applies to teacher checkpoints"):
        vocoders.load(SHIPPED["student"], temperature=0.7)
    with pytest.raises(ValueError, match="the student has none"):
        vocoders.render(build_student("tiny"), mel_of(0.05), temperature=0.7)


# ----------------------------------------------------------------------------- cropping and batching


def test_clips_are_cropped_to_whole_hops():
    x = np.arange(1_000, dtype=np.float64)
    for max_samples, length in ((None, 768), (600, 512), (256, 256), (100, 0), (5_000, 768)):
        cropped = vocoders.crop_to_hops(x, HOP, max_samples)
        assert cropped.dtype == np.float32 and cropped.flags["C_CONTIGUOUS"] and len(cropped) == length
        assert np.array_equal(cropped, x[:length].astype(np.float32))
    assert vocoders.hop_samples(0.5, AUDIO) == 7_936 and vocoders.hop_samples(1.0, AUDIO) == 15_872


def test_mel_batch_pads_with_the_log_floor():
    short, long = np.full(512, 0.1, dtype=np.float32), np.full(1_024, 0.1, dtype=np.float32)
    mel = vocoders.mel_batch([short, long], AUDIO)
    assert mel.shape == (2, AUDIO.n_mels, 4)
    assert torch.equal(mel[1], vocoders.mel_batch([long], AUDIO)[0])
    assert torch.all(mel[0, :, 2:] == np.log(AUDIO.log_mel_floor))


def test_render_clips_batches_with_one_seed_per_batch():
    student = build_student("tiny").eval()
    clips = [np.full(n, 0.05, dtype=np.float32) for n in (512, 768, 1_024)]
    out = vocoders.render_clips(student, clips, AUDIO, batch_size=2, seed=7)
    assert [len(x) for x in out] == [512, 768, 1_024]
    second = vocoders.render(student, vocoders.mel_batch(clips[2:], AUDIO), seed=8)
    assert np.array_equal(out[2], second[0, 0].numpy())


# ----------------------------------------------------------------------------- fast paths and fallback


def test_the_fast_paths_and_their_fallback():
    torch.manual_seed(0)
    teacher, student = build_teacher("tiny").eval(), build_student("tiny").eval()
    mel = mel_of(0.05)
    draw = {"generator": torch.Generator().manual_seed(1), "progress": False}
    if _fast.library() is not None:
        assert vocoders.fast_path_available(teacher)
        assert torch.equal(vocoders.render(teacher, mel, 1), teacher.generate(mel, compiled=True, **draw))
    draw["generator"].manual_seed(1)
    assert torch.equal(vocoders.render(teacher, mel, 1, fast=False), teacher.generate(mel, **draw))
    double = build_teacher("tiny").double().eval()  # the C loop is float32 only: the reference step runs
    assert not vocoders.fast_path_available(double)
    draw["generator"].manual_seed(1)
    assert torch.equal(vocoders.render(double, mel.double(), 1), double.generate(mel.double(), **draw))

    assert vocoders.fast_path_available(student)
    fused = student.for_synthesis(torch.float32).sample(mel, generator=torch.Generator().manual_seed(1))
    assert torch.equal(vocoders.render(student, mel, 1), fused)
    reference = student.sample(mel, generator=torch.Generator().manual_seed(1))
    assert torch.equal(vocoders.render(student, mel, 1, fast=False), reference)
    torch.testing.assert_close(fused, reference, rtol=1e-5, atol=1e-5)
    double = build_student("tiny").double().eval()
    assert not vocoders.fast_path_available(double)
    want = double.sample(mel.double(), generator=torch.Generator().manual_seed(1))
    assert torch.equal(vocoders.render(double, mel.double(), 1), want)


def test_without_the_c_library_the_teacher_falls_back_to_the_reference_step(monkeypatch, capsys):
    teacher, mel = build_teacher("tiny").eval(), mel_of(0.05)
    monkeypatch.setattr(_fast, "library", lambda: None)
    assert not vocoders.fast_path_available(teacher)
    got = vocoders.render(teacher, mel, 2)
    assert torch.equal(got, teacher.generate(mel, generator=torch.Generator().manual_seed(2), progress=False))
    assert "the reference cached step" in capsys.readouterr().err


def test_the_teacher_renders_on_one_thread_and_the_count_is_restored(monkeypatch):
    teacher, student = build_teacher("tiny").eval(), build_student("tiny").eval()
    seen = []
    generate, sample = teacher.generate, student.sample
    monkeypatch.setattr(teacher, "generate", lambda *a, **k: seen.append(torch.get_num_threads()) or generate(*a, **k))
    monkeypatch.setattr(student, "sample", lambda *a, **k: seen.append(torch.get_num_threads()) or sample(*a, **k))
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        vocoders.render(teacher, mel_of(0.02), fast=False)
        vocoders.render(teacher, mel_of(0.02), fast=False, threads=2)
        vocoders.render(student, mel_of(0.02), fast=False)
        vocoders.render(student, mel_of(0.02), fast=False, threads=1)
        assert seen == [1, 2, 2, 1] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


# ----------------------------------------------------------------------------- every caller, the same audio


class RecordingListener:
    """Stands in for the phone classifier: keeps every clip it is asked to transcribe."""

    heard: list[np.ndarray] = []

    def __init__(self, classifier=None):
        RecordingListener.heard = []

    def errors(self, x, utterance_id: str) -> tuple[int, int]:
        RecordingListener.heard.append(np.asarray(x, dtype=np.float32).copy())
        return 0, 1


@pytest.mark.parametrize("name", ["shipped teacher", "shipped student", "tiny teacher", "tiny student"])
def test_every_caller_renders_the_same_audio(name, checkpoints, tmp_path, monkeypatch):
    directory, seed = checkpoints[name], 0
    vocoder = vocoders.load(directory)

    def rendered(clips: list[np.ndarray], seed: int = seed) -> list[np.ndarray]:
        x = vocoders.render(vocoder, vocoders.mel_batch(clips, AUDIO), seed)
        return [x[i, 0, : len(c)].numpy() for i, c in enumerate(clips)]

    # python -m pwn_lib.evaluate: the signals it scores.
    scored = {}
    monkeypatch.setattr(ev, "evaluate_systems", lambda signals, *a, **k: scored.update(signals) or {"systems": {}})
    seconds = 0.15  # evaluate refuses a crop shorter than the M-STFT metric's largest window (2,048 samples)
    ev.run([directory], count=1, max_seconds=seconds, with_espeak=False, progress=False)
    utterance = ev.pick_utterances("test", 1)[0]
    clip = vocoders.crop_to_hops(utterance.audio, HOP, int(seconds * AUDIO.sample_rate))
    assert np.array_equal(scored[vocoder.kind][0], rendered([clip])[0])

    # The listening test's renderer.
    crops = {"a": clip, "b": vocoders.crop_to_hops(ev.pick_utterances("test")[1].audio, HOP, len(clip))}
    stimuli = build.render(directory, crops, seed, AUDIO)
    assert all(np.array_equal(a, b) for a, b in zip(stimuli.values(), rendered(list(crops.values())), strict=True))

    # The held-out figures a training run records (the CLI renders the teacher's held-out clip the same way).
    report = heldout.synthesis_report(vocoder, vocoder, AUDIO, seconds=0.05)
    real, mel = heldout.heldout_clip(AUDIO, 0.05)
    own = log_mel_distance(vocoders.render(vocoder, mel, 0).view(-1), real.view(-1), AUDIO)
    assert report["logmel_distance_teacher_vs_real"] == report["logmel_distance_student_vs_real"] == own
    if vocoder.kind == "teacher":
        monkeypatch.setattr(heldout, "Listener", RecordingListener)
        heldout.resynthesis_phone_error_rate(vocoder, AUDIO, count=1)
        shortest = min(load_corpus("test"), key=lambda u: (len(u.audio), u.id))
        assert np.array_equal(RecordingListener.heard[0], rendered([vocoders.crop_to_hops(shortest.audio, HOP)])[0])

    # The ablation's example renderings: the teacher it is given, and each arm's student checkpoint.
    cfg = dataclasses.replace(ABLATION_PRESETS["tiny"], work_dir=str(tmp_path / "arms"), test_max_seconds=0.125)
    teacher = vocoder if vocoder.kind == "teacher" else vocoders.load(checkpoints["tiny teacher"])
    shutil.copytree(directory if vocoder.kind == "student" else checkpoints["tiny student"], tmp_path / "arms" / "kl")
    examples = render_examples(cfg, teacher, [Arm("kl", DistillLoss())], seed=seed)
    _, example = example_utterance(cfg, AUDIO)
    assert np.array_equal(examples["teacher" if vocoder.kind == "teacher" else "kl"], rendered([example])[0])


def test_the_cli_renders_the_teachers_heldout_clip_through_vocoders(tmp_path):
    """`python -m pwn_lib.train teacher` writes generated_heldout.wav: the checkpoint rendered with seed 0."""
    from pwn_lib.train import main

    out = tmp_path / "teacher"
    args = ["teacher", "--preset", "tiny", "--steps", "2", "--eval-seconds", "0.05", "--phone-utterances", "0"]
    assert main([*args, "--out", str(out)]) == 0
    _, mel = heldout.heldout_clip(AUDIO, 0.05)
    mine = save_audio(tmp_path / "mine.wav", vocoders.render(vocoders.load(out), mel, 0).view(-1).numpy(), 16_000)
    assert np.array_equal(load_audio(out / "generated_heldout.wav", 16_000), load_audio(mine, 16_000))
