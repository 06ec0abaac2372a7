"""Whole-piece texture of the transfers into one style, beside real pieces of that style and of their sources.

"Jazz -> classical gives scattered notes" was said of the rolls; this puts figures on it. For every MIDI file of a
group, with pretty_midi and the file's own beat grid:

* notes_per_beat, median_duration (beats) and short_share (notes of a 16th or less);
* span: the median over 4-beat windows of the highest minus the lowest pitch started in it (semitones);
* lone_share: notes that start while no other note sounds (nothing held, no chord);
* median_leap and big_leap_share: the top line (the highest note of each onset, either hand) and its successive
  intervals; the share of leaps larger than a fifth (7 semitones).

Groups (medians over their files): the real test pieces of the target style and of every source style, the target
style's reconstructions, and every method's transfers into the target (data/transfers/<method>/<source>_to_<target>).

    python benchmarks/texture_stats.py --target classical            # a corpus run's data/ in the current folder
    python benchmarks/texture_stats.py --data /elsewhere/data --target classical --json out.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pretty_midi

BIG_LEAP = 7  # semitones: larger than a fifth
FEATURES = ("notes_per_beat", "median_duration", "short_share", "span", "lone_share", "median_leap", "big_leap_share")


def texture(path: Path) -> dict[str, float] | None:
    """The features of one MIDI file (None: fewer than 8 beats or no pitched notes)."""
    pm = pretty_midi.PrettyMIDI(str(path))
    beats = pm.get_beats()
    notes = [n for inst in pm.instruments if not inst.is_drum for n in inst.notes]
    if len(beats) < 8 or not notes:
        return None
    step = beats[-1] - beats[-2]  # the grid stops at the last beat: go on at its pace past the last note's end
    beats = np.concatenate([beats, np.arange(beats[-1] + step, pm.get_end_time() + 2 * step, step)])
    to_beats = lambda t: np.interp(t, beats, np.arange(len(beats)))  # noqa: E731 - seconds -> beats on the file's grid
    start = to_beats(np.array([n.start for n in notes]))
    end = to_beats(np.array([n.end for n in notes]))
    pitch = np.array([n.pitch for n in notes])
    order = np.argsort(start, kind="stable")
    start, end, pitch = start[order], end[order], pitch[order]
    duration = end - start
    n_beats = int(np.ceil(start.max())) + 1
    window = (start // 4).astype(int)  # the 4-beat window each note starts in
    spans = [np.ptp(pitch[window == w]) for w in np.unique(window) if (window == w).sum() >= 2]
    eps = 1e-6
    # a note starts alone when no earlier-starting note still sounds and none starts with it (sorted by start: a
    # running maximum of the ends, O(n) memory, not an n x n matrix, as a piece may hold many thousands of notes)
    held_before = np.concatenate([[-np.inf], np.maximum.accumulate(end)[:-1]])
    count = np.unique(np.round(start / eps).astype(np.int64), return_counts=True)[1]
    alone_at_onset = np.repeat(count == 1, count)
    lone = (held_before <= start + eps) & alone_at_onset
    onset = np.round(start * 4) / 4  # 16th grid
    top = np.maximum.reduceat(pitch, np.unique(onset, return_index=True)[1])  # highest note of each onset
    leaps = np.abs(np.diff(top)) if len(top) > 1 else np.zeros(1)
    return {"notes_per_beat": len(notes) / n_beats, "median_duration": float(np.median(duration)),
            "short_share": float(np.mean(duration <= 0.25 + eps)), "span": float(np.median(spans)) if spans else 0.0,
            "lone_share": float(np.mean(lone)), "median_leap": float(np.median(leaps)),
            "big_leap_share": float(np.mean(leaps > BIG_LEAP))}


def group(files: list[Path]) -> dict:
    rows = [r for r in (texture(f) for f in files) if r is not None]
    return {"files": len(rows), **{k: round(float(np.median([r[k] for r in rows])), 3) for k in FEATURES}} if rows else {}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=Path("data"), help="a run's data/ folder (raw/, splits.json, transfers/)")
    ap.add_argument("--target", required=True, help="the style the transfers go into")
    ap.add_argument("--pieces", type=int, default=40, help="real test pieces per style, at most (sorted)")
    ap.add_argument("--json", type=Path, help="also write the table here")
    args = ap.parse_args()
    test = json.loads((args.data / "splits.json").read_text())["test"]
    styles = sorted({rel.split("/", 1)[0] for rel in test})
    if args.target not in styles:
        raise SystemExit(f"--target {args.target!r}: the test split holds {styles}")
    transfers = args.data / "transfers"
    groups: dict[str, list[Path]] = {}
    for style in styles:
        groups[f"real {style} test pieces"] = [args.data / "raw" / r for r in sorted(test) if r.startswith(style + "/")
                                               ][: args.pieces]
    groups[f"{args.target} reconstructions"] = sorted((transfers / "reconstruction" / args.target).glob("*.mid"))
    for method_dir in sorted(p for p in transfers.iterdir() if p.is_dir() and p.name != "reconstruction"):
        for direction in sorted(method_dir.glob(f"*_to_{args.target}")):
            groups[f"{method_dir.name} {direction.name.replace('_to_', ' -> ')}"] = sorted(direction.glob("*.mid"))
    table = {name: group(files) for name, files in groups.items()}
    print(f"{'group':42s} {'files':>5s} " + " ".join(f"{k:>15s}" for k in FEATURES))
    for name, row in table.items():
        if row:
            print(f"{name:42s} {row['files']:5d} " + " ".join(f"{row[k]:15.3f}" for k in FEATURES))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"target": args.target, "big_leap": BIG_LEAP, "groups": table}, indent=2) + "\n")


if __name__ == "__main__":
    main()
