"""The fast paths (:mod:`pwn_lib.fast_paths`) against the reference paths they replace: same weights, same outputs.

- :class:`pwn_lib.fast_paths.StudentSynthesis` (fused, time-major, tiled, optionally bf16 or chunked) against
  :meth:`IAFStudent.forward`;
- the teacher's fused cached step against the teacher-forced pass and against the draws of the reference step.

No timings here: speed is measured by ``scripts/benchmark.py``.
"""

from __future__ import annotations

import os

import pytest
import torch
from safetensors.torch import load_file
from test_student import random_student as moving_student  # a tiny float64 student whose flows all move x

from pwn_lib import _fast
from pwn_lib.config import CHECKPOINT_DIR, REPO_ROOT, WaveNetConfig
from pwn_lib.student import IAFStudent, build_student
from pwn_lib.wavenet import WaveNet

CONFIGS = [dict(), dict(cond_channels=0), dict(n_speakers=3), dict(kernel_size=2)]


def student_inputs(student: IAFStudent, batch: int = 2, frames: int = 3, dtype=torch.float64):
    """(z (B, 1, T), c (B, n_mels, F) or None, speaker (B,) or None)."""
    g = torch.Generator().manual_seed(1)
    cfg = student.cfg
    length = frames * cfg.hop_length
    z = torch.randn(batch, 1, length, generator=g, dtype=dtype)
    c = torch.randn(batch, cfg.cond_channels, frames, generator=g, dtype=dtype) if cfg.cond_channels else None
    speaker = torch.arange(batch) % cfg.n_speakers if cfg.n_speakers else None
    return z, c, speaker


@pytest.mark.parametrize("overrides", CONFIGS)
def test_fused_student_equals_the_reference_pass(overrides):
    """float64 and a tile smaller than T, so a wrong tap, gate or tile seam shows far above rounding."""
    student = moving_student(**overrides)
    z, c, speaker = student_inputs(student)
    with torch.no_grad():
        reference = student(z, c, speaker)
    fast = student.for_synthesis(torch.float64, tile=100)(z, c, speaker)
    for name, want, got in zip(("x", "mu_tot", "log_s_tot"), reference, fast, strict=True):
        assert got.shape == want.shape and got.dtype == torch.float64
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10, msg=name)
    assert (reference[0] - z).abs().max() > 0.1, "the flows are near-identity: the test would be vacuous"


