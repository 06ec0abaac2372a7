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

from tqdm import tqdm

from midistyle import layout
from midistyle.config import Params
from midistyle.errors import UserError
from midistyle.fileio import atomic_write_bytes, atomic_write_json, sha256_bytes, sha256_file, staged_dir
from midistyle.roll import PieceNotes, RollError, RollSpec, note_windows, read_notes
from midistyle.shards import FORMAT as SHARD_FORMAT
from midistyle.shards import INDEX_NAME, SPLITS, PieceWindows, ShardWriter

log = logging.getLogger(__name__)

MANIFEST_COLUMNS = ("style", "file", "source", "sha256")


@dataclass(frozen=True, slots=True)
class RawPiece:
    style: str
    file: str  # relative to the raw folder
    sha256: str


@dataclass(slots=True)
class PieceRow:
    """A row of the index's piece table (a compact object: the stage holds one per file read)."""

    id: int
    style: str
    file: str
    split: str
    windows: int
    steps: int
    bars: int

    def to_dict(self) -> dict:
        return {f: getattr(self, f) for f in self.__slots__}


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


CHUNK = 8  # files per task handed to a worker process (fewer, larger messages)


def _process_chunk(tasks: list[tuple]) -> list[dict]:
    return [_process(task) for task in tasks]


def _process(task: tuple) -> dict:
    """Worker: one file -> its notes and windows, or the reason it was skipped."""
    path, expected_sha, spec, max_bytes = task
    try:
        notes = _read_checked(path, expected_sha, spec, max_bytes)
        start, lengths = note_windows(notes, spec)
        if not len(lengths):
            raise RollError(str(path), "no_windows", "no window has enough notes")
    except RollError as exc:
        return {"error": exc.reason, "detail": exc.detail}
    return {"start": start, "lengths": lengths, "on": notes.on, "off": notes.off, "cell": notes.cell,
            "steps": notes.total, "bars": len(notes.bar_starts), "stats": notes.stats}


def _read_checked(path: Path, expected_sha: str, spec: RollSpec, max_bytes: int) -> PieceNotes:
    """The file's notes, read once for its checksum and its parse (a file over ``max_bytes`` is hashed in blocks)."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise RollError(str(path), "missing", "listed in the manifest but not on disk") from None
    data = path.read_bytes() if size <= max_bytes else None
    if expected_sha and (sha256_bytes(data) if data is not None else sha256_file(path)) != expected_sha:
        raise RollError(str(path), "checksum_mismatch", "sha256 differs from the manifest")
    if data is None:  # midi_payload's reason, without reading the file
        raise RollError(str(path), "too_large", f"{size} bytes > {max_bytes}")
    return read_notes(path, spec, max_bytes, data)


@dataclass
class Plan:
    """What the stage reads: the manifest's pieces, their styles and splits, and the order they are read in."""

    pieces: list[RawPiece]
    styles: list[str]
    split_of: dict[str, str]
    order: list[int]  # a seeded shuffle of the pieces, so that every shard mixes styles


def plan_pieces(params: Params, raw_dir: Path) -> Plan:
    pieces = read_manifest(raw_dir)
    p = params.extract
    order = list(range(len(pieces)))
    random.Random(f"{params.seed}:order").shuffle(order)
    return Plan(pieces, sorted({r.style for r in pieces}), split_pieces(pieces, p.split.val, p.split.test, params.seed),
                order)


@dataclass
class Collected:
    """What reading every file gave: the shards written, the pieces kept, the files skipped, note counts."""

    shards: list[dict]
    pieces: list[PieceRow]
    skipped: list[dict]
    totals: Counter


def read_into_shards(pool, workers: int, plan: Plan, raw_dir: Path, out_dir: Path, spec: RollSpec,
                     params: Params, progress: bool) -> Collected:
    """Read every file (in ``plan.order``, through ``pool``) and write its windows into shards in ``out_dir``."""
    max_bytes = int(params.extract.max_file_mb * 1024 * 1024)
    tasks = ((raw_dir / plan.pieces[i].file, plan.pieces[i].sha256, spec, max_bytes) for i in plan.order)
    writer = ShardWriter(out_dir, spec, plan.styles, params.extract.shard_windows)
    got = Collected([], [], [], Counter())
    try:
        results = tqdm(zip(plan.order, _results(pool, workers, tasks)), total=len(plan.order), desc="extract",
                       unit="file", mininterval=1.0, disable=not progress)
        for i, res in results:
            _collect(got, writer, plan, plan.pieces[i], res)
        got.shards = writer.close()
    except BaseException:
        writer.abort()
        raise
    return got


def _results(pool, workers: int, tasks: Iterator[tuple]) -> Iterator[dict]:
    """Every task's result in order, through ``pool`` (in tasks of ``CHUNK`` files where there are workers)."""
    size = CHUNK if workers > 1 else 1
    chunks = iter(lambda: list(islice(tasks, size)), [])
    for done in _bounded_imap(pool, _process_chunk, chunks, ahead=4 * workers):
        yield from done


