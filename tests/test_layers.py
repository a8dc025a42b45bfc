"""core/ must never import the UI layer: import every core module in a fresh interpreter with
textual and rich made unimportable, and scan the sources for UI imports."""

import pathlib
import re
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
