"""Reproduce the sample run in a clean clone and compare its metrics with the expected ones.

CI (``tests/test_reproduce.py``) clones the committed repository into a
temporary folder, applies ``tests/expected/sample_overrides.yaml`` to its
``params.yaml``, runs ``dvc repro`` there and compares every numeric metric in
``metrics/*.json`` with ``tests/expected/sample_metrics.json``:

* each metric gets the tolerance of the first pattern in the expected file's
  ``tolerances`` that matches its key (``extract.windows.train.baroque``);
  a key that matches none is compared exactly;
* wall-clock keys are never compared: anything under a ``timing`` key and any
  name containing ``seconds``, ``per_second``, ``wall`` or ``rss``;
* a metric missing from the run, or one the expected file does not know, is a
  drift too.

Command line (from the repository root)::

    python -m midistyle.reproduce                     # sample run in a tmp clone, compare
    python -m midistyle.reproduce --update            # ... and rewrite the expected file
    python -m midistyle.reproduce --metrics-dir DIR   # compare (or --update from) an existing run
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

EXPECTED = Path("tests/expected/sample_metrics.json")
OVERRIDES = Path("tests/expected/sample_overrides.yaml")
_WALL_CLOCK = re.compile(r"seconds|per_second|wall|rss")


# ---------------------------------------------------------------- comparison
@dataclass(frozen=True)
class Tolerance:
    rel: float = 0.0
    abs: float = 0.0

    def allows(self, expected: float, actual: float) -> bool:
        if math.isnan(expected) or math.isnan(actual):
            return math.isnan(expected) and math.isnan(actual)
        return abs(actual - expected) <= self.abs + self.rel * abs(expected)

    def __str__(self) -> str:
        parts = [f"rel {self.rel:g}"] if self.rel else []
        parts += [f"abs {self.abs:g}"] if self.abs else []
        return " + ".join(parts) or "exact"


@dataclass(frozen=True)
class Drift:
    """One metric that differs from the expected file (or is missing on one side)."""

    key: str
    expected: float | None
    actual: float | None
    tolerance: Tolerance
    kind: str = "changed"  # changed | missing (expected, not in the run) | extra (in the run, not expected)

    @property
    def delta(self) -> str:
        if self.kind == "missing":
            return "missing from the run"
        if self.kind == "extra":
            return "not in the expected file"
        d = self.actual - self.expected
        rel = f" ({d / self.expected:+.2%})" if self.expected else ""
        return f"{d:+.6g}{rel}"


def is_wall_clock(key: str) -> bool:
    """Keys that measure time or memory: never compared."""
    parts = key.split(".")
    return "timing" in parts or any(_WALL_CLOCK.search(p) for p in parts)


def flatten_metrics(tree: Any, prefix: str = "") -> dict[str, float]:
    """Numeric leaves of nested dicts/lists as ``{"a.b.0": value}``; wall-clock keys dropped."""
    out: dict[str, float] = {}
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, list) else None
    if items is None:
        if isinstance(tree, (int, float)) and prefix and not is_wall_clock(prefix):
            out[prefix] = tree
        return out
    for k, v in items:
        out.update(flatten_metrics(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def tolerance_for(key: str, tolerances: dict[str, dict]) -> Tolerance:
    """The first pattern (fnmatch, in file order) matching ``key``; exact when none does."""
    for pattern, tol in tolerances.items():
        if fnmatch.fnmatchcase(key, pattern):
            return Tolerance(float(tol.get("rel", 0.0)), float(tol.get("abs", 0.0)))
    return Tolerance()


def compare_metrics(expected: dict, actual: dict, tolerances: dict[str, dict] | None = None) -> list[Drift]:
    """Every metric of ``expected`` and ``actual`` (nested or flat) outside its tolerance."""
    exp, act = flatten_metrics(expected), flatten_metrics(actual)
    drifts = []
    for key in sorted(exp.keys() | act.keys()):
        tol = tolerance_for(key, tolerances or {})
        if key not in act:
            drifts.append(Drift(key, exp[key], None, tol, "missing"))
        elif key not in exp:
            drifts.append(Drift(key, None, act[key], tol, "extra"))
        elif not tol.allows(float(exp[key]), float(act[key])):
            drifts.append(Drift(key, exp[key], act[key], tol))
    return drifts


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return str(value) if isinstance(value, int) else f"{value:.6g}"


def format_table(drifts: list[Drift], limit: int | None = None) -> str:
    """A plain-text table: metric, expected, actual, tolerance, delta (the first ``limit`` rows)."""
    rows = [("metric", "expected", "actual", "tolerance", "delta")]
    rows += [(d.key, _fmt(d.expected), _fmt(d.actual), str(d.tolerance), d.delta) for d in drifts[:limit]]
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    align = (str.ljust, str.rjust, str.rjust, str.ljust, str.ljust)  # numbers right-aligned
    lines = ["  ".join(pad(c, w) for pad, c, w in zip(align, r, widths, strict=True)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    kinds = {k: sum(d.kind == k for d in drifts) for k in ("changed", "missing", "extra")}
    shown = f", {len(rows) - 1} shown" if len(rows) - 1 < len(drifts) else ""
    lines.append(f"{len(drifts)} drifts: " + ", ".join(f"{n} {k}" for k, n in kinds.items()) + shown)
    return "\n".join(line.rstrip() for line in lines)


# ---------------------------------------------------------------- expected file
def read_metrics_dir(path: Path, names: list[str] | None = None) -> dict[str, Any]:
    """``{stem: content}`` of ``path/*.json`` (or only ``names``, when given and present)."""
    files = sorted(Path(path).glob("*.json"))
    return {f.stem: json.loads(f.read_text()) for f in files if names is None or f.stem in names}


def load_expected(path: Path = EXPECTED) -> dict:
    data = json.loads(Path(path).read_text())
    data.setdefault("tolerances", {})
    data.setdefault("metrics", {})
    return data


def _prune(tree: Any) -> Any:
    """``tree`` without wall-clock keys (what the expected file stores)."""
    if isinstance(tree, dict):
        return {k: _prune(v) for k, v in tree.items() if not is_wall_clock(str(k))}
    return tree


def write_expected(path: Path, metrics: dict[str, Any]) -> None:
    """Replace the expected metrics, keeping the file's notes and tolerances."""
    path = Path(path)
    data = load_expected(path) if path.exists() else {"tolerances": {"*": {"rel": 1e-6}}}
    data["metrics"] = {stem: _prune(content) for stem, content in sorted(metrics.items())}
    path.write_text(json.dumps(data, indent=2) + "\n")


# ---------------------------------------------------------------- the sample run
@dataclass
class SampleRun:
    root: Path  # the clone the pipeline ran in
    stages: list[str]  # every stage of dvc.yaml
    metric_names: list[str] = field(default_factory=list)  # stems of the metrics files those stages write
    seconds: float = 0.0


def _git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def clone(repo: Path, dest: Path, worktree: bool = False) -> Path:
    """``git clone`` of ``repo``'s HEAD; ``worktree``: then copy its uncommitted files over it.

    Pipeline outputs (the outs, metrics and plots of dvc.yaml) are never copied.
    """
    subprocess.run(["git", "clone", "--quiet", "--no-hardlinks", str(repo), str(dest)], check=True)
    if worktree:
        files = _git("ls-files", "-z", "--cached", "--others", "--exclude-standard", cwd=repo).split("\0")
        outputs = tuple(pipeline_outputs(repo))
        for rel in filter(None, files):
            if rel in outputs or rel.startswith(tuple(o + "/" for o in outputs)):
                continue
            src = repo / rel
            if src.is_file():
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dest / rel)
            else:  # deleted in the working tree
                (dest / rel).unlink(missing_ok=True)
    return dest


def deep_merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for k, v in override.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def apply_overrides(params_path: Path, overrides_path: Path) -> dict:
    """Merge the overrides file into ``params_path`` (nested keys; lists are replaced)."""
    params = yaml.safe_load(Path(params_path).read_text())
    merged = deep_merge(params, yaml.safe_load(Path(overrides_path).read_text()) or {})
    Path(params_path).write_text(yaml.safe_dump(merged, sort_keys=False))
    return merged


def _paths(entries: list) -> list[str]:
    return [next(iter(e)) if isinstance(e, dict) else e for e in entries or []]


def _stages(root: Path) -> dict[str, dict]:
    return yaml.safe_load((Path(root) / "dvc.yaml").read_text())["stages"]


def pipeline_outputs(root: Path) -> dict[str, str]:
    """Every path a stage of ``root/dvc.yaml`` writes -> that stage."""
    stages = _stages(root)
    return {out: name for name, st in stages.items()
            for out in _paths(st.get("outs")) + _paths(st.get("metrics")) + _paths(st.get("plots"))}


def metric_stems(root: Path, stage_names: list[str]) -> list[str]:
    """Stems of the JSON metrics files that ``stage_names`` write (``extract`` for metrics/extract.json)."""
    stages = _stages(root)
    return [Path(m).stem for n in stage_names for m in _paths(stages[n].get("metrics")) if m.endswith(".json")]


def repro_env(root: Path, scratch: Path) -> dict[str, str]:
    """The environment of ``dvc repro`` in a clone: this venv first, the clone's code, a tmp MLflow store."""
    env = dict(os.environ)
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = venv_bin + os.pathsep + env.get("PATH", "")
    # The venv's editable install points at the source checkout; the clone's code must win.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root / "src"), env.get("PYTHONPATH")]))
    uri = f"sqlite:///{scratch / 'mlflow.db'}"
    env.update(MIDISTYLE_MLFLOW_URI=uri, MLFLOW_TRACKING_URI=uri, DVC_NO_ANALYTICS="1",
               DVC_SITE_CACHE_DIR=str(scratch / "dvc-site-cache"), PYTHONHASHSEED="0")
    for who in ("AUTHOR", "COMMITTER"):
        env.setdefault(f"GIT_{who}_NAME", "midistyle reproduce")
        env.setdefault(f"GIT_{who}_EMAIL", "reproduce@midistyle.invalid")
    return env


def run_sample(repo: Path, workdir: Path, overrides: Path | None = None, worktree: bool = False,
               timeout: float = 1800, log=None) -> SampleRun:
    """Clone ``repo``, apply the sample overrides, ``dvc repro`` the whole pipeline; raises on failure."""
    repo, workdir = Path(repo).resolve(), Path(workdir)
    root = clone(repo, workdir / "repo", worktree)
    apply_overrides(root / "params.yaml", root / (overrides or OVERRIDES))
    stages = list(_stages(root))
    run = SampleRun(root, stages, metric_stems(root, stages))
    cmd = ["dvc", "repro"]
    t0 = time.perf_counter()
    # Its own process group, so that a timeout also stops the stage that is running.
    with subprocess.Popen(cmd, cwd=root, env=repro_env(root, workdir), stdout=log or subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, start_new_session=True) as proc:
        try:
            output, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise RuntimeError(f"`{' '.join(cmd)}` ran past {timeout:.0f} s in {root}") from None
    run.seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"`{' '.join(cmd)}` failed with status {proc.returncode} in {root}\n"
                           f"{(output or '')[-4000:]}")
    return run


# ---------------------------------------------------------------- command line
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m midistyle.reproduce", description=__doc__.split("\n\n")[0])
    ap.add_argument("--expected", type=Path, default=EXPECTED, help="expected metrics file (default: %(default)s)")
    ap.add_argument("--metrics-dir", type=Path, help="use an existing run's metrics instead of a new sample run")
    ap.add_argument("--update", action="store_true", help="rewrite the expected file from the run")
    ap.add_argument("--worktree", action="store_true", help="include uncommitted files in the clone")
    ap.add_argument("--keep", action="store_true", help="keep the temporary clone (its path is printed)")
    args = ap.parse_args(argv)

    names = scratch = None
    try:
        if args.metrics_dir is None:
            scratch = Path(tempfile.mkdtemp(prefix="midistyle-repro-"))
            run = run_sample(Path.cwd(), scratch, worktree=args.worktree, log=sys.stderr)
            print(f"ran {', '.join(run.stages)} in {run.seconds:.0f} s ({run.root})", file=sys.stderr)
            metrics_dir, names = run.root / "metrics", run.metric_names
        else:
            metrics_dir = args.metrics_dir
            if not metrics_dir.is_dir():
                raise SystemExit(f"{metrics_dir}: no such folder")
        actual = read_metrics_dir(metrics_dir, names)
        if args.update:
            write_expected(args.expected, actual)
            print(f"wrote {args.expected} ({', '.join(actual) or 'no metrics'})")
            return 0
        expected = load_expected(args.expected)
        drifts = compare_metrics(expected["metrics"], actual, expected["tolerances"])
        print(format_table(drifts) if drifts else f"all metrics match ({', '.join(actual)})")
        return 1 if drifts else 0
    finally:
        if scratch and not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
