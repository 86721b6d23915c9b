"""One training loop for the teacher, the student and the phone classifier.

Adam with warm-up and step decay, gradient clipping, EMA (Polyak) weights, optional bf16
autocast, tqdm progress, TensorBoard scalars and audio, atomic safetensors checkpoints,
exact resume, and a hard stop on a non-finite loss.

Command line::

    python -m pwn_lib.train teacher --preset course
    python -m pwn_lib.train student --preset course --teacher data/checkpoints/teacher_course
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import load_file
from torch import nn
from tqdm.auto import tqdm

from pwn_lib.artifacts import load_artifact, save_artifact, write_json, write_tensors
from pwn_lib.audio import log_mel, log_mel_distance, loudest_window, save_audio
from pwn_lib.config import (
    AUDIO_PRESETS,
    CHECKPOINT_DIR,
    STUDENT_PRESETS,
    TEACHER_PRESETS,
    TRAIN_PRESETS,
    AudioConfig,
    DistillLoss,
    StudentConfig,
    TrainConfig,
    WaveNetConfig,
    default_device,
    fast_mode,
    from_dict,
    preset,
    seed_everything,
    to_dict,
)
from pwn_lib.data import AudioWindows, load_corpus
from pwn_lib.distill import distillation_loss
from pwn_lib.evaluate import Listener, QuickScore, mel_batch
from pwn_lib.losses import mr_stft_loss, power_loss
from pwn_lib.phones import DEFAULT_CHECKPOINT as PHONES_CHECKPOINT
from pwn_lib.student import IAFStudent
from pwn_lib.wavenet import WaveNet

LossFn = Callable[[nn.Module, dict[str, torch.Tensor]], tuple[torch.Tensor, dict[str, float]]]

RESUME_DIR = "resume"


# ----------------------------------------------------------------------------- optimisation


def learning_rate(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up over ``lr_warmup`` steps, then the schedule ``cfg.lr_schedule``.

    ``"step"`` halves the rate every ``lr_decay_every`` steps; ``"cosine"`` follows half a cosine
    from ``lr`` at step 0 to ``lr * lr_final`` at step ``cfg.steps``.
    """
    warm = min(1.0, (step + 1) / cfg.lr_warmup) if cfg.lr_warmup > 0 else 1.0
    if cfg.lr_schedule == "step":
        return cfg.lr * warm * 0.5 ** (step // cfg.lr_decay_every)
    if cfg.lr_schedule == "cosine":
        progress = min(1.0, step / max(1, cfg.steps))
        return cfg.lr * warm * (cfg.lr_final + (1 - cfg.lr_final) * 0.5 * (1 + math.cos(math.pi * progress)))
    raise ValueError(f"unknown lr_schedule {cfg.lr_schedule!r}; choose 'step' or 'cosine'")


class EMA:
    """Exponential moving average of a model's floating-point weights (Polyak averaging).

    The decay ramps up as min(decay, (1 + n) / (10 + n)) so that short runs are averaged too.
    """

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.updates = 0
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for name, value in model.state_dict().items():
            if value.is_floating_point():
                self.shadow[name].lerp_(value.detach(), 1.0 - decay)
            else:
                self.shadow[name].copy_(value)
        self.updates += 1

    def averaged_model(self, model: nn.Module) -> nn.Module:
        """Load the averaged weights into ``model`` (in place) and return it."""
        model.load_state_dict(self.shadow)
        return model


def _flatten_optimizer(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Adam's state as flat tensors (for safetensors) plus the JSON-able rest."""
    state = opt.state_dict()
    tensors, scalars = {}, {}
    for index, slots in state["state"].items():
        for key, value in slots.items():
            if torch.is_tensor(value):
                tensors[f"optim.{index}.{key}"] = value
            else:
                scalars[f"{index}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, index, key = name.split(".", 2)
            state.setdefault(int(index), {})[key] = value
    for name, value in meta["scalars"].items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}


# ----------------------------------------------------------------------------- the loop


@dataclass
class StepRecord:
    step: int
    loss: float
    lr: float
    grad_norm: float
    seconds: float
    extra: dict[str, float]

    def as_dict(self) -> dict[str, float]:
        return {"step": self.step, "loss": self.loss, "lr": self.lr, "grad_norm": self.grad_norm,
                "seconds": self.seconds, **self.extra}


class Trainer:
    """Train ``model`` with ``loss_fn(model, batch) -> (loss, metrics)`` on a deterministic batch stream.

    Batch ``s`` holds dataset items ``s * batch_size ... (s + 1) * batch_size - 1`` (modulo the
    dataset's length) and step ``s`` runs under ``torch.manual_seed(seed + s)``, so a resumed run
    sees exactly the batches and noise it would have seen without stopping.

    Files in ``out_dir``: the shippable artifact (EMA weights, ``config.json``, ``metrics.json``),
    ``resume/`` (raw weights, optimiser, EMA, history) and ``tb/`` (TensorBoard).
    """

    def __init__(self, model: nn.Module, loss_fn: LossFn, cfg: TrainConfig, out_dir: Path, *,
                 model_config: dict, kind: str, device: torch.device | str = "cpu"):
        self.model, self.loss_fn, self.cfg = model.to(device), loss_fn, cfg
        self.out_dir, self.device = Path(out_dir), torch.device(device)
        self.model_config, self.kind = model_config, kind
        self.optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        self.ema = EMA(model, cfg.ema_decay)
        self.step = 0
        self.history: list[dict[str, float]] = []
        self.train_seconds = 0.0
        self._writer = None

    # -- persistence ----------------------------------------------------------------
    def save(self, metrics: dict | None = None) -> Path:
        """Write the resume state, then the artifact (EMA weights), each file atomically."""
        resume = self.out_dir / RESUME_DIR
        optim_tensors, optim_meta = _flatten_optimizer(self.optimizer)
        raw = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        ema = {f"ema.{k}": v for k, v in self.ema.shadow.items()}
        write_tensors(resume / "state.safetensors", {**raw, **ema, **optim_tensors})
        write_json(resume / "state.json", {
            "step": self.step, "ema_updates": self.ema.updates, "history": self.history,
            "train_seconds": self.train_seconds, "optimizer": optim_meta, "train_config": to_dict(self.cfg),
        })
        summary = {"kind": self.kind, "steps": self.step, "train_seconds": round(self.train_seconds, 1),
                   "final_loss": self.history[-1]["loss"] if self.history else None, **(metrics or {})}
        return save_artifact(self.out_dir, self.ema.shadow, {"kind": self.kind, "model": self.model_config,
                                                            "train": to_dict(self.cfg)}, summary)

    def resume(self) -> bool:
        """Continue from ``out_dir/resume`` if it exists; return whether it did."""
        resume = self.out_dir / RESUME_DIR
        if not (resume / "state.json").is_file():
            return False
        meta = json.loads((resume / "state.json").read_text())
        tensors = load_file(str(resume / "state.safetensors"), device=str(self.device))
        self.model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        self.ema.shadow = {k[4:]: v for k, v in tensors.items() if k.startswith("ema.")}
        self.ema.updates = meta["ema_updates"]
        self.optimizer.load_state_dict(_unflatten_optimizer(tensors, meta["optimizer"]))
        self.step, self.history, self.train_seconds = meta["step"], meta["history"], meta["train_seconds"]
        return True

    # -- training -------------------------------------------------------------------
    def _batches(self, dataset: torch.utils.data.Dataset, stop: int) -> Iterator[dict[str, torch.Tensor]]:
        size = self.cfg.batch_size
        indices = [i % len(dataset) for i in range(self.step * size, stop * size)]
        loader = torch.utils.data.DataLoader(
            torch.utils.data.Subset(dataset, indices), batch_size=size, shuffle=False,
            num_workers=self.cfg.num_workers, drop_last=True,
        )
        for batch in loader:
            yield {k: v.to(self.device) for k, v in batch.items()}

    def _writer_or_none(self):
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.out_dir / "tb"))
        return self._writer

    def train_step(self, batch: dict[str, torch.Tensor]) -> StepRecord:
        """One optimiser step; raises FloatingPointError on a non-finite loss."""
        started = time.perf_counter()
        torch.manual_seed(self.cfg.seed + self.step)
        lr = learning_rate(self.step, self.cfg)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.model.train()
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cfg.bf16):
            loss, extra = self.loss_fn(self.model, batch)
        if not torch.isfinite(loss):
            first = self.step * self.cfg.batch_size
            raise FloatingPointError(
                f"non-finite loss ({loss.item()}) at step {self.step}, batch of dataset items "
                f"{first}..{first + self.cfg.batch_size - 1}; stopping instead of training on NaN. "
                f"Lower the learning rate (now {lr:g}) or check those inputs; the last good checkpoint "
                f"is in {self.out_dir}."
            )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.optimizer.step()
        self.ema.update(self.model)
        self.step += 1
        seconds = time.perf_counter() - started
        self.train_seconds += seconds
        return StepRecord(self.step, loss.item(), lr, grad_norm.item(), seconds, extra)

    def fit(self, dataset: torch.utils.data.Dataset, steps: int | None = None,
            on_checkpoint: Callable[[Trainer], dict] | None = None, progress: bool = True) -> list[dict]:
        """Train until ``steps`` total steps (default ``cfg.steps``), checkpointing as configured.

        ``on_checkpoint(trainer)`` may return extra metrics (e.g. held-out NLL) and log audio.
        """
        stop = self.cfg.steps if steps is None else steps
        writer = self._writer_or_none()
        bar = tqdm(total=stop, initial=self.step, desc=f"train {self.kind}", disable=not progress)
        metrics: dict = {}
        for batch in self._batches(dataset, stop):
            record = self.train_step(batch)
            if record.step % self.cfg.log_every == 0 or record.step == stop:
                self.history.append(record.as_dict())
                for key, value in record.as_dict().items():
                    if key != "step":
                        writer.add_scalar(f"train/{key}", value, record.step)
            bar.update(1)
            bar.set_postfix(loss=f"{record.loss:.4f}")
            if record.step % self.cfg.checkpoint_every == 0 or record.step == stop:
                metrics = on_checkpoint(self) if on_checkpoint else {}
                for key, value in metrics.items():
                    if isinstance(value, (int, float)):
                        writer.add_scalar(f"eval/{key}", value, record.step)
                self.save(metrics)
        bar.close()
        writer.flush()
        return self.history

    def averaged_model(self) -> nn.Module:
        """A copy of the model holding the EMA weights (what gets shipped)."""
        return self.ema.averaged_model(copy.deepcopy(self.model)).eval()