@pytest.mark.parametrize("chunk", [37, 300, 10_000])
def test_chunked_synthesis_equals_one_pass(chunk):
    """Chunks overlap by each flow's receptive field (61 samples for tiny), so the seams cannot be seen."""
    student = moving_student()
    z, c, _ = student_inputs(student, frames=3)  # 768 samples: several seams for chunks of 37 and 300
    synthesis = student.for_synthesis(torch.float64, tile=64)
    whole, chunked = synthesis(z, c), synthesis(z, c, chunk=chunk)
    for want, got in zip(whole, chunked, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_chunks_without_enough_overlap_would_show_their_seams():
    """The receptive field is what the overlap needs: one sample less and the seams differ (the test can fail)."""
    student = moving_student()
    z, c, _ = student_inputs(student, frames=3)
    synthesis = student.for_synthesis(torch.float64)
    whole = synthesis(z, c)[0]
    for plan in synthesis.flows:
        plan.receptive_field -= 1
    assert (synthesis(z, c, chunk=100)[0] - whole).abs().max() > 1e-6


def test_bf16_synthesis_is_close_to_float32_and_keeps_the_stream_in_float32():
    """bf16 products (8-bit mantissa) against float32: within 2 % of the signal's peak, like bf16 autocast."""
    torch.manual_seed(0)
    student = build_student("tiny")
    z, c, _ = student_inputs(student, dtype=torch.float32)
    with torch.no_grad():
        x32 = student(z, c)[0]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            x_autocast = student(z, c)[0]
    x16, mu16, log_s16 = student.for_synthesis(torch.bfloat16)(z, c)
    assert x16.dtype == mu16.dtype == log_s16.dtype == torch.float32
    assert (x16 - x32).abs().max() < 0.02 * x32.abs().max()
    assert (x16 - x32).abs().max() < 3 * (x_autocast - x32).abs().max() + 1e-6  # no worse than autocast's error


def test_fast_sample_draws_the_same_noise_as_the_reference_sample():
    torch.manual_seed(0)
    student = build_student("tiny").eval()
    c = torch.randn(2, 80, 3)
    want = student.sample(c, generator=torch.Generator().manual_seed(5))
    got = student.for_synthesis(tile=200).sample(c, generator=torch.Generator().manual_seed(5), chunk=250)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_unconditioned_fast_sample_draws_the_same_noise_and_needs_a_length():
    student = moving_student(cond_channels=0, n_speakers=3)
    speaker = torch.tensor([0, 2])
    want = student.sample(None, speaker, torch.Generator().manual_seed(5), n_samples=300)
    fast = student.for_synthesis(torch.float64, tile=64)
    got = fast.sample(None, speaker, torch.Generator().manual_seed(5), n_samples=300)
    assert got.shape == (2, 1, 300) and got.dtype == torch.float64
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    assert (got - student.sample(None, speaker, torch.Generator().manual_seed(6), n_samples=300)).abs().max() > 0.1
    for sample in (student.sample, student.for_synthesis().sample):
        with pytest.raises(ValueError, match="needs n_samples"):
            sample(None, speaker)


def test_shipped_student_fast_path_reproduces_the_reference_outputs():
    """The shipped checkpoint through the fused path, against the outputs saved before any refactor."""
    reference = load_file(str(REPO_ROOT / "tests" / "data" / "student_course_reference.safetensors"))
    student = IAFStudent.from_checkpoint(CHECKPOINT_DIR / "student_course")
    x, mu_tot, log_s_tot = student.for_synthesis(tile=1000)(reference["z"], reference["c"])
    for name, got in (("x", x), ("mu_tot", mu_tot), ("log_s_tot", log_s_tot)):
        torch.testing.assert_close(got, reference[name], rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.skipif(not os.environ.get("PWN_TEST_COMPILE"), reason="compiling takes minutes; PWN_TEST_COMPILE=1")
def test_compiled_synthesis_equals_eager():
    torch.manual_seed(0)
    student = build_student("tiny")
    z, c, _ = student_inputs(student, batch=1, dtype=torch.float32)
    eager = student.for_synthesis(tile=512)(z, c)
    compiled = student.for_synthesis(compile=True, tile=512)(z, c)
    for want, got in zip(eager, compiled, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


# ----- the teacher's compiled cached generation (pwn_lib/_fast/cached_mol.c, built by make setup)

TEACHER_HOP, TEACHER_MELS = 8, 5


def small_teacher(kernel_size: int = 3, conditioned: bool = True, speakers: int = 0, **overrides) -> WaveNet:
    """Six float32 layers (dilations 1, 2, 4, 1, 2, 4) with a large last layer, so the network's part moves."""
    torch.manual_seed(10 * kernel_size + 2 * conditioned + speakers)
    cfg = WaveNetConfig(
        layers=6,
        stacks=2,
        residual_channels=8,
        gate_channels=16,
        skip_channels=8,
        kernel_size=kernel_size,
        n_mixtures=3,
        cond_channels=TEACHER_MELS if conditioned else 0,
        hop_length=TEACHER_HOP,
        n_speakers=speakers,
        speaker_dim=4,
        **overrides,
    )
    model = WaveNet(cfg)
    with torch.no_grad():
        model.head[-1].weight.mul_(30.0)
    return model


def teacher_inputs(model: WaveNet, batch: int = 2):
    """(c (B, n_mels, F) or None, speaker (B,) or None, n_samples) covering twice the receptive field."""
    frames = -(-2 * model.receptive_field // TEACHER_HOP) + 1
    g = torch.Generator().manual_seed(0)
    c = torch.randn(batch, model.cfg.cond_channels, frames, generator=g) if model.cfg.cond_channels else None
    speaker = torch.arange(batch) % model.cfg.n_speakers if model.cfg.n_speakers else None
    return c, speaker, frames * TEACHER_HOP


@pytest.fixture(scope="module")
def built():
    if _fast.library() is None:
        pytest.fail(_fast.BUILD_HINT)


@pytest.mark.parametrize("kernel_size", [2, 3])
@pytest.mark.parametrize("conditioned", [True, False])
@pytest.mark.parametrize("speakers", [0, 3])
def test_compiled_generation_equals_teacher_forced_pass(built, kernel_size, conditioned, speakers):
    model = small_teacher(kernel_size, conditioned, speakers)
    c, speaker, n = teacher_inputs(model)
    x, params = model.generate(
        c,
        n_samples=n,
        speaker=speaker,
        progress=False,
        return_params=True,
        generator=torch.Generator().manual_seed(1),
        compiled=True,
    )
    with torch.no_grad():
        reference = model(x, c, speaker)
    assert x.shape[-1] == n >= 2 * model.receptive_field
    assert (params - reference).abs().max().item() < 1e-5
    varying = reference[:, :3].std(dim=-1).amax(dim=1)  # each row's most-moving logit, over time
    assert (varying > 1e-3).all(), f"logits hardly move ({varying.tolist()}): the queues would go untested"


def test_compiled_generation_draws_the_reference_samples(built):
    """The same uniforms in the same order: equal up to a rare bin flip from float rounding."""
    model = small_teacher(speakers=2)
    c, speaker, n = teacher_inputs(model)
    reference = model.generate(
        c, n_samples=n, speaker=speaker, progress=False, generator=torch.Generator().manual_seed(3)
    )
    compiled = model.generate(
        c, n_samples=n, speaker=speaker, progress=False, generator=torch.Generator().manual_seed(3), compiled=True
    )
    other = model.generate(
        c, n_samples=n, speaker=speaker, progress=False, generator=torch.Generator().manual_seed(4), compiled=True
    )
    assert (compiled == reference).float().mean() > 0.99
    assert (compiled - reference).abs().max().item() < 1e-3
    assert (compiled - other).abs().max().item() > 1e-2


def test_compiled_generation_at_a_temperature_draws_the_reference_samples(built):
    """Temperature scales the logistic noise the same way in both paths, and it changes the draws."""
    model = small_teacher()
    c, _, n = teacher_inputs(model)
    draws = {}
    for compiled in (False, True):
        for t in (1.0, 0.5):
            draws[compiled, t] = model.generate(
                c,
                n_samples=n,
                progress=False,
                compiled=compiled,
                temperature=t,
                generator=torch.Generator().manual_seed(3),
            )
    assert (draws[True, 0.5] == draws[False, 0.5]).float().mean() > 0.99
    assert (draws[True, 0.5] - draws[False, 0.5]).abs().max().item() < 1e-3
    assert (draws[True, 0.5] - draws[True, 1.0]).abs().max().item() > 1e-3
    with pytest.raises(ValueError, match="temperature"):
        model.generate(c, n_samples=4, progress=False, compiled=True, temperature=0.0)


def test_compiled_generation_refuses_what_it_cannot_run():
    with pytest.raises(ValueError, match="output 'mol'"):
        small_teacher(conditioned=False, output="gaussian").generate(n_samples=4, progress=False, compiled=True)
    with pytest.raises(ValueError, match="float32"):
        small_teacher(conditioned=False).double().generate(n_samples=4, progress=False, compiled=True)


def test_compiled_generation_is_offered_exactly_where_it_can_run():
    """A float32 CPU "mol" teacher with the library built; a Gaussian head or float64 weights are refused above."""
    assert small_teacher(conditioned=False).compiled_generation_available() == (_fast.library() is not None)
    assert not small_teacher(conditioned=False, output="gaussian").compiled_generation_available()
    assert not small_teacher(conditioned=False).double().compiled_generation_available()


def test_shipped_teacher_compiled_generation_equals_its_teacher_forced_pass(built):
    teacher = WaveNet.from_checkpoint(CHECKPOINT_DIR / "teacher_course")
    c = torch.randn(1, teacher.cfg.cond_channels, 12, generator=torch.Generator().manual_seed(0)) - 5.0
    x, params = teacher.generate(
        c, progress=False, return_params=True, compiled=True, generator=torch.Generator().manual_seed(0)
    )
    with torch.no_grad():
        assert (params - teacher(x, c)).abs().max().item() < 1e-5
