"""The extract stage: ``data/raw/`` (MIDI + manifest) -> window shards in ``data/shards/``.

Each file has its own error boundary: a corrupt, empty, non-MIDI, note-less or
drums-only file is skipped with a reason naming it, and the stage fails only when
the share of rejected files passes ``extract.max_reject_share``. Shards are
built in a temporary folder and renamed into place at the end, so a failed run
leaves nothing half-written.
"""

from __future__ import annotations

import csv
import io
import logging
import multiprocessing
import random
import resource
import time
from collections import Counter, deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import numpy as np
from tqdm import tqdm

from midistyle import layout
from midistyle.config import Params
from midistyle.errors import UserError
from midistyle.fileio import atomic_write_bytes, atomic_write_json, sha256_file, staged_dir
from midistyle.roll import RollError, RollSpec, read_piece, window_batch
from midistyle.shards import INDEX_NAME, SPLITS, Batch, ShardWriter

log = logging.getLogger(__name__)

MANIFEST_COLUMNS = ("style", "file", "source", "sha256")


@dataclass(frozen=True)
class RawPiece:
    style: str
    file: str  # relative to the raw folder
    sha256: str


def read_manifest(raw_dir: Path) -> list[RawPiece]:
    """The download stage's manifest, checked for its columns."""
    path = raw_dir / "manifest.csv"
    if not path.exists():
        raise UserError(f"{path}: no manifest (run `dvc repro download` first)")
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in MANIFEST_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise UserError(f"{path}: missing columns {missing}")
        rows = [RawPiece(r["style"], r["file"], r["sha256"]) for r in reader]
    if not rows:
        raise UserError(f"{path}: lists no files")
    return sorted(rows, key=lambda r: (r.style, r.file))


def split_pieces(pieces: list[RawPiece], val: float, test: float, seed: int) -> dict[str, str]:
    """file -> split, by piece, stratified by style, seeded (a seed of 0 is a seed).

    Each style's files are shuffled with their own generator; the first
    ``round(n * test)`` go to test and the next ``round(n * val)`` to val (at least
    one each when the share is positive and the style has three or more pieces).
    """
    by_style: dict[str, list[str]] = {}
    for p in pieces:
        by_style.setdefault(p.style, []).append(p.file)
    out: dict[str, str] = {}
    for style, files in sorted(by_style.items()):
        files = sorted(files)
        random.Random(f"{seed}:split:{style}").shuffle(files)
        n = len(files)
        n_test = max(round(n * test), 1 if test > 0 and n >= 3 else 0)
        n_val = max(round(n * val), 1 if val > 0 and n >= 3 else 0)
        for i, f in enumerate(files):
            out[f] = "test" if i < n_test else "val" if i < n_test + n_val else "train"
    return out


def _process(task: tuple) -> dict:
    """Worker: one file -> its windows, or the reason it was skipped."""
    path, expected_sha, spec, max_bytes = task
    try:
        if not path.exists():
            raise RollError(str(path), "missing", "listed in the manifest but not on disk")
        if expected_sha and sha256_file(path) != expected_sha:
            raise RollError(str(path), "checksum_mismatch", "sha256 differs from the manifest")
        piece = read_piece(path, spec, max_bytes)
        rolls, lengths, start = window_batch(piece, spec)
        if not len(lengths):
            raise RollError(str(path), "no_windows", "no window has enough notes")
    except RollError as exc:
        return {"error": exc.reason, "detail": exc.detail}
    return {
        "rolls": rolls,
        "lengths": lengths,
        "start": start,
        "steps": len(piece.roll),
        "bars": len(piece.bar_starts),
        "stats": piece.stats,
    }


