"""Pitch-class entropy of sources, reconstructions and transfers, measured three ways: is its gap closed a style figure?

The evaluate stage's ``pitch_class_entropy`` (:func:`midistyle.musicstats.music_stats`)
is the entropy of the pitch classes of a whole piece's note starts. The plug-in
entropy of a histogram grows with the number of notes it counts, and the
default profile's styles differ in length (chorales about 15 bars, mass
movements about 40) and in density (4.6 against 1.3 note starts per beat). So
the same statistic is also measured

* per 8-bar excerpt (averaged over a piece's excerpts): length no longer counts,
  density still does;
* per block of ``N`` consecutive note starts (``--blocks``; averaged over a
  piece's whole blocks): every estimate counts the same number of notes.

For each measure: the mean over the test pieces of each style, over their
reconstructions, and over each direction's transfers (``--method``), with the
transfer's gap closed (:func:`midistyle.musicstats.gap_closed`). Reads what
`dvc repro` wrote (data/transfers and their sources in data/raw).

    python benchmarks/pitch_class_entropy.py [--method attribute_search] [--blocks 32 64 128]
                                             [--json benchmarks/results/pitch_class_entropy.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from midistyle import musicstats as ms
from midistyle.roll import ONSET, RollSpec, read_piece
from written import roll_spec, written

EXCERPT_BARS = 8


def measures(path: Path, spec: RollSpec, blocks: list[int]) -> dict[str, float]:
    """One piece's pitch-class entropy: whole piece, per 8-bar excerpt, per block of N note starts."""
    piece = read_piece(path, spec)
    roll, bars = piece.roll, list(piece.bar_starts) + [len(piece.roll)]
    out = {"piece": ms.music_stats(roll, piece.bar_starts, spec.steps_per_beat, spec.pitch_low)["pitch_class_entropy"]}
    classes = ms.pitch_classes(spec.n_pitches, spec.pitch_low)
    excerpts = []
    for i in range(0, len(bars) - 1, EXCERPT_BARS):
        starts = roll[bars[i]:bars[min(i + EXCERPT_BARS, len(bars) - 1)], :, ONSET].any(axis=1)  # (steps, P)
        if starts.any():
            excerpts.append(ms.entropy_bits(np.bincount(classes[np.nonzero(starts)[1]], minlength=12)))
    out[f"{EXCERPT_BARS}_bars"] = float(np.mean(excerpts)) if excerpts else float("nan")
    notes = classes[np.nonzero(roll[:, :, ONSET].any(axis=1))[1]]  # pitch classes of note starts, in time order
    for n in blocks:
        whole = [ms.entropy_bits(np.bincount(notes[i:i + n], minlength=12))
                 for i in range(0, len(notes) - n + 1, n)]
        out[f"{n}_notes"] = float(np.mean(whole)) if whole else float("nan")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--method", default="attribute_search")
    ap.add_argument("--blocks", type=int, nargs="+", default=[32, 64, 128])
    ap.add_argument("--json", default="benchmarks/results/pitch_class_entropy.json")
    args = ap.parse_args()
    spec = roll_spec()
    groups: dict[str, list[dict]] = {}
    for row, output, source, first in written((args.method, "reconstruction")):
        if row["method"] == "reconstruction":
            key = f"reconstruction: {row['source_style']}"
        else:
            key = f"{row['source_style']} -> {row['target_style']}"
        groups.setdefault(key, []).append(measures(output, spec, args.blocks))
        if first:
            groups.setdefault(f"source: {row['source_style']}", []).append(measures(source, spec, args.blocks))
    kinds = ["piece", f"{EXCERPT_BARS}_bars", *[f"{n}_notes" for n in args.blocks]]
    mean = {k: {m: ms.nanmean([r[m] for r in rows]) for m in kinds} for k, rows in groups.items()}
    print("| pieces | " + " | ".join(kinds) + " |")
    print("|---|" + "---:|" * len(kinds))
    for key in sorted(mean):
        print(f"| {key} | " + " | ".join(f"{mean[key][m]:.3f}" for m in kinds) + " |")
        if " -> " in key:
            src, tgt = key.split(" -> ")
            gaps = {m: ms.gap_closed(mean[f"source: {src}"][m], mean[key][m], mean[f"source: {tgt}"][m]) for m in kinds}
            mean[key]["gap_closed"] = gaps
            print(f"| ... gap closed | " + " | ".join(f"{gaps[m]:.2f}" for m in kinds) + " |")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"split": "test", "method": args.method, "means": mean}, indent=1) + "\n")


if __name__ == "__main__":
    main()
