"""The classroom round trip (pwn_lib.classroom, docs/instructors.md), on every assignment in assignments/.

release -> three learners hand in (one with the solutions, one the untouched stubs, one with exactly one question
answered wrongly) -> grade -> feedback. The solution earns full marks, the stubs earn zero, the one wrong answer
loses exactly its question's points, and no learner version holds a hidden test or solution text.
"""

import csv
import json
import shutil
import zipfile
from pathlib import Path

import pytest

from pwn_lib import classroom
from pwn_lib.config import CHECKPOINT_DIR, REPO_ROOT
from pwn_lib.train import main as train

pytestmark = pytest.mark.slow  # otter runs each hand-in in a fresh kernel: about 13 s per notebook

# One plausible mistake per assignment: (question, first line of the solution cell it replaces, the wrong cell).
WRONG = {
    "01_flows": (
        "q2",
        "def iaf_forward(made, z):",
        # The sign of the log-determinant flipped: the density of x rather than of the change of variables.
        "def iaf_forward(made, z):\n    mu, log_s = made(z)\n    x, log_det = affine_step(z, mu, log_s)\n"
        "    return x, -log_det\n",
    ),
    "02_wavenet": (
        "q3",
        "def conv_step(queue, x_t, weight, bias, dilation):",
        # The queue drops its newest input instead of its oldest, so the next step reads a stale window.
        "def conv_step(queue, x_t, weight, bias, dilation):\n"
        "    window = torch.cat([queue, x_t.unsqueeze(-1)], dim=-1)\n"
        "    y_t = torch.einsum('oik,bik->bo', weight, window[..., ::dilation]) + bias\n"
        "    return y_t, window[..., :-1]\n",
    ),
    "03_distributions": (
        "q3",
        "def mixture_log_prob(x, logits, mu, log_s, bits):",
        # The raw logits taken as log-weights: the weights no longer sum to one.
        "def mixture_log_prob(x, logits, mu, log_s, bits):\n"
        "    components = logistic_bin_log_prob(x.expand_as(mu), mu, log_s, bits)\n"
        "    return torch.logsumexp(logits + components, dim=0)\n",
    ),
    "04_teacher": (
        "q2",
        "def sample_slowly(model, c, generator):",
        # Off by one: the output at t + 1 read as the distribution of x[t] (it fails on the last sample).
        "def sample_slowly(model, c, generator):\n"
        "    x = torch.zeros(c.shape[0], 1, c.shape[-1] * model.cfg.hop_length)\n"
        "    with torch.no_grad():\n"
        "        for t in range(x.shape[-1]):\n"
        "            params = model(x, c)[..., t + 1 : t + 2]\n"
        "            x[:, :, t] = model.distribution(params).sample(generator=generator)\n"
        "    return x\n",
    ),
    "05_student": (
        "q2",
        "def student_log_prob(z, log_s_tot):",
        # The log-determinant added instead of subtracted: the density of z pushed the wrong way.
        "def student_log_prob(z, log_s_tot):\n"
        "    log_pz = -z - 2.0 * F.softplus(-z)\n"
        "    return (log_pz + log_s_tot).flatten(1).sum(dim=1)\n",
    ),
    "06_distillation": (
        "q3",
        "def kl_mc(mu, log_s, log_density, n_draws, generator):",
        # The entropy added instead of subtracted: H(P_S, P_T) + H(P_S) is not a divergence.
        "def kl_mc(mu, log_s, log_density, n_draws, generator):\n"
        "    return cross_entropy_mc(mu, log_s, log_density, n_draws, generator) + logistic_entropy(log_s)\n",
    ),
    "07_aux": (
        "q4",
        "def other_utterances(batch_size, generator):",
        # A plain shuffle: some rows keep their own conditioning, and the contrast is then with itself.
        "def other_utterances(batch_size, generator):\n    return torch.randperm(batch_size, generator=generator)\n",
    ),
    "08_full": (
        "q3",
        "def micro_batch_index(step, micro, accum, rank, ranks):",
        # The rank offsets by one micro-batch instead of a rank's whole share: processes overlap.
        "def micro_batch_index(step, micro, accum, rank, ranks):\n    return step * accum + micro + rank\n",
    ),
    "10_class": (
        "q2",
        "def power_gap_db(x, real):",
        # 20 log10 of a power ratio: the decibels of an amplitude ratio applied to power, twice the true gap.
        "def power_gap_db(x, real):\n"
        "    return float(20 * np.log10(np.mean(np.square(x)) / np.mean(np.square(real))))\n",
    ),
    "09_listening": (
        "q3",
        "def preference(trials, a, b):",
        # "A" read as "system a", whichever side a was played on.
        "def preference(trials, a, b):\n"
        "    chosen = [t for t in trials if {t['system'], t['system_b']} == {a, b} and t['choice'] in ('A', 'B')]\n"
        "    return sum(t['choice'] == 'A' for t in chosen), len(chosen)\n",
    ),
}


