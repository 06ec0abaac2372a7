"""The independent judge: two style classifiers that read piano rolls directly and must agree.

Transfer strength must not be measured by the latent classifier that guided
the transfer (a latent can fool the model it was optimised against while the
music does not change). The judge shares nothing with the VAE: small
convolutional networks over the window's frames, trained on the *training*
split of real pieces only, and used only to evaluate. It judges windows of
MIDI files as read back from disk.

It is a panel of two members, the same network trained the same way:

* ``hands`` reads the two hands apart;
* ``heard`` reads them merged (a cell sounds or starts when it does in either
  hand): what a listener hears, who cannot tell which hand plays a note.

Both members train on windows moved to other keys (``judge.transpose``,
:mod:`midistyle.augment`): trained on the pieces as written, the panel called
0.73-0.79 of the renaissance test windows moved up or down a semitone baroque
and 0.11-0.15 renaissance, since the masses keep to the white keys and B flat.
A judge of key would let a transfer pass by adding black keys.
``test_transposed`` in its metrics is the test split with every window moved
by a seeded shift in :data:`KEY_CHECK`.

Both members also train on windows cut short (``judge.cut_share``,
:func:`midistyle.augment.cut`): a transfer keeps its source's window length,
and a judge that learnt one style's length judges by it.

Both are as accurate on real windows, but the hands member's verdict follows
notes moved from one hand into the other (benchmarks/judge_hands.py: baroque
windows moved into the right hand were called renaissance 0.63 of the time), so
on transfers the two disagreed by up to 0.45 of a direction's windows. A window
is judged a style only when both members say it (:func:`judge_verdicts`);
where they disagree it is judged no style.

Architecture: the window (W steps x 2 hands x 2 channels x P pitches) is a
sequence of W frames of 4P features (2P merged); three 1-D convolutions over
time, then mean and max pooling over the steps that hold music (``lengths``),
then an MLP.
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
from midistyle.augment import cut, transpose
from midistyle.errors import UserError
from midistyle.fitting import FitSettings, class_weights, classification_metrics, fit_selected
from midistyle.fileio import atomic_write_bytes, atomic_write_json
from midistyle.model import read_checkpoint
from midistyle.roll import RollSpec
from midistyle.shards import Batch, ShardIndex
from midistyle.tracking import epoch_logger, log_scores, start_run

log = logging.getLogger(__name__)

CHECKPOINT_KIND = "judge"
MEMBERS = {"hands": False, "heard": True}  # member name -> merge_hands
NO_VERDICT = -1  # the members disagree
KEY_CHECK = (-5, 6)  # test_transposed: each test window moved by a seeded number of semitones in it (every key)


@dataclass(frozen=True)
class JudgeConfig:
    n_pitches: int
    channels: int
    hidden: int
    n_styles: int
    merge_hands: bool = False


class RollJudge(nn.Module):
    """(B, W, 2, 2, P) float rolls [+ lengths (B,)] -> style logits (B, S)."""

    def __init__(self, cfg: JudgeConfig):
        super().__init__()
        self.cfg = cfg
        C = cfg.channels
        hands = 1 if cfg.merge_hands else 2
        self.convs = nn.Sequential(
            nn.Conv1d(hands * 2 * cfg.n_pitches, C, kernel_size=5, padding=2), nn.ReLU(),
            nn.Conv1d(C, 2 * C, kernel_size=5, padding=2), nn.ReLU(),
            nn.Conv1d(2 * C, 2 * C, kernel_size=3, padding=2, dilation=2), nn.ReLU(),
        )
        self.head = nn.Sequential(nn.Linear(4 * C, cfg.hidden), nn.ReLU(), nn.Linear(cfg.hidden, cfg.n_styles))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        B, W = x.shape[:2]
        if self.cfg.merge_hands:
            x = x.amax(dim=2, keepdim=True)  # (B, W, 1, 2, P): the hands merged
        h = self.convs(x.reshape(B, W, -1).transpose(1, 2))  # (B, 2C, W)
        if lengths is None:
            mask = torch.ones(B, 1, W, device=x.device)
        else:
            mask = (torch.arange(W, device=x.device)[None, :] < lengths.clamp(min=1)[:, None]).float().unsqueeze(1)
        mean = (h * mask).sum(-1) / mask.sum(-1)
        peak = h.masked_fill(mask == 0, float("-inf")).amax(-1)
        return self.head(torch.cat([mean, peak], dim=-1))


class JudgePanel(nn.Module):
    """The members by name (:data:`MEMBERS`); :func:`judge_verdicts` asks them all."""

    def __init__(self, members: dict[str, RollJudge]):
        super().__init__()
        self.members = nn.ModuleDict(members)


@torch.no_grad()
def judge_probs(judge: RollJudge, rolls: np.ndarray, lengths: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """One member: windows (N, W, 2, 2, P) -> style probabilities (N, S)."""
    judge.eval()
    device = next(judge.parameters()).device
    out = [np.zeros((0, judge.cfg.n_styles), np.float32)]
    for lo in range(0, len(rolls), batch_size):
        x = torch.as_tensor(np.asarray(rolls[lo : lo + batch_size]), device=device).float()
        lens = torch.as_tensor(np.asarray(lengths[lo : lo + batch_size]), dtype=torch.int64, device=device)
        out.append(torch.softmax(judge(x, lens), -1).cpu().numpy())
    return np.concatenate(out)


def judge_votes(panel: JudgePanel, rolls: np.ndarray, lengths: np.ndarray) -> dict[str, np.ndarray]:
    """Windows (N, W, 2, 2, P) -> each member's style index (N,), by member name."""
    return {name: judge_probs(member, rolls, lengths).argmax(-1) for name, member in panel.members.items()}


