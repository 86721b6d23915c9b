"""The paper recipes start a paper-size run: 2 steps of configs/teacher_paper.yaml, then 2 steps of
configs/student_paper.yaml distilled from it, on CPU, at a reduced window and batch (notebook 08)."""

from __future__ import annotations

import json

from pwn_lib.config import REPO_ROOT
from pwn_lib.train import main
from pwn_lib.wavenet import WaveNet

SMALL = ["--preset", "paper", "--steps", "2", "--window", "1200", "--no-eval", "--device", "cpu"]


def test_two_steps_of_the_paper_teacher_then_the_paper_student(tmp_path):
    configs = REPO_ROOT / "configs"
    main(
        [
            "teacher",
            "--config",
            str(configs / "teacher_paper.yaml"),
            "--batch-size",
            "2",
            *SMALL,
            "--out",
            str(tmp_path / "teacher"),
        ]
    )
    teacher = WaveNet.from_checkpoint(tmp_path / "teacher")
    assert (teacher.cfg.layers, teacher.cfg.stacks, teacher.cfg.kernel_size, teacher.cfg.n_mixtures) == (30, 3, 3, 10)
    assert teacher.audio.sample_rate == 24_000
    main(
        [
            "student",
            "--config",
            str(configs / "student_paper.yaml"),
            "--teacher",
            str(tmp_path / "teacher"),
            "--batch-size",
            "1",
            *SMALL,
            "--out",
            str(tmp_path / "student"),
        ]
    )
    config = json.loads((tmp_path / "student" / "config.json").read_text())
    metrics = json.loads((tmp_path / "student" / "metrics.json").read_text())
    assert config["model"]["flow_layers"] == [10, 10, 10, 30] and config["model"]["channels"] == 64
    assert metrics["steps"] == 2 and metrics["speed"]["bf16"] and metrics["speed"]["tf32"]
    assert metrics["final_loss"] == metrics["final_loss"], "the paper student's loss is NaN"
