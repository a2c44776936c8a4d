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
