"""The evaluate stage: musical statistics and similarity, metrics/eval.json, the report folder, audio, MLflow."""

import json
import re
import shutil
import wave
from pathlib import Path

import numpy as np
import pretty_midi
import pytest

from midistyle import audio
from midistyle import musicstats as ms
from midistyle.errors import UserError
from midistyle.roll import ONSET, SOUNDING
from tests.helpers_style import eval_paths, one_thread, tiny_params

P = 51
LOW = 34  # pitch row 0 = MIDI 34 (A#1); row 2 = C2


def roll_of(notes, T=64):
    """notes: (hand, row, start, end) -> bool roll (T, 2, 2, P)."""
    r = np.zeros((T, 2, 2, P), bool)
    for h, p, s, e in notes:
        r[s:e, h, SOUNDING, p] = True
        r[s, h, ONSET, p] = True
    return r


@pytest.fixture(scope="module")
def project(evaluated_style_project):
    """The session's evaluated tiny project, on one thread while this module's tests run (restored after)."""
    with one_thread():
        yield evaluated_style_project


@pytest.fixture(scope="module")
def metrics(project):
    return json.loads((project.root / "metrics" / "eval.json").read_text())


# ---------------------------------------------------------------- musical statistics
def test_chroma_similarity_is_one_for_the_same_harmony_and_drops_when_transposed():
    c_major = roll_of([(0, 2 + 24, 0, 16), (0, 6 + 24, 0, 16), (0, 9 + 24, 0, 16), (1, 2, 0, 16)])
    same_in_other_octaves = roll_of([(0, 2 + 12, 0, 16), (1, 6 + 12, 0, 16), (0, 9 + 36, 0, 16)])
    up_a_semitone = roll_of([(0, 3 + 24, 0, 16), (0, 7 + 24, 0, 16), (0, 10 + 24, 0, 16)])
    bars = [0, 16, 32, 48]
    assert ms.chroma_similarity(c_major, bars, same_in_other_octaves, bars, LOW) == pytest.approx(1.0, abs=0.1)
    assert ms.chroma_similarity(c_major, bars, up_a_semitone, bars, LOW) < 0.2
    # a bar silent in one piece only scores 0; bars silent in both are skipped
    half = c_major.copy()
    half[:, :, :, :] = False
    assert ms.chroma_similarity(c_major, bars, half, bars, LOW) == 0.0
    assert np.isnan(ms.chroma_similarity(half, bars, half, bars, LOW))


def test_rhythm_similarity_is_f1_of_onset_steps():
    a = roll_of([(0, 10, t, t + 2) for t in (0, 4, 8, 12)])
    b = roll_of([(1, 30, t, t + 1) for t in (0, 4, 9, 13)])  # other pitches, half the onsets shared
    assert ms.rhythm_similarity(a, a) == 1.0
    assert ms.rhythm_similarity(a, b) == pytest.approx(0.5)


def test_music_stats_of_a_known_roll():
    # 4 beats (16 steps) + 4 silent beats, then one note: two-note chords on beats 1 and 3
    r = roll_of([(0, 26, 0, 4), (1, 14, 0, 4), (0, 26, 8, 12), (1, 19, 8, 12), (0, 26, 32, 36)], T=36)
    s = ms.music_stats(r, [0, 16, 32], steps_per_beat=4, pitch_low=LOW)
    assert s["note_density"] == pytest.approx(5 / 9)  # 5 notes over 9 beats
    assert s["polyphony"] == pytest.approx((8 * 2 + 4 * 1) / 12)
    assert s["pitch_range"] == pytest.approx((12 + 0) / 2)  # bar 1: 12 semitones, bar 3: one note
    assert s["empty_beat_rate"] == pytest.approx(6 / 9)
    assert 0 < s["pitch_class_entropy"] <= np.log2(12)
    assert all(np.isnan(v) for v in ms.music_stats(np.zeros((16, 2, 2, P), bool), [0], 4, LOW).values())


def test_entropy_bits_of_known_histograms():
    assert ms.entropy_bits(np.array([3, 3, 3, 3] + [0] * 8)) == pytest.approx(2.0)  # four classes equally often
    assert ms.entropy_bits(np.array([5] + [0] * 11)) == 0.0  # one class
    assert ms.entropy_bits(np.zeros(12)) == 0.0  # nothing counted


def test_gap_closed():
    assert ms.gap_closed(source=2.0, transfer=4.0, target=4.0) == 1.0
    assert ms.gap_closed(2.0, 3.0, 4.0) == 0.5
    assert ms.gap_closed(2.0, 1.0, 4.0) == -0.5
    assert np.isnan(ms.gap_closed(4.0, 3.0, 4.0))