# ----------------------------------------------------------------------------- recipes

HELDOUT_SEED = 1234
STUDENT_DRAWS = DistillLoss.n_draws  # K: logistic draws per step in the cross-entropy estimate


def load_teacher(directory: Path, device: torch.device | str = "cpu") -> WaveNet:
    """Rebuild a shipped teacher (EMA weights) in eval mode."""
    state, config, _ = load_artifact(directory)
    model = WaveNet(from_dict(WaveNetConfig, config["model"]))
    model.load_state_dict(state)
    return model.to(device).eval()


def load_student(directory: Path, device: torch.device | str = "cpu") -> IAFStudent:
    """Rebuild a shipped student (EMA weights) in eval mode."""
    state, config, _ = load_artifact(directory)
    model = IAFStudent(from_dict(StudentConfig, config["model"]))
    model.load_state_dict(state)
    return model.to(device).eval()


def heldout_windows(audio: AudioConfig, window: int = 8_192, count: int = 16, split: str = "test") -> list[dict]:
    """A fixed list of held-out windows (same every call): the yardstick for NLL and KL."""
    dataset = AudioWindows(load_corpus(split), window, audio, seed=HELDOUT_SEED, length=count)
    return [dataset[i] for i in range(count)]


def _stack(items: list[dict], device: torch.device | str) -> dict[str, torch.Tensor]:
    return {key: torch.stack([item[key] for item in items]).to(device) for key in items[0]}


