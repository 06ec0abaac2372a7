"""Both MIDI readers on the same files: the fast one (symusic) against the reference (pretty_midi).

For every file, :func:`midistyle.roll.read_piece` and
:func:`midistyle.roll.read_piece_reference` must give the same roll (shape and
every cell), bar lines, tempo and metre maps and counts (notes, folded, dropped,
parts), or the same skip reason. A file where they differ is listed with its
cause, found by looking at the file's events.

    python benchmarks/compare_readers.py                       # ../shared/corpus, every file
    python benchmarks/compare_readers.py --limit 200           # a seeded selection
    python benchmarks/compare_readers.py DIR_OR_FILES... --out results.json

Writes ``benchmarks/results/readers.json`` (files compared, identical, every
difference with its cause); exits 1 when a difference has no known cause.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import sys
import time
import warnings
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from midistyle.config import load_params
from midistyle.roll import RollError, RollSpec, midi_payload, read_piece, read_piece_reference

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "corpus"
OUT = ROOT / "benchmarks" / "results" / "readers.json"


TIES = ("events exactly half a step from the grid: pretty_midi converts ticks to seconds and back and rounds "
        "the floating-point noise (up or down at random), symusic rounds exact ticks half to even; the fast "
        "reader repeating pretty_midi's float arithmetic gives the reference's result exactly")


def read(fn, path: Path, spec: RollSpec):
    try:
        return fn(path, spec)
    except RollError as exc:
        return exc


def differences(fast, ref) -> list[str]:
    """What differs between the two readers' results for one file (empty: identical)."""
    if isinstance(fast, RollError) or isinstance(ref, RollError):
        a = fast.reason if isinstance(fast, RollError) else "roll"
        b = ref.reason if isinstance(ref, RollError) else "roll"
        return [] if a == b else [f"reason: symusic {a}, pretty_midi {b}"]
    out = []
    if fast.roll.shape != ref.roll.shape:
        out.append(f"shape: symusic {fast.roll.shape}, pretty_midi {ref.roll.shape}")
    else:
        cells = int((fast.roll != ref.roll).sum())
        if cells:
            out.append(f"roll: {cells} cells differ")
    if fast.bar_starts != ref.bar_starts:
        out.append(f"bars: symusic {len(fast.bar_starts)}, pretty_midi {len(ref.bar_starts)}")
    if fast.stats != ref.stats:
        out.append(f"stats: symusic {fast.stats}, pretty_midi {ref.stats}")
    if fast.timing.meters != ref.timing.meters:
        out.append(f"meters: symusic {fast.timing.meters[:4]}, pretty_midi {ref.timing.meters[:4]}")
    ft, rt = fast.timing.tempos, ref.timing.tempos
    if len(ft) != len(rt) or any(a[0] != b[0] or abs(a[1] - b[1]) > 1e-9 * b[1] for a, b in zip(ft, rt)):
        out.append(f"tempos: symusic {len(ft)} changes, pretty_midi {len(rt)}")
    return out


def pretty_midi_steps(score, spb: int):
    """ticks -> steps by pretty_midi's floating-point path (ticks -> seconds -> quarter notes -> round).

    The fast reader with this rounding instead of its exact one: when that gives
    the reference's result, the readers differ only in how they round events
    exactly half a step from the grid.
    """
    tpq = int(score.ticks_per_quarter)
    starts, scales = [0], [60.0 / (120.0 * tpq)]
    tt = score.tempos.numpy()
    for tick, mspq in zip(tt["time"].tolist(), tt["mspq"].tolist()):
        scale = 60.0 / ((6e7 / mspq) * tpq)
        if tick == 0:
            scales[0] = scale
        elif scale != scales[-1]:
            starts.append(tick)
            scales.append(scale)
    starts_a, scales_a = np.array(starts), np.array(scales)
    last_end = np.zeros(len(starts))
    for k in range(1, len(starts)):
        last_end[k] = last_end[k - 1] + scales[k - 1] * (starts[k] - starts[k - 1])

    def seconds(ticks):
        seg = np.searchsorted(starts_a, ticks, side="right") - 1
        return last_end[seg] + scales_a[seg] * (ticks - starts_a[seg])

    change_times, qpms = seconds(starts_a), 60.0 / (scales_a * tpq)
    q_at_change = np.concatenate([[0.0], np.cumsum(np.diff(change_times) * qpms[:-1] / 60.0)])

    def to_steps(ticks):
        times = seconds(np.asarray(ticks, np.int64))
        idx = np.clip(np.searchsorted(change_times, times, side="right") - 1, 0, None)
        q = q_at_change[idx] + (times - change_times[idx]) * qpms[idx] / 60.0
        return np.round(q * spb).astype(np.int64)

    return to_steps


def only_ties(path: Path, spec: RollSpec, ref) -> bool:
    """True when the fast reader, rounding as pretty_midi does, gives the reference's result."""
    import symusic

    from midistyle.roll import _conductor, score_to_roll

    data = midi_payload(path)
    score = symusic.Score.from_midi(data)
    try:
        again = score_to_roll(score, spec, str(path), data,
                              pretty_midi_steps(_conductor(score, data, str(path)), spec.steps_per_beat))
    except RollError as exc:
        again = exc
    return not differences(again, ref)


