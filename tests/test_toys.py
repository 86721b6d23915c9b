"""Tests for pwn_lib.toys, each against an independent computation: autograd Jacobians for the densities,
quadrature for the normalisation and the divergences, Gaussian closed forms for the Renyi and JS estimators,
autograd through quadrature for the training losses' gradients, the sample's noise dependence for the
receptive field, and seeded distillation runs whose KL must fall by a stated margin. Each new check also
shows that a deliberately wrong version fails it."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn as nn
from torch.autograd.functional import jacobian

from pwn_lib.toys import (
    AR_LAG,
    TeacherEnsemble,
    ToyFlow,
    ar_series,
    distil,
    fit_ml,
    forward_kl,
    grid_divergences,
    grid_renyi,
    js_divergence,
    js_estimate,
    renyi_divergence,
    renyi_estimate,
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


# --------------------------------------------------------------------------- other divergences


def gaussian_renyi(m1: float, s1: float, m2: float, s2: float, alpha: float) -> float:
    """Closed form ``D_alpha(N(m1, s1^2) || N(m2, s2^2))`` (needs ``alpha s2^2 + (1 - alpha) s1^2 > 0``)."""
    v = alpha * s2**2 + (1 - alpha) * s1**2
    return math.log(s2 / s1) + math.log(s2**2 / v) / (2 * (alpha - 1)) + alpha * (m1 - m2) ** 2 / (2 * v)


def gaussian_kl(m1: float, s1: float, m2: float, s2: float) -> float:
    return math.log(s2 / s1) + (s1**2 + (m1 - m2) ** 2) / (2 * s2**2) - 0.5


def gaussian_log_pdf(x: torch.Tensor, m: float, s: float) -> torch.Tensor:
    return -0.5 * ((x - m) / s) ** 2 - math.log(s) - 0.5 * math.log(2 * math.pi)


Q, P = (0.0, 1.0), (0.5, 1.5)  # student N(0, 1), teacher N(0.5, 1.5^2)


def gaussian_draws(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(x, log q(x), log p(x))`` for ``n`` draws from the student Gaussian Q."""
    x = Q[0] + Q[1] * torch.randn(n, generator=torch.Generator().manual_seed(seed), dtype=F64)
    return x, gaussian_log_pdf(x, *Q), gaussian_log_pdf(x, *P)


@pytest.mark.parametrize("alpha", [0.5, 0.8, 2.0])
def test_renyi_estimate_matches_the_gaussian_closed_form(alpha):
    _, log_q, log_p = gaussian_draws(200_000, 30)
    value, se = renyi_estimate(log_q, log_p, alpha)
    exact = gaussian_renyi(*Q, *P, alpha)
    assert abs(value - exact) < 4 * se + 1e-3, (value, se, exact)
    kl_shaped = ((1 - alpha) * (log_p - log_q)).mean().item() / (alpha - 1)  # wrong: no log of the mean
    assert abs(kl_shaped - exact) > 10 * se  # the check above would catch it


def test_renyi_tends_to_the_kl_as_alpha_goes_to_one():
    kl = gaussian_kl(*Q, *P)
    assert gaussian_renyi(*Q, *P, 0.999) == pytest.approx(kl, abs=2e-3)  # the closed forms agree in the limit
    _, log_q, log_p = gaussian_draws(100_000, 31)
    assert renyi_estimate(log_q, log_p, 0.999)[0] == pytest.approx((log_q - log_p).mean().item(), abs=2e-3)
    assert gaussian_renyi(*Q, *P, 0.5) < kl < gaussian_renyi(*Q, *P, 2.0)  # D_alpha grows with alpha


def gaussian_js() -> float:
    """JS(N_P, N_Q) by the trapezoid rule on a fine grid."""
    x = torch.linspace(-20, 20, 400_001, dtype=F64)
    log_q, log_p = gaussian_log_pdf(x, *Q), gaussian_log_pdf(x, *P)
    log_m = torch.logaddexp(log_q, log_p) - math.log(2)
    integrand = 0.5 * (log_q.exp() * (log_q - log_m) + log_p.exp() * (log_p - log_m))
    return torch.trapezoid(integrand, x).item()


def test_js_estimators_match_quadrature_for_gaussians_and_the_unweighted_one_does_not():
    exact = gaussian_js()
    x, log_q, log_p = gaussian_draws(200_000, 32)
    y = P[0] + P[1] * torch.randn(200_000, generator=torch.Generator().manual_seed(33), dtype=F64)
    two_sided = js_estimate(log_q, log_p, gaussian_log_pdf(y, *Q), gaussian_log_pdf(y, *P))
    student_only = js_estimate(log_q, log_p)
    for value, se in (two_sided, student_only):
        assert abs(value - exact) < 4 * se + 1e-4, (value, se, exact)
    log_m = torch.logaddexp(log_q, log_p) - math.log(2)
    unweighted = (0.5 * (log_q - log_m) + 0.5 * (log_p - log_m)).mean().item()  # wrong: E_p taken under q
    assert abs(unweighted - exact) > 10 * student_only[1]
    with pytest.raises(ValueError, match="needs both log_q_t and log_p_t"):
        js_estimate(log_q, log_p, log_q_t=log_q)


