"""The piano-roll contract: MIDI -> two-hand roll -> windows, and roll -> MIDI.

Every stage that reads or writes music goes through this module, so the
representation is defined (and enforced) in one place:

* **Time** is a musical grid, ``steps_per_beat`` steps per quarter note, that
  follows the file's own tempo map: a note's position is its tick position in
  quarter notes, not seconds. Tempo changes therefore do not stretch the grid.
* **Pitch** rows are ``pitch_low..pitch_high`` inclusive (34..84: 51 rows).
  Notes outside are folded by octaves into the range or dropped (a param), and
  counted.
* **Hands**: axis 1 is ``RIGHT`` (0) and ``LEFT`` (1). See :func:`assign_hands`.
* **Channels**: axis 2 is ``SOUNDING`` (0: the key is down during the step)
  and ``ONSET`` (1: a note starts at this step). The onset channel tells a held
  note from a repeated one, so ``roll -> MIDI -> roll`` is exact.

A roll is a boolean array of shape ``(T, 2, 2, P)``: (step, hand, channel, pitch).

**Readers.** :func:`read_piece` parses with symusic (C++) and builds the roll
with numpy; :func:`read_piece_reference` is the same contract through
pretty_midi (pure Python), kept as the reference the fast reader is checked
against (tests/test_readers.py, benchmarks/compare_readers.py). Both agree on
every cell except for events exactly half a step from the grid, which the fast
reader rounds exactly (half to even) and pretty_midi by floating-point noise.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import mido
import numpy as np
import pretty_midi

from midistyle.errors import UserError
from midistyle.fileio import atomic_write_bytes
from midistyle.scan import read_vlq, scan_notes

RIGHT, LEFT = 0, 1
SOUNDING, ONSET = 0, 1
HAND_NAMES = ("Right hand", "Left hand")
TICKS_PER_STEP = 120  # MIDI written by roll_to_midi: resolution = steps_per_beat * 120


class RollError(UserError):
    """A file that cannot become a roll. ``reason`` is a short code for metrics."""

    def __init__(self, path: str, reason: str, detail: str = ""):
        self.path, self.reason, self.detail = path, reason, detail
        super().__init__(f"{path}: {reason}" + (f" ({detail})" if detail else ""))


@dataclass(frozen=True)
class RollSpec:
    """The grid and the hand rules: ``params.extract`` (:meth:`from_params`), or a checkpoint's copy of it.

    No defaults: the values live in params.yaml alone. The window's length in
    steps is spelled here once (:attr:`bar_steps`, :attr:`window_steps`).
    """

    steps_per_beat: int
    pitch_low: int
    pitch_high: int
    out_of_range: str  # fold | drop
    hands: str  # auto | duplicate
    single_part: str  # split | duplicate
    split_pitch: int
    bars_per_window: int
    hop_bars: int
    max_beats_per_bar: int
    min_notes_per_window: int

    @classmethod
    def from_params(cls, extract) -> "RollSpec":
        return cls(**{f: getattr(extract, f) for f in cls.__dataclass_fields__})

    @property
    def n_pitches(self) -> int:
        return self.pitch_high - self.pitch_low + 1

    @property
    def bar_steps(self) -> int:
        """Steps of the longest bar a window holds (max_beats_per_bar beats)."""
        return self.max_beats_per_bar * self.steps_per_beat

    @property
    def window_steps(self) -> int:
        return self.bars_per_window * self.bar_steps

    def to_dict(self) -> dict:
        return {f: getattr(self, f) for f in self.__dataclass_fields__}


@dataclass
class Timing:
    """Where the grid sits in time: tempo and metre changes, positioned in steps."""

    tempos: list[tuple[int, float]] = field(default_factory=lambda: [(0, 120.0)])  # (step, qpm)
    meters: list[tuple[int, int, int]] = field(default_factory=lambda: [(0, 4, 4)])  # (step, num, den)

    def sliced(self, start: int, stop: int) -> "Timing":
        """The timing of steps [start, stop) re-based to step 0 (for one window)."""

        def cut(events):
            before = [e for e in events if e[0] <= start]
            inside = [e for e in events if start < e[0] < stop]
            head = (0, *before[-1][1:]) if before else (0, *events[0][1:])
            return [head] + [(e[0] - start, *e[1:]) for e in inside]

        return Timing(cut(self.tempos), cut(self.meters))


@dataclass
class PieceRoll:
    roll: np.ndarray  # bool (T, 2, 2, P)
    bar_starts: list[int]  # step index of every bar line, ascending, first is 0
    timing: Timing
    stats: dict[str, int]


@dataclass
class PieceNotes:
    """A piece as the notes its roll is painted from (:func:`notes_to_piece`): the extract stage's form.

    The roll's cells are exactly the union of the notes' cells: ``SOUNDING`` over
    ``[on, off)`` and ``ONSET`` at ``on``, in row ``cell % n_pitches`` of hand
    ``cell // n_pitches``. Notes are neither merged nor deduplicated.
    """

    on: np.ndarray  # int64 (M,) >= 0
    off: np.ndarray  # int64 (M,) > on
    cell: np.ndarray  # int64 (M,) hand * n_pitches + pitch row
    total: int  # steps of the roll: off.max()
    bar_starts: list[int]
    timing: Timing
    stats: dict[str, int]


@dataclass
class Window:
    start: int  # step of the piece where the window begins (a bar line)
    length: int  # steps holding music; the rest up to window_steps is padding
    roll: np.ndarray  # bool (window_steps, 2, 2, P), zero past `length`
    notes: int  # onsets in the window, plus notes carried in from before it


# ---------------------------------------------------------------- reading MIDI
MAX_TICK = 10_000_000  # a later event means a corrupt file (pretty_midi's limit, kept for both readers)


def midi_payload(path: str | Path, max_bytes: int | None = None, data: bytes | None = None) -> bytes:
    """A file's Standard MIDI File bytes, or :class:`RollError` with a reason code.

    Both readers start here; ``data``, when given, is the file's bytes already read
    (the extract stage reads each file once, for its checksum and its notes).
    Reasons: ``empty`` (0 bytes), ``too_large``,
    ``not_midi`` (no MIDI header), ``corrupt`` (an RMID container without a
    ``data`` chunk, a header too short), ``smpte_timing`` (the header's time
    division is SMPTE frames, not ticks per quarter note, so there is no musical
    grid to read). An RMID (RIFF) file gives the MIDI file inside it.
    """
    path = Path(path)
    if data is None:
        data = path.read_bytes()
    if not data:
        raise RollError(str(path), "empty", "0 bytes")
    if max_bytes is not None and len(data) > max_bytes:
        raise RollError(str(path), "too_large", f"{len(data)} bytes > {max_bytes}")
    if data.startswith(b"RIFF") and data[8:12] == b"RMID":
        data = _rmid_data(str(path), data)
    elif not data.startswith(b"MThd"):
        raise RollError(str(path), "not_midi", "no MThd header")
    if len(data) < 14:
        raise RollError(str(path), "corrupt", f"MIDI header cut short ({len(data)} bytes)")
    if data[12] & 0x80:
        fps = 256 - data[12]
        raise RollError(str(path), "smpte_timing",
                        f"time division is SMPTE ({fps} frames/s, {data[13]} ticks/frame), not ticks per quarter note")
    if data[12] == 0 and data[13] == 0:
        raise RollError(str(path), "corrupt", "0 ticks per quarter note")
    return data


def _rmid_data(name: str, data: bytes) -> bytes:
    """The ``data`` chunk of a RIFF RMID file (the Standard MIDI File inside)."""
    pos = 12
    while pos + 8 <= len(data):
        cid, size = data[pos:pos + 4], int.from_bytes(data[pos + 4:pos + 8], "little")
        if cid == b"data":
            inner = data[pos + 8:pos + 8 + size]
            if not inner.startswith(b"MThd"):
                raise RollError(name, "not_midi", "RMID data chunk holds no MThd header")
            return inner
        pos += 8 + size + (size & 1)
    raise RollError(name, "corrupt", "RMID file without a data chunk")


def load_midi(path: str | Path, max_bytes: int | None = None) -> pretty_midi.PrettyMIDI:
    """Load a MIDI file with pretty_midi (the reference reader), or raise :class:`RollError`.

    Reasons: those of :func:`midi_payload`, and ``corrupt`` (the parser fails).
    """
    data = midi_payload(path, max_bytes)
    try:
        return pretty_midi.PrettyMIDI(io.BytesIO(data))
    except Exception as exc:  # the parser raises many kinds; all mean "corrupt"
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise RollError(str(path), "corrupt", first[:160]) from exc


def _quarter_positions(pm: pretty_midi.PrettyMIDI, times: np.ndarray) -> np.ndarray:
    """Seconds -> quarter notes, following the file's tempo map (piecewise linear)."""
    change_times, qpms = pm.get_tempo_changes()
    if len(change_times) == 0:
        change_times, qpms = np.array([0.0]), np.array([120.0])
    # quarter position at each tempo change
    q_at_change = np.concatenate([[0.0], np.cumsum(np.diff(change_times) * qpms[:-1] / 60.0)])
    idx = np.clip(np.searchsorted(change_times, times, side="right") - 1, 0, None)
    return q_at_change[idx] + (times - change_times[idx]) * qpms[idx] / 60.0


