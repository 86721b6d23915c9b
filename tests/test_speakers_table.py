"""scripts/speakers_table.py on one voice, fast: the rows it finds, the speaker accuracy beside the metrics."""

from __future__ import annotations

import importlib.util
import json
import sys

from pwn_lib.config import REPO_ROOT

spec = importlib.util.spec_from_file_location("speakers_table", REPO_ROOT / "scripts" / "speakers_table.py")
speakers_table = importlib.util.module_from_spec(spec)
sys.modules["speakers_table"] = speakers_table
spec.loader.exec_module(speakers_table)


def test_a_fast_table_scores_the_shipped_five_voice_teacher_and_lists_what_is_missing(tmp_path):
    out = tmp_path / "results.json"
    runs = tmp_path / "runs"  # no trained rows here: single-voice rows and students are missing
    assert speakers_table.main(["--voices", "it", "--fast", "--runs", str(runs), "--out", str(out)]) == 0
    table = json.loads(out.read_text())["voices"]["it"]
    assert set(table["checkpoints"]) == {"english_teacher", "multi_teacher"}
    assert set(table["missing"]) == {"single_teacher", "single_student", "multi_student"}
    assert "per" not in table["systems"]["multi_teacher"], "the phone listener is English only"
    real = table["systems"]["real"]
    assert real["mcd"]["mean"] == 0 and 0 <= table["systems"]["multi_teacher"]["speaker_accuracy"]["mean"] <= 1
    assert sum(real["speaker_predicted"].values()) == len(table["utterances"]) == 2
