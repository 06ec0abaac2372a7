"""benchmarks/eval_table.py: every direction's figures of an eval.json, read back as they were written."""

import json

import pytest

from tests.helpers_bench import load_benchmark


def entry(strength: float) -> dict:
    return {"plausible_strength": strength, "plausible_share": 1.0, "strength": strength, "chroma_similarity": 0.5,
            "melody_f1": float("nan"), "rhythm_similarity": 0.25, "gap_closed": -0.125}


def metrics(a: float, b: float) -> dict:
    dirs = {"jazz_to_classical": entry(a), "classical_to_jazz": entry(b)}
    return {"transfer": {"attribute_search": {"directions": dirs, "mean": entry((a + b) / 2)},
                         "copy_style": {"directions": dirs, "mean": entry(0.75)}}}


def test_table_rows_cells_and_before(tmp_path, capsys):
    table = load_benchmark("eval_table")
    now, old = tmp_path / "now.json", tmp_path / "old.json"
    now.write_text(json.dumps(metrics(0.5, 0.25)))
    old.write_text(json.dumps(metrics(0.125, 0.0)))
    assert table.main([str(now), "--before", str(old)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[2] == ("| classical → jazz | 0.000 → 0.250 | 1.000 → 1.000 | 0.000 → 0.250 | 0.500 → 0.500 "
                        "| — → — | 0.250 → 0.250 | -0.125 → -0.125 |")  # sorted by direction; nan shows as a dash
    assert lines[3].startswith("| jazz → classical | 0.125 → 0.500 |")
    assert lines[4].startswith("| **mean** | 0.062 → 0.375 |")
    assert "| copy_style | 0.750 |" in "\n".join(lines)


def test_a_direction_the_other_run_lacks_reads_as_a_dash(tmp_path, capsys):
    table = load_benchmark("eval_table")
    now, old = tmp_path / "now.json", tmp_path / "old.json"
    now.write_text(json.dumps(metrics(0.5, 0.25)))
    fewer = metrics(0.125, 0.0)
    del fewer["transfer"]["attribute_search"]["directions"]["classical_to_jazz"]
    old.write_text(json.dumps(fewer))
    table.main([str(now), "--before", str(old)])
    lines = capsys.readouterr().out.splitlines()
    assert lines[2].startswith("| classical → jazz | — → 0.250 | — → 1.000 |")
    assert lines[3].startswith("| jazz → classical | 0.125 → 0.500 |")


def test_bad_file_and_method_name_themselves(tmp_path):
    table = load_benchmark("eval_table")
    bad = tmp_path / "notes.md"
    bad.write_text("# not JSON")
    with pytest.raises(SystemExit, match="notes.md: cannot read it as JSON"):
        table.main([str(bad)])
    good = tmp_path / "eval.json"
    good.write_text(json.dumps(metrics(0.5, 0.25)))
    with pytest.raises(SystemExit, match="--method nope: not in the file"):
        table.main([str(good), "--method", "nope"])
