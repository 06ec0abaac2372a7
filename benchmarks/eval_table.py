"""Every transfer direction of one `metrics/eval.json` as a Markdown table (and, with --before, beside another run's).

The evaluate stage writes one figure per direction and method; a profile with four styles has twelve directions,
which is where a table reads better than the JSON. The table is for one method (attribute_search unless
--method); a second table gives every method's mean over the directions. Nothing is computed here: each cell is
a figure of the file.

    python benchmarks/eval_table.py metrics/eval.json
    python benchmarks/eval_table.py benchmarks/results/corpus_eval.json --before old_eval.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

COLUMNS = (  # (eval.json key, column title)
    ("plausible_strength", "plausible strength"),
    ("plausible_share", "plausible"),
    ("strength", "judge: target"),
    ("chroma_similarity", "chroma"),
    ("melody_f1", "melody kept"),
    ("rhythm_similarity", "rhythm"),
    ("gap_closed", "gap closed"),
)


def load(path: Path) -> dict:
    try:
        metrics = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SystemExit(f"{path}: cannot read it as JSON ({exc})") from None
    if not isinstance(metrics, dict) or not isinstance(metrics.get("transfer"), dict):
        raise SystemExit(f"{path}: not an evaluate stage's metrics (no 'transfer' section)")
    return metrics


def cell(value, before=None) -> str:
    def fmt(v) -> str:
        return "—" if not isinstance(v, (int, float)) or math.isnan(v) else f"{v:.3f}"
    return fmt(value) if before is None else f"{fmt(before)} → {fmt(value)}"


def label(key: str) -> str:
    return key.replace("_to_", " → ").replace("_", " ")


def direction_rows(metrics: dict, method: str, before: dict | None) -> list[str]:
    systems = metrics["transfer"]
    if method not in systems:
        raise SystemExit(f"--method {method}: not in the file (it has {', '.join(sorted(systems))})")
    now = systems[method]
    old = None if before is None else before["transfer"].get(method, {})  # a figure the other run lacks reads "—"

    def row(name: str, entry: dict, was: dict | None) -> str:
        return f"| {name} | " + " | ".join(
            cell(entry.get(k), None if was is None else was.get(k, math.nan)) for k, _ in COLUMNS) + " |"

    lines = ["| direction | " + " | ".join(t for _, t in COLUMNS) + " |", "|---" + "|---:" * len(COLUMNS) + "|"]
    for key in sorted(now["directions"]):
        was = None if old is None else old.get("directions", {}).get(key, {})
        lines.append(row(label(key), now["directions"][key], was))
    lines.append(row("**mean**", now["mean"], None if old is None else old.get("mean", {})))
    return lines


def mean_rows(metrics: dict) -> list[str]:
    lines = ["| method (mean over directions) | " + " | ".join(t for _, t in COLUMNS) + " |",
             "|---" + "|---:" * len(COLUMNS) + "|"]
    for method, entry in sorted(metrics["transfer"].items()):
        lines.append(f"| {method} | " + " | ".join(cell(entry["mean"].get(k)) for k, _ in COLUMNS) + " |")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("eval_json", type=Path)
    ap.add_argument("--before", type=Path, help="another eval.json: each cell reads before → now")
    ap.add_argument("--method", default="attribute_search")
    args = ap.parse_args(argv)
    metrics = load(args.eval_json)
    before = load(args.before) if args.before else None
    print("\n".join(direction_rows(metrics, args.method, before)))
    print()
    print("\n".join(mean_rows(metrics)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
