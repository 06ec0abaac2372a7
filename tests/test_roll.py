"""The piano-roll contract: known notes, round trips, hands, tempo and metre."""

import dataclasses
import io

import numpy as np
import pretty_midi
import pytest

from midistyle.roll import (LEFT, ONSET, RIGHT, SOUNDING, PieceNotes, RollError, RollSpec, Timing, iter_windows,
                            load_midi, midi_to_roll, note_windows, notes_to_piece, paint_roll, read_notes, read_piece,
                            roll_to_midi, roll_to_notes, stitch_windows, to_pretty_midi, window_bars, window_batch)
from tests.helpers_params import repo_spec
from tests.midi_fixtures import piece, scale_piece, tick_piece, to_bytes

SPEC = repo_spec(bars_per_window=4, hop_bars=2)  # params.yaml's grid; the window tests count on 4-bar windows


def grid(**changes) -> RollSpec:
    return dataclasses.replace(SPEC, **changes)


def row(pitch: int) -> int:
    return pitch - SPEC.pitch_low


def test_known_notes_give_known_roll():
    # 120 qpm: a quarter note is 0.5 s = 4 steps. Melody part above, bass part below.
    pm = piece([[(72, 0.0, 0.5), (72, 0.5, 1.0), (76, 1.0, 2.0)], [(48, 0.0, 2.0)]])
    r = midi_to_roll(pm, SPEC).roll
    assert r.shape == (16, 2, 2, 51)
    expected = np.zeros_like(r)
    expected[0:8, RIGHT, SOUNDING, row(72)] = True  # two repeated quarters: held 8 steps...
    expected[[0, 4], RIGHT, ONSET, row(72)] = True  # ...but struck twice
    expected[8:16, RIGHT, SOUNDING, row(76)] = True
    expected[8, RIGHT, ONSET, row(76)] = True
    expected[0:16, LEFT, SOUNDING, row(48)] = True
    expected[0, LEFT, ONSET, row(48)] = True
    assert np.array_equal(r, expected)
    assert roll_to_notes(r) == [(0, row(72), 0, 4), (0, row(72), 4, 8), (0, row(76), 8, 16), (1, row(48), 0, 16)]


def test_roll_midi_roll_round_trip_is_exact():
    pm = scale_piece(seed=3, bars=6, tempo=97.0)
    first = midi_to_roll(pm, SPEC)
    again = midi_to_roll(to_pretty_midi(roll_to_midi(first.roll, SPEC, first.timing)), SPEC)
    assert np.array_equal(first.roll, again.roll)
    assert again.bar_starts == first.bar_starts
    assert again.timing.tempos[0][1] == pytest.approx(97.0, rel=1e-4)


def test_random_roll_round_trips():
    rng = np.random.default_rng(0)
    roll = np.zeros((48, 2, 2, 51), bool)
    roll[:, :, SOUNDING] = rng.random((48, 2, 51)) < 0.1
    roll[:, :, ONSET] = roll[:, :, SOUNDING] & (rng.random((48, 2, 51)) < 0.5)
    prev = np.concatenate([np.zeros((1, 2, 51), bool), roll[:-1, :, SOUNDING]])
    roll[:, :, ONSET] |= roll[:, :, SOUNDING] & ~prev  # every note start is an onset
    roll[-1] = False
    back = midi_to_roll(to_pretty_midi(roll_to_midi(roll, SPEC)), SPEC).roll
    assert np.array_equal(back, roll[: len(back)])
    assert not roll[len(back):].any()


def test_single_part_is_split_at_the_split_pitch():
    pm = piece([[(72, 0, 0.5), (59, 0, 0.5), (60, 0.5, 1.0)]])
    r = midi_to_roll(pm, SPEC).roll
    assert r[0, RIGHT, SOUNDING, row(72)] and r[0, LEFT, SOUNDING, row(59)]
    assert r[4, RIGHT, SOUNDING, row(60)] and not r[:, LEFT, SOUNDING, row(60)].any()
    dup = midi_to_roll(pm, grid(single_part="duplicate")).roll
    assert np.array_equal(dup[:, RIGHT], dup[:, LEFT])