def agreed(votes: dict[str, np.ndarray]) -> np.ndarray:
    """Members' votes -> (N,) the style they all gave, or :data:`NO_VERDICT` where they disagree."""
    first, *rest = votes.values()
    same = np.ones(len(first), bool)
    for other in rest:
        same &= other == first
    return np.where(same, first, NO_VERDICT)


def judge_verdicts(panel: JudgePanel, rolls: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Windows (N, W, 2, 2, P) -> (N,) the panel's style index, :data:`NO_VERDICT` where its members disagree."""
    return agreed(judge_votes(panel, rolls, lengths))


def train_judge(index: ShardIndex, jp, seed: int, device: torch.device | str = "cpu",
                on_epoch: Callable[[int, dict], None] | None = None, merge_hands: bool = False,
                val: Batch | None = None, test: Batch | None = None) -> tuple[RollJudge, dict]:
    """Fit one member on the training split's windows, select on val, score on test.

    ``jp`` is ``params.judge``. Batches stream from the shards (the training
    split need not fit in memory); the loss is class-weighted. ``val`` and
    ``test``: the splits already read (else read here).
    """
    torch.manual_seed(seed)
    judge = RollJudge(JudgeConfig(index.spec.n_pitches, jp.channels, jp.hidden, len(index.styles), merge_hands)).to(device)
    styles = index.styles

    def batches(epoch: int):
        keys = torch.Generator().manual_seed(seed * 1000 + epoch)  # this epoch's key changes and cuts
        for b in index.iter_batches("train", jp.batch_size, shuffle=True, seed=seed, epoch=epoch):
            x = transpose(torch.from_numpy(b.rolls).float(), *jp.transpose, keys)  # judge.transpose
            inputs = cut(x, torch.from_numpy(b.lengths).long(), jp.cut_share, index.spec.steps_per_beat, keys)
            yield inputs, torch.from_numpy(b.style.astype(np.int64))

    val = index.load_split("val") if val is None else val
    test = index.load_split("test") if test is None else test

    def score(batch) -> dict:
        return classification_metrics(batch.style, judge_probs(judge, batch.rolls, batch.lengths).argmax(-1), styles)

    weights = class_weights(index.style_counts("train"))
    history, best = fit_selected(judge, batches, lambda m: score(val), weights,
                                 FitSettings(jp.epochs, jp.lr, jp.weight_decay, jp.patience), on_epoch)
    metrics = {"selected_epoch": best, "epochs_run": len(history), "val": score(val), "test": score(test)}
    return judge, {"metrics": metrics, "history": history}


def train_panel(index: ShardIndex, jp, seed: int, device: torch.device | str = "cpu",
                on_epoch: Callable[[str], Callable[[int, dict], None] | None] = lambda name: None
                ) -> tuple[JudgePanel, dict]:
    """Every member of :data:`MEMBERS` (same params and seed), and the panel's val and test scores
    (a window the members disagree on counts as wrong)."""
    splits = {split: index.load_split(split) for split in ("val", "test")}  # read once for every member
    members, member_metrics = {}, {}
    for name, merge in MEMBERS.items():
        members[name], out = train_judge(index, jp, seed, device, on_epoch(name), merge, **splits)
        member_metrics[name] = out["metrics"]
    panel = JudgePanel(members)
    scores = {split: classification_metrics(b.style, judge_verdicts(panel, b.rolls, b.lengths), index.styles)
              for split, b in splits.items()}
    moved = moved_votes(panel, splits["test"], seed)
    scores["test_transposed"] = classification_metrics(splits["test"].style, agreed(moved), index.styles)
    for name, votes in moved.items():
        member_metrics[name]["test_transposed"] = classification_metrics(splits["test"].style, votes, index.styles)
    return panel, {"metrics": {**scores, "members": member_metrics}}


def moved_votes(panel: JudgePanel, test: Batch, seed: int, batch_size: int = 2048) -> dict[str, np.ndarray]:
    """Each member's votes (N,) on the test windows, each window moved by a seeded shift in :data:`KEY_CHECK`:
    a judge of style gives them the style of the windows as written."""
    keys = torch.Generator().manual_seed(seed)
    votes: dict[str, list[np.ndarray]] = {}
    for lo in range(0, len(test.style), batch_size):
        rolls = transpose(torch.from_numpy(np.asarray(test.rolls[lo : lo + batch_size])).float(), *KEY_CHECK, keys)
        for name, v in judge_votes(panel, rolls.numpy() > 0.5, test.lengths[lo : lo + batch_size]).items():
            votes.setdefault(name, []).append(v)
    return {name: np.concatenate(v) for name, v in votes.items()}


def save_judge(path: str | Path, panel: JudgePanel, styles: list[str], spec: RollSpec) -> Path:
    buf = io.BytesIO()
    members = {name: {"config": asdict(m.cfg), "state": m.state_dict()} for name, m in panel.members.items()}
    torch.save({"kind": CHECKPOINT_KIND, "members": members, "styles": list(styles), "spec": spec.to_dict()}, buf)
    return atomic_write_bytes(path, buf.getvalue())


def load_judge(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[JudgePanel, dict]:
    """Rebuild the panel; a checkpoint of the former single judge is a one-line error."""
    ckpt = read_checkpoint(path, CHECKPOINT_KIND, "train_judge", map_location)
    if "members" not in ckpt:
        raise UserError(f"{path}: a judge of an older format (one network, no members); "
                        "run `dvc repro train_judge` again")
    members = {}
    for name, m in ckpt["members"].items():
        members[name] = RollJudge(JudgeConfig(**m["config"]))
        members[name].load_state_dict(m["state"])
    panel = JudgePanel(members)
    panel.eval()
    return panel, ckpt


# ---------------------------------------------------------------- the train_judge stage
def train_stage(params, shards_dir: str | Path = layout.SHARDS, judge_path: str | Path = layout.JUDGE,
                metrics_path: str | Path = layout.JUDGE_METRICS) -> dict:
    """The ``train_judge`` stage: the panel's members on the shards' training windows.

    It reads no VAE, so a new VAE (a ``dvc exp run -S train.*``) is judged by
    the same judge, which is not trained again. Writes ``models/judge.pt`` and
    ``metrics/judge.json`` (the panel's and each member's val, test and
    test_transposed accuracy, balanced accuracy, confusion and windows of no
    verdict), and logs the curves to MLflow.
    """
    index = ShardIndex.open(shards_dir)
    with start_run(params, "train_judge") as run:
        panel, out = train_panel(index, params.judge, params.seed, "cpu",
                                 lambda name: epoch_logger(run, f"judge_{name}", log))
        save_judge(judge_path, panel, index.styles, index.spec)
        metrics = {"styles": list(index.styles), **out["metrics"]}
        atomic_write_json(metrics_path, metrics)
        splits = ("val", "test", "test_transposed")
        log_scores(run, "judge", metrics, splits)
        for name, m in metrics["members"].items():
            log_scores(run, f"judge_{name}", m, splits, keys=("accuracy",))
        log.info("judge test: accuracy %.3f, balanced accuracy %.3f, moved to other keys %.3f (members: %s)",
                 metrics["test"]["accuracy"], metrics["test"]["balanced_accuracy"],
                 metrics["test_transposed"]["accuracy"],
                 ", ".join(f"{name} {m['test']['accuracy']:.3f}" for name, m in metrics["members"].items()))
        run.log_artifact(metrics_path, "metrics")
        run.log_artifact(judge_path, "model")
        run.tag_outputs(judge_path)
    return metrics
