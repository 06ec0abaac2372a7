"""How reconstructions join their windows: notes sounding on over a window's start, held or struck again as in the source?

Every piece is decoded window by window, so a note that sounds on over a
window's start is struck again there unless the decoder's P(onset) of the
window's first frame is at most the hold threshold
(:func:`midistyle.transfer.tie_windows`). tune_transfer chooses that threshold
on its validation pieces (:func:`midistyle.tuning.choose_hold_threshold`); this
measures every value of ``transfer.hold_threshold_grid`` (and any others given)
on more of them, per style and pooled, with the committed models: the share of
such notes joined as in the source (*right*), and re-strikes per 100 notes
sounding on over a start, in the reconstructions and in the sources.

    python benchmarks/window_starts.py [--pieces 36] [--thresholds 0.5 0.7 0.9]
                                       [--json benchmarks/results/window_starts.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from midistyle import layout
from midistyle.config import load_params
from midistyle.transfer import StyleTransfer, select_pieces
from midistyle.tuning import hold_counts, source_windows


def main() -> None:
    params = load_params("params.yaml")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pieces", type=int, default=None,
                    help="validation pieces per style (default: every one; tune_transfer reads "
                         f"transfer.val_pieces_per_style = {params.transfer.val_pieces_per_style})")
    ap.add_argument("--thresholds", type=float, nargs="+", default=list(params.transfer.hold_threshold_grid))
    ap.add_argument("--json", type=Path, default=Path("benchmarks/results/window_starts.json"))
    args = ap.parse_args()
    torch.set_num_threads(2)
    model = StyleTransfer.load()
    pieces = select_pieces(layout.RAW, layout.SPLITS, model.styles, args.pieces, params.seed, "val")
    counts = {}  # style -> (thresholds, 6) window_start_decisions
    for style, files in pieces.items():
        counts[style] = hold_counts(model, source_windows(model, layout.RAW, files), args.thresholds)
    counts["all"] = sum(counts.values())
    out = []
    for group, c in counts.items():
        source = 100 * c[0, 4] / max(c[0, 5], 1)
        label = f"{group} ({len(pieces.get(group, [])) or sum(map(len, pieces.values()))} pieces)"
        print(f"{label}: {int(c[0, 5])} source notes sounding on over a start, struck again {source:.1f} in 100")
        for t, row in zip(args.thresholds, c):
            right, again = row[0] / max(row[1], 1), 100 * row[2] / max(row[3], 1)
            print(f"   hold at first-frame P(onset) <= {t:.2f}: right {right:.3f} of {int(row[1])}, "
                  f"struck again {again:.1f} in 100")
            out.append({"pieces": group, "hold_threshold": t, "right_share": round(float(right), 4),
                        "cells": int(row[1]), "restrikes_per_100": round(float(again), 2),
                        "source_restrikes_per_100": round(float(source), 2)})
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"split": "val", "pieces_per_style": args.pieces, "rows": out}, indent=1) + "\n")


if __name__ == "__main__":
    main()
