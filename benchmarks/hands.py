"""How the notes are shared between the hands in sources, reconstructions and transfers: is the melody's hand lost?

For every piece the transfer stage wrote (each method's transfers and the
reconstructions) and every test source: the right hand's share of the piece's
note onsets, and the share of its sounding bars in which the right hand sounds.
Groups are averaged piece by piece. Plausibility (density and polyphony of both
hands together) cannot see a piece whose notes have all moved into one hand;
this can. Reads what `dvc repro` wrote (data/transfers and their sources in
data/raw).

    python benchmarks/hands.py [--json benchmarks/results/hands.json]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from midistyle.roll import ONSET, RIGHT, SOUNDING, RollSpec, read_piece
from written import run_per_piece



def hands(path: Path, spec: RollSpec) -> tuple[float, float]:
    """(right hand's share of the onsets, share of sounding bars with a right-hand note) of one piece."""
    piece = read_piece(path, spec)
    onsets = piece.roll[:, :, ONSET].sum(axis=(0, 2))  # (hand,)
    edges = list(piece.bar_starts) + [len(piece.roll)]
    bars = [piece.roll[lo:hi, :, SOUNDING] for lo, hi in zip(edges, edges[1:])]  # (steps, hand, P) each
    bars = [b for b in bars if b.any()]
    right_bars = float(np.mean([b[:, RIGHT].any() for b in bars])) if bars else float("nan")
    return float(onsets[RIGHT] / max(onsets.sum(), 1)), right_bars


def main() -> None:
    run_per_piece(__doc__, "benchmarks/results/hands.json", hands, ("right_hand_onset_share", "bars_with_right_hand"),
                  lambda r: (f"right hand's share of onsets {r['right_hand_onset_share']:.3f}  "
                             f"bars with a right hand {r['bars_with_right_hand']:.3f}"))


if __name__ == "__main__":
    main()
