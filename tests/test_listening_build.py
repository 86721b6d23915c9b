"""`python -m pwn_lib.listening build` from the shipped checkpoints (tiny: 2 utterances x 0.5 s), and its errors."""

from __future__ import annotations

import pytest
import torch

from pwn_lib.listening import load_test, loudness_lufs
from pwn_lib.listening.__main__ import main

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
    from pwn_lib.data import corpus_split

    split = corpus_split()
    assert list(built.systems) == sorted(SYSTEMS.split(",")) and len(built.utterances) == 2
    assert all(split[u] == "test" for u in built.utterances)
    assert built.controls[0]["utterance"] not in built.utterances and split[built.controls[0]["utterance"]] == "test"
    assert built.systems["teacher"]["source"] == "data/checkpoints/teacher_course"
    assert built.systems["real"]["role"] == "reference" and built.systems["anchor"]["role"] == "anchor"
    assert built.ab_pairs == [("teacher", "student")]
    assert built.command.startswith("python -m pwn_lib.listening build --systems")
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
