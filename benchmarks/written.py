"""What the benchmarks that read the transfer stage's outputs share: the roll layout and the written pieces.

Reads what `dvc repro` wrote: data/transfers (its manifest) and the sources in data/raw.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from midistyle import layout
from midistyle.model import load_vae, vae_spec
from midistyle.roll import RollSpec
from midistyle.transfer import read_manifest


def roll_spec() -> RollSpec:
    """The committed VAE's roll layout (pieces are read back with it)."""
    return vae_spec(load_vae(layout.VAE)[1])


def written(methods: tuple[str, ...] | None = None) -> Iterator[tuple[dict, Path, Path, bool]]:
    """Every output the transfer stage wrote (manifest rows with status ok; of ``methods``, or all), in the
    manifest's order: (row, output path, source path, True the first time this source comes up)."""
    seen: set[str] = set()
    for row in read_manifest(layout.TRANSFERS / "manifest.csv"):
        if row["status"] != "ok" or (methods is not None and row["method"] not in methods):
            continue
        first = row["source_file"] not in seen
        seen.add(row["source_file"])
        yield row, layout.TRANSFERS / row["output_file"], layout.RAW / row["source_file"], first


def group_means(measure: Callable[[Path], tuple[float, ...]], names: tuple[str, ...]) -> list[dict]:
    """``measure`` (a piece's path -> one value per name) of every written output and every source, averaged piece by
    piece per group ("METHOD: SOURCE -> TARGET", "source: STYLE"; ``nan`` values left out), groups sorted:
    rows of {"pieces": group, name: mean, ..., "count": pieces}."""
    groups: dict[str, list[tuple[float, ...]]] = {}
    for row, output, source, first in written():
        key = f"{row['method']}: {row['source_style']} -> {row['target_style']}"
        groups.setdefault(key, []).append(measure(output))
        if first:
            groups.setdefault(f"source: {row['source_style']}", []).append(measure(source))
    return [{"pieces": key, **{n: float(v) for n, v in zip(names, np.nanmean(groups[key], axis=0))},
             "count": len(groups[key])} for key in sorted(groups)]


def write_rows(path: str | Path, rows: list[dict]) -> None:
    """The rows of a test-piece benchmark as benchmarks/results JSON."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps({"split": "test", "rows": rows}, indent=1) + "\n")


def run_per_piece(doc: str, default_json: str, measure: Callable[[Path, RollSpec], tuple[float, ...]],
                  names: tuple[str, ...], line: Callable[[dict], str]) -> None:
    """The command line of a per-piece benchmark: :func:`group_means` of ``measure``, one printed ``line`` per
    group, and the rows written to ``--json`` (default ``default_json``)."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--json", default=default_json)
    args = ap.parse_args()
    spec = roll_spec()
    rows = group_means(lambda path: measure(path, spec), names)
    for r in rows:
        print(f"{r['pieces']:45s} {line(r)}")
    write_rows(args.json, rows)
