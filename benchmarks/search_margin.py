"""attribute_search's latent check, measured on VALIDATION pieces: how sure must the latent classifier be?

For every direction, every audible window of the validation pieces the
tune_transfer stage uses is moved by the attribute vector at every alpha of
``--alphas``, decoded at each of the search's thresholds (the real
:meth:`StyleTransfer.search_candidates`), and the search's pick is made for
every ``--floors`` value of ``transfer.search_min_probability`` and every cap
of ``--caps``. Each pick is then scored as the evaluate stage scores windows:
the judge's verdict for the target, plausible (density and polyphony inside the
target's val 5-95th percentile band), both (plausible strength), and the melody
F1 of the window against its source. Test pieces are never read.

    python benchmarks/search_margin.py [--floors 0.5 0.9 0.97 0.99] [--caps 3 5 8]

Prints a markdown table and writes benchmarks/results/search_margin.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from midistyle import layout
from midistyle import musicstats as ms
from midistyle.config import load_params
from midistyle.judge import judge_probs, load_judge
from midistyle.shards import ShardIndex
from midistyle.transfer import SearchSpace, StyleTransfer, off_target, pick_candidates, select_pieces
from midistyle.tuning import source_windows, style_bounds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--floors", type=float, nargs="+", default=[0.5, 0.9, 0.97, 0.99])
    ap.add_argument("--caps", type=float, nargs="+", default=[3.0, 5.0, 8.0])
    ap.add_argument("--alphas", type=float, nargs="+", default=[0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0])
    ap.add_argument("--json", default="benchmarks/results/search_margin.json")
    args = ap.parse_args()
    params = load_params("params.yaml")
    tp = params.transfer
    model = StyleTransfer.load()
    judge, _ = load_judge(layout.JUDGE)
    index = ShardIndex.open(layout.SHARDS)
    val_bounds = style_bounds(index, "val")
    train_bounds = {s: tuple(map(tuple, b.tolist()))
                    for s, b in style_bounds(index, "train", tuple(tp.search_percentiles)).items()}
    space = SearchSpace(tuple(args.alphas), tuple(tp.search_threshold_offsets), train_bounds, 0.0)
    pieces = select_pieces(layout.RAW, layout.SPLITS, model.styles, tp.val_pieces_per_style, params.seed, "val")
    n_thr = len(space.thresholds(model.threshold))
    rows = []
    for source, files in pieces.items():
        s = model.style_index(source)
        win = source_windows(model, layout.RAW, files)
        mu = model.encode_arrays(win.rolls, win.length)
        for t, target in enumerate(model.styles):
            if t == s:
                continue
            decoded, miss0 = model.search_candidates(mu, win.length, s, t, list(args.alphas), space)
            C, N = miss0.shape
            flat, lens = decoded.reshape(C * N, *decoded.shape[2:]), np.tile(win.length, C)
            probs = model.style_probs(model.encode_arrays(flat, lens))  # (C * N, S)
            texture = miss0 - off_target(probs, t, 0.0).reshape(C, N)  # what the floor does not touch
            judged = (judge_probs(judge, flat, lens).argmax(-1) == t).reshape(C, N)
            plaus = ms.plausible(ms.window_features(flat, lens, model.spec.steps_per_beat),
                                 val_bounds[target]).reshape(C, N)
            melody = np.array([[ms.melody_f1(win.rolls[n][: win.length[n]], decoded[c, n][: win.length[n]])
                                for n in range(N)] for c in range(C)])
            alpha_of = np.repeat(np.asarray(args.alphas), n_thr)
            for floor in args.floors:
                miss = texture + off_target(probs, t, floor).reshape(C, N)  # SearchSpace(min_probability=floor)
                for cap in args.caps:
                    k = int(np.sum(np.asarray(args.alphas) <= cap)) * n_thr
                    pick = pick_candidates(np.arange(k)[:, None].repeat(N, 1), miss[:k])
                    at = (pick, np.arange(N))
                    rows.append({"direction": f"{source}_to_{target}", "min_probability": floor, "cap": cap,
                                 "latent_pass": float((miss[:k][at] == 0).mean()),
                                 "judge_strength": float(judged[at].mean()), "plausible": float(plaus[at].mean()),
                                 "plausible_strength": float((judged[at] & plaus[at]).mean()),
                                 "melody_f1": float(np.nanmean(melody[at])), "mean_alpha": float(alpha_of[pick].mean()),
                                 "windows": int(N)})
    print("| direction | min_probability | cap | latent pass | judge | plausible | plausible strength | melody F1 | mean α |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['direction']} | {r['min_probability']:g} | {r['cap']:g} | {r['latent_pass']:.3f} | "
              f"{r['judge_strength']:.3f} | {r['plausible']:.3f} | {r['plausible_strength']:.3f} | "
              f"{r['melody_f1']:.3f} | {r['mean_alpha']:.2f} |")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"split": "val", "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
