"""Small MIDI files built in code, one per edge case (no binary fixtures in git)."""

from __future__ import annotations

import io
from pathlib import Path

import pretty_midi


def piece(parts: list[list[tuple[int, float, float]]], tempo: float = 120.0, drums: list[tuple[int, float, float]] | None = None,
          names: list[str] | None = None) -> pretty_midi.PrettyMIDI:
    """parts: per instrument, notes as (pitch, start_s, end_s)."""
    pm = pretty_midi.PrettyMIDI(initial_tempo=tempo)
    for i, notes in enumerate(parts):
        inst = pretty_midi.Instrument(program=0, name=(names[i] if names else f"part{i}"))
        inst.notes = [pretty_midi.Note(velocity=80, pitch=p, start=s, end=e) for p, s, e in notes]
        pm.instruments.append(inst)
    if drums:
        kit = pretty_midi.Instrument(program=0, is_drum=True, name="drums")
        kit.notes = [pretty_midi.Note(velocity=80, pitch=p, start=s, end=e) for p, s, e in drums]
        pm.instruments.append(kit)
    return pm


def to_bytes(pm: pretty_midi.PrettyMIDI) -> bytes:
    buf = io.BytesIO()
    pm.write(buf)
    return buf.getvalue()


def write(pm: pretty_midi.PrettyMIDI, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(to_bytes(pm))
    return path


def scale_piece(seed: int, bars: int = 8, tempo: float = 120.0, low: int = 40, high: int = 80) -> pretty_midi.PrettyMIDI:
    """A deterministic two-part piece: quarter-note melody over half-note bass."""
    import random

    rng = random.Random(seed)
    beat = 60.0 / tempo
    melody, bass = [], []
    for b in range(bars * 4):
        melody.append((rng.randint(60, high), b * beat, (b + 1) * beat))
        if b % 2 == 0:
            bass.append((rng.randint(low, 59), b * beat, (b + 2) * beat))
    return piece([melody, bass], tempo=tempo)


def tick_piece(notes: list[tuple[int, int, int]], tempos: list[tuple[int, float]] = ((0, 120.0),),
               meters: list[tuple[int, int, int]] = ((0, 4, 4),), tpb: int = 480) -> bytes:
    """A one-track MIDI file written in ticks: notes (pitch, start_tick, end_tick),
    tempo changes (tick, qpm) and time signatures (tick, numerator, denominator)."""
    import mido

    mid = mido.MidiFile(type=1, ticks_per_beat=tpb)
    meta = [(t, mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(q))) for t, q in tempos]
    meta += [(t, mido.MetaMessage("time_signature", numerator=n, denominator=d)) for t, n, d in meters]
    events = [(s, 1, mido.Message("note_on", note=p, velocity=80)) for p, s, _ in notes]
    events += [(e, 0, mido.Message("note_off", note=p, velocity=0)) for p, _, e in notes]
    for track_events in (sorted(((t, 0, m) for t, m in meta), key=lambda x: x[0]), sorted(events, key=lambda x: (x[0], x[1]))):
        track, now = mido.MidiTrack(), 0
        for t, _, msg in track_events:
            track.append(msg.copy(time=t - now))
            now = t
        mid.tracks.append(track)
    buf = io.BytesIO()
    mid.save(file=buf)
    return buf.getvalue()
