"""What ``pyproject.toml`` declares is what ``src/sthinge`` imports, and the licence file matches the metadata."""

from __future__ import annotations

import ast
import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def _name(requirement: str) -> str:
    """The normalised distribution name of a requirement string (``"dask[array]>=1"`` -> ``"dask"``)."""
    return re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9._-]+", requirement).group()).lower()


def _imported_modules() -> set[str]:
    """Top-level modules imported anywhere in ``src/sthinge`` (also inside functions), less stdlib and sthinge."""
    found = set()
    for path in (ROOT / "src" / "sthinge").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return found - set(sys.stdlib_module_names) - {"sthinge", "__future__"}


def test_declared_dependencies_are_the_imported_ones():
    declared = {_name(r) for r in _pyproject()["project"]["dependencies"]}
    providers = packages_distributions()
    imported = set()
    for module in sorted(_imported_modules()):
        dists = {_name(d) for d in providers.get(module, [])}
        assert dists, f"`{module}` is imported in src but no installed distribution provides it"
        assert dists & declared, f"`{module}` is imported in src but none of {sorted(dists)} is declared"
        imported |= dists & declared
    assert declared == imported, f"declared but never imported in src: {sorted(declared - imported)}"


def test_license_file_matches_the_metadata():
    project = _pyproject()["project"]
    assert project["license"] == "BSD-3-Clause"
    assert project["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("BSD 3-Clause License")
    assert "Neither the name of the copyright holder" in text  # the third clause