def test_many_parts_merge_upper_into_right_and_drums_are_dropped():
    satb = piece([[(50, 0, 1)], [(72, 0, 1)], [(43, 0, 1)], [(65, 0, 1)]], drums=[(36, 0, 0.5)])
    r = midi_to_roll(satb, SPEC).roll
    assert set(np.nonzero(r[0, RIGHT, ONSET])[0]) == {row(72), row(65)}
    assert set(np.nonzero(r[0, LEFT, ONSET])[0]) == {row(50), row(43)}
    dup = midi_to_roll(satb, grid(hands="duplicate")).roll
    assert np.array_equal(dup[:, RIGHT], dup[:, LEFT]) and dup[0, RIGHT, ONSET].sum() == 4


def test_out_of_range_notes_fold_or_drop_and_are_counted():
    pm = piece([[(96, 0, 0.5), (60, 0, 0.5)], [(22, 0, 0.5)]])
    folded = midi_to_roll(pm, SPEC)
    assert folded.stats["notes_folded"] == 2
    assert folded.roll[0, RIGHT, ONSET, row(84)] and folded.roll[0, LEFT, ONSET, row(34)]
    dropped = midi_to_roll(pm, grid(out_of_range="drop"))
    assert dropped.stats["notes_dropped"] == 2 and dropped.roll[:, :, ONSET].sum() == 1


def test_grid_follows_the_tempo_map_not_the_clock():
    # Quarter notes at every beat; the tempo halves after two beats. On a
    # wall-clock grid the last notes would drift; on the beat grid they do not.
    notes = [(60 + i, i * 480, (i + 1) * 480) for i in range(8)]
    data = tick_piece(notes, tempos=[(0, 120.0), (960, 60.0)])
    pr = midi_to_roll(pretty_midi.PrettyMIDI(io.BytesIO(data)), grid(single_part="duplicate"))
    onsets = sorted(np.nonzero(pr.roll[:, RIGHT, ONSET])[0].tolist())
    assert onsets == [0, 4, 8, 12, 16, 20, 24, 28]
    assert [s for s, _ in pr.timing.tempos] == [0, 8]
    # ...and the written MIDI plays at the source's tempo again.
    out = to_pretty_midi(roll_to_midi(pr.roll, SPEC, pr.timing))
    assert out.instruments[0].notes[-1].start == pytest.approx(1.0 + 5 * 1.0, abs=1e-3)


def test_three_four_time_gives_twelve_step_bars_and_four_bar_windows():
    notes = [(60 + (i % 12), i * 480, (i + 1) * 480) for i in range(3 * 10)]  # 10 bars of 3/4
    pm = pretty_midi.PrettyMIDI(io.BytesIO(tick_piece(notes, meters=[(0, 3, 4)])))
    pr = midi_to_roll(pm, SPEC)
    assert pr.bar_starts == list(range(0, 120, 12))
    windows = list(iter_windows(pr, SPEC))
    assert [w.start for w in windows] == [0, 24, 48, 72, 96]
    assert [w.length for w in windows] == [48, 48, 48, 48, 24]
    assert windows[0].roll.shape == (SPEC.window_steps, 2, 2, 51) and not windows[0].roll[48:].any()


@pytest.mark.parametrize("bar, expected", [
    (16, list(range(0, 64, 16))),  # 4/4: every bar line
    (12, [0, 12, 24, 36, 48]),  # 3/4: every bar line (two would not fit); the cut last bar (60..64) joins 48
    (8, list(range(0, 64, 16))),  # 2/4: two bars a group
    (4, list(range(0, 64, 16))),  # 1/4: four
    (6, [0, 12, 24, 36, 48]),  # 3/8: two (three would be 18 steps); 60..64 joins 48
    (32, [0, 32]),  # 4/2: a bar longer than the group stays one
])
def test_window_bars_join_short_bars_into_groups_of_at_most_four_beats(bar, expected):
    total = 64
    assert window_bars(list(range(0, total, bar)), total, 16) == expected