def extract(params: Params, raw_dir: Path = layout.RAW, out_dir: Path = layout.SHARDS,
            splits_path: Path = layout.SPLITS, metrics_path: Path = layout.EXTRACT_METRICS,
            skipped_path: Path | None = None, progress: bool = True) -> dict:
    """Run the extract stage; returns the metrics it writes."""
    t0 = time.perf_counter()
    p = params.extract
    spec = RollSpec.from_params(p)
    workers = max(1, params.data.workers)
    with staged_dir(out_dir) as tmp_dir:
        # The workers start first: forked from a process that holds no collection yet,
        # their memory does not grow with it.
        with multiprocessing.get_context("fork").Pool(workers) if workers > 1 else _InlinePool() as pool:
            pieces = read_manifest(Path(raw_dir))
            styles = sorted({r.style for r in pieces})
            style_id = {s: i for i, s in enumerate(styles)}
            split_of = split_pieces(pieces, p.split.val, p.split.test, params.seed)

            # Files are parsed in a seeded shuffled order so that every shard mixes styles.
            order = list(range(len(pieces)))
            random.Random(f"{params.seed}:order").shuffle(order)
            max_bytes = int(p.max_file_mb * 1024 * 1024)
            tasks = ((Path(raw_dir) / pieces[i].file, pieces[i].sha256, spec, max_bytes) for i in order)

            writer = ShardWriter(tmp_dir, spec, styles, p.shard_windows)
            skipped: list[dict] = []
            piece_rows: list[dict] = []
            totals = Counter()
            try:
                results = _bounded_imap(pool, _process, tasks, ahead=4 * workers)
                for i, res in tqdm(zip(order, results), total=len(order), desc="extract", unit="file",
                                   mininterval=1.0, disable=not progress):
                    raw = pieces[i]
                    if "error" in res:
                        skipped.append({"style": raw.style, "file": raw.file, "reason": res["error"], "detail": res["detail"]})
                        log.warning("skipped %s: %s (%s)", raw.file, res["error"], res["detail"])
                        continue
                    piece_id = len(piece_rows)
                    n = len(res["lengths"])
                    split = split_of[raw.file]
                    piece_rows.append({"id": piece_id, "style": raw.style, "file": raw.file, "split": split,
                                       "windows": n, "steps": res["steps"], "bars": res["bars"]})
                    for key, value in res["stats"].items():
                        totals[key] += value
                    writer.add(split, Batch(res["rolls"], res["lengths"],
                                            np.full(n, style_id[raw.style], np.int16),
                                            np.full(n, piece_id, np.int32), res["start"]))
                shards = writer.close()
            except BaseException:
                writer.abort()
                raise
        rejected = len(skipped) / len(pieces)
        if rejected > p.max_reject_share:
            reasons = Counter(s["reason"] for s in skipped).most_common(3)
            raise UserError(
                f"{raw_dir}: {len(skipped)} of {len(pieces)} files rejected ({rejected:.0%} > "
                f"extract.max_reject_share {p.max_reject_share:.0%}); most common reasons: {reasons}"
            )
        windows = {sp: {st: sum(s["windows_per_style"][st] for s in shards if s["split"] == sp) for st in styles}
                   for sp in SPLITS}
        for st in styles:
            if windows["train"][st] == 0:
                raise UserError(f"{raw_dir}: style {st!r} has no training windows")
        index = {
            "format": 1,
            "spec": spec.to_dict(),
            "styles": styles,
            "window_steps": spec.window_steps,
            "n_pitches": spec.n_pitches,
            "windows": windows,
            "shards": shards,
            "pieces": piece_rows,
        }
        atomic_write_json(tmp_dir / INDEX_NAME, index)
        _write_skipped(tmp_dir / "skipped.csv", skipped)

    splits = {sp: sorted(r["file"] for r in piece_rows if r["split"] == sp) for sp in SPLITS}
    atomic_write_json(splits_path, {"seed": params.seed, "val": p.split.val, "test": p.split.test, **splits})
    elapsed = time.perf_counter() - t0
    self_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    child_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    metrics = {
        "files_seen": len(pieces),
        "files_parsed": len(piece_rows),
        "files_skipped": len(skipped),
        "skipped_by_reason": dict(sorted(Counter(s["reason"] for s in skipped).items())),
        "pieces_per_split": {sp: len(v) for sp, v in splits.items()},
        "windows": windows,
        "windows_total": sum(s["windows"] for s in shards),
        "shards": len(shards),
        "notes": totals["notes"],
        "notes_folded": totals["notes_folded"],
        "notes_dropped": totals["notes_dropped"],
        "timing": {
            "wall_seconds": round(elapsed, 2),
            "files_per_second": round(len(pieces) / elapsed, 2),
            "peak_rss_mb_main": round(self_rss, 1),
            "peak_rss_mb_worker": round(child_rss, 1),
        },
    }
    atomic_write_json(metrics_path, metrics)
    return metrics


def _write_skipped(path: Path, skipped: list[dict]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["style", "file", "reason", "detail"])
    for s in sorted(skipped, key=lambda s: (s["style"], s["file"])):
        writer.writerow([s["style"], s["file"], s["reason"], s["detail"]])
    atomic_write_bytes(path, buf.getvalue().encode())


def _bounded_imap(pool, fn, tasks: Iterable, ahead: int) -> Iterator:
    """``pool.imap`` in order, with at most ``ahead`` tasks submitted and not yet consumed.

    ``Pool.imap`` hands every task to the workers at once and keeps the results
    the caller has not reached yet, so when the caller (writing shards) is slower
    than the workers its memory grows with the collection. Here it is bounded by
    ``ahead`` files' windows.
    """
    pending: deque = deque()
    it = iter(tasks)
    for task in islice(it, ahead):
        pending.append(pool.apply_async(fn, (task,)))
    while pending:
        result = pending.popleft().get()
        for task in islice(it, 1):
            pending.append(pool.apply_async(fn, (task,)))
        yield result


class _InlinePool:
    """The Pool interface, in this process (workers: 1; easier to debug and profile)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def apply_async(self, fn, args):
        return _Done(fn(*args))


class _Done:
    """A result computed in this process, with the ``AsyncResult.get`` interface."""

    def __init__(self, value):
        self.value = value

    def get(self):
        return self.value
