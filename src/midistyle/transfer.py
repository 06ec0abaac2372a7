"""Style transfer of whole pieces, shared by the ``transfer`` stage and the ``midistyle`` command.

A piece is cut into consecutive, non-overlapping windows of
``bars_per_window`` bars (:func:`piece_windows`), every window is encoded to
its latent ``mu``, the latent is moved towards the target style, decoded
*freely* (the decoder sees only z, never the source) with the checkpoint's
decision threshold, and the windows are stitched back into one roll written
with the source's tempo and metre map; a note sounding across a window's start
is tied over it where the later window holds it (:func:`tie_windows`).

Ways to move the latent (:data:`METHODS`, plus ``reconstruction``: no move):

* ``attribute_vector``: ``z = mu + alpha * (mean_mu[target] - mean_mu[source])``,
  the means taken over the training split's windows (stored in the latent
  classifier's checkpoint);
* ``classifier_guided``: ``guided_steps`` Adam steps of ``guided_lr`` on z that
  lower the latent classifier's cross-entropy for the target style plus
  ``guided_distance_weight * ||z - mu||^2`` (stay near the source's content);
* ``attribute_search``: generate and test, window by window. Candidates are the
  moves of every ``transfer.search_paths`` path at every ``alpha`` of
  ``transfer.alpha_grid`` up to the chosen one, each decoded at the checkpoint's
  threshold plus each of ``transfer.search_threshold_offsets``, the right hand's
  threshold moved again by each of ``transfer.search_right_hand_offsets`` (the
  hands' balance: where the decoder spreads a line over several pitches, no
  single cell of it passes one threshold for both hands). The paths
  (:meth:`StyleTransfer.path_vectors`), ``z = mu + alpha * d``:

  - ``mean_shift``: ``d = mean_mu[target] - mean_mu[source]``, the attribute vector;
  - ``transport``: ``d = T(mu) - mu``, where ``T`` is the optimal-transport map
    between the two styles' Gaussians (:meth:`StyleRegions.transport`). At
    ``alpha = 1`` the source style's windows, as a whole, take the target's
    spread as well as its mean: ``d`` is the mean shift plus a term that
    rescales the window's offset from its style's mean.

  Windows that no candidate of any alpha up to the cap passes try the
  **neighbour** moves next: ``z = mu + step * (n - mu)`` for each
  ``transfer.search_neighbour_steps`` (fractions of the way, times the CLI's
  ``--strength`` where it is under 1), where ``n`` is each of the
  ``transfer.search_neighbours`` latents of real target-style training windows
  (a seeded sample of them kept in the latent classifier's checkpoint) nearest
  to the window's ``transport`` landing point ``T(mu)``; a passing one is kept
  as a path move would be, else the move of either kind that misses least. A path moves a window
  by one vector for a whole style, so it keeps the window's own rhythm: a
  classical left hand moved towards jazz still plays a sonata's figures, where
  a jazz left hand holds a chord a beat. A real target window has that rhythm.
  They are a fallback, tried after every path move, as they keep less of the
  source (val renaissance -> baroque plausible strength 0.867 -> 0.987, melody
  F1 0.418 -> 0.398; corpus classical -> jazz 0.35 -> 0.77:
  ``benchmarks/search_neighbour.py``, docs/ablation.md). tune_transfer
  chooses the alpha cap on the path moves alone (:func:`midistyle.tuning.search_sweep`).

  A candidate passes when the latent
  classifier, re-encoding it, assigns it to the target with a probability of at
  least ``transfer.search_min_probability``, at least ``transfer.search_min_knn_share``
  of the ``transfer.search_knn`` sampled training windows whose latents lie nearest
  the re-encoding are of the target (:meth:`StyleTransfer.knn_share`: a classifier's
  border can be crossed far from any real window of the target), *and* its note density, polyphony,
  right-hand share and left-hand density (:data:`~midistyle.musicstats.WINDOW_FEATURES`) lie
  inside the ``transfer.search_percentiles`` band (10th-90th) of the target
  style's **training** windows (:class:`SearchSpace`). A window keeps, at the
  smallest alpha where any of its candidates passes, the passing one whose texture
  lies nearest the target's median training window (the most typical texture
  among equally gentle moves), its distance lessened by ``transfer.search_melody_weight``
  times its melody F1 with the source window (:meth:`SearchSpace.pick_distance`: of
  passing candidates, the one that keeps more of the tune); when none passes, the candidate that misses least
  (a silent candidate misses by infinity: a sounding window comes back silent
  only when every candidate is).
  The judge takes no part: it only evaluates.

``alpha`` and ``guided_steps`` are chosen per direction on validation pieces by
the ``tune_transfer`` stage (:mod:`midistyle.tuning`) and read back from
``models/transfer_settings.json`` (:func:`load_chosen_settings`) by the transfer
stage and the ``midistyle`` command.

Windows that are silent in the source stay silent: a rest is content too.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import random
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Optional
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from midistyle import layout
from midistyle.classifier import LatentClassifier, StyleRegions, load_classifier
from midistyle.config import (MAX_GUIDED_STEPS, MAX_MELODY_WEIGHT, MAX_STRENGTH, SEARCH_PATHS,
                              TRANSFER_METHODS)
from midistyle.directions import Direction
from midistyle.errors import UserError
from midistyle.extract import read_manifest as read_raw_manifest
from midistyle.fileio import atomic_write_bytes, atomic_write_json, staged_dir
from midistyle.model import StyleVAE, load_vae, vae_spec
from midistyle import musicstats as ms
from midistyle.roll import (ONSET, SOUNDING, PieceRoll, RollSpec, Timing, Window, iter_windows, read_piece, roll_to_midi,
                            stitch_windows, write_midi)

log = logging.getLogger(__name__)

METHODS = TRANSFER_METHODS
RECONSTRUCTION = "reconstruction"
MANIFEST_COLUMNS = ("method", "source_style", "target_style", "source_file", "output_file", "windows", "status", "error")
DECODE_BATCH = 256
PIECES_PER_BATCH = 32  # pieces whose windows are encoded and decoded together (full decoder batches)
# The setting chosen per direction (attribute_search: the largest alpha its search may use).
KNOBS = {"attribute_vector": "alpha", "classifier_guided": "guided_steps", "attribute_search": "alpha"}


def check_strength(strength: float) -> float:
    """The CLI's ``--strength``, or a one-line error outside 0 .. :data:`~midistyle.config.MAX_STRENGTH`."""
    if not (0 <= strength <= MAX_STRENGTH and math.isfinite(strength)):
        raise UserError(f"--strength: must be a number from 0 to {MAX_STRENGTH:g}, got {strength:g}")
    return strength


def check_step_count(steps: int) -> int:
    """The CLI's ``--steps``, or a one-line error outside 0 .. :data:`~midistyle.config.MAX_GUIDED_STEPS`."""
    if not 0 <= steps <= MAX_GUIDED_STEPS:
        raise UserError(f"--steps: must be from 0 to {MAX_GUIDED_STEPS}, got {steps}")
    return steps


def clip_threshold(t: float) -> float:
    """A decision threshold kept inside 0.05 .. 0.95 (rounded: equal thresholds compare equal)."""
    return round(min(0.95, max(0.05, t)), 6)


