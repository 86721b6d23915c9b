"""A small speaker classifier on log-mel frames: does a clip speak with the right voice? (issue 24, item 4)

The course's five voices (:data:`pwn_lib.data.VOICES`: en, es, fr, it, ru, speaker ids 0-4 as the multi-speaker
teacher and student use them) are told apart by a tiny x-vector-like network:

    log-mel (n_mels, F)  ->  standardise per mel channel (train-split statistics, stored as buffers)
                         ->  a few non-causal 1-D convolutions (conv, batch norm, ReLU, dropout)   (C, F)
                         ->  mean and standard deviation over time                                 (2C,)
                         ->  linear                                                                (n_speakers,)

Mean + std pooling makes a clip of any length one vector; the std half carries how much each channel moves,
which the mean alone hides. An utterance is cut into segments of ``segment_frames`` frames
(:func:`segment_starts`: evenly spaced, overlapping just enough to cover every frame); its logits are the mean
of the segments' logits and its prediction their argmax (:meth:`SpeakerClassifier.utterance_logits`), so a
long clip is judged on the same scale of context as the training crops.

Training (:func:`train_speaker_classifier`) draws random crops of ``crop_frames`` frames from the train split,
each voice equally often (English has ten times the audio of each other voice), with a random gain of up to
``gain_db`` dB (an added constant in the log domain) so that the level of a recording is no cue. The weights
kept are those of the evaluation with the best balanced (mean per-voice) utterance accuracy on the valid split.

:class:`SpeakerListener` is the machine listener for voices, as :class:`pwn_lib.phones.Listener` is for phones:
``SpeakerListener().accuracy(signals, speakers)`` gives the accuracy, the per-voice accuracy and the confusion
matrix (rows the true voice, columns the predicted one). ``es`` is read by Allison Smith, the reader of ``en``:
the shipped checkpoint's metrics.json records how often the two are confused (on the test split: never). Part
of that cue is the recording rather than the voice: an en-vs-es model trained and tested on only the quietest
fifth of each clip's frames (pauses and background) still told 46 of the 47 test clips apart. A vocoder that
copies a voice copies its recording too, so for judging speaker conditioning that is the wanted answer; it is
not evidence that the classifier hears a reader's timbre apart from her channel.

Command line::

    python -m pwn_lib.speakers train --config configs/speakers/course.yaml --out data/checkpoints/speakers_course
    python -m pwn_lib.speakers score [--checkpoint DIR] [--split test]
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from pwn_lib.artifacts import Checkpointed
from pwn_lib.audio import log_mel
from pwn_lib.config import CHECKPOINT_DIR, REPO_ROOT, AudioConfig, from_dict, read_recipe
from pwn_lib.data import VOICES, Utterance, load_voices

DEFAULT_CHECKPOINT = CHECKPOINT_DIR / "speakers_course"
DEFAULT_RECIPE = REPO_ROOT / "configs" / "speakers" / "course.yaml"


@dataclass(frozen=True)
class SpeakerClassifierConfig:
    """Hyper-parameters of :class:`SpeakerClassifier`.

    The receptive field of one output frame is 1 + sum((k - 1) * d) frames over the convolutions.
    """

    n_mels: int = 80
    channels: int = 48
    kernel_sizes: tuple[int, ...] = (5, 3, 3)
    dilations: tuple[int, ...] = (1, 2, 4)
    dropout: float = 0.1
    n_speakers: int = len(VOICES)
    segment_frames: int = 64  # an utterance is scored as the mean logits of segments this long


@dataclass(frozen=True)
class SpeakerTrainConfig:
    """How :func:`train_speaker_classifier` trains: Adam on balanced random crops, best valid step kept."""

    steps: int = 1500
    batch_size: int = 32
    crop_frames: int = 64
    lr: float = 3e-3
    gain_db: float = 6.0
    eval_every: int = 100
    seed: int = 0


# ----------------------------------------------------------------------------- model


def mean_std_pool(h: Tensor) -> Tensor:
    """Statistics pooling: (B, C, F) -> (B, 2C), the mean over time then the (population) std over time."""
    return torch.cat([h.mean(dim=-1), h.std(dim=-1, correction=0)], dim=-1)


def segment_starts(frames: int, segment: int) -> list[int]:
    """The first frame of each segment an utterance of ``frames`` frames is cut into.

    One segment (start 0, the whole clip) when ``frames <= segment``; else ``ceil(frames / segment)`` segments
    of ``segment`` frames whose starts are evenly spaced from 0 to ``frames - segment``, so every frame is in
    at least one and the overlaps are as small as possible.
    """
    if frames <= segment:
        return [0]
    n = math.ceil(frames / segment)
    return [round(i * (frames - segment) / (n - 1)) for i in range(n)]


class SpeakerClassifier(Checkpointed, nn.Module):
    """Log-mel frames -> speaker logits; :meth:`utterance_logits` scores a whole clip."""

    checkpoint_kind = "speaker_classifier"
    config_class = SpeakerClassifierConfig

    def __init__(self, cfg: SpeakerClassifierConfig = SpeakerClassifierConfig()):
        super().__init__()
        if len(cfg.kernel_sizes) != len(cfg.dilations):
            raise ValueError(
                f"kernel_sizes {cfg.kernel_sizes} and dilations {cfg.dilations} must have one entry per convolution"
            )
        self.cfg, self.audio = cfg, AudioConfig(n_mels=cfg.n_mels)
        self.register_buffer("mel_mean", torch.zeros(cfg.n_mels, 1))
        self.register_buffer("mel_std", torch.ones(cfg.n_mels, 1))
        layers, width = [], cfg.n_mels
        for k, d in zip(cfg.kernel_sizes, cfg.dilations, strict=True):
            layers += [
                nn.Conv1d(width, cfg.channels, k, dilation=d, padding=(k - 1) // 2 * d),
                nn.BatchNorm1d(cfg.channels),
                nn.ReLU(),
                nn.Dropout(cfg.dropout),
            ]
            width = cfg.channels
        self.convs = nn.Sequential(*layers)
        self.head = nn.Linear(2 * cfg.channels, cfg.n_speakers)

    def set_statistics(self, mels: Sequence[Tensor]) -> None:
        """Standardise inputs with the per-channel mean and std of the frames of ``mels`` (each (n_mels, F))."""
        frames = torch.cat(list(mels), dim=1)
        self.mel_mean.copy_(frames.mean(dim=1, keepdim=True))
        self.mel_std.copy_(frames.std(dim=1, keepdim=True).clamp_min(1e-3))

    def forward(self, mel: Tensor) -> Tensor:
        """mel: (B, n_mels, F) log-mel frames -> (B, n_speakers) logits of the whole crop."""
        if mel.dim() != 3 or mel.shape[1] != self.cfg.n_mels:
            raise ValueError(
                f"SpeakerClassifier takes (B, {self.cfg.n_mels}, F) log-mels; got shape {tuple(mel.shape)}"
            )
        return self.head(mean_std_pool(self.convs((mel - self.mel_mean) / self.mel_std)))

    def utterance_logits(self, mel: Tensor) -> Tensor:
        """mel: (n_mels, F) one utterance's log-mel -> (n_speakers,) the mean of its segments' logits."""
        width = min(self.cfg.segment_frames, mel.shape[-1])
        starts = segment_starts(mel.shape[-1], self.cfg.segment_frames)
        return self(torch.stack([mel[:, s : s + width] for s in starts])).mean(dim=0)

    @torch.no_grad()
    def predict(self, mel: Tensor) -> int:
        """The speaker id of one utterance, mel: (n_mels, F): argmax of :meth:`utterance_logits` (eval mode)."""
        return int(self.eval().utterance_logits(mel).argmax())


# ----------------------------------------------------------------------------- scoring


def score(predicted: Sequence[int], speakers: Sequence[int], n_speakers: int = len(VOICES)) -> dict:
    """Accuracy, balanced accuracy, per-voice accuracy and confusion matrix of utterance predictions.

    ``confusion[i][j]`` counts clips of true voice ``i`` predicted as ``j``; ``per_voice[v]`` is the diagonal
    over the row sum (None for a voice with no clips), and ``balanced_accuracy`` the mean of the defined ones.
    """
    if len(predicted) != len(speakers):
        raise ValueError(f"{len(predicted)} predictions for {len(speakers)} speaker ids; give one per clip")
    confusion = np.zeros((n_speakers, n_speakers), dtype=int)
    for p, s in zip(predicted, speakers, strict=True):
        confusion[s, p] += 1
    rows = confusion.sum(axis=1)
    per_voice = {
        (VOICES[i] if n_speakers == len(VOICES) else str(i)): (float(confusion[i, i] / rows[i]) if rows[i] else None)
        for i in range(n_speakers)
    }
    defined = [a for a in per_voice.values() if a is not None]
    return {
        "accuracy": float(np.trace(confusion) / max(1, len(speakers))),
        "balanced_accuracy": float(np.mean(defined)) if defined else 0.0,
        "per_voice": per_voice,
        "confusion": confusion.tolist(),
        "n": len(speakers),
    }


def check_signal(x: np.ndarray, index: int, sample_rate: int, audio: AudioConfig) -> np.ndarray:
    """Clip ``index`` as float32 ``(T,)``, refused with the reason when the classifier cannot judge it."""
    if sample_rate != audio.sample_rate:
        raise ValueError(
            f"sample_rate={sample_rate} Hz, but the speaker classifier reads {audio.sample_rate} Hz clips; "
            f"resample first (librosa.resample(x, orig_sr={sample_rate}, target_sr={audio.sample_rate}))"
        )
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 1 or len(x) < audio.hop_length:
        raise ValueError(
            f"clip {index}: shape {x.shape}; the speaker classifier needs mono audio (T,) of at least "
            f"hop_length={audio.hop_length} samples ({audio.hop_length / audio.sample_rate * 1e3:.0f} ms)"
        )
    if not np.isfinite(x).all():
        raise ValueError(f"clip {index}: holds NaN or infinite samples; the speaker classifier needs finite audio")
    return x


class SpeakerListener:
    """The shipped speaker classifier judging clips: which voice speaks, and how often is it the intended one?"""

    def __init__(self, checkpoint: Path = DEFAULT_CHECKPOINT):
        self.model = SpeakerClassifier.from_checkpoint(Path(checkpoint)).requires_grad_(False)
        self.name = Path(checkpoint).name

    @torch.no_grad()
    def logits(self, x: np.ndarray, sample_rate: int = 16_000) -> np.ndarray:
        """(n_speakers,) utterance logits of one clip ``x: (T,)`` in [-1, 1]."""
        x = check_signal(x, 0, sample_rate, self.model.audio)
        return self.model.utterance_logits(torch.from_numpy(log_mel(x, self.model.audio))).numpy()

    @torch.no_grad()
    def predict(self, signals: Sequence[np.ndarray], sample_rate: int = 16_000) -> list[int]:
        """The predicted speaker id of every clip (each ``(T,)`` at ``sample_rate`` Hz)."""
        checked = [check_signal(x, i, sample_rate, self.model.audio) for i, x in enumerate(signals)]
        return [self.model.predict(torch.from_numpy(log_mel(x, self.model.audio))) for x in checked]

    def accuracy(self, signals: Sequence[np.ndarray], speakers: Sequence[int], sample_rate: int = 16_000) -> dict:
        """:func:`score` of the predictions for ``signals`` against the intended ``speakers`` (ids 0..4)."""
        n = self.model.cfg.n_speakers
        if len(signals) != len(speakers):
            raise ValueError(f"{len(signals)} clips but {len(speakers)} speaker ids; give one id per clip")
        bad = [(i, s) for i, s in enumerate(speakers) if not (isinstance(s, (int, np.integer)) and 0 <= s < n)]
        if bad:
            raise ValueError(
                f"speaker id {bad[0][1]!r} (clip {bad[0][0]}) is out of range; ids are 0..{n - 1} in the order "
                f"{VOICES} (pwn_lib.data.VOICES)"
            )
        return score(self.predict(signals, sample_rate), [int(s) for s in speakers], n)


# ----------------------------------------------------------------------------- training


def utterance_mels(utterances: Sequence[Utterance], audio: AudioConfig) -> list[Tensor]:
    """The log-mel ``(n_mels, F)`` of each utterance (librosa, :func:`pwn_lib.audio.log_mel`)."""
    return [torch.from_numpy(log_mel(u.audio, audio)) for u in utterances]


def random_crops(
    mels: Sequence[Tensor],
    speakers: Sequence[int],
    cfg: SpeakerTrainConfig,
    floor: float,
    generator: torch.Generator,
) -> tuple[Tensor, Tensor]:
    """One batch: (B, n_mels, crop_frames) crops and their (B,) speaker ids.

    Each crop picks a voice uniformly among those present, an utterance of it with probability proportional to
    its frames, and a start uniformly; a clip shorter than the crop is padded with ``floor`` (silence). A gain
    of ``U(-gain_db, gain_db)`` dB adds ``ln(10) * g / 20`` to every frame, kept above ``floor``.
    """
    voices = sorted(set(speakers))
    by_voice = {v: [i for i, s in enumerate(speakers) if s == v] for v in voices}
    crops, ids = torch.full((cfg.batch_size, mels[0].shape[0], cfg.crop_frames), floor), []
    for b in range(cfg.batch_size):
        voice = voices[int(torch.randint(len(voices), (1,), generator=generator))]
        frames = torch.tensor([mels[i].shape[1] for i in by_voice[voice]], dtype=torch.float)
        n = by_voice[voice][int(torch.multinomial(frames, 1, generator=generator))]
        mel = mels[n]
        start = int(torch.randint(max(1, mel.shape[1] - cfg.crop_frames + 1), (1,), generator=generator))
        piece = mel[:, start : start + cfg.crop_frames]
        gain = (torch.rand((), generator=generator) * 2 - 1) * cfg.gain_db * math.log(10) / 20
        crops[b, :, : piece.shape[1]] = (piece + gain).clamp_min(floor)
        ids.append(voice)
    return crops, torch.tensor(ids)


@torch.no_grad()
def evaluate(model: SpeakerClassifier, mels: Sequence[Tensor], speakers: Sequence[int]) -> dict:
    """:func:`score` of the utterance predictions, plus ``loss``: the mean cross-entropy (nats) of the
    utterance logits."""
    model.eval()
    logits = torch.stack([model.utterance_logits(m) for m in mels])
    target = torch.tensor(list(speakers))
    scores = score(logits.argmax(dim=1).tolist(), list(speakers), model.cfg.n_speakers)
    return scores | {"loss": float(nn.functional.cross_entropy(logits, target))}


def train_speaker_classifier(
    train: Sequence[Utterance],
    valid: Sequence[Utterance],
    model_cfg: SpeakerClassifierConfig = SpeakerClassifierConfig(),
    train_cfg: SpeakerTrainConfig = SpeakerTrainConfig(),
    audio: AudioConfig = AudioConfig(),
    log=None,
) -> tuple[SpeakerClassifier, dict]:
    """Train on random crops of ``train``; return the weights of the best valid evaluation and the history.

    Seeds torch with ``train_cfg.seed`` (initialisation, dropout and the crops), so a run is repeatable on one
    machine and thread count. Every ``eval_every`` steps (and at the last) the valid split is scored; the best
    balanced accuracy wins, ties going to the lower valid loss. ``log(message)`` reports each evaluation.
    """
    if not train or not valid:
        raise ValueError(f"train_speaker_classifier needs clips in both splits; got {len(train)} and {len(valid)}")
    torch.manual_seed(train_cfg.seed)
    generator = torch.Generator().manual_seed(train_cfg.seed)
    model = SpeakerClassifier(model_cfg)
    model.audio = audio
    train_mels, valid_mels = utterance_mels(train, audio), utterance_mels(valid, audio)
    train_ids, valid_ids = [u.speaker for u in train], [u.speaker for u in valid]
    model.set_statistics(train_mels)
    floor = math.log(audio.log_mel_floor)
    optimiser = torch.optim.Adam(model.parameters(), lr=train_cfg.lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, train_cfg.steps, eta_min=train_cfg.lr / 10)
    history, best, started = [], None, time.process_time()
    for step in range(1, train_cfg.steps + 1):
        model.train()
        crops, ids = random_crops(train_mels, train_ids, train_cfg, floor, generator)
        loss = nn.functional.cross_entropy(model(crops), ids)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        if step % train_cfg.eval_every and step != train_cfg.steps:
            continue
        scores = evaluate(model, valid_mels, valid_ids)
        row = {
            "step": step,
            "cpu_seconds": round(time.process_time() - started, 1),
            "train_loss": loss.item(),
            "valid_loss": scores["loss"],
            "valid_accuracy": scores["accuracy"],
            "valid_balanced_accuracy": scores["balanced_accuracy"],
        }
        history.append(row)
        if log:
            log(", ".join(f"{k} {v:.3g}" for k, v in row.items()))
        if best is None or (row["valid_balanced_accuracy"], -row["valid_loss"]) > best[0]:
            best = ((row["valid_balanced_accuracy"], -row["valid_loss"]), step, copy.deepcopy(model.state_dict()))
    model.load_state_dict(best[2])
    return model.eval(), {"best_step": best[1], "history": history}


# ----------------------------------------------------------------------------- the shipped checkpoint


def noise_rows(utterances: Sequence[Utterance], listener: SpeakerListener, seed: int = 0) -> dict:
    """Sanity references at the lengths of ``utterances``: white noise at each clip's RMS, and digital silence.

    A classifier that hears speakers, not levels or lengths, gives these near-chance accuracy against the
    clips' ids or puts them all in one class; ``predicted`` counts the clips given to each voice.
    """
    rng = np.random.default_rng(seed)
    speakers = [u.speaker for u in utterances]
    rows = {}
    for name, make in (
        ("white_noise", lambda u: (rng.standard_normal(len(u.audio)) * np.sqrt(np.mean(u.audio**2))).clip(-1, 1)),
        ("silence", lambda u: np.zeros(len(u.audio), dtype=np.float32)),
    ):
        predicted = listener.predict([make(u).astype(np.float32) for u in utterances])
        scores = score(predicted, speakers)
        rows[name] = {
            "accuracy": scores["accuracy"],
            "predicted": {v: predicted.count(i) for i, v in enumerate(VOICES)},
        }
    return rows


def read_speaker_recipe(path: Path | None) -> tuple[SpeakerClassifierConfig, SpeakerTrainConfig, AudioConfig]:
    """The recipe's ``model``, ``train`` and ``audio`` sections over the defaults (unknown keys refused)."""
    recipe = read_recipe(path, ("model", "train", "audio"))
    return (
        from_dict(SpeakerClassifierConfig, recipe.get("model", {}), f"{path}: model"),
        from_dict(SpeakerTrainConfig, recipe.get("train", {}), f"{path}: train"),
        from_dict(AudioConfig, recipe.get("audio", {}), f"{path}: audio"),
    )


