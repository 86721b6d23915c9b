"""Measure how long each notebook takes, in fast or full mode, and record it in notebooks/times.json.

    .venv/bin/python scripts/time_notebooks.py                 # fast mode, every notebook
    .venv/bin/python scripts/time_notebooks.py --full 00 02    # full mode, two notebooks
    .venv/bin/python scripts/time_notebooks.py --show          # the recorded table

Each notebook runs in a fresh python3 kernel (nbclient), in its own folder as under nbval, with
``PWN_FAST=1`` or ``PWN_FAST=0``; the time is the wall clock from the first cell to the last, the kernel's start
excluded. A notebook that fails is recorded as failed, with the cell it stopped in, not with a time. The figures
depend on the machine and its load, which the record states: compare them within one run, not across runs.

The stated time at the top of each notebook (``**Time:** ...``) must agree with this record within a factor of 2;
``tests/test_notebooks.py`` checks it. Re-measure and restate after a change that moves a notebook's time.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
RECORD = REPO_ROOT / "notebooks" / "times.json"
CELL_TIMEOUT_S = 3_600


def read_record(path: Path = RECORD) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def run_notebook(path: Path, fast: bool) -> dict:
    """Execute one notebook; its wall time in seconds, or where it failed."""
    import nbclient
    import nbformat

    notebook = nbformat.read(path, as_version=4)
    env_fast = os.environ.get("PWN_FAST")
    os.environ["PWN_FAST"] = "1" if fast else "0"
    if not fast:
        os.environ.pop("CI", None)  # CI implies fast mode
    client = nbclient.NotebookClient(
        notebook, timeout=CELL_TIMEOUT_S, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    )
    try:
        with client.setup_kernel():
            start = time.perf_counter()
            for index, cell in enumerate(notebook.cells):
                try:
                    client.execute_cell(cell, index)
                except nbclient.exceptions.CellExecutionError as error:
                    return {"failed": f"cell {index}: {str(error).strip().splitlines()[-1][:200]}"}
            return {"seconds": round(time.perf_counter() - start, 1)}
    finally:
        if env_fast is None:
            os.environ.pop("PWN_FAST", None)
        else:
            os.environ["PWN_FAST"] = env_fast


def machine() -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    threads = os.environ.get("OMP_NUM_THREADS")  # torch's default thread count in the kernel, where it is set
    where = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, load {load:.1f} at the start"
    return where + (f", OMP_NUM_THREADS={threads}" if threads else "")


def show(record: dict) -> None:
    print(f"{'notebook':38s} {'fast':>9s} {'full':>9s}")
    for path in NOTEBOOKS:
        row = record.get(path.stem, {})
        cells = []
        for mode in ("fast", "full"):
            entry = row.get(mode, {})
            cells.append(f"{entry['seconds']:8.0f}s" if "seconds" in entry else f"{'failed' if entry else '-':>9s}")
        print(f"{path.stem:38s} {cells[0]} {cells[1]}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="notebook numbers or stems (default: all)")
    parser.add_argument("--full", action="store_true", help="full mode (PWN_FAST=0) instead of fast mode")
    parser.add_argument("--show", action="store_true", help="print the recorded table and stop")
    args = parser.parse_args(argv)
    record = read_record()
    if args.show:
        show(record)
        return
    by_name = {key: p for p in NOTEBOOKS for key in (p.stem, p.stem[:2])}
    unknown = [name for name in args.names if name not in by_name]
    if unknown:
        sys.exit(f"no notebook {unknown}; the notebooks are {[p.stem for p in NOTEBOOKS]}")
    picked = [by_name[name] for name in args.names] if args.names else NOTEBOOKS  # in the order given
    mode = "full" if args.full else "fast"
    for path in picked:
        where = machine()
        result = run_notebook(path, fast=not args.full)
        result.update(machine=where, date=datetime.date.today().isoformat())
        record = read_record()  # another run may have written meanwhile
        record.setdefault(path.stem, {})[mode] = result
        tmp = RECORD.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
        tmp.replace(RECORD)  # atomic: a killed run leaves the old record
        print(f"{path.stem} {mode}: {result.get('seconds', result.get('failed'))}", flush=True)
    show(read_record())


if __name__ == "__main__":
    main()
