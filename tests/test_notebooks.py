"""The notebook contract: every notebook has the course's anatomy, and none re-implements what it handed off.

Anatomy (CONTRIBUTING.md, "Adding a notebook"): a title naming the paper section, what you will learn, prerequisites,
the measured time, at least one "From here on we use `pwn_lib.X`" hand-off, an exercise, a summary and a
Next link to a notebook that exists. House rules: python3 kernel, seeded, outputs stripped except cells
marked ``# NBVAL_CHECK_OUTPUT``, plots end with ``plt.show()``, progress bars from ``tqdm.auto``, no
``ipywidgets.interact``, audio players with an explicit rate and ``normalize=False``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from pwn_lib.config import REPO_ROOT

NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
HAND_OFF = re.compile(r"from here on we use\s+\**`(pwn_lib[\w.]*)`", re.IGNORECASE)
NAMED = re.compile(r"`(pwn_lib(?:\.\w+)+)`")


def cells(path: Path) -> list[dict]:
    return json.loads(path.read_text())["cells"]


def source(cell: dict) -> str:
    return "".join(cell["source"])


def markdown(path: Path) -> str:
    return "\n".join(source(c) for c in cells(path) if c["cell_type"] == "markdown")


def handed_off(text: str) -> set[str]:
    """The pwn_lib names a hand-off cell gives away: ``pwn_lib.mod`` and the last part of ``pwn_lib.mod.Name``."""
    names = set()
    for line in text.splitlines():
        if HAND_OFF.search(line):
            names |= {name for name in NAMED.findall(line)}
    return names


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 8


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_anatomy(path: Path):
    text, first = markdown(path), source(cells(path)[0])
    number = path.name[:2]
    assert re.match(rf"# {number} · .+", first), f"{path.name}: the first cell must be the title '# {number} · ...'"
    assert re.search(r"paper|§", first.splitlines()[0], re.IGNORECASE) or number == "00", (
        f"{path.name}: the title must name the paper section it teaches"
    )
    assert re.search(r"what you will learn|in this notebook you will", first, re.IGNORECASE), path.name
    assert "Prerequisites" in first, f"{path.name}: state the prerequisites in the first cell"
    assert re.search(r"\*\*Time:\*\*", first), f"{path.name}: state the measured time at the top"
    assert HAND_OFF.search(text), f"{path.name}: needs at least one 'From here on we use `pwn_lib.X`' hand-off"
    assert re.search(r"\bExercise", text), f"{path.name}: needs an exercise"
    assert re.search(r"^## Summary", text, re.MULTILINE), f"{path.name}: needs a '## Summary' section"


STATED_TIME = re.compile(r"about ([\d.,]+) (s|min|minutes|h|hours) in (fast|full) mode")
UNITS_S = {"s": 1, "min": 60, "minutes": 60, "h": 3600, "hours": 3600}
TIMES = REPO_ROOT / "notebooks" / "times.json"


def stated_times(first_cell: str) -> dict[str, float]:
    """``{"fast": seconds, "full": seconds}`` from the ``**Time:**`` paragraph of a notebook's first cell."""
    paragraph = first_cell[first_cell.find("**Time:**") :].split("\n\n")[0].replace("\n", " ")
    return {mode: float(n.replace(",", "")) * UNITS_S[unit] for n, unit, mode in STATED_TIME.findall(paragraph)}


def test_stated_times_are_read_in_both_units():
    cell = "# 00 · x\n\n**Time:** about 12 s in fast mode and about 1.5 min in full mode on 2 CPU cores.\n\nNext"
    assert stated_times(cell) == {"fast": 12.0, "full": 90.0}
    assert stated_times("**Time:** about 2 hours in full mode") == {"full": 7200.0}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_the_stated_times_agree_with_the_measured_ones_within_2x(path: Path):
    """The top states the fast-mode time and the full-mode time (or that it is not measured yet); each stated time is
    within a factor of 2 of notebooks/times.json, which scripts/time_notebooks.py measures (this test reads the
    record: it times nothing itself)."""
    first = source(cells(path)[0])
    stated = stated_times(first)
    assert "fast" in stated, f"{path.name}: the **Time:** paragraph must say 'about N s in fast mode'"
    assert "full" in stated or "full mode not measured yet" in first, (
        f"{path.name}: the **Time:** paragraph must say 'about M min in full mode' (or, until it is measured, "
        "'full mode not measured yet')"
    )
    record = json.loads(TIMES.read_text()).get(path.stem, {})
    for mode, seconds in stated.items():
        measured = record.get(mode, {}).get("seconds")
        assert measured, f"{path.name}: no measured {mode}-mode time; run scripts/time_notebooks.py" + (
            " --full" if mode == "full" else ""
        )
        assert measured / 2 <= seconds <= 2 * measured, (
            f"{path.name}: states {seconds:g} s in {mode} mode, measured {measured:g} s "
            f"({record[mode]['machine']}, {record[mode]['date']}); restate it"
        )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_next_link_points_to_a_notebook_that_exists(path: Path):
    links = re.findall(r"Next:?\**:?\s.*?\]\(([\w.]+\.ipynb)\)", markdown(path))
    assert links, f"{path.name}: needs a 'Next: [..](NN_name.ipynb)' link"
    for link in links:
        assert (path.parent / link).is_file(), f"{path.name}: Next link {link} does not exist"
    every = re.findall(r"\]\((\d\d_[\w.]+\.ipynb)\)", markdown(path))
    missing = [link for link in every if not (path.parent / link).is_file()]
    assert not missing, f"{path.name}: links to notebooks that do not exist: {missing}"


