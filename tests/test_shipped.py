"""The shipped checkpoints reload and reproduce the figures recorded in their metrics.json."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from pwn_lib import evaluate as ev
from pwn_lib.config import AUDIO_PRESETS, CHECKPOINT_DIR, REPO_ROOT
from pwn_lib.heldout import heldout_kl, heldout_windows, teacher_nll_bits
from pwn_lib.student import IAFStudent
from pwn_lib.wavenet import WaveNet

TEACHER = CHECKPOINT_DIR / "teacher_course"
STUDENT = CHECKPOINT_DIR / "student_course"


def metrics(directory) -> dict:
    return json.loads((directory / "metrics.json").read_text())


@pytest.fixture(scope="module")
def teacher():
    return WaveNet.from_checkpoint(TEACHER)


def test_shipped_teacher_reproduces_its_heldout_nll(teacher):
    recorded = metrics(TEACHER)
    windows = heldout_windows(AUDIO_PRESETS["course"])
    assert recorded["heldout_windows"].startswith(f"{len(windows)} x {windows[0]['audio'].shape[-1]}")
    assert teacher_nll_bits(teacher, windows) == pytest.approx(recorded["heldout_nll_bits"], rel=0.01)


def test_shipped_teacher_records_how_to_reproduce_it():
    recorded = metrics(TEACHER)
    assert recorded["command"].startswith("python -m pwn_lib.train teacher --preset course")
    assert recorded["steps"] > 0 and recorded["train_seconds"] > 0
    assert recorded["logmel_distance_generated_vs_real"] < recorded["logmel_distance_silence_vs_real"]
    assert (TEACHER / "model.safetensors").stat().st_size < 10_000_000


def test_shipped_student_reproduces_its_heldout_kl(teacher):
    recorded = metrics(STUDENT)
    student = IAFStudent.from_checkpoint(STUDENT)
    windows = heldout_windows(AUDIO_PRESETS["course"], count=8)
    assert heldout_kl(student, teacher, windows) == pytest.approx(recorded["heldout_kl"], rel=0.01, abs=1e-3)
    assert recorded["command"].startswith("python -m pwn_lib.train student ")
    assert all(
        stage["command"].startswith("python -m pwn_lib.train student --config configs/student_course")
        for stage in recorded["stages"]
    )
    for key in ("logmel_distance_student_vs_real", "logmel_distance_teacher_vs_real", "student_timesteps_per_s"):
        assert recorded[key] > 0, key


def test_shipped_student_is_the_same_function_as_when_it_was_trained():
    """Outputs saved from the shipped student before the flows were refactored (tests/data)."""
    reference = load_file(str(REPO_ROOT / "tests" / "data" / "student_course_reference.safetensors"))
    with torch.no_grad():
        x, mu_tot, log_s_tot = IAFStudent.from_checkpoint(STUDENT)(reference["z"], reference["c"])
    # Equal to float32 rounding: the thread count changes the order of the convolutions' sums.
    for name, got in (("x", x), ("mu_tot", mu_tot), ("log_s_tot", log_s_tot)):
        torch.testing.assert_close(got, reference[name], rtol=1e-5, atol=1e-6, msg=name)


def test_shipped_student_samples_in_one_pass():
    student = IAFStudent.from_checkpoint(STUDENT)
    mel = torch.zeros(1, student.cfg.cond_channels, 4) - 5.0
    x = student.sample(mel, generator=torch.Generator().manual_seed(0))
    assert x.shape == (1, 1, 4 * student.cfg.hop_length) and torch.isfinite(x).all()


# The headline figures: python -m pwn_lib.evaluate ... --record wrote them; recompute them here.
TOLERANCE = {"mcd": 0.05, "mstft": 0.05, "voiced_share": 0.03, "periodicity": 0.02, "power_db": 0.1, "per": 0.03}


def check_recomputed(directory, batches):
    recorded = metrics(directory).get("evaluation")
    if recorded is None:
        pytest.fail(f"{directory}/metrics.json has no 'evaluation' block: run python -m pwn_lib.evaluate --record")
    got = ev.recompute(directory, batches)
    n = len(got["mcd"])
    for key, tol in TOLERANCE.items():
        want = recorded["per_utterance"][key][:n]
        assert np.allclose(got[key], want, atol=tol, rtol=0.02), (key, got[key], want)
    return recorded, got


@pytest.mark.slow
def test_shipped_student_recomputes_its_headline_metrics():
    """Every utterance: the student is one parallel pass, so the whole table is recomputed."""
    recorded, got = check_recomputed(STUDENT, batches=None)
    for key in ("mcd", "voiced_share", "periodicity", "power_db"):
        assert np.mean(got[key]) == pytest.approx(recorded["rows"]["student"][key]["mean"], abs=TOLERANCE[key])


@pytest.mark.slow
def test_shipped_teacher_recomputes_its_metrics_on_the_first_batch():
    """The teacher samples one step at a time, so only the first batch (the 8 shortest utterances) is redone."""
    check_recomputed(TEACHER, batches=1)


def test_shipped_teacher_temperature_is_the_one_its_valid_sweep_chose():
    """config.json's sampling temperature follows the recorded rule: the lowest M-STFT distance on the valid split."""
    sweep = json.loads((TEACHER / "temperature_sweep.json").read_text())
    assert sweep["split"] == "valid" and len(sweep["rows"]) >= 3
    chosen = min(sweep["rows"], key=lambda row: row["mstft"])["temperature"]
    assert json.loads((TEACHER / "config.json").read_text())["sampling"]["temperature"] == chosen
    assert metrics(TEACHER)["evaluation"]["sampling"] == {"temperature": chosen}
