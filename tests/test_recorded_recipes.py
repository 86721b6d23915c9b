"""Every recipe that the README or a checkpoint's metrics.json names exists, and each command recorded beside a
configuration resolves to exactly that configuration, so the shipped checkpoints can be reproduced as written."""

from __future__ import annotations

import dataclasses
import json
import re
import shlex

import pytest

from pwn_lib.config import REPO_ROOT, STUDENT_PRESETS, TEACHER_PRESETS, to_dict
from pwn_lib.train import SECTIONS, build_parser, resolve

RECIPE_NAME = re.compile(r"configs/[\w.-]+\.ya?ml")
METRICS = sorted((REPO_ROOT / "data").rglob("metrics.json"))
TABLES = {"teacher": TEACHER_PRESETS, "student": STUDENT_PRESETS}


def named_recipes() -> list[tuple[str, str]]:
    """(file that names it, recipe path) for every recipe named in README.md or a metrics.json."""
    sources = [REPO_ROOT / "README.md", *METRICS]
    return sorted(
        {(s.relative_to(REPO_ROOT).as_posix(), n) for s in sources for n in RECIPE_NAME.findall(s.read_text())}
    )


def recorded_runs() -> list[tuple[str, str, dict]]:
    """(where, command, configuration) for every command a metrics.json records together with its configuration:
    a teacher's ``reproduce``, each student stage that records its ``config``, and the last stage with the
    checkpoint's own ``config``."""
    runs = []
    for path in METRICS:
        metrics = json.loads(path.read_text())
        where = path.relative_to(REPO_ROOT).as_posix()
        if isinstance(metrics.get("reproduce"), dict):
            runs.append((f"{where} reproduce", metrics["reproduce"]["command"], metrics["reproduce"]["config"]))
        stages = metrics.get("stages", [])
        runs += [(f"{where} stage {s['stage']}", s["command"], s["config"]) for s in stages if "config" in s]
        if stages and "config" in metrics:
            runs.append((f"{where} config", stages[-1]["command"], metrics["config"]))
    return runs


def test_the_readme_and_the_metrics_name_recipes():
    names = {name for _, name in named_recipes()}
    assert {"configs/student_course_stage1.yaml", "configs/teacher_course_stage1.yaml"} <= names


@pytest.mark.parametrize(("source", "recipe"), named_recipes(), ids=lambda v: str(v))
def test_every_named_recipe_exists(source, recipe):
    assert (REPO_ROOT / recipe).is_file(), f"{source} names {recipe}, which is not in the repository: add it"


def test_the_student_records_every_stage_and_the_first_with_its_configuration():
    runs = {where for where, _, _ in recorded_runs()}
    assert "data/checkpoints/student_course/metrics.json stage 1" in runs
    assert "data/checkpoints/student_course/metrics.json config" in runs
    assert "data/checkpoints/teacher_course/metrics.json reproduce" in runs


def resolve_command(command: str) -> dict:
    """The configuration ``python -m pwn_lib.train ...`` would train with. ``--init`` is dropped: the warm-start
    directories are runs of their own, and every recorded recipe fixes the standardisation an --init would carry."""
    words = shlex.split(command)
    assert words[:3] == ["python", "-m", "pwn_lib.train"], command
    args = build_parser().parse_args(words[3:])
    args.init = None
    return resolve(args)


def plain(value):
    return json.loads(json.dumps(value))


@pytest.mark.parametrize(("where", "command", "recorded"), recorded_runs(), ids=lambda v: str(v)[:60])
def test_each_recorded_command_resolves_to_its_recorded_configuration(where, command, recorded):
    resolved = resolve_command(command)
    kind = shlex.split(command)[3]
    # older runs recorded every section, also those their kind never reads (a teacher's loss recipe)
    for section, values in ((s, v) for s, v in recorded.items() if s in SECTIONS[kind]):
        config = resolved[section]
        got = plain(to_dict(config))
        differ = {k: (got.get(k), v) for k, v in values.items() if got.get(k) != v}
        assert not differ, f"{where}: `{command}` resolves {section} to (resolved, recorded) {differ}"
        # keys the recording predates must keep the behaviour of that time: their defaults
        defaults = {f.name: f.default for f in dataclasses.fields(config) if f.default is not dataclasses.MISSING}
        unrecorded = {k: got[k] for k in set(got) - set(values) if k in defaults and got[k] != plain(defaults[k])}
        assert not unrecorded, f"{where}: {section} sets {unrecorded}, which the recording does not have"


def test_the_stage_1_recipe_is_the_one_the_stage_2_recipe_replaced():
    """Stage 1's file holds the values configs/student_course.yaml held before the spectral-led recipe replaced
    them: the loss weights 1.0 / 1.0 and the peak rate 1e-3, against stage 2's 0.1 / 4.0 and 5e-4."""
    stage1 = resolve_command(
        "python -m pwn_lib.train student --config configs/student_course_stage1.yaml --teacher x --out y"
    )
    stage2 = resolve_command("python -m pwn_lib.train student --config configs/student_course.yaml --teacher x --out y")
    assert (stage1["loss"].power_weight, stage1["loss"].stft_weight, stage1["train"].lr) == (1.0, 1.0, 1e-3)
    assert (stage2["loss"].power_weight, stage2["loss"].stft_weight, stage2["train"].lr) == (0.1, 4.0, 5e-4)
    assert stage1["model"] == stage2["model"], "--init needs the same architecture in every stage"
