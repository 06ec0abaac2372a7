"""The note events of a Standard MIDI File, paired by pretty_midi's rule, with numpy.

:func:`scan_notes` is :func:`midistyle.roll._scan_notes` (the event-by-event
reading, kept as the reference) without a Python loop over the events. Reading
MIDI is sequential only in where each event begins; here that is found for every
byte at once:

1. **Event lengths.** For every byte offset ``i``, the offset of the next event if
   an event began at ``i``: its delta time (a variable-length quantity), then a
   status byte or running status, then its data (a meta or sysex event's length
   is one more variable-length quantity). Running status is taken to carry two
   data bytes, which holds for notes, controllers and pitch bends.
2. **The chain.** Each track's events are the chain ``start, next(start), ...``;
   it is followed with pointer doubling (``next`` applied 2**k times for every
   offset), so Python steps 2**K events at a time and numpy fills in the rest.
3. **Checks.** Where the guess of step 1 does not hold (running status after a
   program change, channel pressure or sysex; a status byte 0xF1-0xFE; a track
   starting without a status; an event past the end of the file or of its track;
   a variable-length quantity over 4 bytes), :func:`scan_notes` returns None and
   the caller reads the file event by event, which gives the same notes or the
   same error.
4. **Pairing** (pretty_midi's rule, per track, channel and key: a note-off ends
   every sounding note of its key that did not start on its tick; if all of them
   started on its tick, it drops them) from the order of each key's events, see
   :func:`_pair`.
"""

from __future__ import annotations

import numpy as np

K = 5  # Python follows each track 2**K events at a time
PAD = 8  # zero bytes after the file, so that every offset's look-ahead stays inside the array


