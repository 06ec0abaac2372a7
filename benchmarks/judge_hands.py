"""Does the judge's verdict rest on the hands, which a listener cannot hear?

Two measurements, test pieces only:

1. The committed judge on every style's real test windows (a seeded sample),
   as written, with every note moved into the left hand, and with every note
   moved into the right (same pitches and times: what is heard is unchanged).
2. A *hands-blind* judge: the same architecture, params (``judge``) and seed,
   trained the same way on the same windows, but reading the two hands merged
   into one (so it hears what a listener hears). Its accuracy on the real test
   windows, and beside the committed judge's, its verdicts on every window of
   the transfer stage's outputs (the share judged the target style, per method
   and direction).

Two judges equally accurate on real windows that disagree on a direction's
transfers mean that direction's strength says more about the judge than
about the music.

    python benchmarks/judge_hands.py [--json benchmarks/results/judge_hands.json] [--windows 4000]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from midistyle import layout
from midistyle.config import load_params
from midistyle.judge import JudgeConfig, RollJudge, judge_probs, load_judge, train_judge
from midistyle.roll import LEFT, RIGHT, read_piece
from midistyle.shards import ShardIndex
from midistyle.transfer import audible_windows
from written import roll_spec, written


class HandsBlindJudge(RollJudge):
    """The judge's network over (B, W, 1, 2, P): a cell sounds or starts when it does in either hand."""

    def __init__(self, cfg: JudgeConfig):
        super().__init__(cfg)
        self.convs[0] = torch.nn.Conv1d(2 * cfg.n_pitches, cfg.channels, kernel_size=5, padding=2)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        return super().forward(x.amax(dim=2, keepdim=True), lengths)


def one_hand(rolls: np.ndarray, hand: int) -> np.ndarray:
    """Windows (N, W, 2, 2, P) with both hands' cells merged into ``hand`` and the other hand silent."""
    out = np.zeros_like(rolls)
    out[:, :, hand] = rolls[:, :, RIGHT] | rolls[:, :, LEFT]
    return out


def moved_windows(judge, index: ShardIndex, per_style: int) -> list[dict]:
    """Measurement 1: the committed judge's verdicts on real test windows, as written and moved into one hand."""
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
            said = np.bincount(judge_probs(judge, x, lengths).argmax(-1), minlength=len(styles)) / len(pick)
            rows.append({"style": style, "version": version, "windows": int(len(pick)),
                         **{f"judged_{s}": float(v) for s, v in zip(styles, said)}})
            print(f"{style:12s} {version:22s} " + "  ".join(f"{s} {v:.3f}" for s, v in zip(styles, said)))
    return rows


def two_judges(judge, blind, styles: list[str]) -> list[dict]:
    """Measurement 2: per method and direction, the share of the outputs' audible windows each judge calls the
    target (the reconstructions: the source's style)."""
    spec = roll_spec()
    counts: dict[tuple[str, str, str], np.ndarray] = {}
    for row, output, _, _ in written():
        windows = audible_windows(read_piece(output, spec), spec)
        if not windows:
            continue
        x, lengths = np.stack([w.roll for w in windows]), np.array([w.length for w in windows])
        target = styles.index(row["target_style"])
        hits = [(judge_probs(j, x, lengths).argmax(-1) == target).sum() for j in (judge, blind)]
        key = (row["method"], row["source_style"], row["target_style"])
        counts[key] = counts.get(key, np.zeros(3)) + [*hits, len(windows)]
    rows = []
    for (method, source, target), (a, b, n) in sorted(counts.items()):
        rows.append({"method": method, "direction": f"{source}_to_{target}", "windows": int(n),
                     "committed_judge": float(a / n), "hands_blind_judge": float(b / n)})
        print(f"{method:18s} {source:>12s} -> {target:12s} committed judge {a / n:.3f}  hands-blind judge {b / n:.3f}")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", default="benchmarks/results/judge_hands.json")
    ap.add_argument("--windows", type=int, default=4000, help="real test windows per style moved (a seeded sample)")
    args = ap.parse_args()
    params = load_params("params.yaml")
    judge, _ = load_judge(layout.JUDGE)
    index = ShardIndex.open(layout.SHARDS)
    moved = moved_windows(judge, index, args.windows)
    t0 = time.perf_counter()
    blind, out = train_judge(index, params.judge, params.seed, make=HandsBlindJudge)
    test = out["metrics"]["test"]
    print(f"hands-blind judge: test accuracy {test['accuracy']:.4f} (balanced {test['balanced_accuracy']:.4f}), "
          f"trained in {time.perf_counter() - t0:.0f} s")
    outputs = two_judges(judge, blind, index.styles)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({
        "split": "test", "moved_real_windows": moved,
        "hands_blind_judge_test": {k: test[k] for k in ("accuracy", "balanced_accuracy", "windows")},
        "transfer_outputs": outputs}, indent=1) + "\n")


if __name__ == "__main__":
    main()