def causes(path: Path, spec: RollSpec) -> list[str]:
    """Known reasons for the readers to differ on this file, found in its MIDI events.

    (Re-struck keys, zero-length notes and tempo or metre events outside the first
    track are read alike by both readers, so they are no cause.)
    """
    import mido

    found = []
    try:
        mid = mido.MidiFile(file=io.BytesIO(midi_payload(path)), clip=True)
    except (RollError, OSError, ValueError, EOFError, KeyError, IndexError) as exc:
        return [f"mido cannot read the file ({type(exc).__name__}: {exc}), so pretty_midi calls it corrupt; "
                "symusic reads it"]
    tpq = mid.ticks_per_beat
    half = tpq % (2 * spec.steps_per_beat) == 0 and tpq // (2 * spec.steps_per_beat)
    progchange = half_step = 0
    for track in mid.tracks:
        now, sounding = 0, defaultdict(int)
        programs: dict[int, int] = {}
        for msg in track:
            now += msg.time
            if msg.type == "program_change":
                if programs.get(msg.channel, 0) != msg.program and any(
                        n for (ch, _), n in sounding.items() if ch == msg.channel):
                    progchange += 1
                programs[msg.channel] = msg.program
            elif msg.type in ("note_on", "note_off"):
                key = (msg.channel, msg.note)
                sounding[key] = sounding[key] + 1 if msg.type == "note_on" and msg.velocity else 0
            if half and now % half == 0 and (now // half) % 2 == 1 and msg.type in ("note_on", "note_off", "set_tempo",
                                                                                   "time_signature"):
                half_step += 1
    if progchange:
        found.append(f"{progchange} program changes while notes sound: pretty_midi files a note under the program "
                     "current at its note-off, symusic under the one it was struck with (parts differ)")
    if half_step:
        found.append(f"{half_step} events exactly half a grid step from a step (with another cause)")
    return found


def compare(files: list[Path], spec: RollSpec, progress: bool = True) -> dict:
    warnings.filterwarnings("ignore", category=RuntimeWarning)
    rows, reasons = [], Counter()
    t0 = time.perf_counter()
    for i, path in enumerate(files):
        fast, ref = read(read_piece, path, spec), read(read_piece_reference, path, spec)
        if isinstance(fast, RollError):
            reasons[fast.reason] += 1
        diff = differences(fast, ref)
        if diff and not isinstance(fast, RollError) and only_ties(path, spec, ref):
            rows.append({"file": str(path), "differences": diff, "causes": ["ties"]})
        elif diff:
            rows.append({"file": str(path), "differences": diff, "causes": causes(path, spec)})
        if progress and (i + 1) % 250 == 0:
            print(f"  {i + 1}/{len(files)} files, {len(rows)} differ", file=sys.stderr)
    return {
        "files": len(files),
        "identical": len(files) - len(rows),
        "differ": len(rows),
        "unexplained": sum(1 for r in rows if not r["causes"]),
        "by_cause": dict(Counter(c if c == "ties" else c.split(" ", 1)[1].split(":")[0]
                                 for r in rows for c in r["causes"]).most_common()),
        "legend": {"ties": TIES},
        "skipped_by_reason": dict(sorted(reasons.items())),
        "seconds": round(time.perf_counter() - t0, 1),
        "differences": rows,
    }


def midi_files(paths: list[Path]) -> list[Path]:
    out = []
    for p in paths:
        out += sorted(q for q in p.rglob("*") if q.suffix.lower() in (".mid", ".midi")) if p.is_dir() else [p]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("paths", nargs="*", type=Path, help=f"MIDI files or folders (default {CORPUS})")
    ap.add_argument("--limit", type=int, default=None, help="a seeded selection of this many files")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--params", type=Path, default=ROOT / "params.yaml", help="the grid: its extract section")
    args = ap.parse_args(argv)
    files = midi_files(args.paths or [CORPUS])
    if args.limit is not None and args.limit < len(files):
        files = sorted(random.Random(args.seed).sample(files, args.limit))
    result = compare(files, RollSpec.from_params(load_params(args.params).extract))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    shown = {**result, "differences": [{**r, "file": _short(r["file"])} for r in result["differences"]]}
    args.out.write_text(json.dumps(shown, indent=1) + "\n")
    print(f"{result['files']} files: {result['identical']} identical, {result['differ']} differ "
          f"({result['unexplained']} without a known cause) in {result['seconds']} s -> {args.out}")
    for r in shown["differences"]:
        print(f"  {r['file']}: {'; '.join(r['differences'])}\n      cause: {' | '.join(r['causes']) or 'UNKNOWN'}")
    print("  ties: " + TIES)
    return 1 if result["unexplained"] else 0


def _short(path: str) -> str:
    p = Path(path)
    return p.relative_to(CORPUS).as_posix() if p.is_relative_to(CORPUS) else p.name


if __name__ == "__main__":
    sys.exit(main())
