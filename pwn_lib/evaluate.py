"""Score checkpoints with the objective metrics vocoder papers report (HiFi-GAN, BigVGAN, Vocos): tables and CLI.

Renders each checkpoint through :mod:`pwn_lib.vocoders` from the real utterances' log-mels and scores it
with the metrics of :mod:`pwn_lib.metrics` (their definitions are there) against the real recording; the phone
error rate comes from the machine listener, :class:`pwn_lib.phones.Listener`.

Reference rows: ``real`` (a copy: the metrics' zero points), ``noise`` (white noise at the real
power), ``silence``, and ``espeak`` (espeak-ng reading the transcript: intelligible speech by another
voice, scored only by the listener since it is not time-aligned).

Command line::

    python -m pwn_lib.evaluate data/checkpoints/teacher_course data/checkpoints/student_course --split test

Taught in notebooks 04, 06 and 07; section 4 of the paper reports MOS, which notebook 09 measures.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import librosa
import numpy as np
import soundfile as sf
import torch
from tqdm.auto import tqdm

from pwn_lib import vocoders
from pwn_lib.artifacts import CheckpointError, write_json
from pwn_lib.audio import power_db, save_audio
from pwn_lib.config import DATA_DIR, AudioConfig, RecipeError, at_least_one, fast_mode, positive_number
from pwn_lib.data import VOICES, Utterance, load_voices
from pwn_lib.losses import MR_STFT_RESOLUTIONS
from pwn_lib.metrics import (
    FRAME_HOP,
    FRAME_LENGTH,
    LOWER_IS_BETTER,
    METRICS,
    N_CEPSTRA,
    VOICED_FLOOR_DB,
    VOICED_PERIODICITY,
    mean_ci,
    pitch_track,
    ratio_ci,
    score_clip,
)
from pwn_lib.phones import Listener
from pwn_lib.vocoders import Vocoder, crop_to_hops

MIN_SECONDS, MAX_SECONDS = 1.0, 4.0  # default utterance range: long enough to judge, short enough to generate
EVAL_SEED = 0
RESULTS_DIR = DATA_DIR / "eval"
# The rows evaluate_systems adds beside the checkpoints' own; a checkpoint's row may not take one of these names.
REFERENCE_ROWS = ("real", "noise", "silence", "espeak")
ROW_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


# ----------------------------------------------------------------------------- reference rows


def espeak_reading(text: str, sample_rate: int) -> np.ndarray:
    """espeak-ng (en-us) reading ``text``, resampled to ``sample_rate``. Needs the espeak-ng program."""
    if shutil.which("espeak-ng") is None:
        raise FileNotFoundError(
            "espeak-ng is not installed: `apt-get install espeak-ng` (or skip the espeak row with --no-espeak)"
        )
    wav = subprocess.run(["espeak-ng", "-v", "en-us", "--stdout", text], check=True, capture_output=True).stdout
    x, rate = sf.read(io.BytesIO(wav), dtype="float32")
    return librosa.resample(x, orig_sr=rate, target_sr=sample_rate) if rate != sample_rate else x


# ----------------------------------------------------------------------------- systems


def pick_utterances(
    split: str = "test",
    count: int | None = None,
    min_seconds: float = MIN_SECONDS,
    max_seconds: float = MAX_SECONDS,
    voice: str = "en",
) -> list[Utterance]:
    """The ``split`` utterances of ``min_seconds``-``max_seconds``, shortest first; ``count`` evenly spaced ones.

    ``voice``: one of :data:`pwn_lib.data.VOICES` (English, the embedded corpus, by default)."""
    if voice not in VOICES:
        raise ValueError(f"voice {voice!r} unknown; choose one of {list(VOICES)}")
    found = load_voices(split, [voice])  # English is the embedded corpus, speaker 0
    pool = sorted(
        (u for u in found if min_seconds <= len(u.audio) / u.sample_rate <= max_seconds),
        key=lambda u: (len(u.audio), u.id),
    )
    if not pool:
        raise ValueError(f"no {voice} {split} utterances between {min_seconds} and {max_seconds} s")
    if count is None or count >= len(pool):
        return pool
    return [pool[i] for i in np.linspace(0, len(pool) - 1, count).round().astype(int)]


def reference_systems(clips: list[np.ndarray], seed: int = EVAL_SEED) -> dict[str, list[np.ndarray]]:
    """The real audio itself, white noise at each clip's power, and silence."""
    rng = np.random.default_rng(seed)
    noise = [
        (rng.standard_normal(len(x)) * np.sqrt(np.mean(x.astype(np.float64) ** 2))).astype(np.float32) for x in clips
    ]
    return {"real": clips, "noise": noise, "silence": [np.zeros_like(x) for x in clips]}


