"""Tests for pwn_lib.ablation: equal budgets, arm losses built from the right terms, and a tiny end-to-end run."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from pwn_lib.ablation import ABLATION_PRESETS, CURVE_METRICS, CurveScore, paper_arms, render_examples, run_ablation
from pwn_lib.audio import loudest_window, power_db
from pwn_lib.config import CONTRASTIVE_GAMMA, DistillLoss
from pwn_lib.distill import distillation_loss
from pwn_lib.losses import perceptual_loss, power_loss, recipe_terms
from pwn_lib.phones import PhoneClassifier, PhoneClassifierConfig
from pwn_lib.student import build_student
from pwn_lib.trainer import Trainer
from pwn_lib.wavenet import build_teacher


def test_paper_arms_add_one_term_at_a_time() -> None:
    arms = paper_arms(ABLATION_PRESETS["course"])
    assert [a.name for a in arms] == ["kl", "kl+power", "kl+power+perceptual", "kl+power+perceptual+contrastive"]
    assert [(a.loss.power_weight > 0, a.loss.perceptual_weight > 0, a.loss.gamma > 0) for a in arms] == [
        (False, False, False),
        (True, False, False),
        (True, True, False),
        (True, True, True),
    ]
    assert arms[-1].loss.gamma == CONTRASTIVE_GAMMA == 0.3
    assert arms[0].loss.power_weight == 0.0
    assert {a.loss.power_weight for a in arms[1:]} == {ABLATION_PRESETS["course"].power_weight}
    assert all(a.loss.stft_weight == 0.0 for a in arms), "the paper's arms have no MR-STFT term"


def test_power_db_and_loudest_window() -> None:
    assert power_db(np.ones(100)) == pytest.approx(0.0)
    assert power_db(0.1 * np.ones(100)) == pytest.approx(-20.0)
    x = np.zeros(1_000, dtype=np.float32)
    x[600:700] = 1.0
    window = loudest_window(x, 256, 64)
    assert len(window) == 256 and window.sum() == 100.0


@pytest.mark.slow
def test_recipe_loss_is_kl_plus_weighted_terms() -> None:
    torch.manual_seed(0)
    student, teacher = build_student("tiny"), build_teacher("tiny")
    classifier = PhoneClassifier(PhoneClassifierConfig(channels=8, dilations=(1,))).eval()
    batch = {"audio": 0.1 * torch.randn(2, 1, 1_024), "mel": torch.randn(2, 80, 4) - 4}
    kl_only = DistillLoss(n_draws=2, power_weight=0.0)
    plain = recipe_terms(kl_only, student, teacher, batch, None, torch.Generator().manual_seed(3))
    full = recipe_terms(
        DistillLoss(n_draws=2, power_weight=0.5, perceptual_weight=2.0),
        student,
        teacher,
        batch,
        classifier,
        torch.Generator().manual_seed(3),
    )
    torch.testing.assert_close(full["kl"], plain["kl"])
    expected = (
        plain["kl"]
        + 0.5 * power_loss(plain["x"], batch["audio"])
        + 2.0 * perceptual_loss(plain["x"], batch["audio"], classifier)
    )
    torch.testing.assert_close(full["loss"], expected)
    with pytest.raises(ValueError, match="classifier"):
        recipe_terms(DistillLoss(perceptual_weight=1.0), student, teacher, batch, None, torch.Generator())


@pytest.mark.slow
@pytest.mark.parametrize("gamma", [0.0, 0.3])
def test_recipe_teacher_temperature_reaches_the_kl(gamma) -> None:
    torch.manual_seed(0)
    student, teacher = build_student("tiny"), build_teacher("tiny")
    batch = {"audio": 0.1 * torch.randn(2, 1, 1_024), "mel": torch.randn(2, 80, 4) - 4}
    recipe = DistillLoss(n_draws=2, power_weight=0.0, gamma=gamma, teacher_temperature=0.7)
    got = recipe_terms(recipe, student, teacher, batch, None, torch.Generator().manual_seed(3))
    want = distillation_loss(
        student, teacher, batch["mel"], n_draws=2, generator=torch.Generator().manual_seed(3), temperature=0.7
    )
    torch.testing.assert_close(got["kl"], want["kl"])
    plain = recipe_terms(
        dataclasses.replace(recipe, teacher_temperature=1.0),
        student,
        teacher,
        batch,
        None,
        torch.Generator().manual_seed(3),
    )
    assert abs(got["kl"].item() - plain["kl"].item()) > 1e-3


@pytest.mark.slow
def test_tiny_ablation_runs_every_arm_on_the_same_budget() -> None:
    cfg = dataclasses.replace(ABLATION_PRESETS["tiny"], steps=4, log_every=2, curve_every=2)
    torch.manual_seed(0)
    classifier = PhoneClassifier(PhoneClassifierConfig(channels=8, dilations=(1,))).eval()
    result = run_ablation(build_teacher("tiny"), cfg=cfg, classifier=classifier, progress=False)
    assert [r["arm"]["name"] for r in result["arms"]] == [a.name for a in paper_arms(cfg)]
    for row in result["arms"]:
        assert row["steps"] == row["history"][-1]["step"] == cfg.steps
        assert [p["step"] for p in row["curve"]] == [0, 2, 4], "a curve point at step 0 and every curve_every steps"
        assert set(CURVE_METRICS) <= set(row["curve"][-1])
        assert {"voiced_share", "periodicity", "power_db", "mcd", "per", "voiced_share_vs_real"} <= set(row["eval"])
        assert all(np.isfinite(v) for v in row["eval"].values())
        assert row["cpu_seconds"] > 0 and row["train_seconds"] > 0
    systems = result["test"]["systems"]
    assert {"real", "noise", "silence"} <= set(systems)
    assert systems["real"]["mcd"]["mean"] == 0.0 and systems["noise"]["mcd"]["mean"] > 3.0
    assert len(result["test"]["utterances"]) == cfg.test_utterances


@pytest.mark.slow
def test_a_stopped_arm_resumes_to_the_same_result(tmp_path, monkeypatch) -> None:
    cfg = dataclasses.replace(ABLATION_PRESETS["tiny"], steps=4, log_every=1, curve_every=2, work_dir=str(tmp_path))
    arms = paper_arms(cfg)[1:2]
    teacher = build_teacher("tiny")
    whole = run_ablation(teacher, arms=arms, cfg=dataclasses.replace(cfg, work_dir=""), progress=False)["arms"][0]

    score = CurveScore.__call__

    def stop_at_the_last_point(self, student, step):
        if step == cfg.steps:
            raise KeyboardInterrupt  # killed after the step-2 checkpoint was written
        return score(self, student, step)

    monkeypatch.setattr(CurveScore, "__call__", stop_at_the_last_point)
    with pytest.raises(KeyboardInterrupt):
        run_ablation(teacher, arms=arms, cfg=cfg, progress=False)
    monkeypatch.setattr(CurveScore, "__call__", score)
    steps_run = []
    train_step = Trainer.train_step
    monkeypatch.setattr(
        Trainer, "train_step", lambda self, batch: steps_run.append(self.step) or train_step(self, batch)
    )
    resumed = run_ablation(teacher, arms=arms, cfg=cfg, progress=False)["arms"][0]
    assert steps_run == [2, 3], "the resumed run continues from the step-2 checkpoint"
    assert [p["step"] for p in resumed["curve"]] == [0, 2, 4]
    assert [h["loss"] for h in resumed["history"]] == [h["loss"] for h in whole["history"]]
    assert resumed["curve"] == whole["curve"]
    assert resumed["eval"] == whole["eval"]

    examples = render_examples(cfg, teacher, arms=arms, out_dir=tmp_path / "examples")
    assert list(examples) == ["real", "teacher", "kl+power"]
    assert len({len(x) for x in examples.values()}) == 1 and np.abs(examples["kl+power"]).max() > 0
    assert sorted(p.name for p in (tmp_path / "examples").iterdir()) == [
        "examples.json",
        "kl_power.wav",
        "real.wav",
        "teacher.wav",
    ]
