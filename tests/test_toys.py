"""Tests for pwn_lib.toys, each against an independent computation: autograd Jacobians for the densities,
quadrature for the normalisation and the divergences, the sample's noise dependence for the receptive field,
and seeded distillation runs whose KL must fall by a stated margin."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
from torch.autograd.functional import jacobian

from pwn_lib.toys import (
    AR_LAG,
    ToyFlow,
    ar_series,
    distil,
    fit_ml,
    forward_kl,
    grid_divergences,
    reverse_kl,
    two_moons,
)

torch.set_num_threads(1)
F64 = torch.float64
SERIES_STD = 0.1  # wider random conv weights make a MAF's sequential sampling explode (x_t = (u_t - mu) / s)


def randomised(flow: ToyFlow, seed: int, std: float = 0.3) -> ToyFlow:
    """Float64 copy with every parameter redrawn, so no flow sits at its identity initialisation."""
    generator = torch.Generator().manual_seed(seed)
    flow = flow.double()
    with torch.no_grad():
        for p in flow.parameters():
            p.copy_(torch.randn(p.shape, generator=generator, dtype=F64) * std)
    return flow


def logistic_log_pdf(u: torch.Tensor) -> torch.Tensor:
    """Standard logistic log density written out: ``-u - 2 log(1 + e^{-u})``, summed over coordinates."""
    return (-u - 2.0 * torch.log1p(torch.exp(-u))).sum(-1)


def flows(dim: int = 4, length: int = 7) -> dict[str, ToyFlow]:
    return {
        "maf_vector": randomised(ToyFlow.maf(dim, flows=3, width=8), 0),
        "iaf_vector": randomised(ToyFlow.iaf(dim, flows=3, width=8), 1),
        "maf_series": randomised(ToyFlow.maf(length, flows=2, width=4, layers=2, series=True), 2, SERIES_STD),
        "iaf_series": randomised(ToyFlow.iaf(length, flows=2, width=4, layers=2, series=True), 3, SERIES_STD),
    }


@pytest.mark.parametrize("name", list(flows()))
def test_log_prob_is_the_change_of_variables_with_an_autograd_jacobian(name):
    flow = flows()[name]
    u = flow.noise(3, torch.Generator().manual_seed(4))
    for u_i in u:
        x_i = flow.sample_from_noise(u_i[None])[0]
        jac = jacobian(lambda v: flow.sample_from_noise(v[None])[0], u_i)  # dx/du, (D, D)
        expected = logistic_log_pdf(u_i) - torch.linalg.slogdet(jac).logabsdet
        torch.testing.assert_close(flow.log_prob(x_i[None])[0], expected, rtol=0, atol=1e-9)


@pytest.mark.parametrize("name", list(flows()))
def test_sample_with_log_prob_and_round_trips(name):
    flow = flows()[name]
    x, log_p = flow.sample_with_log_prob(5, torch.Generator().manual_seed(5))
    u = flow.noise(5, torch.Generator().manual_seed(5))
    torch.testing.assert_close(x, flow.sample_from_noise(u))  # same seed, same noise, same sample
    torch.testing.assert_close(log_p, flow.log_prob(x), rtol=0, atol=1e-9)
    torch.testing.assert_close(flow.to_noise(x), u, rtol=0, atol=1e-9)  # MAF: parallel; IAF: sequential


@pytest.mark.parametrize("name", ["iaf_series", "maf_series"])
def test_receptive_field_is_exactly_what_a_step_depends_on(name):
    """IAF: x_t depends on u_{t-R..t}; MAF: the density's noise u_t depends on x_{t-R..t}; R = flows * 2**layers."""
    flow = randomised(ToyFlow.build(name[:3], 12, flows=2, width=4, layers=2, series=True), 6, SERIES_STD)
    assert flow.receptive_field == 8
    x = flow.sample(1, torch.Generator().manual_seed(7))[0]
    if flow.kind == "iaf":
        jac = jacobian(lambda v: flow.sample_from_noise(v[None])[0], flow.to_noise(x[None])[0])
    else:
        jac = jacobian(lambda v: flow.to_noise(v[None])[0], x)
    depends = jac.abs() > 1e-12
    lags = torch.arange(12)[:, None] - torch.arange(12)[None, :]  # t - s
    assert not depends[(lags < 0) | (lags > 8)].any()
    assert depends[lags == 8].all()


def test_two_d_densities_integrate_to_one_on_a_grid():
    maf, iaf = randomised(ToyFlow.maf(2, flows=3, width=8), 8), randomised(ToyFlow.iaf(2, flows=3, width=8), 9)
    grid = grid_divergences(iaf, maf, lim=25.0, points=700)
    assert grid["student_mass"] == pytest.approx(1.0, abs=2e-3)
    assert grid["teacher_mass"] == pytest.approx(1.0, abs=2e-3)


