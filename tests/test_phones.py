"""Tests for pwn_lib.phones: targets, the torch log-mel twin, decoding, features and the shipped classifier."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pwn_lib.audio import log_mel
from pwn_lib.config import AudioConfig
from pwn_lib.data import load_corpus
from pwn_lib.phones import (
    BLANK,
    DEFAULT_CHECKPOINT,
    PHONES,
    PhoneClassifier,
    PhoneClassifierConfig,
    TorchLogMel,
    edit_distance,
    espeak_to_arpabet,
    evaluate,
    greedy_decode,
    load_phone_classifier,
    load_targets,
    make_examples,
)


def test_espeak_mapping() -> None:
    assert espeak_to_arpabet("'aI") == ("AY",)
    assert espeak_to_arpabet(",@2") == ("AH",)  # stress dropped, variant digit falls back to the base
    assert espeak_to_arpabet("t#") == ("T",)
    assert espeak_to_arpabet("A@") == ("AA", "R")
    assert espeak_to_arpabet(";") == ()
    with pytest.raises(KeyError, match="ESPEAK_TO_ARPABET"):
        espeak_to_arpabet("qq")


def test_committed_targets_cover_the_corpus_and_fit_ctc() -> None:
    targets = load_targets()
    utterances = load_corpus("all")
    assert {u.id for u in utterances} == set(targets)
    hop = AudioConfig().hop_length
    for u in utterances:
        seq = targets[u.id]
        assert seq and all(1 <= k <= len(PHONES) for k in seq)
        repeats = sum(a == b for a, b in zip(seq, seq[1:], strict=False))
        assert len(seq) + repeats <= len(u.audio) // hop, u.id  # CTC needs this many frames


def _speech(n_samples: int) -> np.ndarray:
    u = max(load_corpus("valid"), key=lambda u: len(u.audio))
    return u.audio[:n_samples]


@pytest.mark.parametrize("n_samples", [16_384, 16_000 + 100])
def test_torch_log_mel_matches_librosa(n_samples: int) -> None:
    x = _speech(n_samples)
    ref = log_mel(x)
    got = TorchLogMel().double()(torch.from_numpy(x).double()[None, None])[0].numpy()
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, atol=1e-3)


def test_edit_distance_and_greedy_decode() -> None:
    assert edit_distance([1, 2, 3], [1, 2, 3]) == 0
    assert edit_distance([1, 2, 3], [1, 3]) == 1
    assert edit_distance([], [4, 5]) == 2
    assert edit_distance([1, 2, 3, 4], [2, 1, 3, 5]) == 3
    path = [BLANK, 5, 5, BLANK, 5, 7, 7, BLANK]  # -> 5 5 7: repeats merge unless a blank separates them
    logits = torch.nn.functional.one_hot(torch.tensor([path]), num_classes=len(PHONES) + 1).float().transpose(1, 2)
    assert greedy_decode(logits) == [[5, 5, 7]]
    assert greedy_decode(logits, torch.tensor([3])) == [[5]]


def test_features_are_differentiable_in_the_audio() -> None:
    torch.manual_seed(0)
    cfg = PhoneClassifierConfig(channels=16, dilations=(1, 2))
    model = PhoneClassifier(cfg).eval()
    x = torch.from_numpy(_speech(4_096))[None, None].requires_grad_(True)
    feats = model.features(x)
    assert [f.shape for f in feats] == [torch.Size([1, 16, 16])] * 2
    (grad,) = torch.autograd.grad(sum(f.square().sum() for f in feats), x)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    mel = torch.from_numpy(log_mel(x.detach()[0, 0].numpy()))[None]
    torch.testing.assert_close(model(mel), model(x.detach()), atol=1e-3, rtol=1e-3)


def test_shipped_classifier_reproduces_its_recorded_held_out_ctc_loss() -> None:
    if not (DEFAULT_CHECKPOINT / "model.safetensors").is_file():
        pytest.fail(f"{DEFAULT_CHECKPOINT} is missing; train it with `python -m pwn_lib.phones train`")
    size = sum(f.stat().st_size for f in DEFAULT_CHECKPOINT.iterdir())
    assert size < 5_000_000
    recorded = json.loads((DEFAULT_CHECKPOINT / "metrics.json").read_text())
    model = load_phone_classifier()
    scores = evaluate(model, make_examples("valid", load_targets()))
    assert scores["ctc_loss"] == pytest.approx(recorded["valid_ctc_loss"], rel=0.02)
    assert scores["per"] == pytest.approx(recorded["valid_per"], abs=0.02)
    assert recorded["valid_per"] < 0.6  # far better than chance (a blank-only model scores PER = 1)