def unique_names(kinds: list[str]) -> list[str]:
    """Default row names: each checkpoint's kind, numbered (``teacher_1``, ``teacher_2``) where kinds repeat."""
    return [kind if kinds.count(kind) == 1 else f"{kind}_{kinds[:i].count(kind) + 1}" for i, kind in enumerate(kinds)]


def check_names(names: list[str]) -> None:
    """Row names must be plain identifiers (they name files under ``--out`` and ``--audio-dir``), distinct, and
    none of :data:`REFERENCE_ROWS`; a ValueError names the offending ones."""
    bad = [n for n in names if not ROW_NAME.match(n)]
    if bad:
        raise ValueError(
            f"--names {bad}: a row name must be 1-64 letters, digits, '_' or '-' and start with a letter or digit "
            "(it names files); choose e.g. teacher_a,teacher_b"
        )
    taken = sorted({n for n in names if n in REFERENCE_ROWS})
    if taken:
        raise ValueError(f"--names {taken}: {list(REFERENCE_ROWS)} are the reference rows; choose other names")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"--names {repeated}: each checkpoint needs its own row name; give distinct names")


def evaluate_systems(
    signals: dict[str, list[np.ndarray]],
    utterances: list[Utterance],
    clips: list[np.ndarray],
    audio: AudioConfig,
    listener: Listener | None = None,
    espeak: dict[str, np.ndarray] | None = None,
    progress: bool = True,
) -> dict:
    """Score every system's clips against ``clips``; the table of means and CIs plus per-utterance values."""
    real_tracks = [pitch_track(x, audio.sample_rate) for x in clips]
    rows: dict[str, dict] = {}
    per_utterance: dict[str, dict[str, list]] = {}
    for name, outputs in tqdm(signals.items(), desc="score", disable=not progress):
        values: dict[str, list] = {m: [] for m in METRICS if m != "per"}
        for x, real, track in zip(outputs, clips, real_tracks, strict=True):
            for key, value in score_clip(x, real, audio, track).items():
                values[key].append(value)
        rows[name] = {key: mean_ci(v) for key, v in values.items()}
        if listener is not None:
            counts = [listener.errors(x, u.id) for x, u in zip(outputs, utterances, strict=True)]
            values["per"] = [e / n for e, n in counts]
            rows[name]["per"] = ratio_ci([e for e, _ in counts], [n for _, n in counts])
        per_utterance[name] = values
    if listener is not None and espeak:
        counts = [listener.errors(espeak[u.id], u.id) for u in utterances]
        rows["espeak"] = {
            "per": ratio_ci([e for e, _ in counts], [n for _, n in counts]),
            "power_db": mean_ci([power_db(espeak[u.id]) - power_db(x) for u, x in zip(utterances, clips, strict=True)]),
        }
        per_utterance["espeak"] = {"per": [e / n for e, n in counts]}
    return {"systems": rows, "per_utterance": per_utterance}


