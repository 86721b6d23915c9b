"""Classroom assignments: build learner versions from one instructor source, grade submissions, write feedback.

Each assignment has one instructor source, ``assignments/NN_name.py``: a notebook in jupytext's percent format and
otter-grader's assignment format (``# BEGIN QUESTION`` / ``# BEGIN SOLUTION`` / ``# BEGIN TESTS`` raw cells; a
test case marked ``hidden: true`` runs only at grading). The source holds the solutions, the public and hidden
tests and the points; the learner version is generated from it and never edited by hand.

The grader is otter-grader 7.0 (``docs/instructors.md`` says why, against nbgrader). Grading runs
``otter run`` on one submission at a time, without Docker, and reads its ``results.json``.

The cycle, as the instructor runs it (``docs/instructors.md`` walks through it)::

    python -m pwn_lib.classroom release --out /tmp/course_release            # learner notebooks + autograders
    # ... learners fill in student/NN_name.ipynb and hand them back (or a zip of it with the files it reads,
    # as assignment 10 asks), one folder per learner ...
    python -m pwn_lib.classroom grade --release /tmp/course_release --submissions /tmp/handed_in \\
        --out /tmp/grades                                                      # grades.csv, feedback/*.md

Written questions (``manual: true``) carry their model answer and rubric in the instructor version only; they
are graded by hand and are not in the autograded totals.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pwn_lib.config import REPO_ROOT, SCRATCH_DIR

SOURCE_DIR = REPO_ROOT / "assignments"
GRADING_TIMEOUT_S = 600  # one submission; the assignments run in under 2 minutes in fast mode
SOLUTION_MARKERS = ("BEGIN SOLUTION", "END SOLUTION", "# SOLUTION", "BEGIN TESTS", "hidden: true")


@dataclass(frozen=True)
class Built:
    """One assignment after ``otter assign``: the learner notebook, the solved notebook and the autograder."""

    name: str
    student: Path  # the notebook handed out
    solution: Path  # the instructor version, solutions in place
    autograder: Path  # otter's zip: every test case, hidden ones included


def sources(names: Sequence[str] = ()) -> list[Path]:
    """The instructor sources, in course order; ``names`` picks some by stem (``01_flows``) or number (``01``)."""
    found = sorted(SOURCE_DIR.glob("[0-9][0-9]_*.py"))
    if not names:
        return found
    picked = []
    for name in names:
        match = [p for p in found if p.stem == name or p.stem.split("_")[0] == name]
        if not match:
            known = ", ".join(p.stem for p in found) or "none"
            raise SystemExit(f"no assignment {name!r} in {SOURCE_DIR} (there are: {known})")
        picked.extend(match)
    return picked


def _run(command: list[str], what: str, cwd: Path | None = None) -> None:
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=GRADING_TIMEOUT_S)
    if done.returncode != 0:
        tail = (done.stdout + done.stderr)[-3000:]
        raise RuntimeError(f"{what} failed (exit {done.returncode}): {' '.join(command)}\n{tail}")


def build(source: Path, out_dir: Path) -> Built:
    """Turn one instructor source into ``out_dir/<stem>/{student,autograder}`` with ``otter assign``.

    The source's own tests are not run here (``--no-run-tests``): grading the solved notebook does that, and
    ``tests/test_classroom.py`` requires full marks from it.
    """
    source = Path(source)
    if not source.is_file():
        raise SystemExit(f"assignment source {source} does not exist; the sources are in {SOURCE_DIR}")
    name = source.stem
    dist = Path(out_dir) / name
    if dist.exists():
        shutil.rmtree(dist)
    with tempfile.TemporaryDirectory(prefix="pwn-assign-") as tmp:
        notebook = Path(tmp) / f"{name}.ipynb"
        py = [sys.executable, "-m"]
        _run(
            [*py, "jupytext", "--to", "ipynb", "--set-kernel", "python3", str(source), "-o", str(notebook)],
            f"converting {source}",
        )
        _run([*py, "otter", "assign", "--no-run-tests", str(notebook), str(dist)], f"otter assign on {source}")
    zips = sorted((dist / "autograder").glob("*-autograder_*.zip"))
    if len(zips) != 1:
        raise RuntimeError(f"otter assign wrote {len(zips)} autograder zips for {source}; expected one")
    return Built(name, dist / "student" / f"{name}.ipynb", dist / "autograder" / f"{name}.ipynb", zips[0])


def leaks(built: Built) -> list[str]:
    """What the learner version gives away: solution or test markers, and hidden test cases in its metadata."""
    text = built.student.read_text()
    found = [f"marker {m!r}" for m in SOLUTION_MARKERS if m in text]
    notebook = json.loads(text)
    tests = notebook.get("metadata", {}).get("otter", {}).get("tests", {})
    for question, test in tests.items():
        for suite in test.get("suites", []):
            found += [f"hidden test of {question}" for case in suite.get("cases", []) if case.get("hidden")]
    return found


def grade(autograder: Path, submission: Path, out_dir: Path) -> dict[str, tuple[float, float]]:
    """Run every test of ``autograder`` (public and hidden) on one submitted notebook: ``{question: (score, max)}``.

    ``out_dir`` receives otter's ``results.json``. A submission that does not run still gets its scores: a
    question whose code raised scores 0.
    """
    submission = Path(submission)
    if not submission.is_file() or submission.suffix not in (".ipynb", ".zip"):
        raise SystemExit(
            f"submission {submission} is not a notebook (.ipynb) or a zip of one; hand in the assignment's notebook"
        )
    if submission.suffix == ".zip":
        check_zip(submission)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _run(
        [sys.executable, "-m", "otter", "run", "--no-logo", "-a", str(autograder), "-o", str(out_dir), str(submission)],
        f"grading {submission}",
    )
    results = json.loads((out_dir / "results.json").read_text())
    return {t["name"]: (float(t["score"]), float(t["max_score"])) for t in results["tests"] if "max_score" in t}


def check_zip(submission: Path) -> None:
    """A zipped hand-in (a notebook with the files it reads, e.g. assignment 10's trained student) must hold
    exactly one notebook, named after the zip, at its top level: otter grades the one notebook it finds."""
    try:
        with zipfile.ZipFile(submission) as archive:
            names = archive.namelist()
    except zipfile.BadZipFile:
        raise SystemExit(f"submission {submission} is not a readable zip; zip the notebook again") from None
    notebooks = [n for n in names if n.endswith(".ipynb") and "/" not in n]
    expected = f"{submission.stem}.ipynb"
    if notebooks != [expected] or any(n.endswith(".ipynb") and "/" in n for n in names):
        raise SystemExit(
            f"submission {submission} holds the notebooks {notebooks or 'none'} at its top level; it must hold "
            f"exactly {expected} there (and no other notebook), beside the files the notebook reads"
        )


def release(out_dir: Path, names: Sequence[str] = ()) -> list[Built]:
    """Build every assignment (or those named) into ``out_dir``; refuse any learner version that leaks."""
    built = [build(source, out_dir) for source in sources(names)]
    for b in built:
        if found := leaks(b):
            raise RuntimeError(f"the learner version {b.student} gives away: {', '.join(found)}")
    return built


def feedback(learner: str, assignment: str, scores: dict[str, tuple[float, float]]) -> str:
    """A learner's feedback for one assignment, as Markdown: each question's score and the total."""
    lines = [f"# {assignment}: feedback for {learner}", "", "| question | score | out of |", "|---|---|---|"]
    lines += [f"| {q} | {s:g} | {m:g} |" for q, (s, m) in scores.items()]
    total, most = sum(s for s, _ in scores.values()), sum(m for _, m in scores.values())
    lines += ["", f"Autograded total: {total:g} / {most:g}. Written questions are marked by hand."]
    return "\n".join(lines) + "\n"


def grade_all(release_dir: Path, submissions: Path, out_dir: Path) -> Path:
    """Grade ``submissions/<learner>/<assignment>.ipynb`` (or ``.zip``: the notebook with the files it reads)
    against the autograders in ``release_dir``.

    Writes ``out_dir/grades.csv`` (learner, assignment, question, score, max) and
    ``out_dir/feedback/<learner>/<assignment>.md``; returns the CSV's path.
    """
    release_dir, submissions, out_dir = Path(release_dir), Path(submissions), Path(out_dir)
    zips = {p.parents[1].name: p for p in release_dir.glob("*/autograder/*-autograder_*.zip")}
    if not zips:
        raise SystemExit(f"no autograders under {release_dir}; run `python -m pwn_lib.classroom release` first")
    learners = sorted(p for p in submissions.iterdir() if p.is_dir()) if submissions.is_dir() else []
    if not learners:
        raise SystemExit(
            f"no learner folders in {submissions}: hand-ins go in <submissions>/<learner>/<name>.ipynb (or .zip)"
        )
    rows = []
    for learner in learners:
        hand_ins = sorted([*learner.glob("*.ipynb"), *learner.glob("*.zip")])
        twice = sorted({p.stem for p in hand_ins if [q.stem for q in hand_ins].count(p.stem) > 1})
        if twice:
            raise SystemExit(f"{learner} hands in {', '.join(twice)} both as a notebook and as a zip; keep one")
        for notebook in hand_ins:
            if notebook.stem not in zips:
                raise SystemExit(f"{notebook} names no released assignment (released: {', '.join(sorted(zips))})")
            scores = grade(zips[notebook.stem], notebook, out_dir / "runs" / learner.name / notebook.stem)
            rows += [(learner.name, notebook.stem, q, s, m) for q, (s, m) in scores.items()]
            page = out_dir / "feedback" / learner.name / f"{notebook.stem}.md"
            page.parent.mkdir(parents=True, exist_ok=True)
            page.write_text(feedback(learner.name, notebook.stem, scores))
    table = out_dir / "grades.csv"
    partial = table.with_suffix(".csv.partial")
    with partial.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["learner", "assignment", "question", "score", "max_score"])
        writer.writerows(rows)
    partial.replace(table)
    return table


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pwn_lib.classroom", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    rel = sub.add_parser("release", help="build the learner versions and the autograders")
    rel.add_argument("names", nargs="*", help="assignments by stem or number (default: all)")
    rel.add_argument("--out", type=Path, default=SCRATCH_DIR / "classroom" / "release")
    gra = sub.add_parser("grade", help="grade every learner's hand-ins and write feedback")
    gra.add_argument("--release", type=Path, default=SCRATCH_DIR / "classroom" / "release")
    gra.add_argument("--submissions", type=Path, required=True, help="folder of <learner>/<name>.ipynb")
    gra.add_argument("--out", type=Path, default=SCRATCH_DIR / "classroom" / "grades")
    args = parser.parse_args(argv)
    if args.command == "release":
        for b in release(args.out, args.names):
            print(f"{b.name}: hand out {b.student}; autograder {b.autograder}")
    else:
        table = grade_all(args.release, args.submissions, args.out)
        print(f"grades in {table}; feedback in {args.out / 'feedback'}")


if __name__ == "__main__":
    main()
