"""Peak memory of the extract stage on the corpus, and on the corpus four times over.

    python benchmarks/extract_memory.py                 # 1x and 4x the corpus, the stage's workers
    python benchmarks/extract_memory.py --copies 1 2 --files 300

Each size runs the extract stage (``midistyle.extract.extract`` with params.yaml)
in a fresh process over a temporary ``raw`` folder of symlinks to the corpus
files, copied under other names (``c0-…``, ``c1-…``) so that every copy is a
piece of its own. The stage reports the peak resident memory of its main process
and of its largest worker (``metrics.timing.peak_rss_mb_*``); the total is main +
workers x worker. Flat means the 4x total within 10 % of the 1x one.
Writes ``benchmarks/results/extract_memory.json``.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from extract_speed import CORPUS, corpus_files, raw_folder  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "extract_memory.json"

RUN = """
import json, sys
from pathlib import Path
from midistyle.config import load_params
from midistyle.extract import extract
raw, out, params = Path(sys.argv[1]), Path(sys.argv[2]), load_params(sys.argv[3])
m = extract(params, raw, out / "shards", out / "splits.json", out / "extract.json", progress=False)
print(json.dumps({k: m[k] for k in ("files_seen", "files_parsed", "windows_total", "shards", "timing")}))
"""


def measure(files, copies: int, params: Path) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"extract-mem-{copies}x-") as tmp:
        raw = raw_folder(files, Path(tmp), copies=copies)
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", RUN, str(raw), str(Path(tmp) / "out"), str(params)],
                              capture_output=True, text=True, env={"PYTHONPATH": str(ROOT / "src"),
                                                                   "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
        if proc.returncode:
            raise SystemExit(f"extract on {copies}x failed:\n{proc.stderr[-3000:]}")
        m = json.loads(proc.stdout.strip().splitlines()[-1])
        m["seconds"] = round(time.perf_counter() - t0, 1)
        return m


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=CORPUS)
    ap.add_argument("--files", type=int, default=None, help="a seeded selection (default: every corpus file)")
    ap.add_argument("--copies", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    ap.add_argument("--json", type=Path, default=OUT)
    args = ap.parse_args(argv)
    from midistyle.config import load_params

    workers = load_params(args.params).data.workers
    files = corpus_files(args.corpus)
    if args.files is not None:
        files = sorted(random.Random(0).sample(files, min(args.files, len(files))))
    runs = {}
    for copies in args.copies:
        m = measure(files, copies, args.params)
        t = m["timing"]
        total = t["peak_rss_mb_main"] + workers * t["peak_rss_mb_worker"] if workers > 1 else t["peak_rss_mb_main"]
        runs[f"{copies}x"] = {"files": m["files_seen"], "windows": m["windows_total"], "shards": m["shards"],
                              "seconds": m["seconds"], "peak_rss_mb_main": t["peak_rss_mb_main"],
                              "peak_rss_mb_worker": t["peak_rss_mb_worker"], "peak_rss_mb_total": round(total, 1)}
        r = runs[f"{copies}x"]
        print(f"{copies}x: {r['files']} files, {r['windows']} windows in {r['seconds']} s: peak RSS main "
              f"{r['peak_rss_mb_main']} MB, worker {r['peak_rss_mb_worker']} MB, total {r['peak_rss_mb_total']} MB")
    first, last = runs[f"{args.copies[0]}x"], runs[f"{args.copies[-1]}x"]
    growth = last["peak_rss_mb_total"] / first["peak_rss_mb_total"] - 1
    result = {"workers": workers, "runs": runs, "growth": round(growth, 3), "flat": abs(growth) <= 0.10}
    print(f"peak memory {args.copies[-1]}x vs {args.copies[0]}x: {growth:+.1%} ({'flat' if result['flat'] else 'GROWS'})")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