class QuickScore:
    """Time-aligned metrics of a parallel student on a few fixed utterances: cheap enough for every checkpoint.

    Used by ``python -m pwn_lib.train student`` to log voicing, periodicity, power and MCD curves to
    TensorBoard during distillation (model selection on the valid split; the test split is for the end).
    """

    def __init__(self, audio: AudioConfig, split: str = "valid", count: int = 4, voice: str = "en"):
        self.audio = audio
        self.utterances = pick_utterances(split, count, voice=voice)
        self.speaker = VOICES.index(voice)  # used by a multi-speaker student only
        self.clips = [crop_to_hops(u.audio, audio.hop_length) for u in self.utterances]
        self.tracks = [pitch_track(x, audio.sample_rate) for x in self.clips]

    @torch.no_grad()
    def __call__(self, student: torch.nn.Module) -> dict[str, float]:
        speaker = self.speaker if vocoders.as_vocoder(student).model.cfg.n_speakers else None
        outputs = vocoders.render_clips(student, self.clips, self.audio, seed=EVAL_SEED, speaker=speaker)
        values: dict[str, list[float]] = {}
        for x, real, track in zip(outputs, self.clips, self.tracks, strict=True):
            for key, value in score_clip(x, real, self.audio, track).items():
                values.setdefault(key, []).append(value)
        real_share = float(np.mean([t.voiced.mean() for t in self.tracks]))
        scores = {key: float(np.nanmean(v)) if np.isfinite(v).any() else float("nan") for key, v in values.items()}
        scores["voiced_share_vs_real"] = scores["voiced_share"] / real_share
        return scores


# ----------------------------------------------------------------------------- report


def format_table(results: dict) -> str:
    """A plain-text table: one row per system, mean ± 95 % CI per metric."""
    systems = results["systems"]
    header = ["system", *METRICS]
    lines = [header]
    for name, row in systems.items():
        cells = [name]
        for metric in METRICS:
            cell = row.get(metric)
            if not cell or cell["mean"] is None:
                cells.append("–")
            elif cell["ci95"] is None:
                cells.append(f"{cell['mean']:.3g}")
            else:
                cells.append(f"{cell['mean']:.3g} ± {cell['ci95']:.2g}")
        lines.append(cells)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in lines]
    text.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(text)


def headline(results: dict, system: str) -> dict[str, float | None]:
    """``{metric: mean}`` of one row, for metrics.json and the reload tests."""
    return {k: v["mean"] for k, v in results["systems"][system].items()}