@dataclass(frozen=True)
class SearchSpace:
    """What ``attribute_search`` tries per window and which texture it accepts (written by tune_transfer)."""

    alpha_grid: tuple[float, ...]  # transfer.alpha_grid
    paths: tuple[str, ...]  # transfer.search_paths: the latent paths tried at every alpha
    threshold_offsets: tuple[float, ...]  # transfer.search_threshold_offsets, added to the checkpoint's threshold
    right_hand_offsets: tuple[float, ...]  # transfer.search_right_hand_offsets, added to the right hand's only
    # style -> ((lo, hi) per feature of ms.WINDOW_FEATURES): transfer.search_percentiles of its training windows
    texture_bounds: dict[str, tuple]
    min_probability: float  # transfer.search_min_probability: the least target probability of the latent classifier
    texture_medians: dict[str, tuple]  # style -> the medians of its training windows' ms.WINDOW_FEATURES
    neighbour_steps: tuple[float, ...]  # transfer.search_neighbour_steps: the fallback's fractions of the way, ascending
    neighbours: int  # transfer.search_neighbours: the nearest target training latents each fallback step aims at
    knn: int  # transfer.search_knn: the sampled training latents, of every style, nearest a re-encoded candidate
    min_knn_share: float  # transfer.search_min_knn_share: the least (style-balanced) share of them from the target
    melody_weight: float  # transfer.search_melody_weight: the melody F1 with the source, taken from a passing
    # candidate's texture distance (0: texture alone)

    def alphas(self, cap: float) -> list[float]:
        """The alphas tried under a cap, ascending: the grid's up to ``cap``, and ``cap`` itself."""
        return sorted({float(a) for a in self.alpha_grid if a <= cap} | {float(cap)})

    def thresholds(self, base: float) -> list[tuple[float, float]]:
        """Decision thresholds tried, (right hand, left hand) pairs: right-hand offsets outside, nearest 0
        first, threshold offsets inside, nearest 0 first; each kept inside 0.05 .. 0.95, repeats dropped."""
        out: list[tuple[float, float]] = []
        for r in sorted(self.right_hand_offsets, key=abs):
            for o in sorted(self.threshold_offsets, key=abs):
                pair = (clip_threshold(base + o + r), clip_threshold(base + o))
                if pair not in out:
                    out.append(pair)
        return out

    def per_alpha(self, base: float) -> int:
        """Candidates of one alpha: one per path and threshold (:meth:`StyleTransfer.candidates`)."""
        return len(self.paths) * len(self.thresholds(base))

    def to_json(self) -> dict:
        return {"alpha_grid": list(self.alpha_grid), "paths": list(self.paths),
                "threshold_offsets": list(self.threshold_offsets),
                "right_hand_offsets": list(self.right_hand_offsets),
                "texture_bounds": {k: [list(r) for r in v] for k, v in self.texture_bounds.items()},
                "min_probability": self.min_probability,
                "texture_medians": {k: list(v) for k, v in self.texture_medians.items()},
                "neighbour_steps": list(self.neighbour_steps), "neighbours": self.neighbours,
                "knn": self.knn, "min_knn_share": self.min_knn_share, "melody_weight": self.melody_weight}

    @classmethod
    def from_json(cls, data: dict) -> "SearchSpace":
        paths = tuple(str(p) for p in data["paths"])
        unknown = [p for p in paths if p not in SEARCH_PATHS]
        if unknown or not paths:
            raise ValueError(f"search paths {list(paths)}; known: {list(SEARCH_PATHS)}")
        melody_weight = float(data["melody_weight"])
        if not 0 <= melody_weight <= MAX_MELODY_WEIGHT:
            raise ValueError(f"melody_weight {melody_weight:g}; from 0 to {MAX_MELODY_WEIGHT:g}")
        n = len(ms.WINDOW_FEATURES)
        if any(len(v) != n for v in [*data["texture_bounds"].values(), *data["texture_medians"].values()]):
            raise ValueError(f"texture of other features than the {n} of this version "
                             f"({', '.join(ms.WINDOW_FEATURES)})")
        return cls(tuple(float(a) for a in data["alpha_grid"]), paths,
                   tuple(float(o) for o in data["threshold_offsets"]),
                   tuple(float(o) for o in data["right_hand_offsets"]),
                   {k: tuple(tuple(float(x) for x in r) for r in v) for k, v in data["texture_bounds"].items()},
                   float(data["min_probability"]),
                   {k: tuple(float(x) for x in v) for k, v in data["texture_medians"].items()},
                   tuple(float(x) for x in data["neighbour_steps"]), int(data["neighbours"]), int(data["knn"]),
                   float(data["min_knn_share"]), melody_weight)

    def pick_distance(self, features: np.ndarray, style: str, decoded: np.ndarray, sources: Optional[np.ndarray]
                      ) -> np.ndarray:
        """(N,) what the pick among passing candidates minimises: :meth:`texture_distance` of the candidates'
        features (N, F), less ``melody_weight`` times the melody F1 of each candidate (N, W, 2, 2, P) against its
        source window (N, W, 2, 2, P; :func:`~midistyle.musicstats.window_melody_f1`)."""
        distance = self.texture_distance(features, style)
        if self.melody_weight == 0:
            return distance
        if sources is None:
            raise ValueError("attribute_search with a melody weight needs the source windows")
        return distance - self.melody_weight * ms.window_melody_f1(sources, decoded)

    def texture_distance(self, features: np.ndarray, style: str) -> np.ndarray:
        """(N,) how far window features (N, F) lie from ``style``'s median training window, in band widths
        (``inf`` for a silent window)."""
        bounds = np.asarray(self.texture_bounds[style], float)
        width = np.maximum(bounds[:, 1] - bounds[:, 0], 1e-9)
        d = (np.abs(features - np.asarray(self.texture_medians[style], float)) / width).sum(axis=1)
        return np.nan_to_num(d, nan=np.inf)


@dataclass(frozen=True)
class TransferSettings:
    """How far to move: one direction's chosen settings (the CLI scales them with ``--strength``).

    Built only from params.yaml's ``transfer`` section and the settings the
    tune_transfer stage chose (:meth:`unmoved`, :meth:`ChosenSettings.for_direction`);
    no field has a default. A knob the method does not use is 0.
    """

    alpha: float  # attribute_vector: times the difference of the style means
    guided_steps: int  # classifier_guided: Adam steps on z
    guided_lr: float  # transfer.guided_lr
    guided_distance_weight: float  # transfer.guided_distance_weight
    search: Optional[SearchSpace]  # attribute_search: its candidates and accepted texture (None: other methods)
    reach: float  # attribute_search: its neighbour steps times this (1 as chosen; a --strength under 1 shortens them)

    @classmethod
    def unmoved(cls, guided_lr: float, guided_distance_weight: float,
                search: Optional[SearchSpace] = None) -> "TransferSettings":
        """No move yet (alpha 0, no guided steps), with the guided optimiser's settings from params.transfer."""
        return cls(alpha=0.0, guided_steps=0, guided_lr=guided_lr, guided_distance_weight=guided_distance_weight,
                   search=search, reach=1.0)

    def with_strength(self, strength: float) -> "TransferSettings":
        """``strength`` times the chosen alpha and guided steps (1 = as chosen, 0 = reconstruction); a strength under
        1 also shortens attribute_search's neighbour steps by that factor (they never pass a real target window)."""
        strength = check_strength(strength)
        return replace(self, alpha=self.alpha * strength, guided_steps=round(self.guided_steps * strength),
                       reach=self.reach * min(1.0, strength))

    def with_steps(self, steps: int) -> "TransferSettings":
        """Exactly ``steps`` guided steps (0 .. :data:`~midistyle.config.MAX_GUIDED_STEPS`)."""
        return replace(self, guided_steps=check_step_count(steps))

    def check_steps(self) -> "TransferSettings":
        """Itself, or a one-line error when the guided steps pass :data:`~midistyle.config.MAX_GUIDED_STEPS`."""
        if self.guided_steps > MAX_GUIDED_STEPS:
            raise UserError(f"--strength: asks for {self.guided_steps} classifier-guided steps, "
                            f"at most {MAX_GUIDED_STEPS}")
        return self