def test_window_bars_keep_a_pickup_and_follow_a_change_of_metre():
    # a 1/4 pickup, then 4/4 (16 steps) to step 52, then 1/4: the pickup stays its own group
    lines = [0, 4, 20, 36, 52, 56, 60, 64, 68, 72]
    assert window_bars(lines, 76, 16) == [0, 4, 20, 36, 52, 68]
    assert window_bars([], 0, 16) == [] and window_bars([0], 3, 16) == [0]


@pytest.mark.parametrize("numerator", [1, 2])
def test_short_bars_give_the_windows_of_four_four(numerator):
    """POP909's files are written in 1/4: their windows span as many beats as the same notes' in 4/4."""
    notes = [(60 + (i % 12), i * 480, (i + 1) * 480) for i in range(4 * 9)]  # 36 beats
    def windows(meter):
        pr = midi_to_roll(pretty_midi.PrettyMIDI(io.BytesIO(tick_piece(notes, meters=[(0, meter, 4)]))), SPEC)
        return [(w.start, w.length) for w in iter_windows(pr, SPEC)], window_batch(pr, SPEC)[1].tolist()
    common, lengths = windows(4)
    assert common == [(0, 64), (32, 64), (64, 64), (96, 48), (128, 16)] and lengths == [64, 64, 64, 48, 16]
    assert windows(numerator) == (common, lengths)
    pr = midi_to_roll(pretty_midi.PrettyMIDI(io.BytesIO(tick_piece(notes, meters=[(0, numerator, 4)]))), SPEC)
    whole = list(iter_windows(pr, SPEC, hop_bars=SPEC.bars_per_window, keep_empty=True))  # how a piece is stitched
    assert np.array_equal(stitch_windows([(w.start, w.length, w.roll) for w in whole], len(pr.roll)), pr.roll)


def test_empty_windows_are_skipped_and_stitching_inverts_windowing():
    pm = piece([[(60, 0, 2.0), (62, 16.0, 18.0)]])  # bars 0 and 8 have notes; 1..7 are silent
    pr = midi_to_roll(pm, SPEC)
    starts = [w.start for w in iter_windows(pr, SPEC)]
    assert starts == [0, 96, 128]  # windows at bars 4 and 6 hold nothing and are skipped
    whole = list(iter_windows(pr, SPEC, hop_bars=SPEC.bars_per_window, keep_empty=True))
    assert np.array_equal(stitch_windows([(w.start, w.length, w.roll) for w in whole], len(pr.roll)), pr.roll)


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "empty"),
        (b"this is a text file, not MIDI\n", "not_midi"),
        (b"MThd\x00\x00\x00\x06\x00\x01\x00\x02\x01\xe0MTrk\xff\xff\xff\xffgarbage", "corrupt"),
    ],
)
def test_bad_files_raise_with_a_reason_naming_the_file(tmp_path, data, reason):
    path = tmp_path / "bad.mid"
    path.write_bytes(data)
    with pytest.raises(RollError) as err:
        load_midi(path)
    assert err.value.reason == reason and str(path) in str(err.value)


def test_noteless_and_drums_only_files_are_rejected():
    with pytest.raises(RollError, match="no_notes"):
        midi_to_roll(piece([[]]), SPEC, "silent.mid")
    with pytest.raises(RollError, match="drums_only"):
        midi_to_roll(piece([], drums=[(36, 0, 0.5)]), SPEC, "drums.mid")


def test_timing_slice_rebases_events():
    t = Timing(tempos=[(0, 100.0), (20, 80.0)], meters=[(0, 4, 4), (40, 3, 4)])
    s = t.sliced(16, 48)
    assert s.tempos == [(0, 100.0), (4, 80.0)] and s.meters == [(0, 4, 4), (24, 3, 4)]


def test_tracks_named_for_a_hand_keep_it_even_alone_or_crossed():
    pm = piece([[(40, 0, 0.5)], [(80, 0, 0.5)]], names=["Right Hand", "LH"])
    r = midi_to_roll(pm, SPEC).roll
    assert r[0, RIGHT, ONSET, row(40)] and r[0, LEFT, ONSET, row(80)]
    alone = midi_to_roll(piece([[(40, 0, 0.5), (80, 0, 0.5)]], names=["Left hand"]), SPEC).roll
    assert alone[0, LEFT, ONSET].sum() == 2 and not alone[:, RIGHT].any()


