"""Import a module of this repository as it is in another git revision (for before/after
measurements: scripts/paste_seam.py, scripts/detect_recall.py)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def module_at(revision: str, path: str) -> ModuleType:
    """The file `path` (e.g. src/ented_cli/faces/paste.py) at git `revision`, imported under a
    name of its own; its imports of the package resolve to the working tree."""
    source = subprocess.run(
        ["git", "show", f"{revision}:{path}"], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout
    name = f"{Path(path).stem}_at_{revision}".replace("~", "_").replace("^", "_")
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(name, loader=None))
    sys.modules[name] = module  # dataclasses look their module up there
    exec(compile(source, f"{revision}:{path}", "exec"), module.__dict__)
    return module