def reimplementations(notebook_cells: list[dict], trainer_taught: bool = False) -> list[str]:
    """Code cells that define a handed-off name again, or run their own optimisation loop after a hand-off.

    A loop is re-implemented after a hand-off to ``pwn_lib.train``, or after any hand-off once notebook 04 has
    taught the Trainer (``trainer_taught``); the teaching loops of notebooks 01 and 03 stay.
    """
    given: set[str] = set()
    found = []
    for index, cell in enumerate(notebook_cells):
        text = source(cell)
        if cell["cell_type"] == "markdown":
            given |= handed_off(text)
            continue
        for name in sorted({n.rsplit(".", 1)[-1] for n in given if n.count(".") >= 2}):
            if re.search(rf"^\s*(def|class)\s+{name}\b", text, re.MULTILINE):
                found.append(f"cell {index} re-implements {name}")
        loop = ".backward()" in text and re.search(r"\.step\(\)", text)
        if loop and (any(n.startswith("pwn_lib.train") for n in given) or (trainer_taught and given)):
            found.append(f"cell {index} runs its own optimisation loop after a hand-off (use pwn_lib.trainer.Trainer)")
    return found


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_code_after_a_hand_off_reimplements_it(path: Path):
    found = reimplementations(cells(path), trainer_taught=int(path.name[:2]) >= 4)
    assert not found, f"{path.name}: {found}"


def test_the_reimplementation_check_catches_both_kinds():
    md = {"cell_type": "markdown", "source": ["From here on we use `pwn_lib.losses.power_loss` and `pwn_lib.train`."]}
    twin = {"cell_type": "code", "source": ["def power_loss(x, y):\n    return 0"]}
    loop = {"cell_type": "code", "source": ["loss.backward()\noptimizer.step()"]}
    assert reimplementations([twin, loop]) == []  # before the hand-off both are teaching code
    assert len(reimplementations([md, twin, loop])) == 2
    distill = {"cell_type": "markdown", "source": ["### From here on we use `pwn_lib.distill`"]}
    assert reimplementations([distill, loop]) == []
    assert len(reimplementations([distill, loop], trainer_taught=True)) == 1


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_house_rules(path: Path):
    notebook = json.loads(path.read_text())
    assert notebook["metadata"]["kernelspec"]["name"] == "python3", f"{path.name}: use the python3 kernel"
    code = [(i, c) for i, c in enumerate(notebook["cells"]) if c["cell_type"] == "code"]
    assert "seed_everything" in source(code[0][1]), f"{path.name}: the first code cell must seed everything"
    for index, cell in code:
        text = source(cell)
        checked = text.lstrip().startswith("# NBVAL_CHECK_OUTPUT")
        assert checked or not cell.get("outputs"), f"{path.name} cell {index}: strip outputs (strip_notebook.py)"
        assert "interact(" not in text, f"{path.name} cell {index}: no ipywidgets.interact (use explicit widgets)"
        assert not re.search(r"^\s*from tqdm import|^\s*import tqdm$", text, re.MULTILINE), (
            f"{path.name} cell {index}: use tqdm.auto"
        )
        for call in re.findall(r"\bAudio\(([^\n]*)", text):
            assert "rate=" in call and "normalize=False" in call, f"{path.name} cell {index}: rate=, normalize=False"
        plots = [m.end() for m in re.finditer(r"plt\.(subplots|figure)\(|compare_spectrograms\(", text)]
        if plots and "widgets." not in text:  # a widget redraws its own figure on every change
            assert text.rfind("plt.show()") > plots[-1], f"{path.name} cell {index}: show every figure with plt.show()"


# Statements the course once made that its own figures or the paper contradict, each with what is true instead.
CORRECTED = {
    "equal-probability intervals": "notebook 01's intervals are equal-width in z; each keeps its probability",
    '(nats)")': "a colour bar of log magnitudes is in natural-log units (or dB), not nats",
    "the paper reports mos": "the paper compares its loss terms by A/B preference tests, not MOS",
    "about 40 times faster": "quote the recorded benchmark, data/benchmarks/cpu.md",
    "states no batch size": "section 5 gives the batch: 32 clips of 7,680 samples (configs/teacher_paper.yaml)",
    "why tens here": "the recorded student/teacher ratio on this CPU is a few times (data/benchmarks/cpu.md)",
    "3,070-sample receptive field": "3,070 samples is the width-2 figure; the paper's width 3 gives 6,139",
}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_corrected_statement_comes_back(path: Path):
    text = "\n".join(source(c) for c in cells(path)).lower()
    found = {phrase: why for phrase, why in CORRECTED.items() if phrase in text}
    assert not found, f"{path.name}: {found}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebooks_write_outside_the_repository(path: Path):
    code = "\n".join(source(c) for c in cells(path) if c["cell_type"] == "code")
    inside = re.findall(r"REPO_ROOT\s*/\s*\"notebooks\"|[\"']notebooks/", code)
    assert not inside, (
        f"{path.name}: write scratch files under pwn_lib.config.SCRATCH_DIR, not the repository: {inside}"
    )


def test_the_shipped_checkpoints_are_reproduced_stage_by_stage():
    """Notebooks 04 and 06 print every stage's command from the metrics.json, not only the last one."""
    code = {p.name[:2]: "\n".join(source(c) for c in cells(p) if c["cell_type"] == "code") for p in NOTEBOOKS}
    assert "stage_1" in code["04"] and '"reproduce"' in code["04"].replace("'", '"')
    assert re.search(r"for stage in metrics\[\"stages\"\]", code["06"])
