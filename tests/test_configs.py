"""The recipes in configs/ and their resolution: every key commented, every file resolves (fast, reading no audio)
to the configs its command would train, and a bad recipe or flag is refused, naming the file and key, before any
data is loaded."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import pytest

from pwn_lib import train
from pwn_lib.config import (
    AUDIO_PRESETS,
    MAX_RECIPE_BYTES,
    REPO_ROOT,
    STUDENT_PRESETS,
    TEACHER_PRESETS,
    RecipeError,
    preset,
)
from pwn_lib.features import corpus_statistics
from pwn_lib.train import build_parser, check_audio, resolve

CONFIGS = sorted((REPO_ROOT / "configs").glob("*.yaml"))


def kind_of(path) -> str:
    return path.name.split("_")[0]


def resolved(*argv: str) -> dict:
    return resolve(build_parser().parse_args(list(argv)))


def recipe(tmp_path, text: str, name: str = "recipe.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


# ----------------------------------------------------------------------------- the shipped recipes


def test_the_four_recipes_exist():
    assert {p.name for p in CONFIGS} >= {f"{kind}_course.yaml" for kind in ("teacher", "student", "phones", "ablation")}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_key_is_commented(path):
    lines = path.read_text().splitlines()
    assert lines[0].startswith("#"), f"{path.name}: start with a comment saying what the recipe makes and how"
    leaves = [line for line in lines if re.match(r"^\s+\w+:\s*\S", line)]
    uncommented = [line for line in leaves if "#" not in line]
    assert leaves and not uncommented, f"{path.name}: comment these keys: {uncommented}"


@pytest.fixture
def no_audio_reads(monkeypatch):
    """Every way the library reads audio raises: resolution must not need any."""
    import librosa
    import soundfile

    from pwn_lib import audio, data

    def refuse(*args, **kwargs):
        raise AssertionError(f"resolving a recipe read audio: {args[:1]}")

    for module, name in ((soundfile, "read"), (soundfile, "SoundFile"), (librosa, "load"), (audio, "load_audio")):
        monkeypatch.setattr(module, name, refuse)
    monkeypatch.setattr(data, "load_corpus", refuse)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_recipe_resolves_in_under_two_seconds_without_reading_audio(path, no_audio_reads):
    kind = kind_of(path)
    name = "paper" if "paper" in path.name else "course"
    started = time.perf_counter()
    configs = resolved(kind, "--preset", name, "--config", str(path))
    assert time.perf_counter() - started < 2.0
    if kind == "ablation":
        assert configs["ablation"].steps > 0
        return
    assert configs["train"].steps > 0 and configs["train"].window % configs["audio"].hop_length == 0
    if kind != "phones":
        model = configs["model"]
        assert model.log_mel_mean is not None and model.hop_length == configs["audio"].hop_length


def test_sources_apply_in_order_preset_then_yaml_then_flags(tmp_path):
    path = recipe(tmp_path, "train:\n  steps: 7\n  lr: 0.01\nmodel:\n  layers: 6\n")
    configs = resolved("teacher", "--preset", "tiny", "--config", str(path), "--steps", "3")
    tiny = TEACHER_PRESETS["tiny"]
    assert configs["train"].steps == 3 and configs["train"].lr == 0.01  # flag over YAML, YAML over preset
    assert configs["model"].layers == 6 and configs["model"].residual_channels == tiny.residual_channels


def test_fp32_overrides_a_recipes_bf16_and_refuses_another_autocast_flag(tmp_path):
    path = recipe(tmp_path, "train:\n  bf16: true\n")
    assert resolved("teacher", "--preset", "tiny", "--config", str(path))["train"].bf16
    assert not resolved("teacher", "--preset", "tiny", "--config", str(path), "--fp32")["train"].bf16
    with pytest.raises(RecipeError, match="--fp32 and --bf16"):
        resolved("teacher", "--preset", "tiny", "--fp32", "--bf16")


def test_the_statistics_come_from_the_stored_file_for_that_audio(tmp_path):
    stored = json.loads((REPO_ROOT / "data" / "corpus" / "log_mel_stats.json").read_text())["statistics"]
    for name in ("course", "paper"):
        entry = next(e for e in stored if e["audio"] == AUDIO_PRESETS[name].__dict__)
        model = resolved("teacher", "--preset", name)["model"]
        assert (model.log_mel_mean, model.log_mel_std) == (entry["log_mel_mean"], entry["log_mel_std"])
    with pytest.raises(LookupError, match="python -m pwn_lib.features --preset"):
        corpus_statistics(AUDIO_PRESETS["course"], path=tmp_path / "none.json")


def test_a_feature_cache_gives_its_own_statistics(tmp_path):
    audio = AUDIO_PRESETS["course"]
    manifest = {
        "audio": audio.__dict__,
        "statistics": {"log_mel_mean": -4.0, "log_mel_std": 3.0},
        "shards": [],
        "clips": 0,
    }
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    assert corpus_statistics(audio, tmp_path) == {"log_mel_mean": -4.0, "log_mel_std": 3.0}
    with pytest.raises(ValueError, match="manifest.json.*built with audio"):
        corpus_statistics(AUDIO_PRESETS["paper"], tmp_path)


def test_a_warm_start_keeps_the_standardisation_of_its_weights():
    model = resolved("teacher", "--init", str(REPO_ROOT / "data" / "checkpoints" / "teacher_course"))["model"]
    assert (model.log_mel_mean, model.log_mel_std) == (-5.09, 2.32)


def test_the_ablation_recipe_names_only_known_fields():
    from pwn_lib.config import to_dict

    recorded = json.loads((REPO_ROOT / "data" / "ablation" / "ablation_course.json").read_text())["config"]
    configs = resolved("ablation", "--config", str(REPO_ROOT / "configs" / "ablation_course.yaml"))
    assert to_dict(configs["ablation"]) == recorded, "the committed ablation JSON comes from this recipe"


def test_model_and_audio_settings_that_must_agree_are_checked():
    for name in ("tiny", "course", "paper"):
        check_audio(TEACHER_PRESETS[name], AUDIO_PRESETS[name])
        check_audio(STUDENT_PRESETS[name], AUDIO_PRESETS[name])
    with pytest.raises(RecipeError, match="hop_length"):
        check_audio(preset(TEACHER_PRESETS, "course", hop_length=300), AUDIO_PRESETS["course"])
    with pytest.raises(RecipeError, match="bits"):
        check_audio(preset(TEACHER_PRESETS, "course", bits=8), AUDIO_PRESETS["course"])


# ----------------------------------------------------------------------------- unknown sections and keys


@pytest.mark.parametrize(
    "kind, text, match",
    [
        ("teacher", "trian:\n  steps: 5\n", r"unknown section\(s\) \['trian'\]"),
        ("student", "losses:\n  power_weight: 1.0\n", r"unknown section\(s\) \['losses'\]"),
        ("teacher", "loss:\n  power_weight: 1.0\n", r"unknown section\(s\) \['loss'\]"),  # a teacher has no loss
        ("teacher", "train:\n  stpes: 5\n", r"train: TrainConfig has no field\(s\) \['stpes'\]"),
        ("student", "loss:\n  power: 1.0\n", r"loss: DistillLoss has no field\(s\) \['power'\]"),
        ("phones", "model:\n  layers: 3\n", r"model: PhoneClassifierConfig has no field\(s\) \['layers'\]"),
        ("ablation", "ablation:\n  stesp: 3\n", r"ablation: AblationConfig has no field\(s\) \['stesp'\]"),
        ("teacher", "- train\n- model\n", "a recipe is a mapping of sections"),
        ("teacher", "train: 5\n", "train: expected a mapping"),
    ],
)
def test_unknown_sections_and_keys_are_errors_naming_the_file_and_key(tmp_path, kind, text, match):
    path = recipe(tmp_path, text)
    with pytest.raises(RecipeError, match=match) as error:
        resolved(kind, "--config", str(path))
    assert str(path) in str(error.value)


# ----------------------------------------------------------------------------- types


@pytest.mark.parametrize(
    "text, match",
    [
        ('train:\n  bf16: "false"\n', r"train: bf16 = 'false' \(str\) must be a bool"),
        ("train:\n  bf16: 0\n", r"bf16 = 0 \(int\) must be a bool"),
        ("train:\n  steps: 2.5\n", r"steps = 2.5 \(float\) must be a int"),
        ("train:\n  steps: true\n", r"steps = True \(bool\) must be a int"),
        ('train:\n  lr: "fast"\n', r"lr = 'fast' \(str\) must be a float"),
        ("model:\n  layers: [1, 2]\n", r"model: layers = \[1, 2\] \(list\) must be a int"),
        ("model:\n  log_mel_mean: high\n", r"log_mel_mean = 'high' \(str\) must be a float"),
    ],
)
def test_wrong_types_are_refused(tmp_path, text, match):
    with pytest.raises(RecipeError, match=match):
        resolved("teacher", "--config", str(recipe(tmp_path, text)))


def test_yaml_1_1_exponent_floats_are_read_as_floats(tmp_path):
    train = resolved("teacher", "--config", str(recipe(tmp_path, "train:\n  lr: 1e-3\n  lr_final: 5E-2\n")))["train"]
    assert train.lr == 1e-3 and isinstance(train.lr, float) and train.lr_final == 0.05


def test_lists_become_tuples_and_ints_floats():
    configs = resolved("student", "--preset", "tiny")
    assert isinstance(configs["model"].flow_layers, tuple)
    with_int = resolved("teacher", "--steps", "3")  # an int flag on an int field stays an int
    assert with_int["train"].steps == 3 and isinstance(with_int["train"].steps, int)


# ----------------------------------------------------------------------------- ranges


@pytest.mark.parametrize(
    "text, match",
    [
        ("train:\n  steps: -5\n", r"steps = -5 must be > 0"),
        ("train:\n  steps: 0\n", r"steps = 0 must be > 0"),
        ("train:\n  checkpoint_every: 0\n", r"checkpoint_every = 0 must be > 0"),
        ("train:\n  batch_size: 0\n", r"batch_size = 0 must be > 0"),
        ("train:\n  grad_clip: -1\n", r"grad_clip = -1.0 must be > 0"),
        ("train:\n  grad_accum: 0\n", r"grad_accum = 0 must be >= 1"),
        ("train:\n  ema_decay: 1.0\n", r"ema_decay = 1.0 must be in \[0, 1\)"),
        ("train:\n  lr_schedule: linear\n", r"lr_schedule = 'linear' must be 'step' or 'cosine'"),
        ("train:\n  bf16: true\n  fp16: true\n", "bf16 and fp16 are both set"),
        ("train:\n  window: 1000\n", "not a multiple of audio.hop_length = 256"),
        ("audio:\n  n_mels: 0\n", r"audio: n_mels = 0 must be > 0"),
        ("train:\n  lr: .inf\n", r"train: lr = inf must be a finite number"),
        ("loss:\n  power_weight: .inf\n", r"loss: power_weight = inf must be a finite number"),
    ],
)
def test_values_out_of_range_are_refused(tmp_path, text, match):
    path = recipe(tmp_path, text)
    with pytest.raises(RecipeError, match=match) as error:
        resolved("student" if text.startswith("loss") else "teacher", "--config", str(path))
    assert str(path) in str(error.value)


@pytest.mark.parametrize(
    "text, culprit",
    [
        ("model:\n  residual_channels: 1000000000\n", "residual_channels=1000000000"),
        ("model:\n  layers: 1000000\n  stacks: 1\n", "layers=1000000"),
    ],
)
def test_a_model_too_large_to_train_is_refused_from_the_recipe_before_anything_is_built(
    tmp_path, monkeypatch, text, culprit
):
    monkeypatch.setattr("pwn_lib.sizes.available_memory", lambda: 8 * 10**9)  # a laptop's, whatever this machine has
    path = recipe(tmp_path, text)
    started = time.perf_counter()
    with pytest.raises(RecipeError, match=f"needs about .* GB, more than 50% of the 8.0 GB available; model.{culprit}"):
        resolved("teacher", "--preset", "tiny", "--config", str(path))
    assert time.perf_counter() - started < 2.0


def test_activations_too_large_for_this_machine_stop_a_cpu_run_before_any_data_loads(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("pwn_lib.sizes.available_memory", lambda: 8 * 10**9)
    path = recipe(tmp_path, "train:\n  batch_size: 4000\n  window: 16384\n")
    monkeypatch.setattr("pwn_lib.train.RUNS", {})  # reaching a run at all would be a KeyError
    with pytest.raises(SystemExit, match=r"training needs at least .* GB of activations for train.batch_size=4000"):
        train.main(["teacher", "--config", str(path), "--device", "cpu", "--out", str(tmp_path / "run")])
    assert not (tmp_path / "run").exists()
    # the same recipe is accepted for a GPU, and the course recipe fits on the CPU
    huge = resolved("teacher", "--config", str(path))
    train.check_activations(build_parser().parse_args(["teacher", "--config", str(path), "--device", "cuda"]), huge)
    train.check_activations(build_parser().parse_args(["teacher", "--device", "cpu"]), resolved("teacher"))


def test_loss_weights_and_ablation_budgets_are_range_checked(tmp_path):
    with pytest.raises(RecipeError, match="loss: power_weight = -1.0 must be >= 0"):
        resolved("student", "--config", str(recipe(tmp_path, "loss:\n  power_weight: -1\n")))
    with pytest.raises(RecipeError, match="ablation.steps = 0 must be > 0"):
        resolved("ablation", "--config", str(recipe(tmp_path, "ablation:\n  steps: 0\n")))


@pytest.mark.parametrize(
    "flags, match",
    [
        (["--steps", "0"], "command line: steps = 0 must be > 0"),
        (["--batch-size", "-2"], "command line: batch_size = -2 must be > 0"),
        (["--grad-accum", "0"], "command line: grad_accum = 0 must be >= 1"),
    ],
)
def test_flags_are_range_checked_like_the_recipe(flags, match):
    with pytest.raises(RecipeError, match=match):
        resolved("teacher", "--preset", "tiny", *flags)


@pytest.mark.parametrize(
    "flags, match",
    [
        (["--threads", "0"], "argument --threads: 0 is not >= 1"),
        (["--threads", "-1"], "argument --threads: -1 is not >= 1"),
        (["--device", "foo"], "argument --device: invalid choice: 'foo'"),
        (["--steps", "2.5"], "argument --steps: invalid int value: '2.5'"),
        (["--eval-seconds", "-1"], "argument --eval-seconds: -1.0 is not a finite number > 0"),
        (["--eval-seconds", "nan"], "argument --eval-seconds: nan is not a finite number > 0"),
        (["--phone-utterances", "-1"], "argument --phone-utterances: -1 is not >= 0"),
    ],
)
def test_bad_flags_are_refused_by_the_parser(capsys, flags, match):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["teacher", *flags])
    assert match in capsys.readouterr().err


# ----------------------------------------------------------------------------- the YAML file itself


def test_a_yaml_syntax_error_names_the_file(tmp_path):
    path = recipe(tmp_path, "train:\n  steps: [1, 2\n")
    with pytest.raises(RecipeError, match=re.escape(str(path)) + ": not valid YAML") as error:
        resolved("teacher", "--config", str(path))
    assert "<unicode string>" not in str(error.value) and f'in "{path}", line 2' in str(error.value)


def test_a_recipe_that_is_not_utf8_text_is_refused_by_name(tmp_path):
    path = tmp_path / "binary.yaml"
    path.write_bytes(b"\xff\xfe\x00train")
    with pytest.raises(RecipeError, match=re.escape(str(path)) + ": not UTF-8 text"):
        resolved("teacher", "--config", str(path))


def test_a_missing_recipe_says_where_the_recipes_are(tmp_path):
    with pytest.raises(RecipeError, match="no such file; the course's recipes are in configs/"):
        resolved("teacher", "--config", str(tmp_path / "nope.yaml"))


BILLION_LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi", strict=True)
)


def test_a_yaml_bomb_is_refused_before_it_expands(tmp_path):
    path = recipe(tmp_path, BILLION_LAUGHS)
    assert path.stat().st_size < 500  # 9**9 (387 million) strings once expanded
    started = time.perf_counter()
    with pytest.raises(RecipeError, match=r"line 2: YAML aliases \(\*a\) are not allowed"):
        resolved("teacher", "--config", str(path))
    assert time.perf_counter() - started < 1.0


def test_a_huge_or_node_heavy_file_is_refused(tmp_path):
    big = recipe(tmp_path, "# padding\n" * (MAX_RECIPE_BYTES // 10 + 1), "big.yaml")
    with pytest.raises(RecipeError, match="bytes; a recipe is at most"):
        resolved("teacher", "--config", str(big))
    many = recipe(tmp_path, "train: [" + ", ".join(["1"] * 12_000) + "]\n", "many.yaml")
    with pytest.raises(RecipeError, match="more than 10000 YAML nodes"):
        resolved("teacher", "--config", str(many))


# ----------------------------------------------------------------------------- the command refuses before any work


def test_the_command_refuses_a_bad_recipe_before_loading_data_and_writes_nothing(tmp_path):
    """`python -m pwn_lib.train` runs train.py's main: `--steps 0` exits non-zero with the reason, and no
    artifact (random weights) is published."""
    out = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-m", "pwn_lib.train", "teacher", "--preset", "tiny", "--steps", "0", "--out", str(out)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode != 0 and "command line: steps = 0 must be > 0" in done.stderr
    assert not out.exists()


def test_an_out_that_is_a_file_or_a_student_as_teacher_or_init_is_refused_by_name(tmp_path):
    from pwn_lib.train import main

    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(SystemExit, match=f"--out {afile} is a file; name a folder"):
        main(["teacher", "--preset", "tiny", "--no-eval", "--out", str(afile)])
    student = str(REPO_ROOT / "data/checkpoints/student_course")
    with pytest.raises(SystemExit, match="--teacher .*: a 'student' checkpoint; this student run needs a teacher one"):
        main(["student", "--preset", "tiny", "--no-eval", "--out", str(tmp_path / "s"), "--teacher", student])
    with pytest.raises(SystemExit, match="--init .*: a 'student' checkpoint; this teacher run needs a teacher one"):
        main(["teacher", "--preset", "tiny", "--no-eval", "--out", str(tmp_path / "t"), "--init", student])
    assert [p.name for p in tmp_path.iterdir()] == ["afile"]


def test_a_diverged_run_ends_with_its_message_as_one_line(tmp_path, monkeypatch):
    from pwn_lib import train

    def diverge(args, resolved):
        raise FloatingPointError("non-finite loss at step 3; the last good checkpoint is ckpt-00000002-0")

    monkeypatch.setitem(train.RUNS, "teacher", diverge)
    with pytest.raises(SystemExit, match="^error: non-finite loss at step 3; the last good checkpoint is ckpt-0"):
        train.main(["teacher", "--preset", "tiny", "--no-eval", "--out", str(tmp_path / "run")])


def test_a_cuda_device_on_a_machine_without_one_is_refused_by_name():
    import torch

    from pwn_lib.train import main

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(SystemExit, match="--device cuda: this machine has no CUDA device; use --device cpu"):
        main(["teacher", "--preset", "tiny", "--device", "cuda"])
