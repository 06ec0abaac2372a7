"""Fitting a style classifier and scoring it: shared by the latent classifier and the judge.

Both are trained with class-weighted cross-entropy (styles are imbalanced) and
selected on the validation split's *balanced* accuracy, which a classifier
predicting the majority style cannot game. This module sits below
:mod:`midistyle.classifier` and :mod:`midistyle.judge` so neither imports the other
for it.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from midistyle.errors import UserError

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- metrics
def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, styles: list[str]) -> dict:
    """Accuracy, balanced accuracy (mean recall over styles present) and confusion counts.

    ``confusion[true][predicted]`` is a nested mapping of style names, so DVC and
    the report can read it without knowing the style order. A negative
    prediction is no verdict (the judge's members disagreed,
    :data:`midistyle.judge.NO_VERDICT`): wrong, and counted in ``undecided[true]``.
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    S = len(styles)
    decided = y_pred >= 0
    conf = np.zeros((S, S), dtype=np.int64)
    np.add.at(conf, (y_true[decided], y_pred[decided]), 1)
    undecided = np.bincount(y_true[~decided], minlength=S) if len(y_true) else np.zeros(S, np.int64)
    support = conf.sum(axis=1) + undecided
    recalls = {styles[i]: float(conf[i, i] / support[i]) for i in range(S) if support[i]}
    return {
        "windows": int(len(y_true)),
        "accuracy": float((y_true == y_pred).mean()) if len(y_true) else float("nan"),
        "balanced_accuracy": float(np.mean(list(recalls.values()))) if recalls else float("nan"),
        "recall": recalls,
        "confusion": {styles[i]: {styles[j]: int(conf[i, j]) for j in range(S)} for i in range(S)},
        "undecided": {styles[i]: int(undecided[i]) for i in range(S)},
    }


def class_weights(counts: np.ndarray) -> torch.Tensor:
    """Inverse-frequency weights ``N / (S * n_c)``: every style weighs as much in the loss."""
    counts = np.asarray(counts, dtype=np.float64)
    if (counts == 0).any():
        raise UserError(f"a style has no training windows (windows per style: {counts.astype(int).tolist()})")
    return torch.tensor(counts.sum() / (len(counts) * counts), dtype=torch.float32)


# ---------------------------------------------------------------- training loop
@dataclass(frozen=True)
class FitSettings:
    epochs: int
    lr: float
    weight_decay: float
    patience: int  # epochs without a better val balanced accuracy before stopping


def fit_selected(
    model: nn.Module,
    train_batches: Callable[[int], Iterable[tuple[tuple[torch.Tensor, ...], torch.Tensor]]],
    validate: Callable[[nn.Module], dict],
    weights: torch.Tensor,
    settings: FitSettings,
    on_epoch: Callable[[int, dict], None] | None = None,
) -> tuple[list[dict], int]:
    """Train with class-weighted cross-entropy; keep the epoch with the best val balanced accuracy.

    ``train_batches(epoch)`` yields ``(inputs, y)`` with ``model(*inputs)`` the
    logits; ``validate(model)`` returns
    :func:`classification_metrics` of the validation split. The model ends up
    holding the selected epoch's weights. Returns (history, selected epoch).
    """
    opt = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    device = next(model.parameters()).device
    loss_fn = nn.CrossEntropyLoss(weight=weights.to(device))
    history: list[dict] = []
    best_state, best_key, best_epoch, stale = None, None, 0, 0
    for epoch in range(1, settings.epochs + 1):
        model.train()
        total, n = 0.0, 0
        for inputs, y in train_batches(epoch):
            y = y.to(device)
            loss = loss_fn(model(*(t.to(device) for t in inputs)), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(y)
            n += len(y)
        model.eval()
        val = validate(model)
        row = {"epoch": epoch, "train_loss": total / max(n, 1), "val_accuracy": val["accuracy"],
               "val_balanced_accuracy": val["balanced_accuracy"]}
        history.append(row)
        if on_epoch:
            on_epoch(epoch, row)
        key = (val["balanced_accuracy"], val["accuracy"])
        if best_key is None or key > best_key:
            best_state, best_key, best_epoch, stale = copy.deepcopy(model.state_dict()), key, epoch, 0
        else:
            stale += 1
            if stale >= settings.patience:
                log.info("early stop after epoch %d (best epoch %d)", epoch, best_epoch)
                break
    model.load_state_dict(best_state)
    model.eval()
    return history, best_epoch


def shuffled_batches(x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int):
    """``((x,), y)`` minibatches in a seeded order per epoch (reproducible runs)."""

    def batches(epoch: int):
        order = torch.from_numpy(np.random.default_rng([seed, epoch]).permutation(len(y)))
        for lo in range(0, len(y), batch_size):
            idx = order[lo : lo + batch_size]
            yield (x[idx],), y[idx]

    return batches
