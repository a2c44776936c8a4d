"""The layers of ARCHITECTURE.md hold: the import contract in pyproject.toml passes, covers every core module, and
fails when a core module imports storage."""

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
PACKAGES = ("vidgen", "storage", "jobs", "cluster")


def _lint(cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=cwd, capture_output=True, text=True, timeout=120,
                          env={"PATH": str(LINT_IMPORTS.parent), "PYTHONPATH": str(cwd)})


def test_the_import_contract_is_kept():
    result = _lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 kept, 0 broken" in result.stdout


def test_every_core_module_is_under_the_core_contract():
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    core = next(c for c in contracts if c["name"].startswith("The model core"))
    modules = {f"vidgen.{p.stem}" for p in (ROOT / "vidgen").glob("*.py") if p.stem != "__init__"}
    assert modules == set(core["source_modules"])


def test_a_core_module_importing_storage_breaks_the_contract(tmp_path):
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("shipped_models"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    model = tmp_path / "vidgen" / "model.py"
    model.write_text(model.read_text() + "\nfrom storage.objectstore import ObjectStore  # noqa\n")
    result = _lint(tmp_path)
    assert result.returncode != 0
    assert "vidgen.model -> storage.objectstore" in result.stdout


def _import_cycles(graph) -> list[list[str]]:
    """The strongly connected components of more than one module in an import graph (Tarjan), each an import
    circle; lazy imports inside functions count, as they do for the layers contract."""
    edges = {m: sorted(graph.find_modules_directly_imported_by(m)) for m in sorted(graph.modules)}
    index, low, on_stack, stack, cycles = {}, {}, set(), [], []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in edges.get(module, ()):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = []
            while not component or component[-1] != module:
                component.append(stack.pop())
                on_stack.discard(component[-1])
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in edges:
        if module not in index:
            visit(module)
    return cycles


def test_no_module_imports_itself_through_others():
    import grimp

    assert _import_cycles(grimp.build_graph(*PACKAGES)) == []


def test_the_cycle_finder_finds_a_planted_circle(tmp_path, monkeypatch):
    import grimp

    package = tmp_path / "circle"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from circle import b  # noqa\n")
    (package / "b.py").write_text("def f():\n    from circle import a  # noqa\n")
    (package / "c.py").write_text("from circle import a  # noqa\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert _import_cycles(grimp.build_graph("circle", cache_dir=None)) == [["circle.a", "circle.b"]]