def test_monte_carlo_kl_agrees_with_quadrature_and_kl_of_p_with_itself_is_zero():
    maf, iaf = randomised(ToyFlow.maf(2, flows=3, width=8), 10), randomised(ToyFlow.iaf(2, flows=3, width=8), 11)
    grid = grid_divergences(iaf, maf, lim=25.0, points=700)
    rev, rev_se = reverse_kl(iaf, maf, 20000, torch.Generator().manual_seed(12))
    fwd, fwd_se = forward_kl(maf, iaf, 20000, torch.Generator().manual_seed(13))
    assert grid["reverse_kl"] > 0.05 and grid["forward_kl"] > 0.05  # the pair differs, so the check can fail
    assert abs(rev - grid["reverse_kl"]) < 4 * rev_se + 2e-3
    assert abs(fwd - grid["forward_kl"]) < 4 * fwd_se + 2e-3
    assert 0 < grid["js"] < math.log(2)
    assert reverse_kl(maf, maf, 100) == (0.0, 0.0)
    same = grid_divergences(maf, maf, lim=25.0, points=100)
    assert same["reverse_kl"] == same["forward_kl"] == same["js"] == 0.0


def test_fit_ml_lowers_the_nll_of_a_known_gaussian():
    """ML on N(0, 0.5^2)^2 data: the NLL must fall towards the data's entropy ln(2 pi e 0.25) = 1.45 nats."""
    torch.manual_seed(0)
    flow = ToyFlow.maf(2, flows=1, width=8)
    history = fit_ml(
        flow,
        lambda n, g: 0.5 * torch.randn(n, 2, generator=g),
        300,
        lr=1e-2,
        batch=256,
        generator=torch.Generator().manual_seed(1),
    )
    entropy = math.log(2 * math.pi * math.e * 0.25)
    assert history["nll"][0] > entropy + 0.7  # the standard-logistic start is far too wide
    assert sum(history["nll"][-20:]) / 20 < entropy + 0.1


def moons_pair() -> tuple[ToyFlow, ToyFlow]:
    torch.manual_seed(0)
    teacher = randomised(ToyFlow.maf(2, flows=2, width=16), 14, std=0.4).float()
    return teacher, ToyFlow.iaf(2, flows=3, width=16)


def test_reverse_kl_distillation_lowers_the_exact_kl():
    teacher, student = moons_pair()
    history = distil(
        student,
        teacher,
        "reverse_kl",
        steps=300,
        batch=128,
        lr=3e-3,
        generator=torch.Generator().manual_seed(15),
        eval_every=100,
        eval_n=2000,
    )
    start, end = history.evals[0]["reverse_kl"]["teacher"], history.final["reverse_kl"]["teacher"]
    assert start > 0.3
    assert end < 0.25 * start
    assert history.final["forward_kl"]["teacher"] < 0.5 * history.evals[0]["forward_kl"]["teacher"]
    assert history.steps_done == 300 and [e["step"] for e in history.evals] == [0, 100, 200, 300]
    assert history.teacher_seconds == 0.0 and 0 < history.seconds_per_step < 0.1


def test_teacher_swap_records_kl_to_both_teachers():
    teacher, student = moons_pair()
    new = randomised(ToyFlow.maf(2, flows=2, width=16), 16, std=0.4).float()
    history = distil(
        student,
        teacher,
        "reverse_kl",
        steps=200,
        batch=128,
        lr=3e-3,
        teacher_swap=(100, new),
        generator=torch.Generator().manual_seed(17),
        eval_every=50,
        eval_n=1000,
    )
    assert history.swapped_at == 101
    assert [e["teacher"] for e in history.evals] == ["old", "old", "old", "new", "new"]
    at_swap, end = history.evals[2], history.final
    assert set(end["reverse_kl"]) == {"old", "new"}
    assert end["reverse_kl"]["new"] < 0.5 * at_swap["reverse_kl"]["new"]  # it learnt the new teacher
    assert end["reverse_kl"]["old"] > at_swap["reverse_kl"]["old"]  # and moved away from the old one


def test_ml_on_teacher_samples_lowers_the_forward_kl_and_times_the_teacher():
    teacher, student = moons_pair()
    history = distil(
        student,
        teacher,
        "forward_kl_ml",
        steps=150,
        batch=128,
        lr=3e-3,
        generator=torch.Generator().manual_seed(18),
        eval_every=150,
        eval_n=1000,
    )
    assert history.final["forward_kl"]["teacher"] < 0.5 * history.evals[0]["forward_kl"]["teacher"]
    assert 0 < history.teacher_seconds < history.seconds[-1]


def test_regression_matches_the_teachers_map_on_shared_noise():
    """Its loss is ||f_S(u) - f_T(u)||^2; checked here on fresh noise, not on the loss it logged."""
    teacher, student = moons_pair()
    u = student.noise(2000, torch.Generator().manual_seed(19))

    def gap() -> float:
        with torch.no_grad():
            return ((student.sample_from_noise(u) - teacher.sample_from_noise(u)) ** 2).sum(-1).mean().item()

    before = gap()
    history = distil(
        student,
        teacher,
        "regression",
        steps=150,
        batch=128,
        lr=3e-3,
        generator=torch.Generator().manual_seed(18),
        eval_every=150,
        eval_n=100,
    )
    assert gap() < 0.05 * before
    assert 0 < history.teacher_seconds < history.seconds[-1]


