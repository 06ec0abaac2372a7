"""Re-strikes inside windows: the onset threshold, per style, on validation windows.

Inside a window the decoder decides whether a note that sounded the step before
is held or struck again: it is struck where P(onset | sounding) passes the VAE's
onset threshold (:meth:`midistyle.model.StyleVAE.decide`; the train_vae stage
picks it on val windows for the onset F1, from ``recon.ONSET_THRESHOLDS``).
Baroque reconstructions and renaissance -> baroque transfers strike such notes
again at beat starts more often than the chorales do (``benchmarks/restrikes.py``).
This decodes every validation window of each style freely (z = mu, the VAE's
threshold) at each ``--thresholds`` value and reports, per style: onset F1, the
note-density ratio, re-strikes per 100 notes going on over a beat start (and
over other steps) in the reconstructions and in the sources, and *right*: of the
notes going on over a beat start in both source and reconstruction, the share
held or struck again as in the source.

    python benchmarks/onset_threshold.py [--thresholds 0.3 0.4 0.5 0.6 0.7 0.8 0.9]
                                         [--json benchmarks/results/onset_threshold.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from midistyle import layout
from midistyle.model import load_vae
from midistyle.recon import count_cells, reconstruct, scores
from midistyle.roll import ONSET, SOUNDING
from midistyle.shards import ShardIndex

BATCH = 512


def going_on(roll: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """bool windows (N, W, 2, 2, P) -> (N, W-1, 2, P): cells sounding at a step and the step before, inside
    the window's length."""
    s = roll[:, :, :, SOUNDING]
    inside = np.arange(1, roll.shape[1])[None, :] < np.asarray(lengths)[:, None]  # (N, W-1)
    return s[:, 1:] & s[:, :-1] & inside[:, :, None, None]


def restrike_counts(source: np.ndarray, decoded: np.ndarray, lengths: np.ndarray, steps_per_beat: int) -> dict:
    """Counts at beat starts and other steps: re-strikes and notes going on, in the decoded windows and the
    sources, and the notes going on in both with the same decision (held or struck again)."""
    on_beat = (np.arange(1, source.shape[1]) % steps_per_beat == 0)[None, :, None, None]
    src, dec = going_on(source, lengths), going_on(decoded, lengths)
    src_struck, dec_struck = src & source[:, 1:, :, ONSET], dec & decoded[:, 1:, :, ONSET]
    out = {}
    for place, mask in (("beat_start", on_beat), ("inside_beat", ~on_beat)):
        both = src & dec & mask
        out[place] = {"output_restrikes": int((dec_struck & mask).sum()), "output_going_on": int((dec & mask).sum()),
                      "source_restrikes": int((src_struck & mask).sum()), "source_going_on": int((src & mask).sum()),
                      "both": int(both.sum()), "right": int((both & (src_struck == dec_struck)).sum())}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--thresholds", type=float, nargs="+", default=[0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9])
    ap.add_argument("--json", type=Path, default=Path("benchmarks/results/onset_threshold.json"))
    args = ap.parse_args()
    torch.set_num_threads(2)
    index = ShardIndex.open(layout.SHARDS)
    vae, ckpt = load_vae(layout.VAE)
    chosen, threshold = float(vae.onset_threshold), float(ckpt["threshold"])
    val = index.load_split("val")
    rows = []
    for t in args.thresholds:
        vae.onset_threshold.fill_(t)
        for i, style in enumerate(index.styles):
            rolls, lengths = val.rolls[val.style == i].astype(bool), val.lengths[val.style == i]
            decoded = np.concatenate([reconstruct(vae, rolls[lo : lo + BATCH], lengths[lo : lo + BATCH], threshold)
                                      for lo in range(0, len(rolls), BATCH)]) > threshold
            s = scores(count_cells(decoded, rolls, lengths))
            c = restrike_counts(rolls, decoded, lengths, index.spec.steps_per_beat)
            b, w = c["beat_start"], c["inside_beat"]
            row = {"onset_threshold": t, "style": style, "windows": int(len(rolls)),
                   "onset_f1": round(s["onset_f1"], 4), "density_ratio": round(s["density_ratio"], 3),
                   "beat_start_restrikes_per_100": round(100 * b["output_restrikes"] / max(b["output_going_on"], 1), 1),
                   "source_beat_start_restrikes_per_100": round(100 * b["source_restrikes"] / max(b["source_going_on"], 1), 1),
                   "beat_start_right": round(b["right"] / max(b["both"], 1), 4), "beat_start_cells": b["both"],
                   "inside_beat_restrikes_per_100": round(100 * w["output_restrikes"] / max(w["output_going_on"], 1), 2),
                   "source_inside_beat_restrikes_per_100": round(100 * w["source_restrikes"] / max(w["source_going_on"], 1), 2),
                   "inside_beat_right": round(w["right"] / max(w["both"], 1), 4)}
            rows.append(row)
            print(f"onset threshold {t:.2f} {style:>12}: onset F1 {row['onset_f1']:.3f}, notes x{row['density_ratio']:.2f}, "
                  f"beat starts struck again {row['beat_start_restrikes_per_100']:.1f} in 100 (sources "
                  f"{row['source_beat_start_restrikes_per_100']:.1f}), right {row['beat_start_right']:.3f} of "
                  f"{row['beat_start_cells']}", flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"split": "val", "chosen_onset_threshold": chosen, "threshold": threshold,
                                     "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