def run(
    checkpoints: list[Path],
    split: str = "test",
    count: int | None = None,
    names: list[str] | None = None,
    max_seconds: float | None = None,
    with_espeak: bool = True,
    audio_dir: Path | None = None,
    device: str = "cpu",
    progress: bool = True,
    batch_size: int = 8,
    temperature: float | None = None,
    voice: str = "en",
) -> dict:
    """Score ``checkpoints`` and the reference rows on ``voice``'s ``split``; returns the JSON-ready results.

    ``voice`` (one of :data:`pwn_lib.data.VOICES`): a multi-speaker checkpoint renders with that voice's speaker
    id, a single-speaker one without ids. The phone listener and the espeak row are English only, so another
    voice's table has no PER column.

    ``temperature`` overrides every teacher's recorded sampling temperature (see :func:`pwn_lib.vocoders.load`).
    ``names`` (default: :func:`unique_names` of the checkpoints' kinds) are checked by :func:`check_names` before
    anything is loaded.
    """
    if names:
        check_names(names)  # before any checkpoint is read: a bad name is refused even when the paths are wrong too
    kinds = [vocoders.checkpoint_kind(p) for p in checkpoints]
    names = names or unique_names(kinds)
    check_names(names)
    systems = [
        vocoders.load(p, n, device, temperature if kind == "teacher" else None)  # a student has no temperature
        for p, n, kind in zip(checkpoints, names, kinds, strict=True)
    ]
    audio = _audio_config(systems)
    utterances = pick_utterances(split, count, voice=voice)
    english = voice == "en"
    max_samples = int(max_seconds * audio.sample_rate) if max_seconds else None
    shortest = max(n_fft for n_fft, _, _ in MR_STFT_RESOLUTIONS)
    if max_samples is not None and max_samples < shortest:
        raise RecipeError(
            f"--max-seconds {max_seconds:g}: {max_samples} samples, shorter than the {shortest} samples the M-STFT "
            f"metric needs; crop to at least {shortest / audio.sample_rate:.3f} s"
        )
    clips = [crop_to_hops(u.audio, audio.hop_length, max_samples) for u in utterances]
    signals = reference_systems(clips)
    timings = {}
    for system in systems:
        started = time.perf_counter()
        signals[system.name] = vocoders.render_clips(
            system, clips, audio, batch_size, EVAL_SEED, progress, speaker_id(system, voice)
        )
        timings[system.name] = round(time.perf_counter() - started, 1)
    espeak = None
    if with_espeak and english:
        espeak = {u.id: espeak_reading(u.text, audio.sample_rate) for u in utterances}
    if audio_dir is not None:
        _save_signals(audio_dir, signals, utterances, audio.sample_rate)
    results = evaluate_systems(signals, utterances, clips, audio, Listener() if english else None, espeak, progress)
    results.update(
        {
            "voice": voice,
            "split": split,
            "utterances": [u.id for u in utterances],
            "seconds": round(sum(len(x) for x in clips) / audio.sample_rate, 2),
            "sample_rate": audio.sample_rate,
            "checkpoints": {s.name: str(s.path) for s in systems},
            "synthesis_seconds": timings,
            "seed": EVAL_SEED,
            "batch_size": batch_size,
            "sampling": {s.name: s.sampling for s in systems if s.sampling},
            "definitions": {
                "voiced": f"YIN periodicity >= {VOICED_PERIODICITY} and level > {VOICED_FLOOR_DB} dBFS",
                "frames": f"{FRAME_LENGTH}-sample frames every {FRAME_HOP} samples",
                "mcd": f"c1-c{N_CEPSTRA}, DCT-II of {audio.n_mels}-band natural-log mel amplitude, "
                "10/ln10*sqrt(2*sum), mean over frames, no DTW",
                "ci95": "t-based over utterances; per: percentile bootstrap over utterances",
            },
        }
    )
    return results


def speaker_id(system: Vocoder, voice: str) -> int | None:
    """The speaker id ``system`` renders ``voice`` with: its position in :data:`pwn_lib.data.VOICES` for a
    multi-speaker model, None for a single-speaker one (which renders whatever voice its weights learned)."""
    return VOICES.index(voice) if system.model.cfg.n_speakers else None


