"""Style transfer of whole pieces, shared by the ``transfer`` stage and the ``midistyle`` command.

A piece is cut into consecutive, non-overlapping windows of
``bars_per_window`` bars (:func:`piece_windows`), every window is encoded to
its latent ``mu``, the latent is moved towards the target style, decoded
*freely* (the decoder sees only z, never the source) with the checkpoint's
decision threshold, and the windows are stitched back into one roll written
with the source's tempo and metre map.

Ways to move the latent (:data:`METHODS`, plus ``reconstruction``: no move):

* ``attribute_vector``: ``z = mu + alpha * (mean_mu[target] - mean_mu[source])``,
  the means taken over the training split's windows (stored in the latent
  classifier's checkpoint);
* ``classifier_guided``: ``guided_steps`` Adam steps of ``guided_lr`` on z that
  lower the latent classifier's cross-entropy for the target style plus
  ``guided_distance_weight * ||z - mu||^2`` (stay near the source's content).

Windows that are silent in the source stay silent: a rest is content too.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import random
import shutil
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from midistyle.classifier import LatentClassifier, StyleRegions, load_classifier
from midistyle.errors import UserError
from midistyle.fileio import atomic_write_bytes, atomic_write_json
from midistyle.model import StyleVAE, load_vae
from midistyle.roll import PieceRoll, RollSpec, Timing, Window, iter_windows, roll_to_midi, stitch_windows, write_midi

log = logging.getLogger(__name__)

METHODS = ("attribute_vector", "classifier_guided")
RECONSTRUCTION = "reconstruction"
MANIFEST_COLUMNS = ("method", "source_style", "target_style", "source_file", "output_file", "windows", "status", "error")
DECODE_BATCH = 256


@dataclass(frozen=True)
class TransferSettings:
    """How far to move: built from ``params.transfer`` (the CLI scales it with ``--strength``)."""

    alpha: float = 1.0
    guided_steps: int = 50
    guided_lr: float = 0.05
    guided_distance_weight: float = 0.1

    @classmethod
    def from_params(cls, tp) -> "TransferSettings":
        return cls(tp.alpha, tp.guided_steps, tp.guided_lr, tp.guided_distance_weight)

    def with_strength(self, strength: float) -> "TransferSettings":
        """``strength`` sets alpha for the attribute vector and scales the guided steps (0 = reconstruction)."""
        if not (strength >= 0 and math.isfinite(strength)):
            raise UserError(f"--strength: must be a number >= 0, got {strength}")
        return replace(self, alpha=strength, guided_steps=round(self.guided_steps * strength))


@dataclass(frozen=True)
class Job:
    """One output of a piece: ``method`` from style index ``source`` to ``target``."""

    method: str
    source: int
    target: int


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
        self.threshold = float(vae_ckpt.get("threshold", 0.5))
        self.spec = RollSpec(**vae_ckpt["spec"]) if "spec" in vae_ckpt else RollSpec()
        self.device = torch.device(device)

    @classmethod
    def load(cls, vae_path: str | Path = "models/vae.pt", classifier_path: str | Path = "models/latent_classifier.pt",
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

    def style_index(self, name: str) -> int:
        if name not in self.styles:
            raise UserError(f"unknown style {name!r}; the model knows: {', '.join(self.styles)}")
        return self.styles.index(name)

    # ------------------------------------------------------------ latent space
    @torch.no_grad()
    def encode(self, windows: list[Window]) -> torch.Tensor:
        """Windows -> mu (N, Z)."""
        rolls = np.stack([w.roll for w in windows])
        lengths = np.array([w.length for w in windows])
        out = []
        for lo in range(0, len(windows), DECODE_BATCH):
            x = torch.as_tensor(rolls[lo : lo + DECODE_BATCH], device=self.device).float()
            lens = torch.as_tensor(lengths[lo : lo + DECODE_BATCH], dtype=torch.int64, device=self.device)
            out.append(self.vae.encode(x, lens)[0])
        return torch.cat(out)

    def move(self, mu: torch.Tensor, method: str, source: torch.Tensor, target: torch.Tensor,
             settings: TransferSettings) -> torch.Tensor:
        """Move latents ``mu`` (N, Z) from styles ``source`` (N,) to ``target`` (N,) by ``method``."""
        if method == RECONSTRUCTION:
            return mu
        if method == "attribute_vector":
            means = self.regions.means.to(mu.device)
            return mu + settings.alpha * (means[target] - means[source])
        if method == "classifier_guided":
            return self._guided(mu, target, settings)
        raise UserError(f"unknown transfer method {method!r}; known: {', '.join(METHODS)}")

    def _guided(self, z0: torch.Tensor, target: torch.Tensor, s: TransferSettings) -> torch.Tensor:
        """Gradient steps on z towards the target class, penalised by the squared distance from z0.

        The loss is summed over rows, so each window moves as if optimised alone.
        """
        z = z0.detach().clone().requires_grad_(True)
        opt = torch.optim.Adam([z], lr=s.guided_lr)
        with torch.enable_grad():
            for _ in range(s.guided_steps):
                loss = F.cross_entropy(self.classifier(z), target, reduction="sum")
                loss = loss + s.guided_distance_weight * ((z - z0) ** 2).sum()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        return z.detach()

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> np.ndarray:
        """Free decoding with the checkpoint's threshold: z (N, Z) -> bool windows (N, W, 2, 2, P)."""
        out = []
        for lo in range(0, len(z), DECODE_BATCH):
            probs = self.vae.generate(z[lo : lo + DECODE_BATCH], steps=self.spec.window_steps, threshold=self.threshold)
            out.append((probs > self.threshold).cpu().numpy())
        if not out:
            return np.zeros((0, self.spec.window_steps, 2, 2, self.spec.n_pitches), bool)
        return np.concatenate(out)

    @torch.no_grad()
    def style_probs(self, mu: torch.Tensor) -> np.ndarray:
        """The latent classifier's style probabilities (N, S)."""
        return torch.softmax(self.classifier(mu), -1).cpu().numpy()

    # ------------------------------------------------------------ pieces
    def transfer_piece(self, piece: PieceRoll, jobs: list[Job], settings: TransferSettings) -> list[np.ndarray]:
        """One roll per job, each as long as the piece (encoded once, decoded in batches)."""
        windows = piece_windows(piece, self.spec)
        keep = audible(windows, self.spec)
        total = len(piece.roll)
        empty = np.zeros((total, 2, 2, self.spec.n_pitches), bool)
        if not keep.any():
            return [empty.copy() for _ in jobs]
        mu = self.encode([w for w, k in zip(windows, keep) if k])
        n = len(mu)
        zs = []
        for job in jobs:
            src = torch.full((n,), job.source, dtype=torch.long, device=mu.device)
            tgt = torch.full((n,), job.target, dtype=torch.long, device=mu.device)
            zs.append(self.move(mu, job.method, src, tgt, settings))
        decoded = self.decode(torch.cat(zs))
        kept = [w for w, k in zip(windows, keep) if k]
        rolls = []
        for j in range(len(jobs)):
            parts = [(w.start, w.length, decoded[j * n + i]) for i, w in enumerate(kept)]
            rolls.append(stitch_windows(parts, total) if parts else empty.copy())
        return rolls

    def detect_style(self, piece: PieceRoll) -> tuple[int, np.ndarray]:
        """The latent classifier's verdict on a whole piece: mean probabilities over its audible windows."""
        all_windows = piece_windows(piece, self.spec)
        windows = [w for w, k in zip(all_windows, audible(all_windows, self.spec)) if k]
        if not windows:
            raise UserError("the piece has no window with notes")
        probs = self.style_probs(self.encode(windows)).mean(axis=0)
        return int(probs.argmax()), probs

    def generate(self, style: int, bars: int, seed: int, tempo: float = 100.0, smoothness: float = 0.6) -> tuple[np.ndarray, Timing]:
        """New music in a style: latents sampled from the style's Gaussian, one window at a time.

        Consecutive windows' noise is correlated (an AR(1) walk with coefficient
        ``smoothness``), so the piece drifts instead of jumping; each window's
        latent is still distributed as the style's Gaussian.
        """
        spec = self.spec
        bar_steps = spec.max_beats_per_bar * spec.steps_per_beat
        n_windows = -(-bars // spec.bars_per_window)
        gen = torch.Generator().manual_seed(int(seed))
        Z = self.regions.means.shape[1]
        e = torch.randn(Z, generator=gen)
        noise = [e]
        for _ in range(n_windows - 1):
            e = smoothness * e + math.sqrt(1 - smoothness**2) * torch.randn(Z, generator=gen)
            noise.append(e)
        eps = torch.stack(noise)  # (N, Z)
        z = self.regions.means[style] + eps @ self.regions.chol[style].T
        decoded = self.decode(z.to(self.device))
        W = spec.bars_per_window * bar_steps
        total = bars * bar_steps
        roll = stitch_windows([(i * W, W, decoded[i]) for i in range(n_windows)], total)
        return roll, Timing([(0, float(tempo))], [(0, spec.max_beats_per_bar, 4)])


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
    return f"{method}/{source}_to_{target}/{name}"


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
    from midistyle.extract import read_manifest as read_raw_manifest

    splits_path = Path(splits_path)
    if not splits_path.exists():
        raise UserError(f"{splits_path}: no splits (run `dvc repro extract` first)")
    test = set(json.loads(splits_path.read_text())["test"])
    by_style: dict[str, list[str]] = {s: [] for s in styles}
    for row in read_raw_manifest(Path(raw_dir)):
        if row.file in test and row.style in by_style:
            by_style[row.style].append(row.file)
    for style, files in by_style.items():
        files.sort()
        if cap is not None and len(files) > cap:
            by_style[style] = sorted(random.Random(f"{seed}:transfer:{style}").sample(files, cap))
    return by_style


# ---------------------------------------------------------------- the transfer stage
def transfer_stage(params, raw_dir: str | Path = "data/raw", splits_path: str | Path = "data/splits.json",
                   vae_path: str | Path = "models/vae.pt", classifier_path: str | Path = "models/latent_classifier.pt",
                   out_dir: str | Path = "data/transfers") -> dict:
    """Transfer every test piece to every other style by every method, plus its reconstruction.

    Output is built in ``<out_dir>.partial`` and renamed into place at the end.
    A piece that fails is recorded in the manifest (status ``failed``, the
    error) and the batch goes on; the stage fails only when more than
    ``transfer.max_failed_share`` of the pieces failed.
    """
    from midistyle.roll import read_piece

    t0 = time.perf_counter()
    tp = params.transfer
    model = StyleTransfer.load(vae_path, classifier_path)
    settings = TransferSettings.from_params(tp)
    pieces = select_test_pieces(raw_dir, splits_path, model.styles, tp.max_pieces_per_style, params.seed)
    out_dir = Path(out_dir)
    tmp = Path(str(out_dir) + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    rows: list[dict] = []
    failed = 0
    try:
        for source, files in pieces.items():
            s = model.style_index(source)
            jobs = [Job(RECONSTRUCTION, s, s)] + [Job(m, s, t) for t in range(len(model.styles)) if t != s for m in tp.methods]
            for file in tqdm(files, desc=f"transfer {source}", unit="piece", mininterval=1.0, file=sys.stderr):
                try:
                    piece = read_piece(Path(raw_dir) / file, model.spec)
                    rolls = model.transfer_piece(piece, jobs, settings)
                    n_windows = len(piece_windows(piece, model.spec))
                    for job, roll in zip(jobs, rolls):
                        rel = output_path(job.method, source, model.styles[job.target], file)
                        write_roll(roll, model.spec, piece.timing, tmp / rel)
                        rows.append(_row(job, model.styles, file, rel, n_windows, "ok", ""))
                except (UserError, OSError, ValueError, RuntimeError) as exc:  # one piece; recorded, counted
                    failed += 1
                    log.warning("transfer of %s failed: %s", file, exc)
                    for job in jobs:
                        rows.append(_row(job, model.styles, file, "", 0, "failed", f"{type(exc).__name__}: {exc}"))
                log.debug("transferred %s", file)
        n_pieces = sum(len(f) for f in pieces.values())
        if n_pieces == 0:
            raise UserError(f"{splits_path}: no test pieces of the styles {model.styles}")
        if failed / n_pieces > tp.max_failed_share:
            raise UserError(f"{failed} of {n_pieces} pieces failed to transfer (> transfer.max_failed_share "
                            f"{tp.max_failed_share:.0%}); see the log")
        _write_manifest(tmp / "manifest.csv", rows)
        summary = {"pieces": n_pieces, "pieces_failed": failed, "outputs": sum(r["status"] == "ok" for r in rows),
                   "methods": list(tp.methods), "styles": model.styles,
                   "pieces_per_style": {s: len(f) for s, f in pieces.items()},
                   "wall_seconds": round(time.perf_counter() - t0, 1)}
        atomic_write_json(tmp / "summary.json", summary)
        shutil.rmtree(out_dir, ignore_errors=True)
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("transfer: %d pieces (%d failed), %d outputs in %.1f s", n_pieces, failed, summary["outputs"],
             summary["wall_seconds"])
    return summary


def _row(job: Job, styles: list[str], file: str, rel: str, windows: int, status: str, error: str) -> dict:
    return {"method": job.method, "source_style": styles[job.source], "target_style": styles[job.target],
            "source_file": file, "output_file": rel, "windows": windows, "status": status, "error": error}


def _write_manifest(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(path, buf.getvalue().encode())
