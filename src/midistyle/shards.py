"""Window shards on disk: the extract stage writes them, training streams them.

Layout of ``data/shards/``::

    index.json            format, spec, styles, pieces, shards (windows per style, sha256)
    train-00000.npz ...   at most ``shard_windows`` windows each
    val-00000.npz, test-00000.npz

A shard holds its windows as the notes they are cut from, not as rolls: the
windows of a piece overlap (2-bar windows hop one bar), so rolls would store
every step twice, and a roll is 98 % empty. For N windows and M notes (format 2,
``FORMAT``; arrays of a stored, uncompressed ``.npz``)::

    offset      int32 (N,)   first step of the window on the shard's timeline
    lengths     int32 (N,)   steps holding music; the rest is padding
    style       int16 (N,)   index into index["styles"]
    piece       int32 (N,)   index into index["pieces"]
    start       int32 (N,)   first step of the window in its piece
    note_start  int32 (M,)   first step the note sounds on the timeline
    note_end    int32 (M,)   step after its last (> note_start)
    note_cell   int16 (M,)   hand * P + pitch row
    note_onset  bool  (M,)   whether it marks an onset at note_start (a note cut at a
                             segment's first step sounds on without one)

The timeline is each piece's steps that the shard's windows cover, one piece's
segment after the other. :meth:`ShardIndex.read_shard` paints the timeline
(:func:`midistyle.roll.paint_roll`) and cuts the windows: a :class:`Batch` of
rolls (N, W, 2, 2, P), exactly the windows :func:`midistyle.roll.window_batch`
cuts from the piece's roll. Reading holds one shard in memory at a time, so
memory is bounded by the shard size, not the collection.
"""

from __future__ import annotations

import json
import zipfile
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from midistyle import layout
from midistyle.errors import UserError
from midistyle.fileio import atomic_write_bytes, npz_bytes, sha256_bytes, sha256_file
from midistyle.roll import RollSpec, paint_roll, window_rolls

SPLITS = ("train", "val", "test")
FIELDS = ("rolls", "lengths", "style", "piece", "start")
INDEX_NAME = "index.json"
FORMAT = 2
WINDOW_ARRAYS = {"offset": np.int32, "lengths": np.int32, "style": np.int16, "piece": np.int32, "start": np.int32}
NOTE_ARRAYS = {"note_start": np.int32, "note_end": np.int32, "note_cell": np.int16, "note_onset": np.bool_}


@dataclass
class Batch:
    rolls: np.ndarray  # bool (B, W, 2, 2, P)
    lengths: np.ndarray  # int (B,)
    style: np.ndarray  # int (B,)
    piece: np.ndarray  # int (B,)
    start: np.ndarray  # int (B,)

    def __len__(self) -> int:
        return len(self.lengths)

    @classmethod
    def concat(cls, parts: list["Batch"]) -> "Batch":
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in FIELDS))

    def take(self, idx) -> "Batch":
        return Batch(*(getattr(self, f)[idx] for f in FIELDS))


@dataclass
class PieceWindows:
    """One piece's windows as the extract stage hands them to :class:`ShardWriter`: spans and the piece's notes."""

    start: np.ndarray  # (N,) first step of each window in the piece, ascending
    lengths: np.ndarray  # (N,)
    style: int
    piece: int
    note_on: np.ndarray  # (M,) the piece's notes (midistyle.roll.PieceNotes)
    note_off: np.ndarray
    note_cell: np.ndarray

    def __len__(self) -> int:
        return len(self.lengths)

    def segment(self, a: int, b: int) -> dict:
        """Windows ``a:b`` and the notes they need, on a timeline of the steps ``lo:hi`` they cover."""
        start, lengths = self.start[a:b], self.lengths[a:b]
        lo, hi = int(start[0]), int((start + lengths).max())
        on, off, cell = self.note_on, self.note_off, self.note_cell
        if lo > 0 or hi < int(off.max()):  # cut the notes to the segment
            keep = (on < hi) & (off > lo)
            on, off, cell = on[keep], off[keep], cell[keep]
            onset = on >= lo
            on, off = np.maximum(on, lo) - lo, np.minimum(off, hi) - lo
        else:
            onset = np.ones(len(on), bool)
        return {"offset": start - lo, "lengths": lengths, "start": start, "style": self.style, "piece": self.piece,
                "note_start": on, "note_end": off, "note_cell": cell, "note_onset": onset, "steps": hi - lo}


