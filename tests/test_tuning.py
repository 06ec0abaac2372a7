"""The tune_transfer stage: strength chosen per direction on validation pieces, never on test, without the judge."""

import json

import numpy as np
import pytest

from midistyle.errors import UserError
from midistyle.transfer import load_chosen_settings
from midistyle.tuning import choose, mask_lengths, read_sweep
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
