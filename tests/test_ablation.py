"""The ablation table is built from `dvc exp show --json` (no DVC run here: a recorded shape)."""

from __future__ import annotations

import json

from midistyle import ablation
from midistyle.ablation import (BATCH_GRID, BETA_GRID, BUDGET_GRID, COLUMNS, GRID, HAND_WRITTEN, LONG_GRID,
                                SCHEDULE_GRID, SEED_GRID, TRANSFER_COLUMNS, experiment_rows, render, table_lines,
                                write_table)


def _exp(name: str, f1: float) -> dict:
    test = {"f1": f1, "onset_f1": 0.5, "other_f1": 0.1, "density_ratio": 1.0, "polyphony_ratio": 0.9,
            "kl_bits_per_window": 300.0}
    return {"rev": "abc", "name": name, "data": {
        "params": {"params.yaml": {"data": {"train": {"epochs": 6}}}},
        "metrics": {"metrics/train_vae.json": {"data": {"test": test, "timing": {"train_seconds": 120.0}}}}}}


def test_rows_come_from_every_experiment_of_the_json_and_missing_ones_say_so():
    show = [{"rev": "workspace", "name": None, "data": {}, "experiments": None},
            {"rev": "deadbeef", "name": "main", "data": {}, "experiments": [
                {"revs": [_exp("abl-default", 0.8)]}, {"revs": [_exp("abl-nonar", 0.6)]}]}]
    rows = experiment_rows(show)
    assert set(rows) >= {"abl-default", "abl-nonar"}
    text = render(rows)
    default = next(line for line in text.splitlines() if line.startswith("| `abl-default`"))
    assert "| 0.800 | 0.500 | 0.700 | 1.000 | 0.900 | 300.0 | 2.0 |" in default
    wide = len(COLUMNS) + len(TRANSFER_COLUMNS)
    # no baseline rows: no run of the whole-pipeline grids
    pipeline_grids = (SCHEDULE_GRID, BETA_GRID, SEED_GRID, BATCH_GRID, BUDGET_GRID)
    assert text.count("not run") == (len(COLUMNS) * (len(GRID) - 2 + len(LONG_GRID))
                                     + wide * sum(len(grid) for grid in pipeline_grids))


def test_rows_this_clone_cannot_see_keep_their_committed_lines():
    # experiments live in one clone's git refs: a table rebuilt elsewhere must not wipe what was measured
    committed = render(experiment_rows([{"rev": "deadbeef", "name": "main", "data": {}, "experiments": [
        {"revs": [_exp("abl-default", 0.8)]}, {"revs": [_exp(LONG_GRID[0][0], 0.9)]}]}]))
    kept = table_lines(committed)
    assert {name for _, name in kept} == {"abl-default", LONG_GRID[0][0]}  # measured rows only
    again = render(experiment_rows([]), kept)
    assert again == committed
    newer = render(experiment_rows([{"rev": "deadbeef", "name": "main", "data": {}, "experiments": [
        {"revs": [_exp("abl-default", 0.7)]}]}]), kept)
    assert "| `abl-default` | " in newer and "| 0.700 | 0.500 |" in newer and "| 0.800 | 0.500 |" not in newer


def test_the_schedule_table_has_the_transfer_figures_and_hand_written_sections_survive(tmp_path, monkeypatch):
    exp = _exp(SCHEDULE_GRID[0][0], 0.9)
    search = {"mean": {"plausible_strength": 0.8, "gap_closed": 0.25},
              "directions": {"baroque_to_renaissance": {"plausible_strength": 0.75},
                             "renaissance_to_baroque": {"plausible_strength": 0.85}}}
    exp["data"]["metrics"]["metrics/eval.json"] = {"data": {"transfer": {"attribute_search": search}}}
    show = [{"rev": "deadbeef", "name": "main", "data": {}, "experiments": [{"revs": [exp]}]}]
    monkeypatch.setattr(ablation, "dvc", lambda *args, capture=False: json.dumps(show))
    doc = tmp_path / "ablation.md"
    doc.write_text("# old tables\n\n" + HAND_WRITTEN + "\n\n## by hand\nkept\n")
    text = write_table(doc)
    row = next(line for line in text.splitlines() if line.startswith(f"| `{SCHEDULE_GRID[0][0]}`"))
    assert row.endswith("| 0.800 | 0.750 | 0.850 | 0.250 |")
    assert "| `baseline` | the commit the rows were run from (deadbee)" in text  # its row: the commit's metrics
    assert "# old tables" not in text and text.endswith(HAND_WRITTEN + "\n\n## by hand\nkept\n")
    assert doc.read_text() == text


def test_queued_rows_keep_the_grid_settings_unless_they_set_the_key_themselves(monkeypatch):
    calls = []
    monkeypatch.setattr(ablation, "dvc", lambda *args, capture=False: calls.append(args) or "")
    ablation.queue_grid("schedule")  # every row at 24 epochs, sched-cos18 at its own 18
    sets = {call[call.index("-n") + 1]: [call[i + 1] for i, a in enumerate(call) if a == "-S"] for call in calls}
    assert "train.epochs=24" in sets["sched-cos24"] and "train.epochs=18" not in sets["sched-cos24"]
    assert "train.epochs=18" in sets["sched-cos18"] and "train.epochs=24" not in sets["sched-cos18"]
