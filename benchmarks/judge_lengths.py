"""Does the judge hear style or window length? Real full-length test windows cut shorter, judged.

Each style's real test windows that fill the whole window (a seeded sample) are
cut to each ``--lengths`` value (the steps past it cleared, the length passed
to the judge as for a window that ends there) and judged by the panel (both
members agree: :func:`midistyle.judge.judge_verdicts`). A judge of style gives
a window its style at every length; a judge that learnt one style's window
length calls any window of that length that style. Also printed: each style's
share of training windows of each length (what the judge could learn from).

    python benchmarks/judge_lengths.py [--judge models/judge.pt] [--windows 600] [--lengths 32 24 16 8]
                                       [--json benchmarks/results/judge_lengths.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from midistyle import layout
from midistyle.judge import judge_verdicts, load_judge
from midistyle.shards import ShardIndex


def train_lengths(index: ShardIndex) -> tuple[np.ndarray, np.ndarray]:
    """(style, length) of every training window, read from the shards without painting their rolls."""
    parts = []
    for shard in index.shards:
        if shard["split"] == "train":
            with np.load(index.root / shard["file"], allow_pickle=False) as z:
                parts.append((z["style"], z["lengths"]))
    return tuple(np.concatenate([p[k] for p in parts]) for k in range(2))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--judge", default=str(layout.JUDGE))
    ap.add_argument("--windows", type=int, default=600, help="full-length test windows per style (a seeded sample)")
    ap.add_argument("--lengths", type=int, nargs="+", default=[32, 24, 16, 8], help="steps each window is cut to")
    ap.add_argument("--json", default="benchmarks/results/judge_lengths.json")
    args = ap.parse_args()
    panel, _ = load_judge(args.judge)
    index = ShardIndex.open(layout.SHARDS)
    W = index.spec.window_steps
    if any(not 1 <= n <= W for n in args.lengths):
        raise SystemExit(f"--lengths: each in 1..{W} (the window's steps)")
    test = index.load_split("test")
    train = train_lengths(index)
    rng = np.random.default_rng(0)
    rows = []
    print("| style | windows | training windows of 8 steps or fewer | training windows full | "
          + " | ".join(f"cut to {n}: judged" for n in args.lengths) + " |")
    print("|---|---:|---:|---:|" + "---|" * len(args.lengths))
    for s, style in enumerate(index.styles):
        full = np.nonzero((test.style == s) & (test.lengths == W))[0]
        full = np.sort(rng.choice(full, min(args.windows, len(full)), replace=False))
        lens = train[1][train[0] == s]
        row = {"style": style, "windows": int(len(full)), "train_short_share": float(np.mean(lens <= 8)),
               "train_full_share": float(np.mean(lens == W)), "verdicts": {}}
        for n in args.lengths:
            rolls = test.rolls[full].copy()
            rolls[:, n:] = False
            v = judge_verdicts(panel, rolls, np.full(len(full), n))
            row["verdicts"][str(n)] = {other: float(np.mean(v == k)) for k, other in enumerate(index.styles)}
        rows.append(row)
        cells = [", ".join(f"{o} {p:.2f}" for o, p in row["verdicts"][str(n)].items() if p >= 0.01)
                 for n in args.lengths]
        print(f"| {style} | {row['windows']} | {row['train_short_share']:.3f} | {row['train_full_share']:.3f} | "
              + " | ".join(cells) + " |")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"split": "test", "window_steps": W, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
