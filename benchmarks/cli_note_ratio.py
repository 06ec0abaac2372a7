"""`midistyle transfer` as a user runs it, on real test pieces: how many notes come out per note in?

For the first N test pieces of each style (data/splits.json, sorted) the real
command runs in a subprocess (`midistyle transfer PIECE --to OTHER -o OUT`,
the pipeline's models and chosen settings) and the notes of input and output
are counted with pretty_midi. Prints the median output/source note-count
ratio per direction and overall (goal of issue 9: between 0.7 and 1.4), and
writes benchmarks/results/cli_note_ratio.json.

    python benchmarks/cli_note_ratio.py [--pieces 20] [--method attribute_search]
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pretty_midi


def note_count(path: Path) -> int:
    return sum(len(inst.notes) for inst in pretty_midi.PrettyMIDI(str(path)).instruments if not inst.is_drum)


def test_pieces(raw: Path, splits: Path, per_style: int) -> dict[str, list[str]]:
    styles = {row["file"]: row["style"] for row in csv.DictReader(open(raw / "manifest.csv"))}
    out: dict[str, list[str]] = {}
    for file in sorted(json.loads(splits.read_text())["test"]):
        out.setdefault(styles[file], [])
        if len(out[styles[file]]) < per_style:
            out[styles[file]].append(file)
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pieces", type=int, default=20, help="test pieces per style")
    ap.add_argument("--method", default="attribute_search")
    ap.add_argument("--raw", type=Path, default=Path("data/raw"))
    ap.add_argument("--splits", type=Path, default=Path("data/splits.json"))
    ap.add_argument("--json", type=Path, default=Path("benchmarks/results/cli_note_ratio.json"))
    args = ap.parse_args(argv)

    pieces = test_pieces(args.raw, args.splits, args.pieces)
    cli = Path(sys.executable).with_name("midistyle")
    ratios: dict[str, list[float]] = {}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for source, files in pieces.items():
            for target in (s for s in pieces if s != source):
                key = f"{source} -> {target}"
                for i, file in enumerate(files):
                    out = Path(tmp) / f"{source}-{target}-{i}.mid"
                    subprocess.run([str(cli), "transfer", str(args.raw / file), "--to", target, "--from", source,
                                    "--method", args.method, "-o", str(out)], check=True, capture_output=True)
                    ratios.setdefault(key, []).append(note_count(out) / max(note_count(args.raw / file), 1))
    every = [r for rs in ratios.values() for r in rs]
    result = {
        "method": args.method,
        "pieces_per_style": args.pieces,
        "median_ratio": float(np.median(every)),
        "directions": {k: {"median_ratio": float(np.median(v)), "pieces": len(v),
                           "ratio_p10_p90": [float(np.percentile(v, 10)), float(np.percentile(v, 90))]}
                       for k, v in ratios.items()},
        "seconds": round(time.perf_counter() - t0, 1),
    }
    for k, v in result["directions"].items():
        print(f"{k:30s} median output/source notes {v['median_ratio']:.2f} "
              f"(10th-90th percentile {v['ratio_p10_p90'][0]:.2f}-{v['ratio_p10_p90'][1]:.2f}, {v['pieces']} pieces)")
    print(f"all: median {result['median_ratio']:.2f} over {len(every)} transfers ({result['seconds']} s)")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
