"""The shared training loop: schedule, EMA, exact resume, NaN stop, atomic checkpoints."""

from __future__ import annotations

import dataclasses
import functools
import json

import pytest
import torch
from torch import nn

from pwn_lib import artifacts
from pwn_lib.config import TEACHER_PRESETS, TrainConfig
from pwn_lib.train import warm_start
from pwn_lib.trainer import EMA, Trainer, learning_rate
from pwn_lib.wavenet import WaveNet


class Regression(torch.utils.data.Dataset):
    """Deterministic toy data: item i is a fixed (input, target) pair."""

    def __len__(self) -> int:
        return 64

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(i)
        x = torch.randn(3, generator=g)
        return {"x": x, "y": x.sum(0, keepdim=True) + 0.1 * torch.randn(1, generator=g)}


def noisy_mse(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
    """Uses the global RNG on purpose: resume must reproduce the noise as well as the batches."""
    noise = 0.01 * torch.randn_like(batch["y"])
    loss = ((model(batch["x"]) - batch["y"] - noise) ** 2).mean()
    return loss, {"noise": noise.abs().mean().item()}


def small_config(**overrides) -> TrainConfig:
    values = dict(
        steps=8, batch_size=4, lr=1e-2, lr_warmup=2, lr_decay_every=3, log_every=1, checkpoint_every=4, ema_decay=0.9
    )
    return TrainConfig(**{**values, **overrides})


def trainer(out, cfg=None) -> Trainer:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1))
    return Trainer(model, noisy_mse, cfg or small_config(), out, model_config={"toy": True}, kind="toy")


def test_learning_rate_warms_up_then_halves():
    cfg = small_config(lr=1.0, lr_warmup=4, lr_decay_every=10)
    assert [learning_rate(s, cfg) for s in (0, 1, 3)] == [0.25, 0.5, 1.0]
    assert learning_rate(10, cfg) == 0.5 and learning_rate(25, cfg) == 0.25


def test_ema_moves_toward_the_weights_and_lags_behind():
    model = nn.Linear(2, 1)
    ema = EMA(model, decay=0.5)
    start = ema.shadow["weight"].clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    for _ in range(3):
        ema.update(model)
    moved = ema.shadow["weight"] - start
    assert torch.all(moved > 0.1), "the EMA copy never moved toward the weights"
    assert torch.all(moved < 1.0), "the EMA copy jumped to the weights instead of averaging"


def test_resume_matches_an_uninterrupted_run(tmp_path):
    straight = trainer(tmp_path / "straight")
    straight.fit(Regression(), progress=False)

    first = trainer(tmp_path / "split")
    first.fit(Regression(), steps=4, progress=False)
    second = trainer(tmp_path / "split")
    assert second.resume() and second.step == 4
    second.fit(Regression(), progress=False)

    assert_same_run(straight, second)


def test_stop_at_ends_early_on_the_full_schedule_and_the_rest_resumes(tmp_path):
    """A recipe stopped part-way (``stop_at``) is the first part of the whole run, resumable to its end."""
    straight = trainer(tmp_path / "straight")
    straight.fit(Regression(), progress=False)

    first = trainer(tmp_path / "split", small_config(stop_at=5))
    first.fit(Regression(), progress=False)
    assert first.step == 5
    assert [h["lr"] for h in first.history] == [h["lr"] for h in straight.history[:5]]
    second = trainer(tmp_path / "split")
    assert second.resume() and second.step == 5
    second.fit(Regression(), progress=False)
    assert_same_run(straight, second)


def assert_same_run(straight: Trainer, resumed: Trainer) -> None:
    """Bit for bit: raw weights, EMA weights, Adam's moments and the logged losses."""
    for name, value in straight.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[name], value), name
    for name, value in straight.ema.shadow.items():
        assert torch.equal(resumed.ema.shadow[name], value), f"ema {name}"
    moments, resumed_moments = straight.optimizer.state_dict()["state"], resumed.optimizer.state_dict()["state"]
    assert set(moments) == set(resumed_moments)
    for index, slots in moments.items():
        assert all(torch.equal(slots[k], resumed_moments[index][k]) for k in ("exp_avg", "exp_avg_sq")), index
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in straight.history]


