"""The extract stage on a tiny raw folder built in code."""

import csv
import json

import numpy as np
import pytest

from midistyle.errors import UserError
from midistyle.extract import extract, split_pieces, RawPiece
from midistyle.fileio import npz_bytes, sha256_file
from midistyle.roll import RollSpec, read_piece, window_batch
from midistyle.shards import Batch, ShardIndex
from tests import helpers_params
from tests.midi_fixtures import piece, scale_piece, to_bytes

BAD = {
    "empty.mid": b"",
    "notes.txt.mid": b"not a midi file\n",
    "corrupt.mid": b"MThd\x00\x00\x00\x06\x00\x01\x00\x02\x01\xe0MTrk\xff\xff\xff\xffgarbage",
    "silent.mid": to_bytes(piece([[]])),
    "drums.mid": to_bytes(piece([], drums=[(36, 0, 0.5), (38, 0.5, 1.0)])),
}


def make_raw(root, n_good=6, bad=True):
    rows = []
    for s, style in enumerate(["alpha", "beta"]):
        for i in range(n_good):
            data = to_bytes(scale_piece(seed=100 * s + i, bars=8 + i, tempo=90.0 + 10 * s, low=36 + 6 * s))
            rows.append((style, f"{style}/piece{i}.mid", data))
    if bad:
        rows += [("beta", f"beta/{name}", data) for name, data in BAD.items()]
    for _, rel, data in rows:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    with open(root / "manifest.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["style", "file", "source", "sha256"])
        for style, rel, _ in rows:
            w.writerow([style, rel, "test", sha256_file(root / rel)])
    return root


def tiny_params(**extract):
    return helpers_params.tiny_params(extract={"shard_windows": 8, "max_reject_share": 0.5, **extract})


def run(tmp_path, name, params, raw_dir):
    out = tmp_path / name
    metrics = extract(params, raw_dir, out / "shards", out / "splits.json", out / "extract.json", progress=False)
    return out, metrics


def test_extract_writes_shards_splits_and_metrics(tmp_path):
    raw = make_raw(tmp_path / "raw")
    out, m = run(tmp_path, "a", tiny_params(), raw)
    assert m["files_seen"] == 17 and m["files_parsed"] == 12 and m["files_skipped"] == 5
    assert m["skipped_by_reason"] == {"corrupt": 1, "drums_only": 1, "empty": 1, "no_notes": 1, "not_midi": 1}
    with open(out / "shards" / "skipped.csv") as fh:
        skipped = {r["file"]: r["reason"] for r in csv.DictReader(fh)}
    assert skipped["beta/drums.mid"] == "drums_only"

    index = ShardIndex.open(out / "shards")
    assert index.styles == ["alpha", "beta"]
    total = sum(index.count(s) for s in ("train", "val", "test"))
    assert total == m["windows_total"] > 0
    assert all(s["windows"] <= 8 for s in index.shards)
    for shard in index.shards:  # the index's sha256 names each shard's bytes
        assert sha256_file(out / "shards" / shard["file"]) == shard["sha256"]
    splits = json.loads((out / "splits.json").read_text())
    assert sorted(splits["train"] + splits["val"] + splits["test"]) == sorted(p["file"] for p in index.pieces)
    # split by piece: no piece has windows in two splits
    batch = index.load_split("test")
    assert {index.pieces[p]["split"] for p in batch.piece.tolist()} == {"test"}


def test_same_input_twice_gives_byte_identical_shards(tmp_path):
    raw = make_raw(tmp_path / "raw", bad=False)
    a, _ = run(tmp_path, "a", tiny_params(), raw)
    b, _ = run(tmp_path, "b", tiny_params(), raw)
    files = sorted(p.name for p in (a / "shards").iterdir())
    assert files == sorted(p.name for p in (b / "shards").iterdir())
    for name in files:
        assert (a / "shards" / name).read_bytes() == (b / "shards" / name).read_bytes(), name
    assert (a / "splits.json").read_bytes() == (b / "splits.json").read_bytes()


def test_too_many_rejects_fail_without_touching_the_previous_output(tmp_path):
    raw = make_raw(tmp_path / "raw")
    out, _ = run(tmp_path, "a", tiny_params(), raw)
    before = {p.name: p.read_bytes() for p in (out / "shards").iterdir()}
    with pytest.raises(UserError, match=r"5 of 17 files rejected .*max_reject_share"):
        run(tmp_path, "a", tiny_params(max_reject_share=0.2), raw)
    assert {p.name: p.read_bytes() for p in (out / "shards").iterdir()} == before
    assert not (tmp_path / "a" / "shards.partial").exists()


def test_missing_manifest_is_one_clear_error(tmp_path):
    with pytest.raises(UserError, match="manifest.csv: no manifest"):
        run(tmp_path, "a", tiny_params(), tmp_path)


def test_splits_are_by_piece_stratified_and_seeded():
    pieces = [RawPiece(s, f"{s}/{i}.mid", "") for s in ("x", "y") for i in range(20)]
    a = split_pieces(pieces, 0.1, 0.2, seed=0)
    assert a == split_pieces(pieces, 0.1, 0.2, seed=0)
    assert a != split_pieces(pieces, 0.1, 0.2, seed=1)
    for style in ("x", "y"):
        counts = [sum(1 for f, s in a.items() if f.startswith(style) and s == sp) for sp in ("train", "val", "test")]
        assert counts == [14, 2, 4]


def test_streaming_batches_cover_each_window_once_and_split_evenly_across_processes(tmp_path):
    raw = make_raw(tmp_path / "raw", bad=False)
    out, _ = run(tmp_path, "a", tiny_params(), raw)
    index = ShardIndex.open(out / "shards")
    n = index.count("train")
    seen = np.concatenate([np.stack([b.piece, b.start], 1) for b in index.iter_batches("train", 5, shuffle=True, seed=0)])
    assert len(seen) == n and len({tuple(r) for r in seen.tolist()}) == n
    again = np.concatenate([np.stack([b.piece, b.start], 1) for b in index.iter_batches("train", 5, shuffle=True, seed=0)])
    assert np.array_equal(seen, again)
    per_rank = [sum(1 for _ in index.iter_batches("train", 3, shuffle=True, seed=0, rank=r, world_size=2)) for r in (0, 1)]
    assert per_rank[0] == per_rank[1] == index.num_batches("train", 3, world_size=2)


def test_epoch_cap_takes_exact_balanced_quotas_with_a_new_subset_each_epoch(tmp_path):
    raw = make_raw(tmp_path / "raw", bad=False)
    out, _ = run(tmp_path, "a", tiny_params(), raw)
    index = ShardIndex.open(out / "shards")
    cap = int(index.count("train")) - 9
    quota = index.epoch_quota("train", cap, balance_styles=True)
    assert quota.sum() == cap and abs(int(quota[0]) - int(quota[1])) <= 1
    # water-filling: a small style keeps all its windows, the rest go to the big one
    skewed = ShardIndex(index.root, {**index.index, "shards": [
        {"file": "x", "split": "train", "windows": 105, "windows_per_style": {"alpha": 5, "beta": 100}}]})
    assert skewed.epoch_quota("train", 40, balance_styles=True).tolist() == [5, 35]
    assert skewed.epoch_quota("train", 40).tolist() == [1, 38]

    def epoch(e):
        bs = list(index.iter_batches("train", 4, shuffle=True, seed=0, epoch=e, max_windows=cap, balance_styles=True))
        styles = np.concatenate([b.style for b in bs])
        assert np.array_equal(np.bincount(styles, minlength=2), quota)
        assert len(bs) == index.num_batches("train", 4, max_windows=cap, balance_styles=True)
        return {tuple(r) for r in np.concatenate([np.stack([b.piece, b.start], 1) for b in bs]).tolist()}

    assert epoch(0) != epoch(1)


def test_shards_hold_exactly_the_windows_of_each_piece(tmp_path):
    """Decoded shards == window_batch of every piece's roll, in order, with pieces cut across shards."""
    raw = make_raw(tmp_path / "raw", bad=False)
    params = tiny_params()
    out, _ = run(tmp_path, "a", params, raw)
    index = ShardIndex.open(out / "shards")
    spec = RollSpec.from_params(params.extract)
    got = Batch.concat([index.read_shard(s) for s in index.shards])
    assert got.rolls.dtype == bool and got.rolls.shape[1:] == (spec.window_steps, 2, 2, spec.n_pitches)
    for piece in index.pieces:
        rolls, lengths, starts = window_batch(read_piece(raw / piece["file"], spec), spec)
        mine = np.flatnonzero(got.piece == piece["id"])
        assert np.array_equal(got.rolls[mine], rolls) and np.array_equal(got.lengths[mine], lengths)
        assert np.array_equal(got.start[mine], starts)
    per_shard = [set(index.read_shard(s).piece.tolist()) for s in index.shards]
    cut = sum(1 for piece in index.pieces if sum(piece["id"] in ids for ids in per_shard) > 1)
    assert cut > 0  # some piece's windows span two shards (its notes cut at the shard's edge)


def test_shards_of_another_format_or_damaged_are_named_in_one_clear_error(tmp_path):
    raw = make_raw(tmp_path / "raw", bad=False)
    out, _ = run(tmp_path, "a", tiny_params(), raw)
    shards = out / "shards"
    index = json.loads((shards / "index.json").read_text())
    old = tmp_path / "old"
    old.mkdir()
    (old / "index.json").write_text(json.dumps({**index, "format": 1}))
    with pytest.raises(UserError, match=r"shard format 1, this version reads format 2 .*dvc repro extract"):
        ShardIndex.open(old)
    opened = ShardIndex.open(shards)
    first = opened.shards[0]
    path = shards / first["file"]
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    for damage, message in [
        (lambda a: a.pop("note_onset"), "holds arrays"),
        (lambda a: a.update(lengths=a["lengths"].astype(np.int64)), "lengths is int64"),
        (lambda a: a.update(note_end=a["note_end"] + 10_000), "a note outside the timeline"),
        (lambda a: a.update(offset=a["offset"] - 10_000), "a window outside"),
        (lambda a: a.update(style=a["style"][:-1]), "different lengths"),
    ]:
        bad = {k: v.copy() for k, v in arrays.items()}
        damage(bad)
        path.write_bytes(npz_bytes(bad, compress=False))
        with pytest.raises(UserError, match=message) as err:
            opened.read_shard(first)
        assert str(path) in str(err.value)
    path.write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(UserError, match="cannot be read as a shard"):
        opened.read_shard(first)
