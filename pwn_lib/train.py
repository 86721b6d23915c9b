"""The training entry: ``python -m pwn_lib.train <kind> --config configs/<kind>_course.yaml`` runs :func:`main`.

Each kind wires a model, its data and its loss function to :class:`pwn_lib.trainer.Trainer`, then records
held-out figures (:mod:`pwn_lib.heldout`) in the checkpoint's ``metrics.json`` together with the exact
command and the resolved configuration, so every shipped artifact says how to make it again.

Configuration is resolved by one pure function, :func:`resolve`, later sources winning: the named ``--preset``,
then the YAML file's sections (``model:``, ``train:``, ``audio:``, ``loss:``, ``ablation:``; which ones a kind reads
is :data:`SECTIONS`), then ``--steps``, ``--batch-size``, ``--window``, ``--grad-accum`` and the speed flags
``--bf16``, ``--fp16``, ``--tf32``, ``--compile``. It reads no audio: the log-mel statistics come from where a tool
stored them (:func:`pwn_lib.features.corpus_statistics`), and every key, type and range is checked
(:func:`pwn_lib.config.from_dict`) before any data is loaded.

    python -m pwn_lib.train teacher --config configs/teacher_course.yaml
    python -m pwn_lib.train student --config configs/student_course.yaml --teacher data/checkpoints/teacher_course
    python -m pwn_lib.train phones --config configs/phones_course.yaml
    python -m pwn_lib.train ablation --config configs/ablation_course.yaml --teacher data/checkpoints/teacher_course

A run holds a lock on its ``--out`` folder for its whole life (rank 0 under torchrun;
:func:`pwn_lib.artifacts.lock_run`), so a second run on it stops at once naming the first one's pid; a resume under
changed settings, or from a folder whose checkpoints are all damaged, stops with the keys or files named
(:class:`pwn_lib.trainer.ResumeError`).

The same command runs under torchrun, one process per GPU (notebook 08; scripts/slurm_train.sh for clusters):

    torchrun --nproc_per_node 8 -m pwn_lib.train teacher --config configs/teacher_paper.yaml \
        --data runs/ljspeech_paper --out runs/teacher_paper
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import math
import os
import sys
from pathlib import Path
from typing import Any

import torch

from pwn_lib import distributed
from pwn_lib.ablation import ABLATION_DIR, AblationConfig, run_ablation, shown
from pwn_lib.artifacts import (
    CheckpointError,
    RunLocked,
    config_section,
    load_artifact,
    lock_run,
    read_config,
    write_json,
)
from pwn_lib.audio import log_mel_distance, save_audio
from pwn_lib.config import (
    AUDIO_PRESETS,
    CHECKPOINT_DIR,
    PRESET_NAMES,
    STUDENT_PRESETS,
    TEACHER_PRESETS,
    TRAIN_PRESETS,
    AudioConfig,
    DistillLoss,
    RecipeError,
    StudentConfig,
    TrainConfig,
    WaveNetConfig,
    at_least_one,
    at_least_zero,
    default_device,
    fast_mode,
    from_dict,
    positive_number,
    read_recipe,
    seed_everything,
    to_dict,
)
from pwn_lib.data import VOICES, AudioWindows, load_corpus, load_voices
from pwn_lib.evaluate import QuickScore
from pwn_lib.feature_cache import CachedWindows
from pwn_lib.features import STATISTICS, corpus_statistics
from pwn_lib.heldout import (
    HELDOUT_SEED,
    heldout_clip,
    heldout_kl,
    heldout_windows,
    resynthesis_phone_error_rate,
    synthesis_report,
    teacher_nll_bits,
)
from pwn_lib.losses import LossFn, student_loss
from pwn_lib.phones import (
    DEFAULT_CHECKPOINT as PHONES_CHECKPOINT,
)
from pwn_lib.phones import (
    PHONES,
    PhoneBatches,
    PhoneClassifier,
    PhoneClassifierConfig,
    load_phone_classifier,
    load_targets,
    make_examples,
    phone_loss,
)
from pwn_lib.phones import evaluate as phone_scores
from pwn_lib.sizes import TRAINING_BYTES_PER_PARAMETER, check_memory, check_training_memory
from pwn_lib.student import IAFStudent
from pwn_lib.trainer import ResumeError, Trainer
from pwn_lib.vocoders import render
from pwn_lib.wavenet import WaveNet, teacher_loss

KINDS = ("teacher", "student", "phones", "ablation")
# The sections of a recipe each kind reads, and the config class of each; "model" is the kind's own model config.
SECTIONS: dict[str, dict[str, type]] = {
    "teacher": {"model": WaveNetConfig, "train": TrainConfig, "audio": AudioConfig},
    "student": {"model": StudentConfig, "train": TrainConfig, "audio": AudioConfig, "loss": DistillLoss},
    "phones": {"model": PhoneClassifierConfig, "train": TrainConfig, "audio": AudioConfig},
    "ablation": {"ablation": AblationConfig},
}


OVERRIDES = ("steps", "batch_size", "window", "grad_accum")
SPEED_FLAGS = ("bf16", "fp16", "tf32", "compile")


def base_configs(kind: str, preset_name: str) -> dict[str, Any]:
    """The named preset of every section ``kind`` reads, before the recipe and the flags change them."""
    tables = {"train": TRAIN_PRESETS, "audio": AUDIO_PRESETS}
    tables["model"] = {"teacher": TEACHER_PRESETS, "student": STUDENT_PRESETS}.get(kind)
    return {
        section: tables[section][preset_name] if tables.get(section) else cls()
        for section, cls in SECTIONS[kind].items()
    }


def resolve(args: argparse.Namespace) -> dict[str, Any]:
    """The run's whole recipe, one config dataclass per section: the preset, then the YAML file's sections, then
    the flags. Pure: reads the recipe and stored statistics (never audio), and checks every key, type and range,
    raising :class:`pwn_lib.config.RecipeError` that names the file or flag."""
    recipe = read_recipe(args.config, tuple(SECTIONS[args.kind]))
    bases, source = base_configs(args.kind, args.preset), args.config or f"preset {args.preset}"
    resolved = {
        section: from_dict(cls, recipe.get(section, {}), f"{source}: {section}", bases[section])
        for section, cls in SECTIONS[args.kind].items()
    }
    flags = {k: getattr(args, k) for k in OVERRIDES if getattr(args, k) is not None}
    flags.update({k: True for k in SPEED_FLAGS if getattr(args, k)})
    if getattr(args, "fp32", False):
        if args.bf16 or args.fp16:
            raise RecipeError("--fp32 and --bf16/--fp16 are both given; choose one")
        flags.update(bf16=False, fp16=False)
    if args.kind == "ablation":
        steps = {"steps": args.steps} if args.steps is not None else {}
        resolved["ablation"] = from_dict(AblationConfig, steps, "command line", resolved["ablation"])
        check_ablation(resolved["ablation"], source)
        return resolved
    resolved["train"] = from_dict(TrainConfig, flags, "command line", resolved["train"])
    check_train(resolved["train"], resolved["audio"], args.config)
    if resolved["train"].input_noise and args.kind != "teacher":
        raise RecipeError(
            f"{source}: train.input_noise = {resolved['train'].input_noise} applies to teachers only (it corrupts a "
            f"WaveNet's past); remove it from this {args.kind} recipe"
        )
    if args.kind in ("teacher", "student"):
        resolved["model"] = with_feature_statistics(resolved["model"], resolved["audio"], args)
        check_audio(resolved["model"], resolved["audio"])
        try:
            check_memory(resolved["model"], f"{source}: model", TRAINING_BYTES_PER_PARAMETER, "Use a smaller value")
        except ValueError as error:
            raise RecipeError(str(error)) from None
        check_voices(resolved["train"], resolved["model"], args.config)
    return resolved


def with_feature_statistics(model: Any, audio: AudioConfig, args: argparse.Namespace) -> Any:
    """The model config with the log-mel statistics filled in where the recipe leaves them open: a warm start's
    (``--init``: it keeps the standardisation its weights were trained with), else the training data's as stored
    (:func:`pwn_lib.features.corpus_statistics`: the feature cache of ``--data`` or the embedded corpus)."""
    if not model.cond_channels or model.log_mel_mean is not None:
        return model
    if args.init:
        init_model = config_section(read_config(args.init), "model", args.init)
        return dataclasses.replace(model, **{k: init_model[k] for k in STATISTICS})
    try:
        return dataclasses.replace(model, **corpus_statistics(audio, args.data))
    except LookupError as error:
        raise RecipeError(str(error)) from None


def check_ablation(cfg: AblationConfig, source: Path | str) -> None:
    """Every arm's budget must be positive."""
    for name in ("steps", "batch_size", "window", "log_every", "curve_every"):
        if getattr(cfg, name) <= 0:
            raise RecipeError(f"{source}: ablation.{name} = {getattr(cfg, name)} must be > 0")


