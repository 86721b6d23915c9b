"""The one training loop: :class:`Trainer` trains the teacher, the student, the phone classifier and every
ablation arm (notebook 04 teaches it; notebooks 06 and 07 use it).

Adam with warm-up and a step or cosine schedule, gradient clipping, EMA (Polyak) weights, bf16 or fp16
(GradScaler) autocast, TF32, torch.compile, gradient accumulation, DistributedDataParallel under torchrun
(notebook 08), tqdm progress, TensorBoard scalars, kill-safe safetensors checkpoints, exact resume, and a
hard stop on a non-finite loss or gradient (no checkpoint with non-finite weights, EMA or optimiser state is
ever written; a damaged latest checkpoint is stepped over on resume, and a resume under changed settings is
refused). What differs between models is only the loss function handed to it, which
sits next to its model: :func:`pwn_lib.wavenet.teacher_loss`, :func:`pwn_lib.losses.student_loss` (a
:class:`pwn_lib.config.DistillLoss` recipe) and :func:`pwn_lib.phones.phone_loss`.

The command line that wires a model, its data and its loss to this loop is :mod:`pwn_lib.train`::

    python -m pwn_lib.train teacher --config configs/teacher_course.yaml
    python -m pwn_lib.train student --config configs/student_course.yaml --teacher data/checkpoints/teacher_course
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import reprlib
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from pwn_lib import distributed
from pwn_lib.artifacts import (
    CONFIG,
    CheckpointError,
    commit_checkpoint,
    latest_checkpoint,
    point_to,
    publish,
    read_json,
    read_weights,
    resume_candidates,
    save_artifact,
    write_json,
    write_tensors,
)
from pwn_lib.config import AUDIO_PRESETS, TrainConfig, to_dict
from pwn_lib.data import AudioWindows, load_corpus
from pwn_lib.distributed import World
from pwn_lib.losses import LossFn
from pwn_lib.wavenet import WaveNet, build_teacher, teacher_loss

RESUME_DIR = "resume"
# TrainConfig keys a resumed run may change: how often it logs and saves, how it loads and compiles, and where it
# stops (``steps`` may only grow). Any other change would continue the run under another recipe.
# bf16 and tf32 change only the precision of the arithmetic (no state is kept for them, unlike fp16's GradScaler),
# so a run may move between machines that have them and machines that do not
FREE_ON_RESUME = ("steps", "stop_at", "log_every", "checkpoint_every", "num_workers", "compile", "bf16", "tf32")
STATE_KEYS = ("step", "ema_updates", "history", "train_seconds", "optimizer")


class ResumeError(ValueError):
    """A run folder that cannot be continued as asked: every checkpoint in it is damaged, or it was trained with
    other settings; the message names the folder, the checkpoints or keys, and what to do."""


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
        return {
            "step": self.step,
            "loss": self.loss,
            "lr": self.lr,
            "grad_norm": self.grad_norm,
            "seconds": self.seconds,
            **self.extra,
        }


class Objective(nn.Module):
    """The model and its loss function as one module, so DDP and torch.compile see the whole training forward.

    ``loss_of()`` returns the current loss function, so a Trainer's ``loss_fn`` can be swapped after
    construction. Anything the loss function closes over (the student's frozen teacher) is not a
    submodule: DDP never wraps it and never averages its gradients.
    """

    def __init__(self, model: nn.Module, loss_of: Callable[[], LossFn]):
        super().__init__()
        self.model, self.loss_of = model, loss_of

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        return self.loss_of()(self.model, batch)


def micro_batch_index(step: int, micro: int, accum: int, world: World) -> int:
    """The global number of micro-batch ``micro`` of ``step`` on ``world.rank``: (step * ranks + rank) * accum + micro.

    Micro-batch ``k`` holds dataset items ``k * batch_size ... (k + 1) * batch_size - 1`` and runs under
    ``torch.manual_seed(seed + k)``. So no two ranks see the same windows, and one process accumulating
    ``ranks * accum`` micro-batches sees exactly what ``ranks`` processes see together.
    """
    return (step * world.size + world.rank) * accum + micro


class MicroBatches(torch.utils.data.Sampler):
    """This rank's micro-batches of dataset indices, steps ``start ... stop - 1`` (lazily: a paper-size run has
    32 million indices)."""

    def __init__(self, length: int, batch_size: int, accum: int, world: World, start: int, stop: int):
        self.length, self.batch_size, self.accum, self.world = length, batch_size, accum, world
        self.start, self.stop = start, stop

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start, self.stop):
            for micro in range(self.accum):
                first = micro_batch_index(step, micro, self.accum, self.world) * self.batch_size
                yield [(first + i) % self.length for i in range(self.batch_size)]

    def __len__(self) -> int:
        return max(0, self.stop - self.start) * self.accum


def cpu_has_native_bf16() -> bool:
    """Whether this CPU does bf16 arithmetic in hardware (AVX512-BF16, which AMX machines also have)."""
    probe = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    return bool(probe()) if probe is not None else True  # unknown: do not warn


def autocast_dtype(cfg: TrainConfig) -> torch.dtype | None:
    """bf16, fp16 or None (fp32) from the TrainConfig's flags; both at once is an error."""
    if cfg.bf16 and cfg.fp16:
        raise ValueError("TrainConfig: bf16 and fp16 are both set; choose one (bf16 needs no GradScaler)")
    return torch.bfloat16 if cfg.bf16 else torch.float16 if cfg.fp16 else None