def _timing(pm: pretty_midi.PrettyMIDI, spb: int) -> Timing:
    change_times, qpms = pm.get_tempo_changes()
    tempos: list[tuple[int, float]] = []
    if len(change_times):
        steps = np.round(_quarter_positions(pm, change_times) * spb).astype(int)
        for s, q in zip(steps.tolist(), qpms.tolist()):
            if tempos and tempos[-1][0] == s:
                tempos[-1] = (s, float(q))
            else:
                tempos.append((s, float(q)))
    if not tempos or tempos[0][0] != 0:
        tempos.insert(0, (0, 120.0))
    meters: list[tuple[int, int, int]] = []
    for ts in pm.time_signature_changes:
        s = int(round(_quarter_positions(pm, np.array([ts.time]))[0] * spb))
        if meters and meters[-1][0] == s:
            meters.pop()
        meters.append((s, ts.numerator, ts.denominator))
    if not meters or meters[0][0] != 0:
        meters.insert(0, (0, 4, 4))
    return Timing(tempos, meters)


def bar_lines(timing: Timing, total_steps: int, spb: int) -> list[int]:
    """Step of every bar line from the metre map (4/4 until the first time signature)."""
    bars: list[int] = []
    meters = timing.meters + [(max(total_steps, 1), 0, 0)]
    for (start, num, den), (nxt, _, _) in zip(meters[:-1], meters[1:]):
        bar = max(1, int(round(num * 4 / den * spb)))
        lines = range(start, nxt, bar)
        if bars and lines and lines[0] <= bars[-1]:  # only bar lines after the last one count
            lines = lines[(bars[-1] - start) // bar + 1:]
        bars.extend(lines)
    return bars or [0]


def assign_hands(parts: list[pretty_midi.Instrument], spec: RollSpec) -> list[list[list[pretty_midi.Note]]]:
    """Split the non-drum parts into ``[right_notes, left_notes]`` lists of note lists.

    * tracks named for a hand ("Right hand", "left", "RH", "LH"), as this module
      writes them, keep their hand;
    * ``hands: duplicate`` - every note goes to both hands (the report's behaviour).
    * one part - split at ``split_pitch`` (``single_part: split``) or copied to both hands.
    * two or more parts - ordered by mean pitch; the upper half (rounded up) is the
      right hand, the rest the left (two-hand piano, melody + chords, SATB, pop
      MELODY/BRIDGE/PIANO all fit this rule).
    """
    named = [_hand_from_name(p.name) for p in parts]
    if spec.hands == "auto" and None not in named:  # e.g. our own "Right hand"/"Left hand" tracks
        return [[p.notes for p, h in zip(parts, named) if h == hand] for hand in (RIGHT, LEFT)]
    if spec.hands == "duplicate" or (len(parts) == 1 and spec.single_part == "duplicate"):
        notes = [n for p in parts for n in p.notes]
        return [[notes], [notes]]
    if len(parts) == 1:
        notes = parts[0].notes
        return [[[n for n in notes if n.pitch >= spec.split_pitch]], [[n for n in notes if n.pitch < spec.split_pitch]]]
    order = sorted(parts, key=lambda p: -float(np.mean([n.pitch for n in p.notes])))
    n_right = math.ceil(len(order) / 2)
    return [[p.notes for p in order[:n_right]], [p.notes for p in order[n_right:]]]


def _hand_from_name(name: str) -> int | None:
    words = name.lower().replace("-", " ").replace("_", " ").split()
    if "right" in words or "rh" in words:
        return RIGHT
    if "left" in words or "lh" in words:
        return LEFT
    return None


def midi_to_roll(pm: pretty_midi.PrettyMIDI, spec: RollSpec, name: str = "<midi>", data: bytes | None = None) -> PieceRoll:
    """Turn a file parsed by pretty_midi into a :class:`PieceRoll` (the reference reader).

    Raises RollError: no_notes, no_note_offs (with ``data``, the file's bytes), drums_only.
    """
    parts = [inst for inst in pm.instruments if not inst.is_drum and inst.notes]
    if not parts:
        _no_parts(name, any(inst.is_drum and inst.notes for inst in pm.instruments), data)
    spb = spec.steps_per_beat
    stats = {"notes": 0, "notes_folded": 0, "notes_dropped": 0, "parts": len(parts)}
    hand_notes: list[list[tuple[int, int, int]]] = [[], []]
    for hand, groups in enumerate(assign_hands(parts, spec)):
        notes = [n for group in groups for n in group]
        if not notes:
            continue
        starts = np.array([n.start for n in notes])
        ends = np.array([n.end for n in notes])
        on = np.round(_quarter_positions(pm, starts) * spb).astype(np.int64)
        off = np.round(_quarter_positions(pm, ends) * spb).astype(np.int64)
        off = np.maximum(off, on + 1)  # every note lasts at least one step
        for s, e, n in zip(on.tolist(), off.tolist(), notes):
            pitch = n.pitch
            stats["notes"] += 1
            if not spec.pitch_low <= pitch <= spec.pitch_high:
                if spec.out_of_range == "drop":
                    stats["notes_dropped"] += 1
                    continue
                while pitch < spec.pitch_low:
                    pitch += 12
                while pitch > spec.pitch_high:
                    pitch -= 12
                stats["notes_folded"] += 1
            hand_notes[hand].append((max(s, 0), max(e, 1), pitch - spec.pitch_low))
    if not hand_notes[0] and not hand_notes[1]:
        raise RollError(name, "no_notes", "every note was out of range and dropped")
    total = max(e for hn in hand_notes for _, e, _ in hn)
    roll = np.zeros((total, 2, 2, spec.n_pitches), dtype=bool)
    for hand, notes in enumerate(hand_notes):
        for s, e, p in notes:
            roll[s:e, hand, SOUNDING, p] = True
        for s, _, p in notes:
            roll[s, hand, ONSET, p] = True
    timing = _timing(pm, spb)
    return PieceRoll(roll, bar_lines(timing, total, spb), timing, stats)


def read_piece_reference(path: str | Path, spec: RollSpec, max_bytes: int | None = None) -> PieceRoll:
    """:func:`read_piece` through pretty_midi (pure Python, ~70 files/s): the reference the fast reader is checked against."""
    data = midi_payload(path, max_bytes)
    try:
        pm = pretty_midi.PrettyMIDI(io.BytesIO(data))
    except Exception as exc:  # the parser raises many kinds; all mean "corrupt"
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise RollError(str(path), "corrupt", first[:160]) from exc
    return midi_to_roll(pm, spec, str(path), data)


def _no_parts(name: str, drum_notes: bool, data: bytes | None) -> None:
    """Why a file without a pitched part with notes has none: drums_only, no_note_offs or no_notes."""
    if drum_notes:
        raise RollError(name, "drums_only", "only drum tracks have notes")
    if data is not None:
        ons, offs = _note_events(name, data)
        if ons and not offs:
            raise RollError(name, "no_note_offs", f"{ons} note-ons and not one note-off: no note has an end")
        if ons:
            raise RollError(name, "no_notes", f"{ons} note-ons, none ended after it started")
    raise RollError(name, "no_notes", "no track has notes")


def _note_events(name: str, data: bytes) -> tuple[int, int]:
    """(note-ons, note-offs) of a file (only asked when neither reader found a note)."""
    try:
        mid = mido.MidiFile(file=io.BytesIO(data), clip=True)
    except Exception as exc:  # mido raises many kinds on malformed files; all mean "corrupt"
        raise RollError(name, "corrupt", f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:160]) from exc
    ons = offs = 0
    for track in mid.tracks:
        for msg in track:
            if msg.type == "note_on" and msg.velocity > 0:
                ons += 1
            elif msg.type in ("note_on", "note_off"):
                offs += 1
    return ons, offs


