"""A small phone classifier for the perceptual loss (paper, section 4.1; notebook 07), trained with CTC.

Targets: each transcript is phonemised once with espeak-ng (``espeak-ng -q -x --sep=_ -v en-us``),
stress marks are dropped and the espeak phonemes are mapped onto the 39 ARPAbet phones
(:data:`PHONES`; diphthongs with r-colouring become two phones). The result is committed as
``data/corpus/phones.tsv`` (``id<TAB>space-separated phones``), so nothing outside Python is
needed at run time; ``python -m pwn_lib.corpus_tools build-targets`` rebuilds it (needs espeak-ng).

Model: log-mel frames (the course's conditioning features, :func:`pwn_lib.audio.log_mel`) ->
1x1 input projection -> residual blocks of non-causal dilated convolutions -> per-frame logits
over blank + 39 phones, trained with ``torch.nn.CTCLoss``. :meth:`PhoneClassifier.features`
returns every block's output, which is what :func:`pwn_lib.losses.perceptual_loss` compares.
Given raw audio ``(B, 1, T)`` it computes the log-mel in torch (:class:`TorchLogMel`), so
gradients reach the audio.

:class:`Listener` is the machine listener of :mod:`pwn_lib.evaluate`: the shipped classifier transcribes a clip and
its phone error rate against the utterance's targets says how intelligible the clip is.

Command line::

    python -m pwn_lib.corpus_tools build-targets   # the phone targets (a data tool)
    python -m pwn_lib.train phones --config configs/phones_course.yaml
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import librosa
import numpy as np
import torch
from torch import Tensor, nn

from pwn_lib.artifacts import checkpoint_config, load_artifact, save_artifact
from pwn_lib.audio import log_mel
from pwn_lib.config import CHECKPOINT_DIR, AudioConfig, from_dict
from pwn_lib.data import TARGETS_PATH, load_corpus

DEFAULT_CHECKPOINT = CHECKPOINT_DIR / "phones_course"

PHONES: tuple[str, ...] = (
    "AA",
    "AE",
    "AH",
    "AO",
    "AW",
    "AY",
    "B",
    "CH",
    "D",
    "DH",
    "EH",
    "ER",
    "EY",
    "F",
    "G",
    "HH",
    "IH",
    "IY",
    "JH",
    "K",
    "L",
    "M",
    "N",
    "NG",
    "OW",
    "OY",
    "P",
    "R",
    "S",
    "SH",
    "T",
    "TH",
    "UH",
    "UW",
    "V",
    "W",
    "Y",
    "Z",
    "ZH",
)
BLANK = 0  # CTC blank; phone PHONES[i] has class i + 1


def load_targets(path: Path = TARGETS_PATH) -> dict[str, list[int]]:
    """Read ``phones.tsv`` as ``{id: [class indices 1..39]}``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing; run `python -m pwn_lib.corpus_tools build-targets` (needs espeak-ng)"
        )
    index = {p: i + 1 for i, p in enumerate(PHONES)}
    targets = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        uid, _, phones = line.partition("\t")
        try:
            targets[uid] = [index[p] for p in phones.split()]
        except KeyError as err:
            raise ValueError(
                f"{path}:{n}: unknown phone {err}; rebuild with `python -m pwn_lib.corpus_tools build-targets`"
            ) from None
    return targets


# ----------------------------------------------------------------------------- model


