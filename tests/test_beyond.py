"""Tests for pwn_lib.beyond, each against an independent computation:

- the multi-teacher cross-entropies and the per-step Rényi estimator, against quadrature on logistics;
- the teacher's hooked hidden states, against a walk through its blocks by hand;
- the gradient balancer's shares, against autograd;
- the power-gap schedule, against hand values;
- the evolving teacher's swap step, and a tiny end-to-end run that trains, resumes and scores two arms.
"""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

from pwn_lib import beyond
from pwn_lib.distill import cross_entropy_estimate
from pwn_lib.distributions import Logistic
from pwn_lib.layers import shift_right
from pwn_lib.wavenet import build_teacher

GRID = torch.linspace(-40.0, 40.0, 400_001, dtype=torch.float64)


def logistic_log_pdf(x: torch.Tensor, loc: float, scale: float) -> torch.Tensor:
    z = (x - loc) / scale
    return -z - 2 * torch.nn.functional.softplus(-z) - math.log(scale)


def integrate(f: torch.Tensor) -> float:
    return torch.trapezoid(f, GRID).item()


def logistic_density(loc: float, scale: float):
    return lambda draws: logistic_log_pdf(draws.double(), loc, scale)


def test_ensemble_cross_entropies_match_quadrature() -> None:
    """Student L(0.3, 1); teachers L(-1, 0.8) and L(2, 1.5): mixture and average cross-entropies by quadrature."""
    q_loc, q_scale = 0.3, 1.0
    teachers = [(-1.0, 0.8), (2.0, 1.5)]
    log_q = logistic_log_pdf(GRID, q_loc, q_scale)
    logs = [logistic_log_pdf(GRID, *t) for t in teachers]
    exact_mixture = -integrate(log_q.exp() * (torch.logsumexp(torch.stack(logs), 0) - math.log(2)))
    exact_average = -integrate(log_q.exp() * (logs[0] + logs[1]) / 2)
    mu = torch.full((1, 1), q_loc, dtype=torch.float64)
    log_s = torch.full((1, 1), math.log(q_scale), dtype=torch.float64)
    draws = Logistic(mu.expand(400_000, 1, 1), log_s.expand(400_000, 1, 1)).sample(torch.Generator().manual_seed(0))
    densities = [logistic_density(*t) for t in teachers]
    mixture = beyond.ensemble_cross_entropy(draws, densities, "mixture").item()
    average = beyond.ensemble_cross_entropy(draws, densities, "average").item()
    assert mixture == pytest.approx(exact_mixture, abs=0.01)
    assert average == pytest.approx(exact_average, abs=0.01)
    assert mixture < average  # the mixture has mass wherever either teacher has
    one = beyond.ensemble_cross_entropy(draws, densities[:1], "mixture")
    assert torch.allclose(one, beyond.ensemble_cross_entropy(draws, densities[:1], "average"))
    with pytest.raises(ValueError, match="combine"):
        beyond.ensemble_cross_entropy(draws, densities, "product")


def test_the_one_teacher_ensemble_is_the_papers_estimator() -> None:
    mu, log_s = torch.randn(2, 16), 0.1 * torch.randn(2, 16)
    density = logistic_density(0.2, 0.9)
    generator_a, generator_b = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    paper = cross_entropy_estimate(mu, log_s, density, 4, generator_a)
    draws = Logistic(mu.expand(4, 2, 16), log_s.expand(4, 2, 16)).sample(generator_b)
    assert torch.allclose(beyond.ensemble_cross_entropy(draws, [density], "average").float(), paper.float())


@pytest.mark.parametrize("alpha", [0.3, 0.5, 0.9])
def test_renyi_per_step_matches_quadrature(alpha: float) -> None:
    q, p = (0.0, 1.0), (1.0, 1.5)
    log_q, log_p = logistic_log_pdf(GRID, *q), logistic_log_pdf(GRID, *p)
    exact = math.log(integrate(torch.exp(alpha * log_q + (1 - alpha) * log_p))) / (alpha - 1)
    x = Logistic(torch.zeros(200_000, 1, 1, dtype=torch.float64), torch.zeros(200_000, 1, 1, dtype=torch.float64))
    draws = x.sample(torch.Generator().manual_seed(1))
    estimate = beyond.renyi_per_step(logistic_log_pdf(draws, *q), logistic_log_pdf(draws, *p), alpha).item()
    assert estimate == pytest.approx(exact, abs=0.01)
    kl = integrate(log_q.exp() * (log_q - log_p))
    assert exact < kl  # the Rényi divergence grows with its order towards the KL at alpha = 1


def test_renyi_bias_is_upward_and_shrinks_with_k() -> None:
    """The log of a K-sample mean: in expectation the estimate lies above the truth, by less as K grows."""
    q, p, alpha = (0.0, 1.0), (1.0, 1.5), 0.5
    exact = math.log(
        integrate(torch.exp(alpha * logistic_log_pdf(GRID, *q) + (1 - alpha) * logistic_log_pdf(GRID, *p)))
    )
    exact /= alpha - 1
    generator = torch.Generator().manual_seed(2)
    biases = []
    for k in (2, 8):
        draws = Logistic(torch.zeros(k, 20_000, 1, dtype=torch.float64), torch.zeros(k, 20_000, 1, dtype=torch.float64))
        x = draws.sample(generator)
        biases.append(
            beyond.renyi_per_step(logistic_log_pdf(x, *q), logistic_log_pdf(x, *p), alpha).mean().item() - exact
        )
    assert biases[0] > biases[1] > 0
    with pytest.raises(ValueError, match="alpha"):
        beyond.renyi_per_step(torch.zeros(2, 1), torch.zeros(2, 1), 1.0)