class ShardWriter:
    """Collects windows per split and writes a shard whenever ``shard_windows`` are ready.

    A piece's windows go into the shard being filled, in order; where they do not
    fit, the rest start the next shard (each shard holds the notes its windows
    need). Serialising and writing a shard happen on a background thread while
    the caller reads the next files; at most ``max_pending`` shards wait there,
    so memory stays bounded by a few shards. :meth:`close` waits for every shard;
    on failure, :meth:`abort` stops the thread.
    """

    def __init__(self, out_dir: Path, spec: RollSpec, styles: list[str], shard_windows: int, max_pending: int = 2):
        self.out_dir, self.spec, self.styles = Path(out_dir), spec, styles
        self.shard_windows = shard_windows
        self.segments: dict[str, list[dict]] = {s: [] for s in SPLITS}  # of the shard being filled
        self.buffered = dict.fromkeys(SPLITS, 0)
        self.shards: list[dict] = []
        self.max_pending = max_pending
        self._pending: deque[tuple[dict, Future]] = deque()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shard-writer")
        self.out_dir.mkdir(parents=True, exist_ok=True)

    def add(self, split: str, windows: PieceWindows) -> None:
        """Add a piece's windows to the split's shard; a full shard is written."""
        done = 0
        while done < len(windows):
            n = min(len(windows) - done, self.shard_windows - self.buffered[split])
            self.segments[split].append(windows.segment(done, done + n))
            self.buffered[split] += n
            done += n
            if self.buffered[split] == self.shard_windows:
                self._flush(split)

    def _flush(self, split: str) -> None:
        segments, n = self.segments[split], self.buffered[split]
        self.segments[split], self.buffered[split] = [], 0
        base = np.cumsum([0] + [seg["steps"] for seg in segments[:-1]]).tolist()
        windows = [len(seg["lengths"]) for seg in segments]
        arrays = {"style": np.repeat(np.array([seg["style"] for seg in segments], np.int16), windows),
                  "piece": np.repeat(np.array([seg["piece"] for seg in segments], np.int32), windows)}
        for key, dtype in (WINDOW_ARRAYS | NOTE_ARRAYS).items():
            if key in arrays:
                continue
            if key in ("offset", "note_start", "note_end"):  # onto the shard's timeline
                arrays[key] = np.concatenate([seg[key] + b for seg, b in zip(segments, base)]).astype(dtype)
            else:
                arrays[key] = np.concatenate([seg[key] for seg in segments]).astype(dtype)
        k = sum(1 for s in self.shards if s["split"] == split)
        name = f"{split}-{k:05d}.npz"
        counts = np.bincount(arrays["style"], minlength=len(self.styles))
        entry = {
            "file": name,
            "split": split,
            "windows": int(n),
            "windows_per_style": {s: int(c) for s, c in zip(self.styles, counts)},
            "sha256": None,
        }
        self.shards.append(entry)
        while len(self._pending) >= self.max_pending:
            self._finish_one()
        self._pending.append((entry, self._pool.submit(write_shard, self.out_dir / name, arrays)))

    def _finish_one(self) -> None:
        entry, future = self._pending.popleft()
        entry["sha256"] = future.result()  # re-raises the writer's exception here

    def close(self) -> list[dict]:
        for split in SPLITS:
            if self.buffered[split]:
                self._flush(split)
        while self._pending:
            self._finish_one()
        self._pool.shutdown()
        return self.shards

    def abort(self) -> None:
        """Stop without waiting for the result (the caller removes the folder)."""
        for _, future in self._pending:
            future.cancel()
        self._pool.shutdown(wait=True)
        self._pending.clear()


def write_shard(path: Path, arrays: dict[str, np.ndarray]) -> str:
    data = npz_bytes(arrays, compress=False)
    atomic_write_bytes(path, data)
    return sha256_bytes(data)