@torch.no_grad()
def teacher_nll_bits(teacher: WaveNet, windows: list[dict], batch_size: int = 4) -> float:
    """Mean teacher-forced NLL of ``windows`` in bits per sample (fp32, eval mode)."""
    device = next(teacher.parameters()).device
    teacher.eval()
    total, count = 0.0, 0
    for start in range(0, len(windows), batch_size):
        batch = _stack(windows[start:start + batch_size], device)
        nll = -teacher.log_prob(batch["audio"], batch["mel"]).double()
        total, count = total + nll.sum().item(), count + nll.numel()
    return total / count / math.log(2)


def heldout_clip(audio: AudioConfig, seconds: float = 1.0, split: str = "test") -> tuple[torch.Tensor, torch.Tensor]:
    """The loudest ``seconds`` of the longest held-out utterance: (1, 1, T) audio and (1, n_mels, T // hop) mel."""
    utterance = max(load_corpus(split), key=lambda u: (len(u.audio), u.id))
    n = int(seconds * audio.sample_rate) // audio.hop_length * audio.hop_length
    x = torch.from_numpy(loudest_window(utterance.audio, n, audio.hop_length)).float()
    mel = torch.from_numpy(log_mel(x.numpy(), audio))
    return x.view(1, 1, -1), mel.unsqueeze(0)


