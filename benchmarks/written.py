"""What the benchmarks that read the transfer stage's outputs share: the roll layout and the written pieces.

Reads what `dvc repro` wrote: data/transfers (its manifest) and the sources in data/raw.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from midistyle import layout
from midistyle.model import load_vae, vae_spec
from midistyle.roll import RollSpec
from midistyle.transfer import read_manifest


def roll_spec() -> RollSpec:
    """The committed VAE's roll layout (pieces are read back with it)."""
    return vae_spec(load_vae(layout.VAE)[1])


def written(methods: tuple[str, ...] | None = None) -> Iterator[tuple[dict, Path, Path, bool]]:
    """Every output the transfer stage wrote (manifest rows with status ok; of ``methods``, or all), in the
    manifest's order: (row, output path, source path, True the first time this source comes up)."""
    seen: set[str] = set()
    for row in read_manifest(layout.TRANSFERS / "manifest.csv"):
        if row["status"] != "ok" or (methods is not None and row["method"] not in methods):
            continue
        first = row["source_file"] not in seen
        seen.add(row["source_file"])
        yield row, layout.TRANSFERS / row["output_file"], layout.RAW / row["source_file"], first
