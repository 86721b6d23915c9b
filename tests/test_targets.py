"""pwn_lib.evaluate.target_report: the distillation targets judged on rows whose answers are known."""

from __future__ import annotations

from pwn_lib.evaluate import TARGETS, target_report


def rows(**means: dict[str, float]) -> dict[str, dict]:
    return {name: {k: {"mean": v, "ci95": None} for k, v in row.items()} for name, row in means.items()}


REAL = {"voiced_share": 0.6, "periodicity": 0.9, "power_db": 0.0, "mcd": 0.0, "per": 0.2}
TEACHER = {"voiced_share": 0.55, "periodicity": 0.85, "power_db": -0.5, "mcd": 3.0, "per": 0.3}


def test_a_student_equal_to_the_teacher_meets_every_target():
    report = target_report(rows(real=REAL, teacher=TEACHER, student=TEACHER))
    assert len(report) == len(TARGETS)
    assert all(r["met"] for r in report), [r for r in report if not r["met"]]


def test_each_student_failure_is_caught_and_only_that_one():
    failures = {"voiced_share": 0.40, "power_db": -2.5, "mcd": 3.4, "periodicity": 0.70, "per": 0.45}
    for metric, value in failures.items():
        report = target_report(rows(real=REAL, teacher=TEACHER, student={**TEACHER, metric: value}))
        failed = [(r["system"], r["metric"]) for r in report if not r["met"]]
        assert failed == [("student", metric)], (metric, failed)
    loud = target_report(rows(real=REAL, teacher=TEACHER, student={**TEACHER, "power_db": 2.5}))
    assert [r["metric"] for r in loud if not r["met"]] == ["power_db"], "too loud fails as too quiet does"


def test_without_a_student_row_only_the_teacher_is_judged():
    report = target_report(rows(real=REAL, teacher={**TEACHER, "per": 0.36}))
    assert {r["system"] for r in report} == {"teacher"}
    assert [r["metric"] for r in report if not r["met"]] == ["per"]