def decode_shard(arrays: dict[str, np.ndarray], spec: RollSpec, name: str) -> Batch:
    """A shard's arrays (format 2) -> its windows, checked: a :class:`UserError` naming ``name`` if they do not fit."""
    expected = WINDOW_ARRAYS | NOTE_ARRAYS
    if sorted(arrays) != sorted(expected):
        raise UserError(f"{name}: holds arrays {sorted(arrays)}, shard format {FORMAT} has {sorted(expected)} "
                        "(re-run `dvc repro extract`)")
    for key, dtype in expected.items():
        a = arrays[key]
        if a.dtype != dtype or a.ndim != 1:
            raise UserError(f"{name}: {key} is {a.dtype} {a.shape}, expected 1-d {np.dtype(dtype)}")
    n, m = len(arrays["offset"]), len(arrays["note_start"])
    if any(len(arrays[k]) != n for k in WINDOW_ARRAYS) or any(len(arrays[k]) != m for k in NOTE_ARRAYS):
        raise UserError(f"{name}: window or note arrays of different lengths")
    offset, lengths = arrays["offset"].astype(np.int64), arrays["lengths"].astype(np.int64)
    steps = int((offset + lengths).max()) if n else 0
    start, end, cell = arrays["note_start"], arrays["note_end"], arrays["note_cell"]
    if n and ((offset < 0).any() or (lengths < 1).any() or (lengths > spec.window_steps).any()):
        raise UserError(f"{name}: a window outside 1..{spec.window_steps} steps or before the timeline")
    if m and ((start < 0).any() or (end <= start).any() or (end > steps).any()
              or (cell < 0).any() or (cell >= 2 * spec.n_pitches).any()):
        raise UserError(f"{name}: a note outside the timeline of {steps} steps or {2 * spec.n_pitches} cells")
    timeline = paint_roll(start, end, cell, arrays["note_onset"], steps, spec.n_pitches)
    return Batch(window_rolls(timeline, offset, lengths, spec.window_steps), arrays["lengths"], arrays["style"],
                 arrays["piece"], arrays["start"])


