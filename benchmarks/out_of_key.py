"""Notes outside the key: how chromatic are the transfers against their sources and against real music of the style?

A piece's key is taken as its seven most frequent pitch classes of note starts
(both hands; a major or minor scale in tonal music). Per piece: the share of
its note starts outside its own seven, and, for a transfer, outside its
source's seven. Real pieces set the scale: a chorale's accidentals put about 7 %
of its notes outside its seven most frequent pitch classes, a Palestrina mass
movement about 4 %. A transfer far above its target style's share has notes a
listener hears as wrong, which pitch-class entropy (a style statistic of
``metrics/eval.json``) shows only as a few hundredths of a bit.

Reads what `dvc repro` wrote (data/transfers and their sources in data/raw):

    python benchmarks/out_of_key.py [--json benchmarks/results/out_of_key.json]
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import numpy as np

from midistyle import musicstats as ms
from midistyle.roll import ONSET, read_piece
from written import roll_spec, write_rows, written

SCALE = 7  # pitch classes of a diatonic scale


def pitch_class_counts(path, spec) -> np.ndarray:
    """(12,) note starts per pitch class of a piece read back from MIDI."""
    onsets = read_piece(path, spec).roll[:, :, ONSET].sum(axis=(0, 1))  # (P,)
    return np.bincount(ms.pitch_classes(len(onsets), spec.pitch_low), weights=onsets, minlength=12)


def outside(counts: np.ndarray, key_of: np.ndarray) -> float:
    """Share of ``counts``' note starts outside the :data:`SCALE` most frequent pitch classes of ``key_of``."""
    key = np.argsort(-key_of, kind="stable")[:SCALE]
    total = counts.sum()
    return float(1 - counts[key].sum() / total) if total else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", default="benchmarks/results/out_of_key.json")
    args = ap.parse_args()
    spec = roll_spec()
    own, vs_source = defaultdict(list), defaultdict(list)
    for row, output, source, first in written():
        src, out = pitch_class_counts(source, spec), pitch_class_counts(output, spec)
        key = f"{row['method']}: {row['source_style']} -> {row['target_style']}"
        own[key].append(outside(out, out))
        vs_source[key].append(outside(out, src))
        if first:
            own[f"source: {row['source_style']}"].append(outside(src, src))
    rows = [{"pieces": k, "outside_own_key": float(np.nanmean(own[k])),
             "outside_source_key": float(np.nanmean(vs_source[k])) if k in vs_source else None,
             "count": len(own[k])} for k in sorted(own)]
    for r in rows:
        vs = f"{r['outside_source_key']:.3f}" if r["outside_source_key"] is not None else "    -"
        print(f"{r['pieces']:45s} outside its own key {r['outside_own_key']:.3f}   outside its source's key {vs}"
              f"   ({r['count']} pieces)")
    write_rows(args.json, rows)


if __name__ == "__main__":
    main()