@torch.no_grad()
def resynthesis_phone_error_rate(teacher: WaveNet, audio: AudioConfig, count: int = 8, split: str = "test",
                                 classifier: Path = PHONES_CHECKPOINT) -> dict:
    """A machine listener's verdict: phone error rate of audio generated from held-out log-mels.

    The teacher generates (cached, seed 0) from the log-mels of the ``count`` shortest ``split``
    utterances, each cropped to whole hops. The shipped phone classifier (trained on real speech)
    transcribes the generated audio, the real audio and white noise of the real audio's power, and
    each gets its phone error rate against the utterances' phone targets. Speech-like audio scores
    near the real figure; noise scores near 1.
    """
    utterances = sorted(load_corpus(split), key=lambda u: (len(u.audio), u.id))[:count]
    hop = audio.hop_length
    real = [torch.from_numpy(u.audio[: len(u.audio) // hop * hop]).float() for u in utterances]
    mel = mel_batch([x.numpy() for x in real], audio)
    device = next(teacher.parameters()).device
    generated = teacher.generate(mel.to(device), generator=torch.Generator(device).manual_seed(0)).cpu()
    noise_gen = torch.Generator().manual_seed(HELDOUT_SEED)
    noise = [torch.randn(len(x), generator=noise_gen) * x.square().mean().sqrt() for x in real]
    listener = Listener(classifier)

    def error_rate(signals: list[torch.Tensor]) -> float:
        counts = [listener.errors(x.numpy(), u.id) for x, u in zip(signals, utterances, strict=True)]
        return sum(e for e, _ in counts) / sum(n for _, n in counts)

    return {
        "phone_error_rate_generated": error_rate([generated[i, 0, : len(x)] for i, x in enumerate(real)]),
        "phone_error_rate_real": error_rate(real),
        "phone_error_rate_white_noise": error_rate(noise),
        "phone_eval": f"{len(real)} shortest {split} utterances ({sum(map(len, real)) / audio.sample_rate:.2f} s), "
                      f"classifier {classifier.name}",
    }


def teacher_loss(model: WaveNet, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
    """Mean NLL in nats per sample of a batch of (audio, mel) windows."""
    return model.loss(batch["audio"], batch["mel"]), {}


def _yaml(args: argparse.Namespace) -> dict:
    """The --config file's sections (model:, train:, audio:, loss:), or {} without one."""
    if not args.config:
        return {}
    if not args.config.is_file():
        raise SystemExit(f"--config {args.config}: no such file; the course's recipes are in configs/")
    return yaml.safe_load(args.config.read_text()) or {}


def _configs(args: argparse.Namespace, table: dict) -> tuple[Any, TrainConfig, AudioConfig]:
    """Preset configs, then the YAML file's sections, then command-line overrides."""
    extra = _yaml(args)
    model = preset(table, args.preset, **extra.get("model", {}))
    train = preset(TRAIN_PRESETS, args.preset, **extra.get("train", {}))
    audio = preset(AUDIO_PRESETS, args.preset, **extra.get("audio", {}))
    if args.steps is not None:
        train = dataclasses.replace(train, steps=args.steps)
    if args.bf16:
        train = dataclasses.replace(train, bf16=True)
    return model, train, audio


def _command(args: argparse.Namespace) -> str:
    """The command line that reproduces this run (recorded in metrics.json)."""
    return " ".join(["python -m pwn_lib.train", *args.argv])


def _trainer(args: argparse.Namespace, model: nn.Module, loss_fn: LossFn, model_cfg: Any, train_cfg: TrainConfig,
             audio: AudioConfig, out: Path, device: torch.device) -> tuple[Trainer, AudioWindows]:
    """A Trainer (resumed from ``out`` unless --fresh) and the train split's window stream.

    ``--init DIR`` starts the weights (and their EMA) from a shipped checkpoint instead of from scratch:
    a warm start with a fresh optimiser and schedule. A resume state in ``out`` takes precedence.
    """
    if args.init:
        state, config, _ = load_artifact(args.init)
        if from_dict(type(model_cfg), config["model"]) != model_cfg:
            raise SystemExit(f"--init {args.init}: its model config {config.get('model')} differs from this run's "
                             f"{to_dict(model_cfg)}; warm starts need the same architecture")
        model.load_state_dict(state)
    trainer = Trainer(model, loss_fn, train_cfg, out, model_config=to_dict(model_cfg), kind=args.kind,
                      device=device)
    if not args.fresh and trainer.resume():
        print(f"resuming {out} at step {trainer.step}")
    dataset = AudioWindows(load_corpus("train"), train_cfg.window, audio, seed=train_cfg.seed,
                           length=train_cfg.steps * train_cfg.batch_size)
    return trainer, dataset


def teacher_run(args: argparse.Namespace) -> Path:
    """Train the teacher on the corpus's train split; record held-out NLL and the log-mel distance."""
    model_cfg, train_cfg, audio = _configs(args, TEACHER_PRESETS)
    device = torch.device(args.device or default_device())
    out = args.out or CHECKPOINT_DIR / f"teacher_{args.preset}"
    seed_everything(train_cfg.seed)
    trainer, dataset = _trainer(args, WaveNet(model_cfg), teacher_loss, model_cfg, train_cfg, audio, out, device)
    windows = heldout_windows(audio)

    def evaluate(t: Trainer) -> dict:
        return {"heldout_nll_bits": teacher_nll_bits(t.averaged_model(), windows), "command": _command(args)}

    trainer.fit(dataset, on_checkpoint=evaluate)
    teacher = trainer.averaged_model()
    x, mel = heldout_clip(audio, args.eval_seconds)
    generated = teacher.generate(mel.to(device), generator=torch.Generator(device).manual_seed(0))
    save_audio(out / "generated_heldout.wav", generated.view(-1).cpu().numpy(), audio.sample_rate)
    metrics = {
        "heldout_nll_bits": teacher_nll_bits(teacher, windows),
        "heldout_windows": f"{len(windows)} x {windows[0]['audio'].shape[-1]} samples, test split, seed {HELDOUT_SEED}",
        "logmel_distance_generated_vs_real": log_mel_distance(generated.view(-1), x.view(-1), audio),
        "logmel_distance_silence_vs_real": log_mel_distance(torch.zeros_like(x.view(-1)), x.view(-1), audio),
        "sample_rate": audio.sample_rate, "device": str(device), "command": _command(args),
    }
    if args.phone_utterances:
        metrics.update(resynthesis_phone_error_rate(teacher, audio, args.phone_utterances))
    trainer._writer_or_none().add_audio("heldout/generated", generated.view(1, -1).cpu(), trainer.step,
                                        sample_rate=audio.sample_rate)
    return trainer.save(metrics)


def student_loss(teacher: WaveNet, recipe: DistillLoss) -> LossFn:
    """The student's training loss for ``recipe``: KL + power_weight * power + stft_weight * MR-STFT."""

    def loss_fn(model: IAFStudent, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        terms = distillation_loss(model, teacher, batch["mel"], n_draws=recipe.n_draws)
        x = terms["x"].float()
        power = power_loss(x.squeeze(1), batch["audio"].squeeze(1))
        loss = terms["loss"] + recipe.power_weight * power
        extra = {"kl": terms["kl"].item(), "entropy": terms["entropy"].item(),
                 "cross_entropy": terms["cross_entropy"].item(), "power": power.item()}
        if recipe.stft_weight:
            stft = mr_stft_loss(x, batch["audio"])
            loss = loss + recipe.stft_weight * stft
            extra["mr_stft"] = stft.item()
        return loss, extra

    return loss_fn


def student_run(args: argparse.Namespace) -> Path:
    """Distil the student from a frozen teacher (KL + power loss); record held-out KL and distances."""
    if args.teacher is None:
        raise SystemExit("student training needs --teacher DIR (e.g. data/checkpoints/teacher_course)")
    model_cfg, train_cfg, audio = _configs(args, STUDENT_PRESETS)
    device = torch.device(args.device or default_device())
    out = args.out or CHECKPOINT_DIR / f"student_{args.preset}"
    seed_everything(train_cfg.seed)
    teacher = load_teacher(args.teacher, device)
    student = IAFStudent(model_cfg)
    recipe = from_dict(DistillLoss, _yaml(args).get("loss", {}))
    loss_fn = student_loss(teacher, recipe)

    trainer, dataset = _trainer(args, student, loss_fn, model_cfg, train_cfg, audio, out, device)
    windows = heldout_windows(audio, count=8)
    quick = QuickScore(audio, count=2 if fast_mode() else 4)

    def evaluate(t: Trainer) -> dict:
        averaged = t.averaged_model()
        return {"heldout_kl": heldout_kl(averaged, teacher, windows),
                **{f"valid_{k}": v for k, v in quick(averaged).items()}}

    trainer.fit(dataset, on_checkpoint=evaluate)
    final = trainer.averaged_model()
    metrics = {"heldout_kl": heldout_kl(final, teacher, windows),
               **synthesis_report(final, teacher, audio, args.eval_seconds),
               "teacher": str(args.teacher), "loss_recipe": to_dict(recipe), "command": _command(args)}
    return trainer.save(metrics)


@torch.no_grad()
def heldout_kl(student: IAFStudent, teacher: WaveNet, windows: list[dict]) -> float:
    """Mean per-sample KL(P_S || P_T) on fixed held-out conditioning (fixed noise seed)."""
    device = next(student.parameters()).device
    batch = _stack(windows, device)
    terms = distillation_loss(student, teacher, batch["mel"], n_draws=STUDENT_DRAWS,
                              generator=torch.Generator(device).manual_seed(HELDOUT_SEED))
    return terms["kl"].item()


@torch.no_grad()
def synthesis_report(student: IAFStudent, teacher: WaveNet, audio: AudioConfig, seconds: float = 1.0) -> dict:
    """Log-mel distances of student and teacher audio to the real clip, and the student's timesteps/s."""
    x, mel = heldout_clip(audio, seconds)
    device = next(student.parameters()).device
    mel = mel.to(device)
    gen = torch.Generator(device).manual_seed(0)
    started = time.perf_counter()
    student_audio = student.sample(mel, generator=gen)
    student_seconds = time.perf_counter() - started
    teacher_audio = teacher.generate(mel, generator=gen)
    real = x.view(-1)
    return {
        "logmel_distance_student_vs_real": log_mel_distance(student_audio.view(-1), real, audio),
        "logmel_distance_teacher_vs_real": log_mel_distance(teacher_audio.view(-1), real, audio),
        "student_timesteps_per_s": real.numel() / student_seconds,
        "sample_rate": audio.sample_rate,
    }


# ----------------------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pwn_lib.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=("teacher", "student"), help="what to train")
    parser.add_argument("--preset", default="course", choices=("tiny", "course", "paper"))
    parser.add_argument("--config", type=Path, help="YAML with optional sections model:, train:, audio:")
    parser.add_argument("--out", type=Path, help="output directory (default data/checkpoints/<kind>_<preset>)")
    parser.add_argument("--steps", type=int, help="total optimiser steps (overrides the preset)")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (about 1.8x faster on CPU)")
    parser.add_argument("--teacher", type=Path, help="student only: the teacher checkpoint directory")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--fresh", action="store_true", help="ignore an existing resume state in --out")
    parser.add_argument("--init", type=Path, help="warm start: initial weights from this checkpoint directory")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    parser.add_argument("--eval-seconds", type=float, default=1.0,
                        help="length of the held-out clip generated for the log-mel distance")
    parser.add_argument("--phone-utterances", type=int, default=8,
                        help="teacher only: test utterances resynthesised for the phone error rate (0 skips)")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    args.argv = argv
    if args.threads:
        torch.set_num_threads(args.threads)
    run = teacher_run if args.kind == "teacher" else student_run
    out = run(args)
    print(f"artifact written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
