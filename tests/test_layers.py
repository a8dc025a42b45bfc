"""core/ must never import the UI layer: import every core module in a fresh interpreter with
textual and rich made unimportable, and scan the sources for UI imports."""

import os
import pathlib
import re
import shutil
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent

PROBE = r"""
import importlib, pkgutil, sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('textual', 'rich', 'app', 'widgets'):
            raise ImportError('core imported UI module ' + name)
sys.meta_path.insert(0, Block())
import core
for info in pkgutil.walk_packages(core.__path__, 'core.'):
    importlib.import_module(info.name)
print('imported', sum(1 for _ in pkgutil.walk_packages(core.__path__, 'core.')))
"""


def test_core_imports_without_textual():
    proc = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "imported" in proc.stdout


def test_core_sources_do_not_name_ui_packages():
    pattern = re.compile(r"^\s*(from|import)\s+(textual|rich|app|widgets)\b", re.M)
    offenders = [str(p) for p in (ROOT / "core").rglob("*.py") if pattern.search(p.read_text())]
    assert offenders == []


# -- import-linter contracts (.importlinter; ARCHITECTURE.md) ---------------------------------
LINT_IMPORTS = pathlib.Path(sys.executable).with_name("lint-imports")


def _lint_imports(cwd: pathlib.Path) -> subprocess.CompletedProcess:
    # --no-cache: a cache written for one tree must not answer for another (the copy below)
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=cwd, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(cwd)})


def test_lint_imports():
    """Every contract in .importlinter holds: core never imports app/widgets/textual/rich,
    widgets never import app, no import cycle between siblings inside core."""
    proc = _lint_imports(ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 broken" in proc.stdout


def test_lint_imports_catches_a_cycle_and_a_ui_import(tmp_path):
    """The contracts can fail: on a copy of the tree, the model <-> text-syntax cycle this
    issue removed (core.lvm.textformat importing core.lvm.model again) and a core module
    importing textual each break a contract."""
    for name in ("core", "app", "widgets"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / ".importlinter").write_text((ROOT / ".importlinter").read_text())
    syntax = tmp_path / "core" / "lvm" / "textformat.py"
    syntax.write_text(syntax.read_text() + "\nfrom core.lvm.model import VGMetadata  # noqa\n")
    spaces = tmp_path / "core" / "spaces.py"
    spaces.write_text(spaces.read_text() + "\nimport textual  # noqa\n")
    proc = _lint_imports(tmp_path)
    assert proc.returncode != 0
    assert "2 broken" in proc.stdout, proc.stdout
    assert "core.spaces -> textual" in proc.stdout
    assert "No cycles are allowed in core.lvm" in proc.stdout
    assert ".textformat -> .model" in proc.stdout or ".model -> .textformat" in proc.stdout


def test_import_graph_script_draws_the_split_lvm_text_modules():
    """scripts/import_graph.py (ARCHITECTURE.md) prints DOT with the real edges: the VG writer
    sits on the model and the syntax, and the syntax imports neither."""
    proc = subprocess.run([sys.executable, "scripts/import_graph.py", "--depth", "3"], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    edges = set(re.findall(r'"([\w.]+)" -> "([\w.]+)"', proc.stdout))
    assert proc.stdout.startswith("digraph")
    assert ("core.lvm.writer", "core.lvm.model") in edges
    assert ("core.lvm.writer", "core.lvm.textformat") in edges
    assert ("core.lvm.model", "core.lvm.textformat") in edges
    assert not {e for e in edges if e[0] == "core.lvm.textformat" and e[1].startswith("core.lvm")}
    assert not {e for e in edges if e[0].startswith("core") and e[1].split(".")[0] in
                ("app", "widgets")}