def test_window_features_are_onsets_per_beat_and_notes_per_sounding_step():
    # a window of 16 steps (4 beats) holding 8: a 3-note chord on step 0 held 4 steps, one note at step 4
    w = roll_of([(0, 20, 0, 4), (0, 24, 0, 4), (1, 10, 0, 4), (0, 30, 4, 6)], T=16)
    f = ms.window_features(w[None], np.array([8]), steps_per_beat=4)
    assert f.shape == (1, 4)
    assert ms.WINDOW_FEATURES == ("note_density", "polyphony", "right_hand_share", "left_hand_density")
    assert f[0, 0] == pytest.approx(4 / 2)  # 4 onsets over the 2 beats of its length
    assert f[0, 1] == pytest.approx((4 * 3 + 2 * 1) / 6)  # 6 sounding steps
    assert f[0, 2] == pytest.approx(3 / 4)  # 3 of its 4 notes in the right hand
    assert f[0, 3] == pytest.approx(1 / 2)  # 1 left-hand onset over 2 beats
    late = roll_of([(1, 20, 12, 14)], T=16)  # a note past the length is not in the window
    f = ms.window_features(np.stack([late, np.zeros_like(late)]), np.array([8, 16]), 4)
    assert f[0, 0] == 0 and np.isnan(f[0, 1]) and np.isnan(f[1, 1]) and np.isnan(f[0, 2]) and np.isnan(f[1, 2])
    assert f[0, 3] == 0 and f[1, 3] == 0
    assert ms.window_features(np.zeros((0, 16, 2, 2, P), bool), np.zeros(0, int), 4).shape == (0, 4)


def test_right_hand_share_counts_notes_held_into_the_window_and_sees_a_melody_gone_left():
    held = roll_of([(1, 10, 0, 8), (1, 14, 0, 8), (0, 30, 2, 4)], T=8)
    held[0, :, ONSET] = False  # both left-hand notes were struck before the window: held in, still notes of it
    f = ms.window_features(held[None], np.array([8]), 4)
    assert f[0, 0] == pytest.approx(1 / 2)  # one onset in 2 beats
    assert f[0, 2] == pytest.approx(1 / 3)  # one right-hand note of three
    # a chorale-like window and the same notes all in the left hand: equal density and polyphony, only the share differs
    chords = [(h, p, s, s + 4) for s in (0, 4, 8, 12) for h, p in ((0, 40), (0, 35), (1, 28), (1, 20))]
    both = roll_of(chords, T=16)
    left = roll_of([(1, p, s, e) for _, p, s, e in chords], T=16)
    fb, fl = ms.window_features(np.stack([both, left]), np.array([16, 16]), 4)
    np.testing.assert_allclose(fb[:2], fl[:2])
    assert fb[2] == pytest.approx(0.5) and fl[2] == 0.0
    assert fb[3] == pytest.approx(2.0) and fl[3] == pytest.approx(4.0)  # left-hand onsets per beat
    bounds = np.array([[0.5, 8.0], [1.0, 6.0], [0.25, 0.75], [0.0, 8.0]])
    assert ms.plausible(np.stack([fb, fl]), bounds).tolist() == [True, False]


def test_left_hand_density_sees_a_busy_left_hand_that_density_polyphony_and_share_let_pass():
    # a jazz-like window: a right-hand line of eighths over one four-note chord held all four beats; and a window
    # as dense whose notes sit in a left hand that strikes every eighth (a melody moved down into an accompaniment)
    held = roll_of([(0, 40 + i % 3, 2 * i, 2 * i + 2) for i in range(8)] + [(1, p, 0, 16) for p in (10, 14, 17, 21)],
                   T=16)
    busy = roll_of([(0, 40, 0, 8), (0, 44, 8, 16), (1, 17, 0, 8), (1, 17, 8, 16)]
                   + [(1, 10, 2 * i, 2 * i + 2) for i in range(8)], T=16)
    fh, fbusy = ms.window_features(np.stack([held, busy]), np.array([16, 16]), 4)
    np.testing.assert_allclose(fh, [3.0, 5.0, 8 / 12, 1.0])
    np.testing.assert_allclose(fbusy, [3.0, 3.0, 2 / 12, 2.5])
    jazz_like = np.array([[0.5, 8.0], [1.0, 6.0], [0.0, 1.0], [0.0, 2.4]])  # a share band as wide as jazz's
    assert ms.plausible(np.stack([fh, fbusy]), jazz_like).tolist() == [True, False]
    assert ms.plausible(np.stack([fh, fbusy])[:, :3], jazz_like[:3]).tolist() == [True, True]  # the three others


