"""fileio.staged_dir: a staged folder replaces the old one only when complete, in a safe order."""

from __future__ import annotations

import os

import pytest

from midistyle.fileio import staged_dir


def test_a_staged_folder_replaces_the_old_one(tmp_path):
    final = tmp_path / "out"
    final.mkdir()
    (final / "old.txt").write_text("old")
    with staged_dir(final) as partial:
        assert partial == tmp_path / "out.partial" and partial.is_dir() and not any(partial.iterdir())
        (partial / "new.txt").write_text("new")
    assert sorted(p.name for p in final.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_an_error_keeps_the_old_folder_and_removes_the_partial_one(tmp_path):
    final = tmp_path / "out"
    final.mkdir()
    (final / "old.txt").write_text("old")
    with pytest.raises(RuntimeError, match="boom"):
        with staged_dir(final) as partial:
            (partial / "new.txt").write_text("new")
            raise RuntimeError("boom")
    assert sorted(p.name for p in final.iterdir()) == ["old.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_the_new_folder_is_in_place_before_the_old_one_is_removed(tmp_path, monkeypatch):
    final = tmp_path / "out"
    final.mkdir()
    (final / "old.txt").write_text("old")
    renames = []
    real_replace = os.replace

    def recording_replace(src, dst):
        renames.append((os.path.basename(src), os.path.basename(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", recording_replace)
    with staged_dir(final) as partial:
        (partial / "new.txt").write_text("new")
    assert renames == [("out", "out.old"), ("out.partial", "out")]
    assert not (tmp_path / "out.old").exists()


def test_leftovers_of_a_killed_run_are_removed(tmp_path):
    final = tmp_path / "out"
    (tmp_path / "out.partial").mkdir()
    (tmp_path / "out.partial" / "half.txt").write_text("half")
    (tmp_path / "out.old").mkdir()  # killed between the two renames: no "out" at all
    (tmp_path / "out.old" / "old.txt").write_text("old")
    with staged_dir(final) as partial:
        assert not any(partial.iterdir())
        assert not (tmp_path / "out.old").exists()
        (partial / "new.txt").write_text("new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert sorted(p.name for p in final.iterdir()) == ["new.txt"]


def test_a_file_in_the_way_is_replaced(tmp_path):
    final = tmp_path / "out"
    final.write_text("not a folder")
    with staged_dir(final) as partial:
        (partial / "new.txt").write_text("new")
    assert (final / "new.txt").read_text() == "new"
