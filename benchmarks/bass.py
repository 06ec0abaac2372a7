"""Where the lowest voice of sources, reconstructions and transfers lies: is a transfer's bass lost, or in the style?

For every piece the transfer stage wrote (each method's transfers and the
reconstructions) and every test source, over its bars with any note: the share
of bars in which the left hand sounds, and the mean of each bar's lowest
sounding pitch (MIDI). Groups are averaged piece by piece. Reads what
`dvc repro` wrote (data/transfers and their sources in data/raw).

    python benchmarks/bass.py [--json benchmarks/results/bass.json]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from midistyle.roll import LEFT, SOUNDING, RollSpec, read_piece
from written import run_per_piece



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
    run_per_piece(__doc__, "benchmarks/results/bass.json", bass, ("bars_with_left_hand", "lowest_pitch"),
                  lambda r: f"bars with a left hand {r['bars_with_left_hand']:.3f}  lowest pitch of a bar {r['lowest_pitch']:.1f}")


if __name__ == "__main__":
    main()
