"""Tiny params (params.yaml shrunk) and tiny shard sets for the model and training tests (built in code, in seconds)."""

from __future__ import annotations

import csv
import dataclasses
import random
from pathlib import Path

import pretty_midi

from midistyle.config import Params, parse_params
from midistyle.model import VAEConfig
from midistyle.roll import RollSpec
from tests import helpers_params
from tests.helpers_params import REPO
from tests.midi_fixtures import piece, write

CORPUS = {  # the legato/staccato pieces below: a 2-bar window of 16 steps over 25 pitches
    "seed": 0,  # a seed of 0 is a seed
    "data": {"profile": "tiny",
             "profiles": {"tiny": {"legato": [{"local": "legato"}], "staccato": [{"local": "staccato"}]}}},
    "extract": {"steps_per_beat": 2, "pitch_low": 48, "pitch_high": 72, "bars_per_window": 2, "hop_bars": 1,
                "split": {"val": 0.2, "test": 0.2}, "shard_windows": 24},
}


def tiny_raw(**sections) -> dict:
    """params.yaml shrunk (:func:`tests.helpers_params.tiny_raw`) to this corpus's styles and grid."""
    return helpers_params.tiny_raw(CORPUS, **sections)


def tiny_params(**sections) -> Params:
    """``tiny_params(train={"epochs": 2})`` overrides single keys of a section."""
    return parse_params(tiny_raw(**sections))


def tiny_vae_config(model: dict, **changes) -> VAEConfig:
    """The VAE config of ``tiny_params(model=model)`` on this corpus's grid, with ``changes`` (e.g. another grid)."""
    params = tiny_params(model=model)
    return dataclasses.replace(VAEConfig.from_params(params.model, RollSpec.from_params(params.extract)), **changes)


def style_piece(style: str, seed: int, bars: int = 6) -> pretty_midi.PrettyMIDI:
    """A two-part piece; "legato" holds half notes, "staccato" plays short eighths: two tellable styles."""
    rng = random.Random(f"{style}:{seed}")
    beat = 0.5  # 120 qpm
    melody, bass = [], []
    for b in range(bars * 4):
        if style == "legato":
            if b % 2 == 0:
                melody.append((rng.randint(62, 72), b * beat, (b + 2) * beat))
        else:
            for half in range(2):
                t = (b + half / 2) * beat
                melody.append((rng.randint(60, 72), t, t + beat / 4))
        if b % 4 == 0:
            bass.append((rng.randint(48, 59), b * beat, (b + 4) * beat))
    return piece([melody, bass])


def make_raw(raw_dir: Path, pieces_per_style: int = 6) -> Path:
    """A raw folder as the download stage leaves it: <style>/*.mid + manifest.csv."""
    rows = []
    for style in ("legato", "staccato"):
        for i in range(pieces_per_style):
            rel = f"{style}/{style}-{i:02d}.mid"
            write(style_piece(style, i), raw_dir / rel)
            rows.append({"style": style, "file": rel, "source": "test", "sha256": ""})
    with open(raw_dir / "manifest.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["style", "file", "source", "sha256"])
        writer.writeheader()
        writer.writerows(rows)
    return raw_dir


def make_shards(root: Path, params: Params | None = None, pieces_per_style: int = 6) -> Path:
    """``root/data/shards`` (and splits, extract metrics) through the real extract stage; returns the shards dir."""
    from midistyle.extract import extract

    params = params or tiny_params()
    raw = make_raw(root / "data" / "raw", pieces_per_style)
    out = root / "data" / "shards"
    extract(params, raw, out, root / "data" / "splits.json", root / "metrics" / "extract.json", progress=False)
    return out
