"""The tune_transfer stage: strength chosen per direction on validation pieces, never on test, without the judge."""

import json

import numpy as np
import pytest

from midistyle.errors import UserError
from midistyle.transfer import load_chosen_settings
from midistyle.roll import ONSET, SOUNDING
from midistyle.transfer import StyleTransfer
from midistyle.tuning import choose, choose_hold_threshold, mask_lengths, read_sweep, source_windows, window_start_decisions
from tests.helpers_style import STYLES, one_thread


@pytest.fixture(scope="module")
def project(style_project):
    """The session's tiny project, on one thread while this module's tests run (restored after)."""
    with one_thread():
        yield style_project


def test_choose_the_smallest_value_reaching_the_target_else_the_best():
    assert choose([0.2, 0.91, 0.95, 0.99], 0.9) == 1
    assert choose([0.95, 0.99], 0.9) == 0
    assert choose([0.2, 0.6, 0.5, 0.6], 0.9) == 1  # none reaches: the best, the first of equals
    assert choose([float("nan"), 0.1], 0.9) == 1
    assert choose([float("nan"), float("nan")], 0.9) == 0


def test_mask_lengths_clears_the_steps_past_each_window():
    rolls = np.ones((3, 2, 8, 2, 2, 4), bool)  # (G, N, W, 2, 2, P)
    out = mask_lengths(rolls, np.array([3, 8])[None])
    assert out[:, 0, :3].all() and not out[:, 0, 3:].any() and out[:, 1].all()


def test_settings_are_chosen_on_validation_pieces_for_every_direction(project):
    data = json.loads(project.settings.read_text())
    splits = json.loads(project.splits.read_text())
    index = json.loads((project.sweep / "index.json").read_text())
    val_files = {f for files in index["val_pieces"].values() for f in files}
    assert val_files and val_files <= set(splits["val"]) and not val_files & set(splits["test"])
    assert all(len(files) <= project.params.transfer.val_pieces_per_style for files in index["val_pieces"].values())
    directions = {"busy_to_calm", "calm_to_busy"}
    tp = project.params.transfer
    for method, grid in (("attribute_vector", tp.alpha_grid), ("classifier_guided", tp.guided_steps_grid)):
        assert set(data["chosen"][method]) == directions
        for d in directions:
            sel = data["selection"][method][d]
            assert sel["chosen"] == data["chosen"][method][d] and sel["chosen"] in grid
            assert choose(sel["score"], tp.target_strength) == grid.index(sel["chosen"])
            # the score is the share of windows both re-encoded as the target and plausible
            assert all(s <= min(r, p) + 1e-9 for s, r, p in
                       zip(sel["score"], sel["reencoded_target_share"], sel["plausible_share"]))
            sweep = read_sweep(project.sweep / method / f"{d}.npz")
            assert sweep["values"].tolist() == list(map(float, grid))
            assert sweep["decoded"].shape[:2] == (len(grid), sel["windows"]) and sweep["decoded"].dtype == bool
            assert set(sweep["files"]) <= val_files


def test_chosen_settings_drive_each_direction(project, tmp_path):
    chosen = load_chosen_settings(project.settings, list(STYLES))
    data = json.loads(project.settings.read_text())
    s = chosen.for_direction("attribute_vector", "busy", "calm")
    assert s.alpha == data["chosen"]["attribute_vector"]["busy_to_calm"]
    g = chosen.for_direction("classifier_guided", "calm", "busy")
    assert g.guided_steps == data["chosen"]["classifier_guided"]["calm_to_busy"] and isinstance(g.guided_steps, int)
    assert g.guided_lr == project.params.transfer.guided_lr
    with pytest.raises(UserError, match="chosen for styles"):
        load_chosen_settings(project.settings, ["jazz", "pop"])
    (tmp_path / "x.json").write_text('{"kind": "vae"}')
    with pytest.raises(UserError, match="not a transfer settings file"):
        load_chosen_settings(tmp_path / "x.json")
    (tmp_path / "y.json").write_bytes(b"\x89PNG")
    with pytest.raises(UserError, match="not a transfer settings file"):
        load_chosen_settings(tmp_path / "y.json")