def _with_cell_replaced(solution: Path, first_line: str, new_source: str, out: Path) -> None:
    notebook = json.loads(solution.read_text())
    cells = [c for c in notebook["cells"] if c["cell_type"] == "code" and "".join(c["source"]).startswith(first_line)]
    assert len(cells) == 1, f"{solution}: expected one cell starting {first_line!r}, found {len(cells)}"
    cells[0]["source"] = new_source
    out.write_text(json.dumps(notebook))


def _zipped_with_student(notebook: Path, student: Path, out: Path) -> None:
    """Assignment 10's hand-in: the notebook and the trained student's weights, config and metrics, no resume state."""
    with zipfile.ZipFile(out, "w") as archive:
        archive.write(notebook, out.with_suffix(".ipynb").name)
        for name in ("model.safetensors", "config.json", "metrics.json"):
            archive.write(student / name, f"my_student/{name}")


@pytest.fixture(scope="module")
def cycle(tmp_path_factory):
    root = tmp_path_factory.mktemp("classroom")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("PWN_FAST", "1")  # the assignments' fast sizes (assignment 10: a 20-step student)
        built = classroom.release(root / "release")
        hand_ins = root / "handed_in"
        # A student trained with the command line, as a learner would before zipping it (assignment 10). Only ada's
        # hand-in trains one inside the grader (her distil is the solution); cy and dee zip this one, so the
        # grader scores it without training again.
        student = root / "trained_student"
        recipe, teacher = REPO_ROOT / "configs" / "student_class.yaml", CHECKPOINT_DIR / "teacher_course"
        train(f"student --config {recipe} --teacher {teacher} --out {student} --steps 20 --threads 1".split())
        for b in built:
            for learner in ("ada", "bob", "cy"):
                (hand_ins / learner).mkdir(parents=True, exist_ok=True)
            shutil.copy(b.solution, hand_ins / "ada" / f"{b.name}.ipynb")  # every answer right
            shutil.copy(b.student, hand_ins / "bob" / f"{b.name}.ipynb")  # the stubs as released
            question, first_line, wrong = WRONG[b.name]
            _with_cell_replaced(b.solution, first_line, wrong, root / "cy.ipynb")
            if b.name == "10_class":
                _zipped_with_student(root / "cy.ipynb", student, hand_ins / "cy" / f"{b.name}.zip")
            else:
                shutil.copy(root / "cy.ipynb", hand_ins / "cy" / f"{b.name}.ipynb")
        # dee zipped that student with the untouched stubs: the grader must score the student (question 3)
        # without calling her stub of distil, which trains nothing.
        (hand_ins / "dee").mkdir()
        stubs = next(b.student for b in built if b.name == "10_class")
        _zipped_with_student(stubs, student, hand_ins / "dee" / "10_class.zip")
        table = classroom.grade_all(root / "release", hand_ins, root / "grades")
    with table.open() as f:
        rows = list(csv.DictReader(f))
    scores = {(r["learner"], r["assignment"], r["question"]): (float(r["score"]), float(r["max_score"])) for r in rows}
    return built, scores, root / "grades"


