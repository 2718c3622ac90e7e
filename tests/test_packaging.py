"""Reproducible installs: constraints.txt pins a tested version of every declared dependency, inside
the range that pyproject.toml declares."""

from __future__ import annotations

from pathlib import Path

import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]


def _pins() -> dict[str, Version]:
    pins = {}
    for line in (REPO / "constraints.txt").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[canonicalize_name(name)] = Version(version.strip())
    return pins


def test_every_declared_dependency_is_pinned_inside_its_range():
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    declared = [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["test"]]
    pins = _pins()
    for req in declared:
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is declared but not pinned in constraints.txt"
        assert req.specifier.contains(pins[name], prereleases=True), f"{req.name}=={pins[name]} is outside {req.specifier}"


def test_typer_and_its_parser_are_pinned_together():
    # typer decides which click the command line's usage errors come from (see atom_bench.cli)
    assert {"typer", "click"} <= set(_pins())