def check_train(train: TrainConfig, audio: AudioConfig, source: Path | None) -> None:
    """Settings that must agree across fields: one autocast dtype, windows of whole hops."""
    if train.bf16 and train.fp16:
        raise RecipeError(f"{source or 'command line'}: bf16 and fp16 are both set; choose one")
    if train.window % audio.hop_length:
        raise RecipeError(
            f"{source or 'command line'}: train.window = {train.window} is not a multiple of "
            f"audio.hop_length = {audio.hop_length}; a window must hold whole frames"
        )


def check_voices(train: TrainConfig, model: Any, source: Path | None) -> None:
    """``train.voices`` names known voices, once each, and the model has a speaker id for every one (or is a
    single-speaker model, ``n_speakers`` 0, of exactly one voice)."""
    if train.voices is None:
        return
    where = source or "command line"
    unknown = [v for v in train.voices if v not in VOICES]
    if unknown or not train.voices or len(set(train.voices)) != len(train.voices):
        raise RecipeError(f"{where}: train.voices = {list(train.voices)}: list each of {list(VOICES)} at most once")
    if model.n_speakers == 0 and len(train.voices) == 1:
        return  # a single-speaker model of one voice: the ids the windows carry are ignored
    if model.n_speakers < len(VOICES):
        raise RecipeError(
            f"{where}: train.voices = {list(train.voices)} needs model.n_speakers >= {len(VOICES)} (one id per "
            f"voice of {list(VOICES)}), got {model.n_speakers}; a single-speaker model (n_speakers 0) takes one voice"
        )