@pytest.mark.parametrize("spec", [SPEC, grid(hop_bars=1, min_notes_per_window=3), grid(bars_per_window=2, max_beats_per_bar=3)])
def test_window_batch_is_iter_windows_as_arrays(spec):
    pieces = [scale_piece(seed=4, bars=9, tempo=90.0), piece([[(60, 0, 2.0), (62, 16.0, 18.0)]]),
              pretty_midi.PrettyMIDI(io.BytesIO(tick_piece([(60 + i % 12, i * 480, (i + 3) * 480) for i in range(40)],
                                                            meters=[(0, 3, 4), (4320, 7, 8)])))]
    for pm in pieces:
        pr = midi_to_roll(pm, spec)
        windows = list(iter_windows(pr, spec))
        rolls, lengths, starts = window_batch(pr, spec)
        expected = np.stack([w.roll for w in windows]) if windows else np.zeros((0, *rolls.shape[1:]), bool)
        assert np.array_equal(rolls, expected)
        assert lengths.tolist() == [w.length for w in windows] and starts.tolist() == [w.start for w in windows]
        assert lengths.dtype == np.int32 and starts.dtype == np.int32


@pytest.mark.parametrize("spec", [SPEC, repo_spec(hop_bars=1, min_notes_per_window=3), repo_spec(bars_per_window=2, max_beats_per_bar=3)])
def test_note_windows_are_window_batch_without_the_roll(spec, tmp_path):
    pieces = [scale_piece(seed=4, bars=9, tempo=90.0), piece([[(60, 0, 2.0), (62, 16.0, 18.0)]])]
    for k, pm in enumerate(pieces):
        path = tmp_path / f"p{k}.mid"
        path.write_bytes(to_bytes(pm))
        notes = read_notes(path, spec)
        assert np.array_equal(notes_to_piece(notes, spec).roll, read_piece(path, spec).roll)
        _, lengths, starts = window_batch(notes_to_piece(notes, spec), spec)
        got = note_windows(notes, spec)
        assert got[0].tolist() == starts.tolist() and got[1].tolist() == lengths.tolist()
        assert got[0].dtype == got[1].dtype == np.int32


@pytest.mark.parametrize("seed", range(40))
def test_note_windows_count_notes_as_the_roll_does(seed):
    """Random notes (repeated cells, notes held over many bars, onsets on bar lines) and random bars."""
    rng = np.random.default_rng(seed)
    spec = repo_spec(steps_per_beat=2, pitch_low=60, pitch_high=63, bars_per_window=int(rng.integers(1, 4)),
                    hop_bars=int(rng.integers(1, 3)), max_beats_per_bar=4, min_notes_per_window=int(rng.integers(1, 6)))
    m = int(rng.integers(1, 40))
    on = rng.integers(0, 60, m) // rng.choice([1, 4]) * rng.choice([1, 4])
    off = on + rng.choice([1, 2, 3, 8, 30], m)
    cell = rng.integers(0, 2 * spec.n_pitches, m)
    total = int(off.max())
    inner = rng.integers(1, total, int(rng.integers(0, 12))).tolist() if total > 1 else []
    bars = sorted({0, *inner})  # all before the end, as bar_lines makes them
    notes = PieceNotes(on, off, cell, total, bars, Timing(), {})
    _, lengths, starts = window_batch(notes_to_piece(notes, spec), spec)
    got = note_windows(notes, spec)
    assert got[0].tolist() == starts.tolist() and got[1].tolist() == lengths.tolist()


def test_paint_roll_marks_onsets_only_where_asked():
    roll = paint_roll(np.array([0, 2]), np.array([3, 4]), np.array([1, 5 + 2]), np.array([False, True]), 5, 5)
    assert roll.shape == (5, 2, 2, 5)
    assert roll[0:3, RIGHT, SOUNDING, 1].all() and not roll[:, RIGHT, ONSET].any()
    assert roll[2:4, LEFT, SOUNDING, 2].all() and roll[2, LEFT, ONSET, 2] and roll[:, LEFT, ONSET].sum() == 1
