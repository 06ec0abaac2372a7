"""dvc.yaml names exactly the source files each stage runs, so a change to any of them reruns that stage.

The files a stage runs are its script in stages/ and every midistyle module it
imports, directly or through other modules (imports inside functions count).
The import graph of src/midistyle has no cycle (a cycle hidden by an import
inside a function is still a cycle).
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


def import_graph() -> dict[str, set[str]]:
    """Each midistyle module -> the midistyle modules it imports (anywhere in the file)."""
    graph = {}
    for path in sorted((ROOT / "src" / "midistyle").glob("*.py")):
        if path.name == "__init__.py":
            continue
        deps = {m for m in imported_modules(path) if module_file(m) and not m.endswith("__init__")}
        graph[f"midistyle.{path.stem}"] = deps - {"midistyle"}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None."""
    state: dict[str, str] = {}  # "open" while on the DFS stack, "done" after
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == "open":
                return stack[stack.index(dep):] + [dep]
            if dep not in state and (cycle := visit(dep)):
                return cycle
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_sees_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_the_import_graph_has_no_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, f"import cycle: {' -> '.join(cycle)}"