def test_teacher_features_are_the_residual_stream_after_each_block() -> None:
    torch.manual_seed(0)
    teacher = build_teacher("tiny").eval()
    x, c = 0.1 * torch.randn(2, 1, 512), torch.randn(2, 80, 512 // teacher.cfg.hop_length)
    features = beyond.TeacherFeatures(teacher, c).features(x)
    with torch.no_grad():
        cu = teacher.condition(c, x.shape[-1])
        h, by_hand = teacher.input(shift_right(x)), []
        for block in teacher.blocks:
            h, _ = block(h, cu, None)
            by_hand.append(h)
    assert len(features) == len(teacher.blocks)
    for got, want in zip(features, by_hand, strict=True):
        assert torch.allclose(got, want, atol=1e-6)
    assert all(not b._forward_hooks for b in teacher.blocks), "the hooks are removed after the pass"


def test_gradient_shares_set_the_norms_at_the_waveform() -> None:
    x = torch.randn(1, 1, 64, requires_grad=True)
    terms = {"kl": (x**2).sum(), "mr_stft": 30 * x.abs().sum(), "power": 0.01 * (x**3).sum()}
    balancer = beyond.GradientShares({"kl": 0.5, "mr_stft": 0.4, "power": 0.1})
    weights = balancer.weights(terms, x, step=0)
    norms = {k: torch.autograd.grad(v, x, retain_graph=True)[0].norm().item() for k, v in terms.items()}
    assert weights["mr_stft"] * norms["mr_stft"] / norms["kl"] == pytest.approx(0.4 / 0.5)
    assert weights["power"] * norms["power"] / norms["kl"] == pytest.approx(0.1 / 0.5)
    assert balancer.weights(terms, x, step=3) == weights, "between measurements the weights hold"
    with pytest.raises(ValueError, match="share"):
        beyond.GradientShares({"mr_stft": 1.0})


def test_power_gap_schedule_by_hand() -> None:
    schedule = beyond.PowerGapSchedule(0.1, target_db=2.0, low=0.5, high=10.0, decay=0.9)
    assert schedule.weight(-12.0) == pytest.approx(0.1 * 6)  # the first gap is taken as it is
    assert schedule.weight(-2.0) == pytest.approx(0.1 * (0.9 * 12 + 0.1 * 2) / 2)  # running mean 11.0 dB
    assert beyond.PowerGapSchedule(0.1).weight(-100.0) == pytest.approx(1.0)  # clipped at base * high
    assert beyond.PowerGapSchedule(0.1).weight(0.3) == pytest.approx(0.05)  # and at base * low
    with pytest.raises(ValueError, match="base"):
        beyond.PowerGapSchedule(0.0)


def test_the_evolving_teacher_swaps_at_its_step() -> None:
    arm = beyond.ARMS["swap"]
    a, b = build_teacher("tiny"), build_teacher("tiny")
    assert beyond.active_teachers(arm, [a, b], 499, 1000) == [a]
    assert beyond.active_teachers(arm, [a, b], 500, 1000) == [b]
    assert beyond.active_teachers(beyond.ARMS["mixture"], [a, b], 999, 1000) == [a, b]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"combine": "product"}, "combine"),
        ({"teachers": ("nobody",)}, "teachers"),
        ({"teachers": ("shipped", "stage8")}, "one teacher"),
        ({"divergence": "renyi", "alpha": 1.0}, "alpha"),
        ({"weighting": "magic"}, "weighting"),
        ({"combine": "swap", "teachers": ("shipped", "stage8"), "swap_at": 1.0}, "swap_at"),
    ],
)
def test_a_bad_arm_is_refused_by_name(change: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message) as error:
        dataclasses.replace(beyond.ARMS["reverse_kl"], name="odd", **change)
    assert "'odd'" in str(error.value)


def test_an_arm_without_its_teacher_fails_before_training(monkeypatch, tmp_path) -> None:
    monkeypatch.setitem(beyond.TEACHERS, "stage8", tmp_path / "absent")
    cfg = dataclasses.replace(beyond.TINY, work_dir=str(tmp_path / "runs"))
    with pytest.raises(FileNotFoundError, match="stage8"):
        beyond.train_arms([beyond.ARMS["reverse_kl"], beyond.ARMS["mixture"]], cfg, progress=False, tiny=True)
    assert not (tmp_path / "runs" / "reverse_kl").exists(), "no arm trains when a later one cannot"


def test_tiny_arms_train_resume_and_score(tmp_path) -> None:
    cfg = dataclasses.replace(beyond.TINY, work_dir=str(tmp_path))
    arms = [beyond.ARMS["reverse_kl"], beyond.ARMS["balancer"]]
    records = beyond.train_arms(arms, cfg, progress=False, tiny=True)
    assert {r["steps"] for r in records.values()} == {cfg.steps}
    assert any("w_mr_stft" in row for row in records["balancer"]["history"]), "the balancer logs its weights"
    assert [p["step"] for p in records["reverse_kl"]["curve"]] == [0, 2, 4]
    again = beyond.train_arms(arms[:1], cfg, progress=False, tiny=True)  # finished: resumed, not retrained
    assert again["reverse_kl"]["history"] == records["reverse_kl"]["history"]
    results = beyond.score_arms(cfg, ["reverse_kl", "balancer"], progress=False)
    systems = results["test"]["systems"]
    assert {"reverse_kl", "balancer", "shipped_student", "real"} <= set(systems)
    assert results["shipped_teacher_recorded"]["row"]["mcd"]["mean"] > 0
    json.dumps(results)  # JSON-ready
