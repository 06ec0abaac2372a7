"""Re-struck held notes in the transfer stage's outputs and in their sources: the stutter of issue 9.

A re-strike is an onset on a key that also sounded the step before (the same
hand and pitch): a held note struck again. Pieces are decoded window by window,
so the count is split by where it happens: at a window's first step (where the
decoder cannot see what sounded before; :func:`midistyle.transfer.tie_windows`
ties such notes where the later window holds them) and elsewhere, and
elsewhere again into beat starts (where a chorale's voices repeat a note from
chord to chord) and the steps inside a beat. Rates are per
100 cells that go on sounding from the step before. Reads what `dvc repro`
wrote (data/transfers and their sources in data/raw).

    python benchmarks/restrikes.py [--json benchmarks/results/restrikes.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from midistyle.roll import ONSET, SOUNDING, read_piece
from midistyle.transfer import piece_windows
from written import roll_spec, written


PLACES = ("window_start", "elsewhere", "beat_start", "inside_beat")  # elsewhere = beat_start + inside_beat


def restrikes(roll: np.ndarray, window_starts: list[int], steps_per_beat: int) -> np.ndarray:
    """(4 :data:`PLACES`) x (re-strikes, cells sounding on from the step before)."""
    sounding = roll[:, :, SOUNDING]
    going_on = sounding & np.concatenate([np.zeros_like(sounding[:1]), sounding[:-1]])
    again = going_on & roll[:, :, ONSET]
    at_start = np.zeros(len(roll), bool)
    at_start[[s for s in window_starts if 0 < s < len(roll)]] = True
    on_beat = np.arange(len(roll)) % steps_per_beat == 0  # beats counted from the piece's start
    masks = (at_start, ~at_start, ~at_start & on_beat, ~at_start & ~on_beat)
    return np.array([[again[m].sum(), going_on[m].sum()] for m in masks])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", default="benchmarks/results/restrikes.json")
    args = ap.parse_args()
    spec = roll_spec()
    totals: dict[str, np.ndarray] = {}
    for row, output, source_path, first in written():
        source = read_piece(source_path, spec)
        starts = [w.start for w in piece_windows(source, spec)]
        keys = [(f"{row['method']}: {row['source_style']} -> {row['target_style']}", read_piece(output, spec))]
        if first:  # each source once
            keys.append((f"source: {row['source_style']}", source))
        for key, piece in keys:
            totals[key] = totals.get(key, 0) + restrikes(piece.roll, starts, spec.steps_per_beat)
    rows = []
    for key in sorted(totals):
        row = {"pieces": key}
        for place, (again, going_on) in zip(PLACES, totals[key].tolist()):
            row[f"{place}_per_100"] = 100 * again / max(going_on, 1)
            row[f"{place}_restrikes"] = int(again)
        rows.append(row)
        print(f"{key:45s} " + "  ".join(f"{p.replace('_', ' ')} {row[p + '_per_100']:5.1f}" for p in PLACES))
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"split": "test", "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