def test_short_receptive_field_student_cannot_match_the_lag():
    """On ar_series (lag 8) the same teacher and budget: receptive field 4 ends clearly above receptive field 16."""
    length = 16
    torch.manual_seed(0)
    teacher = ToyFlow.maf(length, flows=1, width=16, layers=3, series=True)  # sees 8 past steps: can be exact
    fit_ml(
        teacher,
        lambda n, g: ar_series(n, length, g),
        150,
        lr=5e-3,
        batch=128,
        generator=torch.Generator().manual_seed(1),
    )
    finals = {}
    for receptive_field, layers in {4: 1, 16: 3}.items():  # the same two flows, wider dilations
        torch.manual_seed(2)
        student = ToyFlow.iaf(length, flows=2, width=16, layers=layers, series=True)
        assert student.receptive_field == receptive_field
        history = distil(
            student,
            teacher,
            "reverse_kl",
            steps=100,
            batch=64,
            lr=5e-3,
            generator=torch.Generator().manual_seed(3),
            eval_every=100,
            eval_n=1000,
        )
        finals[receptive_field] = history.final["reverse_kl"]["teacher"] / length
    assert finals[4] > finals[16] + 0.05, finals


def test_ar_series_has_its_documented_lag_structure():
    x = ar_series(4000, 32, torch.Generator().manual_seed(19))

    def corr(lag: int) -> float:
        return torch.corrcoef(torch.stack([x[:, 16], x[:, 16 + lag]]))[0, 1].item()

    assert corr(AR_LAG) > 0.6 and max(corr(lag) for lag in (3, 4, 5)) < 0.25
    assert x[:, 0].mean().abs() < 0.05 and abs(x[:, 0].std() - x[:, -1].std()) < 0.05  # stationary window


def test_two_moons_is_standardised():
    x = two_moons(20000, generator=torch.Generator().manual_seed(20))
    assert x.shape == (20000, 2)
    assert x.mean(0).abs().max() < 0.05 and ((x.std(0) - 1).abs() < 0.1).all()


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: two_moons(0), r"two_moons n=0: use an integer >= 1"),
        (lambda: two_moons(10, noise=-1.0), r"noise=-1.0: use a finite standard deviation"),
        (lambda: ar_series(5, length=1), r"ar_series length=1"),
        (lambda: ToyFlow.maf(2, flows=0), r"ToyFlow flows=0"),
        (lambda: ToyFlow.iaf(1), r"ToyFlow dim \(the dimension\)=1"),
        (lambda: ToyFlow("nice", nn.Identity(), 2), r"kind='nice' is unknown; use 'maf'"),
        (lambda: ToyFlow.maf(3).log_prob(torch.zeros(4, 2)), r"needs x of shape \(n, 3\), got \(4, 2\)"),
        (lambda: fit_ml(ToyFlow.maf(2), lambda n, g: torch.zeros(n, 3), 5), r"returned shape \(256, 3\)"),
        (lambda: fit_ml(ToyFlow.maf(2), two_moons, 5, lr=0.0), r"lr=0.0: use a finite number > 0"),
        (lambda: reverse_kl(ToyFlow.iaf(2), ToyFlow.maf(2), n=1), r"n=1 samples"),
        (lambda: reverse_kl(ToyFlow.iaf(2), ToyFlow.maf(3)), r"different spaces \(2 and 3"),
        (lambda: grid_divergences(ToyFlow.iaf(3), ToyFlow.maf(3)), r"integrates over the plane"),
        (lambda: grid_divergences(ToyFlow.iaf(2), ToyFlow.maf(2), lim=-1), r"lim=-1"),
        (lambda: distil(ToyFlow.iaf(2), ToyFlow.maf(2), "kl", steps=5), r"method='kl' is unknown"),
        (lambda: distil(ToyFlow.iaf(2), ToyFlow.maf(2)), r"needs a budget: give budget_s"),
        (lambda: distil(ToyFlow.iaf(2), ToyFlow.maf(2), budget_s=-1.0), r"budget_s=-1.0"),
        (
            lambda: distil(ToyFlow.iaf(2), ToyFlow.maf(2), steps=5, teacher_swap=(5, ToyFlow.maf(2))),
            r"at step 5 is not before the end \(steps=5\)",
        ),
        (
            lambda: distil(ToyFlow.iaf(2), ToyFlow.maf(2), steps=5, teacher_swap=(2, ToyFlow.maf(3))),
            r"teacher_swap: the two flows model different spaces",
        ),
        (
            lambda: distil(ToyFlow.iaf(2), ToyFlow.maf(2), steps=5, teacher_swap=ToyFlow.maf(2)),
            r"teacher_swap must be \(at, new_teacher\)",
        ),
    ],
)
def test_bad_arguments_are_refused_with_a_message(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_experiment_size_switch_must_be_a_bool():
    from pwn_lib.toys import architecture_sweep

    with pytest.raises(ValueError, match=r"fast='yes': use True"):
        architecture_sweep("yes")
