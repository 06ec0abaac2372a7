"""The fast MIDI reader (symusic) against the reference (pretty_midi): same rolls, same skip reasons.

benchmarks/compare_readers.py runs the comparison on the whole corpus
(benchmarks/results/readers.json); here it runs on a seeded handful of corpus
files when ../shared/corpus is beside the repository, else on files built in code.
"""

import dataclasses
import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from midistyle.roll import RollError, RollSpec, read_piece, read_piece_reference
from tests.helpers_bench import load_benchmark
from tests.helpers_params import repo_spec
from tests.midi_fixtures import (bad_files, no_note_offs_file, piece, program_change_mid_note, scale_piece, smpte_file,
                                 tick_piece, tricky_files, write)

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "corpus"
SPEC = repo_spec()  # params.yaml's grid


def grid(**changes) -> RollSpec:
    return dataclasses.replace(SPEC, **changes)


compare_readers = load_benchmark("compare_readers")


def read(fn, path, spec=SPEC):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # pretty_midi: meta events on non-zero tracks
        try:
            return fn(path, spec)
        except RollError as exc:
            return exc


@pytest.mark.parametrize("name", sorted(bad_files()))
def test_bad_files_give_the_same_reason_through_both_readers(tmp_path, name):
    data, reason = bad_files()[name]
    path = tmp_path / f"{name}.mid"
    path.write_bytes(data)
    for fn in (read_piece, read_piece_reference):
        err = read(fn, path)
        assert isinstance(err, RollError), f"{fn.__name__} read {name}"
        assert err.reason == reason, f"{fn.__name__}: {err}"
        assert str(path) in str(err) and "\n" not in str(err)


def test_too_large_is_checked_before_parsing(tmp_path):
    path = write(scale_piece(seed=1), tmp_path / "big.mid")
    for fn in (read_piece, read_piece_reference):
        with pytest.raises(RollError, match="too_large"):
            fn(path, SPEC, max_bytes=10)


def test_smpte_and_note_off_less_files_get_a_true_reason(tmp_path):
    smpte = tmp_path / "smpte.mid"
    smpte.write_bytes(smpte_file())
    with pytest.raises(RollError, match=r"smpte_timing \(time division is SMPTE \(25 frames/s"):
        read_piece(smpte, SPEC)
    offless = tmp_path / "offless.mid"
    offless.write_bytes(no_note_offs_file())
    with pytest.raises(RollError, match="no_note_offs"):
        read_piece(offless, SPEC)


@pytest.mark.parametrize("name", sorted(tricky_files()))
def test_tricky_files_give_identical_rolls(tmp_path, name):
    path = tmp_path / f"{name}.mid"
    path.write_bytes(tricky_files()[name])
    fast, ref = read(read_piece, path), read(read_piece_reference, path)
    assert not isinstance(fast, RollError), str(fast)
    assert compare_readers.differences(fast, ref) == []


def test_a_restruck_key_ends_at_the_first_note_off(tmp_path):
    # (on 60 @0, on 60 @100, off @240, off @480): both notes end at tick 240 (one step = 120 ticks),
    # as pretty_midi and FluidSynth have it; symusic alone would pair the second note with tick 480.
    path = tmp_path / "restruck.mid"
    path.write_bytes(tricky_files()["restruck_before_note_off"])
    roll = read_piece(path, grid(single_part="duplicate")).roll
    row = 60 - SPEC.pitch_low
    assert roll[:, 0, 0, row].tolist()[:4] == [True, True, False, False]
    assert roll[:, 0, 1, row].tolist()[:2] == [True, True]  # struck at step 0 and again at step 1 (tick 100)


@pytest.mark.parametrize("spec", [SPEC, grid(out_of_range="drop"), grid(hands="duplicate"),
                                  grid(single_part="duplicate", steps_per_beat=3, split_pitch=55)])