def _note(roll, window, steps, pitch, onset_at=None):
    """Sound ``pitch`` (right hand) over ``steps`` of ``window``, struck at ``onset_at`` (None: no onset)."""
    roll[window, steps, 0, SOUNDING, pitch] = True
    if onset_at is not None:
        roll[window, onset_at, 0, ONSET, pitch] = True


def test_window_start_decisions_count_notes_sounding_on_over_a_start_against_the_source():
    W, P = 4, 3
    source, decoded = np.zeros((2, 2, W, 2, 2, P), bool)  # two consecutive windows of one piece
    holds = np.zeros((2, 2, P), bool)
    for pitch in range(3):  # every pitch sounds on over the start at step 4 in source and output
        _note(source, 0, slice(2, 4), pitch, 2)
        _note(decoded, 0, slice(2, 4), pitch, 2)
        _note(decoded, 1, slice(0, 2), pitch, 0)  # decoded alone: every first-frame note is struck
    _note(source, 1, slice(0, 2), 0, None)  # pitch 0 held in the source ...
    holds[1, 0, 0] = True  # ... and held by the window: right
    _note(source, 1, slice(0, 2), 1, 0)  # pitch 1 struck again in the source, held by the window: wrong
    holds[1, 0, 1] = True
    _note(source, 1, slice(0, 2), 2, None)  # pitch 2 held in the source, struck again by the window: wrong
    piece, start, length = np.array([0, 0]), np.array([0, 4]), np.array([4, 4])
    right, cells, again, on, src_again, src_on = window_start_decisions(source, decoded, holds, piece, start, length)
    assert (right, cells, again, on, src_again, src_on) == (1, 3, 1, 3, 1, 3)
    # windows of other pieces, or with a gap between them, are not joined
    assert window_start_decisions(source, decoded, holds, np.array([0, 1]), start, length)[1] == 0
    assert window_start_decisions(source, decoded, holds, piece, np.array([0, 5]), length)[1] == 0


def test_the_hold_threshold_is_chosen_on_the_validation_reconstructions_and_used_everywhere(project):
    data = json.loads(project.settings.read_text())
    hold = data["hold_threshold"]
    grid = project.params.transfer.hold_threshold_grid
    assert hold["grid"] == list(map(float, grid)) and hold["value"] in grid
    assert hold["value"] == grid[int(np.argmax(np.nan_to_num(hold["right_share"], nan=-1.0)))]
    assert load_chosen_settings(project.settings).hold_threshold == hold["value"]
    model = StyleTransfer.load(project.vae, project.classifier)
    index = json.loads((project.sweep / "index.json").read_text())
    windows = {s: source_windows(model, project.raw, files) for s, files in index["val_pieces"].items()}
    again = choose_hold_threshold(model, windows, list(grid))  # what tune_transfer chose, chosen again
    assert again == hold and model.hold_threshold == hold["value"]
    mu = model.encode_arrays(windows["calm"].rolls, windows["calm"].length)
    model.hold_threshold = 1.0  # every first-frame note of a window continues the one before where one sounds
    assert model.decode_windows(mu, [model.threshold])[1].all()
    model.hold_threshold = 1e-9
    assert not model.decode_windows(mu, [model.threshold])[1].any()


def test_settings_without_a_hold_threshold_are_one_line(project, tmp_path):
    data = json.loads(project.settings.read_text())
    for bad in (None, {"value": 0.0}, {"value": True}, {"value": "0.8"}):
        old = {**data, "hold_threshold": bad} if bad is not None else {k: v for k, v in data.items() if k != "hold_threshold"}
        (tmp_path / "old.json").write_text(json.dumps(old))
        with pytest.raises(UserError, match=r"old\.json: no hold threshold in \(0, 1\].*re-run `dvc repro tune_transfer`"):
            load_chosen_settings(tmp_path / "old.json")
