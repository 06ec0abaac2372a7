"""The extract stage's windows at two revisions, compared: the proof that a change to it changes no window.

    python benchmarks/extract_identity.py --raw data/raw               # the default profile's files
    python benchmarks/extract_identity.py --files 800 --old 76aef21    # a seeded selection of ../shared/corpus

Each revision's ``src/`` (the old one from ``git archive``, the new one this
checkout) runs the extract stage in a process of its own on the same raw folder
and params, then reads every shard back through its own ``ShardIndex.read_shard``
and prints, per shard, the sha256 of each array of the Batch (rolls, lengths,
style, piece, start: bytes, dtype and shape). Equal digests for every shard, the
same piece table and the same splits.json mean the same windows in the same order,
whatever the shards' format on disk. Exits 1 on any difference.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from extract_speed import CORPUS, corpus_files, raw_folder  # noqa: E402

RUN = """
import hashlib, json, sys
from pathlib import Path
from midistyle.config import load_params
from midistyle.extract import extract
from midistyle.shards import ShardIndex
raw, out, params = Path(sys.argv[1]), Path(sys.argv[2]), load_params(sys.argv[3])
m = extract(params, raw, out / "shards", out / "splits.json", out / "extract.json", progress=False)
index = ShardIndex.open(out / "shards")
digests = []
for shard in index.shards:
    b = index.read_shard(shard)
    d = {}
    for f in ("rolls", "lengths", "style", "piece", "start"):
        a = getattr(b, f)
        d[f] = hashlib.sha256(f"{a.dtype}{a.shape}".encode() + a.tobytes()).hexdigest()
    digests.append({"file": shard["file"], "split": shard["split"], "windows": shard["windows"],
                    "windows_per_style": shard["windows_per_style"], **d})
print(json.dumps({"shards": digests, "pieces": index.pieces, "styles": index.styles,
                  "splits": json.loads((out / "splits.json").read_text()),
                  "metrics": {k: v for k, v in m.items() if k != "timing"}}))
"""


def run_at(src: Path, raw: Path, out: Path, params: Path) -> dict:
    proc = subprocess.run([sys.executable, "-c", RUN, str(raw), str(out), str(params)], capture_output=True,
                          text=True, env={"PYTHONPATH": str(src), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    if proc.returncode:
        raise SystemExit(f"extract with {src} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def old_source(rev: str, into: Path) -> Path:
    """``src/`` of the revision ``rev``, unpacked under ``into``."""
    tar = into / "old.tar"
    subprocess.run(["git", "-C", str(ROOT), "archive", "-o", str(tar), rev, "src"], check=True)
    with tarfile.open(tar) as t:
        t.extractall(into / "old", filter="data")
    return into / "old" / "src"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old", default="main", help="the revision to compare against (default: main)")
    ap.add_argument("--raw", type=Path, help="a raw folder with manifest.csv (default: corpus files)")
    ap.add_argument("--corpus", type=Path, default=CORPUS)
    ap.add_argument("--files", type=int, default=800)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="extract-identity-") as tmp:
        tmp = Path(tmp)
        if args.raw is None:
            files = corpus_files(args.corpus)
            files = sorted(random.Random(args.seed).sample(files, min(args.files, len(files))))
            raw = raw_folder(files, tmp)
        else:
            raw = args.raw.resolve()
        old = run_at(old_source(args.old, tmp), raw, tmp / "out-old", args.params)
        new = run_at(ROOT / "src", raw, tmp / "out-new", args.params)
    windows = sum(s["windows"] for s in new["shards"])
    print(f"{args.old}: {len(old['shards'])} shards, {sum(s['windows'] for s in old['shards'])} windows; "
          f"this tree: {len(new['shards'])} shards, {windows} windows, {len(new['pieces'])} pieces")
    bad = [k for k in ("styles", "pieces", "splits", "metrics") if old[k] != new[k]]
    for a, b in zip(old["shards"], new["shards"]):
        diff = [k for k in a if a[k] != b.get(k)]
        if diff:
            bad.append(f"{a['file']}: {diff}")
    if len(old["shards"]) != len(new["shards"]):
        bad.append("shard count")
    if bad:
        print("DIFFERENT:", *bad[:20], sep="\n  ")
        return 1
    print("identical: every shard's rolls, lengths, styles, pieces and starts, the piece table, splits and metrics")
    return 0


if __name__ == "__main__":
    sys.exit(main())
