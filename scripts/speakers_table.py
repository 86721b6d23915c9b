"""The paper's per-speaker comparison (its table 2 asks the same of a multi-speaker model): for every voice, the
single-speaker teacher against the multi-speaker one (and the students, once given), scored by
``pwn_lib.evaluate`` on that voice's test split, mean ± 95 % CI over utterances.

    python scripts/speakers_table.py                     # every row it finds, into data/speakers/results.json
    python scripts/speakers_table.py --voices fr --fast  # a smoke run: one voice, two short utterances
    python scripts/speakers_table.py --out run.json      # elsewhere

Rows, each a checkpoint directory (a row whose directory is missing is skipped and listed under ``missing``):

- ``english_teacher``: the English single-speaker teacher that every other teacher starts from
  (data/resume/teacher_stage5), on every voice: zero-shot for the four extra voices;
- ``single_teacher``: the voice's own single-speaker teacher, configs/teacher_voice_<voice>.yaml (for English
  the English teacher is that row);
- ``multi_teacher``: the five-voice teacher (data/checkpoints/teacher_speakers, configs/teacher_speakers.yaml),
  rendering with the voice's id;
- ``single_student`` / ``multi_student``: the same for students, where given (English: data/resume/student_stage5_2,
  distilled from the English teacher).

Every teacher samples at temperature 0.7 (the shipped teacher's, chosen on the English valid split). The phone
listener (PER) scores English only. ``speaker_accuracy``: the share of a row's clips that the shipped speaker
classifier (``pwn_lib.speakers.SpeakerListener``, trained on the real train splits) gives to the right voice;
``speaker_predicted`` counts where they went. Runs on one thread.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import soundfile as sf
import torch

from pwn_lib import evaluate as ev
from pwn_lib.artifacts import write_json
from pwn_lib.config import DATA_DIR, REPO_ROOT, fast_mode
from pwn_lib.data import VOICES
from pwn_lib.speakers import SpeakerListener

DEFAULT_OUT = DATA_DIR / "speakers" / "results.json"
TEMPERATURE = 0.7
SHOWN = ("voiced_share", "periodicity", "mcd", "mstft", "f0_rmse_cents", "power_db", "per", "speaker_accuracy")


def default_rows(voice: str, runs: Path) -> dict[str, Path]:
    """Row name -> checkpoint directory for ``voice`` (see the module docstring)."""
    english = REPO_ROOT / "data" / "resume" / "teacher_stage5"
    single = {} if voice == "en" else {"single_teacher": runs / f"teacher_voice_{voice}"}  # English's is the first
    return {
        "english_teacher": english,
        **single,
        "multi_teacher": REPO_ROOT / "data" / "checkpoints" / "teacher_speakers",
        "single_student": REPO_ROOT / "data" / "resume" / "student_stage5_2"
        if voice == "en"
        else runs / f"student_voice_{voice}",
        "multi_student": runs / "student_speakers",
    }


def budget(directory: Path) -> str:
    """What a row cost: its recorded command, steps and training seconds (from its metrics.json)."""
    metrics = json.loads((directory / "metrics.json").read_text())
    steps, seconds = metrics.get("steps"), metrics.get("train_seconds") or metrics.get("seconds")
    return f"{metrics.get('command', '?')} ({steps} steps" + (f", {seconds:.0f} s)" if seconds else ")")


def score_voice(voice: str, rows: dict[str, Path], count: int | None, max_seconds: float | None) -> dict:
    """One voice's table: ``{"systems": {row: {metric: {mean, ci95}}}, ...}`` for the rows that exist."""
    present = {name: path for name, path in rows.items() if (path / "model.safetensors").is_file()}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as clips:
        results = ev.run(
            list(present.values()),
            count=count,
            names=list(present),
            max_seconds=max_seconds,
            with_espeak=False,
            audio_dir=Path(clips),
            progress=False,
            temperature=TEMPERATURE,
            voice=voice,
        )
        listener, speaker = SpeakerListener(), VOICES.index(voice)
        for name in ["real", *present]:
            signals = [sf.read(Path(clips) / name / f"{u}.wav", dtype="float32")[0] for u in results["utterances"]]
            verdict = listener.accuracy(signals, [speaker] * len(signals))
            results["systems"][name]["speaker_accuracy"] = {"mean": verdict["accuracy"], "ci95": None}
            results["systems"][name]["speaker_predicted"] = {
                v: int(n) for v, n in zip(VOICES, verdict["confusion"][speaker], strict=True) if n
            }
    return {
        "systems": results["systems"],
        "utterances": results["utterances"],
        "seconds": results["seconds"],
        "checkpoints": {name: str(path.relative_to(REPO_ROOT)) for name, path in present.items()},
        "budgets": {name: budget(path) for name, path in present.items()},
        "missing": sorted(set(rows) - set(present)),
        "scoring_seconds": round(time.perf_counter() - started, 1),
    }


def markdown(results: dict) -> str:
    """Every voice's rows as one Markdown table, mean ± CI."""
    lines = ["| voice | row | " + " | ".join(SHOWN) + " |", "|" + "---|" * (len(SHOWN) + 2)]
    for voice, table in results["voices"].items():
        for name, row in table["systems"].items():
            if name in ("noise", "silence"):
                continue
            cells = []
            for metric in SHOWN:
                cell = row.get(metric)
                if not isinstance(cell, dict) or cell.get("mean") is None:
                    cells.append("–")
                else:
                    ci = f" ± {cell['ci95']:.2g}" if cell["ci95"] is not None else ""
                    cells.append(f"{cell['mean']:.3g}{ci}")
            lines.append(f"| {voice} | {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--voices", nargs="+", default=list(VOICES), choices=VOICES)
    parser.add_argument("--runs", type=Path, default=REPO_ROOT / "runs", help="where the trained rows live")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--fast", action="store_true", help="two utterances of at most 0.5 s per voice")
    parser.add_argument("--rows", nargs="+", help="only these rows (default: every row whose checkpoint exists)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    fast = args.fast or fast_mode()
    count, max_seconds = (2, 0.5) if fast else (None, None)
    results = {
        "command": " ".join(["python scripts/speakers_table.py", *(sys.argv[1:] if argv is None else argv)]),
        "temperature": TEMPERATURE,
        "split": "test",
        "voices": {},
    }
    for voice in args.voices:
        rows = {k: v for k, v in default_rows(voice, args.runs).items() if not args.rows or k in args.rows}
        results["voices"][voice] = score_voice(voice, rows, count, max_seconds)
        print(f"{voice}: scored {sorted(results['voices'][voice]['checkpoints'])}", flush=True)
    write_json(args.out, ev.json_safe(results))
    print(markdown(results))
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