def test_built_pieces_give_identical_rolls_under_every_hand_and_range_rule(tmp_path, spec):
    pieces = {
        "scale": scale_piece(seed=2, bars=6, tempo=97.0),
        "satb_drums": piece([[(50, 0, 1)], [(72, 0, 1)], [(43, 0, 1.5)], [(65, 0.25, 1)]], drums=[(36, 0, 0.5)]),
        "out_of_range": piece([[(96, 0, 0.5), (60, 0, 0.5)], [(22, 0, 0.5)]]),
        "named": piece([[(40, 0, 0.5)], [(80, 0, 0.5)]], names=["Right Hand", "LH"]),
        "single": piece([[(72, 0, 0.5), (59, 0, 0.5), (60, 0.5, 1.0)]]),
    }
    for name, pm in pieces.items():
        path = write(pm, tmp_path / f"{name}.mid")
        fast, ref = read(read_piece, path, spec), read(read_piece_reference, path, spec)
        assert compare_readers.differences(fast, ref) == [], name
    tempo_path = tmp_path / "tempo.mid"
    tempo_path.write_bytes(tick_piece([(60 + i, i * 480, (i + 1) * 480) for i in range(8)],
                                      tempos=[(0, 120.0), (960, 60.0)], meters=[(0, 3, 4), (1440, 2, 4)]))
    assert compare_readers.differences(read(read_piece, tempo_path, spec), read(read_piece_reference, tempo_path, spec)) == []


def test_an_unbalanced_restrike_keeps_every_note(tmp_path):
    path = tmp_path / "restrike.mid"
    path.write_bytes(tricky_files()["unbalanced_restrike"])
    piece = read_piece(path, SPEC)  # one part: pitch 60 is the right hand's
    row = 60 - SPEC.pitch_low
    assert piece.stats["notes"] == 3
    assert np.nonzero(piece.roll[:, 0, 1, row])[0].tolist() == [0, 2, 8]  # onsets at ticks 0, 240, 960
    assert np.nonzero(piece.roll[:, 0, 0, row])[0].tolist() == [0, 1, 2, 3, 8, 9]


def test_a_note_keeps_the_program_it_was_struck_with(tmp_path):
    # pretty_midi files a note under the program current at its note-off; symusic at its
    # note-on (the sound a key makes is chosen when it is struck). Only the part count moves.
    path = tmp_path / "prog.mid"
    path.write_bytes(program_change_mid_note())
    fast, ref = read_piece(path, SPEC), read_piece_reference(path, SPEC)
    assert fast.stats["parts"] == 2 and ref.stats["parts"] == 1
    assert np.array_equal(fast.roll, ref.roll)


def test_half_step_ties_round_exactly_to_even(tmp_path):
    # tpq 480, 4 steps per quarter: 60 ticks is half a step. Ticks 60 and 180 -> steps 0 and 2.
    path = tmp_path / "ties.mid"
    path.write_bytes(tick_piece([(60, 60, 300), (64, 180, 420)]))
    roll = read_piece(path, grid(single_part="duplicate")).roll
    assert np.nonzero(roll[:, 0, 1, 60 - SPEC.pitch_low])[0].tolist() == [0]
    assert np.nonzero(roll[:, 0, 1, 64 - SPEC.pitch_low])[0].tolist() == [2]
    assert np.nonzero(roll[:, 0, 0, 60 - SPEC.pitch_low])[0].tolist() == [0, 1]  # ends at 300 ticks: 2.5 -> 2


@pytest.mark.parametrize("source", ["fixtures", "corpus"])
def test_the_comparison_script_finds_every_difference_a_cause(tmp_path, source):
    if source == "corpus":
        if not CORPUS.is_dir():
            pytest.skip(f"no corpus at {CORPUS} (CI has ../shared beside the clone)")
        args = [str(CORPUS), "--limit", "40", "--seed", "7"]
    else:
        folder = tmp_path / "midi"
        folder.mkdir()
        for name, data in tricky_files().items():
            (folder / f"{name}.mid").write_bytes(data)
        for name, (data, _) in bad_files().items():
            (folder / f"bad_{name}.mid").write_bytes(data)
        write(scale_piece(seed=5), folder / "scale.mid")
        (folder / "ties.mid").write_bytes(tick_piece([(60 + i % 5, 60 + 240 * i, 300 + 240 * i) for i in range(40)],
                                                     tempos=[(0, 97.0)]))  # 60 ticks: half a step
        args = [str(folder)]
    out = tmp_path / "readers.json"
    assert compare_readers.main(args + ["--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["files"] >= 20 and result["unexplained"] == 0
    assert result["identical"] + result["differ"] == result["files"]
    if source == "fixtures":  # the tie file differs by rounding alone, and the script proves it
        assert [r["file"] for r in result["differences"]] == ["ties.mid"]
        assert result["differences"][0]["causes"] == ["ties"] and result["legend"]["ties"] == compare_readers.TIES