def train_and_ship(config: Path | None, out: Path, command: str, log=print) -> dict:
    """Train on the five voices' train split, select on valid, measure on test, write the checkpoint to ``out``."""
    model_cfg, train_cfg, audio = read_speaker_recipe(config)
    if model_cfg.n_mels != audio.n_mels:
        raise ValueError(f"{config}: model.n_mels = {model_cfg.n_mels} must equal audio.n_mels = {audio.n_mels}")
    splits = {s: load_voices(s, sample_rate=audio.sample_rate) for s in ("train", "valid", "test")}
    started, cpu = time.perf_counter(), time.process_time()
    model, run = train_speaker_classifier(splits["train"], splits["valid"], model_cfg, train_cfg, audio, log)
    train_wall, train_cpu = time.perf_counter() - started, time.process_time() - cpu
    valid = evaluate(model, utterance_mels(splits["valid"], audio), [u.speaker for u in splits["valid"]])
    model.save(out, {}, audio)
    listener = SpeakerListener(out)
    test = listener.accuracy([u.audio for u in splits["test"]], [u.speaker for u in splits["test"]])
    en, es = VOICES.index("en"), VOICES.index("es")
    metrics = {
        "command": command,
        "threads": torch.get_num_threads(),
        "train_wall_seconds": round(train_wall, 1),
        "train_cpu_seconds": round(train_cpu, 1),
        "voices": list(VOICES),
        "n_clips": {s: len(u) for s, u in splits.items()},
        "best_step": run["best_step"],
        "history": run["history"],
        "valid_accuracy": valid["accuracy"],
        "valid_balanced_accuracy": valid["balanced_accuracy"],
        "test_accuracy": test["accuracy"],
        "test_balanced_accuracy": test["balanced_accuracy"],
        "test_per_voice_accuracy": test["per_voice"],
        "test_confusion": test["confusion"],
        "test_confusion_axes": "rows the true voice, columns the predicted one, both in `voices` order",
        "test_en_es_confused": test["confusion"][en][es] + test["confusion"][es][en],
        "sanity_test_lengths": noise_rows(splits["test"], listener),
        "weights_bytes": (Path(out) / "model.safetensors").stat().st_size,
    }
    model.save(out, metrics, audio)
    return metrics


