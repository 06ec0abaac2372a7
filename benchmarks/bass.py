"""Where the lowest voice of sources, reconstructions and transfers lies: is a transfer's bass lost, or in the style?

For every piece the transfer stage wrote (each method's transfers and the
reconstructions) and every test source, over its bars with any note: the share
of bars in which the left hand sounds, and the mean of each bar's lowest
sounding pitch (MIDI). Groups are averaged piece by piece. Reads what
`dvc repro` wrote (data/transfers and their sources in data/raw).

    python benchmarks/bass.py [--json benchmarks/results/bass.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from midistyle.roll import SOUNDING, RollSpec, read_piece
from written import roll_spec, written

LEFT = 1  # hand index of the left hand in a roll (T, hand, state, P)


def bass(path: Path, spec: RollSpec) -> tuple[float, float]:
    """(share of sounding bars with a left-hand note, mean lowest sounding MIDI pitch of those bars) of one piece."""
    piece = read_piece(path, spec)
    edges = list(piece.bar_starts) + [len(piece.roll)]
    bars = [piece.roll[lo:hi, :, SOUNDING] for lo, hi in zip(edges, edges[1:])]  # (steps, hand, P) each
    bars = [b for b in bars if b.any()]
    left = float(np.mean([b[:, LEFT].any() for b in bars]))
    lowest = float(np.mean([np.nonzero(b.any(axis=(0, 1)))[0].min() for b in bars])) + spec.pitch_low
    return left, lowest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", default="benchmarks/results/bass.json")
    args = ap.parse_args()
    spec = roll_spec()
    groups: dict[str, list[tuple[float, float]]] = {}
    for row, output, source, first in written():
        key = f"{row['method']}: {row['source_style']} -> {row['target_style']}"
        groups.setdefault(key, []).append(bass(output, spec))
        if first:
            groups.setdefault(f"source: {row['source_style']}", []).append(bass(source, spec))
    rows = []
    for key in sorted(groups):
        left, lowest = np.mean(groups[key], axis=0)
        rows.append({"pieces": key, "bars_with_left_hand": float(left), "lowest_pitch": float(lowest),
                     "count": len(groups[key])})
        print(f"{key:45s} bars with a left hand {left:.3f}  lowest pitch of a bar {lowest:.1f}")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"split": "test", "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
