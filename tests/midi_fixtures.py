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

    meta = [(t, mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(q))) for t, q in tempos]
    meta += [(t, mido.MetaMessage("time_signature", numerator=n, denominator=d)) for t, n, d in meters]
    events = [(s, 1, mido.Message("note_on", note=p, velocity=80)) for p, s, _ in notes]
    events += [(e, 0, mido.Message("note_off", note=p, velocity=0)) for p, _, e in notes]
    meta_track = [(t, m) for t, m in sorted(meta, key=lambda x: x[0])]
    note_track = [(t, m) for t, _, m in sorted(events, key=lambda x: (x[0], x[1]))]  # note-offs first at a tick
    return _events_file([meta_track, note_track], tpb)


def _events_file(tracks: list[list[tuple[int, "object"]]], tpb: int = 480, midi_type: int = 1) -> bytes:
    """A MIDI file from per-track ``(absolute_tick, mido message)`` lists, in the order given."""
    import mido

    mid = mido.MidiFile(type=midi_type, ticks_per_beat=tpb)
    for events in tracks:
        track, now = mido.MidiTrack(), 0
        for t, msg in events:
            track.append(msg.copy(time=t - now))
            now = t
        mid.tracks.append(track)
    buf = io.BytesIO()
    mid.save(file=buf)
    return buf.getvalue()


def _on(pitch: int, channel: int = 0, velocity: int = 80):
    import mido

    return mido.Message("note_on", note=pitch, velocity=velocity, channel=channel)


def _off(pitch: int, channel: int = 0):
    import mido

    return mido.Message("note_off", note=pitch, velocity=0, channel=channel)


def smpte_file() -> bytes:
    """A well-formed file whose header counts time in SMPTE frames (25 fps, 40 ticks/frame), not per quarter."""
    data = bytearray(tick_piece([(60, 0, 40), (64, 40, 80)]))
    data[12:14] = bytes([256 - 25, 40])
    return bytes(data)


def no_note_offs_file() -> bytes:
    """Note-ons and never a note-off (nor a note-on of velocity 0): no note has an end."""
    return _events_file([[(0, _on(60)), (480, _on(64)), (960, _on(67))]])


def rmid_file(smf: bytes) -> bytes:
    """``smf`` wrapped in a RIFF RMID container."""
    body = b"RMID" + b"data" + len(smf).to_bytes(4, "little") + smf + (b"\0" if len(smf) % 2 else b"")
    return b"RIFF" + len(body).to_bytes(4, "little") + body


def bad_files() -> dict[str, tuple[bytes, str]]:
    """One file per way a MIDI file can fail to become a roll: name -> (bytes, skip reason)."""
    good = tick_piece([(60, 0, 480)])
    return {
        "empty": (b"", "empty"),
        "text": (b"this is a text file, not MIDI\n", "not_midi"),
        "bad_chunk_length": (b"MThd\x00\x00\x00\x06\x00\x01\x00\x02\x01\xe0MTrk\xff\xff\xff\xffgarbage", "corrupt"),
        "truncated": (good[:-9], "corrupt"),
        "header_only": (b"MThd\x00\x00", "corrupt"),
        "zero_division": (good[:12] + b"\x00\x00" + good[14:], "corrupt"),
        "smpte": (smpte_file(), "smpte_timing"),
        "no_note_offs": (no_note_offs_file(), "no_note_offs"),
        "zero_length_notes": (_events_file([[(0, _on(60)), (0, _off(60)), (480, _on(62)), (480, _off(62))]]), "no_notes"),
        "silent": (to_bytes(piece([[]])), "no_notes"),
        "drums_only": (to_bytes(piece([], drums=[(36, 0, 0.5)])), "drums_only"),
        "rmid_without_data": (b"RIFF\x0c\x00\x00\x00RMIDLIST\x00\x00\x00\x00", "corrupt"),
        "rmid_text": (rmid_file(b"not a midi file"), "not_midi"),
    }


def tricky_files() -> dict[str, bytes]:
    """Readable files where MIDI leaves room for interpretation; both readers must agree on each."""
    import mido

    name = mido.MetaMessage("track_name", name="Left hand")
    tempo = [(0, mido.MetaMessage("set_tempo", tempo=600000)), (960, mido.MetaMessage("set_tempo", tempo=400000))]
    return {
        "restruck_before_note_off": _events_file([[(0, _on(60)), (100, _on(60)), (240, _off(60)), (480, _off(60)),
                                                    (480, _on(48)), (960, _off(48))]]),
        # struck again, one note-off for both, struck later once more: symusic's first-in-first-out
        # pairing alone would give the second note the last note-off and drop the third note
        "unbalanced_restrike": _events_file([[(0, _on(60)), (240, _on(60)), (480, _off(60)), (960, _on(60)),
                                               (1200, _off(60))]]),
        "same_tick_off_on": _events_file([[(0, _on(60)), (480, _off(60)), (480, _on(60)), (960, _off(60))]]),
        "same_tick_on_off": _events_file([[(0, _on(60)), (480, _on(60)), (480, _off(60)), (960, _off(60))]]),
        "zero_length_among_notes": _events_file([[(0, _on(60)), (0, _off(60)), (0, _on(62)), (480, _off(62))]]),
        "unclosed_among_notes": _events_file([[(0, _on(60)), (0, _on(64)), (480, _off(64))]]),
        "two_channels_one_track": _events_file([[(0, name), (0, _on(72, 1)), (0, _on(40, 2)), (480, _off(72, 1)),
                                                  (960, _off(40, 2))]]),
        "type0_tempo_change": _events_file([sorted(tempo + [(0, _on(60)), (1440, _off(60)), (1440, _on(30)),
                                                            (1920, _off(30))], key=lambda e: e[0])], midi_type=0),
        "out_of_range_both_ways": tick_piece([(100, 0, 480), (20, 0, 480), (60, 240, 720)]),
        "odd_resolution_half_steps": tick_piece([(60, 0, 45), (62, 45, 90), (64, 90, 150)], tpb=90),
        "three_four_then_six_eight": tick_piece([(60 + i, i * 480, i * 480 + 240) for i in range(24)],
                                                meters=[(0, 3, 4), (1440 * 2, 6, 8)]),
        "rmid": rmid_file(tick_piece([(60, 0, 480), (48, 0, 960)])),
    }


def program_change_mid_note() -> bytes:
    """A program change while a note sounds: is the note the old instrument's or the new one's?"""
    import mido

    prog = mido.Message("program_change", program=5, channel=0)
    return _events_file([[(0, _on(60)), (240, prog), (480, _off(60)), (480, _on(40)), (960, _off(40))]])
