"""Strip notebook outputs in place, keeping only small deterministic `# NBVAL_CHECK_OUTPUT` cells.

Usage: python scripts/strip_notebook.py notebooks/*.ipynb
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

CHECK_MARK = "# NBVAL_CHECK_OUTPUT"
KERNELSPEC = {"display_name": "Python 3", "language": "python", "name": "python3"}


def strip(path: Path) -> bool:
    """Strip one notebook; return True if the file changed."""
    before = path.read_text()
    nb = json.loads(before)
    for cell in nb["cells"]:
        cell.get("metadata", {}).pop("execution", None)
        if cell["cell_type"] != "code":
            continue
        source = "".join(cell["source"])
        keep = source.lstrip().startswith(CHECK_MARK)
        kept = ("stream", "execute_result")
        cell["outputs"] = [o for o in cell["outputs"] if o.get("output_type") in kept] if keep else []
        # nbval refuses a kept output whose cell looks unrun, so checked cells keep a count of 1.
        cell["execution_count"] = 1 if keep else None
        for output in cell["outputs"]:
            if output["output_type"] == "execute_result":
                output["execution_count"] = cell["execution_count"]
    nb["metadata"]["kernelspec"] = KERNELSPEC
    nb["metadata"].pop("widgets", None)
    after = json.dumps(nb, indent=1, ensure_ascii=False) + "\n"
    path.write_text(after)
    return after != before


def main(paths: list[str]) -> int:
    if not paths:
        print(__doc__, file=sys.stderr)
        return 2
    for name in paths:
        changed = strip(Path(name))
        print(f"{name}: {'stripped' if changed else 'already clean'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
