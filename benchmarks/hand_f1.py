"""Does each hand come back from z? Per style, the sounding F1 of each hand of free reconstructions, at thresholds.

Validation windows (a seeded sample per style) are encoded, z = mu, and decoded
freely: once when the decoder does not read its output (one decoding serves every
threshold, each applied with the model's consistent decision rule,
:meth:`StyleVAE.decide`), once per threshold when it is autoregressive. Printed per style and threshold: the sounding F1 of
the right and the left hand, the right hand's share of the decoded onsets (the
sources' share beside it), and decoded onsets per source onset, both hands and
the right hand. A hand whose F1 stays low at every threshold is not carried by
z: a lower (or per-hand) threshold only adds wrong notes there.

    python benchmarks/hand_f1.py [--windows 768] [--json benchmarks/results/hand_f1.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from midistyle import layout
from midistyle.model import load_vae
from midistyle.recon import length_mask
from midistyle.roll import LEFT, ONSET, RIGHT, SOUNDING
from midistyle.shards import ShardIndex

THRESHOLDS = (0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5)


def f1(pred: np.ndarray, true: np.ndarray) -> float:
    tp, fp, fn = (pred & true).sum(), (pred & ~true).sum(), (~pred & true).sum()
    return float(2 * tp / max(2 * tp + fp + fn, 1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--windows", type=int, default=768, help="validation windows per style (a seeded sample)")
    ap.add_argument("--json", default="benchmarks/results/hand_f1.json")
    args = ap.parse_args()
    vae, ckpt = load_vae(layout.VAE)
    index = ShardIndex.open(layout.SHARDS)
    val = index.load_split("val")
    rng = np.random.default_rng(0)
    rows = []
    print(f"the VAE's threshold {float(ckpt['threshold']):.2f}, onset threshold {float(vae.onset_threshold):.2f}")
    for i, style in enumerate(index.styles):
        mine = np.nonzero(val.style == i)[0]
        pick = np.sort(rng.choice(mine, size=min(args.windows, len(mine)), replace=False))
        x, lengths = np.asarray(val.rolls[pick], bool), val.lengths[pick]
        with torch.no_grad():
            mu, _ = vae.encode(torch.from_numpy(x).float(), torch.from_numpy(lengths).long())
            if not vae.cfg.autoregressive:
                sounding, onset = vae.probabilities(mu, x.shape[1])  # (N, >=W, 2, P) each
                sounding, onset = sounding[:, : x.shape[1]], onset[:, : x.shape[1]]
        mask = length_mask(lengths, x.shape[1])[:, :, None, None]  # (N, W, 1, 1)
        source_onsets = x[:, :, :, ONSET] & mask
        source_share = float(source_onsets[:, :, RIGHT].sum() / max(source_onsets.sum(), 1))
        print(f"{style}: {len(pick)} windows, the sources' right hand holds {source_share:.3f} of the onsets")
        for t in THRESHOLDS:
            if vae.cfg.autoregressive:  # its decided frames feed back: one decoding per threshold
                decided = vae.generate(mu, x.shape[1], t).numpy() > t  # (N, W, 2, 2, P): the decided roll
            else:
                decided = vae.decide(sounding, onset, torch.zeros_like(sounding[:, 0]), t).numpy() > 0.5
            hand_f1 = {h: f1(decided[:, :, hand, SOUNDING] & mask[..., 0], x[:, :, hand, SOUNDING] & mask[..., 0])
                       for h, hand in (("right", RIGHT), ("left", LEFT))}
            onsets = decided[:, :, :, ONSET] & mask
            row = {"style": style, "threshold": t, "windows": int(len(pick)), "right_f1": hand_f1["right"],
                   "left_f1": hand_f1["left"], "source_right_share": source_share,
                   "right_share": float(onsets[:, :, RIGHT].sum() / max(onsets.sum(), 1)),
                   "onsets_per_source_onset": float(onsets.sum() / max(source_onsets.sum(), 1)),
                   "right_onsets_per_source_right_onset": float(onsets[:, :, RIGHT].sum()
                                                                / max(source_onsets[:, :, RIGHT].sum(), 1))}
            rows.append(row)
            print(f"  threshold {t:.2f}: F1 right {row['right_f1']:.3f} left {row['left_f1']:.3f}; right hand's share "
                  f"of onsets {row['right_share']:.3f}; onsets per source onset {row['onsets_per_source_onset']:.2f} "
                  f"(right hand {row['right_onsets_per_source_right_onset']:.2f})")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"split": "val", "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
