"""Transfer directions: (source style, target style) pairs, and their text form ``<source>_to_<target>``.

The text form keys the JSON and CSV outputs and the sweep files. A style name
may itself contain ``_to_`` (``back_to_back``), so the text is never split on
``_to_`` blindly: it is parsed against the known style names, and a set of
styles whose text forms could be read two ways is refused when the params are
read (:func:`ambiguous_pair`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from midistyle.errors import UserError

SEPARATOR = "_to_"


class Direction(NamedTuple):
    source: str
    target: str

    @property
    def key(self) -> str:
        """The text form used in output files: ``<source>_to_<target>``."""
        return f"{self.source}{SEPARATOR}{self.target}"

    @property
    def label(self) -> str:
        return f"{self.source} → {self.target}"


def _readings(key: str, styles: Iterable[str]) -> list[Direction]:
    known = set(styles)
    out = []
    start = key.find(SEPARATOR)
    while start != -1:
        d = Direction(key[:start], key[start + len(SEPARATOR):])
        if d.source in known and d.target in known:
            out.append(d)
        start = key.find(SEPARATOR, start + 1)
    return out


def parse_direction(key: str, styles: Iterable[str]) -> Direction:
    """The direction whose text form is ``key``, given the known style names."""
    styles = list(styles)
    readings = _readings(key, styles)
    if len(readings) != 1:
        what = "is not a direction" if not readings else f"reads as several directions {readings}"
        raise UserError(f"{key!r} {what} between the styles {sorted(styles)}")
    return readings[0]


def ambiguous_pair(styles: Iterable[str]) -> tuple[Direction, Direction] | None:
    """Two different directions between ``styles`` with the same text form, or None."""
    styles = list(styles)
    seen: dict[str, Direction] = {}
    for source in styles:
        for target in styles:
            d = Direction(source, target)
            if d.key in seen and seen[d.key] != d:
                return seen[d.key], d
            seen[d.key] = d
    return None
