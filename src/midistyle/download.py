"""The download stage: the selected profile's MIDI collections -> ``data/raw/``.

Each style of ``params.data.styles`` lists sources of three kinds: scores from
music21's corpus (converted to MIDI here, in parallel), http(s) URLs of a MIDI file
or an archive (checked against their sha256), and local folders (copied as-is).
Selection is deterministic: files are sorted, and ``limit`` takes a sample seeded
by ``seed``, style and source index, so a rerun with the same params gives the
same pieces.

Layout: ``<out>/<style>/<safe-name>.mid`` plus ``<out>/manifest.csv``
(style, file, source, sha256). The folder is built as ``<out>.partial`` and
renamed into place at the end, so a failed run never leaves a half-written one.
"""

from __future__ import annotations

import csv
import io
import logging
import multiprocessing
import os
import random
import re
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from tqdm import tqdm

from midistyle import layout
from midistyle.config import Params, Source
from midistyle.errors import UserError
from midistyle.fetch import copy_atomic, extract_archive, fetch_url, is_midi_name, url_kind
from midistyle.fileio import atomic_write_json, atomic_write_text, sha256_file, staged_dir

if TYPE_CHECKING:
    from music21.stream import Score

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")

MANIFEST_COLUMNS = ("style", "file", "source", "sha256")
TICKS_PER_QUARTER = 480  # music21's default (10080) overflows what pretty_midi accepts on long pieces
MAX_NAME_CHARS = 120


