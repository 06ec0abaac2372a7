"""The latent style classifier: which style does a VAE latent ``mu`` belong to?

It is trained on ``mu`` of the training windows with the VAE frozen, so it
describes the VAE's latent space as it is; classifier-guided transfer follows
its gradient. Each training window is encoded moved to a random key first
(``classifier.transpose``, :mod:`midistyle.augment`), so that neither the
classifier nor the style regions take the styles' usual keys for their style
(the masses keep to the white keys and B flat). Its checkpoint also carries
each style's region of the latent space (mean and Cholesky factor of the
covariance of the training ``mu``): the attribute-vector transfer moves along
differences of the means, and ``midistyle generate`` samples from the
Gaussians.

Styles are imbalanced (pop has ~5x the windows of jazz in the reference corpus),
so the loss is class-weighted and models are selected on the validation split's
*balanced* accuracy (the mean of the per-style recalls), which a classifier
predicting the majority style cannot game.

:func:`~midistyle.fitting.fit_selected` and
:func:`~midistyle.fitting.classification_metrics` are shared with the judge
(:mod:`midistyle.judge`).
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from midistyle import layout
from midistyle.augment import transpose
from midistyle.errors import UserError
from midistyle.fileio import atomic_write_bytes, atomic_write_json
from midistyle.fitting import FitSettings, class_weights, classification_metrics, fit_selected, shuffled_batches
from midistyle.model import StyleVAE, load_vae, read_checkpoint, vae_spec
from midistyle.shards import ShardIndex
from midistyle.tracking import epoch_logger, log_scores, start_run

log = logging.getLogger(__name__)

CHECKPOINT_KIND = "latent_classifier"


# ---------------------------------------------------------------- the model
@dataclass(frozen=True)
class ClassifierConfig:
    latent_size: int
    hidden: int
    n_styles: int


class LatentClassifier(nn.Module):
    """MLP on standardised ``mu``: (B, Z) -> style logits (B, S)."""

    def __init__(self, cfg: ClassifierConfig):
        super().__init__()
        self.cfg = cfg
        self.register_buffer("mu_mean", torch.zeros(cfg.latent_size))
        self.register_buffer("mu_std", torch.ones(cfg.latent_size))
        self.net = nn.Sequential(
            nn.Linear(cfg.latent_size, cfg.hidden), nn.ReLU(),
            nn.Linear(cfg.hidden, cfg.hidden), nn.ReLU(),
            nn.Linear(cfg.hidden, cfg.n_styles),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net((z - self.mu_mean) / self.mu_std)


@dataclass
class StyleRegions:
    """Each style's Gaussian over the training ``mu``: means (S, Z), Cholesky factors (S, Z, Z); and a seeded
    sample of each style's training ``mu`` (per style (M_s, Z)), the real windows a neighbour move aims at."""

    means: torch.Tensor
    chol: torch.Tensor
    windows: list[int]
    samples: list[torch.Tensor]

    def transport(self, source: int, target: int) -> torch.Tensor:
        """(Z, Z) the optimal-transport (Monge) map between the two styles' Gaussians: ``z -> m_t + A (z - m_s)``
        carries N(m_s, S_s) onto N(m_t, S_t) and, of all linear maps that do, moves points the least on average
        (A = S_s^-1/2 (S_s^1/2 S_t S_s^1/2)^1/2 S_s^-1/2, symmetric). A window keeps its place relative to its
        style's spread, so it lands among the target's windows rather than beside them (issue 9)."""
        cov = [(c.double() @ c.double().T).numpy() for c in (self.chol[source], self.chol[target])]
        root = _sqrtm(cov[0])
        inv = np.linalg.inv(root)
        return torch.tensor(inv @ _sqrtm(root @ cov[1] @ root) @ inv, dtype=torch.float32)


