"""How much do the transfer figures depend on the judge's own initial weights?

The judge (a panel of two members, midistyle.judge) is trained again with
other seeds - same params, same training windows, only the initial weights and
batch order differ - and every output of the transfer stage is judged by each
panel exactly as the evaluate stage judges it (midistyle.evaluate's Listener
and compare: the source's audible windows, plausibility against the target's
real test windows). Per seed: the panel's accuracy on real test windows, and
per method and direction strength, plausible strength and each member's
strength alone. The committed judge is the top-level ``seed``; its row
reproduces metrics/eval.json.

A spread between seeds far above the spread on real test windows means the
transfers lie where the judges were never taught, and a figure's last digit
there is the judge's, not the music's.

    python benchmarks/judge_seeds.py [--seeds 1234,2,3] [--methods attribute_search] [--json ...]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from midistyle import layout
from midistyle import musicstats as ms
from midistyle.config import load_params
from midistyle.evaluate import Listener, compare
from midistyle.fitting import classification_metrics
from midistyle.judge import judge_verdicts, load_judge, train_panel
from midistyle.shards import ShardIndex
from written import roll_spec, written


def test_bounds(index: ShardIndex) -> dict[str, np.ndarray]:
    """Plausibility bounds per style from its real test windows (as the evaluate stage sets them)."""
    test = index.load_split("test")
    features = ms.window_features(test.rolls, test.lengths, index.spec.steps_per_beat)
    return {s: ms.plausible_bounds(features[test.style == i]) for i, s in enumerate(index.styles)}


def judge_outputs(panel, methods: tuple[str, ...], bounds: dict, styles: list[str]) -> dict[str, dict]:
    """Per "METHOD: SOURCE -> TARGET": pooled strength, plausible strength and each member's strength."""
    spec = roll_spec()
    listener = Listener(panel, spec)
    sums: dict[str, dict[str, float]] = {}
    for row, output, source, _ in written(methods):
        record = compare(listener.hear(output), listener.hear(source), styles.index(row["target_style"]),
                         spec.pitch_low, bounds[row["target_style"]])
        key = f"{row['method']}: {row['source_style']} -> {row['target_style']}"
        s = sums.setdefault(key, {})
        for name, value in (("hits", record["hits"]), ("plausible_hits", record["plausible_hits"]),
                            ("windows", record["windows"]), *record["hits_by_judge"].items()):
            s[name] = s.get(name, 0) + value
    out = {}
    for key, s in sorted(sums.items()):
        n = max(s["windows"], 1)
        out[key] = {"strength": s["hits"] / n, "plausible_strength": s["plausible_hits"] / n, "windows": s["windows"],
                    **{f"strength_{m}": s[m] / n for m in panel.members}}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default=None, help="comma-separated judge seeds (default: the committed one, 2, 3)")
    ap.add_argument("--methods", default="attribute_search", help="comma-separated methods whose outputs are judged")
    ap.add_argument("--json", default="benchmarks/results/judge_seeds.json")
    args = ap.parse_args()
    params = load_params("params.yaml")
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else [params.seed, 2, 3]
    methods = tuple(args.methods.split(","))
    index = ShardIndex.open(layout.SHARDS)
    bounds = test_bounds(index)
    test = index.load_split("test")
    rows = []
    for seed in seeds:
        t0 = time.perf_counter()
        if seed == params.seed:
            panel, _ = load_judge(layout.JUDGE)  # the committed judge is this seed's
        else:
            panel, _ = train_panel(index, params.judge, seed)
        real = classification_metrics(test.style, judge_verdicts(panel, test.rolls, test.lengths), index.styles)
        outputs = judge_outputs(panel, methods, bounds, index.styles)
        rows.append({"seed": seed, "committed": seed == params.seed, "real_test_accuracy": real["accuracy"],
                     "real_test_balanced_accuracy": real["balanced_accuracy"], "outputs": outputs,
                     "seconds": round(time.perf_counter() - t0, 1)})
        print(f"judge seed {seed}: real test windows accuracy {real['accuracy']:.4f} "
              f"(balanced {real['balanced_accuracy']:.4f}), {rows[-1]['seconds']} s")
        for key, o in outputs.items():
            members = "  ".join(f"{k[len('strength_'):]} {v:.3f}" for k, v in o.items() if k.startswith("strength_"))
            print(f"  {key:45s} plausible strength {o['plausible_strength']:.3f}  strength {o['strength']:.3f}  "
                  f"({members})")
    spread = {}
    for key in rows[0]["outputs"]:
        values = [r["outputs"][key]["plausible_strength"] for r in rows]
        spread[key] = {"min": min(values), "max": max(values), "mean": float(np.mean(values))}
        print(f"{key:45s} plausible strength over {len(rows)} judge seeds: {min(values):.3f}-{max(values):.3f}")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"split": "test", "seeds": rows, "plausible_strength_spread": spread},
                                          indent=1) + "\n")


if __name__ == "__main__":
    main()
