"""The extract stage's speed beside symusic's own, on the same files in one run.

    python benchmarks/extract_speed.py                    # 800 corpus files, seeded selection
    python benchmarks/extract_speed.py --files 200 --seed 3 --json out.json

Measured side by side (the same files, the page cache warmed by a first pass),
in ``--rounds`` interleaved rounds (default 3) of which each contender keeps its
best: on a shared machine the best round is the least disturbed one, for every
contender alike (the slow pretty_midi reference runs once):

* ``project_1proc``: the extract stage (``midistyle.extract.extract``: checksum,
  read, notes, windows, splits, shards written) with ``data.workers: 1``;
* ``project_workers``: the same with the stage's ``data.workers`` from params.yaml;
* ``reader_1proc``: ``midistyle.roll.read_piece`` alone (symusic parse + our roll);
* ``reference_1proc``: the pretty_midi reader (``read_piece_reference``);
* ``shard_write_seconds``: serialising and writing (with fsync) the shards the
  one-process run wrote, again, for scale (the stage does it on a background thread);
* ``symusic``: symusic's own load + 16th-grid ``resample`` + ``pianoroll`` (onset and
  frame) per file, one process: the floor a roll reader can reach.

``ratio`` = symusic files/s / project one-process files/s (the goal is <= 3).
Writes ``benchmarks/results/extract.json``.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import platform
import random
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from midistyle.config import load_params
from midistyle.extract import extract
from midistyle.fileio import sha256_file
from midistyle.roll import RollError, RollSpec, read_piece, read_piece_reference
from midistyle.shards import write_shard

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "corpus"
OUT = ROOT / "benchmarks" / "results" / "extract.json"


def corpus_files(corpus: Path) -> list[tuple[str, Path]]:
    """(style, path) of every MIDI file of the corpus, from its MANIFEST.tsv."""
    with open(corpus / "MANIFEST.tsv", newline="", encoding="utf-8") as fh:
        return [(r["style"], corpus / r["path"]) for r in csv.DictReader(fh, delimiter="\t")]


def raw_folder(files: list[tuple[str, Path]], root: Path, copies: int = 1) -> Path:
    """A ``data/raw``-like folder of symlinks to ``files`` (each ``copies`` times, under other names) + manifest."""
    raw = root / "raw"
    rows = []
    for k in range(copies):
        for style, path in files:
            rel = f"{style}/c{k}-{path.name}" if copies > 1 else f"{style}/{path.name}"
            (raw / style).mkdir(parents=True, exist_ok=True)
            os.symlink(path.resolve(), raw / rel)
            rows.append({"style": style, "file": rel, "source": f"local:{path}", "sha256": sha256_file(path)})
    with open(raw / "manifest.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=["style", "file", "source", "sha256"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(sorted(rows, key=lambda r: (r["style"], r["file"])))
    return raw


def run_extract(params, raw: Path, out: Path, workers: int) -> dict:
    p = dataclasses.replace(params, data=dataclasses.replace(params.data, workers=workers))
    return extract(p, raw, out / "shards", out / "splits.json", out / "extract.json", progress=False)


def shard_write_seconds(shards: Path, scratch: Path) -> float:
    """Time to serialise and write the run's shards again, as the stage's writer thread does (byte for byte)."""
    arrays = []
    for path in sorted(shards.glob("*.npz")):
        with np.load(path) as z:
            arrays.append((path.name, {k: z[k] for k in z.files}))
    t0 = time.perf_counter()
    for name, a in arrays:
        write_shard(scratch / name, a)
    return time.perf_counter() - t0


def rate(fn, paths: list[Path]) -> float:
    t0 = time.perf_counter()
    for path in paths:
        fn(path)
    return len(paths) / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=CORPUS)
    ap.add_argument("--files", type=int, default=800)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    ap.add_argument("--json", type=Path, default=OUT)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds; each contender keeps its best")
    args = ap.parse_args(argv)
    import symusic

    warnings.filterwarnings("ignore", category=RuntimeWarning)  # pretty_midi on meta events outside track 0
    params = load_params(args.params)
    spec = RollSpec.from_params(params.extract)
    files = corpus_files(args.corpus)
    files = sorted(random.Random(args.seed).sample(files, min(args.files, len(files))))
    paths = [p for _, p in files]
    for p in paths:  # warm the page cache so that no contender pays for the disk
        p.read_bytes()

    def ours(path):
        try:
            read_piece(path, spec, None)
        except RollError:
            pass

    def reference(path):
        try:
            read_piece_reference(path, spec, None)
        except RollError:
            pass

    def symusic_roll(path):
        score = symusic.Score(str(path)).resample(tpq=spec.steps_per_beat, min_dur=1)
        return score.pianoroll(modes=["onset", "frame"], pitch_range=[spec.pitch_low, spec.pitch_high + 1],
                               encode_velocity=False)

    result = {"files": len(paths), "seed": args.seed, "corpus": os.path.relpath(args.corpus, ROOT),
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                          "symusic": symusic.__version__},
              "workers": params.data.workers, "rounds": args.rounds}
    rates = {"reference_1proc": rate(reference, paths)}

    def keep_best(key: str, value: float) -> None:
        rates[key] = max(rates.get(key, 0.0), value)

    with tempfile.TemporaryDirectory(prefix="extract-speed-") as tmp:
        raw = raw_folder(files, Path(tmp))
        for r in range(args.rounds):
            keep_best("symusic", rate(symusic_roll, paths))
            keep_best("reader_1proc", rate(ours, paths))
            for key, workers in (("project_1proc", 1), ("project_workers", params.data.workers)):
                out = Path(tmp) / key
                shutil.rmtree(out, ignore_errors=True)
                t0 = time.perf_counter()
                m = run_extract(params, raw, out, workers)
                keep_best(key, len(paths) / (time.perf_counter() - t0))
                result.setdefault("windows", m["windows_total"])
                result.setdefault("skipped", m["files_skipped"])
        result["project_1proc_seconds"] = round(len(paths) / rates["project_1proc"], 2)
        result["shard_write_seconds"] = round(shard_write_seconds(Path(tmp) / "project_1proc" / "shards",
                                                                  Path(tmp) / "again"), 2)
    result["files_per_second"] = {k: round(v, 1) for k, v in rates.items()}
    result["ratio"] = round(rates["symusic"] / rates["project_1proc"], 2)
    result["ratio_reader"] = round(rates["symusic"] / rates["reader_1proc"], 2)
    result["speedup_over_reference"] = round(rates["project_1proc"] / rates["reference_1proc"], 1)
    fps = result["files_per_second"]
    print(f"{len(paths)} files, {result['windows']} windows ({result['skipped']} skipped)")
    print(f"  symusic load + resample + pianoroll  {fps['symusic']:8.1f} files/s")
    print(f"  our reader (read_piece)              {fps['reader_1proc']:8.1f} files/s")
    print(f"  extract stage, 1 process             {fps['project_1proc']:8.1f} files/s")
    print(f"  extract stage, {params.data.workers} workers            {fps['project_workers']:8.1f} files/s")
    print(f"  pretty_midi reader (reference)       {fps['reference_1proc']:8.1f} files/s")
    print(f"  of the extract's {result['project_1proc_seconds']} s in one process, writing the shards alone "
          f"takes {result['shard_write_seconds']} s (on a background thread)")
    print(f"  ratio = symusic / extract 1 process = {result['ratio']} (goal <= 3); "
          f"symusic / reader = {result['ratio_reader']}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