def _sqrtm(sym: np.ndarray) -> np.ndarray:
    """The symmetric square root of a symmetric positive semi-definite matrix (float64)."""
    w, v = np.linalg.eigh((sym + sym.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def style_regions(mu: np.ndarray, style: np.ndarray, n_styles: int, samples: int, seed: int) -> StyleRegions:
    """Fit a Gaussian per style (a small ridge keeps the covariance positive definite), and keep up to
    ``samples`` of each style's latents (a choice seeded by ``seed``, in the windows' order)."""
    Z = mu.shape[1]
    rng = np.random.default_rng([seed, 1])
    means, chols, counts, kept = [], [], [], []
    for s in range(n_styles):
        m = mu[style == s].astype(np.float64)
        if len(m) == 0:
            raise UserError(f"style #{s} has no training windows to fit its latent region")
        mean = m.mean(axis=0)
        cov = np.cov(m, rowvar=False) if len(m) > 1 else np.zeros((Z, Z))
        cov = np.atleast_2d(cov) + 1e-4 * np.eye(Z)
        means.append(mean)
        chols.append(np.linalg.cholesky(cov))
        counts.append(int(len(m)))
        pick = np.sort(rng.choice(len(m), size=min(samples, len(m)), replace=False))
        kept.append(torch.tensor(mu[style == s][pick], dtype=torch.float32))
    return StyleRegions(torch.tensor(np.stack(means), dtype=torch.float32),
                        torch.tensor(np.stack(chols), dtype=torch.float32), counts, kept)


# ---------------------------------------------------------------- encoding windows
@torch.no_grad()
def encode_rolls(vae: StyleVAE, rolls: np.ndarray, lengths: np.ndarray, batch_size: int = 512,
                 device: torch.device | str = "cpu") -> np.ndarray:
    """Windows (N, W, 2, 2, P) -> ``mu`` (N, Z) with the VAE in eval mode."""
    vae.eval()
    out = []
    for lo in range(0, len(rolls), batch_size):
        x = torch.as_tensor(np.asarray(rolls[lo : lo + batch_size]), device=device).float()
        lens = torch.as_tensor(np.asarray(lengths[lo : lo + batch_size]), dtype=torch.int64, device=device)
        out.append(vae.encode(x, lens)[0].cpu().numpy())
    Z = vae.cfg.latent_size
    return np.concatenate(out) if out else np.zeros((0, Z), np.float32)


def encode_split(vae: StyleVAE, index: ShardIndex, split: str, batch_size: int = 512,
                 device: torch.device | str = "cpu", keys: tuple[int, int] = (0, 0), seed: int = 0
                 ) -> tuple[np.ndarray, np.ndarray]:
    """``mu`` and style of every window of a split, one shard in memory at a time. ``keys`` = [low, high]: each
    window is first moved by a random number of semitones in it (a generator seeded with ``seed``)."""
    mus, styles = [], []
    shifts = torch.Generator().manual_seed(seed)
    for batch in index.iter_batches(split, batch_size, shuffle=False, seed=0):
        rolls = transpose(torch.from_numpy(np.asarray(batch.rolls)).float(), *keys, shifts).numpy()
        mus.append(encode_rolls(vae, rolls, batch.lengths, batch_size, device))
        styles.append(batch.style.astype(np.int64))
    if not mus:
        raise UserError(f"{index.root}: no {split} windows")
    return np.concatenate(mus), np.concatenate(styles)


# ---------------------------------------------------------------- training
def train_latent_classifier(
    mu: dict[str, np.ndarray], style: dict[str, np.ndarray], styles: list[str], cp, seed: int,
    on_epoch: Callable[[int, dict], None] | None = None,
) -> tuple[LatentClassifier, dict]:
    """Fit the MLP on ``mu["train"]``, select on ``mu["val"]``, score on ``mu["test"]``.

    ``cp`` is ``params.classifier``. Returns the model and its metrics.
    """
    torch.manual_seed(seed)
    Z = mu["train"].shape[1]
    model = LatentClassifier(ClassifierConfig(Z, cp.hidden, len(styles)))
    model.mu_mean.copy_(torch.from_numpy(mu["train"].mean(axis=0)))
    model.mu_std.copy_(torch.from_numpy(mu["train"].std(axis=0)).clamp(min=1e-3))
    x = {k: torch.from_numpy(v).float() for k, v in mu.items()}
    y = {k: torch.from_numpy(v).long() for k, v in style.items()}

    def validate(m: nn.Module) -> dict:
        return classification_metrics(y["val"].numpy(), predict(m, x["val"]), styles)

    weights = class_weights(np.bincount(y["train"].numpy(), minlength=len(styles)))
    history, best = fit_selected(model, shuffled_batches(x["train"], y["train"], cp.batch_size, seed),
                                 validate, weights, FitSettings(cp.epochs, cp.lr, cp.weight_decay, cp.patience), on_epoch)
    metrics = {
        "selected_epoch": best,
        "epochs_run": len(history),
        "val": classification_metrics(y["val"].numpy(), predict(model, x["val"]), styles),
        "test": classification_metrics(y["test"].numpy(), predict(model, x["test"]), styles),
    }
    return model, {"metrics": metrics, "history": history}


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 4096) -> np.ndarray:
    model.eval()
    device = next(model.parameters()).device
    return np.concatenate([model(x[lo : lo + batch_size].to(device)).argmax(-1).cpu().numpy()
                           for lo in range(0, len(x), batch_size)]) if len(x) else np.zeros(0, np.int64)


# ---------------------------------------------------------------- checkpoint
def save_classifier(path: str | Path, model: LatentClassifier, styles: list[str], regions: StyleRegions,
                    vae_latent_size: int) -> Path:
    """Write a ``weights_only``-loadable checkpoint (tensors, numbers, strings only)."""
    buf = io.BytesIO()
    torch.save({
        "kind": CHECKPOINT_KIND,
        "config": asdict(model.cfg),
        "state": model.state_dict(),
        "styles": list(styles),
        "style_means": regions.means,
        "style_chol": regions.chol,
        "style_windows": list(regions.windows),
        "style_samples": list(regions.samples),
        "vae_latent_size": int(vae_latent_size),
    }, buf)
    return atomic_write_bytes(path, buf.getvalue())


def load_classifier(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[LatentClassifier, StyleRegions, dict]:
    """Rebuild the latent classifier and the style regions; a missing file is a :class:`UserError`."""
    ckpt = read_checkpoint(path, CHECKPOINT_KIND, "train_classifier", map_location)
    model = LatentClassifier(ClassifierConfig(**ckpt["config"]))
    model.load_state_dict(ckpt["state"])
    model.eval()
    if "style_samples" not in ckpt:
        raise UserError(f"{path}: made by an older version, without the styles' latent samples "
                        "(re-run `dvc repro train_classifier`)")
    regions = StyleRegions(ckpt["style_means"], ckpt["style_chol"], list(ckpt["style_windows"]),
                           list(ckpt["style_samples"]))
    return model, regions, ckpt


# ---------------------------------------------------------------- the train_classifier stage
def check_vae_matches(ckpt: dict, index: ShardIndex, vae_path: str | Path) -> None:
    """The VAE must have been trained on these shards' styles and grid."""
    if list(ckpt["styles"]) != list(index.styles):
        raise UserError(f"{vae_path}: trained on styles {list(ckpt['styles'])}, the shards hold {index.styles} "
                        "(re-run `dvc repro train_vae`)")
    if vae_spec(ckpt) != index.spec:
        raise UserError(f"{vae_path}: trained on another piano-roll grid than {index.root} (re-run `dvc repro train_vae`)")


def train_stage(params, shards_dir: str | Path = layout.SHARDS, vae_path: str | Path = layout.VAE,
                classifier_path: str | Path = layout.CLASSIFIER,
                metrics_path: str | Path = layout.CLASSIFIER_METRICS) -> dict:
    """The ``train_classifier`` stage: latent classifier + style regions of the frozen VAE's latents.

    Writes the checkpoint and ``metrics/classifier.json`` (val and test
    accuracy, balanced accuracy and confusion), and logs the curves to MLflow.
    The judge is the train_judge stage's (:mod:`midistyle.judge`): it reads no VAE.
    """
    index = ShardIndex.open(shards_dir)
    vae, ckpt = load_vae(vae_path)
    check_vae_matches(ckpt, index, vae_path)
    device = torch.device("cpu")
    with start_run(params, "train_classifier") as run:
        mu, style = {}, {}
        for split in ("train", "val", "test"):  # training windows in every key: the regions hold style, not key
            keys = tuple(params.classifier.transpose) if split == "train" else (0, 0)
            mu[split], style[split] = encode_split(vae, index, split, device=device, keys=keys, seed=params.seed)
        clf, clf_out = train_latent_classifier(mu, style, index.styles, params.classifier, params.seed,
                                               epoch_logger(run, "classifier", log))
        regions = style_regions(mu["train"], style["train"], len(index.styles), params.classifier.region_samples,
                                params.seed)
        save_classifier(classifier_path, clf, index.styles, regions, vae.cfg.latent_size)

        metrics = {"styles": list(index.styles), "latent_classifier": clf_out["metrics"]}
        atomic_write_json(metrics_path, metrics)
        m = metrics["latent_classifier"]
        log_scores(run, "latent_classifier", m, ("val", "test"))
        log.info("latent_classifier test: accuracy %.3f, balanced accuracy %.3f", m["test"]["accuracy"],
                 m["test"]["balanced_accuracy"])
        run.log_artifact(metrics_path, "metrics")
        run.log_artifact(classifier_path, "model")
        run.tag_outputs(classifier_path)
    return metrics