# ---------------------------------------------------------------- the fast reader (symusic)
def read_piece(path: str | Path, spec: RollSpec, max_bytes: int | None = None) -> PieceRoll:
    """A MIDI file as a :class:`PieceRoll`, or :class:`RollError` with a reason code.

    Parsed by symusic (C++) and turned into the roll with numpy; the result is the
    reference reader's (:func:`read_piece_reference`), see benchmarks/compare_readers.py.
    """
    return notes_to_piece(read_notes(path, spec, max_bytes), spec)


def read_notes(path: str | Path, spec: RollSpec, max_bytes: int | None = None, data: bytes | None = None) -> PieceNotes:
    """:func:`read_piece` short of painting the roll: the notes it is painted from (``data``: the bytes, if read)."""
    import symusic

    name = str(path)
    data = midi_payload(path, max_bytes, data)
    try:
        score = symusic.Score.from_midi(data)
    except Exception as exc:  # symusic raises RuntimeError (and others) on malformed files: "corrupt"
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise RollError(name, "corrupt", first[:160]) from exc
    return score_to_notes(score, spec, name, data)


@dataclass
class _Part:
    name: str
    on: np.ndarray  # int64 ticks
    off: np.ndarray  # int64 ticks, > on
    pitch: np.ndarray  # int64


