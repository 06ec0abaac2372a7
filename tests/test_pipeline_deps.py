"""dvc.yaml names exactly the source files each stage runs, so a change to any of them reruns that stage.

The files a stage runs are its script in stages/ and every midistyle module it
imports, directly or through other modules (imports inside functions count).
Its params name the keys the code reads (``mlflow`` is none of them: it only
says where runs are logged). The import graph of src/midistyle has no cycle (a cycle hidden by an import
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


# ---------------------------------------------------------------- params
# The modules holding each stage's own code: the other modules a stage imports
# read no params on its path (transfer imports extract.py only for its readers).
STAGE_MODULES = {
    "download": ["download.py"],
    "extract": ["extract.py"],
    "train_vae": ["train.py"],
    "train_classifier": ["classifier.py"],
    "train_judge": ["judge.py"],
    "tune_transfer": ["tuning.py"],
    "transfer": ["transfer.py"],
    "evaluate": ["evaluate.py", "report.py", "audio.py"],
}
# Properties of the params objects, and the keys they are computed from.
DERIVED = {("data", "styles"): [("data", "profile"), ("data", "profiles")]}


def _chain(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> list[str]:
    """The attribute names read after ``node``: ``params.transfer.methods`` -> [transfer, methods]."""
    names = []
    while isinstance(parents.get(node), ast.Attribute):
        node = parents[node]
        names.append(node.attr)
    return names


def _aliases(tree: ast.AST) -> dict[str, str]:
    """Names bound to a params section in a module (``tp = params.transfer``) -> the section.

    A function of the same module taking a parameter of that name is taken to
    receive that section (``def grid_of(method, tp)``).
    """
    found = {}
    for node in ast.walk(tree):
        if (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
                and isinstance(node.value, ast.Attribute) and isinstance(node.value.value, ast.Name)
                and node.value.value.id == "params"):
            found[node.targets[0].id] = node.value.attr
    return found


def params_read(path: Path) -> set[tuple[str, ...]]:
    """(section,) or (section, key) of every ``params.<section>[.<key>]`` read in a module."""
    tree = ast.parse(path.read_text())
    aliases = _aliases(tree)
    parents = {child: parent for parent in ast.walk(tree) for child in ast.iter_child_nodes(parent)}
    read = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Name):
            continue
        chain = _chain(node, parents)
        if node.id == "params" and chain:
            if len(chain) == 1 and chain[0] in aliases.values() and isinstance(parents[parents[node]], ast.Assign):
                continue  # bound to a name: counted by what is read through it
            read.add(tuple(chain[:2]))
        elif node.id in aliases and chain:
            read.add((aliases[node.id], chain[0]))
    return {k for key in read for k in DERIVED.get(key, [key])}


def declared_params(stage: str) -> set[tuple[str, ...]]:
    return {tuple(p.split(".")) for p in STAGES[stage].get("params", [])}


def covered(key: tuple[str, ...], declared: set[tuple[str, ...]]) -> bool:
    return any(key[: len(d)] == d for d in declared)


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_params_are_the_keys_its_code_reads(stage):
    declared = declared_params(stage)
    read = set().union(*(params_read(ROOT / "src" / "midistyle" / m) for m in STAGE_MODULES[stage]))
    missing = sorted(".".join(k) for k in read if not covered(k, declared))
    assert not missing, f"dvc.yaml stage {stage}: params read but not declared: {missing}"
    unread = sorted(".".join(d) for d in declared if not any(covered(k, {d}) or covered(d, {k}) for k in read))
    assert not unread, f"dvc.yaml stage {stage}: params declared but not read: {unread}"


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_no_stage_depends_on_mlflow_settings(stage):
    """mlflow.* says where runs are logged; no output records it (see train.stage_checkpoint)."""
    assert not [p for p in STAGES[stage].get("params", []) if p.split(".")[0] == "mlflow"]


def test_params_read_follows_aliases():
    read = params_read(ROOT / "src" / "midistyle" / "tuning.py")
    assert ("transfer", "methods") in read and ("transfer",) not in read


# ---------------------------------------------------------------- paths
def layout_paths() -> dict[str, str]:
    from midistyle import layout

    return {name: value.as_posix() for name, value in vars(layout).items() if isinstance(value, Path)}


def _out_names(entries: list) -> set[str]:
    return {next(iter(e)) if isinstance(e, dict) else e for e in entries}


def test_dvc_yaml_spells_the_paths_of_midistyle_layout():
    known = set(layout_paths().values())
    spelled = set()
    for stage in STAGES.values():
        spelled |= {d for d in stage["deps"] if not d.endswith(".py")}
        spelled |= _out_names(stage.get("outs", [])) | _out_names(stage.get("metrics", []))
        spelled |= _out_names(stage.get("plots", []))
    assert sorted(spelled - known) == []
    assert sorted(known - spelled) == ["models/tmp/vae-last.pt"]  # the only path that is no DVC out


def test_train_paths_default_to_the_layout():
    from midistyle import layout
    from midistyle.train import Paths

    assert Paths() == Paths(layout.SHARDS, layout.VAE, layout.TRAIN_METRICS, layout.TRAIN_CURVES, layout.VAE_LAST)


def test_each_path_is_spelled_once_in_src():
    spelled = {}
    for path in sorted((ROOT / "src" / "midistyle").glob("*.py")):
        if path.name in ("layout.py", "ablation.py"):  # ablation reads DVC's metric keys
            continue
        for value in layout_paths().values():
            if f'"{value}"' in path.read_text():
                spelled.setdefault(value, []).append(path.name)
    assert spelled == {}
