"""The layers hold: import-linter's contracts (pyproject.toml) and, module by module, the core
never loads textual."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "localr1"


def _module_names() -> list[str]:
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names.append(".".join(parts))
    return names


NON_TUI_MODULES = [name for name in _module_names()
                   if not name.startswith("localr1.tui") and name != "localr1.__main__"]


def test_the_import_contracts_hold():
    lint_imports = shutil.which("lint-imports", path=os.path.dirname(sys.executable))
    assert lint_imports, "import-linter is a test dependency: pip install -e '.[test]'"
    result = subprocess.run([lint_imports, "--no-cache"], cwd=ROOT, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_every_non_tui_module_is_listed():
    # The walk finds the sub-packages, so a new module is covered without editing this file.
    assert {"localr1.engine.llama_engine", "localr1.models.hub_resolve", "localr1.store",
            "localr1.cli.main", "localr1.batch"} <= set(NON_TUI_MODULES)


@pytest.mark.parametrize("module", NON_TUI_MODULES)
def test_module_does_not_load_textual(module):
    code = (f"import sys, importlib; importlib.import_module({module!r})\n"
            "loaded = sorted(m for m in sys.modules if m.split('.')[0] == 'textual')\n"
            "assert not loaded, loaded[:3]\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