def json_safe(value):
    """``value`` with every NaN or infinity replaced by None (strict JSON has no NaN)."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def record(results: dict, directory: Path, system: str) -> None:
    """Write ``system``'s row, the reference rows and its per-utterance values into ``directory/metrics.json``.

    The shipped checkpoints' headline figures come from here; tests/test_shipped.py recomputes them.
    """
    path = Path(directory) / "metrics.json"
    metrics = json.loads(path.read_text())
    rows = results["systems"]
    metrics["evaluation"] = {
        "command": results.get("command"),
        **({"voice": results["voice"]} if results.get("voice", "en") != "en" else {}),
        "split": results["split"],
        "utterances": results["utterances"],
        "seconds": results["seconds"],
        "seed": results["seed"],
        "batch_size": results["batch_size"],
        "sampling": results.get("sampling", {}).get(system, {}),
        "definitions": results["definitions"],
        "synthesis_seconds": results["synthesis_seconds"].get(system),
        "rows": {name: rows[name] for name in (system, "real", "noise", "silence", "espeak") if name in rows},
        "per_utterance": results["per_utterance"][system],
    }
    write_json(path, json_safe(metrics))


def recompute(directory: Path, batches: int | None = None, progress: bool = False) -> dict[str, list]:
    """Re-score a checkpoint on the utterances its metrics.json ``evaluation`` records, batch by batch.

    ``batches`` limits the work to the first few synthesis batches (the shortest utterances); each batch
    uses the recorded seed scheme, so its per-utterance values should match the recorded ones.
    Returns ``{metric: [value per recomputed utterance]}``.
    """
    directory = Path(directory)
    recorded = json.loads((directory / "metrics.json").read_text()).get("evaluation")
    if recorded is None:
        raise KeyError(
            f"{directory}/metrics.json has no 'evaluation'; run python -m pwn_lib.evaluate {directory} --record"
        )
    system = vocoders.load(directory, temperature=recorded.get("sampling", {}).get("temperature"))
    audio = system.audio
    voice = recorded.get("voice", "en")
    by_id = {u.id: u for u in load_voices(recorded["split"], [voice])}
    count = len(recorded["utterances"]) if batches is None else batches * recorded["batch_size"]
    utterances = [by_id[i] for i in recorded["utterances"][:count]]
    clips = [crop_to_hops(u.audio, audio.hop_length) for u in utterances]
    outputs = vocoders.render_clips(
        system, clips, audio, recorded["batch_size"], recorded["seed"], progress, speaker_id(system, voice)
    )
    listener = Listener() if voice == "en" else None
    results = evaluate_systems({system.name: outputs}, utterances, clips, audio, listener, progress=progress)
    return results["per_utterance"][system.name]


def _audio_config(systems: list[Vocoder]) -> AudioConfig:
    """The checkpoints' AudioConfig (recorded in config.json when present), which must agree."""
    configs = {s.audio for s in systems}
    if len(configs) > 1:
        raise ValueError(f"checkpoints {[str(s.path) for s in systems]} use different audio configs: {configs}")
    return configs.pop() if configs else AudioConfig()


def _save_signals(
    directory: Path, signals: dict[str, list[np.ndarray]], utterances: list[Utterance], sample_rate: int
) -> None:
    for name, outputs in signals.items():
        for x, u in zip(outputs, utterances, strict=True):
            save_audio(Path(directory) / name / f"{u.id}.wav", np.clip(x, -1, 1), sample_rate)


# ----------------------------------------------------------------------------- the course's targets

# What the shipped checkpoints must reach on `--split test` (distillation that works). Each entry:
# (system, metric, what is compared, the bound as a function of the real and teacher rows' means).
TARGETS: tuple[tuple[str, str, str, object], ...] = (
    ("teacher", "voiced_share", ">= 0.85 x real", lambda real, teacher: 0.85 * real["voiced_share"]),
    ("teacher", "periodicity", ">= 0.80", lambda real, teacher: 0.80),
    ("teacher", "per", "<= 0.35", lambda real, teacher: 0.35),
    ("student", "voiced_share", ">= 0.80 x real", lambda real, teacher: 0.80 * real["voiced_share"]),
    ("student", "power_db", "within 2 dB of real", lambda real, teacher: 2.0),
    ("student", "mcd", "<= 1.10 x teacher", lambda real, teacher: 1.10 * teacher["mcd"]),
    ("student", "periodicity", ">= 0.90 x teacher", lambda real, teacher: 0.90 * teacher["periodicity"]),
    ("student", "per", "<= teacher + 0.10", lambda real, teacher: teacher["per"] + 0.10),
)


def target_report(rows: dict[str, dict]) -> list[dict]:
    """Each target of :data:`TARGETS` whose system is in ``rows``: measured mean, bound and whether it is met.

    ``rows`` maps ``real``, ``teacher`` and optionally ``student`` to ``{metric: {"mean": ...}}``, as in the
    ``evaluation`` block of a checkpoint's metrics.json (notebooks 04 and 06 print this).
    """
    means = {name: {k: v["mean"] for k, v in row.items() if isinstance(v, dict)} for name, row in rows.items()}
    report = []
    for system, metric, rule, bound in TARGETS:
        if system not in means:
            continue
        value, limit = means[system][metric], bound(means["real"], means["teacher"])
        if metric == "power_db":
            met = abs(value) <= limit
        else:
            met = value <= limit if metric in LOWER_IS_BETTER else value >= limit
        report.append(
            {"system": system, "metric": metric, "rule": rule, "measured": value, "bound": limit, "met": bool(met)}
        )
    return report