def score_to_roll(score, spec: RollSpec, name: str, data: bytes,
                  to_steps: Callable[[np.ndarray], np.ndarray] | None = None) -> PieceRoll:
    """A ``symusic.Score`` of the MIDI file ``data`` -> :class:`PieceRoll`, by the rules of :func:`midi_to_roll`.

    See :func:`score_to_notes`.
    """
    return notes_to_piece(score_to_notes(score, spec, name, data, to_steps), spec)


def score_to_notes(score, spec: RollSpec, name: str, data: bytes,
                   to_steps: Callable[[np.ndarray], np.ndarray] | None = None) -> PieceNotes:
    """A ``symusic.Score`` of the MIDI file ``data`` -> the :class:`PieceNotes` of its roll.

    Positions are exact: ``tick * steps_per_beat / ticks_per_quarter``, rounded
    half to even. ``to_steps`` (ticks -> steps) replaces that rounding
    (benchmarks/compare_readers.py uses it to repeat pretty_midi's floating-point path).

    Notes: symusic pairs each pitch's note-ons and note-offs first in, first out.
    Where a key is struck again before its note-off (or a note-off falls on its
    note-on's tick), the contract is pretty_midi's instead: a note-off ends every
    sounding note of its pitch, which is also what FluidSynth plays, and FIFO
    pairing would shift every later note of the pitch and drop the last one. Such
    files (a third of the corpus, mostly pop) take their notes from
    :func:`_scan_notes`, a plain reading of the note events; the rest come
    straight from symusic's arrays.
    """
    tpq = int(score.ticks_per_quarter)
    if score.end() > MAX_TICK:
        raise RollError(name, "corrupt", f"MIDI file has a largest tick of {score.end()}, it is likely corrupt")
    tracks = [track for track in score.tracks if len(track.notes)]
    arrays = [track.notes.numpy() for track in tracks]
    on = np.concatenate([a["time"] for a in arrays]).astype(np.int64) if arrays else np.zeros(0, np.int64)
    parts: list[_Part] = []
    drum_notes = False
    if arrays:
        off = on + np.concatenate([a["duration"] for a in arrays])
        pitch = np.concatenate([a["pitch"] for a in arrays]).astype(np.int64)
        bounds = np.cumsum([0] + [len(a["time"]) for a in arrays]).tolist()
        if _ambiguous(on, off, pitch, np.repeat(np.arange(len(arrays)), np.diff(bounds))):
            parts, drum_notes = _scan_parts(data, name)
        else:
            for track, a, z in zip(tracks, bounds[:-1], bounds[1:]):
                if track.is_drum:
                    drum_notes = True
                else:
                    parts.append(_Part(track.name, on[a:z], off[a:z], pitch[a:z]))
    if not parts:
        _no_parts(name, drum_notes, data)
    if to_steps is None:
        spb = spec.steps_per_beat

        def to_steps(ticks: np.ndarray) -> np.ndarray:  # exact: ticks * spb is an integer; ties to even
            return np.rint(np.asarray(ticks, np.int64) * spb / tpq).astype(np.int64)

    timing = _score_timing(_conductor(score, data, name), to_steps, name)
    return _parts_to_notes(parts, spec, timing, to_steps, name)


def _conductor(score, data: bytes, name: str):
    """The score whose tempo and metre maps count: the first track's, when the file has several.

    The MIDI standard puts tempo and time signatures in the first track of a
    multi-track file (pretty_midi reads them there only); symusic merges every
    track's, and some files repeat a conflicting metre map in a later track
    (folk/morris20.mid). The first track is parsed again on its own (microseconds).
    """
    n_tracks = int.from_bytes(data[10:12], "big")
    header_end = 8 + int.from_bytes(data[4:8], "big")
    if n_tracks < 2 or data[header_end:header_end + 4] != b"MTrk":
        return score
    import symusic

    first = header_end + 8 + int.from_bytes(data[header_end + 4:header_end + 8], "big")
    try:
        return symusic.Score.from_midi(data[:10] + b"\x00\x01" + data[12:header_end] + data[header_end:first])
    except Exception as exc:  # symusic raises RuntimeError (and others) on malformed files: "corrupt"
        raise RollError(name, "corrupt", f"first track: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"[:160]) from exc


def _ambiguous(on: np.ndarray, off: np.ndarray, pitch: np.ndarray, track: np.ndarray) -> bool:
    """A note of zero length, or a pitch of a track struck again before its (FIFO-paired) note-off.

    Ticks are below ``MAX_TICK`` (< 2**32), pitches below 256.
    """
    if (off <= on).any():
        return True
    key = track * 256 + pitch
    if track[-1] < 256 and ((on[1:] >= on[:-1]) | (track[1:] != track[:-1])).all():
        order = np.argsort(key.astype(np.uint16), kind="stable")  # symusic sorts each track by onset: keep it
    else:
        order = np.argsort((key << 32) | on)
    key, start, end = key[order], on[order], off[order]
    return bool(((key[1:] == key[:-1]) & (end[:-1] > start[1:])).any())


