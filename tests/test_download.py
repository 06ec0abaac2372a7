"""The download stage: url/archive/local/music21 sources -> data/raw layout, offline.

URLs are served by a loopback server (conftest.http_server); MIDI files are built
in code; everything is written under tmp_path.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pretty_midi
import pytest

from midistyle.config import Source
from midistyle.download import (
    NameRegistry,
    convert_score,
    download_all,
    from_local,
    from_music21,
    resolve_local,
    safe_stem,
    select,
    strip_repeats,
    write_score_midi,
)
from midistyle.errors import UserError
from midistyle.fetch import extract_archive, fetch_url, url_kind
from tests.helpers_params import tiny_params, tiny_raw


def midi_bytes(pitch: int = 60, seconds: float = 0.5) -> bytes:
    """A one-note MIDI file."""
    pm = pretty_midi.PrettyMIDI()
    inst = pretty_midi.Instrument(program=0)
    inst.notes.append(pretty_midi.Note(velocity=80, pitch=pitch, start=0.0, end=seconds))
    pm.instruments.append(inst)
    buf = io.BytesIO()
    pm.write(buf)
    return buf.getvalue()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def tar_bytes(members: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tf.addfile(info)
    return buf.getvalue()


def all_files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def write_archive(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


# ---------------------------------------------------------------- fetch_url
def test_fetch_url_writes_the_checked_file(http_server, tmp_path):
    data = midi_bytes()
    url = http_server.serve("song.mid", data)
    got = fetch_url(url, sha(data), tmp_path / "out", max_bytes=1 << 20)
    assert got == tmp_path / "out" / "song.mid"
    assert got.read_bytes() == data
    assert all_files(tmp_path / "out") == ["song.mid"]


def test_fetch_url_checksum_mismatch_leaves_nothing(http_server, tmp_path):
    data = midi_bytes()
    url = http_server.serve("song.mid", data)
    wrong = "0" * 64
    with pytest.raises(UserError) as err:
        fetch_url(url, wrong, tmp_path / "out", max_bytes=1 << 20)
    msg = str(err.value)
    assert url in msg and wrong in msg and sha(data) in msg and "\n" not in msg
    assert all_files(tmp_path / "out") == []


def test_fetch_url_refuses_a_download_over_the_cap(http_server, tmp_path):
    data = midi_bytes()
    url = http_server.serve("big.mid", data)
    with pytest.raises(UserError, match="over the cap"):
        fetch_url(url, sha(data), tmp_path / "out", max_bytes=len(data) - 1)
    assert all_files(tmp_path / "out") == []


def test_fetch_url_http_error_names_the_url(http_server, tmp_path):
    url = f"{http_server.base}/missing.mid"
    with pytest.raises(UserError, match=r"missing\.mid: download failed: HTTP 404"):
        fetch_url(url, "0" * 64, tmp_path, max_bytes=1 << 20)
    assert all_files(tmp_path) == []


def test_url_kind():
    assert url_kind("https://x.org/a/b.MIDI?raw=1") == "midi"
    assert url_kind("https://x.org/a.tar.gz") == "tar"
    assert url_kind("https://x.org/a.tgz") == "tar"
    assert url_kind("https://x.org/main.zip") == "zip"
    with pytest.raises(UserError, match="not a .mid/.midi file"):
        url_kind("https://x.org/page.html")


# ---------------------------------------------------------------- extract_archive
def test_zip_extracts_only_midi_members(tmp_path):
    archive = write_archive(tmp_path, "a.zip", zip_bytes(
        {"set/one.mid": midi_bytes(60), "set/TWO.MIDI": midi_bytes(62), "set/readme.txt": b"hello"}))
    got = extract_archive(archive, tmp_path / "x", "*", max_bytes=1 << 20)
    assert [p.relative_to(tmp_path / "x").as_posix() for p in got] == ["set/TWO.MIDI", "set/one.mid"]
    assert all_files(tmp_path / "x") == ["set/TWO.MIDI", "set/one.mid"]
    assert (tmp_path / "x" / "set" / "one.mid").read_bytes() == midi_bytes(60)


def test_zip_include_filters_members(tmp_path):
    archive = write_archive(tmp_path, "a.zip", zip_bytes({"a/one.mid": midi_bytes(), "b/two.mid": midi_bytes()}))
    got = extract_archive(archive, tmp_path / "x", "b/*", max_bytes=1 << 20)
    assert [p.name for p in got] == ["two.mid"]


def test_zip_with_parent_path_member_is_refused(tmp_path):
    archive = write_archive(tmp_path, "evil.zip", zip_bytes({"ok.mid": midi_bytes(), "../evil.mid": midi_bytes()}))
    dest = tmp_path / "deep" / "x"
    with pytest.raises(UserError) as err:
        extract_archive(archive, dest, "*", max_bytes=1 << 20)
    assert "evil.zip" in str(err.value) and "../evil.mid" in str(err.value)
    assert all_files(tmp_path / "deep") == []
    assert not (tmp_path / "deep" / "evil.mid").exists()


@pytest.mark.parametrize("bad", ["/tmp/abs.mid", "a/../../up.mid", "../up.txt"])
def test_tar_with_unsafe_member_is_refused(tmp_path, bad):
    archive = write_archive(tmp_path, "evil.tar.gz", tar_bytes({"ok.mid": midi_bytes(), bad: midi_bytes()}))
    with pytest.raises(UserError, match="evil.tar.gz: refusing member"):
        extract_archive(archive, tmp_path / "x", "*", max_bytes=1 << 20)
    assert all_files(tmp_path / "x") == []


def test_tar_with_midi_symlink_is_refused(tmp_path):
    archive = write_archive(tmp_path, "links.tgz", tar_bytes({"ok.mid": midi_bytes()}, links={"x.mid": "/etc/passwd"}))
    with pytest.raises(UserError, match="'x.mid': MIDI member is a link"):
        extract_archive(archive, tmp_path / "x", "*", max_bytes=1 << 20)
    assert all_files(tmp_path / "x") == []


def test_archive_over_the_size_cap_is_refused(tmp_path):
    archive = write_archive(tmp_path, "bomb.zip", zip_bytes({"a.mid": midi_bytes(), "big.mid": bytes(200_000)}))
    assert archive.stat().st_size < 10_000  # compresses well: only the extraction cap catches it
    with pytest.raises(UserError, match="bomb.zip: .*over the cap"):
        extract_archive(archive, tmp_path / "x", "*", max_bytes=100_000)
    assert all_files(tmp_path / "x") == []


def test_unreadable_archive_is_a_user_error(tmp_path):
    archive = write_archive(tmp_path, "broken.zip", b"not a zip at all")
    with pytest.raises(UserError, match="broken.zip: unreadable archive"):
        extract_archive(archive, tmp_path / "x", "*", max_bytes=1 << 20)


# ---------------------------------------------------------------- names and selection
def test_safe_names_are_flat_and_unique():
    assert safe_stem("bach/bwv1.6.mxl") == "bach__bwv1.6"
    assert safe_stem("sub/x.mid") == "sub__x"
    assert safe_stem(".hidden/wëird name!.midi") == "hidden__w_ird_name_"
    names = NameRegistry()
    assert [names.claim(p) for p in ("a/x.mid", "a/x.midi", "A/X.mid")] == ["a__x.mid", "a__x-2.mid", "A__X-3.mid"]


def test_select_is_seeded_and_sorted():
    items = [f"d/{i:03d}.mid" for i in range(50)] + ["other.txt"]
    a = select(items, "d/*.mid", 10, "0:jazz:0")
    assert a == select(list(reversed(items)), "d/*.mid", 10, "0:jazz:0")
    assert a == sorted(a) and len(a) == 10
    assert a != select(items, "d/*.mid", 10, "1:jazz:0")
    assert select(items, "*.mid", None, "0:jazz:0") == sorted(items[:50])


# ---------------------------------------------------------------- local sources
def make_folder(root: Path, n: int) -> Path:
    for i in range(n):
        sub = "sub/" if i % 3 == 0 else ""
        (root / sub).mkdir(parents=True, exist_ok=True)
        (root / f"{sub}p{i:02d}.mid").write_bytes(midi_bytes(50 + i))
    (root / "notes.txt").write_text("not midi")
    return root


def test_local_selection_with_include_and_limit_is_deterministic(tmp_path):
    folder = make_folder(tmp_path / "corpus" / "jazz", 12)
    src = Source(local="{corpus_dir}/jazz", include="sub/*", limit=3)
    runs = []
    for k in range(2):
        out = tmp_path / f"out{k}"
        out.mkdir()
        found = resolve_local(src, str(tmp_path / "corpus"), "data.profiles.t.jazz[0]")
        res = from_local(src, found, out, NameRegistry(), "0:jazz:0", "data.profiles.t.jazz[0]")
        runs.append([(p.name, s) for p, s in res.written])
        assert all_files(out) == sorted(p.name for p, _ in res.written)
    assert runs[0] == runs[1]
    assert len(runs[0]) == 3 and all(name.startswith("sub__p") for name, _ in runs[0])
    assert all(s.startswith(f"local:{folder.as_posix()}/sub/") for _, s in runs[0])


def test_local_missing_folder_is_one_line(tmp_path):
    src = Source(local="{corpus_dir}/jazz")
    with pytest.raises(UserError) as err:
        resolve_local(src, str(tmp_path / "nowhere"), "data.profiles.corpus.jazz[0]")
    msg = str(err.value)
    assert msg == (f"data.profiles.corpus.jazz[0].local: folder {(tmp_path / 'nowhere' / 'jazz').as_posix()} "
                   "not found (set data.corpus_dir)")


# ---------------------------------------------------------------- music21
def test_music21_converts_bach_chorales(tmp_path):
    src = Source(music21="bach", include="bach/bwv1*.mxl", limit=2)
    res = from_music21(src, "baroque", tmp_path, NameRegistry(), "0:baroque:0", 2, "data.profiles.t.baroque[0]")
    assert res.skipped == []
    assert len(res.written) == 2
    for path, source in res.written:
        assert path.name.startswith("bach__bwv1") and source.startswith("music21:bach/bwv1")
        pm = pretty_midi.PrettyMIDI(str(path))
        assert sum(len(i.notes) for i in pm.instruments) > 10
    assert all_files(tmp_path) == sorted(p.name for p, _ in res.written)


def test_music21_conversion_in_parallel_writes_the_same_bytes_as_in_one_process(tmp_path):
    # data.workers converts scores in processes; the files (and so the manifest's sha256s) must not depend on it.
    src = Source(music21="bach", include="bach/bwv2*.mxl", limit=3)
    digests = []
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        out.mkdir()
        res = from_music21(src, "baroque", out, NameRegistry(), "0:baroque:0", workers, "data.profiles.t.baroque[0]")
        assert res.skipped == [] and len(res.written) == 3
        digests.append([(p.name, sha(p.read_bytes())) for p, _ in res.written])
    assert digests[0] == digests[1]


def badly_repeated_score():
    """A score music21 refuses to write as MIDI: repeat barlines that do not pair up."""
    from music21 import bar, meter, note, stream

    part = stream.Part()
    for i in range(4):
        m = stream.Measure(number=i + 1)
        if i == 0:
            m.append(meter.TimeSignature("4/4"))
        m.append(note.Note(60 + i, type="whole"))
        part.append(m)
    ms = list(part.getElementsByClass(stream.Measure))
    ms[0].rightBarline = bar.Repeat(direction="end")
    ms[1].leftBarline = bar.Repeat(direction="start")
    ms[2].leftBarline = bar.Repeat(direction="start")
    ms[3].rightBarline = bar.Repeat(direction="end", times=2)
    score = stream.Score()
    score.append(part)
    return score


def test_malformed_repeats_are_retried_without_them(tmp_path):
    from music21 import bar

    score = badly_repeated_score()
    with pytest.raises(Exception, match="badly formed repeats"):
        badly_repeated_score().write("midi", fp=str(tmp_path / "direct.mid"))
    assert write_score_midi(score, tmp_path / "x.mid") is None
    assert not list(score.recurse().getElementsByClass(bar.Repeat))
    notes = pretty_midi.PrettyMIDI(str(tmp_path / "x.mid")).instruments[0].notes
    assert [n.pitch for n in notes] == [60, 61, 62, 63]
    strip_repeats(score)  # idempotent


def test_a_score_that_fails_is_skipped_with_a_reason(tmp_path):
    reason = convert_score(("bach/no-such-piece.mxl", str(tmp_path / "x.mid")))
    assert reason and "no-such-piece" in reason
    assert all_files(tmp_path) == []


# ---------------------------------------------------------------- the stage
def web_params(folder: Path, single_url: str, single_sha: str, zip_url: str, zip_sha: str, seed: int = 0):
    """params.yaml (shrunk) with a profile of a local folder and two downloads."""
    return tiny_params(seed=seed, data={
        "profile": "tiny",
        "corpus_dir": str(folder.parent),
        "profiles": {
            "tiny": {
                "jazz": [{"local": "{corpus_dir}/" + folder.name, "include": "*.mid", "limit": 5}],
                "web": [{"url": single_url, "sha256": single_sha},
                        {"url": zip_url, "sha256": zip_sha, "include": "*.mid"}],
            },
        },
    })


def test_download_all_end_to_end(http_server, tmp_path):
    folder = make_folder(tmp_path / "corpus" / "jazz", 8)
    single = midi_bytes(70)
    archive = zip_bytes({"pack/a.mid": midi_bytes(71), "pack/b.mid": midi_bytes(72), "pack/c.txt": b"x"})
    params = web_params(folder, http_server.serve("dl/tune.mid", single), sha(single),
                         http_server.serve("dl/pack.zip", archive), sha(archive))
    out, metrics = tmp_path / "data" / "raw", tmp_path / "metrics" / "download.json"
    out.mkdir(parents=True)
    (out / "stale.mid").write_bytes(b"old")

    rows = download_all(params, out, metrics)

    assert sorted(p.name for p in tmp_path.joinpath("data").iterdir()) == ["raw"]  # no .partial/.old left
    files = all_files(out)
    assert "stale.mid" not in files and "manifest.csv" in files
    assert [f for f in files if f.startswith("web/")] == ["web/pack__a.mid", "web/pack__b.mid", "web/tune.mid"]
    assert len([f for f in files if f.startswith("jazz/")]) == 5
    with open(out / "manifest.csv", newline="") as fh:
        manifest = list(csv.DictReader(fh))
    assert manifest == [{k: str(v) for k, v in r.items()} for r in rows]
    assert list(manifest[0]) == ["style", "file", "source", "sha256"]
    assert [(r["style"], r["file"]) for r in manifest] == sorted((r["style"], r["file"]) for r in manifest)
    for r in manifest:
        assert sha((out / r["file"]).read_bytes()) == r["sha256"]
    by_file = {r["file"]: r for r in manifest}
    assert by_file["web/tune.mid"]["source"] == f"url:{http_server.base}/dl/tune.mid"
    assert by_file["web/pack__b.mid"]["source"] == f"url:{http_server.base}/dl/pack.zip#pack/b.mid"
    assert by_file["web/tune.mid"]["sha256"] == sha(single)
    assert all(r["source"].startswith(f"local:{folder.as_posix()}/") for r in manifest if r["style"] == "jazz")

    report = json.loads(metrics.read_text())
    assert report["styles"] == {"jazz": {"written": 5, "skipped": 0}, "web": {"written": 3, "skipped": 0}}
    assert report["written"] == 8 and report["skipped"] == 0 and report["skipped_items"] == []

    again = download_all(params, out, None)  # same params, same pieces, same bytes
    assert again == rows


def test_download_all_failure_keeps_the_previous_output(http_server, tmp_path):
    folder = make_folder(tmp_path / "corpus" / "jazz", 3)
    data = midi_bytes()
    params = web_params(folder, http_server.serve("tune.mid", data), "f" * 64,
                         http_server.serve("p.zip", zip_bytes({"a.mid": data})), "0" * 64)
    out = tmp_path / "raw"
    out.mkdir()
    (out / "keep.mid").write_bytes(b"previous run")
    with pytest.raises(UserError, match=r"tune\.mid: sha256 mismatch"):
        download_all(params, out, tmp_path / "m.json")
    assert all_files(out) == ["keep.mid"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus", "raw"]  # no partial, no metrics


def test_download_all_rejects_a_source_that_selects_nothing(tmp_path):
    folder = make_folder(tmp_path / "corpus" / "jazz", 2)
    params = tiny_params(data={"profile": "p", "corpus_dir": str(folder.parent), "profiles": {"p": {
        "jazz": [{"local": "{corpus_dir}/jazz", "include": "nomatch*"}],
        "folk": [{"local": "{corpus_dir}/jazz"}]}}})
    with pytest.raises(UserError, match=r"data\.profiles\.p\.jazz\[0\]: selects no pieces"):
        download_all(params, tmp_path / "raw", None)
    assert not (tmp_path / "raw").exists() and not (tmp_path / "raw.partial").exists()


def test_stage_script_runs_from_a_project_root(tmp_path):
    """``python stages/download.py --params PATH`` writes data/raw and metrics relative to the cwd."""
    import yaml

    make_folder(tmp_path / "corpus" / "jazz", 3)
    make_folder(tmp_path / "corpus" / "folk", 3)
    profile = {s: [{"local": f"{{corpus_dir}}/{s}"}] for s in ("jazz", "folk")}
    params = tiny_raw(seed=0, data={"profile": "p", "corpus_dir": "corpus", "profiles": {"p": profile}})
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(params))
    script = Path(__file__).resolve().parents[1] / "stages" / "download.py"
    ok = subprocess.run([sys.executable, str(script), "--params", "p.yaml"], cwd=tmp_path, capture_output=True,
                        text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert len((tmp_path / "data" / "raw" / "manifest.csv").read_text().splitlines()) == 1 + 6
    assert json.loads((tmp_path / "metrics" / "download.json").read_text())["written"] == 6

    params["data"]["corpus_dir"] = "elsewhere"
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(params))
    bad = subprocess.run([sys.executable, str(script), "--params", "p.yaml"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines()[-1] == (
        "error: data.profiles.p.folk[0].local: folder elsewhere/folk not found (set data.corpus_dir)")
    assert len((tmp_path / "data" / "raw" / "manifest.csv").read_text().splitlines()) == 1 + 6  # kept
