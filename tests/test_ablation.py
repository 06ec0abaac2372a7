"""The ablation table is built from `dvc exp show --json` (no DVC run here: a recorded shape)."""

from __future__ import annotations

from midistyle.ablation import GRID, LONG_GRID, experiment_rows, render


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
    assert text.count("not run") == 7 * (len(GRID) - 2 + len(LONG_GRID))
