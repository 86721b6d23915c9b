"""The paper recipes state the paper's figures and say where each comes from, and they start a paper-size run:
2 steps of configs/teacher_paper.yaml, then 2 steps of configs/student_paper.yaml distilled from it, on CPU, at a
reduced window and batch, without DataLoader workers (notebook 08)."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from pwn_lib.config import AUDIO_PRESETS, REPO_ROOT, STUDENT_PRESETS, TEACHER_PRESETS, TRAIN_PRESETS
from pwn_lib.train import main
from pwn_lib.trainer import learning_rate
from pwn_lib.wavenet import WaveNet

SMALL = ["--preset", "paper", "--steps", "2", "--window", "1200", "--no-eval", "--device", "cpu"]
RECIPES = {kind: REPO_ROOT / "configs" / f"{kind}_paper.yaml" for kind in ("teacher", "student")}
SOURCES = ("[quoted]", "[paper, unchecked]", "[reproductions]", "[course]")


def quoted_sentence(path, opening: str) -> str:
    """The paper's sentence a recipe's header quotes, from ``opening`` to the closing quotation mark."""
    header = " ".join(line.lstrip("# ").strip() for line in path.read_text().splitlines() if line.startswith("#"))
    return re.search(f'"({re.escape(opening)}[^"]+)"', header).group(1)


def number(pattern: str, text: str) -> int:
    return int(re.search(pattern, text).group(1).replace(",", ""))


def test_the_teacher_recipe_trains_as_the_quoted_sentence_says():
    sentence = quoted_sentence(RECIPES["teacher"], "The teacher WaveNet network was trained")
    assert "ADAM" in sentence
    train = yaml.safe_load(RECIPES["teacher"].read_text())["train"]
    quoted = {
        "steps": number(r"trained for ([\d,]+) steps", sentence),
        "batch_size": number(r"minibatch size of (\d+) audio clips", sentence),
        "window": number(r"each containing ([\d,]+) timesteps", sentence),
    }
    assert quoted == {"steps": 1_000_000, "batch_size": 32, "window": 7_680}
    assert {k: train[k] for k in quoted} == quoted
    assert {k: getattr(TRAIN_PRESETS["paper"], k) for k in quoted} == quoted, "the paper preset and its recipe differ"


@pytest.mark.parametrize("kind", sorted(RECIPES))
def test_every_value_of_a_paper_recipe_says_where_it_comes_from(kind):
    lines = [line for line in RECIPES[kind].read_text().splitlines() if re.match(r"^\s+\w+:\s*\S", line)]
    unsourced = [line for line in lines if "must equal" not in line and not any(s in line for s in SOURCES)]
    assert not unsourced, f"{RECIPES[kind].name}: say which of {SOURCES} each value is: {unsourced}"


def test_the_paper_learning_rate_is_constant_and_the_window_holds_whole_frames():
    train = TRAIN_PRESETS["paper"]
    assert {learning_rate(step, train) for step in (0, 1, 1_000, 500_000, train.steps - 1)} == {2e-4}
    assert train.window % AUDIO_PRESETS["paper"].hop_length == 0
    assert (
        TEACHER_PRESETS["paper"].hop_length == STUDENT_PRESETS["paper"].hop_length == AUDIO_PRESETS["paper"].hop_length
    )


def test_the_stated_receptive_field_is_the_width_3_figure():
    """1 + (k - 1) * stacks * (2**(layers / stacks) - 1): 6,139 samples at width 3 (3,070 would be width 2)."""
    cfg = TEACHER_PRESETS["paper"]
    per_stack = cfg.layers // cfg.stacks
    expected = 1 + (cfg.kernel_size - 1) * cfg.stacks * (2**per_stack - 1)
    assert WaveNet(cfg).receptive_field == expected == 6_139
    assert f"{expected:,}-sample receptive field" in RECIPES["teacher"].read_text()
    assert TRAIN_PRESETS["paper"].window > expected, "a training window shorter than the receptive field"


def on_this_cpu(kind: str, tmp_path) -> str:
    """The paper recipe with the DataLoader workers off: each worker would resample the corpus to 24 kHz again."""
    recipe = yaml.safe_load(RECIPES[kind].read_text())
    recipe["train"]["num_workers"] = 0
    path = tmp_path / f"{kind}_paper_here.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return str(path)


@pytest.mark.slow
def test_two_steps_of_the_paper_teacher_then_the_paper_student(tmp_path):
    main(
        [
            "teacher",
            "--config",
            on_this_cpu("teacher", tmp_path),
            "--batch-size",
            "1",
            *SMALL,
            "--out",
            str(tmp_path / "teacher"),
        ]
    )
    teacher = WaveNet.from_checkpoint(tmp_path / "teacher")
    assert (teacher.cfg.layers, teacher.cfg.stacks, teacher.cfg.kernel_size, teacher.cfg.n_mixtures) == (30, 3, 3, 10)
    assert (teacher.cfg.residual_channels, teacher.cfg.gate_channels, teacher.cfg.skip_channels) == (512, 512, 256)
    assert teacher.audio.sample_rate == 24_000
    main(
        [
            "student",
            "--config",
            on_this_cpu("student", tmp_path),
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