def test_plausible_bounds_are_the_5th_to_95th_percentiles_inclusive():
    ramp = np.arange(101, dtype=float)
    real = np.stack([ramp, 10 + ramp / 10, ramp / 100, ramp / 10], axis=1)  # 0..100, 10..20, 0..1, 0..10
    bounds = ms.plausible_bounds(real)
    np.testing.assert_allclose(bounds, [[5, 95], [10.5, 19.5], [0.05, 0.95], [0.5, 9.5]])
    out = np.array([[5, 15, .5, 5], [95, 19.5, .5, 5], [4.9, 15, .5, 5], [50, 19.6, .5, 5], [50, np.nan, .5, 5],
                    [np.nan, 15, .5, 5], [50, 15, 0.0, 5], [50, 15, np.nan, 5], [50, 15, .5, 9.6]])
    assert ms.plausible(out, bounds).tolist() == [True, True, False, False, False, False, False, False, False]
    # clutter: ten times the density of anything real
    assert not ms.plausible(np.array([[1000.0, 15.0, 0.5, 5.0]]), bounds).any()
    assert np.isnan(ms.plausible_bounds(np.full((3, 4), np.nan))).all()
    assert ms.plausible_bounds(np.zeros((0, 4))).shape == (4, 2)
    assert not ms.plausible(np.array([[5.0, 15.0, 0.5, 5.0]]), ms.plausible_bounds(np.zeros((0, 4)))).any()


def test_top_line_is_the_highest_right_hand_pitch_at_its_onset_steps():
    r = roll_of([(0, 30, 0, 8), (0, 20, 0, 2), (0, 22, 4, 6), (1, 45, 2, 3), (0, 10, 10, 12)], T=16)
    # steps 0 and 4: the held 30 is on top; step 10: 10; the left hand's 45 at step 2 is not melody
    assert ms.top_line(r) == {(0, 30), (4, 30), (10, 10)}
    assert ms.top_line(np.zeros((0, 2, 2, P), bool)) == set()


def test_melody_f1_of_identical_shifted_and_empty_rolls():
    tune = roll_of([(0, 20 + i % 5, 2 * i, 2 * i + 2) for i in range(8)] + [(1, 5, 0, 16)], T=16)
    assert ms.melody_f1(tune, tune) == 1.0
    up = np.roll(tune, 1, axis=-1)  # a semitone higher: no pair matches
    assert ms.melody_f1(tune, up) == 0.0
    later = np.roll(tune, 1, axis=0)  # one step later
    assert ms.melody_f1(tune, later) == 0.0
    left_only = tune.copy()
    left_only[:, 0] = False
    assert ms.melody_f1(tune, left_only) == 0.0  # an empty top line against a full one
    assert np.isnan(ms.melody_f1(left_only, left_only))
    half = tune.copy()
    half[8:, 0] = False  # the first 4 of 8 melody notes kept
    assert ms.melody_f1(tune, half) == pytest.approx(2 * 4 / (8 + 4))
    # extra notes below the tune leave it intact
    chords = tune | roll_of([(0, 2, 2 * i, 2 * i + 2) for i in range(8)], T=16)
    assert ms.melody_f1(tune, chords) == 1.0
    # many pairs at once: the same figures, 0 where neither has a top line
    pairs = [(tune, tune), (tune, up), (tune, half), (tune, chords), (tune, left_only), (left_only, left_only)]
    got = ms.window_melody_f1(np.stack([a for a, _ in pairs]), np.stack([b for _, b in pairs]))
    assert got.tolist() == pytest.approx([1.0, 0.0, 2 * 4 / (8 + 4), 1.0, 0.0, 0.0])
    rng = np.random.default_rng(3)
    a, b = rng.random((2, 5, 16, 2, 2, P)) < 0.1
    assert ms.window_melody_f1(a, b).tolist() == pytest.approx(
        [np.nan_to_num(ms.melody_f1(x, y)) for x, y in zip(a, b)])