def _scan_parts(data: bytes, name: str) -> tuple[list[_Part], bool]:
    """:func:`_scan_notes` through :func:`midistyle.scan.scan_notes` (numpy), or event by event where it declines."""
    tracks = scan_notes(data)
    if tracks is None:
        return _scan_notes(data, name)
    parts: list[_Part] = []
    drum_notes = False
    for track_name, group, start, end, pitch in tracks:
        if not len(group):
            continue
        if (group == group[0]).all():
            order, masks = [int(group[0])], [slice(None)]
        else:
            groups, first = np.unique(group, return_index=True)
            order = groups[np.argsort(first)].tolist()  # parts in the order of their first note
            masks = [group == g for g in order]
        for g, sel in zip(order, masks):
            if g // 128 == 9:
                drum_notes = True
            else:
                parts.append(_Part(track_name, start[sel], end[sel], pitch[sel]))
    return parts, drum_notes


def _scan_notes(data: bytes, name: str) -> tuple[list[_Part], bool]:
    """The pitched parts of a Standard MIDI File, read event by event; and whether drums have notes.

    A part is (track, channel, program at the note-on), named after its track, as
    symusic groups them. A note-off ends every sounding note of its pitch and
    channel that did not start on its tick; a note left with no end is dropped
    (pretty_midi's pairing, event for event).
    """
    n_tracks = int.from_bytes(data[10:12], "big")
    pos = 8 + int.from_bytes(data[4:8], "big")
    parts: list[_Part] = []
    drum_notes = False
    for _ in range(n_tracks):
        if pos + 8 > len(data):
            break
        size = int.from_bytes(data[pos + 4:pos + 8], "big")
        if data[pos:pos + 4] != b"MTrk":
            pos += 8 + size
            continue
        track_name, notes = _scan_track(data, pos + 8, min(pos + 8 + size, len(data)), name)
        pos += 8 + size
        if not notes:
            continue
        arr = np.array(notes, np.int64)  # (channel * 128 + program, start, end, pitch), in note-off order
        groups, first = np.unique(arr[:, 0], return_index=True)
        for g in groups[np.argsort(first)]:  # parts in the order of their first note
            sel = arr[arr[:, 0] == g]
            if g // 128 == 9:
                drum_notes = True
            else:
                parts.append(_Part(track_name, sel[:, 1], sel[:, 2], sel[:, 3]))
    return parts, drum_notes


def _scan_track(data: bytes, pos: int, end: int, name: str) -> tuple[str, list[tuple[int, int, int, int]]]:
    """One MTrk chunk -> (its name, [(channel * 128 + program, start, end, pitch)] of its notes)."""
    tick = status = 0
    program = [0] * 16
    track_name = ""
    open_notes: dict[int, list[tuple[int, int]]] = {}
    notes: list[tuple[int, int, int, int]] = []
    record = notes.append
    try:
        while pos < end:
            b = data[pos]
            pos += 1
            if b & 0x80:  # a delta time of more than one byte
                delta = b & 0x7F
                while b & 0x80:
                    b = data[pos]
                    pos += 1
                    delta = (delta << 7) | (b & 0x7F)
                tick += delta
            else:
                tick += b
            b = data[pos]
            if b & 0x80:
                if b == 0xFF:  # a meta event (it does not set the running status)
                    meta = data[pos + 1]
                    length, pos = read_vlq(data, pos + 2)
                    if meta == 0x03:
                        track_name = data[pos:pos + length].decode("latin-1")
                    pos += length
                    continue
                status = b
                pos += 1
            kind = status & 0xF0
            if kind == 0x90 or kind == 0x80:
                key = (status & 0x0F) * 128 + data[pos]
                if kind == 0x90 and data[pos + 1]:
                    waiting = open_notes.get(key)
                    group = (status & 0x0F) * 128 + program[status & 0x0F]
                    if waiting is None:
                        open_notes[key] = [(tick, group)]
                    else:
                        waiting.append((tick, group))
                else:
                    waiting = open_notes.pop(key, None)
                    if waiting is not None:
                        if len(waiting) == 1:
                            t, group = waiting[0]
                            if t != tick:
                                record((group, t, tick, data[pos]))
                        else:
                            kept = []
                            for t, group in waiting:
                                if t != tick:
                                    record((group, t, tick, data[pos]))
                                else:
                                    kept.append((t, group))
                            if kept and len(kept) < len(waiting):  # a note struck on this very tick goes on
                                open_notes[key] = kept
                pos += 2
            elif kind == 0xB0 or kind == 0xE0 or kind == 0xA0:
                pos += 2
            elif kind == 0xC0:
                program[status & 0x0F] = data[pos]
                pos += 1
            elif kind == 0xD0:
                pos += 1
            elif status == 0xF0 or status == 0xF7:
                length, pos = read_vlq(data, pos)
                pos += length
            else:
                raise RollError(name, "corrupt", f"MIDI event without a status byte at byte {pos}")
    except IndexError:
        raise RollError(name, "corrupt", "a track ends inside an event") from None
    return track_name, notes


