"""`python -m pwn_lib.listening build` from the shipped checkpoints (tiny: 2 utterances x 0.5 s), and its errors;
a two-voice build (`--voices en,fr`) with a tiny five-speaker student, and its analysis per voice."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pwn_lib import vocoders
from pwn_lib.config import AudioConfig
from pwn_lib.data import VOICES, corpus_split, load_voices
from pwn_lib.listening import RatingStore, load_test, loudness_lufs, normalize_loudness
from pwn_lib.listening import build as builder
from pwn_lib.listening.__main__ import main
from pwn_lib.listening.simulate import simulate_class
from pwn_lib.listening.stats import accepted, mos_by_voice, mos_ratings, report, screen_raters, utterance_voices
from pwn_lib.student import build_student

SYSTEMS = "real,teacher,student,mulaw8,anchor"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("built") / "mini"
    threads = torch.get_num_threads()
    try:
        assert main(["build", "--systems", SYSTEMS, "--utterances", "2", "--seconds", "0.5", "--out", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)  # the build command sets 1 thread for this process
    return load_test(out)


def test_build_renders_every_system_on_held_out_utterances(built):
    split = corpus_split()
    assert list(built.systems) == sorted(SYSTEMS.split(",")) and len(built.utterances) == 2
    assert all(split[u] == "test" for u in built.utterances)
    assert built.controls[0]["utterance"] not in built.utterances and split[built.controls[0]["utterance"]] == "test"
    assert built.systems["teacher"]["source"] == "data/checkpoints/teacher_course"
    assert built.systems["real"]["role"] == "reference" and built.systems["anchor"]["role"] == "anchor"
    assert built.ab_pairs == [("teacher", "student")]
    assert built.command.startswith("python -m pwn_lib.listening build --systems")
    assert "voices" not in built.metrics and all("voice" not in c for c in built.controls), "no voices: as before"
    assert all(set(spec) == {"role", "source"} for spec in built.systems.values())
    for system in built.systems:
        x = built.load(built.path(system, built.utterances[0]))
        assert len(x) == 7_936  # 0.5 s rounded down to whole 256-sample frames
        assert loudness_lufs(x, built.sample_rate) == pytest.approx(-26.0, abs=0.05)


def test_build_records_objective_figures(built):
    distances = built.metrics["logmel_distance_to_real"]
    assert all(d == 0.0 for d in distances["real"].values())
    assert min(distances["anchor"].values()) > 0.1 and max(distances["mulaw8"].values()) < 0.5
    assert set(built.metrics["checkpoint"]) == {"teacher", "student"}


def test_build_errors_are_clear(tmp_path, capsys):
    assert main(["build", "--systems", "real,wavernn", "--out", str(tmp_path / "x")]) == 2
    assert "unknown system 'wavernn'" in capsys.readouterr().err
    assert (
        main(
            [
                "build",
                "--systems",
                f"kl={tmp_path}",
                "--utterances",
                "1",
                "--seconds",
                "0.5",
                "--out",
                str(tmp_path / "y"),
            ]
        )
        == 2
    )
    assert "is not a checkpoint directory (no config.json)" in capsys.readouterr().err
    assert main(["build", "--systems", "real", "--utterances", "400", "--out", str(tmp_path / "z")]) == 2
    assert "ask for fewer utterances" in capsys.readouterr().err


# ---------------------------------------------------------------------------------- several voices: --voices en,fr

TWO = ("en", "fr")
SEED = 0


def tiny_student(directory, n_speakers: int):
    """A tiny student whose speaker ids change its output audibly (a larger speaker table and output layer)."""
    torch.manual_seed(0)
    student = build_student("tiny", n_speakers=n_speakers, log_mel_mean=-5.0, log_mel_std=2.0)
    with torch.no_grad():
        student.speaker_embedding.weight.mul_(20)
        for flow in student.flows:
            flow.head[-1].weight.normal_(std=0.3)
    student.save(directory)
    return directory


@pytest.fixture(scope="module")
def voiced(tmp_path_factory):
    """real, a tiny five-speaker student, the shipped (single-speaker, English) student and the anchor on two voices."""
    root = tmp_path_factory.mktemp("voices")
    multi = tiny_student(root / "multi", len(VOICES))
    out = root / "two"
    args = ["--utterances", "2", "--seconds", "0.5", "--seed", str(SEED), "--out", str(out)]
    assert main(["build", "--systems", f"real,multi={multi},student,anchor", "--voices", ",".join(TWO), *args]) == 0
    return load_test(out), multi


def test_a_two_voice_build_draws_each_voices_test_split_with_unique_ids(voiced):
    test, _ = voiced
    voices = utterance_voices(test)
    assert len(test.utterances) == len(set(test.utterances)) == 4 and set(voices) == set(test.utterances)
    for voice in TWO:
        mine = [u for u in test.utterances if voices[u] == voice]
        test_split = {builder.utterance_id(voice, u.id) for u in load_voices("test", [voice])}
        assert len(mine) == 2 and set(mine) <= test_split and all(u.startswith(f"{voice}_") for u in mine)
    gold = test.control("gold_good")
    assert gold["voice"] == "en" and gold["utterance"] not in test.utterances
    assert corpus_split()[gold["utterance"].removeprefix("en_")] == "test", "the controls stay English"
    assert test.systems["multi"]["speaker_ids"] == {"en": 0, "fr": 2} and "unseen_voices" not in test.systems["multi"]
    assert test.systems["student"]["unseen_voices"] == ["fr"] and "speaker_ids" not in test.systems["student"]
    assert set(test.metrics["logmel_distance_to_real"]["multi"]) == set(test.utterances)


def test_a_multi_speaker_checkpoint_renders_each_voice_with_its_id(voiced):
    """The stored fr clips are what speaker id 2 gives for their crops, not what id 0 gives; en clips are id 0's."""
    test, multi = voiced
    audio = AudioConfig()
    crops, voice_of = builder.voice_crops(TWO, 2, vocoders.hop_samples(0.5, audio), SEED, audio.hop_length)
    assert sorted(crops) == test.utterances
    system = vocoders.load(multi)
    mel = vocoders.mel_batch(list(crops.values()), audio)
    ids = torch.tensor([VOICES.index(voice_of[u]) for u in crops])
    own = vocoders.render(system, mel, SEED, speaker=ids)[:, 0].numpy()
    as_english = vocoders.render(system, mel, SEED, speaker=torch.zeros_like(ids))[:, 0].numpy()
    for i, u in enumerate(crops):
        stored = test.load(test.path("multi", u))
        assert np.abs(stored - normalize_loudness(own[i], test.sample_rate)).max() < 2e-4, u
        if voice_of[u] == "fr":
            assert np.abs(stored - normalize_loudness(as_english[i], test.sample_rate)).max() > 0.01, u
    real = {u: test.load(test.path("real", u)) for u in crops}
    assert all(np.abs(real[u] - normalize_loudness(crops[u], test.sample_rate)).max() < 2e-4 for u in crops)


