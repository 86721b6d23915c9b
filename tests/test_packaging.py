"""The two install routes (pip via pyproject.toml, conda via environment.yml) must agree."""

from __future__ import annotations

import re
import tomllib

import yaml

from pwn_lib.config import REPO_ROOT

# conda-forge spells a few packages differently from PyPI.
CONDA_TO_PYPI = {"pytorch": "torch", "pysoundfile": "soundfile"}
CONDA_ONLY = {"python", "pip"}


def _split(requirement: str, separator: str) -> tuple[str, str]:
    name, _, version = requirement.partition(separator)
    return re.sub(r"[-_.]+", "-", name.strip().lower()), version.strip()


def pyproject_pins() -> dict[str, str]:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    return dict(_split(req, "==") for req in project["dependencies"])


def conda_pins() -> dict[str, str]:
    env = yaml.safe_load((REPO_ROOT / "environment.yml").read_text())
    pins = {}
    for dep in env["dependencies"]:
        name, version = _split(dep, "=")
        if name not in CONDA_ONLY:
            pins[CONDA_TO_PYPI.get(name, name)] = version
    return pins


def test_every_pyproject_dependency_is_pinned_exactly():
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    loose = [req for req in project["dependencies"] if "==" not in req]
    assert not loose, f"pin these exactly in pyproject.toml: {loose}"
    assert "torch==2.13.0" in project["dependencies"], "torch must stay pinned to the CPU wheel 2.13.0"
    assert not any(req.startswith("torchaudio") for req in project["dependencies"])


def test_environment_yml_matches_pyproject():
    pip, conda = pyproject_pins(), conda_pins()
    assert set(pip) == set(conda), (
        f"only in pyproject.toml: {sorted(set(pip) - set(conda))}; "
        f"only in environment.yml: {sorted(set(conda) - set(pip))}"
    )
    differing = {name: (pip[name], conda[name]) for name in pip if pip[name] != conda[name]}
    assert not differing, f"versions differ (pyproject, environment.yml): {differing}"


def test_environment_yml_uses_conda_forge_only_and_python_311():
    env = yaml.safe_load((REPO_ROOT / "environment.yml").read_text())
    assert env["channels"] == ["conda-forge", "nodefaults"]
    assert "python=3.11" in env["dependencies"]