def main(argv: list[str] | None = None) -> int:
    """``python -m pwn_lib.speakers train|score``."""
    parser = argparse.ArgumentParser(prog="python -m pwn_lib.speakers", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train on the five voices and write a checkpoint with its metrics")
    train.add_argument("--config", type=Path, default=DEFAULT_RECIPE, help="the YAML recipe")
    train.add_argument("--out", type=Path, required=True, help="the checkpoint folder to write")
    train.add_argument("--threads", type=int, default=1, help="torch CPU threads (the figures are for 1)")
    scorer = sub.add_parser("score", help="accuracy and confusion of a checkpoint on one split")
    scorer.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT)
    scorer.add_argument("--split", choices=("train", "valid", "test"), default="test")
    args = parser.parse_args(argv)
    if args.command == "train":
        if args.out.is_file():
            raise SystemExit(f"--out {args.out} is a file; name a folder")
        torch.set_num_threads(args.threads)
        command = shlex.join(["python", "-m", "pwn_lib.speakers", *(argv if argv is not None else sys.argv[1:])])
        metrics = train_and_ship(args.config, args.out, command)
        print(json.dumps({k: v for k, v in metrics.items() if k != "history"}, indent=2))
    else:
        utterances = load_voices(args.split)
        listener = SpeakerListener(args.checkpoint)
        print(json.dumps(listener.accuracy([u.audio for u in utterances], [u.speaker for u in utterances]), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

__all__ = [
    "DEFAULT_CHECKPOINT",
    "SpeakerClassifier",
    "SpeakerClassifierConfig",
    "SpeakerListener",
    "SpeakerTrainConfig",
    "evaluate",
    "mean_std_pool",
    "noise_rows",
    "score",
    "segment_starts",
    "train_speaker_classifier",
]
