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

    python benchmarks/search_margin.py [--floors 0.5 0.9 0.97 0.99] [--caps 3 5 8] [--offsets 0,-0.15,0.15]
                                       [--rule first] [--paths mean_shift] [--directions classical_to_jazz]

Prints a markdown table and writes benchmarks/results/search_margin.json.
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import numpy as np

from midistyle import musicstats as ms
from midistyle.transfer import off_target, pick_candidates
from valsearch import ValSearch, write_table

COLUMNS = [("direction", "direction", "s"), ("min_probability", "min_probability", "g"), ("cap", "cap", "g"),
           ("latent pass", "latent_pass", ".3f"), ("judge", "judge_strength", ".3f"), ("plausible", "plausible", ".3f"),
           ("plausible strength", "plausible_strength", ".3f"), ("melody F1", "melody_f1", ".3f"),
           ("mean α", "mean_alpha", ".2f")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--floors", type=float, nargs="+", default=[0.5, 0.9, 0.97, 0.99])
    ap.add_argument("--caps", type=float, nargs="+", default=[3.0, 5.0, 8.0])
    ap.add_argument("--alphas", type=float, nargs="+", default=[0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0])
    ap.add_argument("--offsets", help="comma-separated threshold offsets (default: params.yaml's)")
    ap.add_argument("--paths", default="mean_shift",
                    help="comma-separated latent paths (transfer.search_paths; default: the attribute vector alone, as "
                         "when the table in docs/ablation.md was made)")
    ap.add_argument("--rule", choices=("typical", "first"), default="typical",
                    help="the pick among passing candidates: nearest the median texture (now), or the first (before)")
    ap.add_argument("--directions", nargs="+",
                    help="only these directions, as source_to_target (default: every direction)")
    ap.add_argument("--json", default="benchmarks/results/search_margin.json")
    args = ap.parse_args()
    val = ValSearch.load()
    model = val.model
    space = replace(val.space, alpha_grid=tuple(args.alphas), min_probability=0.0, paths=tuple(args.paths.split(",")))
    if args.offsets:
        space = replace(space, threshold_offsets=tuple(float(o) for o in args.offsets.split(",")))
    per_alpha = space.per_alpha(model.threshold)
    rows = []
    for source, target, s, t, win, mu in val.directions(args.directions):
        decoded, miss0, distance, _ = model.search_candidates(mu, win.length, s, t, list(args.alphas), space,
                                                              sources=win.rolls)
        if args.rule == "first":
            distance = np.zeros_like(distance)
        C, N = miss0.shape
        flat, lens = decoded.reshape(C * N, *decoded.shape[2:]), np.tile(win.length, C)
        probs = model.style_probs(model.encode_arrays(flat, lens))  # (C * N, S)
        texture = miss0 - off_target(probs, t, 0.0).reshape(C, N)  # what the floor does not touch
        judged, plaus, _ = val.judged(decoded, win.length, target)
        melody = np.array([[ms.melody_f1(win.rolls[n][: win.length[n]], decoded[c, n][: win.length[n]])
                            for n in range(N)] for c in range(C)])
        alpha_of = np.repeat(np.asarray(args.alphas), per_alpha)
        for floor in args.floors:
            miss = texture + off_target(probs, t, floor).reshape(C, N)  # SearchSpace(min_probability=floor)
            for cap in args.caps:
                k = int(np.sum(np.asarray(args.alphas) <= cap)) * per_alpha
                pick = pick_candidates(np.arange(k)[:, None].repeat(N, 1), miss[:k], distance[:k], per_alpha)
                at = (pick, np.arange(N))
                rows.append({"direction": f"{source}_to_{target}", "min_probability": floor, "cap": cap,
                             "latent_pass": float((miss[:k][at] == 0).mean()),
                             "judge_strength": float(judged[at].mean()), "plausible": float(plaus[at].mean()),
                             "plausible_strength": float((judged[at] & plaus[at]).mean()),
                             "melody_f1": float(np.nanmean(melody[at])), "mean_alpha": float(alpha_of[pick].mean()),
                             "windows": int(N)})
    write_table(rows, COLUMNS, args.json)


if __name__ == "__main__":
    main()
