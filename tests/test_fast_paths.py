"""The fast paths of issue 12 against the reference paths they replace: same weights, same outputs.

- :class:`pwn_lib.student.StudentSynthesis` (fused, time-major, tiled, optionally bf16 or chunked) against
  :meth:`IAFStudent.forward`;
- the teacher's fused cached step against the teacher-forced pass and against the draws of the reference step.

No timings here: speed is measured by ``scripts/benchmark.py``.
"""

from __future__ import annotations

import os

import pytest
import torch
from safetensors.torch import load_file

from pwn_lib.config import CHECKPOINT_DIR, REPO_ROOT
from pwn_lib.student import IAFStudent, build_student

CONFIGS = [dict(), dict(cond_channels=0), dict(n_speakers=3), dict(kernel_size=2)]


def moving_student(seed: int = 0, **overrides) -> IAFStudent:
    """A tiny float64 student whose heads are large enough that every flow moves x (as in test_student)."""
    torch.manual_seed(seed)
    student = build_student("tiny", **overrides).double()
    with torch.no_grad():
        for flow in student.flows:
            flow.head[-1].weight.normal_(std=0.3)
            flow.head[-1].bias.normal_(std=0.3)
    return student


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
