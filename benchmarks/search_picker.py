"""attribute_search's latent paths, its pick among passing candidates and its thresholds, on VALIDATION pieces.

For every direction, every audible window of the validation pieces the
tune_transfer stage uses is moved along each latent path of a ``--paths`` set
(transfer.search_paths) at every alpha up to the direction's chosen cap
(models/transfer_settings.json, or each of ``--caps``), decoded at the checkpoint's
threshold plus each offset of an ``--offsets`` set, and in the right hand each offset of a
``--right-hand-offsets`` set on top (the real
:meth:`StyleTransfer.search_candidates`), and picked by two rules of
:func:`pick_candidates`:

* ``first``: at the gentlest alpha where a candidate passes, the first passing
  threshold (nearest the checkpoint's) - the rule before;
* ``typical``: at that alpha, the passing candidate whose density and polyphony
  lie nearest the target's median training window - the rule now.

Each pick is scored as the evaluate stage scores windows: the judge's verdict
for the target, plausible (density and polyphony inside the target's val 5-95th
percentile band), both (plausible strength), the melody F1 against the source
window, and the mean density and polyphony of the picks against the source and
target windows (window-level gap closed), and the chroma similarity of pick and
source. Test pieces are never read.

    python benchmarks/search_picker.py [--offsets 0,-0.15,0.15 0,-0.15,0.15,-0.25,-0.35 ...]
                                       [--paths mean_shift transport mean_shift,transport] [--rules typical]
                                       [--percentiles 5,95 10,90] [--caps 2 3 8]
                                       [--checks note_density,polyphony note_density,polyphony,right_hand_share]
                                       [--key-weights 0 1 3 10] [--melody-weights 0 1 3]
                                       [--right-hand-offsets 0 0,-0.15,-0.3]
                                       [--directions classical_to_jazz] [--json benchmarks/results/search_paths.json]

``--key-weights`` add that weight times a candidate's share of note starts whose
pitch class does not sound in its source window (:func:`out_of_key`, printed as
"out of key") to the typical rule's distance; ``--melody-weights`` take that weight times a
candidate's melody F1 against its source window from it (a passing candidate that keeps more of the top line is
nearer). ``--checks`` are the sets of texture features (density, polyphony, right-hand
share: ms.WINDOW_FEATURES) the search checks; the others are left open.
``--percentiles`` are bands of the target's training windows a candidate's
texture must lie in to pass (transfer.search_percentiles; the
medians the typical rule aims at stay). ``--paths`` defaults to the attribute vector alone (``mean_shift``), the search
when the offsets table of docs/ablation.md was made.

Prints a markdown table and writes benchmarks/results/search_picker.json.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace

import numpy as np

from midistyle import layout
from midistyle import musicstats as ms
from midistyle.roll import ONSET, SOUNDING
from midistyle.shards import ShardIndex
from midistyle.transfer import pick_candidates
from midistyle.tuning import split_textures
from valsearch import ValSearch, write_table

DEFAULT_OFFSETS = ("0,-0.15,0.15", "0,-0.15,0.15,-0.25", "0,-0.15,0.15,-0.25,-0.35", "0,-0.1,0.1,-0.2,0.2,-0.3")
COLUMNS = [("paths", "paths", "s"), ("offsets", "offsets", "s"), ("right hand", "right_hand_offsets", "s"), ("band", "percentiles", "s"), ("texture checked", "checks", "s"), ("rule", "rule", "s"), ("key weight", "key_weight", "g"), ("melody weight", "melody_weight", "g"), ("α cap", "cap", "g"), ("direction", "direction", "s"),
           ("settled", "settled", ".3f"), ("plausible strength", "plausible_strength", ".3f"), ("judge", "judge_strength", ".3f"),
           ("plausible", "plausible", ".3f"), ("melody F1", "melody_f1", ".3f"), ("chroma", "chroma", ".3f"), ("out of key", "out_of_key", ".3f"), ("density", "density", ".2f"),
           ("polyphony", "polyphony", ".2f"), ("gap closed: density", "gap_density", ".2f"),
           ("gap closed: polyphony", "gap_polyphony", ".2f")]


OPEN = (-1e9, 1e9)  # a band nothing misses, so wide that its feature adds nothing to the typical pick's distance


def open_bands(bounds: dict[str, tuple], checked: list[str]) -> dict[str, tuple]:
    """Per style, the texture band with the features not in ``checked`` opened."""
    unknown = set(checked) - set(ms.WINDOW_FEATURES)
    if unknown:
        raise SystemExit(f"--checks: unknown features {sorted(unknown)}; known: {', '.join(ms.WINDOW_FEATURES)}")
    return {s: tuple(b if f in checked else OPEN for f, b in zip(ms.WINDOW_FEATURES, bands))
            for s, bands in bounds.items()}


def out_of_key(decoded: np.ndarray, sources: np.ndarray, pitch_low: int) -> np.ndarray:
    """(C, N) the share of each candidate's note starts (decoded (C, N, W, 2, 2, P)) whose pitch class does not
    sound anywhere in its source window (sources (N, W, 2, 2, P)); ``nan`` for a candidate without a note start.
    Two bars of the source stand in for its key: a transfer's notes outside them are chromatic to it."""
    pcs = np.eye(12, dtype=np.int64)[ms.pitch_classes(decoded.shape[-1], pitch_low)]  # (P, 12)
    present = ((sources[:, :, :, SOUNDING] | sources[:, :, :, ONSET]).any(axis=(1, 2)).astype(np.int64) @ pcs) > 0
    counts = decoded[..., ONSET, :].sum(axis=(2, 3)) @ pcs  # (C, N, 12) note starts per pitch class
    total = counts.sum(axis=-1)
    with np.errstate(invalid="ignore"):
        return (counts * ~present[None]).sum(axis=-1) / np.where(total > 0, total, np.nan)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--offsets", nargs="+", default=list(DEFAULT_OFFSETS), help="comma-separated offset sets")
    ap.add_argument("--right-hand-offsets", nargs="+", default=["0"],
                    help="comma-separated sets of offsets added to the right hand's threshold on top of each offset "
                         "(transfer.search_right_hand_offsets; default: 0, both hands at one threshold)")
    ap.add_argument("--paths", nargs="+", default=["mean_shift"], help="comma-separated latent path sets")
    ap.add_argument("--rules", nargs="+", choices=("first", "typical"), default=["first", "typical"])
    ap.add_argument("--percentiles", nargs="+", default=None,
                    help="comma-separated lo,hi bands of the target's training windows a pick must lie in "
                         "(transfer.search_percentiles; default: params.yaml's)")
    ap.add_argument("--checks", nargs="+", default=None,
                    help="comma-separated sets of the texture features (ms.WINDOW_FEATURES) a pick must have inside "
                         "the band; the others' bands are open and do not count in the typical pick "
                         "(default: all of them)")
    ap.add_argument("--caps", type=float, nargs="+",
                    help="alpha caps, each for every direction (default: each direction's chosen cap)")
    ap.add_argument("--key-weights", type=float, nargs="+", default=[0.0],
                    help="weights of the out-of-key share (a candidate's note starts whose pitch class does not sound "
                         "in the source window) added to the typical pick's texture distance (default: 0, the rule now)")
    ap.add_argument("--melody-weights", type=float, nargs="+", default=[0.0],
                    help="weights of a candidate's melody F1 against its source window (ms.melody_f1) taken from the "
                         "typical pick's texture distance: the passing candidate that keeps more of the top line "
                         "(default: 0, texture alone; transfer.search_melody_weight is the search's)")
    ap.add_argument("--directions", nargs="+",
                    help="only these directions, as source_to_target (default: every direction)")
    ap.add_argument("--json", default="benchmarks/results/search_picker.json")
    args = ap.parse_args()
    val = ValSearch.load()
    model = val.model
    val.directions(args.directions)  # an unknown direction stops here, before any work
    caps = json.loads(layout.TRANSFER_SETTINGS.read_text())["chosen"]["attribute_search"]  # alpha caps only
    spb = model.spec.steps_per_beat
    real = {style: ms.window_features(w.rolls, w.length, spb) for style, w in val.windows.items()}
    bars = list(range(0, model.spec.window_steps, model.spec.bar_steps))
    rows = []
    bands = {",".join(f"{x:g}" for x in val.percentiles): val.space.texture_bounds}
    index = ShardIndex.open(layout.SHARDS)
    for band in args.percentiles or []:
        lo, hi = (float(x) for x in band.split(","))
        bands[band] = {s: tuple(map(tuple, b.tolist())) for s, b in split_textures(index, "train", (lo, hi))[0].items()}
    every = ",".join(ms.WINDOW_FEATURES)
    settings = [(p, o, r, b, c, k) for p in args.paths for o in args.offsets for r in args.right_hand_offsets
                for b in (args.percentiles or list(bands))
                for c in (args.caps or [None]) for k in (args.checks or [every])]
    for paths, offsets, right_hand, band, fixed, checks in settings:
        space = replace(val.space, threshold_offsets=tuple(float(o) for o in offsets.split(",")),
                        right_hand_offsets=tuple(float(o) for o in right_hand.split(",")),
                        paths=tuple(paths.split(",")), texture_bounds=open_bands(bands[band], checks.split(",")))
        per_alpha = space.per_alpha(model.threshold)
        for source, target, s, t, win, mu in val.directions(args.directions):
            cap = fixed if fixed is not None else float(caps[f"{source}_to_{target}"])
            decoded, miss, distance, _ = model.search_candidates(mu, win.length, s, t, space.alphas(cap),
                                                                 replace(space, melody_weight=0.0))
            C, N = miss.shape
            judged, plaus, features = val.judged(decoded, win.length, target)
            off_key = out_of_key(decoded, win.rolls, model.spec.pitch_low)  # (C, N)
            kept = ms.window_melody_f1(win.rolls[None], decoded)  # (C, N) each candidate's melody F1
            typical = [(w, m) for w in args.key_weights for m in args.melody_weights]
            for rule, (key_weight, melody_weight) in [(r, wm) for r in args.rules
                                                      for wm in (typical if r == "typical" else [(0.0, 0.0)])]:
                dist = (distance + key_weight * np.nan_to_num(off_key) - melody_weight * kept if rule == "typical"
                        else np.zeros_like(distance))
                pick = pick_candidates(np.arange(C)[:, None].repeat(N, 1), miss, dist, per_alpha)
                at = (pick, np.arange(N))
                got = features[at]
                gap = [ms.gap_closed(np.nanmean(real[source][:, k]), np.nanmean(got[:, k]),
                                     np.nanmean(real[target][:, k])) for k in range(2)]
                melody = np.nanmean([ms.melody_f1(win.rolls[n][: win.length[n]], decoded[pick[n], n][: win.length[n]])
                                     for n in range(N)])
                chroma = np.nanmean([ms.chroma_similarity(win.rolls[n][: win.length[n]], bars,
                                                          decoded[pick[n], n][: win.length[n]], bars,
                                                          model.spec.pitch_low) for n in range(N)])
                rows.append({"paths": paths, "offsets": offsets, "right_hand_offsets": right_hand, "percentiles": band, "checks": checks, "rule": rule,
                             "key_weight": key_weight, "melody_weight": melody_weight, "out_of_key": float(np.nanmean(off_key[at])),
                             "direction": f"{source}_to_{target}",
                             "cap": cap, "settled": float((miss == 0).any(axis=0).mean()),
                             "plausible_strength": float((judged[at] & plaus[at]).mean()),
                             "judge_strength": float(judged[at].mean()), "plausible": float(plaus[at].mean()),
                             "melody_f1": float(melody), "chroma": float(chroma),
                             "density": float(np.nanmean(got[:, 0])),
                             "polyphony": float(np.nanmean(got[:, 1])), "gap_density": gap[0],
                             "gap_polyphony": gap[1], "windows": int(N)})
    write_table(rows, COLUMNS, args.json)


if __name__ == "__main__":
    main()
