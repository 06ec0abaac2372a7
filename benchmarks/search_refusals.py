"""Which attribute_search choices does the judge refuse, and what, judge-free, tells them apart? VALIDATION pieces.

For each direction, the validation windows are transferred by the real search
(:meth:`StyleTransfer.search_steps`) up to the direction's chosen alpha cap
(models/transfer_settings.json), with the path moves alone and with the
neighbour moves (``--neighbours`` of them, ``--knn-share`` the vote's least
target share; by default params.yaml's). Each choice is scored as the evaluate stage
scores windows (the judge's verdict for the target, plausible, both) and split
by its kind: a neighbour move, or a path move by the alpha that chose it.

Then, for the path moves alone that pass the search's checks without the
vote (latent classifier and texture band), each judge-free statistic of the decoded,
re-encoded window is set against the judge's verdict: its AUC is the chance
that a refused window scores higher than an accepted one (0.5: no signal).
The statistics: the latent classifier's probability for the target; the
Mahalanobis distance of the re-encoding to the target's Gaussian (and that
minus the source's); the share of target windows among the ``--knn`` sampled
training latents nearest it (:meth:`StyleTransfer.knn_share`); the distance to
the nearest sampled target latent; the texture's distance from the target's
median. Real validation windows of the target give each statistic's median
for reference. Test pieces are never read.

    python benchmarks/search_refusals.py [--directions classical_to_jazz] [--val-pieces 20] [--neighbours 8]
                                         [--knn-share 0] [--knn 16]
                                         [--json benchmarks/results/search_refusals.json]
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from midistyle import layout
from midistyle import musicstats as ms
from midistyle.judge import judge_verdicts
from midistyle.transfer import off_target, texture_miss
from valsearch import ValSearch

ALPHA_BINS = [(0, 1), (1, 2), (2, 4), (4, 10)]


def auc(score: np.ndarray, positive: np.ndarray) -> float:
    """P(a positive scores above a negative), ties counted half (the Mann-Whitney statistic)."""
    a, b = score[positive][:, None], score[~positive][None, :]
    if not a.size or not b.size:
        return float("nan")
    return float((a > b).mean() + 0.5 * (a == b).mean())


def mahalanobis(model, z: torch.Tensor, style: int) -> np.ndarray:
    d = (z - model.regions.means[style]).double()  # (N, Z)
    y = torch.linalg.solve_triangular(model.regions.chol[style].double(), d.T, upper=False)
    return (y ** 2).sum(0).sqrt().numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--directions", nargs="+", help="only these directions, as source_to_target (default: every one)")
    ap.add_argument("--val-pieces", type=int, help="validation pieces per style (default: transfer.val_pieces_per_style)")
    ap.add_argument("--neighbours", type=int, help="transfer.search_neighbours (default: params.yaml's)")
    ap.add_argument("--knn-share", type=float, help="transfer.search_min_knn_share (default: params.yaml's)")
    ap.add_argument("--knn", type=int, default=16, help="sampled training latents that vote (knn_share)")
    ap.add_argument("--json", default="benchmarks/results/search_refusals.json")
    args = ap.parse_args()
    val = ValSearch.load(args.val_pieces)
    model = val.model
    val.directions(args.directions)
    caps = json.loads(layout.TRANSFER_SETTINGS.read_text())["chosen"]["attribute_search"]
    spb = model.spec.steps_per_beat
    out = []
    for source, target, s, t, win, mu in val.directions(args.directions):
        n, lengths = len(mu), win.length
        space = replace(val.space, neighbours=args.neighbours or val.space.neighbours,
                        min_knn_share=val.space.min_knn_share if args.knn_share is None else args.knn_share)
        paths_only = replace(space, neighbour_steps=(), min_knn_share=0.0)  # the plain checks: what the judge refuses
        alphas = space.alphas(float(caps[f"{source}_to_{target}"]))
        alpha_of, previous = np.zeros(n), None
        for step in model.search_steps(mu, lengths, s, t, alphas, space, 1.0, sources=win.rolls):
            moved = np.ones(n, bool) if previous is None else (step.path_windows != previous).reshape(n, -1).any(1)
            alpha_of[moved] = step.alpha  # the alpha whose candidate is each window's path choice
            previous = step.path_windows.copy()
        chosen = step.windows
        neighbour = (chosen != step.path_windows).reshape(n, -1).any(1)
        for step in model.search_steps(mu, lengths, s, t, alphas, paths_only, 1.0, sources=win.rolls):
            pass
        path = step.path_windows
        judged, plaus, _ = val.judged(chosen[None], lengths, target)
        judged, plaus = judged[0], plaus[0]
        groups = {"every window": np.ones(n, bool), "neighbour move": neighbour, "path move": ~neighbour}
        for lo, hi in ALPHA_BINS:
            groups[f"path move, alpha in ({lo}, {hi}]"] = ~neighbour & (alpha_of > lo) & (alpha_of <= hi)
        kinds = [{"group": g, "windows": int(m.sum()), "judge": float(judged[m].mean()) if m.any() else None,
                  "plausible": float(plaus[m].mean()) if m.any() else None,
                  "plausible_strength": float((judged & plaus)[m].mean()) if m.any() else None}
                 for g, m in groups.items()]
        # the path moves alone: which of those passing the search's checks does the judge refuse?
        feats = ms.window_features(path, lengths, spb)
        z = model.encode_arrays(path, lengths)
        probs = model.style_probs(z)
        passes = ((texture_miss(feats, np.asarray(space.texture_bounds[target])) == 0)
                  & ~off_target(probs, t, space.min_probability))
        refused = judge_verdicts(val.judge, path, lengths) != t
        bank = model.regions.samples
        real = val.windows[target]
        zr = model.encode_arrays(real.rolls, real.length)
        stats = {  # higher: less like the target (the AUC's direction)
            "1 - latent classifier probability": (1 - probs[:, t], 1 - model.style_probs(zr)[:, t]),
            "Mahalanobis to the target": (mahalanobis(model, z, t), mahalanobis(model, zr, t)),
            "Mahalanobis: target - source": (mahalanobis(model, z, t) - mahalanobis(model, z, s),
                                             mahalanobis(model, zr, t) - mahalanobis(model, zr, s)),
            f"1 - knn share (k={args.knn})": (1 - model.knn_share(z, t, args.knn), 1 - model.knn_share(zr, t, args.knn)),
            "distance to the nearest target sample": (torch.cdist(z, bank[t]).min(1).values.numpy(),
                                                      torch.cdist(zr, bank[t]).min(1).values.numpy()),
            "texture distance from the target median": (
                space.texture_distance(feats, target),
                space.texture_distance(ms.window_features(real.rolls, real.length, spb), target)),
        }
        signals = [{"statistic": name, "auc": auc(v[passes], refused[passes]),
                    "accepted_median": float(np.median(v[passes & ~refused])),
                    "refused_median": float(np.median(v[passes & refused])),
                    "real_target_median": float(np.median(r))} for name, (v, r) in stats.items()]
        out.append({"direction": f"{source}_to_{target}", "windows": int(n), "neighbours": space.neighbours,
                    "min_knn_share": space.min_knn_share, "path_pass": float(passes.mean()),
                    "judge_given_path_pass": float((~refused[passes]).mean()), "kinds": kinds, "signals": signals})
        print(f"\n{source} -> {target}: {n} windows; path moves alone pass {passes.mean():.3f}, "
              f"the judge accepts {(~refused[passes]).mean():.3f} of those")
        print("| choice | windows | judge | plausible | plausible strength |\n|---|---:|---:|---:|---:|")
        for k in kinds:
            if k["windows"]:
                print(f"| {k['group']} | {k['windows']} | {k['judge']:.3f} | {k['plausible']:.3f} | "
                      f"{k['plausible_strength']:.3f} |")
        print("| statistic (path passes) | AUC refused > accepted | accepted median | refused median | real target median |")
        print("|---|---:|---:|---:|---:|")
        for g in signals:
            print(f"| {g['statistic']} | {g['auc']:.3f} | {g['accepted_median']:.3f} | {g['refused_median']:.3f} | "
                  f"{g['real_target_median']:.3f} |")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"split": "val", "rows": out}, indent=1) + "\n")


if __name__ == "__main__":
    main()