def test_plausible_strength_needs_the_judge_and_the_range_and_a_silent_window_misses():
    from midistyle.evaluate import Heard, window_verdicts
    from midistyle.judge import NO_VERDICT
    from midistyle.roll import Timing

    def heard(starts, judged, features):
        return Heard(Path("x.mid"), np.zeros((0, 2, 2, P), bool), [0], Timing(), np.array(starts), np.array(judged),
                     {}, np.array(features, float).reshape(-1, 2))

    bounds = np.array([[1.0, 3.0], [2.0, 4.0]])
    source = heard([0, 64, 128, 192], [0, 0, 0, 0], [[2, 3]] * 4)
    # window 64 came out silent; 128 is clutter (20 notes per beat) the judge still calls target
    output = heard([0, 128, 192], [1, 1, 0], [[2, 3], [20, 9], [2, 3]])
    hit, ok = window_verdicts(output, source, 1, bounds)
    assert hit.tolist() == [True, False, True, False] and ok.tolist() == [True, False, False, True]
    assert (hit & ok).tolist() == [True, False, False, False]  # plausible strength 1/4, strength 2/4
    hit, ok = window_verdicts(output, None, 1, bounds)  # copy_style: its own windows
    assert hit.tolist() == [True, True, False] and ok.tolist() == [True, False, True]
    # the judge's members disagreed on window 0: no verdict there, a miss; one member's own votes can be asked
    output = heard([0, 128, 192], [NO_VERDICT, 1, 0], [[2, 3], [20, 9], [2, 3]])
    assert window_verdicts(output, source, 1, bounds)[0].tolist() == [False, False, True, False]
    one_member = np.array([1, 1, 0])
    assert window_verdicts(output, source, 1, bounds, one_member)[0].tolist() == [True, False, True, False]


# ---------------------------------------------------------------- eval.json
def test_eval_json_has_the_judge_first_and_every_baseline(metrics):
    for name in ("judge", "latent_classifier"):
        assert 0.0 <= metrics[name]["accuracy"] <= 1.0 and "confusion" in metrics[name]
    members = metrics["judge"]["members"]
    assert set(members) == {"hands", "heard"}
    assert metrics["judge"]["accuracy"] <= min(m["accuracy"] for m in members.values()) + 1e-9
    # the same test windows moved to other keys: the tiny styles differ in register and rhythm, not key
    other = metrics["judge"]["other_keys"]
    assert other["windows"] == metrics["judge"]["windows"] and other["balanced_accuracy"] >= 0.8
    rec = metrics["reconstruction"]
    assert {"precision", "recall", "f1"} <= set(rec) and rec["windows"] > 0
    systems = metrics["transfer"]
    assert set(systems) == {"attribute_vector", "classifier_guided", "attribute_search", "reconstruction", "copy_content", "copy_style"}
    for system, data in systems.items():
        assert set(data["directions"]) == {"busy_to_calm", "calm_to_busy"}
        assert {"plausible_strength", "strength", "plausible_share", "chroma_similarity", "melody_f1",
                "rhythm_similarity", "gap_closed"} <= set(data["mean"])
        for d in data["directions"].values():
            assert set(d["stats"]) == set(ms.STAT_NAMES)
            # judged target and plausible: never more than either alone
            assert d["plausible_strength"] <= min(d["strength"], d["plausible_share"]) + 1e-9
            # the panel's verdict needs both members: never more than either member's alone
            assert set(d["strength_by_judge"]) == {"hands", "heard"}
            assert d["strength"] <= min(d["strength_by_judge"].values()) + 1e-9
    # the source against itself: full content, no movement
    assert systems["copy_content"]["mean"]["chroma_similarity"] == pytest.approx(1.0)
    assert systems["copy_content"]["mean"]["rhythm_similarity"] == pytest.approx(1.0)
    assert systems["copy_content"]["mean"]["gap_closed"] == pytest.approx(0.0)
    assert systems["copy_content"]["mean"]["melody_f1"] == pytest.approx(1.0)
    # the two styles' windows barely overlap in density: a source is not plausible as the other style,
    # a real piece of the target style mostly is
    assert systems["copy_content"]["mean"]["plausible_share"] < 0.5
    assert systems["copy_style"]["mean"]["plausible_share"] > 0.5
    assert 0.0 <= rec["plausible_share"] <= 1.0
    plaus = metrics["plausibility"]
    for style in ("busy", "calm"):
        lo, hi = plaus["bounds"][style]["note_density"]
        assert lo <= hi and 0.5 <= plaus["real_test_windows_plausible_share"][style] <= 1.0
    assert plaus["bounds"]["busy"]["note_density"][0] > plaus["bounds"]["calm"]["note_density"][1]
    chosen = metrics["transfer_settings"]["chosen"]
    assert set(chosen) == {"attribute_vector", "classifier_guided", "attribute_search"}
    assert chosen["attribute_vector"]["busy_to_calm"]["knob"] == "alpha"    # a real piece of the target style is the judge's home ground
    assert systems["copy_style"]["mean"]["strength"] >= 0.8
    assert systems["copy_style"]["mean"]["gap_closed"] > 0.5
    assert set(metrics["target_stats"]) == {"busy", "calm"}
    assert metrics["transfer_outputs"]["failed"] == 0