def test_analysis_reports_mos_per_system_and_voice(voiced, tmp_path, capsys):
    test, _ = voiced
    db = tmp_path / "ratings.sqlite"
    with RatingStore(db) as store:
        simulate_class(test, store, raters=6, progress=False)
        frame = store.ratings(test.name)
    kept = accepted(frame, screen_raters(frame))
    table = mos_by_voice(kept, test, n_boot=50).set_index(["system", "voice"])
    assert set(table.index) == {(s, v) for s in test.systems for v in TWO}
    rows = mos_ratings(kept)
    fr_real = rows[(rows["system"] == "real") & rows["utterance"].str.startswith("fr_")]["score"]
    assert table.loc[("real", "fr"), "mos"] == pytest.approx(fr_real.mean())
    assert table.loc[("real", "fr"), "ratings"] == len(fr_real) == 2 * int(screen_raters(frame)["accepted"].sum())
    assert table.loc[("real", "fr"), "ci95"] > 0
    assert table.loc[("student", "fr"), "unseen"] and not table.loc[("student", "en"), "unseen"]
    assert main(["analyse", "--test", str(test.root), "--ratings", str(db), "--n-boot", "50"]) == 0
    printed = capsys.readouterr().out
    assert "MOS per voice" in printed and "(en 2, fr 2)" in printed
    for system in test.systems:
        for voice in TWO:
            mos, half = table.loc[(system, voice), ["mos", "ci95"]]
            assert f"| {system} | {voice}" in printed and f"{mos:.2f} ± {half:.2f}" in printed
    assert "| student | fr (not trained on it) |" in printed


def test_a_test_without_voices_has_no_per_voice_table(built, tmp_path):
    with RatingStore(tmp_path / "ratings.sqlite") as store:
        simulate_class(built, store, raters=4, progress=False)
        frame = store.ratings(built.name)
    assert utterance_voices(built) == {} and mos_by_voice(frame, built).empty
    text = report(frame, built, n_boot=20)
    assert "MOS per system" in text or "| real |" in text, "the report must still hold the per-system table"
    assert "MOS per voice" not in text


@pytest.fixture
def no_rendering(monkeypatch):
    """Any rendering fails the test: these errors must come before it."""
    monkeypatch.setattr(builder, "render", lambda *a, **k: pytest.fail("rendered before refusing the input"))


def test_bad_voices_are_refused_before_any_rendering(tmp_path, capsys, no_rendering):
    clip = ["--seconds", "0.5", "--out", str(tmp_path / "x")]
    assert main(["build", "--systems", "real,anchor", "--voices", "en,de", *clip]) == 2
    err = capsys.readouterr().err
    assert "unknown voice(s) ['de']" in err and "en,es,fr,it,ru" in err
    n_fr = len(load_voices("test", ["fr"]))
    assert main(["build", "--systems", "real", "--voices", "en,fr", "--utterances", str(n_fr + 1), *clip]) == 2
    err = capsys.readouterr().err
    assert f"voice fr: only {n_fr} test-split utterances" in err and "ask for fewer utterances" in err
    small = tiny_student(tmp_path / "two_speakers", n_speakers=2)
    assert main(["build", "--systems", f"real,small={small}", "--voices", "en,es,fr", "--utterances", "1", *clip]) == 2
    err = capsys.readouterr().err
    assert "'small'" in err and "n_speakers=2" in err and "['fr'] (ids [2])" in err and "n_speakers >= 3" in err
    assert not (tmp_path / "x").exists()
