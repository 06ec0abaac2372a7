"""attribute_search's neighbour moves (its fallback towards real target windows), on VALIDATION pieces.

For every direction, the validation windows the tune_transfer stage uses are
transferred by the real search (:meth:`StyleTransfer.search_steps`) up to the
direction's chosen alpha cap (models/transfer_settings.json), once without
neighbour moves and once per ``--neighbours`` count and ``--steps`` set
(transfer.search_neighbours, transfer.search_neighbour_steps). Each choice is
scored as the evaluate stage scores windows: the judge's verdict for the
target, plausible (the four texture features inside the target's val 5-95th
percentile band), both (plausible strength), melody F1 and chroma similarity
against the source window, and the texture the choices play. "Neighbour" is the
share of windows whose choice is a neighbour move (it differs from the choice
without them). Each setting also runs once per ``--knn-shares`` value of
transfer.search_min_knn_share (with transfer.search_knn's ``--knn`` voters; by
default params.yaml's), and once per ``--caps`` alpha cap instead of the
chosen one. ``--val-pieces``: that many validation pieces per style instead of
the tune_transfer stage's transfer.val_pieces_per_style (more: less noise).
Test pieces are never read.

    python benchmarks/search_neighbour.py [--neighbours 1 4 8] [--steps 0.5,0.75,1 1] [--knn-shares 0 0.5] [--knn 16]
                                          [--val-pieces 20] [--directions classical_to_jazz] [--caps 2 8]
                                          [--json benchmarks/results/search_neighbour.json]

Prints a markdown table and writes the JSON.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace

import numpy as np

from midistyle import layout
from midistyle import musicstats as ms
from valsearch import ValSearch, write_table

COLUMNS = [("neighbours", "neighbours", "d"), ("steps", "steps", "s"), ("knn share", "min_knn_share", "g"),
           ("direction", "direction", "s"),
           ("α cap", "cap", "g"), ("neighbour", "neighbour_share", ".3f"),
           ("plausible strength", "plausible_strength", ".3f"), ("judge", "judge_strength", ".3f"),
           ("plausible", "plausible", ".3f"), ("melody F1", "melody_f1", ".3f"), ("chroma", "chroma", ".3f")] + [
           (f, f, ".2f") for f in ms.WINDOW_FEATURES]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--neighbours", type=int, nargs="+", default=[1, 4], help="nearest target latents per step")
    ap.add_argument("--steps", nargs="+", default=["0.5,0.75,1"], help="comma-separated sets of neighbour steps")
    ap.add_argument("--knn-shares", type=float, nargs="+", help="values of transfer.search_min_knn_share "
                    "(default: params.yaml's)")
    ap.add_argument("--knn", type=int, help="transfer.search_knn (default: params.yaml's)")
    ap.add_argument("--val-pieces", type=int, help="validation pieces per style (default: transfer.val_pieces_per_style)")
    ap.add_argument("--directions", nargs="+", help="only these directions, as source_to_target (default: every one)")
    ap.add_argument("--caps", type=float, nargs="+", help="alpha caps to try (each a value of transfer.alpha_grid; "
                    "default: the direction's chosen cap in models/transfer_settings.json)")
    ap.add_argument("--json", default="benchmarks/results/search_neighbour.json")
    args = ap.parse_args()
    val = ValSearch.load(args.val_pieces)
    model = val.model
    val.directions(args.directions)  # an unknown direction stops here, before any work
    chosen = json.loads(layout.TRANSFER_SETTINGS.read_text())["chosen"]["attribute_search"]
    if args.caps and set(args.caps) - set(val.space.alpha_grid):
        raise SystemExit(f"--caps: {sorted(set(args.caps) - set(val.space.alpha_grid))} not in transfer.alpha_grid "
                         f"{list(val.space.alpha_grid)}")
    bars = list(range(0, model.spec.window_steps, model.spec.bar_steps))
    shares = args.knn_shares if args.knn_shares is not None else [val.space.min_knn_share]
    settings = [(k, steps, share) for share in shares for k, steps in [(0, "")] + [(k, s) for k in args.neighbours
                                                                                    for s in args.steps]]
    rows = []
    for source, target, s, t, win, mu in val.directions(args.directions):
        for cap in args.caps or [float(chosen[f"{source}_to_{target}"])]:
            plain = None
            for k, steps, share in settings:
                space = replace(val.space, neighbours=max(k, 1),
                                neighbour_steps=tuple(float(x) for x in steps.split(",")) if k else (),
                                knn=args.knn or val.space.knn, min_knn_share=share)
                for step in model.search_steps(mu, win.length, s, t, space.alphas(cap), space, 1.0,
                                               sources=win.rolls):
                    pass
                out = step.windows
                plain = out.copy() if k == 0 else plain
                judged, plaus, feats = val.judged(out[None], win.length, target)
                n = len(win.length)
                melody = np.nanmean([ms.melody_f1(win.rolls[i][: win.length[i]], out[i][: win.length[i]])
                                     for i in range(n)])
                chroma = np.nanmean([ms.chroma_similarity(win.rolls[i][: win.length[i]], bars, out[i][: win.length[i]],
                                                          bars, model.spec.pitch_low) for i in range(n)])
                rows.append({"neighbours": k, "steps": steps or "none", "min_knn_share": share, "knn": space.knn,
                             "direction": f"{source}_to_{target}", "cap": cap,
                             "neighbour_share": float((out != plain).reshape(n, -1).any(axis=1).mean()),
                             "plausible_strength": float((judged & plaus).mean()), "judge_strength": float(judged.mean()),
                             "plausible": float(plaus.mean()), "melody_f1": float(melody), "chroma": float(chroma),
                             **{f: float(np.nanmean(feats[0][:, j])) for j, f in enumerate(ms.WINDOW_FEATURES)},
                             "windows": int(n)})
                print(rows[-1], flush=True)
    write_table(rows, COLUMNS, args.json)


if __name__ == "__main__":
    main()