def _collect(got: Collected, writer: ShardWriter, plan: Plan, raw: RawPiece, res: dict) -> None:
    """One file's result: a skip with its reason, or a piece whose windows go to its split's shards."""
    if "error" in res:
        got.skipped.append({"style": raw.style, "file": raw.file, "reason": res["error"], "detail": res["detail"]})
        log.warning("skipped %s: %s (%s)", raw.file, res["error"], res["detail"])
        return
    piece_id = len(got.pieces)
    split = plan.split_of[raw.file]
    got.pieces.append(PieceRow(piece_id, raw.style, raw.file, split, len(res["lengths"]), res["steps"], res["bars"]))
    got.totals.update(res["stats"])
    writer.add(split, PieceWindows(res["start"], res["lengths"], plan.styles.index(raw.style), piece_id,
                                   res["on"], res["off"], res["cell"]))


def check_rejects(got: Collected, files: int, max_share: float, raw_dir: Path) -> None:
    rejected = len(got.skipped) / files
    if rejected > max_share:
        reasons = Counter(s["reason"] for s in got.skipped).most_common(3)
        raise UserError(f"{raw_dir}: {len(got.skipped)} of {files} files rejected ({rejected:.0%} > "
                        f"extract.max_reject_share {max_share:.0%}); most common reasons: {reasons}")


def windows_per_split(shards: list[dict], styles: list[str], raw_dir: Path) -> dict[str, dict[str, int]]:
    """Windows per split and style; every style needs training windows."""
    windows = {sp: {st: sum(s["windows_per_style"][st] for s in shards if s["split"] == sp) for st in styles}
               for sp in SPLITS}
    for st in styles:
        if windows["train"][st] == 0:
            raise UserError(f"{raw_dir}: style {st!r} has no training windows")
    return windows


def write_index(out_dir: Path, spec: RollSpec, styles: list[str], windows: dict, got: Collected) -> None:
    index = {
        "format": SHARD_FORMAT,
        "spec": spec.to_dict(),
        "styles": styles,
        "window_steps": spec.window_steps,
        "n_pitches": spec.n_pitches,
        "windows": windows,
        "shards": got.shards,
        "pieces": got.pieces,
    }
    atomic_write_json(out_dir / INDEX_NAME, index, default=PieceRow.to_dict)  # rows become dicts one at a time
    _write_skipped(out_dir / "skipped.csv", got.skipped)


def write_splits(path: Path, params: Params, pieces: list[PieceRow]) -> dict[str, list[str]]:
    splits = {sp: sorted(r.file for r in pieces if r.split == sp) for sp in SPLITS}
    p = params.extract
    atomic_write_json(path, {"seed": params.seed, "val": p.split.val, "test": p.split.test, **splits})
    return splits


def stage_metrics(plan: Plan, got: Collected, splits: dict, windows: dict, elapsed: float) -> dict:
    self_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    child_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {
        "files_seen": len(plan.pieces),
        "files_parsed": len(got.pieces),
        "files_skipped": len(got.skipped),
        "skipped_by_reason": dict(sorted(Counter(s["reason"] for s in got.skipped).items())),
        "pieces_per_split": {sp: len(v) for sp, v in splits.items()},
        "windows": windows,
        "windows_total": sum(s["windows"] for s in got.shards),
        "shards": len(got.shards),
        "notes": got.totals["notes"],
        "notes_folded": got.totals["notes_folded"],
        "notes_dropped": got.totals["notes_dropped"],
        "timing": {
            "wall_seconds": round(elapsed, 2),
            "files_per_second": round(len(plan.pieces) / elapsed, 2),
            "peak_rss_mb_main": round(self_rss, 1),
            "peak_rss_mb_worker": round(child_rss, 1),
        },
    }


def extract(params: Params, raw_dir: Path = layout.RAW, out_dir: Path = layout.SHARDS,
            splits_path: Path = layout.SPLITS, metrics_path: Path = layout.EXTRACT_METRICS,
            skipped_path: Path | None = None, progress: bool = True) -> dict:
    """Run the extract stage; returns the metrics it writes."""
    t0 = time.perf_counter()
    raw_dir = Path(raw_dir)
    spec = RollSpec.from_params(params.extract)
    workers = max(1, params.data.workers)
    with staged_dir(out_dir) as tmp_dir:
        # The workers start first: forked from a process that holds no collection yet,
        # their memory does not grow with it.
        with multiprocessing.get_context("fork").Pool(workers) if workers > 1 else _InlinePool() as pool:
            plan = plan_pieces(params, raw_dir)
            got = read_into_shards(pool, workers, plan, raw_dir, tmp_dir, spec, params, progress)
        check_rejects(got, len(plan.pieces), params.extract.max_reject_share, raw_dir)
        windows = windows_per_split(got.shards, plan.styles, raw_dir)
        write_index(tmp_dir, spec, plan.styles, windows, got)
    splits = write_splits(splits_path, params, got.pieces)
    metrics = stage_metrics(plan, got, splits, windows, time.perf_counter() - t0)
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
    ``ahead`` tasks' results.
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
