"""Shared test support: load a script of ``experiments/`` as a module, without ``sys.path``.

The benchmarks and the report generator are scripts, not package modules; tests that check
their helpers (row schema, round combination, page generation) load them by file path.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ROOT / "experiments"


def load_script(name: str) -> ModuleType:
    """``experiments/<name>.py`` as a module (loaded once per process)."""
    key = f"experiments_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, EXPERIMENTS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]