class Trainer:
    """Train ``model`` with ``loss_fn(model, batch) -> (loss, metrics)`` on a deterministic batch stream.

    Step ``s`` averages the gradients of ``grad_accum`` micro-batches on each of the ranks (one process, or
    every process of a torchrun launch, through DistributedDataParallel). Micro-batch ``k`` (see
    :func:`micro_batch_index`) holds dataset items ``k * batch_size ...`` modulo the dataset's length and runs
    under ``torch.manual_seed(seed + k)``; with one process and no accumulation ``k = s``. So a resumed run
    sees exactly the batches and noise it would have seen without stopping, on every rank.

    Files in ``out_dir`` (written by rank 0 alone): ``LATEST`` naming the current checkpoint directory
    ``ckpt-<step>-<n>/`` (artifact: EMA weights, ``config.json``, ``metrics.json``; ``resume/``: raw weights,
    optimiser, EMA, GradScaler, history), the artifact's files linked beside it, and ``tb/`` (TensorBoard). With
    ``out_dir=None`` nothing is written (the ablation arms and the notebooks' live runs). ``extra_config`` adds
    keys to ``config.json`` (e.g. the AudioConfig); ``collate_fn`` replaces the DataLoader's default collation.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        cfg: TrainConfig,
        out_dir: Path | None,
        *,
        model_config: dict,
        kind: str,
        device: torch.device | str = "cpu",
        extra_config: dict | None = None,
        collate_fn: Callable | None = None,
        world: World | None = None,
    ):
        if cfg.grad_accum < 1:
            raise ValueError(f"TrainConfig.grad_accum={cfg.grad_accum}; it must be at least 1")
        self.model, self.loss_fn, self.cfg = model.to(device), loss_fn, cfg
        self.out_dir, self.device = (Path(out_dir) if out_dir is not None else None), torch.device(device)
        self.model_config, self.kind = model_config, kind
        self.extra_config, self.collate_fn = extra_config or {}, collate_fn
        self.world = world or distributed.current()
        self.dtype = autocast_dtype(cfg)
        if self.dtype == torch.bfloat16 and self.device.type == "cpu" and not cpu_has_native_bf16():
            warnings.warn(
                "bf16 autocast on a CPU without native bf16 (no AVX512-BF16 or AMX): it is emulated and runs many "
                "times slower than fp32 (measured 24x on a 2-core AVX2 machine). Pass --fp32; the run may resume "
                "later with or without it",
                stacklevel=2,
            )
        if cfg.tf32:
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        self.objective: nn.Module = Objective(self.model, lambda: self.loss_fn)
        if self.world.size > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.objective = DistributedDataParallel(self.objective, device_ids=ids)
        self._forward = torch.compile(self.objective) if cfg.compile else self.objective
        self.optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=cfg.fp16)
        self.ema = EMA(model, cfg.ema_decay)
        self.step = 0
        self.history: list[dict[str, float]] = []
        self.train_seconds = 0.0
        self._writer = None

    @property
    def global_batch(self) -> int:
        """Windows per optimiser step over every rank: batch_size x grad_accum x ranks."""
        return self.cfg.batch_size * self.cfg.grad_accum * self.world.size

    def speed(self) -> dict[str, Any]:
        """The speed settings and the measured throughput, as metrics.json records them."""
        window = getattr(self.cfg, "window", 0)
        seen = self.step * self.global_batch * window
        return {
            "bf16": self.cfg.bf16,
            "fp16": self.cfg.fp16,
            "tf32": self.cfg.tf32,
            "compile": self.cfg.compile,
            "grad_accum": self.cfg.grad_accum,
            "world_size": self.world.size,
            "global_batch": self.global_batch,
            "device": str(self.device),
            "samples_per_second": round(seen / self.train_seconds, 1) if self.train_seconds else None,
        }

    # -- persistence ----------------------------------------------------------------
    def last_good(self) -> str:
        """The checkpoint a rerun would resume from, for error messages."""
        if self.out_dir is None:
            return "nowhere (out_dir=None)"
        checkpoint = latest_checkpoint(self.out_dir)
        return str(checkpoint) if checkpoint is not None else f"none yet in {self.out_dir}"

    def non_finite(self) -> list[str]:
        """The names of the raw weights, EMA weights and optimiser tensors that hold NaN or infinity."""
        tensors = {
            **{f"model.{k}": v for k, v in self.model.state_dict().items()},
            **{f"ema.{k}": v for k, v in self.ema.shadow.items()},
            **_flatten_optimizer(self.optimizer)[0],
        }
        return [k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()]

    def assert_finite(self) -> None:
        """Raise FloatingPointError, before anything is written, when the state to save holds NaN or infinity."""
        bad = self.non_finite()
        if bad:
            raise FloatingPointError(
                f"step {self.step}: {len(bad)} weight, EMA or optimiser tensor(s) hold NaN or infinity, e.g. "
                f"{bad[:3]}; not saving them. The last good checkpoint is {self.last_good()}: lower the learning "
                f"rate (now {self.cfg.lr:g} at its peak) and warm-start a new run from it (--init), or start over "
                "with --fresh"
            )

    def save(self, metrics: dict | None = None) -> Path | None:
        """Write the resume state and the artifact (EMA weights) as one checkpoint that a kill at any moment
        leaves whole (:func:`pwn_lib.artifacts.commit_checkpoint`); rank 0 only; None without out_dir.
        Raises FloatingPointError, writing nothing, when any of it holds NaN or infinity."""
        if self.out_dir is None:
            return None
        if not self.world.main:
            return self.out_dir
        self.assert_finite()
        optim_tensors, optim_meta = _flatten_optimizer(self.optimizer)
        raw = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        ema = {f"ema.{k}": v for k, v in self.ema.shadow.items()}
        state = {
            "step": self.step,
            "ema_updates": self.ema.updates,
            "history": self.history,
            "train_seconds": self.train_seconds,
            "optimizer": optim_meta,
            "train_config": to_dict(self.cfg),
            "scaler": self.scaler.state_dict(),
            "world_size": self.world.size,
        }
        summary = {
            "kind": self.kind,
            "steps": self.step,
            "train_seconds": round(self.train_seconds, 1),
            "final_loss": self.history[-1]["loss"] if self.history else None,
            "speed": self.speed(),
            **(metrics or {}),
        }
        config = {"kind": self.kind, "model": self.model_config, "train": to_dict(self.cfg), **self.extra_config}

        def write(directory: Path) -> None:
            write_tensors(directory / RESUME_DIR / "state.safetensors", {**raw, **ema, **optim_tensors})
            write_json(directory / RESUME_DIR / "state.json", state)
            save_artifact(directory, self.ema.shadow, config, summary)

        commit_checkpoint(self.out_dir, self.step, write)
        return self.out_dir

    def resume(self) -> bool:
        """Continue from the latest checkpoint in ``out_dir`` if there is one, on every rank alike; True if it did.

        A damaged checkpoint (a resume state cut short, unreadable, or holding NaN) is stepped over with a warning
        naming it, for the one before it (:func:`pwn_lib.artifacts.resume_candidates`), which then becomes
        ``LATEST``. Raises :class:`ResumeError` when no checkpoint can be read or when the run was trained with
        other settings (:meth:`changed_settings`). A folder without ``LATEST`` may hold a flat ``resume/``
        (older runs and committed resume states)."""
        if self.out_dir is None:
            return False
        candidates = resume_candidates(self.out_dir)
        if not candidates:
            candidates = [self.out_dir] if (self.out_dir / RESUME_DIR / "state.json").is_file() else []
        damaged: list[str] = []
        for checkpoint in candidates:
            try:
                meta, tensors = read_resume_state(checkpoint / RESUME_DIR)
                break
            except CheckpointError as err:
                damaged.append(str(err))
        else:
            if not damaged:
                return False
            raise ResumeError(
                f"{self.out_dir}: no checkpoint can be resumed: {' | '.join(damaged)}. Start over with --fresh or "
                "train into a new --out"
            )
        changed = self.changed_settings(meta, checkpoint)
        if changed:
            raise ResumeError(
                f"{self.out_dir} holds a run trained with other settings (recorded -> now): {'; '.join(changed)}. "
                "Resuming would continue it under a different recipe: use a new --out, or --fresh to start over "
                "in this folder (steps and stop_at may grow)"
            )
        if damaged:
            warnings.warn(
                f"stepped over damaged checkpoint(s): {' | '.join(damaged)}; resuming from {checkpoint}",
                stacklevel=2,
            )
        self._load_state(meta, {k: v.to(self.device) for k, v in tensors.items()})
        if self.world.main and checkpoint != self.out_dir:
            if damaged:  # the good checkpoint becomes LATEST, and its files the published ones
                point_to(self.out_dir, checkpoint)
            else:  # a kill may have stopped the linking of the artifact
                publish(checkpoint, self.out_dir)
        return True

    def _load_state(self, meta: dict, tensors: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        self.ema.shadow = {k[4:]: v for k, v in tensors.items() if k.startswith("ema.")}
        self.ema.updates = meta["ema_updates"]
        self.optimizer.load_state_dict(_unflatten_optimizer(tensors, meta["optimizer"]))
        if meta.get("scaler"):
            self.scaler.load_state_dict(meta["scaler"])
        self.step, self.history, self.train_seconds = meta["step"], meta["history"], meta["train_seconds"]

    def changed_settings(self, meta: dict, checkpoint: Path) -> list[str]:
        """What differs between the checkpoint's recorded run and this one, as ``"key: recorded -> now"``: every
        TrainConfig key but :data:`FREE_ON_RESUME` (``steps`` may grow; ``grad_accum`` counts over all processes,
        so a run may move to more GPUs with less accumulation), the model config and the extra config sections."""
        # as state.json holds it: tuples (train.voices) become lists
        recorded, now = dict(meta.get("train_config", {})), json.loads(json.dumps(to_dict(self.cfg)))
        recorded["grad_accum x processes"] = recorded.pop("grad_accum", 1) * meta.get("world_size", 1)
        now["grad_accum x processes"] = now.pop("grad_accum") * self.world.size
        if now["steps"] >= recorded.get("steps", 0):
            recorded["steps"] = now["steps"]
        free = {k: None for k in FREE_ON_RESUME if k != "steps"}
        changed = _differences("train", {**recorded, **free}, {**now, **free})
        config = read_json(checkpoint / CONFIG) if (checkpoint / CONFIG).is_file() else {}
        for key, value in {"model": self.model_config, **self.extra_config}.items():
            if key in config:  # as config.json holds it: tuples become lists
                changed += _differences(key, config[key], json.loads(json.dumps(value)))
        return changed

    # -- training -------------------------------------------------------------------
    def _steps(self, dataset: torch.utils.data.Dataset, stop: int) -> Iterator[list[dict[str, torch.Tensor]]]:
        """This rank's micro-batches, ``grad_accum`` at a time (one list per optimiser step)."""
        sampler = MicroBatches(len(dataset), self.cfg.batch_size, self.cfg.grad_accum, self.world, self.step, stop)
        loader = torch.utils.data.DataLoader(
            dataset,
            batch_sampler=sampler,
            num_workers=self.cfg.num_workers,
            collate_fn=self.collate_fn,
            pin_memory=self.device.type == "cuda",
        )
        micro: list[dict[str, torch.Tensor]] = []
        for batch in loader:
            micro.append({k: v.to(self.device, non_blocking=True) for k, v in batch.items()})
            if len(micro) == self.cfg.grad_accum:
                yield micro
                micro = []

    def _writer_or_none(self):
        """The TensorBoard writer of ``out_dir/tb`` (rank 0); None when nothing is written."""
        if self._writer is None and self.out_dir is not None and self.world.main:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.out_dir / "tb"))
        return self._writer

    def _no_sync(self, last: bool):
        """DDP averages gradients only on a step's last micro-batch."""
        if last or not isinstance(self.objective, DistributedDataParallel):
            return contextlib.nullcontext()
        return self.objective.no_sync()

    def _autocast(self):
        """bf16 or fp16 autocast on this device, or nothing (fp32)."""
        return torch.autocast(self.device.type, dtype=self.dtype or torch.bfloat16, enabled=self.dtype is not None)

    def _check_finite(self, loss: torch.Tensor, k: int, lr: float) -> torch.Tensor:
        """The loss averaged over the ranks; a non-finite one on any rank stops every rank."""
        shared = distributed.mean(loss.detach().float())
        if not torch.isfinite(shared):
            first = k * self.cfg.batch_size
            raise FloatingPointError(
                f"non-finite loss ({shared.item()}) at step {self.step}, batch of dataset items "
                f"{first}..{first + self.cfg.batch_size - 1}; stopping instead of training on NaN. "
                f"Lower the learning rate (now {lr:g}) or check those inputs; the last good checkpoint "
                f"is {self.last_good()}."
            )
        return shared

    def train_step(self, batches: dict[str, torch.Tensor] | list[dict[str, torch.Tensor]]) -> StepRecord:
        """One optimiser step on ``grad_accum`` micro-batches; raises FloatingPointError on a non-finite loss."""
        micro = [batches] if isinstance(batches, dict) else batches
        started = time.perf_counter()
        lr = learning_rate(self.step, self.cfg)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        losses, extras = [], []
        for m, batch in enumerate(micro):
            k = micro_batch_index(self.step, m, len(micro), self.world)
            torch.manual_seed(self.cfg.seed + k)
            with self._no_sync(m == len(micro) - 1):
                with self._autocast():
                    loss, extra = self._forward(batch)
                losses.append(self._check_finite(loss, k, lr))
                self.scaler.scale(loss / len(micro) if len(micro) > 1 else loss).backward()
            extras.append(extra)
        self.scaler.unscale_(self.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        if not self.scaler.is_enabled() and not torch.isfinite(grad_norm):  # fp16's GradScaler skips such steps
            raise FloatingPointError(
                f"non-finite gradient norm ({grad_norm.item()}) at step {self.step} with a finite loss; stopping "
                f"before the update, so the weights stay finite. Lower the learning rate (now {lr:g}); the last good "
                f"checkpoint is {self.last_good()}."
            )
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.ema.update(self.model)
        self.step += 1
        seconds = time.perf_counter() - started
        self.train_seconds += seconds
        extra = {key: sum(e[key] for e in extras) / len(extras) for key in extras[0]}
        return StepRecord(self.step, torch.stack(losses).mean().item(), lr, grad_norm.item(), seconds, extra)

    def _checkpoint(self, on_checkpoint: Callable[[Trainer], dict] | None, step: int) -> None:
        """Rank 0 evaluates and saves while the other ranks wait at the barriers around it; every rank checks first
        that the (identical) state is finite, so a non-finite one stops them all instead of leaving some waiting."""
        self.assert_finite()
        distributed.barrier()
        if self.world.main:
            metrics = on_checkpoint(self) if on_checkpoint else {}
            writer = self._writer_or_none()
            for key, value in metrics.items():
                if isinstance(value, (int, float)) and writer is not None:
                    writer.add_scalar(f"eval/{key}", value, step)
            self.save(metrics)
        distributed.barrier()

    def fit(
        self,
        dataset: torch.utils.data.Dataset,
        steps: int | None = None,
        on_checkpoint: Callable[[Trainer], dict] | None = None,
        progress: bool = True,
    ) -> list[dict]:
        """Train until ``steps`` total steps (default ``cfg.stop_at``, else ``cfg.steps``), checkpointing as configured.

        ``on_checkpoint(trainer)`` (rank 0 only) may return extra metrics (e.g. held-out NLL) and log audio.
        """
        stop = (self.cfg.stop_at or self.cfg.steps) if steps is None else steps
        if not distributed.agree(self.step, self.device):
            raise RuntimeError(
                f"rank {self.world.rank} starts at step {self.step} but another rank does not: ranks "
                f"resumed from different checkpoints. --out ({self.out_dir}) must be on a file system "
                "that every node sees"
            )
        writer = self._writer_or_none()
        bar = tqdm(total=stop, initial=self.step, desc=f"train {self.kind}", disable=not (progress and self.world.main))
        for micro in self._steps(dataset, stop):
            record = self.train_step(micro)
            if record.step % self.cfg.log_every == 0 or record.step == stop:
                self.history.append(record.as_dict())
                for key, value in record.as_dict().items():
                    if key != "step" and writer is not None:
                        writer.add_scalar(f"train/{key}", value, record.step)
            bar.update(1)
            bar.set_postfix(loss=f"{record.loss:.4f}")
            if record.step % self.cfg.checkpoint_every == 0 or record.step == stop:
                self._checkpoint(on_checkpoint, record.step)
        bar.close()
        if writer is not None:
            writer.flush()
        return self.history

    def averaged_model(self) -> nn.Module:
        """A copy of the model holding the EMA weights (what gets shipped)."""
        return self.ema.averaged_model(copy.deepcopy(self.model)).eval()


def _differences(name: str, recorded: Any, now: Any) -> list[str]:
    """``"name.key: recorded -> now"`` for each key of two config dicts that differs (``"name: ..."`` for others)."""
    if not (isinstance(recorded, dict) and isinstance(now, dict)):
        return [] if recorded == now else [f"{name}: {reprlib.repr(recorded)} -> {reprlib.repr(now)}"]
    keys = sorted(set(recorded) | set(now))
    return [
        f"{name}.{key}: {reprlib.repr(recorded.get(key))} -> {reprlib.repr(now.get(key))}"
        for key in keys
        if recorded.get(key) != now.get(key)
    ]


def read_resume_state(resume: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """A checkpoint's resume state (``state.json`` and ``state.safetensors``, on the CPU), read whole and checked;
    :class:`pwn_lib.artifacts.CheckpointError` naming the file when it is missing, cut, corrupt or not finite."""
    for name in ("state.json", "state.safetensors"):
        if not (resume / name).is_file():
            raise CheckpointError(f"{resume / name}: missing")
    meta = read_json(resume / "state.json")
    missing = [key for key in STATE_KEYS if key not in meta]
    if missing:
        raise CheckpointError(f"{resume / 'state.json'}: lacks {missing}; the file is damaged")
    return meta, read_weights(resume / "state.safetensors")


def fit_tiny_teacher(
    steps: int = 60, batch_size: int = 2, window: int = 1_024, lr: float = 3e-3, seed: int = 0, progress: bool = False
) -> WaveNet:
    """A ``tiny`` teacher trained for a few seconds by :class:`Trainer` (fast mode and tests); the real one
    comes from ``python -m pwn_lib.train teacher --config configs/teacher_course.yaml``."""
    torch.manual_seed(seed)
    teacher = build_teacher("tiny")
    cfg = TrainConfig(
        steps=steps,
        batch_size=batch_size,
        window=window,
        lr=lr,
        lr_warmup=0,
        seed=seed,
        log_every=max(1, steps // 10),
        checkpoint_every=steps,
    )
    windows = AudioWindows(
        load_corpus("train"), window, AUDIO_PRESETS["tiny"], seed=seed + 1, length=steps * batch_size
    )
    trainer = Trainer(teacher, teacher_loss, cfg, None, model_config=to_dict(teacher.cfg), kind="teacher")
    trainer.fit(windows, progress=progress)
    return trainer.model.eval()


__all__ = [
    "EMA",
    "LossFn",
    "MicroBatches",
    "Objective",
    "ResumeError",
    "Trainer",
    "autocast_dtype",
    "fit_tiny_teacher",
    "learning_rate",
    "micro_batch_index",
]
