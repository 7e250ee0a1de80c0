"""Every third-party module the code imports is declared in pyproject.toml: the platform's (rft_ray/,
analysis/, experiments/) as a runtime dependency, the tests' and benchmarks' as a runtime or `dev` one. A
fresh `pip install -e '.[dev]'` (what `./dev` and CI do) then has everything, so no test is skipped or fails
for a package that merely happened to be installed."""
from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python 3.10: the TOML reader pip vendors (pip is in every virtual environment)
    from pip._vendor import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PLATFORM = ("rft_ray", "analysis", "experiments")
SUPPORT = ("tests", "benchmarks")


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_names(requirements: list[str]) -> set[str]:
    return {_normalise(re.match(r"[A-Za-z0-9_.-]+", r).group(0)) for r in requirements}


def _third_party_imports(folders: tuple[str, ...]) -> dict[str, str]:
    """Top-level module -> the first file importing it, for every import (also inside functions) that is
    neither the standard library nor the project's own code."""
    local = {p.stem for folder in (*PLATFORM, *SUPPORT) for p in (ROOT / folder).glob("*.py")}
    local |= {*PLATFORM, *SUPPORT, "pip"}  # the project's folders (`from tests.x import y`); pip, for tomli
    found: dict[str, str] = {}
    for folder in folders:
        for path in sorted((ROOT / folder).rglob("*.py")):
            if "fixtures" in path.relative_to(ROOT).parts:
                continue  # a fixture's provenance script (make_golden.py) runs once, in the reference's own venv
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and not node.level:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    if top not in sys.stdlib_module_names and top not in local:
                        found.setdefault(top, str(path.relative_to(ROOT)))
    return found


def _undeclared(imports: dict[str, str], declared: set[str]) -> list[str]:
    distributions = importlib.metadata.packages_distributions()
    missing = []
    for module, where in sorted(imports.items()):
        provided_by = {_normalise(d) for d in distributions.get(module, [])}
        if not provided_by & declared:
            missing.append(f"{module} (imported by {where}; installed from {sorted(provided_by) or 'nothing'})")
    return missing


def test_every_imported_package_is_declared():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = _requirement_names(project["dependencies"])
    dev = _requirement_names(project["optional-dependencies"]["dev"])
    platform = _third_party_imports(PLATFORM)
    support = _third_party_imports(SUPPORT)
    assert {"torch", "ray", "scipy"} <= set(platform) and {"pytest", "hypothesis"} <= set(support)  # it scans
    assert _undeclared(platform, runtime) == [], "declare these in pyproject.toml's dependencies"
    assert _undeclared(support, runtime | dev) == [], "declare these in pyproject.toml's dev extra"
