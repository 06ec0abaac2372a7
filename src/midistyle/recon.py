"""Reconstruction quality of the VAE by *free* decoding (no teacher forcing).

A window is encoded, z = mu, and the decoder generates the window from z alone,
feeding back its own thresholded frames (``StyleVAE.generate``). The generated
probabilities above ``threshold`` are the reconstruction; it is compared cell by
cell with the input inside each window's ``lengths`` (padding is ignored):

* ``precision``/``recall``/``f1``: the SOUNDING channel (is the key down at
  this step?) - how much of the music comes back;
* ``onset_precision``/``onset_recall``/``onset_f1``: the ONSET channel - whether
  notes start where they did (a held note vs. a repeated one).

Beside them, to tell a reconstruction from clutter:

* ``other_f1``: sounding F1 of the window decoded from *another* window's z
  (half a batch away, so usually another piece): z must carry its window, so
  ``f1 - other_f1`` should be large;
* ``density_ratio``: notes (onsets) of the reconstructions / notes of the
  sources; ``polyphony_ratio``: mean notes sounding together on steps where
  something sounds, reconstructions / sources. Both 1.0 for a faithful model.

Scores are micro-averaged: the counts (``tp``, ``fp``, ``fn``, ``onset_tp`` ...)
are summed over windows first, so batches combine with :func:`add_counts` and
:func:`scores`.

A calibrated model gives uncertain notes probabilities below 0.5 (and a loss
``pos_weight`` above 1 inflates them), hence 0.5 is a poor threshold;
:func:`tune_threshold` picks the one maximising F1 on a validation subset, and
the training stage stores it in the checkpoint (``ckpt["threshold"]``).
"""

from __future__ import annotations

import numpy as np
import torch

from midistyle.roll import ONSET, SOUNDING

# Grid searched by tune_threshold: a calibrated model's best threshold is often below 0.5 (notes are rare),
# a pos_weight above 1 moves it up.
THRESHOLDS = (0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6, 0.7, 0.8, 0.9)
ONSET_THRESHOLDS = (0.2, 0.3, 0.4, 0.5)  # P(onset | sounding) above which a continuing cell is a new note
COUNT_KEYS = ("tp", "fp", "fn", "onset_tp", "onset_fp", "onset_fn", "windows", "other_tp", "other_fp", "other_fn",
              "source_notes", "output_notes", "source_sounding", "output_sounding", "source_steps", "output_steps")


def _unwrap(model):
    return getattr(model, "module", model)  # DistributedDataParallel -> StyleVAE


def length_mask(lengths: np.ndarray, steps: int) -> np.ndarray:
    """lengths (B,) -> bool (B, W): True on the steps that hold music."""
    return np.arange(steps)[None, :] < np.asarray(lengths)[:, None]