def corpus_trainer(kind: str, out, teacher=None) -> tuple[Trainer, torch.utils.data.Dataset]:
    """A tiny teacher or student on real corpus windows, with the command line's loss functions."""
    from pwn_lib.config import AUDIO_PRESETS, DistillLoss
    from pwn_lib.data import AudioWindows, load_corpus
    from pwn_lib.losses import student_loss
    from pwn_lib.student import build_student
    from pwn_lib.wavenet import build_teacher, teacher_loss

    cfg = small_config(steps=4, batch_size=2, window=1_024, checkpoint_every=2, lr=1e-3)
    torch.manual_seed(0)
    if kind == "teacher":
        model, loss_fn = build_teacher("tiny"), teacher_loss
    elif kind == "teacher_input_noise":  # the noise draws come from the global RNG that the resume state restores
        model, loss_fn = build_teacher("tiny"), functools.partial(teacher_loss, input_noise=0.02)
    else:
        model, loss_fn = build_student("tiny"), student_loss(teacher, DistillLoss(n_draws=2))
    windows = AudioWindows(load_corpus("train"), cfg.window, AUDIO_PRESETS["tiny"], seed=0, length=8)
    return Trainer(model, loss_fn, cfg, out, model_config={}, kind=kind.split("_")[0]), windows


@pytest.mark.parametrize("kind", ["teacher", "teacher_input_noise", "student"])
def test_resume_of_the_real_teacher_and_student_is_bit_exact(tmp_path, kind):
    teacher = None
    if kind == "student":
        from pwn_lib.wavenet import build_teacher

        torch.manual_seed(1)
        teacher = build_teacher("tiny")
    straight, windows = corpus_trainer(kind, tmp_path / "straight", teacher)
    straight.fit(windows, progress=False)
    first, _ = corpus_trainer(kind, tmp_path / "split", teacher)
    first.fit(windows, steps=2, progress=False)
    resumed, _ = corpus_trainer(kind, tmp_path / "split", teacher)
    assert resumed.resume() and resumed.step == 2
    resumed.fit(windows, progress=False)
    assert_same_run(straight, resumed)


def test_training_reduces_the_loss_and_ships_ema_weights(tmp_path):
    t = trainer(tmp_path, small_config(steps=40, lr_decay_every=1000, checkpoint_every=40))
    history = t.fit(Regression(), progress=False)
    assert history[-1]["loss"] < 0.5 * history[0]["loss"]
    state, config, metrics = artifacts.load_artifact(tmp_path)
    assert config["kind"] == "toy" and metrics["steps"] == 40
    for name, value in t.ema.shadow.items():
        torch.testing.assert_close(state[name], value)


def test_non_finite_loss_stops_with_the_step_and_batch(tmp_path):
    def explode(model, batch):
        loss, extra = noisy_mse(model, batch)
        return loss * (float("nan") if t.step == 2 else 1.0), extra

    t = trainer(tmp_path)
    t.loss_fn = explode
    with pytest.raises(FloatingPointError, match=r"at step 2, batch of dataset items 8\.\.11"):
        t.fit(Regression(), progress=False)


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "metrics.json"
    artifacts.write_json(path, {"ok": 1})

    def broken(tmp):
        tmp.write_text("half a fi")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        artifacts._atomic(path, broken)
    assert json.loads(path.read_text()) == {"ok": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"], "a temporary file was left behind"


def test_load_artifact_names_the_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"missing \['model.safetensors', 'config.json'\]"):
        artifacts.load_artifact(tmp_path)


