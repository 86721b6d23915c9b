"""The README's paper <-> code <-> notebook index names files, functions and notebook sections that exist."""

from __future__ import annotations

import importlib
import json
import re

import pytest

from pwn_lib.config import REPO_ROOT

REQUIRED = [
    "MoL likelihood",
    "IAF step",
    "collapse",
    "H(P_S, P_T) - H(P_S)",
    "entropy term",
    "power loss",
    "perceptual loss",
    "contrastive loss",
    "cached generation",
]


def index_rows() -> list[list[str]]:
    text = (REPO_ROOT / "README.md").read_text()
    section = text.split("## Paper ↔ code ↔ notebook", 1)[1].split("\n## ", 1)[0]
    rows = [line.split(" | ") for line in section.splitlines() if line.startswith("| ") and "`pwn_lib/" in line]
    return [[cell.strip(" |") for cell in row] for row in rows]


def test_the_index_lists_every_equation_of_the_paper():
    names = " ".join(row[0] for row in index_rows()).replace("\\", "").replace("$", "")
    for required in REQUIRED:
        words = required.replace("-", " ").split()
        assert all(w.lower() in names.lower() or w in names.replace(" ", "") for w in words), required


@pytest.mark.parametrize("row", index_rows(), ids=lambda r: r[0][:40])
def test_every_named_function_exists(row):
    for module_path, names in re.findall(r"`(pwn_lib/\w+\.py)`: ([^;|]+)", row[2]):
        assert (REPO_ROOT / module_path).is_file(), module_path
        module = importlib.import_module(module_path[:-3].replace("/", "."))
        for name in re.findall(r"`([\w.]+)`", names):
            target = module
            for part in name.split("."):
                assert hasattr(target, part), f"{module_path} has no {name}"
                target = getattr(target, part)


@pytest.mark.parametrize("row", index_rows(), ids=lambda r: r[0][:40])
def test_every_notebook_section_exists(row):
    for number, section in re.findall(r"(\d\d), §(\d+)", row[3]):
        notebook = next((REPO_ROOT / "notebooks").glob(f"{number}_*.ipynb"))
        headings = [
            line
            for cell in json.loads(notebook.read_text())["cells"]
            if cell["cell_type"] == "markdown"
            for line in "".join(cell["source"]).splitlines()
            if line.startswith("## ")
        ]
        found = any(re.match(rf"## {section}(\.|\s·|\s)", h) for h in headings)
        assert found, f"{notebook.name} has no section {section}"