@torch.no_grad()
def reconstruct(model, rolls: np.ndarray, lengths: np.ndarray, threshold: float, device="cpu",
                other_z: bool = False) -> np.ndarray:
    """Free decoding from z = mu: rolls (B, W, 2, 2, P) -> probabilities (B, W, 2, 2, P), zero past lengths.

    ``other_z``: window i is decoded from the z of window (i + B/2) mod B instead.
    """
    vae = _unwrap(model)
    was_training = vae.training
    vae.eval()
    try:
        x = torch.as_tensor(np.asarray(rolls), device=device).float()
        lens = torch.as_tensor(np.asarray(lengths), dtype=torch.int64, device=device)
        mu, _ = vae.encode(x, lens)
        if other_z:
            mu = mu.roll(len(mu) // 2, dims=0)
        probs = vae.generate(mu, steps=x.shape[1], threshold=threshold).float().cpu().numpy()
    finally:
        vae.train(was_training)
    probs[~length_mask(lengths, probs.shape[1])] = 0.0
    return probs


def _cells(pred: np.ndarray, true: np.ndarray, mask: np.ndarray, ch: int) -> tuple[int, int, int]:
    p, t = pred[:, :, :, ch] & mask, true[:, :, :, ch] & mask  # (B, W, 2, P)
    return int((p & t).sum()), int((p & ~t).sum()), int((~p & t).sum())


def _texture(roll: np.ndarray, mask: np.ndarray) -> tuple[int, int, int]:
    """roll bool (B, W, 2, 2, P) -> notes (onsets), sounding cells, steps where something sounds."""
    sounding = roll[:, :, :, SOUNDING] & mask
    return int((roll[:, :, :, ONSET] & mask).sum()), int(sounding.sum()), int(sounding.any(axis=(2, 3)).sum())


def count_cells(pred: np.ndarray, true: np.ndarray, lengths: np.ndarray, other: np.ndarray | None = None) -> dict:
    """pred, true bool (B, W, 2, 2, P) -> true/false positives and negatives per channel, inside lengths,
    and the note/sounding/step counts of both; ``other``: the decoding from another window's z."""
    true = np.asarray(true, bool)
    mask = length_mask(lengths, true.shape[1])[:, :, None, None]  # (B, W, 1, 1) over hands and pitches
    out = {"windows": int(len(true))}
    for prefix, ch in (("", SOUNDING), ("onset_", ONSET)):
        out[prefix + "tp"], out[prefix + "fp"], out[prefix + "fn"] = _cells(pred, true, mask, ch)
    out["other_tp"], out["other_fp"], out["other_fn"] = _cells(other, true, mask, SOUNDING) if other is not None \
        else (0, 0, 0)
    out["source_notes"], out["source_sounding"], out["source_steps"] = _texture(true, mask)
    out["output_notes"], out["output_sounding"], out["output_steps"] = _texture(pred, mask)
    return out


def _prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def scores(counts: dict[str, int]) -> dict[str, float]:
    """Counts -> precision, recall, f1 (sounding) and onset_precision, onset_recall, onset_f1, plus the counts."""
    out: dict = dict(counts)
    for prefix in ("", "onset_"):
        p, r, f = _prf(counts[prefix + "tp"], counts[prefix + "fp"], counts[prefix + "fn"])
        out.update({prefix + "precision": p, prefix + "recall": r, prefix + "f1": f})
    out["other_f1"] = _prf(counts["other_tp"], counts["other_fp"], counts["other_fn"])[2]
    out["density_ratio"] = _ratio(counts["output_notes"], counts["source_notes"])
    out["polyphony_ratio"] = _ratio(_ratio(counts["output_sounding"], counts["output_steps"]),
                                    _ratio(counts["source_sounding"], counts["source_steps"]))
    return out


def _ratio(a: float, b: float) -> float:
    return a / b if b else 0.0


def add_counts(a: dict[str, int] | None, b: dict[str, int]) -> dict[str, int]:
    return dict(b) if a is None else {k: a[k] + b[k] for k in COUNT_KEYS}


def reconstruction_scores(model, batch, threshold: float, device="cpu") -> dict:
    """Free-decoding scores of one :class:`~midistyle.shards.Batch` (precision, recall, f1, onset_*, counts)."""
    probs = reconstruct(model, batch.rolls, batch.lengths, threshold, device)
    return scores(count_cells(probs > threshold, batch.rolls, batch.lengths))


def tune_onset_threshold(model, batch, threshold: float, device="cpu", grid=ONSET_THRESHOLDS) -> tuple[float, dict]:
    """Sets ``model.onset_threshold`` to the value of ``grid`` with the best onset F1 on ``batch`` at the
    sounding ``threshold`` (the first on ties); returns it and its scores."""
    vae = _unwrap(model)
    best_t, best = grid[0], None
    for t in grid:
        vae.onset_threshold.fill_(t)
        s = reconstruction_scores(model, batch, threshold, device)
        if best is None or s["onset_f1"] > best["onset_f1"]:
            best_t, best = t, s
    vae.onset_threshold.fill_(best_t)
    return best_t, best


def tune_threshold(model, batch, device="cpu", grid=THRESHOLDS) -> tuple[float, dict, dict[float, float]]:
    """The threshold of ``grid`` with the best sounding F1 on ``batch`` (the first one on ties).

    Returns (threshold, its scores, {threshold: f1}). Each threshold needs its own
    generation: the decoder feeds back its thresholded frames.
    """
    best_t, best, f1s = grid[0], None, {}
    for t in grid:
        s = reconstruction_scores(model, batch, t, device)
        f1s[t] = s["f1"]
        if best is None or s["f1"] > best["f1"]:
            best_t, best = t, s
    return best_t, best, f1s