@pytest.mark.slow
def test_ten_step_teacher_and_student_runs_on_the_corpus(tmp_path):
    """The integration test: `python -m pwn_lib.train` for 10 steps each, then reload both artifacts."""
    from pwn_lib.student import IAFStudent
    from pwn_lib.train import main
    from pwn_lib.wavenet import WaveNet

    teacher_dir, student_dir = tmp_path / "teacher", tmp_path / "student"
    common = ["--preset", "tiny", "--steps", "10", "--eval-seconds", "0.05"]
    assert main(["teacher", *common, "--phone-utterances", "1", "--out", str(teacher_dir)]) == 0
    assert main(["student", *common, "--teacher", str(teacher_dir), "--out", str(student_dir)]) == 0

    teacher_metrics = json.loads((teacher_dir / "metrics.json").read_text())
    assert teacher_metrics["steps"] == 10 and teacher_metrics["command"].startswith("python -m pwn_lib.train teacher")
    assert 0 < teacher_metrics["heldout_nll_bits"] < 40
    # Ten steps teach a teacher nothing: the machine listener must hear its audio as worse than real speech.
    assert teacher_metrics["phone_error_rate_generated"] > teacher_metrics["phone_error_rate_real"] + 0.2
    assert "1 shortest test" in teacher_metrics["phone_eval"]
    config = json.loads((teacher_dir / "config.json").read_text())
    assert config["audio"]["sample_rate"] == 16_000 and config["model"]["log_mel_mean"] is not None
    assert teacher_metrics["config"]["train"]["steps"] == 10, "metrics.json records the resolved config"
    student_metrics = json.loads((student_dir / "metrics.json").read_text())
    assert {
        "heldout_kl",
        "logmel_distance_student_vs_real",
        "logmel_distance_teacher_vs_real",
        "student_timesteps_per_s",
    } <= set(student_metrics)
    assert WaveNet.from_checkpoint(teacher_dir).audio.sample_rate == 16_000
    assert IAFStudent.from_checkpoint(student_dir).sample(torch.zeros(1, 80, 2) - 5).shape == (1, 1, 512)


class Replay(WaveNet):
    """A stand-in teacher whose "generation" replays given signals, to check the phone-error-rate plumbing."""

    def __init__(self, signals: list[torch.Tensor], hop: int):
        super().__init__(TEACHER_PRESETS["tiny"])
        self.signals, self.hop = signals, hop

    def generate(self, mel: torch.Tensor, **sampling) -> torch.Tensor:
        out = torch.zeros(mel.shape[0], 1, mel.shape[-1] * self.hop)
        for i, x in enumerate(self.signals):
            out[i, 0, : len(x)] = x
        return out