def plane_pair(seed: int = 40) -> tuple[ToyFlow, ToyFlow]:
    return randomised(ToyFlow.iaf(2, flows=3, width=8), seed), randomised(ToyFlow.maf(2, flows=3, width=8), seed + 1)


def test_flow_renyi_and_js_estimates_agree_with_quadrature():
    student, teacher = plane_pair()
    grid = grid_divergences(student, teacher, lim=25.0, points=700)
    renyi = grid_renyi(student, teacher, 0.5, lim=25.0, points=700)
    assert renyi > 0.02 and grid["js"] > 0.01  # the pair differs, so the checks can fail
    value, se = renyi_divergence(student, teacher, 0.5, 20000, torch.Generator().manual_seed(42))
    assert abs(value - renyi) < 4 * se + 2e-3
    for teacher_draws in (True, False):
        value, se = js_divergence(student, teacher, 20000, torch.Generator().manual_seed(43), teacher_draws)
        assert abs(value - grid["js"]) < 4 * se + 2e-3, teacher_draws
    assert grid_renyi(student, teacher, 1, lim=25.0, points=700) == pytest.approx(grid["reverse_kl"])
    assert grid_renyi(student, teacher, 0.999, lim=25.0, points=700) == pytest.approx(grid["reverse_kl"], rel=0.02)


def exact_divergence(student: ToyFlow, teacher: ToyFlow, method: str, alpha: float = 0.5) -> torch.Tensor:
    """The divergence by quadrature, differentiable in the student's weights (autograd through log q)."""
    h = 2 * 25.0 / 500
    centres = torch.linspace(-25 + h / 2, 25 - h / 2, 500, dtype=F64)
    grid = torch.cartesian_prod(centres, centres)
    log_q = student.log_prob(grid)
    with torch.no_grad():
        log_p = teacher.log_prob(grid)
    q, p = log_q.exp(), log_p.exp()
    if method == "reverse_kl":
        return (q * (log_q - log_p)).sum() * h * h
    if method == "renyi":
        return (torch.logsumexp(alpha * log_q + (1 - alpha) * log_p, 0) + 2 * math.log(h)) / (alpha - 1)
    log_m = torch.logaddexp(log_q, log_p) - math.log(2)
    return 0.5 * (q * (log_q - log_m) + p * (log_p - log_m)).sum() * h * h


def loss_gradient(student: ToyFlow, loss: torch.Tensor) -> torch.Tensor:
    return torch.cat([g.flatten() for g in torch.autograd.grad(loss, list(student.parameters()))])


@pytest.mark.parametrize("method", ["reverse_kl", "renyi", "js"])
def test_training_losses_have_the_gradient_of_the_exact_divergence(method):
    from pwn_lib.toys import LOSSES

    student, teacher = plane_pair(44)
    teacher.requires_grad_(False)
    exact = loss_gradient(student, exact_divergence(student, teacher, method))
    loss, _ = LOSSES[method](student, teacher, 100_000, torch.Generator().manual_seed(45))
    estimated = loss_gradient(student, loss)
    cosine = torch.nn.functional.cosine_similarity(exact, estimated, dim=0)
    assert cosine > 0.97 and estimated.norm() / exact.norm() == pytest.approx(1.0, abs=0.1), (cosine, method)
    if method == "js":  # the same loss with the importance weight dropped has another gradient
        x, log_q = student.sample_with_log_prob(100_000, torch.Generator().manual_seed(45))
        log_m = torch.logaddexp(log_q, teacher.log_prob(x)) - math.log(2)
        wrong = loss_gradient(student, (0.5 * (log_q - log_m) + 0.5 * (teacher.log_prob(x) - log_m)).mean())
        assert torch.nn.functional.cosine_similarity(exact, wrong, dim=0) < 0.9


def test_renyi_and_js_distillation_lower_their_exact_divergence():
    teacher, _ = moons_pair()
    for method in ("renyi", "js"):
        torch.manual_seed(0)
        student = ToyFlow.iaf(2, flows=3, width=16)
        score = (
            (lambda s: grid_renyi(s, teacher, 0.5))
            if method == "renyi"
            else lambda s: grid_divergences(s, teacher)["js"]
        )
        before = score(student)
        distil(student, teacher, method, steps=200, batch=128, lr=3e-3, generator=torch.Generator().manual_seed(46))
        assert score(student) < 0.4 * before, method


# --------------------------------------------------------------------------- several teachers


def two_teachers() -> tuple[ToyFlow, ToyFlow]:
    return randomised(ToyFlow.maf(2, flows=2, width=8), 50), randomised(ToyFlow.maf(2, flows=2, width=8), 51)


