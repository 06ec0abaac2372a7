"""dvc.yaml names exactly the source files each stage runs, so a change to any of them reruns that stage.

The files a stage runs are its script in stages/ and every midistyle module it
imports, directly or through other modules (imports inside functions count).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def module_file(module: str) -> Path | None:
    path = ROOT / "src" / (module.replace(".", "/") + ".py")
    return path if path.exists() else None


def imported_modules(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "midistyle":
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names if module_file(f"{node.module}.{a.name}"))
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "midistyle")
    return found


def source_files(script: Path) -> set[str]:
    """The script and the midistyle modules it imports transitively, as repo-relative paths."""
    files, todo, seen = {script}, list(imported_modules(script)), set()
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        path = module_file(module)
        if path is not None and path.name != "__init__.py":
            files.add(path)
            todo.extend(imported_modules(path))
    return {p.relative_to(ROOT).as_posix() for p in files}


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_deps_name_exactly_the_source_files_it_runs(stage):
    declared = {d for d in STAGES[stage]["deps"] if d.endswith(".py")}
    needed = source_files(ROOT / "stages" / f"{stage}.py")
    assert declared == needed, (f"dvc.yaml stage {stage}: missing {sorted(needed - declared)}, "
                                f"not used {sorted(declared - needed)}")