class TorchLogMel(nn.Module):
    """Differentiable twin of :func:`pwn_lib.audio.log_mel` (librosa magnitude mel, centred frames).

    forward(x: (B, 1, T) or (B, T) audio) -> (B, n_mels, T // hop_length) natural-log mel.
    """

    def __init__(self, cfg: AudioConfig = AudioConfig()):
        super().__init__()
        self.cfg = cfg
        fb = librosa.filters.mel(sr=cfg.sample_rate, n_fft=cfg.n_fft, n_mels=cfg.n_mels, fmin=cfg.fmin, fmax=cfg.fmax)
        self.register_buffer("filterbank", torch.from_numpy(fb).float(), persistent=False)
        self.register_buffer("window", torch.hann_window(cfg.win_length), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        x = x[:, 0] if x.dim() == 3 else x
        n_frames = x.shape[-1] // self.cfg.hop_length
        spec = torch.stft(
            x,
            self.cfg.n_fft,
            self.cfg.hop_length,
            self.cfg.win_length,
            self.window.to(x.dtype),
            center=True,
            pad_mode="constant",
            return_complex=True,
        )
        # The tiny offset keeps d|S|/dS finite at exact zeros; it is far below log_mel_floor.
        magnitude = (spec.real.square() + spec.imag.square() + 1e-20).sqrt()
        mel = self.filterbank.to(x.dtype) @ magnitude[..., :n_frames]
        return mel.clamp_min(self.cfg.log_mel_floor).log()


@dataclass(frozen=True)
class PhoneClassifierConfig:
    """Hyper-parameters of :class:`PhoneClassifier`; receptive field 1 + (k - 1) * sum(dilations) frames."""

    n_mels: int = 80
    channels: int = 128
    kernel_size: int = 5
    dilations: tuple[int, ...] = (1, 2, 4, 1, 2, 4)
    dropout: float = 0.1
    n_classes: int = len(PHONES) + 1


class ConvBlock(nn.Module):
    """Residual block: x + dropout(relu(batchnorm(dilated conv(x)))). (B, C, F) -> (B, C, F)."""

    def __init__(self, channels: int, kernel_size: int, dilation: int, dropout: float):
        super().__init__()
        self.conv = nn.Conv1d(
            channels, channels, kernel_size, dilation=dilation, padding=(kernel_size - 1) // 2 * dilation
        )
        self.norm = nn.BatchNorm1d(channels)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.drop(torch.relu(self.norm(self.conv(x))))


class PhoneClassifier(nn.Module):
    """Log-mel frames -> per-frame phone logits (blank = class 0), with layer features for the perceptual loss."""

    def __init__(self, cfg: PhoneClassifierConfig = PhoneClassifierConfig(), audio: AudioConfig = AudioConfig()):
        super().__init__()
        self.cfg, self.audio = cfg, audio
        self.log_mel = TorchLogMel(audio)
        self.register_buffer("mel_mean", torch.zeros(cfg.n_mels, 1))
        self.register_buffer("mel_std", torch.ones(cfg.n_mels, 1))
        self.inp = nn.Conv1d(cfg.n_mels, cfg.channels, 1)
        self.blocks = nn.ModuleList(ConvBlock(cfg.channels, cfg.kernel_size, d, cfg.dropout) for d in cfg.dilations)
        self.out = nn.Conv1d(cfg.channels, cfg.n_classes, 1)

    @classmethod
    def from_checkpoint(cls, directory: Path) -> PhoneClassifier:
        """A trained classifier in eval mode, with the AudioConfig it was trained on."""
        state, config, _ = load_artifact(directory)
        model = cls(from_dict(PhoneClassifierConfig, config["model"]), from_dict(AudioConfig, config["audio"]))
        model.load_state_dict(state)
        return model.eval()

    def save(self, directory: Path, metrics: dict | None = None) -> Path:
        """Write this classifier as a checkpoint that :meth:`from_checkpoint` reads."""
        config = checkpoint_config("phone_classifier", self.cfg, self.audio, phones=list(PHONES))
        return save_artifact(directory, self.state_dict(), config, metrics or {})

    def set_statistics(self, examples: list[Example]) -> None:
        """Standardise inputs with the per-channel log-mel mean and std of ``examples`` (the train split)."""
        mean, std = mel_statistics(examples)
        self.mel_mean.copy_(mean)
        self.mel_std.copy_(std)

    def _mel(self, x_or_mel: Tensor) -> Tensor:
        """(B, 1, T) audio -> torch log-mel; (B, n_mels, F) log-mel passes through."""
        if x_or_mel.dim() == 3 and x_or_mel.shape[1] == 1:
            return self.log_mel(x_or_mel)
        if x_or_mel.dim() == 3 and x_or_mel.shape[1] == self.cfg.n_mels:
            return x_or_mel
        raise ValueError(
            f"PhoneClassifier takes (B, 1, T) audio or (B, {self.cfg.n_mels}, F) log-mels; "
            f"got shape {tuple(x_or_mel.shape)}"
        )

    def features(self, x_or_mel: Tensor) -> list[Tensor]:
        """Every residual block's output, each (B, channels, F). Differentiable in the input audio."""
        h = self.inp((self._mel(x_or_mel) - self.mel_mean) / self.mel_std)
        feats = []
        for block in self.blocks:
            h = block(h)
            feats.append(h)
        return feats

    def forward(self, x_or_mel: Tensor) -> Tensor:
        """(B, 1, T) audio or (B, n_mels, F) log-mel -> (B, n_classes, F) logits."""
        return self.out(self.features(x_or_mel)[-1])


# ----------------------------------------------------------------------------- decoding and scoring


def greedy_decode(logits: Tensor, lengths: Tensor | None = None) -> list[list[int]]:
    """Best path: argmax per frame, merge repeats, drop blanks. logits: (B, n_classes, F)."""
    best = logits.argmax(dim=1)
    lengths = lengths if lengths is not None else torch.full((best.shape[0],), best.shape[1])
    decoded = []
    for path, n in zip(best.tolist(), lengths.tolist(), strict=True):
        seq, prev = [], BLANK
        for k in path[:n]:
            if k != prev and k != BLANK:
                seq.append(k)
            prev = k
        decoded.append(seq)
    return decoded


def edit_distance(a: list[int], b: list[int]) -> int:
    """Levenshtein distance (substitutions, insertions, deletions all cost 1)."""
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev_diag, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            prev_diag, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev_diag + (x != y))
    return row[-1]


