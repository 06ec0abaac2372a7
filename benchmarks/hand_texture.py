"""What each hand plays, window by window, in transfers the judge accepts and refuses, their sources and real pieces.

For one method's transfers in each chosen direction (the transfer stage's outputs), every audible window is judged
by the panel and measured per hand: onsets per beat, notes per onset step (chord size), sounding steps per note
(length), the share of onsets off the beat, and the mean pitch of its onsets. The windows are grouped: outputs the
panel judges the target style, outputs it does not, and the windows of the test pieces of every style in those
directions (each piece once). Reads what `dvc repro` wrote (data/transfers, data/raw).

    python benchmarks/hand_texture.py --directions classical_to_jazz [--json benchmarks/results/hand_texture.json]
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import numpy as np

from midistyle import layout
from midistyle.judge import agreed, judge_votes, load_judge
from midistyle.roll import LEFT, ONSET, RIGHT, SOUNDING, RollSpec, read_piece
from midistyle.transfer import audible_windows
from written import roll_spec, write_rows, written

HANDS = (("right", RIGHT), ("left", LEFT))
MEASURES = ("onsets_per_beat", "chord_size", "steps_per_note", "offbeat_share", "mean_pitch")


def hand_measures(roll: np.ndarray, length: int, spec: RollSpec) -> dict[str, float]:
    """One window (W, 2, 2, P) cut at ``length`` -> ``{"right_onsets_per_beat": ..., ...}`` (nan where a hand
    is silent)."""
    roll = roll[:length]
    out = {}
    for name, hand in HANDS:
        onsets, sounding = roll[:, hand, ONSET], roll[:, hand, SOUNDING]  # (W, P) each
        steps = np.nonzero(onsets.any(axis=1))[0]  # steps with an onset
        pitches = np.nonzero(onsets)[1] + spec.pitch_low
        n = int(onsets.sum())
        out |= {f"{name}_onsets_per_beat": n * spec.steps_per_beat / max(length, 1),
                f"{name}_chord_size": n / len(steps) if len(steps) else np.nan,
                f"{name}_steps_per_note": sounding.sum() / n if n else np.nan,
                f"{name}_offbeat_share": float(np.mean(steps % spec.steps_per_beat != 0)) if len(steps) else np.nan,
                f"{name}_mean_pitch": float(pitches.mean()) if n else np.nan}
    return out


def judged_windows(path: Path, panel, spec: RollSpec) -> list[tuple[dict[str, float], int]]:
    """(measures, the panel's style index or NO_VERDICT) of every audible window of a piece."""
    kept = audible_windows(read_piece(path, spec), spec)
    if not kept:
        return []
    verdicts = agreed(judge_votes(panel, np.stack([w.roll for w in kept]), np.array([w.length for w in kept])))
    return [(hand_measures(w.roll, w.length, spec), int(v)) for w, v in zip(kept, verdicts)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--directions", nargs="+", required=True, help="source_to_target, e.g. classical_to_jazz")
    ap.add_argument("--method", default="attribute_search")
    ap.add_argument("--json", default="benchmarks/results/hand_texture.json")
    args = ap.parse_args()
    outputs = [(row, output, source) for row, output, source, _ in written((args.method,))
               if f"{row['source_style']}_to_{row['target_style']}" in args.directions]
    unknown = set(args.directions) - {f"{r['source_style']}_to_{r['target_style']}" for r, _, _ in outputs}
    if unknown:
        raise SystemExit(f"--directions: no {args.method} outputs for {', '.join(sorted(unknown))}")
    spec = roll_spec()
    panel, ckpt = load_judge(layout.JUDGE)
    styles = list(ckpt["styles"])
    groups: dict[str, list[dict[str, float]]] = defaultdict(list)
    for row, output, _ in outputs:
        target = row["target_style"]
        for measures, verdict in judged_windows(output, panel, spec):
            judged = "judged" if verdict == styles.index(target) else "not judged"
            groups[f"{row['source_style']}_to_{target}: {judged} {target}"].append(measures)
    # the test pieces of every style in the chosen directions (a direction's sources, a target's real pieces), once
    wanted = {s for r, _, _ in outputs for s in (r["source_style"], r["target_style"])}
    pieces = {source: row["source_style"] for row, _, source, _ in written() if row["source_style"] in wanted}
    for source, style in pieces.items():
        groups[f"test pieces: {style}"] += [m for m, _ in judged_windows(source, panel, spec)]
    rows = []
    for key in sorted(groups):
        table = groups[key]
        row = {"windows": key, "count": len(table)}
        row |= {f"{h}_{m}": float(np.nanmean([t[f'{h}_{m}'] for t in table])) for h, _ in HANDS for m in MEASURES}
        rows.append(row)
        print(f"{key:40s} {len(table):5d} windows  " + "  ".join(
            f"{h} {row[f'{h}_onsets_per_beat']:.2f}/beat chord {row[f'{h}_chord_size']:.2f} "
            f"len {row[f'{h}_steps_per_note']:.1f} off-beat {row[f'{h}_offbeat_share']:.2f} "
            f"pitch {row[f'{h}_mean_pitch']:.1f}" for h, _ in HANDS))
    write_rows(args.json, rows)


if __name__ == "__main__":
    main()
