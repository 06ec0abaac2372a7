"""The numpy note scan (midistyle.scan) against the event-by-event reading it replaces (roll._scan_notes).

Both must give the same parts (name, onsets, offsets, pitches, in the same
order), the same drum flag, or the same skip reason, on every file: the
fixtures, files built byte by byte to take each way out of the fast path, a
seeded corpus sample when ../shared/corpus is beside the repository, and
thousands of seeded mutations of real files (bytes flipped, cut, inserted).
"""

import csv
import random
from pathlib import Path

import numpy as np
import pytest

from midistyle.roll import RollError, _scan_notes, _scan_parts, midi_payload
from midistyle.scan import scan_notes
from tests.midi_fixtures import _events_file, _off, _on, bad_files, program_change_mid_note, scale_piece, to_bytes, tricky_files

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "corpus"


def outcome(fn, data: bytes):
    try:
        parts, drums = fn(data, "f.mid")
    except RollError as exc:
        return exc.reason
    return drums, [(p.name, p.on.dtype, p.on.tolist(), p.off.tolist(), p.pitch.tolist()) for p in parts]


def same(data: bytes) -> None:
    assert outcome(_scan_parts, data) == outcome(_scan_notes, data)


def payloads() -> dict[str, bytes]:
    files = dict(tricky_files())
    files.update({name: data for name, (data, _) in bad_files().items()})
    files["program_change_mid_note"] = program_change_mid_note()
    files["scale"] = to_bytes(scale_piece(seed=3, bars=12))
    out = {}
    for name, data in files.items():
        try:
            out[name] = midi_payload(name, None, data)
        except RollError:
            pass
    return out


@pytest.mark.parametrize("name", sorted(payloads()))
def test_fixtures_scan_the_same(name):
    data = payloads()[name]
    same(data)
    if name == "scale":
        assert scan_notes(data) is not None  # a plain file takes the fast path


def smf(*tracks: bytes, division: int = 480) -> bytes:
    head = b"MThd" + (6).to_bytes(4, "big") + (1).to_bytes(2, "big") + len(tracks).to_bytes(2, "big")
    return head + division.to_bytes(2, "big") + b"".join(b"MTrk" + len(t).to_bytes(4, "big") + t for t in tracks)


EOT = b"\x00\xff\x2f\x00"
NOTES = b"\x00\x90\x3c\x40" + b"\x60\x3c\x00" + b"\x00\x3e\x40" + b"\x83\x60\x80\x3e\x00"  # running status, a long delta


@pytest.mark.parametrize("body, fast", [
    (NOTES + EOT, True),
    (b"\x00\xff\x03\x05Piano" + NOTES + b"\x00\xff\x03\x02RH" + EOT, True),  # the last track name wins
    (b"\x00\xc0\x05" + NOTES + b"\x00\xc1\x07\x00\x91\x30\x40\x10\x30\x00" + EOT, True),  # programs per channel
    (b"\x00\xc0\x05\x00\x06" + NOTES + EOT, False),  # running status after a program change: one data byte
    (b"\x00\xd0\x05\x00\x06" + NOTES + EOT, False),  # ... after channel pressure
    (b"\x00\xf0\x03\x7e\x7f\xf7\x00\x02\x01\x02" + NOTES + EOT, False),  # data bytes after a sysex
    (b"\x00\xf0\x03\x7e\x7f\xf7" + NOTES + EOT, True),
    (b"\x3c\x40" + NOTES + EOT, False),  # running status before any status byte: corrupt
    (NOTES + b"\x00\xf4" + EOT, False),  # an undefined system status: corrupt
    (b"\x81\x80\x80\x80\x00\x90\x3c\x40\x10\x80\x3c\x00" + EOT, False),  # a delta time of 5 bytes
    (NOTES + b"\x00\xff\x01\x40abc", False),  # a meta event running past the end of the file
    (NOTES + b"\x00\x90\x3c", False),  # a note event cut by the end of the file
    (b"\x00\x99\x24\x40\x10\x89\x24\x00" + NOTES + EOT, True),  # drums
    (b"\x00\x90\x3c\x40\x00\x3c\x40\x00\x80\x3c\x00\x10\x80\x3c\x00" + EOT, True),  # one tick: dropped
])
def test_hand_built_tracks_scan_the_same(body, fast):
    assert (scan_notes(smf(body)) is not None) == fast
    for data in (smf(body), smf(b"\x00\xff\x51\x03\x07\xa1\x20" + EOT, body), smf(body, NOTES + EOT)):
        same(data)


def test_a_track_that_overruns_its_chunk_takes_the_slow_path():
    body = NOTES + EOT
    data = smf(body)
    cut = data[:18] + (len(body) - 2).to_bytes(4, "big") + data[22:]  # the chunk ends inside the last event
    assert scan_notes(cut) is None
    same(cut)


def corpus_sample(n: int, seed: int) -> list[bytes]:
    if not (CORPUS / "MANIFEST.tsv").exists():
        return [to_bytes(scale_piece(seed=s, bars=6 + s % 5)) for s in range(n)]
    with open(CORPUS / "MANIFEST.tsv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    rows = random.Random(seed).sample(rows, n)
    return [(CORPUS / r["path"]).read_bytes() for r in rows]


def test_corpus_files_scan_the_same():
    for data in corpus_sample(40, seed=5):
        try:
            data = midi_payload("f.mid", None, data)
        except RollError:
            continue
        same(data)


def test_mutated_files_scan_the_same_or_fail_the_same():
    rng = random.Random(11)
    sources = [midi_payload("f.mid", None, d) for d in corpus_sample(6, seed=2)]
    sources += list(payloads().values())
    for k in range(1500):
        data = bytearray(rng.choice(sources))
        if len(data) < 30:
            continue
        what = rng.random()
        at = rng.randrange(22, len(data))
        if what < 0.5:
            for _ in range(rng.randint(1, 4)):
                data[rng.randrange(22, len(data))] = rng.randrange(256)
        elif what < 0.7:
            del data[at:]
        elif what < 0.85:
            data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 5)))
        else:
            del data[at:at + rng.randint(1, 5)]
        same(bytes(data))


def test_scan_arrays_are_int64():
    tracks = scan_notes(_events_file([[(0, _on(60)), (240, _on(60)), (480, _off(60))]]))
    assert tracks is not None
    for _, group, start, end, pitch in tracks:
        assert all(a.dtype == np.int64 for a in (group, start, end, pitch))