# ----------------------------------------------------------------------------- data and training


@dataclass
class Example:
    """One utterance ready for CTC: mel (n_mels, F) log-mel and its phone class indices."""

    id: str
    mel: Tensor
    target: Tensor


def make_examples(split: str, targets: dict[str, list[int]], audio: AudioConfig = AudioConfig()) -> list[Example]:
    """Log-mels (librosa) and targets for every utterance of ``split`` that has a target."""
    examples = []
    for u in load_corpus(split):
        if u.id not in targets:
            raise KeyError(f"utterance {u.id} has no phone target in {TARGETS_PATH}; rerun build-targets")
        examples.append(
            Example(u.id, torch.from_numpy(log_mel(u.audio, audio)), torch.tensor(targets[u.id], dtype=torch.long))
        )
    return examples


def collate(examples: list[Example]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Pad a batch: (mels (B, n_mels, F_max) padded with the log floor, frame lengths, targets (B, L_max),
    target lengths)."""
    floor = min(float(e.mel.min()) for e in examples)
    frames = torch.tensor([e.mel.shape[1] for e in examples])
    mels = torch.full((len(examples), examples[0].mel.shape[0], int(frames.max())), floor)
    for i, e in enumerate(examples):
        mels[i, :, : e.mel.shape[1]] = e.mel
    lengths = torch.tensor([len(e.target) for e in examples])
    targets = nn.utils.rnn.pad_sequence([e.target for e in examples], batch_first=True)
    return mels, frames, targets, lengths


def ctc_loss(model: PhoneClassifier, batch: tuple[Tensor, Tensor, Tensor, Tensor]) -> Tensor:
    """Mean CTC loss per target phone (nats), ``reduction='mean'`` of ``torch.nn.CTCLoss``."""
    mels, frames, targets, lengths = batch
    log_probs = model(mels).log_softmax(dim=1).permute(2, 0, 1)  # (F, B, n_classes)
    return nn.functional.ctc_loss(log_probs, targets, frames, lengths, blank=BLANK, zero_infinity=True)


@torch.no_grad()
def evaluate(model: PhoneClassifier, examples: list[Example], batch_size: int = 8) -> dict[str, float]:
    """Held-out CTC loss (nats per phone, utterance-weighted mean) and phone error rate (greedy, edit distance)."""
    model.eval()
    losses, errors, total = [], 0, 0
    for i in range(0, len(examples), batch_size):
        batch = collate(examples[i : i + batch_size])
        losses.append(ctc_loss(model, batch).item() * len(batch[1]))
        for hyp, e in zip(greedy_decode(model(batch[0]), batch[1]), examples[i : i + batch_size], strict=True):
            errors += edit_distance(hyp, e.target.tolist())
            total += len(e.target)
    return {"ctc_loss": sum(losses) / len(examples), "per": errors / total}


def mel_statistics(examples: list[Example]) -> tuple[Tensor, Tensor]:
    """Per-mel-channel mean and std over all training frames: (n_mels, 1) each."""
    frames = torch.cat([e.mel for e in examples], dim=1)
    return frames.mean(dim=1, keepdim=True), frames.std(dim=1, keepdim=True).clamp_min(1e-3)


def spec_augment(mels: Tensor, generator: torch.Generator, max_freq: int = 10, max_time: int = 12) -> Tensor:
    """One random frequency mask and one time mask per example (filled with the batch mean). mels: (B, M, F)."""
    mels = mels.clone()
    fill = mels.mean()
    for m in mels:
        f0 = int(torch.randint(0, m.shape[0] - max_freq, (1,), generator=generator))
        m[f0 : f0 + int(torch.randint(0, max_freq + 1, (1,), generator=generator))] = fill
        t0 = int(torch.randint(0, max(1, m.shape[1] - max_time), (1,), generator=generator))
        m[:, t0 : t0 + int(torch.randint(0, max_time + 1, (1,), generator=generator))] = fill
    return mels


class PhoneBatches(torch.utils.data.Dataset):
    """``length`` padded batches of similar-length utterances, reshuffled every epoch with ``seed``: item i is
    a whole batch (``mels``, ``frames``, ``targets``, ``lengths``), so :class:`pwn_lib.trainer.Trainer` runs
    with ``batch_size=1`` and an unwrapping collate."""

    def __init__(self, examples: list[Example], batch_size: int, length: int, seed: int = 0) -> None:
        rng, self.examples, self.batches = random.Random(seed), examples, []
        while len(self.batches) < length:
            order = sorted(range(len(examples)), key=lambda i: examples[i].mel.shape[1] + rng.random() * 40)
            epoch = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
            rng.shuffle(epoch)
            self.batches += epoch
        self.batches = self.batches[:length]

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        mels, frames, targets, lengths = collate([self.examples[k] for k in self.batches[i]])
        return {"mels": mels[None], "frames": frames[None], "targets": targets[None], "lengths": lengths[None]}


def phone_loss(model: PhoneClassifier, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
    """The classifier's training loss for :class:`pwn_lib.trainer.Trainer`: CTC loss per target phone of one
    :class:`PhoneBatches` item, with SpecAugment masks drawn from the step's seed."""
    mels = spec_augment(batch["mels"][0], None)
    return ctc_loss(model, (mels, batch["frames"][0], batch["targets"][0], batch["lengths"][0])), {}


def load_phone_classifier(directory: Path = DEFAULT_CHECKPOINT) -> PhoneClassifier:
    """The shipped classifier in eval mode, with gradients off for its weights (not for its inputs)."""
    return PhoneClassifier.from_checkpoint(directory).requires_grad_(False)


class Listener:
    """The shipped phone classifier transcribing clips, scored against the corpus's phone targets."""

    def __init__(self, classifier: Path = DEFAULT_CHECKPOINT):
        self.model, self.targets, self.name = load_phone_classifier(classifier), load_targets(), classifier.name

    @torch.no_grad()
    def errors(self, x: np.ndarray, utterance_id: str) -> tuple[int, int]:
        """(edit distance, number of target phones) of the greedy transcription of ``x: (T,)``."""
        if utterance_id not in self.targets:
            raise KeyError(f"no phone targets for utterance {utterance_id!r} in {TARGETS_PATH}")
        hyp = greedy_decode(self.model(torch.as_tensor(np.asarray(x, dtype=np.float32)).view(1, 1, -1)))[0]
        target = self.targets[utterance_id]
        return edit_distance(hyp, target), len(target)