def _parts_to_notes(parts: list[_Part], spec: RollSpec, timing: Timing, to_steps, name: str) -> PieceNotes:
    spb, P = spec.steps_per_beat, spec.n_pitches
    stats = {"notes": 0, "notes_folded": 0, "notes_dropped": 0, "parts": len(parts)}
    hands = _hand_groups(parts, spec)  # per hand: list of (part, mask or None)
    ons, offs, pitches, hand_ids = [], [], [], []
    for hand, groups in enumerate(hands):
        for part, mask in groups:
            sel = slice(None) if mask is None else mask
            ons.append(part.on[sel]); offs.append(part.off[sel]); pitches.append(part.pitch[sel])
            hand_ids.append(np.full(len(pitches[-1]), hand, np.int64))
    steps = to_steps(np.concatenate(ons + offs))
    n = len(steps) // 2
    on = steps[:n]
    off = np.maximum(steps[n:], on + 1)  # every note lasts at least one step
    pitch = np.concatenate(pitches)
    hand = np.concatenate(hand_ids)
    stats["notes"] = len(pitch)
    out = (pitch < spec.pitch_low) | (pitch > spec.pitch_high)
    n_out = int(np.count_nonzero(out))
    if spec.out_of_range == "drop":
        stats["notes_dropped"] = n_out
        if n_out:
            keep = ~out
            on, off, pitch, hand = on[keep], off[keep], pitch[keep], hand[keep]
    else:
        stats["notes_folded"] = n_out
        if n_out:
            low = pitch < spec.pitch_low
            pitch = np.where(low, pitch + 12 * ((spec.pitch_low - pitch + 11) // 12), pitch)
            high = pitch > spec.pitch_high
            pitch = np.where(high, pitch - 12 * ((pitch - spec.pitch_high + 11) // 12), pitch)
    if not len(pitch):
        raise RollError(name, "no_notes", "every note was out of range and dropped")
    on, off = np.maximum(on, 0), np.maximum(off, 1)
    total = int(off.max())
    return PieceNotes(on, off, hand * P + pitch - spec.pitch_low, total, bar_lines(timing, total, spb), timing, stats)


def notes_to_piece(notes: PieceNotes, spec: RollSpec) -> PieceRoll:
    """The :class:`PieceRoll` painted from its notes."""
    roll = paint_roll(notes.on, notes.off, notes.cell, None, notes.total, spec.n_pitches)
    return PieceRoll(roll, notes.bar_starts, notes.timing, notes.stats)


def paint_roll(start: np.ndarray, end: np.ndarray, cell: np.ndarray, onset: np.ndarray | None, steps: int,
               n_pitches: int) -> np.ndarray:
    """A bool roll (steps, 2, 2, P): ``SOUNDING`` over ``[start, end)`` in each note's cell, ``ONSET`` at ``start``.

    ``cell`` is hand * P + pitch row; ``onset`` (bool per note, None: all) says
    which notes mark their onset (a note cut at the start of a shard's segment
    sounds on without one). Every ``end`` is at most ``steps``.
    """
    P = n_pitches
    start, end, cell = (np.asarray(a, np.int64) for a in (start, end, cell))
    # Flat indices into roll (T, 2, 2, P): every (step, hand, SOUNDING, row) a note holds, then its onset.
    base = cell + (cell // P) * P  # hand * 2P + row
    dur = end - start
    first = np.cumsum(dur) - dur  # where each note's cells begin in the list of all held cells
    held = np.repeat(start * (4 * P) + base, dur) + (4 * P) * (np.arange(int(dur.sum())) - np.repeat(first, dur))
    flat = np.zeros(steps * 4 * P, dtype=bool)
    flat[held + SOUNDING * P] = True
    if onset is None:
        flat[start * (4 * P) + base + ONSET * P] = True
    else:
        flat[start[onset] * (4 * P) + base[onset] + ONSET * P] = True
    return flat.reshape(steps, 2, 2, P)


def _hand_groups(parts: list[_Part], spec: RollSpec) -> list[list[tuple[_Part, np.ndarray | None]]]:
    """:func:`assign_hands` for :class:`_Part` arrays: per hand, (part, note mask or None for all)."""
    named = [_hand_from_name(p.name) for p in parts]
    if spec.hands == "auto" and None not in named:
        return [[(p, None) for p, h in zip(parts, named) if h == hand] for hand in (RIGHT, LEFT)]
    if spec.hands == "duplicate" or (len(parts) == 1 and spec.single_part == "duplicate"):
        return [[(p, None) for p in parts], [(p, None) for p in parts]]
    if len(parts) == 1:
        p = parts[0]
        upper = p.pitch >= spec.split_pitch
        return [[(p, upper)], [(p, ~upper)]]
    order = sorted(parts, key=lambda p: -(int(p.pitch.sum()) / len(p.pitch)))  # np.mean's value, exactly
    n_right = math.ceil(len(order) / 2)
    return [[(p, None) for p in order[:n_right]], [(p, None) for p in order[n_right:]]]


def _score_timing(score, to_steps, name: str) -> Timing:
    """Tempo and metre maps in steps, as :func:`_timing` builds them from pretty_midi.

    Tempos: 120 qpm at tick 0 unless the file sets one there (the last set at
    tick 0 wins), later changes kept where the tempo changes. Time signatures from
    every track; at one step the last wins; 4/4 until the first.
    """
    tpq = int(score.ticks_per_quarter)
    tt = score.tempos.numpy()
    ticks, mspq = tt["time"].astype(np.int64), tt["mspq"].astype(np.float64)
    if (mspq <= 0).any():
        bad = int(np.argmax(mspq <= 0))
        raise RollError(name, "corrupt", f"tempo of {int(mspq[bad])} microseconds per quarter at tick {ticks[bad]}")
    scale = 60.0 / ((6e7 / mspq) * tpq)  # pretty_midi's float arithmetic, so the qpm values agree exactly
    at_zero = ticks == 0
    first = scale[at_zero][-1] if at_zero.any() else 60.0 / (120.0 * tpq)  # the last tempo at tick 0 wins
    ticks, scale = np.concatenate([[0], ticks[~at_zero]]), np.concatenate([[first], scale[~at_zero]])
    # a later event is kept where it changes the tempo (an unchanged one was dropped, so its
    # predecessor's tempo is the one in force)
    change = np.concatenate([[True], scale[1:] != scale[:-1]])
    ticks, qpm = ticks[change], 60.0 / (scale[change] * tpq)
    steps = to_steps(ticks)
    last = np.concatenate([steps[1:] != steps[:-1], [True]])  # at one step the last wins
    tempo_map = list(zip(steps[last].tolist(), qpm[last].tolist()))
    meters: list[tuple[int, int, int]] = []
    ts = score.time_signatures.numpy()
    for tick, s, num, den in zip(ts["time"].tolist(), to_steps(ts["time"]).tolist(), ts["numerator"].tolist(),
                                 ts["denominator"].tolist()):
        if num <= 0 or den <= 0:
            raise RollError(name, "corrupt", f"time signature {num}/{den} at tick {tick}")
        if meters and meters[-1][0] == s:
            meters.pop()
        meters.append((s, num, den))
    if not meters or meters[0][0] != 0:
        meters.insert(0, (0, 4, 4))
    return Timing(tempo_map, meters)


# ---------------------------------------------------------------- windows
def count_notes(roll: np.ndarray) -> int:
    """Onsets, plus notes already sounding at the first step without an onset there."""
    carried = roll[0, :, SOUNDING] & ~roll[0, :, ONSET] if len(roll) else np.zeros(0, bool)
    return int(roll[:, :, ONSET].sum() + carried.sum())


def window_bars(bar_starts: list[int], total: int, bar_steps: int) -> list[int]:
    """The bar lines windows count in: consecutive bars joined so each group holds as many whole bars as fit in
    ``bar_steps`` (``max_beats_per_bar`` beats), at least one (greedily, from the first bar line); ``total``: the
    piece's steps, where its last bar ends.

    A bar of 4/4 or 3/4 is a group of its own; bars of 2/4 go two to a group, of 1/4 four: a window of
    ``bars_per_window`` groups spans about as many beats whatever bar the file writes. Most of the corpus's pop
    files are written in 1/4, so their two-bar windows held two beats (8 steps, where jazz held 32), and the
    judge learnt that a short window is pop: classical windows cut to 8 steps were called pop 0.81 of the time.
    """
    ends = bar_starts[1:] + [max(total, bar_starts[-1] + 1)] if bar_starts else []
    out: list[int] = []
    for start, end in zip(bar_starts, ends):
        if not out or end - out[-1] > bar_steps:  # this bar would not fit in the group: it starts the next one
            out.append(start)
    return out


def iter_windows(piece: PieceRoll, spec: RollSpec, hop_bars: int | None = None, keep_empty: bool = False) -> Iterator[Window]:
    """Windows of ``bars_per_window`` bars starting on bar lines, every ``hop_bars`` bars; bars shorter than
    ``max_beats_per_bar`` beats are counted in groups (:func:`window_bars`).

    A window holds as many whole bars as fit in ``window_steps`` (a bar longer
    than that is cut) and is zero-padded to ``window_steps``. Windows with fewer
    than ``min_notes_per_window`` notes are skipped unless ``keep_empty`` (the
    transfer stage keeps them to stitch a whole piece back together).
    """
    hop = hop_bars or spec.hop_bars
    total = len(piece.roll)
    lines = window_bars(piece.bar_starts, total, spec.bar_steps)
    bars = lines + [total]
    W = spec.window_steps
    for i in range(0, len(lines), hop):
        start = bars[i]
        if start >= total:
            break
        end_bar = min(i + spec.bars_per_window, len(bars) - 1)
        while end_bar > i + 1 and bars[end_bar] - start > W:
            end_bar -= 1
        length = min(bars[end_bar] - start, W)
        out = np.zeros((W, 2, 2, spec.n_pitches), dtype=bool)
        out[:length] = piece.roll[start : start + length]
        notes = count_notes(out[:length])
        if keep_empty or notes >= spec.min_notes_per_window:
            yield Window(start, length, out, notes)


def _candidate_windows(bar_starts: list[int], total: int, spec: RollSpec) -> tuple[np.ndarray, np.ndarray]:
    """(start, length) of every window :func:`iter_windows` considers, before the note count."""
    W = spec.window_steps
    lines = window_bars(bar_starts, total, spec.bar_steps)
    bars = np.array(lines + [total], np.int64)
    first = np.arange(0, len(lines), spec.hop_bars)
    first = first[bars[first] < total]  # iter_windows stops at the first bar past the end
    start = bars[first]
    # the last bar line that still fits in W steps, at most bars_per_window bars on, at least one bar
    fits = np.searchsorted(bars, start + W, side="right") - 1
    end_bar = np.maximum(first + 1, np.minimum(np.minimum(first + spec.bars_per_window, len(bars) - 1), fits))
    return start, np.minimum(bars[end_bar] - start, W)


def window_batch(piece: PieceRoll, spec: RollSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The windows :func:`iter_windows` yields, as arrays: rolls (N, W, 2, 2, P), lengths (N,), starts (N,).

    Computed for all windows at once: note counts from running sums, the rolls by one gather.
    """
    roll, total, W = piece.roll, len(piece.roll), spec.window_steps
    start, length = _candidate_windows(piece.bar_starts, total, spec)
    onsets = np.concatenate([[0], np.cumsum(roll[:, :, ONSET].sum(axis=(1, 2)))])
    carried = (roll[:, :, SOUNDING] & ~roll[:, :, ONSET]).sum(axis=(1, 2))
    notes = onsets[start + length] - onsets[start] + np.where(length > 0, carried[np.minimum(start, total - 1)], 0)
    keep = notes >= spec.min_notes_per_window
    start, length = start[keep], length[keep]
    return window_rolls(roll, start, length, W), length.astype(np.int32), start.astype(np.int32)


def window_rolls(roll: np.ndarray, start: np.ndarray, length: np.ndarray, window_steps: int) -> np.ndarray:
    """``roll[start:start + length]`` of every window, zero-padded to ``window_steps``: (N, W, 2, 2, P)."""
    steps = np.arange(window_steps)
    index = np.where(steps < length[:, None], start[:, None] + steps, len(roll))  # past the window: a zero step
    padded = np.concatenate([roll, np.zeros((1, *roll.shape[1:]), bool)])
    return padded[index]


def note_windows(notes: PieceNotes, spec: RollSpec) -> tuple[np.ndarray, np.ndarray]:
    """Starts and lengths (int32) of the windows :func:`window_batch` cuts from ``notes_to_piece(notes)``.

    The note count of a window (:func:`count_notes`) comes from the notes without
    painting the roll: the distinct onset cells inside the window, plus the cells
    that sound at its first step without an onset there (counted only for the
    windows whose onsets alone fall short).
    """
    start, length = _candidate_windows(notes.bar_starts, notes.total, spec)
    need = spec.min_notes_per_window
    if need <= 1:  # any onset is a distinct onset cell
        onset_steps = notes.on
    else:
        span = 2 * spec.n_pitches  # the cells (hand, row) of one step
        onset = np.sort(notes.on * span + notes.cell)
        onset_steps = onset[np.append(True, onset[1:] != onset[:-1])] // span  # one per distinct onset cell
    before = np.concatenate([[0], np.cumsum(np.bincount(onset_steps, minlength=notes.total))])
    count = before[start + length] - before[start]
    short = count < need
    if short.any():
        count[short] += _carried(notes, start[short], 2 * spec.n_pitches)
    keep = count >= need
    return start[keep].astype(np.int32), length[keep].astype(np.int32)


def _carried(notes: PieceNotes, start: np.ndarray, span: int) -> np.ndarray:
    """Per step in ``start`` (ascending): the cells that sound there without an onset there (``span`` cells a step)."""
    on, off, cell = notes.on, notes.off, notes.cell
    n = len(start)
    # (step, cell) of every note that sounds at a step and began before it
    lo = np.searchsorted(start, on, side="right")
    spans = np.maximum(np.searchsorted(start, off) - lo, 0)
    total = int(spans.sum())
    if not total:
        return np.zeros(n, np.int64)
    k = np.arange(total) - np.repeat(np.cumsum(spans) - spans, spans)
    held = ((np.repeat(lo, spans) + k) * span + np.repeat(cell, spans)) * 2
    w = np.maximum(lo - 1, 0)  # the last step at or before the note's onset
    hit = (lo > 0) & (start[w] == on)
    struck = (w[hit] * span + cell[hit]) * 2 + 1  # cells struck on one of the steps
    keys = np.sort(np.concatenate([held, struck]))
    # a held cell counts unless the same (step, cell) is also struck: its run of keys then ends odd
    cells = keys >> 1
    last = np.append(cells[1:] != cells[:-1], True)
    return np.bincount(cells[last & ((keys & 1) == 0)] // span, minlength=n)


def stitch_windows(windows: list[tuple[int, int, np.ndarray]], total_steps: int) -> np.ndarray:
    """Inverse of non-overlapping windowing: ``[(start, length, roll)] -> (T, 2, 2, P)``."""
    P = windows[0][2].shape[-1] if windows else 0
    out = np.zeros((total_steps, 2, 2, P), dtype=bool)
    for start, length, roll in windows:
        n = min(length, total_steps - start)
        out[start : start + n] = roll[:n]
    return out


# ---------------------------------------------------------------- writing MIDI
def roll_to_notes(roll: np.ndarray) -> list[tuple[int, int, int, int]]:
    """``(hand, pitch_row, start_step, end_step)`` of every note of a roll.

    A note starts where the key goes down or an onset is marked, and lasts while
    the key stays down without a new onset. An onset without ``SOUNDING`` (a
    model's output can have one) counts as a one-step note.
    """
    sounding = roll[:, :, SOUNDING] | roll[:, :, ONSET]  # (T, 2, P)
    onset = roll[:, :, ONSET]
    T = len(roll)
    prev = np.concatenate([np.zeros_like(sounding[:1]), sounding[:-1]])
    starts = sounding & (onset | ~prev)
    notes = []
    for t, h, p in zip(*np.nonzero(starts)):
        e = t + 1
        while e < T and sounding[e, h, p] and not onset[e, h, p]:
            e += 1
        notes.append((int(h), int(p), int(t), int(e)))
    notes.sort(key=lambda n: (n[0], n[2], n[1]))
    return notes


def roll_to_midi(roll: np.ndarray, spec: RollSpec, timing: Timing | None = None, velocity: int = 80) -> mido.MidiFile:
    """Write a roll as a two-track MIDI file on an exact tick grid.

    Ticks per quarter note are ``steps_per_beat * 120`` so every step is a whole
    number of ticks; tempo and time-signature changes come from ``timing`` (the
    source piece's, when a piece is transferred) so the result plays at the
    source's tempo.
    """
    timing = timing or Timing()
    tps = TICKS_PER_STEP
    mid = mido.MidiFile(type=1, ticks_per_beat=spec.steps_per_beat * tps)
    meta = [(s * tps, mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(q))) for s, q in timing.tempos]
    meta += [(s * tps, mido.MetaMessage("time_signature", numerator=n, denominator=d)) for s, n, d in timing.meters]
    mid.tracks.append(_track(meta, "midistyle"))
    for hand in (RIGHT, LEFT):
        events = []
        for h, p, s, e in roll_to_notes(roll):
            if h == hand:
                pitch = spec.pitch_low + p
                events.append((e * tps, mido.Message("note_off", note=pitch, velocity=0, channel=hand)))
                events.append((s * tps, mido.Message("note_on", note=pitch, velocity=velocity, channel=hand)))
        events.insert(0, (0, mido.Message("program_change", program=0, channel=hand)))
        mid.tracks.append(_track(events, HAND_NAMES[hand]))
    return mid


def _track(events: list[tuple[int, mido.Message]], name: str) -> mido.MidiTrack:
    """Absolute-tick events -> a delta-time track; note_offs sort before note_ons at a tick."""
    order = {"note_off": 0}
    events = sorted(events, key=lambda ev: (ev[0], order.get(ev[1].type, 1)))
    track = mido.MidiTrack([mido.MetaMessage("track_name", name=name, time=0)])
    now = 0
    for tick, msg in events:
        track.append(msg.copy(time=tick - now))
        now = tick
    track.append(mido.MetaMessage("end_of_track", time=0))
    return track


def midi_bytes(mid: mido.MidiFile) -> bytes:
    buf = io.BytesIO()
    mid.save(file=buf)
    return buf.getvalue()


def to_pretty_midi(mid: mido.MidiFile) -> pretty_midi.PrettyMIDI:
    return pretty_midi.PrettyMIDI(io.BytesIO(midi_bytes(mid)))


def write_midi(mid: mido.MidiFile, path: str | Path) -> Path:
    """Write atomically: a temporary name in the same folder, then a rename."""
    return atomic_write_bytes(path, midi_bytes(mid))
