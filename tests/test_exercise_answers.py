"""Every exercise in the notebooks has a model answer (issue "Classroom assignments"), and the answers run.

The answers are instructor notebooks in jupytext percent format, ``assignments/answers/NN_name.py``, one per
notebook: for exercise k of notebook NN a section ``## Exercise NN.k``, code that does the exercise at fast-mode
size (with an ``assert`` where the answer is checkable) and a ``**Model answer.**`` paragraph quoting what the code
prints. They are not graded assignments: ``pwn_lib.classroom`` releases only ``assignments/NN_name.py``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pwn_lib.config import REPO_ROOT

NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
ANSWERS = REPO_ROOT / "assignments" / "answers"
RUN_TIMEOUT_S = 600


def exercises(path: Path) -> int:
    """How many exercises a notebook sets: each '**Exercise.**' paragraph is one, and under an 'Exercise' heading
    each item of the numbered list that follows is one."""
    count = 0
    for cell in json.loads(path.read_text())["cells"]:
        if cell["cell_type"] != "markdown":
            continue
        text = "".join(cell["source"])
        count += len(re.findall(r"\*\*Exercise\.\*\*", text))
        for heading in re.finditer(r"^#+ Exercises?\s*$", text, re.MULTILINE):
            block = text[heading.end() :].split("\n#")[0]
            count += len(re.findall(r"^\d+\. ", block, re.MULTILINE))
    return count


def answered(path: Path) -> list[int]:
    """The exercise numbers k of the ``## Exercise NN.k`` sections that carry a model answer, in order."""
    text = path.read_text()
    sections = re.split(r"^# ## Exercise \d\d\.(\d+)", text, flags=re.MULTILINE)[1:]
    return [int(k) for k, body in zip(sections[::2], sections[1::2], strict=True) if "**Model answer.**" in body]


def test_the_notebooks_set_thirty_exercises_or_more():
    counts = {p.stem: exercises(p) for p in NOTEBOOKS}
    assert sum(counts.values()) >= 30, counts
    assert exercises(NOTEBOOKS[0]) == 1, "the counter reads a '**Exercise.**' paragraph"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_exercise_has_a_model_answer(path: Path):
    answers = ANSWERS / f"{path.stem}.py"
    assert answers.is_file(), f"{path.name} sets {exercises(path)} exercises; write their answers in {answers}"
    assert answered(answers) == list(range(1, exercises(path) + 1)), (
        f"{answers.name}: needs sections '## Exercise {path.stem[:2]}.k' for k = 1..{exercises(path)} in order, "
        "each with a **Model answer.**"
    )


@pytest.mark.slow
@pytest.mark.parametrize("path", sorted(ANSWERS.glob("[0-9][0-9]_*.py")), ids=lambda p: p.stem)
def test_the_answers_run_in_fast_mode(path: Path, tmp_path: Path):
    env = {**os.environ, "PWN_FAST": "1", "MPLBACKEND": "Agg", "PWN_SCRATCH": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, str(path)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S
    )
    assert result.returncode == 0, f"{path.name} failed:\n{result.stderr[-3000:]}"
