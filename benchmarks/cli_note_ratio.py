"""`midistyle transfer` as a user runs it, on real test pieces: how many notes come out per note in?

For the first N test pieces of each style (data/splits.json, sorted) the real
command runs in a subprocess (`midistyle transfer PIECE --to OTHER -o OUT`,
the pipeline's models and chosen settings) and the notes of input and output
are counted with pretty_midi. Prints the median output/source note-count
ratio per direction and overall (goal of issue 9: between 0.7 and 1.4), and
writes benchmarks/results/cli_note_ratio.json.

Two styles need not play as many notes in the same time: the Bach chorales
of the default profile move in quarters and eighths, Palestrina's masses (in
4/2) in halves and wholes. So beside the ratio it prints the styles' own
densities (notes per quarter note of the same test pieces; output and source
span the same quarters) and the output's density against the target's
median: 1 is an output as busy as a typical real piece of the target style.

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


def notes_and_quarters(path: Path) -> tuple[int, float]:
    """(notes, quarter notes from the start to the last note's end) of a MIDI file."""
    pm = pretty_midi.PrettyMIDI(str(path))
    notes = [n for inst in pm.instruments if not inst.is_drum for n in inst.notes]
    end = max((n.end for n in notes), default=0.0)
    return len(notes), pm.time_to_tick(end) / pm.resolution


def test_pieces(raw: Path, splits: Path, per_style: int) -> dict[str, list[str]]:
    styles = {row["file"]: row["style"] for row in csv.DictReader(open(raw / "manifest.csv"))}
    out: dict[str, list[str]] = {}
    for file in sorted(json.loads(splits.read_text())["test"]):
        out.setdefault(styles[file], [])
        if len(out[styles[file]]) < per_style:
            out[styles[file]].append(file)
    return out


def summary(values: list[float]) -> dict:
    return {"median": float(np.median(values)),
            "p10_p90": [float(np.percentile(values, 10)), float(np.percentile(values, 90))]}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pieces", type=int, default=20, help="test pieces per style")
    ap.add_argument("--method", default="attribute_search")
    ap.add_argument("--raw", type=Path, default=Path("data/raw"))
    ap.add_argument("--splits", type=Path, default=Path("data/splits.json"))
    ap.add_argument("--json", type=Path, default=Path("benchmarks/results/cli_note_ratio.json"))
    args = ap.parse_args(argv)

    pieces = test_pieces(args.raw, args.splits, args.pieces)
    density = {}  # source file -> its notes per quarter note
    for files in pieces.values():
        for file in files:
            n, quarters = notes_and_quarters(args.raw / file)
            density[file] = n / max(quarters, 1e-9)
    style_density = {s: float(np.median([density[f] for f in files])) for s, files in pieces.items()}
    cli = Path(sys.executable).with_name("midistyle")
    ratios: dict[str, list[float]] = {}
    against_target: dict[str, list[float]] = {}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for source, files in pieces.items():
            for target in (s for s in pieces if s != source):
                key = f"{source} -> {target}"
                for i, file in enumerate(files):
                    out = Path(tmp) / f"{source}-{target}-{i}.mid"
                    subprocess.run([str(cli), "transfer", str(args.raw / file), "--to", target, "--from", source,
                                    "--method", args.method, "-o", str(out)], check=True, capture_output=True)
                    n_in, _ = notes_and_quarters(args.raw / file)
                    n_out, _ = notes_and_quarters(out)
                    ratio = n_out / max(n_in, 1)
                    ratios.setdefault(key, []).append(ratio)
                    against_target.setdefault(key, []).append(ratio * density[file] / style_density[target])
    every = [r for rs in ratios.values() for r in rs]
    result = {
        "method": args.method,
        "pieces_per_style": args.pieces,
        "median_ratio": float(np.median(every)),
        "style_notes_per_quarter": style_density,
        "directions": {
            k: {"median_ratio": float(np.median(v)), "pieces": len(v),
                "ratio_p10_p90": [float(np.percentile(v, 10)), float(np.percentile(v, 90))],
                "styles_own_ratio": style_density[k.split(" -> ")[1]] / style_density[k.split(" -> ")[0]],
                "output_density_over_target_median": summary(against_target[k])}
            for k, v in ratios.items()},
        "seconds": round(time.perf_counter() - t0, 1),
    }
    for s, d in style_density.items():
        print(f"{s:12s} test pieces: median {d:.2f} notes per quarter note")
    for k, v in result["directions"].items():
        t = v["output_density_over_target_median"]
        print(f"{k:30s} median output/source notes {v['median_ratio']:.2f} "
              f"(10th-90th percentile {v['ratio_p10_p90'][0]:.2f}-{v['ratio_p10_p90'][1]:.2f}, {v['pieces']} pieces); "
              f"the styles' own ratio {v['styles_own_ratio']:.2f}; output density / target's median "
              f"{t['median']:.2f} ({t['p10_p90'][0]:.2f}-{t['p10_p90'][1]:.2f})")
    print(f"all: median {result['median_ratio']:.2f} over {len(every)} transfers ({result['seconds']} s)")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
