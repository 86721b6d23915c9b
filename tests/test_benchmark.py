"""scripts/benchmark.py: its verdicts on the speed targets, and a smoke run (no speed is asserted)."""

from __future__ import annotations

import importlib.util
import sys

import pytest

from pwn_lib.config import REPO_ROOT

spec = importlib.util.spec_from_file_location("benchmark", REPO_ROOT / "scripts" / "benchmark.py")
benchmark = importlib.util.module_from_spec(spec)
sys.modules["benchmark"] = benchmark  # dataclasses look their module up by name
spec.loader.exec_module(benchmark)


def row(label: str, per_second: float, flops_per_unit: float = 0.0, dtype: str = "fp32", threads: int = 1):
    """A Row whose one timed call processed ``per_second`` units in 1 s."""
    return benchmark.Row(
        label, lambda: None, per_second, "units", per_second * flops_per_unit, dtype, threads, walls=[1.0], cpus=[1.0]
    )


def test_targets_table_says_met_or_by_how_much_each_falls_short():
    peaks = {("bf16", 2): 100e9}
    rows = [
        row("teacher course: cached generation, compiled C loop", 6000),
        row("student course: synthesis fp32, fused, 1 thread(s)", 80_000),  # 5x real time at 16 kHz
        row("teacher paper: cached generation, compiled C loop", 900),
        row("teacher paper: cached generation, r9y9 incremental_forward (peer)", 200),
        row("student paper: synthesis bf16, fused, 2 thread(s)", 36_000, 1e6, "bf16", 2),  # 1.5x, 36 % of peak
    ]
    lines = benchmark.targets_table(rows, peaks, ["course", "paper"]).splitlines()
    verdicts = {line.split("|")[1].strip(): line.split("|")[4].strip() for line in lines[2:]}
    ceilings = {line.split("|")[1].strip(): line.split("|")[5].strip() for line in lines[2:]}
    paper_flops = benchmark.student_sample_flops("paper")  # 100 % of the 100 GFLOP/s peak, in x real time
    ceiling = benchmark.rate(1e11 / paper_flops / 24000)
    assert ceilings["student paper, bf16, 2 threads: x real time at 24 kHz"] == f"{ceiling} x"
    assert verdicts["teacher course, compiled cached generation, 1 thread"] == "met"
    assert verdicts["teacher paper, compiled loop / r9y9 incremental_forward"] == "met"  # 4.5x
    assert verdicts["student course, best row: x real time at 16 kHz"] == "short by 5 x (50 % of the bound)"
    assert verdicts["student paper, bf16, 2 threads: x real time at 24 kHz"] == "short by 1 x (60 % of the bound)"
    assert verdicts["student paper, bf16, 2 threads: % of the bf16 matmul peak"] == "short by 34 % (51 % of the bound)"
    without_peer = benchmark.targets_table(rows[:3] + rows[4:], peaks, ["paper"])
    assert "not measured in this run (pass --peer r9y9 PATH)" in without_peer and "course" not in without_peer


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["tiny"])
def test_quick_benchmark_runs_and_writes_its_tables(tmp_path, preset, capsys):
    out = tmp_path / "bench.md"
    benchmark.main(["--presets", preset, "--quick", "--repeats", "1", "--out", str(out)])
    written = out.read_text()
    assert written == capsys.readouterr().out
    for heading in ("## Matmul peak", f"## {preset} preset", "The paper's speed table", "Speed targets"):
        assert heading in written


def test_class_table_finds_the_first_checkpoint_that_meets_every_target():
    """Synthetic curves: power is met from step 1,000 (|-1.9| <= 2), the others earlier; all four first meet
    together at step 1,000, 20 minutes in; a run whose power never closes is reported as never meeting them."""
    teacher = {"mcd": 3.0, "periodicity": 0.8}
    times = {500: 600.0, 1000: 1200.0, 1500: 2400.0}
    values = {
        "eval/valid_voiced_share_vs_real": {500: 0.85, 1000: 0.86, 1500: 0.9},
        "eval/valid_power_db": {500: -2.5, 1000: -1.9, 1500: 2.1},
        "eval/valid_mcd": {500: 3.2, 1000: 3.1, 1500: 3.0},
        "eval/valid_periodicity": {500: 0.73, 1000: 0.75, 1500: 0.8},
    }
    curves = {tag: [(s, times[s], v) for s, v in points.items()] for tag, points in values.items()}
    text = benchmark.class_table(curves, teacher)
    assert "| power within 2 dB of real | 2.000 | 1,000, 20.0 |" in text
    assert "| MCD <= 1.10 x teacher | 3.300 | 500, 10.0 |" in text
    assert "All four first met together at step 1,000, 20.0 min: inside the 30-min budget." in text
    values["eval/valid_power_db"] = {500: -2.5, 1000: -2.1, 1500: 2.1}
    curves = {tag: [(s, times[s], v) for s, v in points.items()] for tag, points in values.items()}
    assert "never met together" in benchmark.class_table(curves, teacher)
