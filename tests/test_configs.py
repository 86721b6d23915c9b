"""The recipes in configs/: every key commented, every file resolves to the configs its command would train."""

from __future__ import annotations

import re

import pytest

from pwn_lib.cli import build_parser, resolve
from pwn_lib.config import REPO_ROOT, STUDENT_PRESETS, TEACHER_PRESETS

CONFIGS = sorted((REPO_ROOT / "configs").glob("*.yaml"))
TABLES = {"teacher": TEACHER_PRESETS, "student": STUDENT_PRESETS, "phones": None}


def test_the_four_recipes_exist():
    assert {p.name for p in CONFIGS} >= {f"{kind}_course.yaml" for kind in ("teacher", "student", "phones", "ablation")}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_key_is_commented(path):
    lines = path.read_text().splitlines()
    assert lines[0].startswith("#"), f"{path.name}: start with a comment saying what the recipe makes and how"
    leaves = [line for line in lines if re.match(r"^\s+\w+:\s*\S", line)]
    uncommented = [line for line in leaves if "#" not in line]
    assert leaves and not uncommented, f"{path.name}: comment these keys: {uncommented}"


@pytest.mark.parametrize("path", [p for p in CONFIGS if not p.name.startswith("ablation")], ids=lambda p: p.name)
def test_every_recipe_resolves(path):
    kind = path.name.split("_")[0]
    args = build_parser().parse_args([kind, "--config", str(path)])
    resolved = resolve(args, TABLES[kind])
    assert resolved["train"].steps > 0
    if kind != "phones":
        model = resolved["model"]
        assert model.log_mel_mean is not None and model.hop_length == resolved["audio"].hop_length


def test_the_ablation_recipe_names_only_known_fields():
    import json

    import yaml

    from pwn_lib.ablation import AblationConfig
    from pwn_lib.config import from_dict, to_dict

    section = yaml.safe_load((REPO_ROOT / "configs" / "ablation_course.yaml").read_text())["ablation"]
    recorded = json.loads((REPO_ROOT / "data" / "ablation" / "ablation_course.json").read_text())["config"]
    assert to_dict(from_dict(AblationConfig, section)) == recorded, "the committed ablation JSON comes from this recipe"


def test_model_and_audio_settings_that_must_agree_are_checked():
    from pwn_lib.cli import check_audio
    from pwn_lib.config import AUDIO_PRESETS, preset

    for name in ("tiny", "course", "paper"):
        check_audio(TEACHER_PRESETS[name], AUDIO_PRESETS[name])
        check_audio(STUDENT_PRESETS[name], AUDIO_PRESETS[name])
    with pytest.raises(SystemExit, match="hop_length"):
        check_audio(preset(TEACHER_PRESETS, "course", hop_length=300), AUDIO_PRESETS["course"])
    with pytest.raises(SystemExit, match="bits"):
        check_audio(preset(TEACHER_PRESETS, "course", bits=8), AUDIO_PRESETS["course"])
