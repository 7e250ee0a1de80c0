"""The house rules, checked on the source: floors import downwards only, no import circle, the engine knows
no Ray, MLflow or Optuna, and production files stay small enough to hold in one's head.

Every import counts, also those inside functions (a lazy import still ties two modules together).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("rft_ray", "analysis")
# A module may import modules of a lower floor, or of its own package. Floors run one way.
FLOORS = {
    "rft_ray.config": 0,
    "rft_ray.results": 1,
    "rft_ray.data": 2, "rft_ray.models": 2, "analysis": 2,
    "rft_ray.evaluation": 3,
    "rft_ray.training": 4,
    "rft_ray.specs": 5,
    "rft_ray.cost": 6, "rft_ray.tracking": 6, "rft_ray.attack": 6,
    "rft_ray.sweep": 7,
    "rft_ray.cli": 8,
}
PLATFORM_LIBRARIES = ("ray", "mlflow", "optuna")
MAX_LINES = 400


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _sources() -> dict[str, Path]:
    return {_module_name(p): p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))}


def _imports(path: Path, module: str) -> set[str]:
    """Every module `path` imports, anywhere in the file (absolute names; relative imports resolved)."""
    found: set[str] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # `from pkg import module`
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    sources = _sources()
    return {name: {i for i in _imports(path, name) if i in sources and i != name} for name, path in sources.items()}


def _floor(module: str) -> tuple[str, int]:
    for prefix, floor in sorted(FLOORS.items(), key=lambda item: -len(item[0])):
        if module == prefix or module.startswith(prefix + "."):
            return prefix, floor
    raise AssertionError(f"{module} belongs to no floor: add its package to FLOORS in {__file__}")


def test_every_module_has_a_floor(graph):
    for module in graph:
        if module != "rft_ray":  # the empty package marker
            _floor(module)


def test_floors_import_downwards_only(graph):
    upward = []
    for module, targets in graph.items():
        if module == "rft_ray":
            continue
        home, floor = _floor(module)
        for target in targets:
            if target == "rft_ray":
                continue
            where, level = _floor(target)
            if where != home and level >= floor:
                upward.append(f"{module} (floor {floor}) imports {target} (floor {level})")
    assert upward == []


def test_no_import_circle(graph):
    """Depth-first search for a back edge; the assertion names one circle when there is one."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state:
                circle = visit(target)
                if circle:
                    return circle
        path.pop()
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state:
            assert visit(module) is None, f"import circle: {' -> '.join(path)}"


def test_config_and_results_import_nothing_above_them(graph):
    for module, targets in graph.items():
        if module.startswith("rft_ray.config"):
            assert {t for t in targets if not t.startswith("rft_ray.config")} == set(), module
        if module.startswith("rft_ray.results"):
            assert {t for t in targets if not t.startswith(("rft_ray.config", "rft_ray.results"))} == set(), module


def test_analysis_reads_results_only(graph):
    for module, targets in graph.items():
        if module.startswith("analysis"):
            outside = {t for t in targets if not t.startswith(("analysis", "rft_ray.results", "rft_ray.config"))}
            assert outside == set(), f"{module} imports {sorted(outside)}"


@pytest.mark.parametrize("package", ["analysis", "rft_ray.config", "rft_ray.results", "rft_ray.data",
                                     "rft_ray.models", "rft_ray.evaluation", "rft_ray.training"])
def test_the_engine_and_analysis_know_no_platform_library(package):
    for name, path in _sources().items():
        if name == package or name.startswith(package + "."):
            used = {i.split(".")[0] for i in _imports(path, name)} & set(PLATFORM_LIBRARIES)
            assert used == set(), f"{name} imports {sorted(used)}"


def test_only_sweep_and_tracking_know_tune():
    for name, path in _sources().items():
        if any(i == "ray.tune" or i.startswith("ray.tune.") for i in _imports(path, name)):
            assert name.startswith(("rft_ray.sweep", "rft_ray.tracking")), f"{name} imports Ray Tune"


def test_production_files_are_small():
    long = {str(p.relative_to(ROOT)): n for p in _sources().values() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def test_the_checker_sees_a_circle_and_an_upward_import(tmp_path):
    """The rules above can fail: a made-up pair of modules importing each other is a circle and goes upward."""
    (tmp_path / "a.py").write_text("from rft_ray.sweep import driver\n")
    assert "rft_ray.sweep.driver" in _imports(tmp_path / "a.py", "rft_ray.config.a")
    assert _floor("rft_ray.config.a")[1] < _floor("rft_ray.sweep.driver")[1]
    relative = tmp_path / "b.py"
    relative.write_text("from . import fields\nfrom ..results import store\n")
    assert {"rft_ray.config.fields", "rft_ray.results.store"} <= _imports(relative, "rft_ray.config.b")