# ----------------------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pwn_lib.evaluate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("checkpoints", nargs="+", type=Path, help="teacher and/or student checkpoint directories")
    parser.add_argument(
        "--names",
        help="comma-separated row names for the checkpoints: letters, digits, '_', '-'; not real, noise, silence or "
        "espeak (default: their kinds, numbered where they repeat)",
    )
    parser.add_argument("--split", default="test", choices=("train", "valid", "test"))
    parser.add_argument(
        "--voice",
        default="en",
        choices=VOICES,
        help="whose utterances: en (the embedded corpus, default) or data/speakers/<voice>; a multi-speaker "
        "checkpoint renders with that voice's speaker id; the PER and espeak rows are English only",
    )
    parser.add_argument(
        "--utterances",
        type=at_least_one,
        default=None,
        help=f"how many {MIN_SECONDS:g}-{MAX_SECONDS:g} s utterances (default: all; fast mode: 2)",
    )
    parser.add_argument(
        "--max-seconds", type=positive_number, default=None, help="crop each utterance (fast mode: 0.5)"
    )
    parser.add_argument("--no-espeak", action="store_true", help="skip the espeak-ng reference row")
    parser.add_argument("--out", type=Path, help="JSON file for the results (default data/eval/<names>.json)")
    parser.add_argument("--audio-dir", type=Path, help="also write every system's clips here as WAV")
    parser.add_argument("--threads", type=at_least_one, help="torch CPU threads (>= 1)")
    parser.add_argument(
        "--temperature",
        type=positive_number,
        help="sample the teachers at this temperature instead of their config.json's "
        "sampling.temperature (1.0 if none): each chosen logistic's scale times it",
    )
    parser.add_argument(
        "--record",
        action="store_true",
        help="also write each checkpoint's row into its own metrics.json (the shipped figures)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    names = args.names.split(",") if args.names else None
    if names is not None and len(names) != len(args.checkpoints):
        raise SystemExit(f"--names has {len(names)} names for {len(args.checkpoints)} checkpoints")
    if names is not None:
        try:
            check_names(names)
        except ValueError as error:
            raise SystemExit(f"error: {error}") from None
    count = args.utterances if args.utterances is not None else (2 if fast_mode() else None)
    max_seconds = args.max_seconds if args.max_seconds is not None else (0.5 if fast_mode() else None)
    if args.out is not None and args.out.is_dir():
        raise SystemExit(f"error: --out {args.out} is a folder; name the JSON file to write, e.g. {args.out}/eval.json")
    try:
        results = run(
            args.checkpoints,
            args.split,
            count,
            names,
            max_seconds,
            not args.no_espeak,
            args.audio_dir,
            temperature=args.temperature,
            voice=args.voice,
        )
    except (FileNotFoundError, CheckpointError, RecipeError) as error:
        raise SystemExit(f"error: {error}") from None
    results["command"] = " ".join(["python -m pwn_lib.evaluate", *(sys.argv[1:] if argv is None else argv)])
    voice = "" if args.voice == "en" else f"_{args.voice}"
    out = args.out or RESULTS_DIR / f"{'_'.join(results['checkpoints'])}{voice}_{args.split}.json"
    results = json_safe(results)
    write_json(out, results)
    if args.record:
        for name, path in results["checkpoints"].items():
            record(results, Path(path), name)
    print(format_table(results))
    print(
        f"{results['seconds']} s of {args.voice} {args.split} audio over {len(results['utterances'])} utterances; "
        f"written to {out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
