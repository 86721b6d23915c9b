"""Bad checkpoints are refused at load with an error naming the file and key, before anything large is built:
a LATEST pointing out of its run, cut JSON, sizes of the wrong type or range, NaN weights or statistics, and
configs asking for more memory than the machine has (run under a memory cap)."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from pwn_lib.artifacts import CONFIG, METRICS, WEIGHTS, CheckpointError, load_artifact
from pwn_lib.config import (
    PRESET_NAMES,
    STUDENT_PRESETS,
    TEACHER_PRESETS,
    StudentConfig,
    WaveNetConfig,
    check_model_config,
)
from pwn_lib.sizes import estimated_parameters
from pwn_lib.student import IAFStudent
from pwn_lib.wavenet import WaveNet

REPO = Path(__file__).resolve().parents[1]


def teacher_checkpoint(directory: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    cfg = dataclasses.replace(TEACHER_PRESETS["tiny"], log_mel_mean=-5.0, log_mel_std=2.0)
    return WaveNet(cfg).save(directory, metrics={"steps": 1})


def edit_config(directory: Path, **model: object) -> Path:
    config = json.loads((directory / CONFIG).read_text())
    config["model"].update(model)
    (directory / CONFIG).write_text(json.dumps(config))
    return directory


@pytest.fixture
def teacher(tmp_path) -> Path:
    return teacher_checkpoint(tmp_path / "teacher")


# --- LATEST stays inside its run ------------------------------------------------------------


@pytest.fixture
def runs(tmp_path) -> tuple[Path, Path]:
    """A run whose LATEST names its one checkpoint, and another run beside it with other weights."""
    run, other = tmp_path / "run", tmp_path / "other"
    teacher_checkpoint(run / "ckpt-00000010-0", seed=1)
    (run / "LATEST").write_text("ckpt-00000010-0\n")
    teacher_checkpoint(other, seed=2)
    return run, other


def test_latest_naming_its_own_checkpoint_loads_it(runs):
    run, _ = runs
    state, _, _ = load_artifact(run)
    torch.testing.assert_close(state, load_artifact(run / "ckpt-00000010-0")[0])


@pytest.mark.parametrize("kind", ["parent", "absolute", "through", "link"])
def test_latest_naming_anything_outside_its_run_is_refused(runs, kind):
    run, other = runs
    names = {"parent": "../other", "absolute": str(other), "through": "ckpt-00000010-0/../../other"}
    if kind == "link":
        (run / "ckpt-00000020-0").symlink_to(other, target_is_directory=True)
        names["link"] = "ckpt-00000020-0"
    (run / "LATEST").write_text(names[kind] + "\n")
    with pytest.raises(CheckpointError, match=r"LATEST names .*not a ckpt-\* folder inside .*Delete LATEST"):
        load_artifact(run)


# --- cut or corrupt JSON --------------------------------------------------------------------


@pytest.mark.parametrize("name", [CONFIG, METRICS])
def test_a_cut_json_file_is_refused_by_name(teacher, name):
    path = teacher / name
    text = path.read_text()
    path.write_text(text[: len(text) // 2])
    with pytest.raises(CheckpointError, match=rf"{name}: not valid JSON .*cut or corrupt"):
        load_artifact(teacher)


def test_a_config_that_is_not_an_object_is_refused(teacher):
    (teacher / CONFIG).write_text("[1, 2]")
    with pytest.raises(CheckpointError, match=r"config\.json: holds a JSON list, not an object"):
        load_artifact(teacher)


def test_a_cut_weights_file_is_refused_by_name(teacher):
    path = teacher / WEIGHTS
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=r"model\.safetensors: not a readable safetensors file"):
        load_artifact(teacher)


# --- sizes, choices and statistics ----------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("residual_channels", "16", "whole number >= 1"),
        ("residual_channels", 16.0, "whole number >= 1"),
        ("residual_channels", True, "whole number >= 1"),
        ("skip_channels", -16, "whole number >= 1"),
        ("stacks", 0, "whole number >= 1"),
        ("layers", 5, "multiple of stacks=2"),
        ("gate_channels", 31, "must be even"),
        ("cond_channels", -1, "whole number >= 0"),
        ("hop_length", 10**9, "at most 8192"),
        ("output", "wav", "one of"),
        ("previous_sample_weight", math.inf, "finite number"),
        ("log_mel_std", 0.0, "finite number > 0"),
        ("log_mel_std", math.nan, "finite number > 0"),
        ("log_mel_mean", math.nan, "finite number"),
    ],
)
def test_a_bad_teacher_size_or_statistic_is_refused_naming_the_key(teacher, key, value, message):
    edit_config(teacher, **{key: value})
    # a wrong type is refused by the schema (from_dict), a bad value by check_model_config: both name the key
    with pytest.raises(
        CheckpointError, match=rf"config\.json: model(\.|: ){key}\b.*({message}|must be a (int|float|finite number))"
    ):
        WaveNet.from_checkpoint(teacher)


@pytest.mark.parametrize(("value", "message"), [([], "non-empty list"), ([2, 0], "non-empty list"), (4, "list")])
def test_bad_student_flow_layers_are_refused_naming_the_key(tmp_path, value, message):
    directory = IAFStudent(STUDENT_PRESETS["tiny"]).save(tmp_path / "student")
    edit_config(directory, flow_layers=value)
    with pytest.raises(CheckpointError, match=rf"config\.json: model(\.|: )flow_layers\b.*{message}"):
        IAFStudent.from_checkpoint(directory)


def test_a_hop_the_upsampler_cannot_split_is_refused_naming_the_file(teacher):
    edit_config(teacher, hop_length=257)  # prime: no strides <= 16 multiply to it
    with pytest.raises(CheckpointError, match=r"config\.json: hop_length=257 has a prime factor"):
        WaveNet.from_checkpoint(teacher)


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_every_preset_passes_the_range_check(name):
    for cfg in (TEACHER_PRESETS[name], STUDENT_PRESETS[name], WaveNetConfig(), StudentConfig()):
        check_model_config(dataclasses.replace(cfg, log_mel_mean=-5.0, log_mel_std=2.0))


def test_the_shipped_checkpoints_load():
    for name in ("teacher_course", "student_course"):
        state, config, _ = load_artifact(REPO / "data" / "checkpoints" / name)
        assert state and config["kind"] in ("teacher", "student")


# --- weights --------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_nan_or_infinite_weights_are_refused_naming_the_tensor(teacher, bad):
    from safetensors.torch import load_file, save_file

    state = load_file(str(teacher / WEIGHTS))
    state["blocks.1.conv.weight"][0, 0, 0] = bad
    save_file(state, str(teacher / WEIGHTS))
    with pytest.raises(CheckpointError, match=r"model\.safetensors: 1 tensor\(s\) hold NaN .*blocks\.1\.conv\.weight"):
        WaveNet.from_checkpoint(teacher)


KEY = "blocks.1.conv.weight"


@pytest.mark.parametrize(
    ("edit", "named"),
    [
        (lambda state: state.pop(KEY), f"missing ['{KEY}']"),
        (lambda state: state.update({"extra.weight": torch.zeros(3)}), "extra ['extra.weight']"),
        (lambda state: state.update({KEY: torch.zeros(2, 2)}), f"'{KEY}': ([2, 2], "),
        (lambda state: state.update({KEY: state[KEY].long()}), f"dtype ['{KEY}']"),
    ],
    ids=["missing", "extra", "shape", "integer"],
)
def test_weights_that_do_not_fit_their_config_are_refused_naming_the_tensor(teacher, edit, named):
    from safetensors.torch import load_file, save_file

    state = load_file(str(teacher / WEIGHTS))
    edit(state)
    save_file(state, str(teacher / WEIGHTS))
    with pytest.raises(CheckpointError, match=r"model\.safetensors: the weights do not fit the model") as error:
        WaveNet.from_checkpoint(teacher)
    assert named in str(error.value)


def test_half_precision_weights_load_widened_to_the_same_values(teacher):
    from safetensors.torch import load_file, save_file

    state = {k: v.half() for k, v in load_file(str(teacher / WEIGHTS)).items()}
    save_file(state, str(teacher / WEIGHTS))
    loaded = WaveNet.from_checkpoint(teacher).state_dict()
    assert all(torch.equal(loaded[k], v.float()) for k, v in state.items())


def test_a_student_checkpoint_is_refused_where_a_teacher_is_needed(tmp_path):
    student = IAFStudent(STUDENT_PRESETS["tiny"]).save(tmp_path / "student")
    with pytest.raises(CheckpointError, match="kind 'student', but a teacher checkpoint is needed here"):
        WaveNet.from_checkpoint(student)


# --- memory ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cfg",
    [
        *(TEACHER_PRESETS[n] for n in PRESET_NAMES),
        *(STUDENT_PRESETS[n] for n in PRESET_NAMES),
        dataclasses.replace(TEACHER_PRESETS["tiny"], n_speakers=3, upsample="repeat", cond_channels=7, output="mulaw"),
        dataclasses.replace(TEACHER_PRESETS["tiny"], output="gaussian", cond_channels=0, hop_length=300),
        dataclasses.replace(TEACHER_PRESETS["tiny"], cond_layers=2, cond_hidden=24, cond_channels=7),
        dataclasses.replace(STUDENT_PRESETS["tiny"], n_speakers=2, upsample="repeat", cond_channels=5, kernel_size=2),
    ],
)
def test_the_parameter_estimate_equals_the_built_models_count(cfg):
    model = (WaveNet if isinstance(cfg, WaveNetConfig) else IAFStudent)(cfg)
    assert estimated_parameters(cfg) == sum(p.numel() for p in model.parameters())


def test_a_config_asking_for_more_than_its_weights_hold_is_refused(teacher):
    edit_config(teacher, layers=400, stacks=4)
    with pytest.raises(CheckpointError, match=r"config\.json: describes a model of .* model\.layers=400"):
        WaveNet.from_checkpoint(teacher)


CAPPED_LOAD = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
from pwn_lib.artifacts import CheckpointError
from pwn_lib.wavenet import WaveNet
try:
    WaveNet.from_checkpoint(sys.argv[1])
except CheckpointError as err:
    print(err)
    sys.exit(3)
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    ("sizes", "culprit"),
    [
        ({"residual_channels": 10**9}, "residual_channels=1000000000"),
        ({"layers": 10**6, "stacks": 1}, "layers=1000000"),
    ],
)
def test_a_huge_config_is_refused_under_a_memory_cap_before_anything_is_built(teacher, sizes, culprit):
    edit_config(teacher, **sizes)
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(CAPPED_LOAD), str(teacher)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 3, result.stderr[-2000:]
    assert "config.json: the model it describes" in result.stdout and f"model.{culprit}" in result.stdout
    assert "GB available" in result.stdout