def test_every_assignment_has_a_wrong_answer_and_at_least_two_questions(cycle):
    built, scores, _ = cycle
    assert {b.name for b in built} == set(WRONG), "each assignment in assignments/ needs an entry in WRONG"
    for b in built:
        questions = [q for (learner, a, q) in scores if learner == "ada" and a == b.name]
        assert len(questions) >= 2, f"{b.name} has {len(questions)} autograded questions"


def test_the_learner_versions_give_nothing_away(cycle):
    built, _, _ = cycle
    for b in built:
        assert classroom.leaks(b) == [], b.student
        text = b.student.read_text()
        assert "Model answer" not in text and "Rubric" not in text, f"{b.student} holds a written answer"


def test_the_solution_earns_full_marks_and_the_stubs_earn_zero(cycle):
    built, scores, _ = cycle
    for b in built:
        mine = {q: sm for (learner, a, q), sm in scores.items() if a == b.name}
        for (learner, a, q), (score, most) in scores.items():
            if a != b.name:
                continue
            if learner == "ada":
                assert score == most > 0, f"the solution of {a} {q} scores {score} / {most}"
            if learner == "bob":
                assert score == 0, f"the stub of {a} {q} scores {score}: a stub must fail"
        assert mine


def test_one_wrong_answer_loses_exactly_its_points(cycle):
    built, scores, _ = cycle
    for b in built:
        wrong_question = WRONG[b.name][0]
        for (learner, a, q), (score, most) in scores.items():
            if learner == "cy" and a == b.name:
                assert score == (0 if q == wrong_question else most), f"{a} {q}: {score} / {most}"


def test_a_zipped_student_is_graded_without_training_again(cycle):
    _, scores, _ = cycle
    dee = {q: sm for (learner, a, q), sm in scores.items() if learner == "dee"}
    assert set(dee) == {"q1", "q2", "q3"}, dee
    assert dee["q3"][0] == dee["q3"][1] > 0, f"the zipped student scores {dee['q3']}"
    assert dee["q1"][0] == dee["q2"][0] == 0, "the stubs she handed in answer nothing"


def test_a_zipped_hand_in_must_hold_its_notebook(tmp_path):
    bad = tmp_path / "10_class.zip"
    with zipfile.ZipFile(bad, "w") as archive:
        archive.writestr("answers.ipynb", "{}")
    with pytest.raises(SystemExit, match=r"exactly 10_class\.ipynb"):
        classroom.grade(tmp_path / "missing.zip", bad, tmp_path / "out")
    with zipfile.ZipFile(bad, "w") as archive:
        archive.writestr("10_class.ipynb", "{}")
        archive.writestr("old/10_class.ipynb", "{}")
    with pytest.raises(SystemExit, match="no other notebook"):
        classroom.grade(tmp_path / "missing.zip", bad, tmp_path / "out")
    bad.write_bytes(b"not a zip")
    with pytest.raises(SystemExit, match="not a readable zip"):
        classroom.grade(tmp_path / "missing.zip", bad, tmp_path / "out")


def test_feedback_is_written_for_every_hand_in(cycle):
    built, scores, grades = cycle
    for learner in ("ada", "bob", "cy"):
        for b in built:
            page = (grades / "feedback" / learner / f"{b.name}.md").read_text()
            total = sum(s for (who, a, _), (s, _) in scores.items() if who == learner and a == b.name)
            assert f"Autograded total: {total:g} /" in page


def test_a_hand_in_that_is_not_a_notebook_is_refused(tmp_path):
    (tmp_path / "answers.py").write_text("x = 1\n")
    with pytest.raises(SystemExit, match=r"answers\.py is not a notebook \(\.ipynb\) or a zip"):
        classroom.grade(tmp_path / "missing.zip", tmp_path / "answers.py", tmp_path / "out")
    with pytest.raises(SystemExit, match="no assignment '99'"):
        classroom.sources(["99"])
