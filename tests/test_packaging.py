"""The two ways to install savfi (pip/pyproject and conda/environment.yml) must name the same packages."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_pyproject_and_environment_yml_name_the_same_packages():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pip_names = {_name(r) for r in project["dependencies"]} | {_name(r) for r in project["optional-dependencies"]["dev"]}
    environment = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda_names = set()
    for entry in environment["dependencies"]:
        if isinstance(entry, dict):
            conda_names |= {_name(r) for r in entry["pip"]}
        elif _name(entry) not in {"python", "pip"}:
            conda_names.add(_name(entry))
    assert pip_names == conda_names, (sorted(pip_names - conda_names), sorted(conda_names - pip_names))


def test_lock_file_pins_every_runtime_dependency_and_the_cpu_torch():
    lock = {_name(line): line.strip() for line in (ROOT / "requirements.lock").read_text().splitlines() if line.strip() and not line.startswith("#")}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for requirement in project["dependencies"] + project["optional-dependencies"]["dev"]:
        name = _name(requirement)
        assert name in lock, f"{name} is a dependency but requirements.lock does not pin it"
        assert "==" in lock[name], lock[name]
    assert lock["torch"] == "torch==2.13.0"
