"""The ``tune_transfer`` stage: how far to move, chosen per direction on validation pieces.

For every method and direction (source -> target style) a grid of settings is
tried on up to ``transfer.val_pieces_per_style`` validation pieces of the source
style (``data/splits.json``; test pieces are never looked at): ``alpha`` of the
attribute vector (``transfer.alpha_grid``), the number of classifier-guided
steps (``transfer.guided_steps_grid``). For each grid value every audible window
is moved, decoded freely, and scored without the judge (the judge only
evaluates, it takes no part in the transfer):

* *re-encoded target*: the decoded window, encoded again by the VAE, is assigned
  to the target style by the latent classifier;
* *plausible*: its note density, polyphony, right-hand share and left-hand density lie inside the 5th-95th
  percentile band of the real **validation** windows of the target style
  (:func:`midistyle.musicstats.plausible`).

The score of a grid value is the share of windows that are both. The chosen
value is the smallest one whose score reaches ``transfer.target_strength``;
when none does, the one scoring best (the smallest of equals).

Before the sweeps, the *hold threshold* of the model is chosen on the same
pieces' reconstructions (:func:`choose_hold_threshold`): windows are decoded
one by one, so a note that sounds on over a window's start is struck again
there unless the decoder's P(onset) of the window's first frame is at most the
hold threshold (:func:`midistyle.transfer.tie_windows`). Of
``transfer.hold_threshold_grid``, the value under which the most first-frame
notes that sound on both sides of a start, in the source and in the
reconstruction, are held or struck again as in the source (the smallest of
equals). Every later decoding (the sweeps, the transfer stage, the
``midistyle`` command) ties windows with it.

Outputs: ``models/transfer_settings.json`` (the chosen values and the hold threshold, read by the
transfer stage and the ``midistyle`` command, and every grid value's score) and
``data/transfer_sweep/`` (the decoded windows of every grid value, which the
evaluate stage judges for the strength <-> content curve).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from midistyle import layout
from midistyle import musicstats as ms
from midistyle.directions import Direction
from midistyle.errors import UserError
from midistyle.fileio import atomic_write_json, staged_dir
from midistyle.roll import ONSET, SOUNDING, read_piece
from midistyle.shards import ShardIndex
from midistyle.transfer import (KNOBS, SETTINGS_KIND, SearchSpace, StyleTransfer, TransferSettings, audible_windows,
                                select_pieces, tied)

log = logging.getLogger(__name__)


@dataclass
class SourceWindows:
    """The audible windows of a style's validation pieces, in piece order."""

    files: list[str]
    piece: np.ndarray  # (N,) index into files
    start: np.ndarray  # (N,) first step in the piece
    length: np.ndarray  # (N,) steps of music
    rolls: np.ndarray  # (N, W, 2, 2, P)


@dataclass(frozen=True)
class TunePaths:
    raw: Path = layout.RAW
    splits: Path = layout.SPLITS
    shards: Path = layout.SHARDS
    vae: Path = layout.VAE
    classifier: Path = layout.CLASSIFIER
    settings: Path = layout.TRANSFER_SETTINGS
    sweep: Path = layout.TRANSFER_SWEEP


# ---------------------------------------------------------------- windows
def source_windows(model: StyleTransfer, raw_dir: Path, files: list[str]) -> SourceWindows:
    """Every audible window of ``files`` (read as the transfer stage reads a piece)."""
    rows = [(i, w) for i, f in enumerate(files) for w in audible_windows(read_piece(raw_dir / f, model.spec), model.spec)]
    shape = (0, model.spec.window_steps, 2, 2, model.spec.n_pitches)
    return SourceWindows(files, np.array([i for i, _ in rows], int), np.array([w.start for _, w in rows], int),
                         np.array([w.length for _, w in rows], int),
                         np.stack([w.roll for _, w in rows]) if rows else np.zeros(shape, bool))


