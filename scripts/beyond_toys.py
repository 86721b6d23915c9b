"""Density distillation outside audio (pwn_lib.toys): notebook 10's experiments, as tables.

    python scripts/beyond_toys.py --fast          # seconds: a smoke run of every experiment
    python scripts/beyond_toys.py                 # minutes on one core: the figures the notebook quotes
    python scripts/beyond_toys.py --out run.json  # where the JSON goes (default: the scratch folder, $PWN_SCRATCH)
    python scripts/beyond_toys.py --only multi_teacher --out data/beyond/toys.json  # rerun one, keep the rest

The experiments: the four research questions (Q1 architecture, Q2 outside audio, Q3 an evolving teacher,
Q5 transfer methods) and issue 23's items 1 (other divergences: estimators, training by them) and 2
(several teachers). ``--only`` runs the named ones and merges them into an existing ``--out`` of the same mode.

Runs on one thread (the course machine has two cores). Every KL is exact up to its Monte Carlo standard
error, printed beside it; 2-D figures are also checked by quadrature.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from pwn_lib.config import SCRATCH_DIR
from pwn_lib.toys import (
    architecture_sweep,
    divergence_comparison,
    divergence_estimators,
    evolving_teacher,
    multi_teacher,
    toy_distillation,
    transfer_comparison,
)

DEFAULT_OUT = SCRATCH_DIR / "beyond_toys.json"


def table(header: list[str], rows: list[list[object]]) -> str:
    """A Markdown table; floats to 3 significant decimals."""
    cell = lambda v: f"{v:.3f}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows])


def pm(value: float, se: float) -> str:
    return f"{value:.3f} ± {se:.3f}"


def print_sweep(result: dict) -> None:
    print(
        f"\n## Q1: student architecture at {result['steps']} steps (AR series, T={result['length']}, "
        f"lag {result['lag']}); KL in nats per time step"
    )
    print(f"teacher NLL {result['teacher_nll_per_step']:.3f} nats/step; entropy rate {result['entropy_rate']:.3f}")
    rows = [
        [
            r["flows"],
            r["channels"],
            r["layers"],
            r["receptive_field"],
            r["params"],
            pm(r["reverse_kl"], r["reverse_kl_se"]),
            pm(r["forward_kl"], r["forward_kl_se"]),
            1e3 * r["seconds_per_step"],
        ]
        for r in result["rows"]
    ]
    print(table(["flows", "channels", "layers", "receptive field", "params", "KL(S‖T)", "KL(T‖S)", "ms/step"], rows))


def print_toys(result: dict) -> None:
    print("\n## Q2: reverse-KL distillation outside audio (KL per example for moons, per step for the series)")
    rows = []
    for t in result["tasks"]:
        b, a = t["before"], t["after"]
        rows.append(
            [
                t["task"],
                t["steps"],
                t["seconds"],
                pm(b["reverse_kl"], b["reverse_kl_se"]),
                pm(a["reverse_kl"], a["reverse_kl_se"]),
                pm(b["forward_kl"], b["forward_kl_se"]),
                pm(a["forward_kl"], a["forward_kl_se"]),
            ]
        )
    print(table(["task", "steps", "train s", "KL(S‖T) before", "after", "KL(T‖S) before", "after"], rows))
    for t in result["tasks"]:
        if "grid_after" in t:
            g = t["grid_after"]
            print(
                f"moons, quadrature after: KL(S‖T) {g['reverse_kl']:.3f}, KL(T‖S) {g['forward_kl']:.3f}, "
                f"JS {g['js']:.3f}, mass S {g['student_mass']:.4f}, T {g['teacher_mass']:.4f}"
            )
        else:
            print(
                f"series: teacher NLL {t['teacher_nll_per_step']:.3f} nats/step against the entropy rate "
                f"{t['entropy_rate']:.3f}"
            )


def print_evolving(result: dict) -> None:
    print(f"\n## Q3: an evolving teacher ({result['steps']} steps; swap at half); reverse KL by quadrature")
    rows = []
    for s in result["scenarios"]:
        for run, r in s["runs"].items():
            swap = f"{r['mc_kl_to_A_at_swap']:.3f} → {r['mc_kl_to_A_at_end']:.3f}" if "mc_kl_to_A_at_swap" in r else ""
            rows.append([s["scenario"], s["kl_A_to_B"], run, r["kl_to_A"], r["kl_to_B"], swap])
    print(table(["scenario", "KL(A‖B)", "student from", "KL(S‖A)", "KL(S‖B)", "KL(S‖A) swap → end (MC)"], rows))


def print_transfer(result: dict) -> None:
    print(f"\n## Q5: transfer methods at one wall budget {result['budget_s']} s (per example / per step)")
    rows = [
        [
            t["task"],
            t["method"],
            t["steps_done"],
            1e3 * t["seconds_per_step"],
            t["teacher_sampling_share"],
            pm(t["reverse_kl"], t["reverse_kl_se"]),
            pm(t["forward_kl"], t["forward_kl_se"]),
        ]
        for t in result["tasks"]
    ]
    print(table(["task", "method", "steps", "ms/step", "teacher sampling share", "KL(S‖T)", "KL(T‖S)"], rows))


def print_estimators(result: dict) -> None:
    print(
        f"\n## Divergence estimators on two moons ({result['repeats']} repeats per n; exact by quadrature; "
        f"Renyi alpha = {result['alpha']})"
    )
    rows = [
        [
            r["estimator"],
            r["n"],
            r["exact"],
            pm(r["bias"], r["bias_se"]),
            r["sd"],
            r["mean_reported_se"],
            r["rmse"],
            r["ms_per_estimate"],
        ]
        for r in result["rows"]
    ]
    print(table(["estimator", "n", "exact", "bias ± se", "sd", "mean reported se", "RMSE", "ms/estimate"], rows))


def print_divergences(result: dict) -> None:
    small = result["student"]
    print(
        f"\n## Training by each divergence: two moons, a {small['flows']}-flow IAF of width {small['width']}, "
        f"{result['rows'][0]['steps']} steps; scored by quadrature (Renyi alpha = {result['alpha']})"
    )
    rows = [
        [
            r["method"],
            1e3 * r["seconds_per_step"],
            r["reverse_kl"],
            r["forward_kl"],
            r["renyi"],
            r["js"],
            r["missed_mass"],
        ]
        for r in result["rows"]
    ]
    print(table(["trained by", "ms/step", "KL(S‖T)", "KL(T‖S)", "D_α(S‖T)", "JS", "missed mass"], rows))
    rows = [
        [c["task"], c["method"], 1e3 * c["seconds_per_step"], c["teacher_sampling_share"]]
        for c in result["series_cost"]
    ]
    print(table(["task", "method", "ms/step", "teacher sampling share"], rows))


def print_multi(result: dict) -> None:
    print(f"\n## Two teachers ({result['steps']} steps); KL by quadrature, nats per example")
    rows = []
    for s in result["scenarios"]:
        for run, r in s["runs"].items():
            rows.append(
                [
                    s["scenario"],
                    s["kl_1_to_2"],
                    s["average_kl_floor"],
                    run,
                    r["kl_to_1"],
                    r["kl_to_2"],
                    r["average_kl"],
                    r["kl_to_mixture"],
                    r["mixture_to_student_kl"],
                    r["mixture_missed_mass"],
                ]
            )
    header = [
        "scenario",
        "KL(1‖2)",
        "-ln Z",
        "student",
        "KL(S‖1)",
        "KL(S‖2)",
        "mean",
        "KL(S‖mix)",
        "KL(mix‖S)",
        "missed",
    ]
    print(table(header, rows))


EXPERIMENTS = {
    "architecture_sweep": (architecture_sweep, print_sweep),
    "toy_distillation": (toy_distillation, print_toys),
    "evolving_teacher": (evolving_teacher, print_evolving),
    "transfer_comparison": (transfer_comparison, print_transfer),
    "divergence_estimators": (divergence_estimators, print_estimators),
    "divergence_comparison": (divergence_comparison, print_divergences),
    "multi_teacher": (multi_teacher, print_multi),
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="small sizes: seconds instead of minutes")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON results (default {DEFAULT_OUT})")
    parser.add_argument("--only", nargs="+", choices=list(EXPERIMENTS), help="run these and merge them into --out")
    args = parser.parse_args(argv)
    if args.out.exists() and args.out.is_dir():
        parser.error(f"--out {args.out} is a directory; give a file path such as {args.out / 'beyond_toys.json'}")
    torch.set_num_threads(1)
    results = {"fast": args.fast}
    if args.only and args.out.is_file():
        results = json.loads(args.out.read_text())
        if results.get("fast") != args.fast:
            parser.error(
                f"--out {args.out} holds a {'fast' if results.get('fast') else 'full'}-mode run; "
                f"--only merges runs of the same mode (drop or add --fast)"
            )
    start = time.perf_counter()
    for name, (run, show) in EXPERIMENTS.items():
        if args.only and name not in args.only:
            continue
        began = time.perf_counter()
        results[name] = run(args.fast) | {"wall_s": time.perf_counter() - began}
        show(results[name])
        print(f"({name}: {results[name]['wall_s']:.1f} s)")
    results["wall_s"] = (
        sum(r["wall_s"] for r in results.values() if isinstance(r, dict)) if args.only else time.perf_counter() - start
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    print(f"\nwall time {results['wall_s']:.1f} s; wrote {args.out}")


if __name__ == "__main__":
    main()
