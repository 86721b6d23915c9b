"""Command line for listening tests.

python -m pwn_lib.listening build --systems real,teacher,student,mulaw8,anchor --utterances 8 --out DIR
python -m pwn_lib.listening build --systems real,teacher=data/checkpoints/teacher_speakers,anchor \
    --voices en,es,fr,it,ru --utterances 4 --out DIR
python -m pwn_lib.listening simulate --test DIR --db ratings.sqlite --raters 12
python -m pwn_lib.listening analyse --test DIR --ratings ratings.sqlite [more.csv ...]
python -m pwn_lib.listening export --db ratings.sqlite --csv ratings.csv
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from pwn_lib.config import at_least_one, finite_number, positive_number
from pwn_lib.listening.stimuli import TARGET_LUFS, StimulusError, load_test
from pwn_lib.listening.store import RatingStore, StoreError, read_ratings


def _build(args: argparse.Namespace) -> None:
    import torch

    from pwn_lib.listening.build import build_test

    torch.set_num_threads(args.threads)  # generation is many tiny steps: more threads only contend
    command = " ".join(["python -m pwn_lib.listening", *args.argv])
    test = build_test(
        args.out,
        args.systems,
        args.utterances,
        args.seconds,
        args.seed,
        args.name,
        args.ab,
        args.loudness,
        command,
        args.voices,
    )
    voices = f" ({args.voices})" if args.voices else ""
    print(
        f"test {test.name!r} written to {test.root}: {len(test.systems)} systems x {len(test.utterances)} "
        f"utterances{voices}, {len(test.controls)} control clips, A/B pairs {test.ab_pairs}"
    )
    for system, spec in test.systems.items():
        if spec.get("unseen_voices"):
            how = "with their speaker ids" if "speaker_ids" in spec else "from their log-mels alone (single-speaker)"
            print(
                f"note: {system} was not trained on {spec['unseen_voices']} and renders them {how}; test.json "
                "records them as its unseen_voices and the per-voice MOS marks them"
            )


def _simulate(args: argparse.Namespace) -> None:
    from pwn_lib.listening.simulate import simulate_class

    test = load_test(args.test)
    with RatingStore(args.db) as store:
        ids = simulate_class(test, store, args.raters, seed=args.seed)
        print(f"{len(ids)} simulated raters wrote {store.count(test.name)} ratings of {test.name!r} to {args.db}")
        if args.csv:
            store.to_csv(args.csv, test.name)
            print(f"exported to {args.csv}")


def _analyse(args: argparse.Namespace) -> None:
    from pwn_lib.listening.stats import (
        ab_table,
        accepted,
        mos_table,
        objective_table,
        pairwise_wilcoxon,
        report,
        screen_raters,
    )

    test = load_test(args.test)
    frame = pd.concat([read_ratings(p, test.name) for p in args.ratings], ignore_index=True)
    frame = frame.drop_duplicates(["test", "rater", "kind", "trial"]).reset_index(drop=True)
    if frame.empty:
        raise SystemExit(f"no ratings of test {test.name!r} in {[str(p) for p in args.ratings]}")
    print(report(frame, test, n_boot=args.n_boot))
    kept = accepted(frame, screen_raters(frame))
    with pd.option_context("display.width", 160, "display.max_columns", 20, "display.precision", 3):
        print("\nscreening:\n", screen_raters(frame).to_string(index=False))
        print("\npaired Wilcoxon (Holm-adjusted):\n", pairwise_wilcoxon(kept).to_string(index=False))
        if (kept["kind"] == "ab").any():
            print("\nA/B:\n", ab_table(kept).to_string(index=False))
        print(
            "\nMOS and objective figures:\n",
            objective_table(mos_table(kept, test, args.n_boot), test).to_string(index=False),
        )


def _export(args: argparse.Namespace) -> None:
    with RatingStore(args.db, create=False) as store:
        path = store.to_csv(args.csv, args.test)
        print(f"{len(store.ratings(args.test))} ratings written to {path}")


# A listening-test clip is a sentence or two (P.800 asks for a few seconds); the teacher renders one second of
# audio in about 16 s of CPU, so a longer clip is refused rather than left running for hours.
MAX_CLIP_SECONDS = 30.0


def clip_seconds(text: str) -> float:
    """An argparse type: a clip length in seconds, > 0 and at most :data:`MAX_CLIP_SECONDS`."""
    value = positive_number(text)
    if value > MAX_CLIP_SECONDS:
        raise argparse.ArgumentTypeError(f"{value:g} s is longer than a listening clip's {MAX_CLIP_SECONDS:g} s")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pwn_lib.listening", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="render a test from the shipped checkpoints on held-out utterances")
    b.add_argument(
        "--systems",
        default="real,teacher,student,mulaw8,anchor",
        help="comma-separated: real, teacher, student, mulaw8, anchor, or NAME=CHECKPOINT_DIR",
    )
    b.add_argument(
        "--utterances", type=at_least_one, default=8, help="held-out (test split) utterances (per voice with --voices)"
    )
    b.add_argument(
        "--voices",
        help="comma-separated voices of pwn_lib.data.VOICES (en,es,fr,it,ru), each from its own test split; a "
        "multi-speaker checkpoint renders each with its speaker id (default: the English corpus alone)",
    )
    b.add_argument(
        "--seconds",
        type=clip_seconds,
        default=1.5,
        help="clip length; the teacher needs about 16 s of CPU per second of audio, whatever N",
    )
    b.add_argument("--out", type=Path, required=True, help="the test folder to write")
    b.add_argument("--name", help="test name stored with every rating (default: the folder name)")
    b.add_argument("--ab", help="A/B pairs, e.g. teacher:student,real:student (default teacher:student)")
    b.add_argument("--loudness", type=finite_number, default=TARGET_LUFS, help="target loudness in LUFS (BS.1770)")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--threads", type=at_least_one, default=1, help="torch CPU threads (1 is fastest for generation)")
    b.set_defaults(run=_build)
    s = sub.add_parser("simulate", help="simulated raters drive the rating pages (not real listeners)")
    s.add_argument("--test", type=Path, required=True)
    s.add_argument("--db", type=Path, required=True)
    s.add_argument("--raters", type=at_least_one, default=12)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--csv", type=Path, help="also export the test's ratings to this CSV")
    s.set_defaults(run=_simulate)
    a = sub.add_parser("analyse", help="report, screening, MOS table, Wilcoxon, A/B, objective figures")
    a.add_argument("--test", type=Path, required=True)
    a.add_argument("--ratings", type=Path, nargs="+", required=True, help="ratings databases and/or CSV exports")
    a.add_argument("--n-boot", type=at_least_one, default=2000)
    a.set_defaults(run=_analyse)
    e = sub.add_parser("export", help="ratings database -> CSV")
    e.add_argument("--db", type=Path, required=True)
    e.add_argument("--csv", type=Path, required=True)
    e.add_argument("--test", help="only this test's ratings")
    e.set_defaults(run=_export)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    args.argv = argv
    try:
        args.run(args)
    except (StimulusError, StoreError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