def test_strength_content_curve_is_the_judged_validation_sweep(project, metrics):
    import csv

    from midistyle.evaluate import CURVE_COLUMNS

    with open(project.root / "metrics" / "strength_content.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0]) == CURVE_COLUMNS
    tp = project.params.transfer
    grid = {"attribute_vector": tp.alpha_grid, "attribute_search": tp.alpha_grid, "classifier_guided": tp.guided_steps_grid}
    assert len(rows) == 2 * sum(len(grid[m]) for m in tp.methods)  # two directions
    settings = json.loads(project.settings.read_text())
    for r in rows:
        chosen = settings["chosen"][r["method"]][r["direction"]]
        assert float(r["cli_strength"]) == pytest.approx(float(r["value"]) / chosen, rel=1e-5)
        assert r["chosen"] == str(int(float(r["value"]) == chosen))
        for k in ("plausible_strength", "strength", "plausible_share", "chroma_similarity", "melody_f1"):
            assert r[k] == "" or 0.0 <= float(r[k]) <= 1.0
    assert sum(r["chosen"] == "1" for r in rows) == 2 * len(tp.methods)
    page = (project.report / "index.html").read_text()
    assert 'src="img/strength_content.png"' in page and 'id="strength"' in page
    assert page.index("plausible strength") < page.index("strength (judge only)")  # the headline leads


def test_eval_json_is_strict_json(project):
    text = (project.root / "metrics" / "eval.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    json.loads(text)


# ---------------------------------------------------------------- the report folder
def test_report_is_self_contained(project):
    index = project.report / "index.html"
    page = index.read_text()
    links = re.findall(r'(?:src|href)="([^"]+)"', page)
    local = [l for l in links if not l.startswith("#")]
    assert local, "the report links its pictures, MIDI and audio"
    for link in local:
        assert not re.match(r"^[a-z]+:", link), f"absolute or remote link {link}"
        assert (project.report / link).is_file(), f"broken link {link}"
    assert "<script src" not in page and "<link" not in page  # nothing from elsewhere
    assert 'src="img/training_curves.png"' in page
    kinds = {Path(l).suffix for l in local}
    assert {".png", ".mid", ".wav"} <= kinds
    assert page.index('id="judge"') < page.index('id="transfer"')  # the judge is read first
    for baseline in ("copy content", "copy style", "reconstruction"):
        assert baseline in page


def test_report_audio_is_short_playable_wav(project):
    wavs = sorted(project.report.rglob("*.wav"))
    assert wavs
    for path in wavs:
        with wave.open(str(path)) as w:
            assert w.getnchannels() == 1 and w.getsampwidth() == 2
            assert w.getnframes() / w.getframerate() <= project.params.evaluate.audio_seconds + 1.0


def test_report_excerpt_starts_at_the_bar_where_the_piece_first_sounds():
    from midistyle.report import excerpt_start, seconds_to_steps, steps_to_seconds
    from midistyle.roll import Timing

    roll = roll_of([(0, 20, 37, 40)], T=64)  # a rest of two bars and a bit (16-step bars), then one note
    assert excerpt_start(roll, [0, 16, 32, 48]) == 32
    assert excerpt_start(roll_of([(1, 5, 0, 2)], T=64), [0, 16, 32, 48]) == 0
    assert excerpt_start(np.zeros((0, 2, 2, P), bool), [0]) == 0 and excerpt_start(np.zeros((8, 2, 2, P), bool), [0]) == 0
    timing = Timing(tempos=[(0, 120.0), (32, 60.0)])  # 4 steps per beat: 1/8 s a step, then 1/4 s
    assert steps_to_seconds(timing, 32, 4) == pytest.approx(4.0)
    assert steps_to_seconds(timing, 40, 4) == pytest.approx(6.0)
    for step in (0, 10, 32, 41, 100):
        assert seconds_to_steps(timing, steps_to_seconds(timing, step, 4), 4) == step


def test_clip_midi_keeps_seconds_from_a_start_moved_to_zero():
    pm = pretty_midi.PrettyMIDI()
    inst = pretty_midi.Instrument(0)
    inst.notes = [pretty_midi.Note(80, 60, 0.0, 1.0), pretty_midi.Note(80, 62, 9.0, 11.0),
                  pretty_midi.Note(80, 64, 12.0, 13.0), pretty_midi.Note(80, 65, 19.0, 25.0)]
    pm.instruments.append(inst)
    clip = audio.clip_midi(pm, 10.0, start=10.0)  # 10 s .. 20 s
    assert [(n.pitch, n.start, n.end) for n in clip.instruments[0].notes] == [(62, 0.0, 1.0), (64, 2.0, 3.0),
                                                                              (65, 9.0, 10.0)]


def test_report_without_audio(project, tmp_path):
    from midistyle.evaluate import evaluate

    paths = eval_paths(project)
    paths = type(paths)(**{**paths.__dict__, "report": tmp_path / "report", "metrics": tmp_path / "eval.json"})
    evaluate(tiny_params(evaluate={"audio": "none"}), paths)
    assert not list((tmp_path / "report").rglob("*.wav")) and not list((tmp_path / "report").rglob("*.ogg"))
    assert (tmp_path / "report" / "index.html").exists()


def test_evaluate_logs_metrics_and_report_to_mlflow(project, tmp_path, monkeypatch):
    from midistyle.evaluate import evaluate
    from midistyle.tracking import client

    monkeypatch.setenv("MIDISTYLE_MLFLOW_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    params = tiny_params(mlflow={"enabled": True}, evaluate={"audio": "none"})
    paths = eval_paths(project)
    paths = type(paths)(**{**paths.__dict__, "report": tmp_path / "report", "metrics": tmp_path / "eval.json"})
    evaluate(params, paths)
    mlf = client()
    (run,) = mlf.search_runs([mlf.get_experiment_by_name(params.mlflow.experiment).experiment_id])
    assert run.data.tags["dvc_stage"] == "evaluate"
    assert {"judge_test_accuracy", "judge_test_other_keys_accuracy", "attribute_vector_strength", "attribute_vector_plausible_strength",
            "copy_style_melody_f1", "copy_style_chroma_similarity"} <= set(run.data.metrics)
    logged = {a.path for a in mlf.list_artifacts(run.info.run_id, "report")}
    assert "report/index.html" in logged and "report/img" in logged
    assert {a.path for a in mlf.list_artifacts(run.info.run_id, "metrics")} >= {"metrics/eval.json", "metrics/strength_content.csv"}


# ---------------------------------------------------------------- audio
def _pm(seconds: float) -> pretty_midi.PrettyMIDI:
    pm = pretty_midi.PrettyMIDI()
    inst = pretty_midi.Instrument(0)
    inst.notes = [pretty_midi.Note(80, 60 + i % 7, i * 0.5, i * 0.5 + 0.4) for i in range(int(seconds * 2))]
    pm.instruments.append(inst)
    return pm


def test_synth_renders_only_the_first_seconds(tmp_path):
    _pm(20).write(str(tmp_path / "x.mid"))
    out = audio.render(tmp_path / "x.mid", tmp_path / "x", "synth", sample_rate=8000, seconds=3)
    with wave.open(str(out)) as w:
        assert 2.5 < w.getnframes() / w.getframerate() <= 3.5
        data = np.frombuffer(w.readframes(w.getnframes()), "<i2")
    assert np.abs(data).max() > 1000  # audible, not silence
    empty = pretty_midi.PrettyMIDI()
    empty.instruments.append(pretty_midi.Instrument(0))
    empty.write(str(tmp_path / "e.mid"))
    assert audio.render(tmp_path / "e.mid", tmp_path / "e", "synth") is None


@pytest.mark.skipif(audio.resolve_mode("auto") != "soundfont", reason="FluidSynth or a GM soundfont is not installed "
                    "(apt-get install fluidsynth fluid-soundfont-gm)")
def test_soundfont_renders_ogg_vorbis(tmp_path):
    _pm(4).write(str(tmp_path / "x.mid"))
    out = audio.render(tmp_path / "x.mid", tmp_path / "x", "soundfont", sample_rate=22050, seconds=2)
    assert out.suffix == ".ogg" and out.read_bytes()[:4] == b"OggS"


def test_soundfont_requested_but_missing_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(UserError, match="apt-get install fluidsynth fluid-soundfont-gm"):
        audio.resolve_mode("soundfont")
    assert audio.resolve_mode("auto") == "synth"