def mask_lengths(rolls: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Windows with every step at or past their length cleared (what stitching into the piece keeps)."""
    inside = np.arange(rolls.shape[-4])[:, None, None, None] < np.asarray(lengths)[..., None, None, None, None]
    return rolls & inside


def style_bounds(index: ShardIndex, split: str,
                 percentiles: tuple[float, float] = ms.PLAUSIBLE_PERCENTILES) -> dict[str, np.ndarray]:
    """Per style, the band (:func:`~midistyle.musicstats.plausible_bounds`) of ``split``'s real windows' features."""
    return split_textures(index, split, percentiles)[0]


def split_textures(index: ShardIndex, split: str, percentiles: tuple[float, float]
                   ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Per style, the ``percentiles`` band (F, 2) and the medians (F,) of ``split``'s real windows' features
    (one reading of the split)."""
    data = index.load_split(split)
    feats = ms.window_features(data.rolls, data.lengths, index.spec.steps_per_beat)
    by_style = {s: feats[data.style == i] for i, s in enumerate(index.styles)}
    return ({s: ms.plausible_bounds(f, percentiles) for s, f in by_style.items()},
            {s: ms.plausible_bounds(f, (50.0, 50.0))[:, 0] for s, f in by_style.items()})


def search_space(index: ShardIndex, tp) -> SearchSpace:
    """attribute_search's candidates and accepted texture, from params' ``transfer`` and the training windows."""
    bounds, medians = split_textures(index, "train", tuple(tp.search_percentiles))
    return SearchSpace(tuple(tp.alpha_grid), tuple(tp.search_paths), tuple(tp.search_threshold_offsets),
                       tuple(tp.search_right_hand_offsets),
                       {s: tuple(map(tuple, b.tolist())) for s, b in bounds.items()}, tp.search_min_probability,
                       {s: tuple(m.tolist()) for s, m in medians.items()},
                       tuple(tp.search_neighbour_steps), tp.search_neighbours, tp.search_knn, tp.search_min_knn_share,
                       tp.search_melody_weight)


# ---------------------------------------------------------------- the hold threshold
def window_start_decisions(source: np.ndarray, decoded: np.ndarray, holds: np.ndarray, piece: np.ndarray,
                           start: np.ndarray, length: np.ndarray) -> np.ndarray:
    """How a piece's consecutive windows were joined, against its source: windows (N, W, 2, 2, P) of the source and
    decoded, the decoded windows' holds (N, 2, P), in piece order with their piece, start and length (N,) ->
    counts [right, cells, output re-strikes, output notes sounding on, source re-strikes, source notes sounding
    on] over the first frames of windows that follow the previous window of their piece without a gap.

    A cell counts where a note sounds on over the start (the frame before and the first frame) in the source and
    in the output; it is *right* when the output strikes it again (:func:`~midistyle.transfer.tie_windows`: where
    the window does not hold it) exactly where the source does."""
    rows = np.nonzero((piece[1:] == piece[:-1]) & (start[1:] == start[:-1] + length[:-1]))[0]  # window i+1 follows i
    prev, cur = rows, rows + 1
    last = length[prev] - 1
    src_on = source[prev, last, :, SOUNDING] & source[cur, 0, :, SOUNDING]  # (K, 2, P)
    out_on = decoded[prev, last, :, SOUNDING] & decoded[cur, 0, :, SOUNDING]
    src_again = src_on & source[cur, 0, :, ONSET]
    out_again = out_on & decoded[cur, 0, :, ONSET] & ~tied(decoded[prev, last, :, SOUNDING],
                                                           decoded[cur, 0, :, SOUNDING], holds[cur])
    both = src_on & out_on
    return np.array([(both & (out_again == src_again)).sum(), both.sum(), out_again.sum(), out_on.sum(),
                     src_again.sum(), src_on.sum()], dtype=np.int64)


def hold_counts(model: StyleTransfer, windows: SourceWindows, grid: list[float]) -> np.ndarray:
    """:func:`window_start_decisions` of the reconstructions of ``windows`` under each hold threshold of ``grid``
    -> (G, 6) counts (``model.hold_threshold`` is left at the last value)."""
    if not len(windows.rolls):
        return np.zeros((len(grid), 6), np.int64)
    mu = model.encode_arrays(windows.rolls, windows.length)
    rows = []
    for value in grid:  # the windows do not depend on it, only their holds; decoding again is cheap (1.3 s in all)
        model.hold_threshold = float(value)
        (decoded,), holds = model.decode_windows(mu, [model.threshold])
        rows.append(window_start_decisions(windows.rolls, mask_lengths(decoded, windows.length), holds,
                                           windows.piece, windows.start, windows.length))
    return np.array(rows)


def choose_hold_threshold(model: StyleTransfer, windows: dict[str, SourceWindows], grid: list[float]) -> dict:
    """``model.hold_threshold`` set to the value of ``grid`` under which the reconstructions of ``windows`` (every
    style's validation pieces) join their windows most like the sources (:func:`window_start_decisions`, the
    first of equals); returns the choice with every grid value's figures."""
    counts = sum(hold_counts(model, w, grid) for w in windows.values())
    right = [float(c[0] / c[1]) if c[1] else float("nan") for c in counts]
    pick = int(np.argmax(np.nan_to_num(right, nan=-1.0)))
    model.hold_threshold = float(grid[pick])
    per_100 = [float(100 * c[2] / c[3]) if c[3] else float("nan") for c in counts]
    return {"value": float(grid[pick]), "grid": [float(v) for v in grid], "right_share": right,
            "restrikes_per_100": per_100, "val_right_share": right[pick], "val_restrikes_per_100": per_100[pick],
            "val_source_restrikes_per_100": float(100 * counts[0][4] / counts[0][5]) if counts[0][5] else float("nan"),
            "cells": int(counts[pick][1])}


# ---------------------------------------------------------------- the sweep
def grid_of(method: str, tp) -> list[float]:
    return list(tp.alpha_grid) if KNOBS[method] == "alpha" else list(tp.guided_steps_grid)


def moved_latents(model: StyleTransfer, mu: torch.Tensor, method: str, source: int, target: int, grid: list,
                  base: TransferSettings) -> list[torch.Tensor]:
    """z of every grid value (the guided path is run once, its z kept at each step count of the grid)."""
    src = torch.full((len(mu),), source, dtype=torch.long)
    tgt = torch.full((len(mu),), target, dtype=torch.long)
    if KNOBS[method] == "alpha":
        return [model.move(mu, method, src, tgt, replace(base, alpha=float(a))) for a in grid]
    return model.guided_path(mu, tgt, base, [int(k) for k in grid])


def sweep(model: StyleTransfer, windows: SourceWindows, mu: torch.Tensor, method: str, source: int, target: int,
          grid: list, base: TransferSettings) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decoded windows (G, N, W, 2, 2, P) of every grid value, cleared past each window's length, their holds
    (G, N, 2, P) (:meth:`StyleTransfer.decode_windows`; one decoding batch), and the windows the choice is made
    on (G, N, W, 2, 2, P): the same, but attribute_search's path moves alone (:func:`search_sweep`)."""
    if method == "attribute_search":
        return search_sweep(model, windows, mu, source, target, grid, base.search)
    z = torch.cat(moved_latents(model, mu, method, source, target, grid, base))
    rolls, holds = model.decode_windows(z, [model.threshold])
    decoded = mask_lengths(rolls[0].reshape(len(grid), len(mu), *windows.rolls.shape[1:]), windows.length[None])
    return decoded, holds.reshape(len(grid), len(mu), *holds.shape[1:]), decoded


def search_sweep(model: StyleTransfer, windows: SourceWindows, mu: torch.Tensor, source: int, target: int,
                 grid: list, space: SearchSpace) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """attribute_search at every cap of ``grid``: windows (G, N, W, 2, 2, P) and their holds (G, N, 2, P), and
    the choice among path moves alone (G, N, W, 2, 2, P): one pass alpha by alpha
    (:meth:`~midistyle.transfer.StyleTransfer.search_steps`, what the transfer runs), each cap's choice taken
    when its alpha is done. The cap is chosen on the path moves alone: the neighbour moves, which keep less of
    the source, would let a small cap reach the target share (val renaissance -> baroque: cap 2 -> 0.5, test
    melody kept 0.435 -> 0.332), where they are meant for the windows no path move settles."""
    alphas = sorted({float(a) for a in grid} | set(space.alphas(max(grid))))
    at: dict[float, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for step in model.search_steps(mu, windows.length, source, target, alphas, space, 1.0, sources=windows.rolls):
        at[step.alpha] = (step.windows.copy(), step.holds.copy(), step.path_windows.copy())
    return tuple(np.stack([at[float(c)][k] for c in grid]) for k in range(3))


def selection_scores(model: StyleTransfer, decoded: np.ndarray, lengths: np.ndarray, target: int,
                     bounds: np.ndarray) -> dict[str, list[float]]:
    """Per grid value: re-encoded target share, plausible share, and the share of windows that are both."""
    G, N = decoded.shape[:2]
    flat = decoded.reshape(G * N, *decoded.shape[2:])
    lens = np.tile(lengths, G)
    if N == 0:
        return {k: [float("nan")] * G for k in ("reencoded_target_share", "plausible_share", "score")}
    hit = (model.style_probs(model.encode_arrays(flat, lens)).argmax(-1) == target).reshape(G, N)
    ok = ms.plausible(ms.window_features(flat, lens, model.spec.steps_per_beat), bounds).reshape(G, N)
    return {"reencoded_target_share": hit.mean(axis=1).tolist(), "plausible_share": ok.mean(axis=1).tolist(),
            "score": (hit & ok).mean(axis=1).tolist()}


def choose(scores: list[float], target_strength: float) -> int:
    """Index of the smallest grid value whose score reaches ``target_strength``, else of the best score
    (the first of equals; a grid of ``nan`` scores chooses its first value)."""
    arr = np.nan_to_num(np.asarray(scores, float), nan=-1.0)
    reached = np.nonzero(arr >= target_strength)[0]
    return int(reached[0]) if len(reached) else int(np.argmax(arr))


# ---------------------------------------------------------------- the stage
def tune_stage(params, paths: TunePaths = TunePaths()) -> dict:
    """Choose every direction's setting on validation pieces; write the settings and the sweep."""
    t0 = time.perf_counter()
    tp = params.transfer
    model = StyleTransfer.load(paths.vae, paths.classifier)
    index = ShardIndex.open(paths.shards)
    bounds = style_bounds(index, "val")
    space = search_space(index, tp)
    pieces = select_pieces(paths.raw, paths.splits, model.styles, tp.val_pieces_per_style, params.seed, "val")
    base = TransferSettings.unmoved(tp.guided_lr, tp.guided_distance_weight, space)
    chosen: dict[str, dict[str, float]] = {m: {} for m in tp.methods}
    selection: dict[str, dict[str, dict]] = {m: {} for m in tp.methods}
    for source, files in pieces.items():
        if not files:
            raise UserError(f"{paths.splits}: no validation pieces of style {source} to choose the transfer "
                            "strength on (extract.split.val)")
    windows = {source: source_windows(model, paths.raw, files) for source, files in pieces.items()}
    hold = choose_hold_threshold(model, windows, list(tp.hold_threshold_grid))
    log.info("tune_transfer: hold threshold %g (val first-frame notes joined as in the source: %.3f)",
             hold["value"], hold["val_right_share"])
    with staged_dir(paths.sweep) as tmp:
        for source in pieces:
            _tune_source(model, source, windows[source], tp, base, bounds, tmp, chosen, selection)
        atomic_write_json(tmp / "index.json", {"styles": model.styles, "val_pieces": pieces,
                                               "grids": {m: grid_of(m, tp) for m in tp.methods}})
    out = {"kind": SETTINGS_KIND, "styles": model.styles, "rule": _RULE, "target_strength": tp.target_strength,
           "guided_lr": tp.guided_lr, "guided_distance_weight": tp.guided_distance_weight, "chosen": chosen,
           "search": space.to_json(), "hold_threshold": hold,
           "selection": selection, "val_pieces": {s: len(f) for s, f in pieces.items()},
           "val_bounds": {s: b.tolist() for s, b in bounds.items()},
           "wall_seconds": round(time.perf_counter() - t0, 1)}
    atomic_write_json(paths.settings, out)
    log.info("tune_transfer: chose %s in %.1f s", json.dumps(chosen), out["wall_seconds"])
    return out


_RULE = ("per direction, the smallest grid value whose share of validation windows that, decoded and re-encoded, "
         "the latent classifier assigns to the target and that are plausible for the target reaches "
         "target_strength; else the grid value with the highest share")


def _tune_source(model: StyleTransfer, source: str, windows: SourceWindows, tp, base: TransferSettings,
                 bounds: dict[str, np.ndarray], tmp: Path, chosen: dict, selection: dict) -> None:
    """Sweep every method and direction from one source style; fill ``chosen`` and ``selection``."""
    s = model.style_index(source)
    mu = model.encode_arrays(windows.rolls, windows.length) if len(windows.rolls) else None
    for t, target in enumerate(model.styles):
        if t == s:
            continue
        direction = Direction(source, target).key
        for method in tp.methods:
            grid = grid_of(method, tp)
            empty = np.zeros((len(grid), *windows.rolls.shape), bool)
            decoded, holds, chosen_on = (sweep(model, windows, mu, method, s, t, grid, base) if mu is not None else
                                         (empty, np.zeros((len(grid), 0, 2, windows.rolls.shape[-1]), bool), empty))
            scores = selection_scores(model, chosen_on, windows.length, t, bounds[target])
            pick = choose(scores["score"], tp.target_strength)
            chosen[method][direction] = grid[pick]
            selection[method][direction] = {KNOBS[method]: grid, **scores, "chosen": grid[pick],
                                            "reached_target": scores["score"][pick] >= tp.target_strength,
                                            "windows": int(len(windows.rolls))}
            if chosen_on is not decoded:  # attribute_search: the scores with the neighbour moves, as transferred
                final = selection_scores(model, decoded, windows.length, t, bounds[target])
                selection[method][direction] |= {f"{k}_with_neighbours": v for k, v in final.items()}
            write_sweep(tmp / method / f"{direction}.npz", windows, decoded, holds, grid)
            log.info("%s %s: %s = %g (val score %.3f)", method, direction, KNOBS[method], grid[pick],
                     scores["score"][pick])


def write_sweep(path: Path, windows: SourceWindows, decoded: np.ndarray, holds: np.ndarray, grid: list) -> None:
    """One direction and method's decoded windows of every grid value and their holds, with where they sit in
    which piece."""
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, decoded=decoded, holds=holds, values=np.asarray(grid, float), files=np.asarray(windows.files, str),
                        piece=windows.piece, start=windows.start, length=windows.length)


def read_sweep(path: Path) -> dict:
    """What :func:`write_sweep` wrote, as plain arrays (``files`` as a list)."""
    with np.load(path, allow_pickle=False) as z:
        out = {k: z[k] for k in z.files}
    out["files"] = out["files"].tolist()
    return out
