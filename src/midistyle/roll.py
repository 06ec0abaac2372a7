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
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import mido
import numpy as np
import pretty_midi

from midistyle.errors import UserError

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
    """The grid and the hand rules; built from ``params.extract``."""

    steps_per_beat: int = 4
    pitch_low: int = 34
    pitch_high: int = 84
    out_of_range: str = "fold"  # fold | drop
    hands: str = "auto"  # auto | duplicate
    single_part: str = "split"  # split | duplicate
    split_pitch: int = 60
    bars_per_window: int = 4
    hop_bars: int = 2
    max_beats_per_bar: int = 4
    min_notes_per_window: int = 1

    @classmethod
    def from_params(cls, extract) -> "RollSpec":
        return cls(**{f: getattr(extract, f) for f in cls.__dataclass_fields__})

    @property
    def n_pitches(self) -> int:
        return self.pitch_high - self.pitch_low + 1

    @property
    def window_steps(self) -> int:
        return self.bars_per_window * self.max_beats_per_bar * self.steps_per_beat

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
class Window:
    start: int  # step of the piece where the window begins (a bar line)
    length: int  # steps holding music; the rest up to window_steps is padding
    roll: np.ndarray  # bool (window_steps, 2, 2, P), zero past `length`
    notes: int  # onsets in the window, plus notes carried in from before it


# ---------------------------------------------------------------- reading MIDI
def load_midi(path: str | Path, max_bytes: int | None = None) -> pretty_midi.PrettyMIDI:
    """Load a MIDI file, or raise :class:`RollError` with a reason code.

    Reasons: ``empty`` (0 bytes), ``too_large``, ``not_midi`` (no MIDI header),
    ``corrupt`` (a MIDI header, but the parser fails).
    """
    path = Path(path)
    data = path.read_bytes()
    if not data:
        raise RollError(str(path), "empty", "0 bytes")
    if max_bytes is not None and len(data) > max_bytes:
        raise RollError(str(path), "too_large", f"{len(data)} bytes > {max_bytes}")
    if not (data.startswith(b"MThd") or (data.startswith(b"RIFF") and data[8:12] == b"RMID")):
        raise RollError(str(path), "not_midi", "no MThd header")
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
        s = start
        while s < nxt:
            if not bars or s > bars[-1]:
                bars.append(s)
            s += bar
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


def midi_to_roll(pm: pretty_midi.PrettyMIDI, spec: RollSpec, name: str = "<midi>") -> PieceRoll:
    """Turn a parsed MIDI file into a :class:`PieceRoll` (raises RollError: no_notes, drums_only)."""
    parts = [inst for inst in pm.instruments if not inst.is_drum and inst.notes]
    if not parts:
        if any(inst.is_drum and inst.notes for inst in pm.instruments):
            raise RollError(name, "drums_only", "only drum tracks have notes")
        raise RollError(name, "no_notes", "no track has notes")
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


def read_piece(path: str | Path, spec: RollSpec, max_bytes: int | None = None) -> PieceRoll:
    return midi_to_roll(load_midi(path, max_bytes), spec, str(path))


# ---------------------------------------------------------------- windows
def count_notes(roll: np.ndarray) -> int:
    """Onsets, plus notes already sounding at the first step without an onset there."""
    carried = roll[0, :, SOUNDING] & ~roll[0, :, ONSET] if len(roll) else np.zeros(0, bool)
    return int(roll[:, :, ONSET].sum() + carried.sum())


def iter_windows(piece: PieceRoll, spec: RollSpec, hop_bars: int | None = None, keep_empty: bool = False) -> Iterator[Window]:
    """Windows of ``bars_per_window`` bars starting on bar lines, every ``hop_bars`` bars.

    A window holds as many whole bars as fit in ``window_steps`` (a bar longer
    than that is cut) and is zero-padded to ``window_steps``. Windows with fewer
    than ``min_notes_per_window`` notes are skipped unless ``keep_empty`` (the
    transfer stage keeps them to stitch a whole piece back together).
    """
    hop = hop_bars or spec.hop_bars
    total = len(piece.roll)
    bars = piece.bar_starts + [total]
    W = spec.window_steps
    for i in range(0, len(piece.bar_starts), hop):
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
    from midistyle.fileio import atomic_write_bytes

    return atomic_write_bytes(path, midi_bytes(mid))
