"""Modules import in one direction: read from the source (ast), function-level imports included.

``LAYERS`` is the README's "Modules import in one direction" line as data, bottom first. A module may import
modules of its own layer or of any layer below, never one above, and the imports have no cycle. A package
(``listening``) counts as one module of its layer; the package's ``__init__`` sits with ``config``.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

from pwn_lib.config import REPO_ROOT

PACKAGE = REPO_ROOT / "pwn_lib"

LAYERS: list[tuple[str, ...]] = [
    ("config",),
    ("audio", "data", "corpus_tools", "features", "feature_cache", "integrity", "artifacts", "distributed", "_fast"),
    ("distributions", "flows", "layers", "sizes"),
    ("fast_paths",),
    ("wavenet", "student"),
    ("distill", "losses", "metrics", "phones", "speakers"),
    ("vocoders", "toys"),
    ("trainer",),
    ("evaluate", "heldout", "ablation", "listening", "classroom"),
    ("beyond",),
    ("train",),
]
PACKAGE_INIT = "__init__"  # pwn_lib/__init__.py: imports config only
LAYER = {name: i for i, layer in enumerate(LAYERS) for name in layer} | {PACKAGE_INIT: 0}


def module_name(path: Path) -> str:
    """``pwn_lib/listening/build.py`` -> ``listening.build``; ``pwn_lib/__init__.py`` -> ``__init__``."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def top(module: str) -> str:
    """The unit the layering lists: a top-level module, or the package a submodule belongs to."""
    return module.split(".")[0]


def resolve_target(path: Path, imported: str, names: list[str], level: int) -> list[str]:
    """The pwn_lib modules an import statement in ``path`` names (``from pwn_lib import x`` may name a module)."""
    if level:  # relative: from the importing file's package, one package up per extra dot
        package = path.parent.relative_to(PACKAGE).parts
        package = package[: len(package) - (level - 1)]
        imported = ".".join([*package, imported] if imported else package)
    elif imported == "pwn_lib" or imported.startswith("pwn_lib."):
        imported = imported[len("pwn_lib.") :] if imported != "pwn_lib" else ""
    else:
        return []
    found = []
    for name in names or [None]:
        candidate = f"{imported}.{name}" if imported and name else (name or imported)
        as_path = PACKAGE / candidate.replace(".", "/")
        if name and (as_path.with_suffix(".py").is_file() or (as_path / "__init__.py").is_file()):
            found.append(candidate)
        else:
            found.append(imported or PACKAGE_INIT)
    return found


def imports(path: Path) -> set[str]:
    """Every pwn_lib module ``path`` imports, at module level or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            found.update(resolve_target(path, node.module or "", [a.name for a in node.names], node.level))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                found.update(resolve_target(path, alias.name, [], 0))
    return found - {module_name(path)}


def graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    return {module_name(p): imports(p) for p in sorted(package.rglob("*.py"))}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every import cycle found by a depth-first search, each as the list of modules around it."""
    found, state = [], {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                found.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    return found


def upward(edges: dict[str, set[str]]) -> list[str]:
    """Every import of a module in a higher layer, as ``a (layer i) imports b (layer j)``."""
    bad = []
    for module, targets in sorted(edges.items()):
        for target in sorted(targets):
            here, there = LAYER[top(module)], LAYER[top(target)]
            if there > here:
                bad.append(f"{module} (layer {here}) imports {target} (layer {there})")
    return bad


def test_every_module_has_a_layer():
    unlisted = sorted({top(m) for m in graph()} - set(LAYER))
    assert not unlisted, f"add {unlisted} to LAYERS in tests/test_layering.py and to the README's import line"


def test_no_import_cycles():
    assert cycles(graph()) == []


def test_no_module_imports_one_above_it():
    assert upward(graph()) == []


def test_the_readme_states_this_layering():
    text = (REPO_ROOT / "README.md").read_text()
    match = re.search(r"Modules import in one direction[^:]*: (.*?)← notebooks", text, re.S)
    assert match, "README.md: keep the line 'Modules import in one direction: `config` ← ... ← notebooks'"
    stated = [tuple(re.findall(r"`([\w.]+)`", group)) for group in match.group(1).split("←")]
    assert stated == LAYERS, "the README's line and LAYERS must agree"


# The checks above must catch what they are for: run them on small packages written here.
@pytest.mark.parametrize(
    "files, wrong",
    [
        ({"config.py": "", "audio.py": "from pwn_lib.config import X\n"}, None),
        ({"config.py": "def f():\n    from pwn_lib import train\n", "train.py": ""}, "upward"),
        ({"audio.py": "import pwn_lib.data\n", "data.py": "from pwn_lib.audio import y\n"}, "cycle"),
        ({"wavenet.py": "from pwn_lib.student import S\n", "student.py": "from pwn_lib import wavenet\n"}, "cycle"),
        ({"config.py": "", "listening/__init__.py": "", "listening/a.py": "from .b import c\n"}, None),
        ({"config.py": "from pwn_lib.listening.store import x\n", "listening/__init__.py": ""}, "upward"),
    ],
)
def test_the_checks_catch_what_they_are_for(tmp_path, monkeypatch, files, wrong):
    for name, source in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(source)
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", tmp_path)
    edges = graph(tmp_path)
    assert bool(cycles(edges)) == (wrong == "cycle")
    assert bool(upward(edges)) == (wrong == "upward")
