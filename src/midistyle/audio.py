"""Audio a browser can play, for the report: MIDI -> Ogg Vorbis (soundfont) or WAV (plain synthesis).

Two renderers (``params.evaluate.audio``):

* ``soundfont``: the FluidSynth command line with a General MIDI soundfont
  (Debian: ``apt-get install fluidsynth fluid-soundfont-gm``), written as Ogg
  Vorbis (small; plays in Chromium and Firefox). ``MIDISTYLE_SOUNDFONT`` names
  another ``.sf2`` file.
* ``synth``: a small additive piano-like synthesiser in numpy (a few decaying
  harmonics per note), written as 16-bit mono WAV. Needs nothing installed.

``auto`` takes the soundfont when FluidSynth and a soundfont are there, else
the synthesiser; ``none`` renders nothing. Only ``seconds`` of a piece are
rendered (from ``start``: the report's excerpt), so a report with dozens of
players stays small.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tempfile
import wave
from pathlib import Path

import numpy as np
import pretty_midi

from midistyle.errors import UserError
from midistyle.fileio import atomic_write_bytes

SOUNDFONT_ENV = "MIDISTYLE_SOUNDFONT"
SOUNDFONTS = (  # where Debian/Ubuntu packages put a General MIDI soundfont
    "/usr/share/sounds/sf2/FluidR3_GM.sf2",
    "/usr/share/sounds/sf2/default-GM.sf2",
    "/usr/share/soundfonts/default.sf2",
    "/usr/share/soundfonts/FluidR3_GM.sf2",
)
INSTALL_HINT = "apt-get install fluidsynth fluid-soundfont-gm"
HARMONICS = np.array([1.0, 0.45, 0.22, 0.12, 0.05])  # additive synth: relative amplitude of partials 1..5
MIME = {".ogg": "audio/ogg", ".wav": "audio/wav"}


def find_soundfont() -> Path | None:
    """``$MIDISTYLE_SOUNDFONT`` when set (it must exist), else the first installed GM soundfont."""
    env = os.environ.get(SOUNDFONT_ENV)
    if env:
        if not Path(env).is_file():
            raise UserError(f"{SOUNDFONT_ENV}={env}: no such soundfont file")
        return Path(env)
    return next((Path(p) for p in SOUNDFONTS if Path(p).is_file()), None)


def resolve_mode(requested: str) -> str:
    """``auto`` -> ``soundfont`` when FluidSynth and a soundfont are installed, else ``synth``."""
    if requested in ("synth", "none"):
        return requested
    available = shutil.which("fluidsynth") is not None and find_soundfont() is not None
    if requested == "soundfont" and not available:
        raise UserError(f"evaluate.audio: soundfont needs the fluidsynth command and a GM soundfont ({INSTALL_HINT}); "
                        "or set evaluate.audio to auto or synth")
    if requested not in ("soundfont", "auto"):
        raise UserError(f"evaluate.audio: unknown renderer {requested!r}")
    return "soundfont" if available else "synth"


def clip_midi(pm: pretty_midi.PrettyMIDI, seconds: float, start: float = 0.0) -> pretty_midi.PrettyMIDI:
    """``seconds`` of a piece from ``start`` (s), moved to begin at 0: notes outside dropped, notes sounding
    across either edge cut off there."""
    end = start + seconds
    for inst in pm.instruments:
        inst.notes = [n for n in inst.notes if n.start < end and n.end > start]
        for n in inst.notes:
            n.start, n.end = max(n.start, start) - start, min(n.end, end) - start
        inst.control_changes = [c for c in inst.control_changes if start <= c.time < end]
        for c in inst.control_changes:
            c.time -= start
        inst.pitch_bends = [b for b in inst.pitch_bends if start <= b.time < end]
        for b in inst.pitch_bends:
            b.time -= start
    return pm


def has_notes(pm: pretty_midi.PrettyMIDI) -> bool:
    return any(inst.notes for inst in pm.instruments if not inst.is_drum)


def render(midi_path: str | Path, out_base: str | Path, mode: str, sample_rate: int = 22050,
           seconds: float = 30.0, start: float = 0.0) -> Path | None:
    """Render ``seconds`` of a MIDI file from ``start`` (s); returns the audio file (``out_base`` + .ogg/.wav).

    ``None`` when ``mode`` is ``none`` or the clip has no notes (nothing to hear).
    """
    if mode == "none":
        return None
    pm = clip_midi(pretty_midi.PrettyMIDI(str(midi_path)), seconds, start)
    if not has_notes(pm):
        return None
    if mode == "soundfont":
        return _render_fluidsynth(pm, Path(str(out_base) + ".ogg"), sample_rate)
    if mode == "synth":
        return write_wav(Path(str(out_base) + ".wav"), synthesize(pm, sample_rate), sample_rate)
    raise UserError(f"unknown audio renderer {mode!r} (auto, soundfont, synth, none)")


def _render_fluidsynth(pm: pretty_midi.PrettyMIDI, out: Path, sample_rate: int) -> Path:
    soundfont = find_soundfont()
    exe = shutil.which("fluidsynth")
    if soundfont is None or exe is None:
        raise UserError(f"audio: FluidSynth or a GM soundfont is missing ({INSTALL_HINT})")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        mid, part = Path(tmp) / "clip.mid", Path(tmp) / "clip.ogg"
        pm.write(str(mid))
        cmd = [exe, "-ni", "-q", "-g", "0.7", "-r", str(sample_rate), "-T", "oga", "-F", str(part), str(soundfont), str(mid)]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if done.returncode != 0 or not part.exists() or part.stat().st_size == 0:
            detail = (done.stderr or done.stdout).strip().splitlines()[-1:] or [f"exit status {done.returncode}"]
            raise UserError(f"audio: fluidsynth failed on {out.name}: {detail[0]}")
        return atomic_write_bytes(out, part.read_bytes())


def synthesize(pm: pretty_midi.PrettyMIDI, sample_rate: int = 22050, release: float = 0.08) -> np.ndarray:
    """Mono float32 audio in [-1, 1]: each note a sum of decaying harmonics (a plain, piano-like tone)."""
    end = max((n.end for inst in pm.instruments for n in inst.notes), default=0.0)
    audio = np.zeros(int((end + release + 0.2) * sample_rate) + 1, np.float64)
    for inst in pm.instruments:
        if inst.is_drum:
            continue
        for note in inst.notes:
            start = int(note.start * sample_rate)
            hold = max(note.end - note.start, 0.01)
            n = int((hold + release) * sample_rate)
            t = np.arange(n) / sample_rate
            freq = 440.0 * 2.0 ** ((note.pitch - 69) / 12.0)
            partials = np.arange(1, len(HARMONICS) + 1)
            keep = partials * freq < sample_rate / 2  # no aliasing
            tone = (HARMONICS[keep, None] * np.sin(2 * np.pi * freq * partials[keep, None] * t)).sum(axis=0)
            decay = np.exp(-t * (1.5 + freq / 400.0))  # high notes fade faster, as on a piano
            attack = np.minimum(t / 0.005, 1.0)
            fade = np.clip((hold + release - t) / release, 0.0, 1.0)  # key released: short fade out
            audio[start : start + n] += (note.velocity / 127.0) * tone * decay * attack * fade
    peak = np.abs(audio).max(initial=0.0)
    return (audio * (0.8 / peak if peak > 0 else 1.0)).astype(np.float32)


def write_wav(path: str | Path, audio: np.ndarray, sample_rate: int) -> Path:
    """16-bit mono PCM WAV, written atomically."""
    pcm = (np.clip(audio, -1.0, 1.0) * 32767).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm.tobytes())
    return atomic_write_bytes(path, buf.getvalue())
