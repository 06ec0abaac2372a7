"""Load a script of ``benchmarks/`` as a module, so tests can check its measures on hand-made input."""

import importlib.util
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_benchmark(name: str, monkeypatch=None):
    """``benchmarks/<name>.py`` as a module. With ``monkeypatch``, ``benchmarks/`` is on ``sys.path`` while the test
    runs (for a script that imports its neighbours: ``valsearch``, ``written``)."""
    if monkeypatch is not None:
        monkeypatch.syspath_prepend(str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
