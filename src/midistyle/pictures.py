"""Piano-roll pictures (matplotlib, Agg: no display needed).

``draw_rolls([("original", roll), ("reconstruction", rec)], "x.png")`` draws each
(T, 2, 2, P) roll as one labelled panel, one above another, sharing the time
axis: the right hand in blue, the left hand in orange (where both hands hold
the same key the colours mix), a darker mark at every onset, and bar lines
every ``steps_per_bar`` steps. Float rolls (probabilities in [0, 1]) are drawn
with their value as the colour's strength.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from midistyle.fileio import atomic_write_bytes
from midistyle.roll import LEFT, ONSET, RIGHT, SOUNDING

HAND_RGB = {RIGHT: np.array([0.12, 0.47, 0.71]), LEFT: np.array([1.0, 0.50, 0.05])}  # matplotlib's C0 and C1


def roll_image(roll: np.ndarray) -> np.ndarray:
    """(T, 2, 2, P) roll -> (P, T, 3) RGB image on white; pitch rows bottom-up when drawn with origin='lower'."""
    r = np.clip(np.asarray(roll, dtype=np.float32), 0.0, 1.0)
    img = np.ones(r.shape[:1] + r.shape[3:] + (3,), np.float32)  # (T, P, 3) white paper
    for hand, rgb in HAND_RGB.items():  # like inks: each hand filters the light, overlaps mix
        strength = np.maximum(r[:, hand, SOUNDING], r[:, hand, ONSET])[..., None]  # (T, P, 1)
        img *= 1.0 - strength * (1.0 - rgb)
        img *= 1.0 - 0.45 * r[:, hand, ONSET][..., None]  # onsets darker: repeated notes stay visible
    return img.transpose(1, 0, 2)  # (P, T, 3)


def draw_rolls(rows: list[tuple[str, np.ndarray]], path: str | Path, pitch_low: int = 34, steps_per_bar: int = 16,
               title: str | None = None) -> Path:
    """One panel per (label, roll), top to bottom; written atomically as PNG (or any format by suffix)."""
    from matplotlib.figure import Figure  # Figure + savefig uses the Agg canvas: no pyplot state, no display
    from matplotlib.patches import Patch

    if not rows:
        raise ValueError("draw_rolls needs at least one roll")
    T = max(len(roll) for _, roll in rows)
    P = rows[0][1].shape[-1]
    fig = Figure(figsize=(min(4 + T / 8, 24), 1.0 + 2.2 * len(rows)), dpi=100, layout="constrained")
    axes = fig.subplots(len(rows), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (label, roll) in zip(axes, rows):
        img = np.ones((P, T, 3), np.float32)
        img[:, : len(roll)] = roll_image(roll)
        ax.imshow(img, origin="lower", aspect="auto", interpolation="nearest",
                  extent=(0, T, pitch_low - 0.5, pitch_low + P - 0.5))
        for bar in range(steps_per_bar, T, steps_per_bar):
            ax.axvline(bar, color="0.75", linewidth=0.6)
        ax.set_ylabel("MIDI pitch")
        ax.set_title(label, loc="left", fontsize=10)
    axes[-1].set_xlabel("step")
    axes[0].legend(handles=[Patch(color=HAND_RGB[RIGHT], label="right hand"), Patch(color=HAND_RGB[LEFT], label="left hand")],
                   loc="upper right", fontsize=8, framealpha=0.8)
    if title:
        fig.suptitle(title)
    buf = io.BytesIO()
    fmt = Path(path).suffix.lstrip(".") or "png"
    fig.savefig(buf, format=fmt, metadata={"Software": None} if fmt == "png" else None)  # no version stamp
    return atomic_write_bytes(path, buf.getvalue())
