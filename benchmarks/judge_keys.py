"""Does the judge hear style or key? Real test windows moved to every key, judged.

Each style's real test windows (a seeded sample) are moved by every shift from
-5 to +6 semitones (notes leaving the pitch range dropped:
:func:`midistyle.augment.transpose`) and judged by each member and by the
panel (both members agree). A judge of style gives a window its style in every
key; a judge of key calls a piece moved a semitone another style. Also printed:
the share of each style's note starts on the five black keys (C#, E flat, F#,
A flat, B flat) - the masses keep to the white keys and B flat.

    python benchmarks/judge_keys.py [--judge models/judge.pt] [--windows 1000] [--json benchmarks/results/judge_keys.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from midistyle import layout
from midistyle.augment import transpose
from midistyle.judge import agreed, judge_votes, load_judge
from midistyle.roll import ONSET
from midistyle.shards import ShardIndex

SHIFTS = range(-5, 7)
BLACK = (1, 3, 6, 8, 10)  # C#, E flat, F#, A flat, B flat


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--judge", default=str(layout.JUDGE))
    ap.add_argument("--windows", type=int, default=1000, help="test windows per style (a seeded sample)")
    ap.add_argument("--json", default="benchmarks/results/judge_keys.json")
    args = ap.parse_args()
    panel, _ = load_judge(args.judge)
    index = ShardIndex.open(layout.SHARDS)
    test = index.load_split("test")
    rng = np.random.default_rng(0)
    rows = []
    for i, style in enumerate(index.styles):
        mine = np.nonzero(test.style == i)[0]
        pick = np.sort(rng.choice(mine, size=min(args.windows, len(mine)), replace=False))
        x, lengths = torch.from_numpy(np.asarray(test.rolls[pick])).float(), test.lengths[pick]
        starts = x[:, :, :, ONSET].sum(dim=(0, 1, 2)).numpy()  # (P,) note starts per pitch row
        pcs = np.bincount((index.spec.pitch_low + np.arange(len(starts))) % 12, weights=starts, minlength=12)
        black = float(pcs[list(BLACK)].sum() / max(pcs.sum(), 1))
        print(f"{style}: {len(pick)} windows, {black:.3f} of their note starts on the black keys")
        for shift in SHIFTS:
            moved = transpose(x, shift, shift).numpy() > 0.5
            votes = judge_votes(panel, moved, lengths)
            row = {"style": style, "shift": shift, "windows": int(len(pick)), "black_key_share": black,
                   "panel": float((agreed(votes) == i).mean()),
                   **{name: float((v == i).mean()) for name, v in votes.items()}}
            rows.append(row)
        print("  shift    " + " ".join(f"{r['shift']:+5d}" for r in rows if r["style"] == style))
        for who in ("panel", *votes):
            print(f"  {who:8s} " + " ".join(f"{r[who]:5.2f}" for r in rows if r["style"] == style))
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"split": "test", "judge": args.judge, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