def check_audio(model: Any, audio: AudioConfig) -> None:
    """The model's hop, mel count and bit depth must be the AudioConfig's: they are set in two places, so say which
    differ (a model without conditioning has cond_channels 0 and is not checked for it)."""
    pairs = (("hop_length", "hop_length"), ("cond_channels", "n_mels"), ("bits", "bits"))
    differ = {
        name: (getattr(model, name), getattr(audio, field))
        for name, field in pairs
        if getattr(model, name, 0) and getattr(model, name) != getattr(audio, field)
    }
    if differ:
        raise RecipeError(f"model and audio configs disagree (model, audio): {differ}; set both in the YAML")


def command(args: argparse.Namespace) -> str:
    """The command line that reproduces this run (recorded in metrics.json)."""
    return " ".join(["python -m pwn_lib.train", *args.argv])


def record(args: argparse.Namespace, resolved: dict) -> dict:
    """What every metrics.json carries: the command and the resolved configuration."""
    config = {key: to_dict(value) for key, value in resolved.items()}
    return {"command": command(args), "config": config}


def make_trainer(
    args: argparse.Namespace, model: torch.nn.Module, loss_fn: LossFn, resolved: dict, out: Path, device: torch.device
) -> tuple[Trainer, torch.utils.data.Dataset]:
    """A Trainer (resumed from ``out`` unless --fresh, on every rank) and its window stream: the feature cache
    of ``--data`` (LJSpeech, :mod:`pwn_lib.feature_cache`) or the embedded corpus's train split.

    ``--init DIR`` starts the weights (and their EMA) from a shipped checkpoint instead of from scratch:
    a warm start with a fresh optimiser and schedule. A resume state in ``out`` takes precedence.
    """
    model_cfg, train_cfg, audio = resolved["model"], resolved["train"], resolved["audio"]
    if args.init:
        warm_start(model, model_cfg, args.init, args.kind)
    trainer = Trainer(
        model,
        loss_fn,
        train_cfg,
        out,
        model_config=to_dict(model_cfg),
        kind=args.kind,
        device=device,
        extra_config={"audio": to_dict(audio), "data": str(args.data or "embedded corpus, train split")},
        world=args.world,
    )
    resumed = not args.fresh and trainer.resume()
    say(args, f"resuming {out} at step {trainer.step}" if resumed else f"training into {out}")
    say(
        args,
        f"global batch: {train_cfg.batch_size} windows x {train_cfg.grad_accum} micro-batches x "
        f"{args.world.size} processes = {trainer.global_batch} windows of {train_cfg.window} samples per step",
    )
    length = train_cfg.steps * trainer.global_batch
    if args.data:
        return trainer, CachedWindows(args.data, train_cfg.window, audio, seed=train_cfg.seed, length=length)
    if train_cfg.voices is not None:
        utterances = load_voices("train", train_cfg.voices, sample_rate=audio.sample_rate)
    else:
        utterances = load_corpus("train", sample_rate=audio.sample_rate)
    return trainer, AudioWindows(utterances, train_cfg.window, audio, seed=train_cfg.seed, length=length)