@dataclass
class StyleResult:
    """What one style's sources gave: files written (path, source label) and items skipped."""

    written: list[tuple[Path, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (source label, reason)


# ---------------------------------------------------------------- names and selection
class NameRegistry:
    """Hands out flat, filesystem-safe, unique file names within one style folder."""

    def __init__(self) -> None:
        self._taken: set[str] = set()

    def claim(self, rel_path: str) -> str:
        """``"sub/x.midi"`` -> ``"sub__x.mid"``; a clash (case-insensitive) gets ``-2``, ``-3``..."""
        stem = safe_stem(rel_path)
        name, n = f"{stem}.mid", 1
        while name.lower() in self._taken:
            n += 1
            name = f"{stem}-{n}.mid"
        self._taken.add(name.lower())
        return name


def safe_stem(rel_path: str) -> str:
    """A path relative to its collection as one safe name, without its extension.

    Folders join with ``__``; characters outside ``[A-Za-z0-9._-]`` become ``_``;
    leading dots go (no hidden files); very long names are cut.
    """
    path = rel_path.replace("\\", "/").strip("/")
    head, _, last = path.rpartition("/")
    last = re.sub(r"\.[A-Za-z0-9]{1,8}$", "", last) or last  # "bwv1.6.mxl" -> "bwv1.6"
    joined = f"{head}/{last}" if head else last
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", joined.replace("/", "__")).lstrip(".")
    return stem[:MAX_NAME_CHARS] or "piece"


def select(items: list[str], include: str, limit: int | None, seed_key: str) -> list[str]:
    """Sorted ``items`` matching ``include``; with ``limit``, a sample seeded by ``seed_key``, re-sorted."""
    matched = sorted(p for p in items if fnmatchcase(p, include))
    if limit is not None and limit < len(matched):
        matched = sorted(random.Random(seed_key).sample(matched, limit))
    return matched


def _part_name(dest: Path) -> Path:
    return dest.with_name(f".{dest.name}.part")


# ---------------------------------------------------------------- local folders
def resolve_local(src: Source, corpus_dir: str, where: str) -> Path:
    """The folder of a local source ("{corpus_dir}" filled in); a UserError if it is missing."""
    assert src.local is not None
    folder = Path(src.local.replace("{corpus_dir}", corpus_dir))
    if not folder.is_dir():
        hint = " (set data.corpus_dir)" if "{corpus_dir}" in src.local else ""
        problem = "is not a folder" if folder.exists() else "not found"
        raise UserError(f"{where}.local: folder {folder.as_posix()} {problem}{hint}")
    return folder


def list_local(folder: Path) -> list[str]:
    """MIDI files under ``folder`` (any depth) as sorted relative POSIX paths."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and is_midi_name(p.name))


def from_local(src: Source, folder: Path, style_dir: Path, names: NameRegistry, seed_key: str,
               where: str) -> StyleResult:
    """Copy the selected files unchanged (the extract stage validates their content)."""
    result = StyleResult()
    chosen = select(list_local(folder), src.include, src.limit, seed_key)
    _require_some(chosen, src, where)
    for rel in chosen:
        dest = style_dir / names.claim(rel)
        try:
            copy_atomic(folder / rel, dest)
        except OSError as exc:
            raise UserError(f"{folder.as_posix()}/{rel}: cannot copy: {exc.strerror or exc}") from None
        result.written.append((dest, f"local:{folder.as_posix()}/{rel}"))
    return result


def _require_some(chosen: list[str], src: Source, where: str) -> None:
    """A source that selects nothing is almost always a typo in ``include`` or the path."""
    if not chosen:
        raise UserError(f"{where}: selects no pieces (include {src.include!r})")


# ---------------------------------------------------------------- urls
def from_url(src: Source, style_dir: Path, names: NameRegistry, seed_key: str, max_bytes: int,
             where: str) -> StyleResult:
    """A .mid URL is one piece; an archive gives its MIDI members (``include``/``limit`` apply)."""
    assert src.url is not None and src.sha256 is not None
    result = StyleResult()
    kind = url_kind(src.url)
    with tempfile.TemporaryDirectory(prefix=".fetch-", dir=style_dir.parent) as tmp:
        fetched = fetch_url(src.url, src.sha256, Path(tmp), max_bytes)
        if kind == "midi":
            dest = style_dir / names.claim(fetched.name)
            os.replace(fetched, dest)
            result.written.append((dest, f"url:{src.url}"))
            return result
        members_dir = Path(tmp) / "members"
        extracted = extract_archive(fetched, members_dir, src.include, max_bytes)
        by_rel = {p.relative_to(members_dir).as_posix(): p for p in extracted}
        chosen = select(list(by_rel), "*", src.limit, seed_key)
        _require_some(chosen, src, where)
        for rel in chosen:
            dest = style_dir / names.claim(rel)
            os.replace(by_rel[rel], dest)
            result.written.append((dest, f"url:{src.url}#{rel}"))
    return result


# ---------------------------------------------------------------- music21
def music21_candidates(name: str) -> list[str]:
    """Scores of a music21 composer/folder, as paths relative to music21's corpus root.

    RomanText files (``.rntxt``) are left out: they are harmonic analyses
    (e.g. bach/choraleAnalyses), not pieces.
    """
    from music21 import common, corpus

    root = Path(common.getCorpusFilePath())
    out = []
    for p in sorted(corpus.getComposer(name)):
        p = Path(p)
        if p.suffix.lower() == ".rntxt":
            continue
        out.append(p.relative_to(root).as_posix() if p.is_relative_to(root) else p.as_posix())
    return out


def from_music21(src: Source, style: str, style_dir: Path, names: NameRegistry, seed_key: str, workers: int,
                 where: str) -> StyleResult:
    """Convert the selected scores to MIDI in ``workers`` processes (input order kept)."""
    assert src.music21 is not None
    candidates = music21_candidates(src.music21)
    if not candidates:
        raise UserError(f"{where}.music21: music21's corpus has no pieces for {src.music21!r}")
    chosen = select(candidates, src.include, src.limit, seed_key)
    _require_some(chosen, src, where)
    tasks = [(rel, str(style_dir / names.claim(rel))) for rel in chosen]
    result = StyleResult()
    with tqdm(total=len(tasks), desc=f"{style}: music21 {src.music21}", unit="score", file=sys.stderr,
              mininterval=1.0) as bar:
        for (rel, dest), reason in zip(tasks, _map_ordered(convert_score, tasks, workers)):
            bar.update(1)
            if reason is None:
                result.written.append((Path(dest), f"music21:{rel}"))
            else:
                log.warning("skipped music21:%s: %s", rel, reason)
                result.skipped.append((f"music21:{rel}", reason))
    return result


def _map_ordered(fn: Callable[[T], R], tasks: list[T], workers: int) -> Iterator[R]:
    """``map`` over processes, keeping input order (determinism); in-process for one worker."""
    if workers <= 1 or len(tasks) <= 1:
        yield from map(fn, tasks)
        return
    ctx = multiprocessing.get_context("spawn")  # no fork: callers may have threads (e.g. a test server)
    with ctx.Pool(min(workers, len(tasks))) as pool:
        yield from pool.imap(fn, tasks, chunksize=1)


@contextmanager
def _music21_midi_settings() -> Iterator[None]:
    """Ticks per quarter that pretty_midi can read, and quiet warnings, restored afterwards.

    Restoring matters when conversion runs in the caller's process (one worker):
    music21's defaults are module globals other code may rely on.
    """
    import music21

    saved = music21.defaults.ticksPerQuarter
    music21.defaults.ticksPerQuarter = TICKS_PER_QUARTER
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        music21.defaults.ticksPerQuarter = saved


def convert_score(task: tuple[str, str]) -> str | None:
    """Parse one corpus score, write it as MIDI at ``dest``; returns None or why it was skipped.

    The file is written to a .part name and renamed only once pretty_midi reads
    it back, so a skipped piece leaves nothing behind. Any exception of one score
    is that score's problem (music21 raises many kinds), recorded as the reason.
    ``forceSource`` bypasses music21's pickle cache in its scratch folder: that
    cache is shared by every process on the machine and written non-atomically,
    and parsing from source costs little next to writing the MIDI.
    """
    rel, dest_str = task
    dest = Path(dest_str)
    part = _part_name(dest)
    try:
        from music21 import corpus

        with _music21_midi_settings():
            score = corpus.parse(rel, forceSource=True)
            reason = write_score_midi(score, part)
            if reason is None:
                reason = _check_midi(part)
        if reason is None:
            os.replace(part, dest)
        return reason
    except Exception as exc:  # noqa: BLE001 - a per-piece error boundary; the reason is recorded
        return f"{type(exc).__name__}: {_first_line(exc)}"
    finally:
        part.unlink(missing_ok=True)


def write_score_midi(score: Score, path: Path) -> str | None:
    """Write ``score`` as MIDI; on failure retry without repeat marks (some scores have malformed ones)."""
    try:
        score.write("midi", fp=str(path))
        return None
    except Exception as exc:  # noqa: BLE001 - retried below, then recorded as the reason
        first = f"{type(exc).__name__}: {_first_line(exc)}"
    try:
        strip_repeats(score)
        score.write("midi", fp=str(path))
        return None
    except Exception as exc:  # noqa: BLE001
        return f"{first}; without repeats: {type(exc).__name__}: {_first_line(exc)}"


def strip_repeats(score: Score) -> None:
    """Remove repeat barlines and repeat marks (segno, coda, D.C. ...) everywhere in ``score``."""
    from music21 import bar, repeat, stream

    for measure in score.recurse().getElementsByClass(stream.Measure):
        if isinstance(measure.leftBarline, bar.Repeat):
            measure.leftBarline = None
        if isinstance(measure.rightBarline, bar.Repeat):
            measure.rightBarline = bar.Barline("final") if measure.rightBarline.direction == "end" else None
    for mark in list(score.recurse().getElementsByClass(repeat.RepeatMark)):
        site = mark.activeSite
        if site is not None:
            site.remove(mark)


def _check_midi(path: Path) -> str | None:
    """None if pretty_midi reads the file and finds notes, else why not."""
    import pretty_midi

    try:
        pm = pretty_midi.PrettyMIDI(str(path))
    except Exception as exc:  # noqa: BLE001 - pretty_midi/mido raise many kinds on bad files
        return f"pretty_midi cannot read the written MIDI: {type(exc).__name__}: {_first_line(exc)}"
    if not any(inst.notes for inst in pm.instruments):
        return "the written MIDI has no notes"
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "(no message)"


# ---------------------------------------------------------------- the stage
def download_all(params: Params, out_dir: Path = layout.RAW,
                 metrics_path: Path | None = layout.DOWNLOAD_METRICS) -> list[dict]:
    """Build ``out_dir`` from the selected profile; returns the manifest rows.

    Work happens in ``<out_dir>.partial``; the old ``out_dir`` is replaced only
    after every style has pieces and the manifest is written.
    """
    with staged_dir(out_dir) as partial:
        results = {style: _download_style(params, style, sources, partial)
                   for style, sources in sorted(params.data.styles.items())}
        rows = manifest_rows(results, partial)
        write_manifest(partial / "manifest.csv", rows)
    if metrics_path is not None:
        atomic_write_json(metrics_path, download_metrics(params.data.profile, results))
    for style, res in results.items():
        log.info("%s: %d written, %d skipped", style, len(res.written), len(res.skipped))
    return rows


def _download_style(params: Params, style: str, sources: list[Source], root: Path) -> StyleResult:
    """All sources of one style into ``root/<style>``; a UserError if none gave a piece."""
    style_dir = root / style
    style_dir.mkdir()
    names = NameRegistry()
    total = StyleResult()
    base = f"data.profiles.{params.data.profile}.{style}"
    max_bytes = int(params.data.max_download_mb * 1024 * 1024)
    for i, src in enumerate(sources):
        where, seed_key = f"{base}[{i}]", f"{params.seed}:{style}:{i}"
        if src.kind == "music21":
            res = from_music21(src, style, style_dir, names, seed_key, params.data.workers, where)
        elif src.kind == "url":
            res = from_url(src, style_dir, names, seed_key, max_bytes, where)
        else:
            folder = resolve_local(src, params.data.corpus_dir, where)
            res = from_local(src, folder, style_dir, names, seed_key, where)
        total.written += res.written
        total.skipped += res.skipped
    if not total.written:
        why = f"; first skipped: {total.skipped[0][0]}: {total.skipped[0][1]}" if total.skipped else ""
        raise UserError(f"{base}: no pieces were written ({len(total.skipped)} skipped){why}")
    return total


def manifest_rows(results: dict[str, StyleResult], root: Path) -> list[dict]:
    """One row per written file, sorted by (style, file); sha256 of the bytes on disk."""
    rows = [
        {"style": style, "file": path.relative_to(root).as_posix(), "source": source, "sha256": sha256_file(path)}
        for style, res in results.items()
        for path, source in res.written
    ]
    return sorted(rows, key=lambda r: (r["style"], r["file"]))


def write_manifest(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def download_metrics(profile: str, results: dict[str, StyleResult]) -> dict:
    """Counts per style and every skipped item with its reason (for ``dvc metrics show``)."""
    return {
        "profile": profile,
        "written": sum(len(r.written) for r in results.values()),
        "skipped": sum(len(r.skipped) for r in results.values()),
        "styles": {s: {"written": len(r.written), "skipped": len(r.skipped)} for s, r in results.items()},
        "skipped_items": [{"style": s, "source": src, "reason": why}
                          for s, r in results.items() for src, why in r.skipped],
    }