def test_the_mixture_is_a_normalised_density_and_samples_from_it():
    a, b = two_teachers()
    mixture = TeacherEnsemble([a, b], "mixture")
    student = randomised(ToyFlow.iaf(2, flows=2, width=8), 52)
    grid = grid_divergences(student, mixture, lim=25.0, points=700)
    assert grid["teacher_mass"] == pytest.approx(1.0, abs=2e-3)
    fwd, se = forward_kl(mixture, student, 20000, torch.Generator().manual_seed(53))  # draws from the mixture
    assert abs(fwd - grid["forward_kl"]) < 4 * se + 2e-3
    summed = TeacherEnsemble([a, b], "mixture")
    summed.log_prob = lambda x: torch.logsumexp(torch.stack([a.log_prob(x), b.log_prob(x)]), 0)  # wrong: no -ln M
    assert grid_divergences(student, summed, lim=25.0, points=700)["teacher_mass"] == pytest.approx(2.0, abs=5e-3)


def test_the_reverse_kl_to_the_geometric_mean_is_the_average_of_the_kls():
    a, b = two_teachers()
    student = randomised(ToyFlow.iaf(2, flows=2, width=8), 54)
    geometric = TeacherEnsemble([a, b], "geometric")
    by_sampling = [reverse_kl(student, t, 5000, torch.Generator().manual_seed(55))[0] for t in (geometric, a, b)]
    assert by_sampling[0] == pytest.approx((by_sampling[1] + by_sampling[2]) / 2, abs=1e-5)  # same draws
    grids = [grid_divergences(student, t, lim=25.0, points=500) for t in (geometric, a, b)]
    assert grids[0]["reverse_kl"] == pytest.approx((grids[1]["reverse_kl"] + grids[2]["reverse_kl"]) / 2, abs=1e-6)
    z = grids[0]["teacher_mass"]  # Z = int sqrt(p_a p_b) < 1 for two different teachers (AM-GM)
    bhattacharyya = math.exp(-grid_renyi(a, b, 0.5, lim=25.0, points=500) / 2)  # D_1/2 = -2 ln int sqrt(p_a p_b)
    assert 0 < z < 0.99 and z == pytest.approx(bhattacharyya, rel=1e-9)
    same = grid_divergences(student, TeacherEnsemble([a, copy.deepcopy(a)], "geometric"), lim=25.0, points=500)
    assert same["teacher_mass"] == pytest.approx(1.0, abs=2e-3)  # equal teachers: the geometric mean is the teacher
    assert grids[0]["reverse_kl"] >= -math.log(z)  # the average of the KLs never goes below its floor -ln Z


def test_distilling_several_teachers():
    a, b = (t.float() for t in two_teachers())
    torch.manual_seed(0)
    student = ToyFlow.iaf(2, flows=2, width=16)
    history = distil(
        student, TeacherEnsemble([a, b], "geometric"), steps=20, batch=64, generator=torch.Generator().manual_seed(56)
    )
    assert math.isnan(history.final["forward_kl"]["teacher"]) and history.final["reverse_kl"]["teacher"] > 0
    history = distil(
        student,
        TeacherEnsemble([a, b], "mixture"),
        "forward_kl_ml",
        steps=5,
        generator=torch.Generator().manual_seed(57),
    )
    assert history.teacher_seconds > 0 and math.isfinite(history.final["forward_kl"]["teacher"])


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
        (lambda: distil(ToyFlow.iaf(2), ToyFlow.maf(2), "renyi", steps=5, alpha=1.0), r"alpha=1.0: .* use reverse_kl"),
        (lambda: renyi_estimate(torch.zeros(5), torch.zeros(5), -0.5), r"alpha=-0.5: use a finite alpha > 0"),
        (lambda: renyi_estimate(torch.zeros(1), torch.zeros(1), 0.5), r"n=1 samples"),
        (lambda: TeacherEnsemble([ToyFlow.maf(2)], "mixture"), r"at least 2 teachers"),
        (lambda: TeacherEnsemble([ToyFlow.maf(2), ToyFlow.maf(2)], "product"), r"combine='product' is unknown"),
        (lambda: TeacherEnsemble([ToyFlow.maf(2), ToyFlow.maf(3)]), r"different spaces \(2 and 3"),
        (
            lambda: TeacherEnsemble([ToyFlow.maf(2), ToyFlow.maf(2)], "geometric").sample(4),
            r"geometric TeacherEnsemble has no sampler",
        ),
        (
            lambda: distil(
                ToyFlow.iaf(2), TeacherEnsemble([ToyFlow.maf(2), ToyFlow.maf(2)], "geometric"), "forward_kl_ml", steps=5
            ),
            r"forward_kl_ml' samples the teacher",
        ),
        (
            lambda: distil(ToyFlow.iaf(2), TeacherEnsemble([ToyFlow.maf(2), ToyFlow.maf(2)]), "regression", steps=5),
            r"regression' needs one teacher",
        ),
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


@pytest.mark.parametrize(
    "name", ["architecture_sweep", "divergence_estimators", "divergence_comparison", "multi_teacher"]
)
def test_experiment_size_switch_must_be_a_bool(name):
    import pwn_lib.toys

    with pytest.raises(ValueError, match=r"fast='yes': use True"):
        getattr(pwn_lib.toys, name)("yes")