def warm_start(model: torch.nn.Module, model_cfg: Any, init: Path, kind: str) -> None:
    """Load ``init``'s weights into ``model``: the same architecture, or the same grown, starting from exactly the
    function ``init`` computes.

    A teacher may grow four ways: a conditioning network added (``cond_layers`` 0 in ``init``; it starts as the
    identity, :class:`pwn_lib.layers.ConditionContext`), more stacks of the same dilation cycle (``stacks`` and
    ``layers`` both multiplied, :func:`grow_stacks`), wider blocks (more ``residual_channels`` or
    ``gate_channels``, :func:`grow_width`), and global speaker conditioning added (``n_speakers`` 0 in ``init``,
    :func:`add_speakers`): a single-speaker teacher becomes the starting point of a many-speaker one.
    """
    state, config, _ = load_artifact(init)
    if config.get("kind") != kind:
        raise SystemExit(f"--init {init}: a {config.get('kind')!r} checkpoint; warm-start a {kind} from a {kind} one")
    init_cfg = from_dict(type(model_cfg), config_section(config, "model", init), str(init))
    grows = getattr(init_cfg, "cond_layers", None) == 0 and getattr(model_cfg, "cond_layers", 0) > 0
    if grows:
        init_cfg = dataclasses.replace(init_cfg, cond_layers=model_cfg.cond_layers, cond_hidden=model_cfg.cond_hidden)
    speaks = kind == "teacher" and init_cfg.n_speakers == 0 and model_cfg.n_speakers > 0
    if speaks:
        init_cfg = dataclasses.replace(init_cfg, n_speakers=model_cfg.n_speakers, speaker_dim=model_cfg.speaker_dim)
    deeper = (
        kind == "teacher"
        and init_cfg.stacks < model_cfg.stacks
        and init_cfg.layers // init_cfg.stacks == model_cfg.layers // model_cfg.stacks
    )
    if deeper:
        init_cfg = dataclasses.replace(init_cfg, stacks=model_cfg.stacks, layers=model_cfg.layers)
    wider = (
        kind == "teacher"
        and init_cfg.residual_channels <= model_cfg.residual_channels
        and init_cfg.gate_channels <= model_cfg.gate_channels
        and (init_cfg.residual_channels, init_cfg.gate_channels)
        != (model_cfg.residual_channels, model_cfg.gate_channels)
    )
    if wider:
        init_widths = init_cfg.residual_channels, init_cfg.gate_channels
        init_cfg = dataclasses.replace(
            init_cfg, residual_channels=model_cfg.residual_channels, gate_channels=model_cfg.gate_channels
        )
    if init_cfg != model_cfg:
        raise SystemExit(
            f"--init {init}: its model config {config.get('model')} differs from this run's "
            f"{to_dict(model_cfg)}; warm starts need the same architecture (or one that adds cond_layers, "
            "or more stacks of the same layers per stack, or wider residual and gate channels, or n_speakers)"
        )
    if wider:
        state = grow_width(state, model, *init_widths)
    if deeper:
        state = grow_stacks(state, model)
    if speaks:
        state = add_speakers(state, model)
    missing, unexpected = model.load_state_dict(state, strict=not grows)
    if unexpected or any(not key.startswith("upsample.context.") for key in missing):
        raise SystemExit(f"--init {init}: weights do not fit this model (missing {missing}, unexpected {unexpected})")