@dataclass(frozen=True)
class Job:
    """One output of a piece: ``method`` from style index ``source`` to ``target``, moved by ``settings``."""

    method: str
    source: int
    target: int
    settings: TransferSettings


# ---------------------------------------------------------------- windows
def piece_windows(piece: PieceRoll, spec: RollSpec) -> list[Window]:
    """Consecutive windows covering every bar of the piece, silent ones included.

    For bars that fit ``bars_per_window`` to a window this is
    ``iter_windows(hop_bars=bars_per_window, keep_empty=True)``. Where fewer
    bars fit (a long metre: 6/4, 12/8 ...), the next window starts at the bar
    after the last one held, so no bar is skipped in the stitched piece.
    """
    by_start = {w.start: w for w in iter_windows(piece, spec, hop_bars=1, keep_empty=True)}
    out: list[Window] = []
    end = 0
    for start in sorted(by_start):
        if start >= end:
            w = by_start[start]
            out.append(w)
            end = w.start + max(w.length, 1)
    return out


def audible(windows: list[Window], spec: RollSpec) -> np.ndarray:
    """(N,) bool: windows with at least ``min_notes_per_window`` notes (others stay silent)."""
    return np.array([w.notes >= spec.min_notes_per_window for w in windows], dtype=bool)


def audible_windows(piece: PieceRoll, spec: RollSpec) -> list[Window]:
    """The piece's windows (:func:`piece_windows`) that are transferred: the audible ones."""
    windows = piece_windows(piece, spec)
    return [w for w, k in zip(windows, audible(windows, spec)) if k]