class ShardIndex:
    """The extract stage's output, opened for reading."""

    def __init__(self, root: Path, index: dict):
        self.root = Path(root)
        if index.get("format") != FORMAT:
            raise UserError(f"{self.root / INDEX_NAME}: shard format {index.get('format')!r}, this version reads "
                            f"format {FORMAT} (re-run `dvc repro extract`)")
        self.index = index
        self.styles: list[str] = index["styles"]
        self.spec = RollSpec(**index["spec"])
        self.shards: list[dict] = index["shards"]
        self.pieces: list[dict] = index["pieces"]

    @classmethod
    def open(cls, root: str | Path = layout.SHARDS) -> "ShardIndex":
        path = Path(root) / INDEX_NAME
        if not path.exists():
            raise UserError(f"{path}: no shard index (run `dvc repro extract` first)")
        try:
            index = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}: not valid JSON ({exc.msg})") from None
        return cls(Path(root), index)

    def content_hash(self) -> str:
        """sha256 of index.json, which holds every shard's sha256: names the data exactly."""
        return sha256_file(self.root / INDEX_NAME)

    def count(self, split: str) -> int:
        return sum(s["windows"] for s in self.shards if s["split"] == split)

    def style_counts(self, split: str) -> np.ndarray:
        return np.array([sum(s["windows_per_style"][st] for s in self.shards if s["split"] == split) for st in self.styles])

    def read_shard(self, shard: dict, verify: bool = False) -> Batch:
        path = self.root / shard["file"]
        if verify and sha256_file(path) != shard["sha256"]:
            raise UserError(f"{path}: sha256 does not match {INDEX_NAME} (re-run `dvc repro extract`)")
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:  # missing, truncated, not an .npz
            raise UserError(f"{path}: cannot be read as a shard ({exc}) (re-run `dvc repro extract`)") from None
        batch = decode_shard(arrays, self.spec, str(path))
        if len(batch) != shard["windows"]:
            raise UserError(f"{path}: {len(batch)} windows, {INDEX_NAME} says {shard['windows']}")
        return batch

    def load_split(self, split: str, limit: int | None = None) -> Batch:
        """Every window of a split in one Batch (for the small val/test splits)."""
        parts, n = [], 0
        for shard in self.shards:
            if shard["split"] != split:
                continue
            parts.append(self.read_shard(shard))
            n += len(parts[-1])
            if limit is not None and n >= limit:
                break
        if not parts:
            raise UserError(f"{self.root}: no {split} windows")
        batch = Batch.concat(parts)
        return batch.take(slice(0, limit)) if limit is not None else batch

    def epoch_quota(self, split: str, max_windows: int | None, balance_styles: bool = False) -> np.ndarray:
        """Windows of each style one epoch uses: all of them, or ``max_windows`` in all.

        With ``balance_styles`` the budget is shared equally between styles (a
        style with fewer windows keeps all of them and leaves the rest to the
        others), so a large style cannot drown the small ones; otherwise every
        style keeps the same share of its windows.
        """
        counts = self.style_counts(split)
        if max_windows is None or max_windows >= counts.sum():
            return counts
        if not balance_styles:
            return np.floor(counts * (max_windows / counts.sum())).astype(int)
        quota = np.zeros_like(counts)
        left = max_windows
        order = np.argsort(counts, kind="stable")  # water-filling, smallest style first
        for k, i in enumerate(order):
            quota[i] = min(counts[i], left // (len(order) - k))
            left -= quota[i]
        for i in order[::-1]:  # the remainder of the integer division
            extra = min(counts[i] - quota[i], left)
            quota[i] += extra
            left -= extra
        return quota

    def num_batches(self, split: str, batch_size: int, world_size: int = 1, max_windows: int | None = None,
                    balance_styles: bool = False) -> int:
        """Batches each process sees per epoch (equal across processes, as DDP needs)."""
        n = int(self.epoch_quota(split, max_windows, balance_styles).sum())
        return (n // batch_size) // world_size if world_size > 1 else -(-n // batch_size)

    def _shard_quotas(self, shards: list[dict], quota: np.ndarray) -> list[np.ndarray]:
        """Split each style's epoch quota over the shards in proportion to their windows (exact sums)."""
        have = np.array([[sh["windows_per_style"][st] for st in self.styles] for sh in shards])  # (S, styles)
        total = have.sum(axis=0)
        out = np.zeros_like(have)
        for j in range(len(self.styles)):
            if total[j] == 0:
                continue
            ideal = have[:, j] * quota[j] / total[j]
            out[:, j] = np.floor(ideal).astype(int)
            rest = int(quota[j] - out[:, j].sum())  # largest remainders get the leftovers
            for i in np.argsort(-(ideal - out[:, j]), kind="stable")[:rest]:
                out[i, j] += 1
        return list(out)

    def iter_batches(
        self,
        split: str,
        batch_size: int,
        *,
        shuffle: bool,
        seed: int,
        epoch: int = 0,
        rank: int = 0,
        world_size: int = 1,
        max_windows: int | None = None,
        balance_styles: bool = False,
    ) -> Iterator[Batch]:
        """Stream batches of a split, one shard in memory at a time.

        With ``shuffle`` the shard order and the windows inside each shard are
        permuted by a generator seeded from ``(seed, epoch)``, so an epoch's order
        is reproducible (and a resumed run sees the same batches). With several
        processes, batch ``i`` goes to process ``i % world_size`` and every
        process gets the same number of batches. ``max_windows`` caps the windows
        of an epoch (a different seeded subset every epoch; see :meth:`epoch_quota`).
        """
        rng = np.random.default_rng([seed, epoch])
        shards = [s for s in self.shards if s["split"] == split]
        if shuffle:
            shards = [shards[i] for i in rng.permutation(len(shards))]
        limit = self.num_batches(split, batch_size, world_size, max_windows, balance_styles)
        quota = self.epoch_quota(split, max_windows, balance_styles)
        subsample = not np.array_equal(quota, self.style_counts(split))
        shard_quota = self._shard_quotas(shards, quota) if subsample else None
        i = 0

        def emit(batch: Batch) -> Iterator[Batch]:
            nonlocal i
            if i % world_size == rank:
                yield batch
            i += 1

        carry: Batch | None = None  # the tail of the previous shard, shorter than a batch
        for k, shard in enumerate(shards):
            data = self.read_shard(shard)
            if subsample:  # keep this shard's share of each style, chosen at random
                keep = [rng.permutation(np.flatnonzero(data.style == j))[:q] for j, q in enumerate(shard_quota[k])]
                data = data.take(np.sort(np.concatenate(keep)))
            if shuffle:
                data = data.take(rng.permutation(len(data)))
            if carry is not None:
                data = Batch.concat([carry, data])
            full = len(data) // batch_size * batch_size
            for lo in range(0, full, batch_size):
                if i // world_size >= limit:
                    return
                yield from emit(data.take(slice(lo, lo + batch_size)))
            carry = data.take(slice(full, None)) if full < len(data) else None
        if carry is not None and world_size == 1:
            yield carry