def add_speakers(state: dict[str, torch.Tensor], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """``state`` (a teacher without speakers) completed for ``model`` (``n_speakers > 0``) so that both compute the
    same function for every speaker id: each block's speaker projection starts at zero (it adds ``W g`` to the
    gate, so nothing is added), the embedding table keeps ``model``'s fresh random rows. The projections get
    gradients at once (``dL/dW = dL/da g^T`` with ``g`` not zero), so the voices part from the first step."""
    grown = dict(state)
    for name, value in model.state_dict().items():
        if name.startswith("speaker_embedding."):
            grown[name] = value.clone()
        elif name.startswith("blocks.") and ".speaker." in name:
            grown[name] = torch.zeros_like(value)
    return grown


def grow_stacks(state: dict[str, torch.Tensor], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """``state`` (a teacher with n blocks) completed for ``model`` (N > n blocks) so that both compute the same
    function: blocks n..N-1 keep ``model``'s fresh weights except their output 1x1 convolution, which starts at
    zero (no residual, no skip: each new block only scales the residual stream, which after the last old block
    feeds nothing but new blocks), and the head's first convolution is scaled by sqrt(N / n) to undo the skip
    sum's 1 / sqrt(blocks) normalisation. The new blocks' output weights receive gradients at once (their gated
    activations are not zero), so the grown model starts learning where ``init`` stopped."""
    n = 1 + max(int(key.split(".")[1]) for key in state if key.startswith("blocks."))
    big = len(model.blocks)
    grown = dict(state)
    for i in range(n, big):
        for name, value in model.blocks[i].state_dict().items():
            grown[f"blocks.{i}.{name}"] = torch.zeros_like(value) if name.startswith("out.") else value.clone()
    grown["head.1.weight"] = state["head.1.weight"] * math.sqrt(big / n)
    return grown


def grow_width(
    state: dict[str, torch.Tensor], model: torch.nn.Module, residual: int, gate: int
) -> dict[str, torch.Tensor]:
    """``state`` (a teacher with ``residual`` residual and ``gate`` gate channels) completed for the wider
    ``model`` so that both compute the same function.

    The new residual channels start at zero and stay there until trained: the input projection's and every
    block's residual rows for them are zero. The new gated units contribute nothing: their columns in each
    block's output convolution are zero. Everything else that is new keeps ``model``'s fresh random weights, so
    the new residual rows get a gradient through the next blocks' convolutions and the new output columns get
    one through the new units' activations. The gate's filter and gate halves keep their places: old filter
    unit j stays unit j, old gate unit j moves to ``wide_gate // 2 + j``."""
    fresh = model.state_dict()
    wide_residual = model.cfg.residual_channels
    half, wide_half = gate // 2, model.cfg.gate_channels // 2
    gate_rows = torch.cat([torch.arange(half), wide_half + torch.arange(half)])
    grown = dict(state)
    for key, old in state.items():
        new = fresh[key]
        if new.shape == old.shape:
            continue
        if key.startswith("input."):  # (R, 1, 1) and (R,): the new residual channels start at zero
            value = torch.zeros_like(new)
            value[:residual] = old
        elif key.endswith("out.weight") or key.endswith("out.bias"):  # rows [residual | skip], columns units
            value = torch.zeros_like(new)
            skip = old.shape[0] - residual
            rows = torch.cat([torch.arange(residual), wide_residual + torch.arange(skip)])
            if old.dim() == 1:
                value[rows] = old
            else:
                value[rows, :half] = old
        else:  # conv, cond, speaker: gate rows (and for conv residual columns); new ones stay fresh
            value = new.clone()
            index = (gate_rows,) + tuple(slice(0, n) for n in old.shape[1:])
            value[index] = old
        grown[key] = value
    return grown


def say(args: argparse.Namespace, message: str) -> None:
    """Print on rank 0 only."""
    if args.world.main:
        print(message, flush=True)


def teacher_run(args: argparse.Namespace, resolved: dict[str, Any]) -> Path:
    """Train the teacher on the corpus's train split; record held-out NLL, log-mel distance and PER."""
    audio = resolved["audio"]
    device = args.torch_device
    out = args.out
    seed_everything(resolved["train"].seed)
    noise = resolved["train"].input_noise
    loss_fn = functools.partial(teacher_loss, input_noise=noise) if noise else teacher_loss
    trainer, dataset = make_trainer(args, WaveNet(resolved["model"]), loss_fn, resolved, out, device)
    voices = resolved["train"].voices
    windows = heldout_windows(audio) if args.world.main and not args.no_eval and voices is None else []
    voice_windows = (
        {voice: heldout_windows(audio, voice=voice) for voice in voices}
        if args.world.main and not args.no_eval and voices is not None
        else {}
    )

    def evaluate(t: Trainer) -> dict:
        if args.no_eval:
            return {"evaluation": "skipped (--no-eval)", **record(args, resolved)}
        if voice_windows:
            return {**voice_nll_bits(t.averaged_model(), voice_windows), **record(args, resolved)}
        return {"heldout_nll_bits": teacher_nll_bits(t.averaged_model(), windows), **record(args, resolved)}

    trainer.fit(dataset, on_checkpoint=evaluate)
    if not args.world.main or args.no_eval:
        return out
    if voice_windows:  # a voices run: each voice's held-out NLL (generation is python -m pwn_lib.evaluate --voice)
        return trainer.save(
            {
                **voice_nll_bits(trainer.averaged_model(), voice_windows),
                "heldout_windows": f"16 x 8,192 samples of each voice's test split, seed {HELDOUT_SEED}",
                "sample_rate": audio.sample_rate,
                "device": str(device),
                **record(args, resolved),
            }
        )
    teacher = trainer.averaged_model()
    x, mel = heldout_clip(audio, args.eval_seconds)
    generated = render(teacher, mel, seed=0)
    save_audio(out / "generated_heldout.wav", generated.view(-1).cpu().numpy(), audio.sample_rate)
    metrics = {
        "heldout_nll_bits": teacher_nll_bits(teacher, windows),
        "heldout_windows": f"{len(windows)} x {windows[0]['audio'].shape[-1]} samples, test split, seed {HELDOUT_SEED}",
        "logmel_distance_generated_vs_real": log_mel_distance(generated.view(-1), x.view(-1), audio),
        "logmel_distance_silence_vs_real": log_mel_distance(torch.zeros_like(x.view(-1)), x.view(-1), audio),
        "sample_rate": audio.sample_rate,
        "device": str(device),
        **record(args, resolved),
    }
    if args.phone_utterances:
        metrics.update(resynthesis_phone_error_rate(teacher, audio, args.phone_utterances))
    return trainer.save(metrics)


def voice_nll_bits(teacher: WaveNet, voice_windows: dict[str, list[dict]]) -> dict[str, float]:
    """Held-out NLL per voice (``heldout_nll_bits_<voice>``) and their mean over voices (``heldout_nll_bits``)."""
    per_voice = {f"heldout_nll_bits_{voice}": teacher_nll_bits(teacher, w) for voice, w in voice_windows.items()}
    return {"heldout_nll_bits": sum(per_voice.values()) / len(per_voice), **per_voice}


def student_run(args: argparse.Namespace, resolved: dict[str, Any]) -> Path:
    """Distil the student from a frozen teacher with the YAML's loss recipe; record held-out KL and distances."""
    if args.teacher is None:
        raise SystemExit("student training needs --teacher DIR (e.g. data/checkpoints/teacher_course)")
    device = args.torch_device
    out = args.out
    seed_everything(resolved["train"].seed)
    # The frozen teacher: loaded on every rank, outside the Trainer's DDP module, with no gradients of its own.
    teacher = WaveNet.from_checkpoint(args.teacher, device).requires_grad_(False)
    recipe = resolved["loss"]
    classifier = load_phone_classifier(args.classifier) if recipe.perceptual_weight > 0 else None
    loss_fn = student_loss(teacher, recipe, classifier)
    trainer, dataset = make_trainer(args, IAFStudent(resolved["model"]), loss_fn, resolved, out, device)
    evaluating = args.world.main and not args.no_eval
    voices = resolved["train"].voices
    if voices is not None:  # a voices run: the held-out KL and two valid utterances of every voice
        windows, quick = {}, {}
        if evaluating:
            count = 1 if fast_mode() else 2
            for voice in voices:
                windows[voice] = heldout_windows(resolved["audio"], count=4, voice=voice)
                quick[voice] = QuickScore(resolved["audio"], count=count, voice=voice)
    else:
        windows = heldout_windows(resolved["audio"], count=8) if evaluating else []
        quick = QuickScore(resolved["audio"], count=2 if fast_mode() else 4) if evaluating else None

    def evaluate(t: Trainer) -> dict:
        if args.no_eval:
            return {"evaluation": "skipped (--no-eval)", **record(args, resolved)}
        averaged = t.averaged_model()
        if voices is not None:
            return voice_student_figures(averaged, teacher, windows, quick)
        return {
            "heldout_kl": heldout_kl(averaged, teacher, windows),
            **{f"valid_{k}": v for k, v in quick(averaged).items()},
        }

    trainer.fit(dataset, on_checkpoint=evaluate)
    if not args.world.main or args.no_eval:
        return out
    final = trainer.averaged_model()
    if voices is not None:  # generated audio per voice: python -m pwn_lib.evaluate --voice
        figures = voice_student_figures(final, teacher, windows, quick)
        return trainer.save(
            {**figures, "teacher": str(args.teacher), "loss_recipe": to_dict(recipe), **record(args, resolved)}
        )
    metrics = {
        "heldout_kl": heldout_kl(final, teacher, windows),
        **synthesis_report(final, teacher, resolved["audio"], args.eval_seconds),
        "teacher": str(args.teacher),
        "loss_recipe": to_dict(recipe),
        **record(args, resolved),
    }
    return trainer.save(metrics)


def voice_student_figures(
    student: IAFStudent, teacher: WaveNet, windows: dict[str, list[dict]], quick: dict[str, QuickScore]
) -> dict[str, float]:
    """A voices run's checkpoint figures: ``heldout_kl_<voice>`` and their mean ``heldout_kl``, and each voice's
    valid-split scores as ``valid_<voice>_<metric>``."""
    kls = {f"heldout_kl_{voice}": heldout_kl(student, teacher, w) for voice, w in windows.items()}
    figures = {"heldout_kl": sum(kls.values()) / len(kls), **kls}
    for voice, score in quick.items():
        figures.update({f"valid_{voice}_{k}": v for k, v in score(student).items()})
    return figures


def phones_run(args: argparse.Namespace, resolved: dict[str, Any]) -> Path:
    """Train the CTC phone classifier (the machine listener and the perceptual loss's feature extractor)."""
    model_cfg, audio, train_cfg = resolved["model"], resolved["audio"], resolved["train"]
    device = args.torch_device
    out = args.out
    seed_everything(train_cfg.seed)
    targets = load_targets()
    train_set, valid_set, test_set = (make_examples(s, targets, audio) for s in ("train", "valid", "test"))
    model = PhoneClassifier(model_cfg, audio)
    model.set_statistics(train_set)
    batches = PhoneBatches(train_set, train_cfg.batch_size, train_cfg.steps, train_cfg.seed)
    trainer = Trainer(
        model,
        phone_loss,
        dataclasses.replace(train_cfg, batch_size=1),
        out,
        model_config=to_dict(model_cfg),
        kind="phone_classifier",
        device=device,
        extra_config={"audio": to_dict(audio), "phones": list(PHONES)},
        collate_fn=lambda b: b[0],
        world=args.world,
    )
    if not args.fresh and trainer.resume():
        print(f"resuming {out} at step {trainer.step}")

    def scores(t: Trainer) -> dict:
        valid = phone_scores(t.averaged_model(), valid_set)
        return {"valid_ctc_loss": valid["ctc_loss"], "valid_per": valid["per"], **record(args, resolved)}

    trainer.fit(batches, on_checkpoint=scores)
    final = trainer.averaged_model()
    valid, test = phone_scores(final, valid_set), phone_scores(final, test_set)
    metrics = {
        "valid_ctc_loss": valid["ctc_loss"],
        "valid_per": valid["per"],
        "test_ctc_loss": test["ctc_loss"],
        "test_per": test["per"],
        "n_train": len(train_set),
        "n_valid": len(valid_set),
        "n_test": len(test_set),
        "ctc_loss_units": "nats per target phone (torch CTCLoss reduction='mean'), utterance-weighted",
        **record(args, resolved),
    }
    return trainer.save(metrics)


def ablation_run(args: argparse.Namespace, resolved: dict[str, Any]) -> Path:
    """Train every arm of the auxiliary-loss ablation with the same budget; write the results JSON."""
    cfg = resolved["ablation"]
    teacher = WaveNet.from_checkpoint(args.teacher or CHECKPOINT_DIR / "teacher_course")
    results = run_ablation(teacher, cfg=cfg, classifier=load_phone_classifier(args.classifier))
    out = args.out or ABLATION_DIR / f"ablation_{args.preset}.json"
    results.update(
        teacher=shown(args.teacher or CHECKPOINT_DIR / "teacher_course"),
        classifier=shown(args.classifier),
        preset=args.preset,
        command=command(args),
        config=to_dict(cfg),
    )
    write_json(out, results)
    for row in results["arms"]:
        print(row["arm"]["name"], {k: round(v, 3) for k, v in row["eval"].items()})
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pwn_lib.train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("kind", choices=KINDS, help="what to train")
    parser.add_argument("--preset", default="course", choices=PRESET_NAMES)
    parser.add_argument("--config", type=Path, help="YAML with optional sections model:, train:, audio:, loss:")
    parser.add_argument("--out", type=Path, help="output directory (default data/checkpoints/<kind>_<preset>)")
    parser.add_argument("--steps", type=int, help="total optimiser steps (overrides the preset and the YAML)")
    parser.add_argument("--batch-size", type=int, help="windows per micro-batch and process (overrides the YAML)")
    parser.add_argument("--window", type=int, help="samples per training window, a multiple of the hop")
    parser.add_argument("--grad-accum", type=int, help="micro-batches accumulated per optimiser step and process")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (about 1.8x faster on CPU)")
    parser.add_argument("--fp16", action="store_true", help="fp16 autocast with a GradScaler (CUDA)")
    parser.add_argument(
        "--fp32",
        action="store_true",
        help="no autocast, whatever the recipe says: on a CPU without native bf16 (no AVX512-BF16 or AMX) bf16 "
        "autocast is emulated and runs many times slower than fp32; a run may resume with or without it",
    )
    parser.add_argument("--tf32", action="store_true", help="TF32 matmuls and convolutions (CUDA, Ampere and later)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the training forward pass")
    parser.add_argument(
        "--data",
        type=Path,
        help="teacher and student: a feature cache (python -m pwn_lib.feature_cache build) to train "
        "on instead of the embedded corpus",
    )
    parser.add_argument(
        "--no-eval",
        action="store_true",
        help="teacher and student: skip the held-out evaluation (smoke runs and speed checks)",
    )
    parser.add_argument("--teacher", type=Path, help="student and ablation: the teacher checkpoint directory")
    parser.add_argument(
        "--classifier",
        type=Path,
        default=PHONES_CHECKPOINT,
        help="the phone classifier for perceptual losses (default: the shipped one)",
    )
    parser.add_argument("--threads", type=at_least_one, help="torch CPU threads (>= 1)")
    parser.add_argument("--fresh", action="store_true", help="ignore an existing resume state in --out")
    parser.add_argument("--init", type=Path, help="warm start: initial weights from this checkpoint directory")
    parser.add_argument(
        "--device",
        default=None,
        choices=("cpu", "cuda"),
        help="cpu or cuda (default: cuda if available); under torchrun each rank takes cuda:LOCAL_RANK",
    )
    parser.add_argument(
        "--eval-seconds",
        type=positive_number,
        default=1.0,
        help="length of the held-out clip generated for the log-mel distance",
    )
    parser.add_argument(
        "--phone-utterances",
        type=at_least_zero,
        default=8,
        help="teacher only: test utterances resynthesised for the phone error rate (0 skips)",
    )
    return parser


RUNS = {"teacher": teacher_run, "student": student_run, "phones": phones_run, "ablation": ablation_run}


def run_lock(args: argparse.Namespace) -> contextlib.AbstractContextManager:
    """The lock on ``--out`` (default data/checkpoints/<kind>_<preset>) for the run's life: taken by the one process
    that writes checkpoints (rank 0 under torchrun, before the process group forms); the ablation writes one
    JSON file and takes none."""
    if args.kind == "ablation" or int(os.environ.get("RANK", "0")) != 0:
        return contextlib.nullcontext()
    return lock_run(args.out)


def check_checkpoint_kinds(args: argparse.Namespace) -> None:
    """Refuse, before the run takes its lock, a ``--teacher`` that is not a teacher checkpoint and an ``--init`` of
    another kind than the run's (each config.json's ``kind``)."""
    wanted = {"teacher": "teacher" if args.kind in ("student", "ablation") else None, "init": args.kind}
    for flag, kind in wanted.items():
        path = getattr(args, flag)
        if path is None or kind is None:
            continue
        try:
            found = read_config(path).get("kind")
        except (FileNotFoundError, CheckpointError) as error:
            raise SystemExit(f"error: --{flag} {path}: {error}") from None
        if found != kind:
            raise SystemExit(f"error: --{flag} {path}: a {found!r} checkpoint; this {args.kind} run needs a {kind} one")


def check_activations(args: argparse.Namespace, resolved: dict) -> None:
    """On the CPU, refuse a run whose activations would not fit in this machine's memory, before any data loads
    (a GPU run's activations live in the GPU's memory; the recipe itself stays valid for it)."""
    if args.kind not in ("teacher", "student") or (args.device or default_device().type) != "cpu":
        return
    train = resolved["train"]
    try:
        check_training_memory(resolved["model"], train.batch_size, train.window, str(args.config or "command line"))
    except ValueError as error:
        raise RecipeError(f"{error}; or train on a GPU (--device cuda)") from None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    args.argv = argv
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: this machine has no CUDA device; use --device cpu")
    try:
        resolved = resolve(args)
        check_activations(args, resolved)
    except (RecipeError, FileNotFoundError) as error:
        raise SystemExit(f"error: {error}") from None
    check_checkpoint_kinds(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.kind != "ablation":
        args.out = args.out or CHECKPOINT_DIR / f"{args.kind}_{args.preset}"
        if args.out.exists() and not args.out.is_dir():
            raise SystemExit(f"error: --out {args.out} is a file; name a folder for the run's checkpoints")
    try:
        with run_lock(args):
            args.world, args.torch_device = distributed.init(args.device)
            try:
                say(args, f"artifact written to {RUNS[args.kind](args, resolved)}")
            finally:
                distributed.shutdown()
    except (RunLocked, ResumeError, CheckpointError, RecipeError, FileNotFoundError, FloatingPointError) as error:
        raise SystemExit(f"error: {error}") from None
    return 0


__all__ = ["KINDS", "SECTIONS", "build_parser", "main", "resolve"]


if __name__ == "__main__":
    raise SystemExit(main())