# ---------------------------------------------------------------- the models
class StyleTransfer:
    """The trained VAE and latent classifier, ready to move pieces between styles."""

    def __init__(self, vae: StyleVAE, vae_ckpt: dict, classifier: LatentClassifier, regions: StyleRegions,
                 styles: list[str], device: torch.device | str = "cpu"):
        self.vae = vae.to(device).eval()
        self.classifier = classifier.to(device).eval()
        for p in self.classifier.parameters():
            p.requires_grad_(False)
        self.regions = regions
        self.styles = list(styles)
        self.threshold = float(vae_ckpt["threshold"])
        # P(onset) of a window's first frame at or below which a note sounding on from the window before is tied
        # (:func:`tie_windows`); the VAE's onset threshold until tune_transfer's choice is applied (:meth:`use`)
        self.hold_threshold = float(vae.onset_threshold)
        self.spec = vae_spec(vae_ckpt)
        self._transport: dict[tuple[int, int], torch.Tensor] = {}  # (source, target) -> the map's A (path_vectors)
        self._bank = None  # (latents (M, Z), their styles (M,), each style's weight (S,)): knn_share's, built once
        self.device = torch.device(device)

    @classmethod
    def load(cls, vae_path: str | Path = layout.VAE, classifier_path: str | Path = layout.CLASSIFIER,
             device: torch.device | str = "cpu") -> "StyleTransfer":
        """Load both checkpoints and check that they belong together."""
        vae, vae_ckpt = load_vae(vae_path, map_location=device)
        classifier, regions, clf_ckpt = load_classifier(classifier_path, map_location=device)
        styles = list(clf_ckpt["styles"])
        if "styles" in vae_ckpt and list(vae_ckpt["styles"]) != styles:
            raise UserError(f"{classifier_path}: knows styles {styles}, {vae_path} was trained on {list(vae_ckpt['styles'])} "
                            "(re-run `dvc repro train_classifier`)")
        if clf_ckpt["vae_latent_size"] != vae.cfg.latent_size:
            raise UserError(f"{classifier_path}: made for a latent size of {clf_ckpt['vae_latent_size']}, "
                            f"{vae_path} has {vae.cfg.latent_size} (re-run `dvc repro train_classifier`)")
        return cls(vae, vae_ckpt, classifier, regions, styles, device)

    def use(self, chosen: "ChosenSettings") -> "StyleTransfer":
        """Take on what tune_transfer chose for the model as a whole: the hold threshold of windows' first frames."""
        self.hold_threshold = chosen.hold_threshold
        return self

    def style_index(self, name: str) -> int:
        if name not in self.styles:
            raise UserError(f"unknown style {name!r}; the model knows: {', '.join(self.styles)}")
        return self.styles.index(name)

    # ------------------------------------------------------------ latent space
    def encode(self, windows: list[Window]) -> torch.Tensor:
        """Windows -> mu (N, Z)."""
        return self.encode_arrays(np.stack([w.roll for w in windows]), np.array([w.length for w in windows]))

    @torch.no_grad()
    def encode_arrays(self, rolls: np.ndarray, lengths: np.ndarray) -> torch.Tensor:
        """Windows (N, W, 2, 2, P) with their lengths (N,) -> mu (N, Z)."""
        out = []
        for lo in range(0, len(rolls), DECODE_BATCH):
            x = torch.as_tensor(rolls[lo : lo + DECODE_BATCH], device=self.device).float()
            lens = torch.as_tensor(lengths[lo : lo + DECODE_BATCH], dtype=torch.int64, device=self.device)
            out.append(self.vae.encode(x, lens)[0])
        return torch.cat(out)

    def move(self, mu: torch.Tensor, method: str, source: torch.Tensor, target: torch.Tensor,
             settings: TransferSettings) -> torch.Tensor:
        """Move latents ``mu`` (N, Z) from styles ``source`` (N,) to ``target`` (N,) by ``method``."""
        if method == RECONSTRUCTION:
            return mu
        if method in ("attribute_vector", "attribute_search"):  # attribute_search: its fallback, z at the cap
            means = self.regions.means.to(mu.device)
            return mu + settings.alpha * (means[target] - means[source])
        if method == "classifier_guided":
            return self._guided(mu, target, settings)
        raise UserError(f"unknown transfer method {method!r}; known: {', '.join(METHODS)}")

    def _guided(self, z0: torch.Tensor, target: torch.Tensor, s: TransferSettings) -> torch.Tensor:
        """Gradient steps on z towards the target class, penalised by the squared distance from z0."""
        return self.guided_path(z0, target, s, [s.guided_steps])[0]

    def guided_path(self, z0: torch.Tensor, target: torch.Tensor, s: TransferSettings,
                    checkpoints: list[int]) -> list[torch.Tensor]:
        """z after each of ``checkpoints`` (ascending step counts) of one guided optimisation.

        The loss is summed over rows, so each window moves as if optimised alone;
        the z after k steps is the same as a run of exactly k steps.
        """
        z = z0.detach().clone().requires_grad_(True)
        opt = torch.optim.Adam([z], lr=s.guided_lr)
        out = [z0.detach().clone() for k in checkpoints if k == 0]
        with torch.enable_grad():
            for step in range(1, max(checkpoints, default=0) + 1):
                loss = F.cross_entropy(self.classifier(z), target, reduction="sum")
                loss = loss + s.guided_distance_weight * ((z - z0) ** 2).sum()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                out.extend(z.detach().clone() for k in checkpoints if k == step)
        return out

    @torch.no_grad()
    def decode_windows(self, z: torch.Tensor, thresholds: list) -> tuple[list[np.ndarray], np.ndarray]:
        """Free decoding at each of ``thresholds`` (each in (0, 1), or a (right hand, left hand) pair of them):
        z (N, Z) -> bool windows (N, W, 2, 2, P) per threshold, and the windows' holds (N, 2, P), the same at
        every threshold: the cells of the first frame that continue a note sounding just before the window, where
        one does (:func:`tie_windows`). A window is decoded alone, so every note of its first frame starts there;
        the decoder's P(onset | sounding) of that frame says which of them it would hold: those at or below
        ``hold_threshold``. The rule :meth:`StyleVAE.decide` applies inside a window (the onset threshold) holds
        too few there: at a window's start the decoder is less sure of a held note (val renaissance pieces: 0.59
        of the first frame's notes held or struck as in the source at 0.5, 0.69 at 0.85), so tune_transfer
        chooses its own threshold on validation pieces (:func:`midistyle.tuning.choose_hold_threshold`).

        A decoder that reads only z runs once per batch for all thresholds (its probabilities do not depend on
        the threshold); an autoregressive one, whose next frames depend on its decided ones, once per
        threshold."""
        W, P = self.spec.window_steps, self.spec.n_pitches
        out: list[list[np.ndarray]] = [[] for _ in thresholds]
        holds = []
        # per hand: (2, 1) against a frame's cells (2, P)
        cuts = [torch.as_tensor(th, dtype=torch.float32, device=z.device).reshape(-1, 1) for th in thresholds]
        for lo in range(0, len(z), DECODE_BATCH):
            zb = z[lo : lo + DECODE_BATCH]
            if self.vae.cfg.autoregressive:
                rolls = [self.vae.generate(zb, steps=W, threshold=th) > th[..., None] for th in cuts]
                # the first frame reads no decided frame: teacher forcing on silence gives its probabilities
                onset = self.vae.cell_probs(self.vae.decode(zb, zb.new_zeros(len(zb), W, 2, 2, P))[:, :1])[1]
            else:
                sounding, onset = self.vae.probabilities(zb, steps=W)
                rolls = [self.vae.decide(sounding, onset, torch.zeros_like(sounding[:, 0]), th)[:, :W] > 0.5
                         for th in cuts]
            holds.append((onset[:, 0] <= self.hold_threshold).cpu().numpy())
            for got, roll in zip(out, rolls):
                got.append(roll.cpu().numpy())
        empty = np.zeros((0, W, 2, 2, P), bool)
        return ([np.concatenate(got) if got else empty for got in out],
                np.concatenate(holds) if holds else np.zeros((0, 2, P), bool))

    @torch.no_grad()
    def style_probs(self, mu: torch.Tensor) -> np.ndarray:
        """The latent classifier's style probabilities (N, S)."""
        return torch.softmax(self.classifier(mu), -1).cpu().numpy()

    # ------------------------------------------------------------ pieces
    def transfer_piece(self, piece: PieceRoll, jobs: list[Job]) -> list[np.ndarray]:
        """One roll per job, each as long as the piece."""
        return self.transfer_pieces([piece], jobs)[0]

    def transfer_pieces(self, pieces: list[PieceRoll], jobs: list[Job]) -> list[list[np.ndarray]]:
        """Per piece, one roll per job: every audible window of every piece is encoded, moved by
        every job and decoded in one batch (the decoder runs step by step: few, full batches are fast)."""
        windows = [audible_windows(p, self.spec) for p in pieces]
        flat = [w for ws in windows for w in ws]
        decoded = holds = None
        if flat:
            mu = self.encode(flat)
            plain = [job for job in jobs if job.method != "attribute_search"]
            if plain:
                moved, moved_holds = self.decode_windows(torch.cat([self._moved(mu, job) for job in plain]),
                                                         [self.threshold])
            lengths = np.array([w.length for w in flat])
            sources = np.stack([w.roll for w in flat]) if any(j.method == "attribute_search" for j in jobs) else None
            parts, i = [], 0
            for job in jobs:
                if job.method == "attribute_search":
                    parts.append(self.search(mu, lengths, job, sources=sources))
                else:
                    rows = slice(i * len(flat), (i + 1) * len(flat))
                    parts.append((moved[0][rows], moved_holds[rows]))
                    i += 1
            decoded, holds = (np.concatenate([p[k] for p in parts]) for k in range(2))
        out, lo, n = [], 0, len(flat)
        for piece, ws in zip(pieces, windows):
            total = len(piece.roll)
            rolls = []
            for j in range(len(jobs)):
                mine = [j * n + lo + i for i in range(len(ws))]
                rolls.append(stitch_tied([(w.start, w.length, decoded[k]) for w, k in zip(ws, mine)],
                                         holds[mine] if ws else [], total, self.spec.n_pitches))
            out.append(rolls)
            lo += len(ws)
        return out

    # ------------------------------------------------------------ attribute_search
    def search(self, mu: torch.Tensor, lengths: np.ndarray, job: Job, sources: Optional[np.ndarray] = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """``attribute_search``: per window :func:`pick_candidates`'s choice (module docstring), as decoded
        windows (N, W, 2, 2, P) cleared past each window's length, with their holds (N, 2, P)
        (:meth:`decode_windows`). ``sources`` (N, W, 2, 2, P): the windows ``mu`` encodes, which a search with a
        melody weight needs (:meth:`SearchSpace.pick_distance`)."""
        space = job.settings.search
        if job.settings.alpha == 0:  # strength 0: the plain reconstruction
            rolls, holds = self.decode_windows(mu, [self.threshold])
            return rolls[0], holds
        for step in self.search_steps(mu, lengths, job.source, job.target, space.alphas(job.settings.alpha), space,
                                      job.settings.reach, sources=sources):
            pass
        return step.windows, step.holds

    def search_steps(self, mu: torch.Tensor, lengths: np.ndarray, source: int, target: int, alphas: list[float],
                     space: SearchSpace, reach: float, sources: Optional[np.ndarray] = None
                     ) -> Iterator["SearchStep"]:
        """attribute_search alpha by alpha (``alphas`` ascending): after each, every window's choice under that
        alpha as the cap (:class:`SearchStep`; its path-move arrays are updated in place by the next alpha).

        An alpha's candidates are decoded only for the windows that no gentler alpha settled: their choice stays;
        the others keep the first path move that misses least over every alpha so far (``path_windows``) - or,
        in ``windows``, the neighbour moves' choice (:meth:`neighbour_choice`, ``reach`` times the steps) where
        it misses no more (a passing one always). The neighbour moves are tried once, for the windows the first
        alpha with any unsettled leaves unsettled (every later alpha's unsettled windows are among them)."""
        ladder = Ladder(len(mu), self.spec.window_steps, self.spec.n_pitches)
        near = None  # (rows, windows, holds, miss) of the neighbour moves
        for alpha in alphas:  # one alpha's thresholds at a time: :func:`pick_candidates`
            todo = ladder.todo
            if len(todo):
                ladder.climb(self.candidates(mu[todo], lengths[todo], source, target, alpha, space, lazy=True,
                                             sources=rows_of(sources, todo)))
                todo = ladder.todo
                if near is None and len(todo) and space.neighbour_steps and reach > 0:
                    near = (todo, *self.neighbour_choice(mu[todo], lengths[todo], source, target, space, reach,
                                                         sources=rows_of(sources, todo)))
            windows, window_holds = ladder.windows, ladder.holds
            if near is not None and len(todo):
                rows, near_windows, near_holds, near_miss = near
                at = np.searchsorted(rows, todo)  # todo: ascending, among rows
                take = near_miss[at] <= ladder.miss[todo]
                windows, window_holds = windows.copy(), window_holds.copy()
                windows[todo[take]], window_holds[todo[take]] = near_windows[at[take]], near_holds[at[take]]
            yield SearchStep(alpha, windows, window_holds, ladder.windows)

    def search_candidates(self, mu: torch.Tensor, lengths: np.ndarray, source: int, target: int, alphas: list[float],
                          space: SearchSpace, sources: Optional[np.ndarray] = None
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Every candidate for every window, alphas (ascending) outside, then paths, then thresholds (the
        checkpoint's first) inside: decoded (C, N, W, 2, 2, P), miss (C, N), pick distance (C, N;
        :meth:`SearchSpace.pick_distance`) and holds (C, N, 2, P) (what tune_transfer sweeps)."""
        cands = [c for a in alphas for c in self.candidates(mu, lengths, source, target, a, space, sources=sources)]
        return tuple(np.stack([c[k] for c in cands]) for k in range(4))

    def path_vectors(self, mu: torch.Tensor, source: int, target: int, paths: tuple[str, ...]) -> list[torch.Tensor]:
        """Per path of ``paths`` (:data:`~midistyle.config.SEARCH_PATHS`), the move d (N, Z) of each latent
        ``mu`` (N, Z) at alpha 1: ``mean_shift`` the difference of the style means, ``transport`` the
        optimal-transport map's move ``m_t + A (mu - m_s) - mu`` (module docstring)."""
        means = self.regions.means.to(mu.device)
        shift = means[target] - means[source]
        out = []
        for path in paths:
            if path == "mean_shift":
                out.append(shift.expand_as(mu))
            elif path == "transport":
                key = (source, target)
                if key not in self._transport:
                    self._transport[key] = self.regions.transport(source, target).to(mu.device)
                offset = mu - means[source]  # (N, Z)
                out.append(shift + offset @ self._transport[key].T - offset)
            else:
                raise UserError(f"unknown search path {path!r}; known: {', '.join(SEARCH_PATHS)}")
        return out

    def candidates(self, mu: torch.Tensor, lengths: np.ndarray, source: int, target: int, alpha: float,
                   space: SearchSpace, lazy: bool = False, sources: Optional[np.ndarray] = None
                   ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
        """The candidates of one alpha, one per path and threshold of ``space`` (paths outside, the checkpoint's
        threshold first inside): the path's move at ``alpha`` decoded at the threshold, cleared past each
        window's length (N, W, 2, 2, P); how far it misses (N,), 0 when it passes: re-encoded, the latent
        classifier assigns it to the target with at least ``space.min_probability`` (else +1), and its texture
        (:data:`~midistyle.musicstats.WINDOW_FEATURES`) lies inside the target's training band (else + the distance
        outside it, in band widths; a silent window misses by inf);
        what the pick among passing ones minimises (N,): its texture's distance from the target's median, less
        the melody weight times its melody F1 with the source window (:meth:`SearchSpace.pick_distance`); and its
        holds (N, 2, P) (:meth:`decode_windows`). ``lazy``: only the misses that decide the search's choice
        (:meth:`classifier_misses`)."""
        if source == target:
            raise UserError("attribute_search: the source and target styles are the same")
        return self.tested([mu + alpha * d for d in self.path_vectors(mu, source, target, space.paths)], lengths,
                           target, space, lazy, sources)

    def neighbour_vectors(self, mu: torch.Tensor, source: int, target: int, k: int) -> list[torch.Tensor]:
        """The moves d (N, Z) from each latent ``mu`` (N, Z) to the ``k`` latents of the target's sampled training
        windows nearest to its transport landing point ``T(mu)`` (nearest first): at step 1, a real target window."""
        landing = mu + self.path_vectors(mu, source, target, ("transport",))[0]
        bank = self.regions.samples[target].to(mu.device)  # (M, Z)
        nearest = torch.cdist(landing, bank).topk(min(k, len(bank)), dim=1, largest=False).indices  # (N, k)
        return [bank[nearest[:, i]] - mu for i in range(nearest.shape[1])]

    def neighbour_choice(self, mu: torch.Tensor, lengths: np.ndarray, source: int, target: int, space: SearchSpace,
                         reach: float, sources: Optional[np.ndarray] = None
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The neighbour moves (module docstring) at ``reach`` times each step: per window, at the smallest step
        where one passes, the passing one nearest the target's median texture, else the first that misses least
        (:func:`pick_candidates` over every step): decoded windows (N, W, 2, 2, P), holds (N, 2, P) and the
        choice's miss (N,). A step's candidates are decoded only for the windows no smaller step settled."""
        moves = self.neighbour_vectors(mu, source, target, space.neighbours)
        ladder = Ladder(len(mu), self.spec.window_steps, self.spec.n_pitches)
        for step in space.neighbour_steps:
            todo = ladder.todo
            if len(todo):
                ladder.climb(self.tested([mu[todo] + reach * step * d[todo] for d in moves], lengths[todo], target,
                                         space, lazy=True, sources=rows_of(sources, todo)))
        return ladder.windows, ladder.holds, ladder.miss

    def tested(self, latents: list[torch.Tensor], lengths: np.ndarray, target: int, space: SearchSpace, lazy: bool,
               sources: Optional[np.ndarray] = None) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
        """Candidates of ``latents`` (each (N, Z)), latents outside, ``space``'s thresholds (the checkpoint's first)
        inside: what :meth:`candidates` returns for them."""
        inside = np.arange(self.spec.window_steps)[:, None, None, None] < np.asarray(lengths)[:, None, None, None, None]
        bounds = np.asarray(space.texture_bounds[self.styles[target]], float)  # (F features, lo/hi)
        thresholds = space.thresholds(self.threshold)
        decoded = [(dec & inside, holds) for z in latents
                   for rolls, holds in [self.decode_windows(z, thresholds)] for dec in rolls]
        textures, distances = [], []
        for dec, _ in decoded:
            features = ms.window_features(dec, lengths, self.spec.steps_per_beat)
            silent = ~dec.reshape(len(dec), -1).any(axis=1)  # a sounding source window: never silence while
            # a candidate has notes, however far their texture lies from the band
            textures.append(np.where(silent, np.inf, texture_miss(features, bounds)))
            distances.append(space.pick_distance(features, self.styles[target], dec, sources))
        miss = self.classifier_misses([dec for dec, _ in decoded], lengths, target, np.stack(textures), space, lazy)
        return [(dec, miss[c], distances[c], holds) for c, (dec, holds) in enumerate(decoded)]

    def classifier_misses(self, decoded: list[np.ndarray], lengths: np.ndarray, target: int, texture: np.ndarray,
                          space: SearchSpace, lazy: bool) -> np.ndarray:
        """Candidates' misses (C, N): texture miss (C, N) + 1 where, re-encoding the window, the latent classifier
        does not give the target at least ``space.min_probability``, or fewer than ``space.min_knn_share`` of the
        ``space.knn`` training latents nearest it are the target's (:meth:`knn_share`; 0: not asked). Every
        sounding candidate is re-encoded, or with ``lazy`` only those that can decide :meth:`search_steps`'s
        choice: first those inside the texture band (they may pass), then, for each window none of them passes,
        those whose texture miss is at most the least miss known (one of them misses least). The others keep
        texture + 1, above their window's least miss, so the choice is the same as with every miss known."""
        C, N = texture.shape
        miss = texture + 1.0
        asked = np.zeros((C, N), bool)
        ask = (texture == 0) if lazy else np.isfinite(texture)
        for _ in range(2 if lazy else 1):
            cs, ns = np.nonzero(ask)  # the candidates asked, in one list: encoded DECODE_BATCH at a time, not
            for lo in range(0, len(cs), DECODE_BATCH):  # one small batch per candidate (x3 faster on the corpus)
                c, n = cs[lo : lo + DECODE_BATCH], ns[lo : lo + DECODE_BATCH]
                z = self.encode_arrays(np.stack([decoded[i][j] for i, j in zip(c, n)]), lengths[n])
                off = off_target(self.style_probs(z), target, space.min_probability)
                if space.min_knn_share > 0 and not off.all():  # the vote only where the classifier passes it
                    off[~off] = self.knn_share(z[torch.as_tensor(~off)], target, space.knn) < space.min_knn_share
                miss[c, n] = texture[c, n] + off
            asked |= ask
            settled = (miss == 0).any(axis=0)
            ask = ~asked & ~settled[None] & np.isfinite(texture) & (texture <= miss.min(axis=0)[None])
        return miss

    @torch.no_grad()
    def knn_share(self, z: torch.Tensor, target: int, k: int) -> np.ndarray:
        """(N,) of the ``k`` sampled training latents (every style's, :attr:`StyleRegions.samples`) nearest each
        latent z (N, Z), the share from ``target``, each weighted by one over its style's sample count (a style
        with more samples gets no more say). The latent classifier draws one border between two styles; a
        window re-encoded just past it, far from any real window of the target, has few target neighbours."""
        if self._bank is None:
            samples = self.regions.samples
            styles = torch.cat([torch.full((len(b),), i, dtype=torch.long) for i, b in enumerate(samples)])
            self._bank = (torch.cat(list(samples)).to(self.device), styles.to(self.device),
                          torch.tensor([1.0 / max(len(b), 1) for b in samples], device=self.device))
        bank, style, weight = self._bank
        out = []
        for lo in range(0, len(z), DECODE_BATCH):
            nearest = style[torch.cdist(z[lo : lo + DECODE_BATCH], bank).topk(min(k, len(bank)), dim=1,
                                                                               largest=False).indices]  # (n, k)
            w = weight[nearest]
            out.append(((w * (nearest == target)).sum(1) / w.sum(1)).cpu().numpy())
        return np.concatenate(out) if out else np.zeros(0)

    def _moved(self, mu: torch.Tensor, job: Job) -> torch.Tensor:
        src = torch.full((len(mu),), job.source, dtype=torch.long, device=mu.device)
        tgt = torch.full((len(mu),), job.target, dtype=torch.long, device=mu.device)
        return self.move(mu, job.method, src, tgt, job.settings)

    def detect_style(self, piece: PieceRoll) -> tuple[int, np.ndarray]:
        """The latent classifier's verdict on a whole piece: mean probabilities over its audible windows."""
        windows = audible_windows(piece, self.spec)
        if not windows:
            raise UserError("the piece has no window with notes")
        probs = self.style_probs(self.encode(windows)).mean(axis=0)
        return int(probs.argmax()), probs

    def sample_latents(self, style: int, n_windows: int, seed: int, smoothness: float) -> torch.Tensor:
        """(n_windows, Z) latents of the style's Gaussian, the noise an AR(1) walk seeded by ``seed``."""
        gen = torch.Generator().manual_seed(int(seed))
        Z = self.regions.means.shape[1]
        e = torch.randn(Z, generator=gen)
        noise = [e]
        for _ in range(n_windows - 1):
            e = smoothness * e + math.sqrt(1 - smoothness**2) * torch.randn(Z, generator=gen)
            noise.append(e)
        return self.regions.means[style] + torch.stack(noise) @ self.regions.chol[style].T  # (N, Z)

    def generate(self, style: int, bars: int, seed: int, tempo: float = 100.0, smoothness: float = 0.6) -> tuple[np.ndarray, Timing]:
        """New music in a style: latents sampled from the style's Gaussian, one window at a time.

        Consecutive windows' noise is correlated (an AR(1) walk with coefficient
        ``smoothness``), so the piece drifts instead of jumping; each window's
        latent is still distributed as the style's Gaussian.
        """
        spec = self.spec
        bar_steps = spec.bar_steps
        n_windows = -(-bars // spec.bars_per_window)
        rolls, holds = self.decode_windows(self.sample_latents(style, n_windows, seed, smoothness).to(self.device),
                                           [self.threshold])
        W = spec.bars_per_window * bar_steps
        total = bars * bar_steps
        roll = stitch_tied([(i * W, W, rolls[0][i]) for i in range(n_windows)], holds, total, spec.n_pitches)
        return roll, Timing([(0, float(tempo))], [(0, spec.max_beats_per_bar, 4)])


class Ladder:
    """attribute_search's choice rung by rung (its alphas, or its neighbour steps, ascending): a window keeps the
    choice of the first rung where one of its candidates passes (:func:`pick_candidates`), else the first
    candidate that misses least over every rung so far."""

    def __init__(self, n: int, steps: int, n_pitches: int):
        self.windows = np.zeros((n, steps, 2, 2, n_pitches), bool)  # (N, W, 2, 2, P) each window's choice
        self.holds = np.zeros((n, 2, n_pitches), bool)  # (N, 2, P) its holds
        self.miss = np.full(n, np.inf)  # (N,) how far it misses (0: it passes)
        self.kept = np.zeros(n, bool)  # whether a choice was kept (every candidate of a window may miss by inf)
        self.todo = np.arange(n)  # the windows no rung settled yet, ascending

    def climb(self, block: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]) -> None:
        """One rung's candidates of the windows ``todo`` (:meth:`StyleTransfer.candidates`)."""
        todo = self.todo
        miss, dist = (np.stack([c[k] for c in block]) for k in (1, 2))  # (C, n) each
        settled = (miss == 0).any(axis=0)
        least = miss.min(axis=0)
        better = ~settled & ((least < self.miss[todo]) | ~self.kept[todo])
        choice = np.full(len(todo), -1)  # (n,) the candidate each window takes, -1: it keeps its choice
        choice[settled] = pick_index(miss[:, settled], dist[:, settled], len(block))
        choice[better] = np.argmin(miss[:, better], axis=0)
        for c in np.unique(choice[choice >= 0]):  # copied candidate by candidate: the rung's candidates are
            cols = np.flatnonzero(choice == c)  # not stacked into one more (C, n, W, 2, 2, P) array
            self.windows[todo[cols]], self.holds[todo[cols]] = block[c][0][cols], block[c][3][cols]
        self.miss[todo[settled]] = 0.0
        self.miss[todo[better]] = least[better]
        self.kept[todo[better]] = True
        self.todo = todo[~settled]


@dataclass(frozen=True)
class SearchStep:
    """attribute_search's choice with one alpha as the cap (:meth:`StyleTransfer.search_steps`)."""

    alpha: float
    windows: np.ndarray  # (N, W, 2, 2, P) the choice: a path move's, else the neighbour moves' where they miss no more
    holds: np.ndarray  # (N, 2, P) its holds
    path_windows: np.ndarray  # (N, W, 2, 2, P) the choice among path moves alone (tune_transfer chooses the cap on it)


def rows_of(sources: Optional[np.ndarray], rows: np.ndarray) -> Optional[np.ndarray]:
    """The source windows of ``rows`` (None: none given)."""
    return None if sources is None else sources[rows]


def stitch_tied(windows: list[tuple[int, int, np.ndarray]], holds, total_steps: int, n_pitches: int) -> np.ndarray:
    """Windows decoded one by one, ``[(start, length, roll)]`` with their holds (each (2, P)), stitched into a
    piece of ``total_steps`` (:func:`~midistyle.roll.stitch_windows`) and tied over their starts
    (:func:`tie_windows`): how every decoded piece is put together (none at all: a silent piece)."""
    if not windows:
        return np.zeros((total_steps, 2, 2, n_pitches), bool)
    return tie_windows(stitch_windows(windows, total_steps), [w[0] for w in windows], holds)


def tie_windows(roll: np.ndarray, starts: list[int], holds) -> np.ndarray:
    """A piece stitched from windows decoded one by one (T, 2, 2, P), where window ``i`` starts at step
    ``starts[i]`` with holds ``holds[i]`` (2, P) (:meth:`StyleTransfer.decode_windows`) -> the same roll with
    each note that sounds on both sides of a window's start, and that the later window holds, tied over it (its
    onset there cleared): the rule the decoder applies inside a window, where it knows the frame before.
    Without it every note sounding across a window boundary is struck again (issue 9's "stuttering repeats")."""
    for start, hold in zip(starts, holds):
        if 0 < start < len(roll):
            roll[start, :, ONSET] &= ~tied(roll[start - 1, :, SOUNDING], roll[start, :, SOUNDING], hold)
    return roll


def tied(before: np.ndarray, first: np.ndarray, hold) -> np.ndarray:
    """The rule of :func:`tie_windows`: sounding cells of the frame before a window's start and of its first frame
    (..., 2, P), and the window's holds -> the cells tied over the start (their onset there cleared)."""
    return before & first & np.asarray(hold, bool)


def off_target(probs: np.ndarray, target: int, min_probability: float) -> np.ndarray:
    """(N,) bool: the latent classifier's probabilities (N, S) do not place the window in ``target``: it is not
    their choice, or its probability is under ``min_probability`` (argmax alone is too easy to satisfy: windows
    just over the border between two styles' regions still sound like the source)."""
    return (probs.argmax(-1) != target) | (probs[:, target] < min_probability)


def texture_miss(features: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """How far features (N, F) lie outside their bands (F, 2), summed in band widths (0 inside; a ``nan``
    feature, a silent window, misses by 1)."""
    width = np.maximum(bounds[:, 1] - bounds[:, 0], 1e-9)
    out = np.maximum(bounds[:, 0] - features, 0) + np.maximum(features - bounds[:, 1], 0)
    return np.nan_to_num(out / width, nan=1.0).sum(axis=1)


def pick_candidates(decoded: np.ndarray, miss: np.ndarray, distance: np.ndarray, per_alpha: int) -> np.ndarray:
    """attribute_search's choice per window (:func:`pick_index`): decoded (C, N, ...) -> (N, ...)."""
    return decoded[pick_index(miss, distance, per_alpha), np.arange(miss.shape[1])]


def pick_index(miss: np.ndarray, distance: np.ndarray, per_alpha: int) -> np.ndarray:
    """attribute_search's choice per window: miss (C, N) and texture distance (C, N) of candidates ordered alpha
    by alpha (ascending), ``per_alpha`` thresholds each -> the chosen candidate (N,).

    At the smallest alpha where some candidate passes (miss 0), the passing one nearest the target's median
    texture (the first of equals); where none passes, the first that misses least."""
    passing = miss == 0
    alpha = np.arange(miss.shape[0])[:, None] // per_alpha
    first = np.where(passing, alpha, np.iinfo(np.int64).max).min(axis=0)  # (N,) the gentlest passing alpha
    nearest = np.argmin(np.where(passing & (alpha == first), distance, np.inf), axis=0)
    return np.where(passing.any(axis=0), nearest, np.argmin(miss, axis=0))


# ---------------------------------------------------------------- chosen settings
SETTINGS_KIND = "transfer_settings"


@dataclass(frozen=True)
class ChosenSettings:
    """The settings the tune_transfer stage chose per direction on validation pieces."""

    styles: list[str]
    guided_lr: float
    guided_distance_weight: float
    chosen: dict[str, dict[str, float]]  # method -> Direction.key -> alpha or guided steps
    search: Optional[SearchSpace]  # attribute_search's candidates and accepted texture
    hold_threshold: float  # StyleTransfer.hold_threshold: chosen for the model, every direction and method
    path: str  # the file they were read from (for errors)

    def for_direction(self, method: str, source: str, target: str) -> TransferSettings:
        """The settings of one direction: the method's chosen knob, the other one 0 (a reconstruction: both 0)."""
        base = TransferSettings.unmoved(self.guided_lr, self.guided_distance_weight, self.search)
        if method == RECONSTRUCTION:
            return base
        direction = Direction(source, target).key
        value = self.chosen.get(method, {}).get(direction)
        if value is None:
            raise UserError(f"{self.path}: no setting chosen for {method} {direction} "
                            "(re-run `dvc repro tune_transfer`)")
        if KNOBS[method] == "alpha":
            return replace(base, alpha=float(value))
        return replace(base, guided_steps=int(value))


def load_chosen_settings(path: str | Path, styles: list[str] | None = None) -> ChosenSettings:
    """Read ``models/transfer_settings.json``; a one-line error when missing, foreign or for other styles."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no chosen transfer settings (run `dvc repro tune_transfer` first)")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not a transfer settings file ({type(exc).__name__})") from None
    if not isinstance(data, dict) or data.get("kind") != SETTINGS_KIND:
        raise UserError(f"{path}: not a transfer settings file")
    if styles is not None and list(data["styles"]) != list(styles):
        raise UserError(f"{path}: chosen for styles {data['styles']}, the model knows {list(styles)} "
                        "(re-run `dvc repro tune_transfer`)")
    try:
        search = SearchSpace.from_json(data["search"])
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"{path}: no valid attribute_search space ({type(exc).__name__}: {exc}; "
                        "re-run `dvc repro tune_transfer`)") from None
    hold = data.get("hold_threshold")
    hold = hold.get("value") if isinstance(hold, dict) else None
    if isinstance(hold, bool) or not isinstance(hold, (int, float)) or not 0 < hold <= 1:
        raise UserError(f"{path}: no hold threshold in (0, 1] (written by an older tune_transfer; "
                        "re-run `dvc repro tune_transfer`)")
    return ChosenSettings(list(data["styles"]), float(data["guided_lr"]), float(data["guided_distance_weight"]),
                          data["chosen"], search, float(hold), str(path))


# ---------------------------------------------------------------- files
def piece_name(file: str, style: str) -> str:
    """A file name for a source piece: its path inside the style's folder, with '/' as '__'."""
    parts = Path(file).with_suffix("").parts
    if len(parts) > 1 and parts[0] == style:
        parts = parts[1:]
    return "__".join(parts) + ".mid"


def output_path(method: str, source: str, target: str, file: str) -> str:
    """Where a job's MIDI goes, relative to the transfers folder."""
    name = piece_name(file, source)
    if method == RECONSTRUCTION:
        return f"{RECONSTRUCTION}/{source}/{name}"
    return f"{method}/{Direction(source, target).key}/{name}"


def write_roll(roll: np.ndarray, spec: RollSpec, timing: Timing, path: str | Path) -> Path:
    return write_midi(roll_to_midi(roll, spec, timing), path)


def read_manifest(path: str | Path) -> list[dict]:
    """The transfer stage's manifest (``data/transfers/manifest.csv``)."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no transfer manifest (run `dvc repro transfer` first)")
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def select_test_pieces(raw_dir: str | Path, splits_path: str | Path, styles: list[str], cap: int | None,
                       seed: int) -> dict[str, list[str]]:
    """Test files per style (``data/splits.json``), a seeded choice of ``cap`` when capped."""
    return select_pieces(raw_dir, splits_path, styles, cap, seed, "test")


def select_pieces(raw_dir: str | Path, splits_path: str | Path, styles: list[str], cap: int | None, seed: int,
                  split: str) -> dict[str, list[str]]:
    """Files of ``split`` per style (``data/splits.json``), a seeded choice of ``cap`` when capped."""
    splits_path = Path(splits_path)
    if not splits_path.exists():
        raise UserError(f"{splits_path}: no splits (run `dvc repro extract` first)")
    chosen = set(json.loads(splits_path.read_text())[split])
    by_style: dict[str, list[str]] = {s: [] for s in styles}
    for row in read_raw_manifest(Path(raw_dir)):
        if row.file in chosen and row.style in by_style:
            by_style[row.style].append(row.file)
    label = "transfer" if split == "test" else f"transfer-{split}"  # test keeps its historical seed string
    for style, files in by_style.items():
        files.sort()
        if cap is not None and len(files) > cap:
            by_style[style] = sorted(random.Random(f"{seed}:{label}:{style}").sample(files, cap))
    return by_style


# ---------------------------------------------------------------- the transfer stage
def transfer_stage(params, raw_dir: str | Path = layout.RAW, splits_path: str | Path = layout.SPLITS,
                   vae_path: str | Path = layout.VAE, classifier_path: str | Path = layout.CLASSIFIER,
                   out_dir: str | Path = layout.TRANSFERS,
                   settings_path: str | Path = layout.TRANSFER_SETTINGS) -> dict:
    """Transfer every test piece to every other style by every method, plus its reconstruction,
    with the settings chosen per direction on validation pieces (``models/transfer_settings.json``).

    Output is built in ``<out_dir>.partial`` and renamed into place at the end.
    A piece that fails is recorded in the manifest (status ``failed``, the
    error) and the batch goes on; the stage fails only when more than
    ``transfer.max_failed_share`` of the pieces failed.
    """
    t0 = time.perf_counter()
    tp = params.transfer
    model = StyleTransfer.load(vae_path, classifier_path)
    chosen = load_chosen_settings(settings_path, model.styles)
    model.use(chosen)
    pieces = select_test_pieces(raw_dir, splits_path, model.styles, tp.max_pieces_per_style, params.seed)
    out_dir = Path(out_dir)
    rows: list[dict] = []
    with staged_dir(out_dir) as tmp:
        for source, files in pieces.items():
            jobs = style_jobs(model, chosen, source, tp.methods)
            for lo in tqdm(range(0, len(files), PIECES_PER_BATCH), desc=f"transfer {source}", unit="batch",
                           mininterval=1.0, file=sys.stderr):
                rows += _transfer_batch(model, files[lo : lo + PIECES_PER_BATCH], jobs, Path(raw_dir), tmp)
        failed = len({r["source_file"] for r in rows if r["status"] == "failed"})
        n_pieces = sum(len(f) for f in pieces.values())
        if n_pieces == 0:
            raise UserError(f"{splits_path}: no test pieces of the styles {model.styles}")
        if failed / n_pieces > tp.max_failed_share:
            raise UserError(f"{failed} of {n_pieces} pieces failed to transfer (> transfer.max_failed_share "
                            f"{tp.max_failed_share:.0%}); see the log")
        _write_manifest(tmp / "manifest.csv", rows)
        summary = {"pieces": n_pieces, "pieces_failed": failed, "outputs": sum(r["status"] == "ok" for r in rows),
                   "methods": list(tp.methods), "styles": model.styles,
                   "pieces_per_style": {s: len(f) for s, f in pieces.items()}, "chosen": chosen.chosen,
                   "wall_seconds": round(time.perf_counter() - t0, 1)}
        atomic_write_json(tmp / "summary.json", summary)
    log.info("transfer: %d pieces (%d failed), %d outputs in %.1f s", n_pieces, failed, summary["outputs"],
             summary["wall_seconds"])
    return summary


def style_jobs(model: StyleTransfer, chosen: ChosenSettings, source: str, methods: list[str]) -> list[Job]:
    """A piece's jobs: its reconstruction, then every method to every other style with its chosen settings."""
    s = model.style_index(source)
    jobs = [Job(RECONSTRUCTION, s, s, chosen.for_direction(RECONSTRUCTION, source, source))]
    for t, target in enumerate(model.styles):
        if t != s:
            jobs += [Job(m, s, t, chosen.for_direction(m, source, target)) for m in methods]
    return jobs


_PIECE_ERRORS = (UserError, OSError, ValueError, RuntimeError)  # one piece (or batch) fails; recorded, counted


def _transfer_batch(model: StyleTransfer, files: list[str], jobs: list[Job], raw_dir: Path, tmp: Path) -> list[dict]:
    """Manifest rows of a batch of pieces: read each, transfer them together, write each."""

    rows, read = [], {}
    for file in files:
        try:
            read[file] = read_piece(raw_dir / file, model.spec)
        except _PIECE_ERRORS as exc:
            rows += _failed_rows(model, jobs, file, exc)
    try:
        outputs = model.transfer_pieces(list(read.values()), jobs)
    except _PIECE_ERRORS as exc:
        return rows + [r for file in read for r in _failed_rows(model, jobs, file, exc)]
    for (file, piece), rolls in zip(read.items(), outputs):
        try:
            rows += _write_outputs(model, jobs, file, piece, rolls, tmp)
        except _PIECE_ERRORS as exc:
            rows += _failed_rows(model, jobs, file, exc)
    return rows


def _write_outputs(model: StyleTransfer, jobs: list[Job], file: str, piece: PieceRoll, rolls: list[np.ndarray],
                   tmp: Path) -> list[dict]:
    n_windows = len(piece_windows(piece, model.spec))
    rows = []
    for job, roll in zip(jobs, rolls):
        rel = output_path(job.method, model.styles[job.source], model.styles[job.target], file)
        write_roll(roll, model.spec, piece.timing, tmp / rel)
        rows.append(_row(job, model.styles, file, rel, n_windows, "ok", ""))
    return rows


def _failed_rows(model: StyleTransfer, jobs: list[Job], file: str, exc: Exception) -> list[dict]:
    log.warning("transfer of %s failed: %s", file, exc)
    return [_row(job, model.styles, file, "", 0, "failed", f"{type(exc).__name__}: {exc}") for job in jobs]


def _row(job: Job, styles: list[str], file: str, rel: str, windows: int, status: str, error: str) -> dict:
    return {"method": job.method, "source_style": styles[job.source], "target_style": styles[job.target],
            "source_file": file, "output_file": rel, "windows": windows, "status": status, "error": error}


def _write_manifest(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(path, buf.getvalue().encode())
