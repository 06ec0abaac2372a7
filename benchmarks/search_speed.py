"""attribute_search's time and memory: this tree's code against another revision's, side by side in one run.

The real search (:meth:`midistyle.transfer.StyleTransfer.search_steps`, every alpha up to ``--cap``, then the
neighbour moves) runs on ``--windows`` validation windows of one direction (every n-th of the source style's, in
shard order), with the committed models and ``params.yaml``'s search space (``--neighbours`` and
``--knn-share`` override transfer.search_neighbours and transfer.search_min_knn_share). Each round runs it once
with this tree's ``src/`` and once with ``--base``'s (``git archive``), each in a fresh process, alternating, and
reads its seconds, its peak resident memory and a digest of its choices (every window and hold at every alpha).
Prints the median seconds of each, their ratio, the peak memory and whether both chose the same.

    python benchmarks/search_speed.py --base f8c5d3e                       # default profile: baroque -> renaissance
    python benchmarks/search_speed.py --base f8c5d3e --direction classical_to_jazz --cap 8 \\
                                      --neighbours 16 --knn-share 0.5       # in a corpus clone
                                      [--windows 150] [--rounds 3] [--json benchmarks/results/search_speed.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Run in a fresh process with PYTHONPATH set to one revision's src/: the search, timed; one JSON line out.
WORKER = r"""
import dataclasses, hashlib, json, resource, sys, time
import numpy as np, torch
from midistyle import layout, tuning
from midistyle.config import load_params
from midistyle.shards import ShardIndex
from midistyle.transfer import StyleTransfer
a = json.loads(sys.argv[1])
torch.set_num_threads(a["threads"])
params = load_params("params.yaml")
index = ShardIndex.open(layout.SHARDS)
model = StyleTransfer.load()
space = tuning.search_space(index, params.transfer)
space = dataclasses.replace(space, **{k: v for k, v in (("neighbours", a["neighbours"]),
                                                        ("min_knn_share", a["knn_share"])) if v is not None})
source, target = (model.style_index(s) for s in a["direction"].split("_to_"))
val = index.load_split("val")
rows = np.flatnonzero(val.style == source)
rows = rows[:: max(len(rows) // a["windows"], 1)][: a["windows"]]
mu = model.encode_arrays(val.rolls[rows], val.lengths[rows])
digest = hashlib.sha256()
t0 = time.perf_counter()
for step in model.search_steps(mu, val.lengths[rows], source, target, space.alphas(a["cap"]), space, 1.0,
                               sources=val.rolls[rows]):
    digest.update(step.windows.tobytes()); digest.update(step.holds.tobytes())
seconds = time.perf_counter() - t0
print(json.dumps({"seconds": seconds, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "digest": digest.hexdigest(), "windows": int(len(rows))}))
"""


def export_src(rev: str, into: Path) -> Path:
    """``rev``'s src/ (git archive) under ``into``: its path to put on PYTHONPATH."""
    tar = into / "src.tar"
    with tar.open("wb") as f:
        subprocess.run(["git", "-C", str(ROOT), "archive", rev, "src"], stdout=f, check=True)
    with tarfile.open(tar) as t:
        t.extractall(into, filter="data")
    return into / "src"


def run(src: Path, args: dict) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src)}
    out = subprocess.run([sys.executable, "-c", WORKER, json.dumps(args)], env=env, capture_output=True, text=True)
    if out.returncode != 0:  # the worker's own error, not only its exit status
        sys.exit(f"search_speed: the search with {src} failed:\n{out.stderr.strip()}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True, help="the revision to compare with (a commit, tag or branch)")
    ap.add_argument("--direction", default="baroque_to_renaissance")
    ap.add_argument("--cap", type=float, default=4.0, help="the alpha cap the search climbs to")
    ap.add_argument("--windows", type=int, default=150)
    ap.add_argument("--neighbours", type=int, default=None)
    ap.add_argument("--knn-share", type=float, default=None)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    worker_args = {k: getattr(args, k) for k in ("direction", "cap", "windows", "neighbours", "knn_share", "threads")}
    results: dict[str, list[dict]] = {"base": [], "tree": []}
    with tempfile.TemporaryDirectory() as tmp:
        srcs = {"base": export_src(args.base, Path(tmp)), "tree": ROOT / "src"}
        for r in range(args.rounds):
            for name in (("base", "tree") if r % 2 == 0 else ("tree", "base")):
                results[name].append(run(srcs[name], worker_args))
                print(f"round {r + 1} {name}: {results[name][-1]['seconds']:.1f} s, "
                      f"{results[name][-1]['peak_mb']:.0f} MB", flush=True)
    med = {k: statistics.median(x["seconds"] for x in v) for k, v in results.items()}
    peak = {k: max(x["peak_mb"] for x in v) for k, v in results.items()}
    same = len({x["digest"] for v in results.values() for x in v}) == 1
    summary = {"base": args.base, **worker_args, "windows": results["tree"][0]["windows"], "rounds": args.rounds,
               "base_seconds": round(med["base"], 2), "tree_seconds": round(med["tree"], 2),
               "speedup": round(med["base"] / med["tree"], 2),
               "base_peak_mb": round(peak["base"]), "tree_peak_mb": round(peak["tree"]), "same_choices": same}
    print(f"{args.direction}, {summary['windows']} windows, cap {args.cap}: {args.base} {med['base']:.1f} s, "
          f"this tree {med['tree']:.1f} s (x{summary['speedup']:.2f}); peak {peak['base']:.0f} -> {peak['tree']:.0f} MB; "
          f"same choices: {same}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