def _vlq_at(b: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Length (1..4, or 0 when longer than 4 bytes) and value of the variable-length quantity at the offsets ``q``."""
    value = b[q].astype(np.int64)
    length = np.ones(len(q), np.int64)
    multi = np.flatnonzero(value >= 0x80)
    if len(multi):
        qm = q[multi]
        b0, b1, b2, b3 = value[multi], b[qm + 1].astype(np.int64), b[qm + 2].astype(np.int64), b[qm + 3]
        m1, m2 = b1 >= 0x80, b2 >= 0x80
        length[multi] = np.where(~m1, 2, np.where(~m2, 3, np.where(b3 < 0x80, 4, 0)))
        v = ((b0 & 0x7F) << 7) | (b1 & 0x7F)
        v = np.where(m1, (v << 7) | (b2 & 0x7F), v)
        value[multi] = np.where(m1 & m2, (v << 7) | (b3 & 0x7F), v)
    return length, value


# bytes from a status (or a running-status event's first data) byte to the next event, by that byte;
# 0: a meta or sysex event (its own length), 255: a status byte the event-by-event reading rejects
_SPAN = np.full(256, 255, np.int64)
_SPAN[:0x80] = 2  # running status, taken to carry two data bytes (checked later)
_SPAN[0x80:0xC0] = 3
_SPAN[0xC0:0xE0] = 2
_SPAN[0xE0:0xF0] = 3
_SPAN[[0xF0, 0xF7, 0xFF]] = 0


def _next_event(b: np.ndarray, n: int) -> np.ndarray:
    """For every offset ``i`` < n: where the next event begins if one begins at ``i`` (n + 1: past the file, or unreadable).

    Entries n and n + 1 map to themselves.
    """
    more = (b >= 0x80).view(np.uint8)
    m01 = more[:n] & more[1:n + 1]
    m012 = m01 & more[2:n + 2]
    s = np.arange(1, n + 1) + (more[:n] + m01 + m012)  # the status (or first data) byte
    span = _SPAN[b[s]]
    nxt = s + span
    var = np.flatnonzero(span == 0)  # meta and sysex events: their length follows
    if len(var):
        sv = s[var]
        lp = sv + np.where(b[sv] == 0xFF, 2, 1)
        length, value = _vlq_at(b, np.minimum(lp, n + 1))
        nxt[var] = np.where(length > 0, lp + length + value, n + 1)
    nxt[(m012 & more[3:n + 3]).view(bool)] = n + 1  # a delta time over 4 bytes
    np.minimum(nxt, n + 1, out=nxt)  # past the file (n + 1 maps to itself)
    return np.concatenate([nxt, [n, n + 1]])


def _chains(nxt: np.ndarray, tracks: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray] | None:
    """Event offsets of every track (ascending) and their track index; None if a track does not end on its end."""
    jumps = [nxt]
    for _ in range(K):
        jumps.append(jumps[-1][jumps[-1]])
    far = jumps[-1]
    points: list[int] = []
    owner: list[int] = []
    for t, (pos, end) in enumerate(tracks):
        while pos < end:
            points.append(pos)
            owner.append(t)
            pos = int(far[pos])
    pts, tid = np.array(points, np.int64), np.array(owner, np.int64)
    for k in range(K - 1, -1, -1):  # fill in every 2**k-th event between the 2**(k+1)-th ones, in order
        pts = np.stack([pts, jumps[k][pts]], axis=1).ravel()
        tid = np.repeat(tid, 2)
    ends = np.array([e for _, e in tracks], np.int64)
    keep = pts < ends[tid]
    pts, tid = pts[keep], tid[keep]
    # every track's last event must end exactly where the track does
    last = np.flatnonzero(np.diff(tid, append=len(tracks)))
    if not np.array_equal(nxt[pts[last]], ends):
        return None
    return pts, tid


def scan_notes(data: bytes) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray, np.ndarray]] | None:
    """Every track's name and notes ``(name, group, start, end, pitch)`` in ``_scan_notes``'s order, or None.

    ``group`` is channel * 128 + program at the note-on; ticks are absolute. None:
    the file needs the event-by-event reading (see the module's notes).
    """
    n = len(data)
    n_tracks = int.from_bytes(data[10:12], "big")
    pos = 8 + int.from_bytes(data[4:8], "big")
    tracks: list[tuple[int, int]] = []
    for _ in range(n_tracks):
        if pos + 8 > n:
            break
        size = int.from_bytes(data[pos + 4:pos + 8], "big")
        if data[pos:pos + 4] == b"MTrk" and pos + 8 < min(pos + 8 + size, n):
            tracks.append((pos + 8, min(pos + 8 + size, n)))
        pos += 8 + size
    if not tracks:
        return []
    b = np.zeros(n + PAD, np.uint8)
    b[:n] = np.frombuffer(data, np.uint8)
    chains = _chains(_next_event(b, n), tracks)
    if chains is None:
        return None
    events = _events(data, b, *chains, len(tracks))
    return None if events is None else _pair(*events)


def _events(data: bytes, b: np.ndarray, pts: np.ndarray, tid: np.ndarray, n_tracks: int) -> tuple | None:
    """The note events (in file order) and the track names; None where running status is not a 2-byte kind."""
    length, delta = _vlq_at(b, pts)
    s = pts + length
    st = b[s].astype(np.int64)
    E = len(pts)
    if ((st >= 0xF1) & (st != 0xF7) & (st != 0xFF)).any():
        return None
    meta = st == 0xFF
    has_status = (st >= 0x80) & ~meta
    r = np.arange(E)
    idx = np.maximum.accumulate(np.where(has_status, r, -1))
    track_first = np.searchsorted(tid, np.arange(n_tracks))
    running = st < 0x80
    status = np.where(running, st[idx], st)  # idx is -1 only before a track's first status: checked next
    kind = status & 0xF0
    if (running & ((idx < track_first[tid]) | (kind == 0xC0) | (kind == 0xD0) | (kind == 0xF0))).any():
        return None
    dp = s + has_status
    d1, d2 = b[dp].astype(np.int64), b[dp + 1]
    ticks = np.cumsum(delta)
    ticks -= (ticks - delta)[track_first][tid]
    ch = status & 0x0F
    on = (kind == 0x90) & (d2 != 0) & ~meta
    note = np.flatnonzero(on | ((kind == 0x80) | (kind == 0x90)) & ~meta)  # note-ons and note-offs
    # the program in force at each note-on: the last program change of its track and channel before it
    program = np.zeros(len(note), np.int64)
    pc = (kind == 0xC0) & ~meta
    if pc.any():
        sel = np.flatnonzero(pc | on)
        sel = sel[_stable_argsort(tid[sel] * 16 + ch[sel])]
        group = tid[sel] * 16 + ch[sel]
        k = np.arange(len(sel))
        group_start = np.maximum.accumulate(np.where(np.append(True, group[1:] != group[:-1]), k, 0))
        last = np.maximum.accumulate(np.where(pc[sel], k, -1))
        prog = np.where(last >= group_start, d1[sel[np.maximum(last, 0)]], 0)
        at = np.zeros(E, np.int64)
        at[sel] = prog
        program = at[note]
    names = [""] * n_tracks
    for e in np.flatnonzero(meta & (b[s + 1] == 0x03)).tolist():  # track names: the last of each track wins
        q = int(s[e]) + 2
        size, q = read_vlq(data, q)
        names[int(tid[e])] = data[q:q + size].decode("latin-1")
    return (tid[note], ch[note] * 128 + d1[note], ticks[note], on[note], d1[note], ch[note] * 128 + program, names)


def _stable_argsort(key: np.ndarray) -> np.ndarray:
    """``np.argsort(key, kind="stable")`` for keys in [0, 2**32), as one or two radix sorts of 16 bits."""
    if not len(key) or key.max() < 1 << 16:
        return np.argsort(key.astype(np.uint16), kind="stable")
    low = np.argsort((key & 0xFFFF).astype(np.uint16), kind="stable")
    return low[np.argsort((key[low] >> 16).astype(np.uint16), kind="stable")]


def read_vlq(data: bytes, pos: int) -> tuple[int, int]:
    """A MIDI variable-length quantity at ``pos`` -> (value, the position after it)."""
    value = 0
    while True:
        byte = data[pos]
        pos += 1
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            return value, pos


def _pair(tid: np.ndarray, key: np.ndarray, tick: np.ndarray, is_on: np.ndarray, pitch: np.ndarray,
          group: np.ndarray, names: list[str]) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """pretty_midi's pairing of every key's note-ons and note-offs, per track; notes in the order they end.

    For one key, the open notes after a note-off are none, or (when it ended some
    and spared others) those that started on its tick. So a note-on at tick s ends
    at the first note-off after it (tick t) if t > s. If t == s, it is kept only if
    that note-off found an open note of an earlier tick (``kept``); it then ends
    at the next note-off if that one is later than s, and is dropped otherwise.
    ``kept`` of a note-off depends on the previous one's only when its stretch of
    note-ons holds no earlier tick: a forward fill.
    """
    out = [(name, *(np.zeros(0, np.int64),) * 4) for name in names]
    m = len(key)
    if not m:
        return out
    order = _stable_argsort(tid * 4096 + key)  # each key's events in file order, key after key
    k, t, is_off = (tid * 4096 + key)[order], tick[order], ~is_on[order]
    new_key = np.concatenate([[True], k[1:] != k[:-1]])
    # stretches: a key's events up to and including a note-off
    start = new_key.copy()
    start[1:] |= is_off[:-1]
    first = np.flatnonzero(start)
    last = np.append(first[1:] - 1, m - 1)
    ends_off = is_off[last]
    after_off = ~new_key[first]  # the stretch follows a note-off of its key
    t_end = t[last]
    has_ons = first < last
    same_tick = ends_off & has_ons & (t[np.maximum(last - 1, 0)] == t_end)
    earlier = has_ons & (t[first] < t_end)
    after_same = after_off & (t[first - 1] == t_end)
    value = same_tick & earlier & ~after_same
    decisive = value | ~same_tick | after_same | ~after_off
    kept = value[np.maximum.accumulate(np.where(decisive, np.arange(len(first)), 0))]
    # each note-on's note-off: the end of its stretch, or of the next one when kept there
    sid = np.cumsum(start) - 1
    ons = np.flatnonzero(~is_off)
    sk = sid[ons]
    s = t[ons]
    nxt = np.minimum(sk + 1, len(first) - 1)
    has_next = (sk + 1 < len(first)) & after_off[nxt] & ends_off[nxt]
    ends_at = np.where(ends_off[sk] & (t_end[sk] > s), last[sk],
                       np.where(ends_off[sk] & (t_end[sk] == s) & kept[sk] & has_next & (t_end[nxt] > s), last[nxt], -1))
    done = ends_at >= 0
    on_ev, off_ev = order[ons[done]], order[ends_at[done]]
    # the order _scan_notes records them: by note-off, then note-on (a note-off's notes are one key's,
    # already in file order)
    record = _stable_argsort(off_ev)
    on_ev, off_ev = on_ev[record], off_ev[record]
    track = tid[off_ev]
    bounds = np.searchsorted(track, np.arange(len(names) + 1))
    for i, name in enumerate(names):
        a, z = bounds[i], bounds[i + 1]
        out[i] = (name, group[on_ev[a:z]], tick[on_ev[a:z]], tick[off_ev[a:z]], pitch[off_ev[a:z]])
    return out
