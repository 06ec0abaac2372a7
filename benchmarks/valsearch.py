"""What the attribute_search benchmarks share: the committed models, the validation windows, and one table out.

Only validation pieces (those the tune_transfer stage uses) are read; test pieces never are.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from midistyle import layout
from midistyle import musicstats as ms
from midistyle.config import load_params
from midistyle.judge import judge_verdicts, load_judge
from midistyle.shards import ShardIndex
from midistyle.transfer import SearchSpace, StyleTransfer, select_pieces
from midistyle.tuning import SourceWindows, search_space, source_windows, style_bounds


@dataclass
class ValSearch:
    model: StyleTransfer
    judge: object
    space: SearchSpace  # params.yaml's, with the training windows' texture
    val_bounds: dict[str, np.ndarray]  # per style: the plausibility band of its real val windows
    percentiles: tuple[float, float]  # params.yaml's transfer.search_percentiles: the band of ``space``
    windows: dict[str, SourceWindows]  # per style: the audible windows of its validation pieces

    @classmethod
    def load(cls, pieces_per_style: int | None = None) -> "ValSearch":
        """The committed models and ``pieces_per_style`` validation pieces per style (default: params.yaml's
        transfer.val_pieces_per_style, the pieces tune_transfer reads; more of them: less noise)."""
        params = load_params("params.yaml")
        model = StyleTransfer.load()
        judge, _ = load_judge(layout.JUDGE)
        index = ShardIndex.open(layout.SHARDS)
        pieces = select_pieces(layout.RAW, layout.SPLITS, model.styles,
                               pieces_per_style or params.transfer.val_pieces_per_style, params.seed, "val")
        return cls(model, judge, search_space(index, params.transfer), style_bounds(index, "val"),
                   tuple(params.transfer.search_percentiles),
                   {style: source_windows(model, layout.RAW, files) for style, files in pieces.items()})

    def directions(self, only: list[str] | None = None):
        """(source, target, source index, target index, the source's windows, their latents) of every direction, or
        of those named in ``only`` (``source_to_target``; an unknown name stops the benchmark before any work)."""
        known = {f"{a}_to_{b}" for a in self.model.styles for b in self.model.styles if a != b}
        if set(only or []) - known:
            raise SystemExit(f"--directions: unknown {sorted(set(only) - known)}; known: {', '.join(sorted(known))}")
        return self._directions(set(only or known))

    def _directions(self, names: set[str]):
        for source, win in self.windows.items():
            s = self.model.style_index(source)
            if not any(n.startswith(f"{source}_to_") for n in names):
                continue  # no latents to encode for a source none of the directions starts from
            mu = self.model.encode_arrays(win.rolls, win.length)
            for t, target in enumerate(self.model.styles):
                if t != s and f"{source}_to_{target}" in names:
                    yield source, target, s, t, win, mu

    def judged(self, decoded: np.ndarray, lengths: np.ndarray, target: str
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Candidates (C, N, W, 2, 2, P) of windows with ``lengths`` (N,) -> judge says target (C, N), plausible
        (C, N), and their texture (C, N, F) (density, polyphony, right-hand share: ms.WINDOW_FEATURES)."""
        C, N = decoded.shape[:2]
        flat, lens = decoded.reshape(C * N, *decoded.shape[2:]), np.tile(lengths, C)
        hit = (judge_verdicts(self.judge, flat, lens) == self.model.style_index(target)).reshape(C, N)
        feats = ms.window_features(flat, lens, self.model.spec.steps_per_beat)
        return hit, ms.plausible(feats, self.val_bounds[target]).reshape(C, N), feats.reshape(C, N, -1)


def write_table(rows: list[dict], columns: list[tuple[str, str, str]], path: str | Path) -> None:
    """Print ``rows`` as a markdown table of ``columns`` (header, key, format) and write them to ``path`` as JSON."""
    print("| " + " | ".join(h for h, _, _ in columns) + " |")
    print("|" + "|".join("---" if f == "s" else "---:" for _, _, f in columns) + "|")
    for r in rows:
        print("| " + " | ".join(format(r[k], f) for _, k, f in columns) + " |")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps({"split": "val", "rows": rows}, indent=1) + "\n")
