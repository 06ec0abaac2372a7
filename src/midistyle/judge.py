"""The independent judge: a style classifier that reads piano rolls directly.

Transfer strength must not be measured by the latent classifier that guided
the transfer (a latent can fool the model it was optimised against while the
music does not change). The judge shares nothing with the VAE: it is a small
convolutional network over the window's frames, trained on the *training*
split of real pieces only, and used only to evaluate. It judges windows of
MIDI files as read back from disk.

Architecture: the window (W steps x 2 hands x 2 channels x P pitches) is a
sequence of W frames of 4P features; three 1-D convolutions over time, then
mean and max pooling over the steps that hold music (``lengths``), then an MLP.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from midistyle.fitting import FitSettings, class_weights, classification_metrics, fit_selected
from midistyle.fileio import atomic_write_bytes
from midistyle.model import read_checkpoint
from midistyle.roll import RollSpec
from midistyle.shards import ShardIndex

CHECKPOINT_KIND = "judge"


@dataclass(frozen=True)
class JudgeConfig:
    n_pitches: int
    channels: int
    hidden: int
    n_styles: int


class RollJudge(nn.Module):
    """(B, W, 2, 2, P) float rolls [+ lengths (B,)] -> style logits (B, S)."""

    def __init__(self, cfg: JudgeConfig):
        super().__init__()
        self.cfg = cfg
        C = cfg.channels
        self.convs = nn.Sequential(
            nn.Conv1d(4 * cfg.n_pitches, C, kernel_size=5, padding=2), nn.ReLU(),
            nn.Conv1d(C, 2 * C, kernel_size=5, padding=2), nn.ReLU(),
            nn.Conv1d(2 * C, 2 * C, kernel_size=3, padding=2, dilation=2), nn.ReLU(),
        )
        self.head = nn.Sequential(nn.Linear(4 * C, cfg.hidden), nn.ReLU(), nn.Linear(cfg.hidden, cfg.n_styles))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        B, W = x.shape[:2]
        h = self.convs(x.reshape(B, W, -1).transpose(1, 2))  # (B, 2C, W)
        if lengths is None:
            mask = torch.ones(B, 1, W, device=x.device)
        else:
            mask = (torch.arange(W, device=x.device)[None, :] < lengths.clamp(min=1)[:, None]).float().unsqueeze(1)
        mean = (h * mask).sum(-1) / mask.sum(-1)
        peak = h.masked_fill(mask == 0, float("-inf")).amax(-1)
        return self.head(torch.cat([mean, peak], dim=-1))


@torch.no_grad()
def judge_probs(judge: RollJudge, rolls: np.ndarray, lengths: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """Windows (N, W, 2, 2, P) -> style probabilities (N, S)."""
    judge.eval()
    device = next(judge.parameters()).device
    out = [np.zeros((0, judge.cfg.n_styles), np.float32)]
    for lo in range(0, len(rolls), batch_size):
        x = torch.as_tensor(np.asarray(rolls[lo : lo + batch_size]), device=device).float()
        lens = torch.as_tensor(np.asarray(lengths[lo : lo + batch_size]), dtype=torch.int64, device=device)
        out.append(torch.softmax(judge(x, lens), -1).cpu().numpy())
    return np.concatenate(out)


def train_judge(index: ShardIndex, jp, seed: int, device: torch.device | str = "cpu",
                on_epoch: Callable[[int, dict], None] | None = None,
                make: Callable[[JudgeConfig], nn.Module] = RollJudge) -> tuple[nn.Module, dict]:
    """Fit the judge on the training split's windows, select on val, score on test.

    ``jp`` is ``params.judge``. Batches stream from the shards (the training
    split need not fit in memory); the loss is class-weighted. ``make`` builds the
    network from its config (another architecture, for benchmarks/judge_hands.py).
    """
    torch.manual_seed(seed)
    judge = make(JudgeConfig(index.spec.n_pitches, jp.channels, jp.hidden, len(index.styles))).to(device)
    styles = index.styles

    def batches(epoch: int):
        for b in index.iter_batches("train", jp.batch_size, shuffle=True, seed=seed, epoch=epoch):
            inputs = (torch.from_numpy(b.rolls).float(), torch.from_numpy(b.lengths).long())
            yield inputs, torch.from_numpy(b.style.astype(np.int64))

    val = index.load_split("val")
    test = index.load_split("test")

    def score(batch) -> dict:
        return classification_metrics(batch.style, judge_probs(judge, batch.rolls, batch.lengths).argmax(-1), styles)

    weights = class_weights(index.style_counts("train"))
    history, best = fit_selected(judge, batches, lambda m: score(val), weights,
                                 FitSettings(jp.epochs, jp.lr, jp.weight_decay, jp.patience), on_epoch)
    metrics = {"selected_epoch": best, "epochs_run": len(history), "val": score(val), "test": score(test)}
    return judge, {"metrics": metrics, "history": history}


def save_judge(path: str | Path, judge: RollJudge, styles: list[str], spec: RollSpec) -> Path:
    buf = io.BytesIO()
    torch.save({"kind": CHECKPOINT_KIND, "config": asdict(judge.cfg), "state": judge.state_dict(),
                "styles": list(styles), "spec": spec.to_dict()}, buf)
    return atomic_write_bytes(path, buf.getvalue())


def load_judge(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[RollJudge, dict]:
    ckpt = read_checkpoint(path, CHECKPOINT_KIND, "train_classifier", map_location)
    judge = RollJudge(JudgeConfig(**ckpt["config"]))
    judge.load_state_dict(ckpt["state"])
    judge.eval()
    return judge, ckpt
