"""benchmarks/hand_texture.py's per-hand measures on a hand-made window with known answers."""

import math

import numpy as np

from midistyle.roll import LEFT, ONSET, RIGHT, SOUNDING
from tests.helpers_bench import load_benchmark
from tests.helpers_params import repo_spec

SPEC = repo_spec()  # params.yaml's grid: 4 steps a beat


def load_hand_texture(monkeypatch):
    return load_benchmark("hand_texture", monkeypatch)  # it imports its neighbour `written`


def note(roll, hand, pitch, on, steps):
    row = pitch - SPEC.pitch_low
    roll[on:on + steps, hand, SOUNDING, row] = True
    roll[on, hand, ONSET, row] = True


def test_hand_measures_known_answers(monkeypatch):
    hand_texture = load_hand_texture(monkeypatch)
    spb = SPEC.steps_per_beat
    roll = np.zeros((4 * spb + 8, 2, 2, SPEC.n_pitches), bool)  # 4 beats of music, then padding past the length
    for beat, pitch in enumerate((60, 61, 62, 63)):  # right hand: a quarter note on each beat
        note(roll, RIGHT, pitch, beat * spb, spb)
    for pitch in (48, 52, 55):  # left hand: one three-note chord off the beat, held two beats
        note(roll, LEFT, pitch, 2, 2 * spb)
    note(roll, LEFT, 40, 4 * spb + 2, 4)  # past the window's length: not counted
    m = hand_texture.hand_measures(roll, 4 * spb, SPEC)
    assert m["right_onsets_per_beat"] == 1.0 and m["right_chord_size"] == 1.0
    assert m["right_steps_per_note"] == spb and m["right_offbeat_share"] == 0.0 and m["right_mean_pitch"] == 61.5
    assert m["left_onsets_per_beat"] == 0.75 and m["left_chord_size"] == 3.0
    assert m["left_steps_per_note"] == 2 * spb and m["left_offbeat_share"] == 1.0
    assert math.isclose(m["left_mean_pitch"], (48 + 52 + 55) / 3)


def test_hand_measures_silent_hand_is_nan(monkeypatch):
    hand_texture = load_hand_texture(monkeypatch)
    roll = np.zeros((16, 2, 2, SPEC.n_pitches), bool)
    note(roll, RIGHT, 70, 0, 2)
    m = hand_texture.hand_measures(roll, 16, SPEC)
    assert m["left_onsets_per_beat"] == 0.0
    assert all(math.isnan(m[f"left_{k}"]) for k in ("chord_size", "steps_per_note", "offbeat_share", "mean_pitch"))
