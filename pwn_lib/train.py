"""The one training loop: :class:`Trainer` trains the teacher, the student, the phone classifier and every
ablation arm (notebook 04 teaches it; notebooks 06 and 07 use it).

Adam with warm-up and a step or cosine schedule, gradient clipping, EMA (Polyak) weights, optional bf16
autocast, tqdm progress, TensorBoard scalars, atomic safetensors checkpoints, exact resume, and a hard
stop on a non-finite loss. What differs between models is only the loss function handed to it:
:func:`teacher_loss`, :func:`student_loss` (a :class:`pwn_lib.config.DistillLoss` recipe) and
:func:`phone_loss`.

The command line lives in :mod:`pwn_lib.cli`; ``python -m pwn_lib.train`` runs it::

    python -m pwn_lib.train teacher --config configs/teacher_course.yaml
    python -m pwn_lib.train student --config configs/student_course.yaml --teacher data/checkpoints/teacher_course
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn
from tqdm.auto import tqdm

from pwn_lib.artifacts import save_artifact, write_json, write_tensors
from pwn_lib.config import AUDIO_PRESETS, DistillLoss, TrainConfig, to_dict
from pwn_lib.data import AudioWindows, load_corpus
from pwn_lib.losses import FeatureExtractor, recipe_terms
from pwn_lib.phones import ctc_loss, spec_augment
from pwn_lib.student import IAFStudent
from pwn_lib.wavenet import WaveNet, build_teacher

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
    ``resume/`` (raw weights, optimiser, EMA, history) and ``tb/`` (TensorBoard). With ``out_dir=None``
    nothing is written (the ablation arms and the notebooks' live runs). ``extra_config`` adds keys to
    ``config.json`` (e.g. the AudioConfig); ``collate_fn`` replaces the DataLoader's default collation.
    """

    def __init__(self, model: nn.Module, loss_fn: LossFn, cfg: TrainConfig, out_dir: Path | None, *,
                 model_config: dict, kind: str, device: torch.device | str = "cpu",
                 extra_config: dict | None = None, collate_fn: Callable | None = None):
        self.model, self.loss_fn, self.cfg = model.to(device), loss_fn, cfg
        self.out_dir, self.device = (Path(out_dir) if out_dir is not None else None), torch.device(device)
        self.model_config, self.kind = model_config, kind
        self.extra_config, self.collate_fn = extra_config or {}, collate_fn
        self.optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        self.ema = EMA(model, cfg.ema_decay)
        self.step = 0
        self.history: list[dict[str, float]] = []
        self.train_seconds = 0.0
        self._writer = None

    # -- persistence ----------------------------------------------------------------
    def save(self, metrics: dict | None = None) -> Path | None:
        """Write the resume state, then the artifact (EMA weights), each file atomically; None without out_dir."""
        if self.out_dir is None:
            return None
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
        config = {"kind": self.kind, "model": self.model_config, "train": to_dict(self.cfg), **self.extra_config}
        return save_artifact(self.out_dir, self.ema.shadow, config, summary)

    def resume(self) -> bool:
        """Continue from ``out_dir/resume`` if it exists; return whether it did."""
        if self.out_dir is None:
            return False
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
            num_workers=self.cfg.num_workers, drop_last=True, collate_fn=self.collate_fn,
        )
        for batch in loader:
            yield {k: v.to(self.device) for k, v in batch.items()}

    def _writer_or_none(self):
        """The TensorBoard writer of ``out_dir/tb``; None when nothing is written."""
        if self._writer is None and self.out_dir is not None:
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
                f"is in {self.out_dir or 'nowhere (out_dir=None)'}."
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
                    if key != "step" and writer is not None:
                        writer.add_scalar(f"train/{key}", value, record.step)
            bar.update(1)
            bar.set_postfix(loss=f"{record.loss:.4f}")
            if record.step % self.cfg.checkpoint_every == 0 or record.step == stop:
                metrics = on_checkpoint(self) if on_checkpoint else {}
                for key, value in metrics.items():
                    if isinstance(value, (int, float)) and writer is not None:
                        writer.add_scalar(f"eval/{key}", value, record.step)
                self.save(metrics)
        bar.close()
        if writer is not None:
            writer.flush()
        return self.history

    def averaged_model(self) -> nn.Module:
        """A copy of the model holding the EMA weights (what gets shipped)."""
        return self.ema.averaged_model(copy.deepcopy(self.model)).eval()


# ----------------------------------------------------------------------------- what each model minimises


def teacher_loss(model: WaveNet, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
    """Mean NLL in nats per sample of a batch of (audio, mel) windows (paper, section 2; notebook 04)."""
    return model.loss(batch["audio"], batch["mel"]), {}


def student_loss(teacher: WaveNet, recipe: DistillLoss, classifier: FeatureExtractor | None = None) -> LossFn:
    """The student's training loss for ``recipe`` (:func:`pwn_lib.losses.recipe_terms`), every term logged."""

    def loss_fn(model: IAFStudent, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        terms = recipe_terms(recipe, model, teacher, batch, classifier)
        return terms["loss"], {k: v.item() for k, v in terms.items() if k not in ("loss", "x")}

    return loss_fn


def phone_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
    """CTC loss per target phone of a padded batch, with SpecAugment masks drawn from the step's seed."""
    mels = spec_augment(batch["mels"][0], None)
    return ctc_loss(model, (mels, batch["frames"][0], batch["targets"][0], batch["lengths"][0])), {}


def fit_tiny_teacher(steps: int = 60, batch_size: int = 2, window: int = 1_024, lr: float = 3e-3,
                     seed: int = 0, progress: bool = False) -> WaveNet:
    """A ``tiny`` teacher trained for a few seconds by :class:`Trainer` (fast mode and tests); the real one
    comes from ``python -m pwn_lib.train teacher --config configs/teacher_course.yaml``."""
    torch.manual_seed(seed)
    teacher = build_teacher("tiny")
    cfg = TrainConfig(steps=steps, batch_size=batch_size, window=window, lr=lr,
                      lr_warmup=0, seed=seed, log_every=max(1, steps // 10), checkpoint_every=steps)
    windows = AudioWindows(load_corpus("train"), window, AUDIO_PRESETS["tiny"], seed=seed + 1,
                           length=steps * batch_size)
    trainer = Trainer(teacher, teacher_loss, cfg, None, model_config=to_dict(teacher.cfg), kind="teacher")
    trainer.fit(windows, progress=progress)
    return trainer.model.eval()


def main(argv: list[str] | None = None) -> int:
    """``python -m pwn_lib.train``: the command line of :mod:`pwn_lib.cli`."""
    from pwn_lib.cli import main as cli_main

    return cli_main(argv)


__all__ = [
    "EMA", "LossFn", "Trainer", "fit_tiny_teacher", "learning_rate", "main", "phone_loss", "student_loss",
    "teacher_loss",
]


if __name__ == "__main__":
    raise SystemExit(main())