def test_resynthesis_phone_error_rate_scores_replayed_speech_like_speech():
    """Replaying the real audio must score exactly the real PER; silence must score (nearly) all errors."""
    from pwn_lib.config import AudioConfig
    from pwn_lib.data import load_corpus
    from pwn_lib.heldout import resynthesis_phone_error_rate

    audio = AudioConfig()
    shortest = sorted(load_corpus("test"), key=lambda u: (len(u.audio), u.id))[:3]
    real = [torch.from_numpy(u.audio[: len(u.audio) // audio.hop_length * audio.hop_length]) for u in shortest]

    replayed = resynthesis_phone_error_rate(Replay(real, audio.hop_length), audio, count=3)
    assert replayed["phone_error_rate_generated"] == replayed["phone_error_rate_real"]
    assert replayed["phone_error_rate_real"] < 0.5 < replayed["phone_error_rate_white_noise"]

    silent = resynthesis_phone_error_rate(Replay([torch.zeros_like(x) for x in real], audio.hop_length), audio, count=3)
    assert silent["phone_error_rate_generated"] > 0.9


def test_cosine_schedule_runs_from_lr_to_the_final_fraction():
    cfg = small_config(lr=1.0, lr_warmup=0, lr_schedule="cosine", lr_final=0.1, steps=100)
    assert learning_rate(0, cfg) == 1.0
    assert abs(learning_rate(50, cfg) - 0.55) < 1e-12  # halfway down the cosine: (1 + 0.1) / 2
    assert abs(learning_rate(100, cfg) - 0.1) < 1e-12
    values = [learning_rate(s, cfg) for s in range(101)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))
    with pytest.raises(ValueError, match="lr_schedule"):
        learning_rate(0, small_config(lr_schedule="linear"))


@pytest.mark.slow
def test_the_phone_classifier_trains_through_the_same_loop(tmp_path):
    from pwn_lib.config import REPO_ROOT
    from pwn_lib.phones import PhoneClassifier
    from pwn_lib.train import main

    out = tmp_path / "phones"
    recipe = str(REPO_ROOT / "configs" / "phones_course.yaml")
    assert main(["phones", "--config", recipe, "--steps", "3", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 3 and metrics["command"].endswith(str(out))
    assert metrics["test_per"] > 0.5, "three steps cannot teach it to transcribe: the PER must show that"
    assert PhoneClassifier.from_checkpoint(out).audio.n_mels == 80


def test_a_warm_start_may_add_a_conditioning_network_and_starts_from_the_same_function(tmp_path):
    """--init with a checkpoint whose cond_layers is 0 grows the model: the added network is the identity, so the
    grown teacher's output equals the checkpoint's; any other architecture change is refused."""
    torch.manual_seed(0)
    cfg = dataclasses.replace(TEACHER_PRESETS["tiny"], log_mel_mean=-5.0, log_mel_std=2.0)
    base = WaveNet(cfg)
    base.save(tmp_path / "base")
    grown_cfg = dataclasses.replace(cfg, cond_layers=2, cond_hidden=8)
    grown = WaveNet(grown_cfg)
    warm_start(grown, grown_cfg, tmp_path / "base", "teacher")
    x = torch.rand(1, 1, 4 * cfg.hop_length) - 0.5
    c = torch.randn(1, cfg.cond_channels, 4) - 5.0
    with torch.no_grad():
        assert torch.equal(base(x, c), grown(x, c))
    other = dataclasses.replace(cfg, kernel_size=cfg.kernel_size + 1)
    with pytest.raises(SystemExit, match="warm starts need the same architecture"):
        warm_start(WaveNet(other), other, tmp_path / "base", "teacher")
    narrower = dataclasses.replace(cfg, residual_channels=cfg.residual_channels - 2)
    with pytest.raises(SystemExit, match="warm starts need the same architecture"):
        warm_start(WaveNet(narrower), narrower, tmp_path / "base", "teacher")


def test_a_warm_start_may_add_stacks_and_starts_from_the_same_function(tmp_path):
    """--init with a teacher of fewer stacks (the same layers per stack) grows it: the grown teacher's output
    equals the checkpoint's on a full forward pass, and every new block's output weights get a gradient."""
    torch.manual_seed(0)
    cfg = dataclasses.replace(TEACHER_PRESETS["tiny"], log_mel_mean=-5.0, log_mel_std=2.0)
    base = WaveNet(cfg)
    base.save(tmp_path / "base")
    deeper = dataclasses.replace(cfg, stacks=3 * cfg.stacks, layers=3 * cfg.layers)
    grown = WaveNet(deeper)
    warm_start(grown, deeper, tmp_path / "base", "teacher")
    x = torch.rand(1, 1, 4 * cfg.hop_length) - 0.5
    c = torch.randn(1, cfg.cond_channels, 4) - 5.0
    with torch.no_grad():
        torch.testing.assert_close(grown(x, c), base(x, c), rtol=1e-5, atol=1e-5)
    grown(x, c).square().mean().backward()
    for block in grown.blocks[cfg.layers :]:
        assert block.out.weight.grad.abs().sum() > 0, "a new block that gets no gradient would never learn"
    other_cycle = dataclasses.replace(cfg, stacks=cfg.stacks, layers=2 * cfg.layers)
    with pytest.raises(SystemExit, match="more stacks of the same layers per stack"):
        warm_start(WaveNet(other_cycle), other_cycle, tmp_path / "base", "teacher")


def test_a_warm_start_may_widen_the_blocks_and_starts_from_the_same_function(tmp_path):
    """--init with a narrower teacher (fewer residual and gate channels) grows it: the wide teacher's output
    equals the checkpoint's on a full forward pass, with two stacks added at once, and the new weights that must
    learn (residual rows, output columns of the new gated units) get a gradient."""
    torch.manual_seed(0)
    cfg = dataclasses.replace(TEACHER_PRESETS["tiny"], log_mel_mean=-5.0, log_mel_std=2.0)
    base = WaveNet(cfg)
    with torch.no_grad():  # a trained-looking checkpoint: no zero weights that would hide a misplaced row
        for p in base.parameters():
            p.add_(0.05 * torch.randn_like(p))
    base.save(tmp_path / "base")
    r, g = cfg.residual_channels, cfg.gate_channels
    wide = dataclasses.replace(cfg, residual_channels=2 * r, gate_channels=2 * g)
    grown = WaveNet(wide)
    warm_start(grown, wide, tmp_path / "base", "teacher")
    x = torch.rand(2, 1, 4 * cfg.hop_length) - 0.5
    c = torch.randn(2, cfg.cond_channels, 4) - 5.0
    with torch.no_grad():
        torch.testing.assert_close(grown(x, c), base(x, c), rtol=1e-5, atol=1e-5)
    grown(x, c).square().mean().backward()
    for block in grown.blocks[:-1]:
        assert block.out.weight.grad[r : 2 * r].abs().sum() > 0, "new residual rows must learn"
        assert block.out.weight.grad[:, g // 2 :].abs().sum() > 0, "new gated units must learn"
    both = dataclasses.replace(wide, stacks=2 * cfg.stacks, layers=2 * cfg.layers)
    deep_wide = WaveNet(both)
    warm_start(deep_wide, both, tmp_path / "base", "teacher")
    with torch.no_grad():
        torch.testing.assert_close(deep_wide(x, c), base(x, c), rtol=1e-5, atol=1e-5)


def test_a_warm_start_may_add_speakers_and_starts_from_the_same_function_for_every_voice(tmp_path):
    """--init with a single-speaker teacher into one with n_speakers > 0: every speaker id gives the checkpoint's
    output on a full forward pass (the speaker projections start at zero), the projections learn at once, and after
    one step the voices differ. A grown model whose projections kept their fresh weights would fail the first check."""
    torch.manual_seed(0)
    cfg = dataclasses.replace(TEACHER_PRESETS["tiny"], log_mel_mean=-5.0, log_mel_std=2.0)
    base = WaveNet(cfg)
    with torch.no_grad():
        for p in base.parameters():
            p.add_(0.05 * torch.randn_like(p))
    base.save(tmp_path / "base")
    speaking = dataclasses.replace(cfg, n_speakers=5, speaker_dim=4)
    grown = WaveNet(speaking)
    x = torch.rand(5, 1, 4 * cfg.hop_length) - 0.5
    c = (torch.randn(1, cfg.cond_channels, 4) - 5.0).expand(5, -1, -1)
    ids = torch.arange(5)
    with torch.no_grad():
        assert not torch.allclose(grown(x, c, ids), base(x, c), atol=1e-3), "a fresh model must not pass by chance"
    warm_start(grown, speaking, tmp_path / "base", "teacher")
    with torch.no_grad():
        torch.testing.assert_close(grown(x, c, ids), base(x, c), rtol=1e-5, atol=1e-5)
    loss = grown.loss(x, c, ids)
    loss.backward()
    for block in grown.blocks:
        assert block.speaker.weight.grad.abs().sum() > 0, "a speaker projection without gradient never learns"
    with torch.no_grad():
        for p in grown.parameters():
            p.sub_(1e-2 * p.grad.sign() if p.grad is not None else 0)
        same = x[:1].expand(2, -1, -1), c[:2]
        two = grown(*same, torch.tensor([0, 3]))
    assert not torch.allclose(two[0], two[1]), "after a step, two speaker ids must give different outputs"


@pytest.mark.slow
def test_a_five_voice_teacher_and_student_record_every_voices_heldout_figures(tmp_path, monkeypatch):
    """Two-step five-voice runs: the teacher's metrics hold each voice's held-out NLL and their mean, the student's
    each voice's held-out KL (with the ids, so they differ) and valid scores per voice."""
    from pwn_lib.data import VOICES
    from pwn_lib.train import main

    monkeypatch.setenv("PWN_FAST", "1")
    recipe = tmp_path / "five.yaml"
    recipe.write_text(
        "model:\n  n_speakers: 5\n  speaker_dim: 4\ntrain:\n  voices: [en, es, fr, it, ru]\n  checkpoint_every: 2\n"
    )
    common = ["--preset", "tiny", "--config", str(recipe), "--steps", "2"]
    assert main(["teacher", *common, "--out", str(tmp_path / "t")]) == 0
    assert main(["student", *common, "--teacher", str(tmp_path / "t"), "--out", str(tmp_path / "s")]) == 0
    teacher = json.loads((tmp_path / "t" / "metrics.json").read_text())
    per_voice = [teacher[f"heldout_nll_bits_{v}"] for v in VOICES]
    assert teacher["heldout_nll_bits"] == pytest.approx(sum(per_voice) / len(VOICES))
    student = json.loads((tmp_path / "s" / "metrics.json").read_text())
    kls = [student[f"heldout_kl_{v}"] for v in VOICES]
    assert student["heldout_kl"] == pytest.approx(sum(kls) / len(VOICES)) and len(set(kls)) == len(VOICES)
    assert all(f"valid_{v}_mcd" in student for v in VOICES)
