"""benchmarks/texture_stats.py on hand-made files with known answers."""

import pretty_midi
import pytest

from tests.helpers_bench import load_benchmark


def write(path, notes, bpm=120.0):
    """notes: (pitch, start beat, end beat); 120 bpm, so a beat is half a second."""
    pm = pretty_midi.PrettyMIDI(initial_tempo=bpm)
    piano = pretty_midi.Instrument(program=0)
    piano.notes = [pretty_midi.Note(velocity=80, pitch=p, start=s * 60 / bpm, end=e * 60 / bpm) for p, s, e in notes]
    pm.instruments.append(piano)
    pm.write(str(path))
    return path


def test_a_held_chord_under_a_leaping_line(tmp_path):
    texture = load_benchmark("texture_stats").texture
    # beats 0-8: C3 E3 G3 held, and a line of 16 eighth notes alternating C5 and A5 (a leap of 9 semitones)
    chord = [(48, 0, 8), (52, 0, 8), (55, 0, 8)]
    line = [(72 if i % 2 == 0 else 81, i * 0.5, i * 0.5 + 0.5) for i in range(16)]
    row = texture(write(tmp_path / "a.mid", chord + line + [(60, 8, 9)]))
    assert row["notes_per_beat"] == pytest.approx(20 / 9)  # 20 notes over the 9 beats up to the last onset's (beat 8)
    assert row["short_share"] == 0.0  # nothing of a 16th or less
    assert row["span"] == (33 + 9) / 2  # notes started in beats 0-4: C3..A5 (33); in 4-8 the line alone, C5..A5 (9)
    assert row["lone_share"] == pytest.approx(1 / 20)  # only the last C4 starts with nothing sounding
    # top line: C5 (above the chord), A5, C5 ... (15 leaps of 9), then A5 -> C4 (21): every leap is larger than a fifth
    assert row["big_leap_share"] == 1.0 and row["median_leap"] == 9


def test_a_stepwise_line_of_sixteenths_alone(tmp_path):
    texture = load_benchmark("texture_stats").texture
    line = [(60 + (i % 3), i * 0.25, i * 0.25 + 0.25) for i in range(40)]  # C D C# ... a 16th each, beats 0-10
    row = texture(write(tmp_path / "b.mid", line))
    assert row["short_share"] == 1.0 and row["median_duration"] == pytest.approx(0.25)
    assert row["lone_share"] == 1.0  # each note ends as the next starts
    assert row["big_leap_share"] == 0.0 and row["median_leap"] == 1


def test_too_short_a_file_has_no_figures(tmp_path):
    texture = load_benchmark("texture_stats").texture
    assert texture(write(tmp_path / "c.mid", [(60, 0, 1)])) is None
