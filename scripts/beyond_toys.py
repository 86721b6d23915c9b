"""Density distillation outside audio (pwn_lib.toys): the four research questions of notebook 10, as tables.

    python scripts/beyond_toys.py --fast          # seconds: a smoke run of every experiment
    python scripts/beyond_toys.py                 # minutes on one core: the figures the notebook quotes
    python scripts/beyond_toys.py --out run.json  # where the JSON goes (default: the scratch folder, $PWN_SCRATCH)

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
from pwn_lib.toys import architecture_sweep, evolving_teacher, toy_distillation, transfer_comparison

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


EXPERIMENTS = {
    "architecture_sweep": (architecture_sweep, print_sweep),
    "toy_distillation": (toy_distillation, print_toys),
    "evolving_teacher": (evolving_teacher, print_evolving),
    "transfer_comparison": (transfer_comparison, print_transfer),
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="small sizes: seconds instead of minutes")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON results (default {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    if args.out.exists() and args.out.is_dir():
        parser.error(f"--out {args.out} is a directory; give a file path such as {args.out / 'beyond_toys.json'}")
    torch.set_num_threads(1)
    results, start = {"fast": args.fast}, time.perf_counter()
    for name, (run, show) in EXPERIMENTS.items():
        began = time.perf_counter()
        results[name] = run(args.fast) | {"wall_s": time.perf_counter() - began}
        show(results[name])
        print(f"({name}: {results[name]['wall_s']:.1f} s)")
    results["wall_s"] = time.perf_counter() - start
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    print(f"\nwall time {results['wall_s']:.1f} s; wrote {args.out}")


if __name__ == "__main__":
    main()
