"""Does the judge's verdict rest on the hands, which a listener cannot hear?

The judge is a panel of two members (midistyle.judge): ``hands`` reads the two
hands apart, ``heard`` reads them merged. Two measurements, test pieces only:

1. Each member, and the panel, on every style's real test windows (a seeded
   sample), as written, with every note moved into the left hand, and with
   every note moved into the right (same pitches and times: what is heard is
   unchanged).
2. On every window of the transfer stage's outputs, per method and direction,
   the share each member judges the target style and the share the panel
   does (both members).

Two members equally accurate on real windows that disagree on a direction's
transfers mean one judge alone would say more about itself than about the
music there; the panel counts a window only where they agree.

    python benchmarks/judge_hands.py [--json benchmarks/results/judge_hands.json] [--windows 4000]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from midistyle import layout
from midistyle.judge import agreed, judge_votes, load_judge
from midistyle.roll import LEFT, RIGHT, read_piece
from midistyle.shards import ShardIndex
from midistyle.transfer import audible_windows
from written import roll_spec, written


def one_hand(rolls: np.ndarray, hand: int) -> np.ndarray:
    """Windows (N, W, 2, 2, P) with both hands' cells merged into ``hand`` and the other hand silent."""
    out = np.zeros_like(rolls)
    out[:, :, hand] = rolls[:, :, RIGHT] | rolls[:, :, LEFT]
    return out


def moved_windows(panel, index: ShardIndex, per_style: int) -> list[dict]:
    """Measurement 1: each member's and the panel's verdicts on real test windows, as written and moved into one hand."""
    test = index.load_split("test")
    styles = index.styles
    rng = np.random.default_rng(0)
    rows = []
    for i, style in enumerate(styles):
        mine = np.nonzero(test.style == i)[0]
        pick = np.sort(rng.choice(mine, size=min(per_style, len(mine)), replace=False))
        rolls, lengths = np.asarray(test.rolls[pick], bool), test.lengths[pick]
        for version, x in (("as written", rolls), ("all in the left hand", one_hand(rolls, LEFT)),
                           ("all in the right hand", one_hand(rolls, RIGHT))):
            votes = judge_votes(panel, x, lengths)
            for judge, said in (*votes.items(), ("panel", agreed(votes))):
                shares = np.bincount(said[said >= 0], minlength=len(styles)) / len(pick)
                rows.append({"style": style, "version": version, "judge": judge, "windows": int(len(pick)),
                             **{f"judged_{s}": float(v) for s, v in zip(styles, shares)}})
                print(f"{style:12s} {version:22s} {judge:6s} " + "  ".join(f"{s} {v:.3f}" for s, v in zip(styles, shares)))
    return rows


def judges_on_outputs(panel, styles: list[str]) -> list[dict]:
    """Measurement 2: per method and direction, the share of the outputs' audible windows each member, and the
    panel, calls the target (the reconstructions: the source's style)."""
    spec = roll_spec()
    names = [*panel.members, "panel"]
    counts: dict[tuple[str, str, str], np.ndarray] = {}
    for row, output, _, _ in written():
        windows = audible_windows(read_piece(output, spec), spec)
        if not windows:
            continue
        x, lengths = np.stack([w.roll for w in windows]), np.array([w.length for w in windows])
        target = styles.index(row["target_style"])
        votes = judge_votes(panel, x, lengths)
        said = [*votes.values(), agreed(votes)]
        key = (row["method"], row["source_style"], row["target_style"])
        counts[key] = counts.get(key, np.zeros(len(names) + 1)) + [*[(v == target).sum() for v in said], len(windows)]
    rows = []
    for (method, source, target), (*hits, n) in sorted(counts.items()):
        rows.append({"method": method, "direction": f"{source}_to_{target}", "windows": int(n),
                     **{name: float(h / n) for name, h in zip(names, hits)}})
        print(f"{method:18s} {source:>12s} -> {target:12s} "
              + "  ".join(f"{name} {h / n:.3f}" for name, h in zip(names, hits)))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", default="benchmarks/results/judge_hands.json")
    ap.add_argument("--windows", type=int, default=4000, help="real test windows per style moved (a seeded sample)")
    args = ap.parse_args()
    panel, _ = load_judge(layout.JUDGE)
    index = ShardIndex.open(layout.SHARDS)
    moved = moved_windows(panel, index, args.windows)
    outputs = judges_on_outputs(panel, index.styles)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"split": "test", "moved_real_windows": moved, "transfer_outputs": outputs},
                                          indent=1) + "\n")


if __name__ == "__main__":
    main()
