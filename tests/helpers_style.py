"""A tiny two-style project built in code, for the classifier, transfer, evaluate, report and CLI tests.

Two styles a small network tells apart in a few steps:

* ``calm``: half-note triads low in the keyboard, C major;
* ``busy``: running sixteenth notes high up, with chromatic steps.

:func:`build_project` builds raw MIDI + manifest -> extract -> a small VAE
(trained for a few dozen steps here, in the checkpoint format of the
train_vae stage) -> train_classifier, train_judge -> tune_transfer -> transfer, once per test session, under
pytest's temporary folder (the session fixtures ``style_project`` and
``evaluated_style_project`` in conftest.py). Nothing is written into the repository.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pretty_midi
import torch

from midistyle.config import Params
from midistyle.fileio import sha256_file
from midistyle.model import StyleVAE, VAEConfig, checkpoint_config
from midistyle.recon import tune_onset_threshold, tune_threshold
from midistyle.train import model_loss
from midistyle.roll import RollSpec
from midistyle.shards import ShardIndex
from midistyle.transfer import TransferSettings
from tests import helpers_params
from tests.helpers_params import REPO

STYLES = ("busy", "calm")


def calm_piece(seed: int, bars: int = 8, tempo: float = 90.0) -> pretty_midi.PrettyMIDI:
    rng = random.Random(seed)
    beat = 60.0 / tempo
    pm = pretty_midi.PrettyMIDI(initial_tempo=tempo)
    right, left = pretty_midi.Instrument(0, name="upper"), pretty_midi.Instrument(0, name="lower")
    roots = [48, 53, 55, 48, 57, 53, 55, 48]
    for b in range(bars * 2):  # two half notes per bar
        root = roots[(b // 2 + rng.randint(0, 1)) % len(roots)]
        t0, t1 = b * 2 * beat, (b + 1) * 2 * beat
        for iv in (12, 16, 19):
            right.notes.append(pretty_midi.Note(70, root + iv, t0, t1))
        left.notes.append(pretty_midi.Note(70, root - 12 + (0 if rng.random() < 0.7 else 12), t0, t1))
    pm.instruments += [right, left]
    return pm


def busy_piece(seed: int, bars: int = 8, tempo: float = 140.0) -> pretty_midi.PrettyMIDI:
    rng = random.Random(seed)
    step = 60.0 / tempo / 4
    pm = pretty_midi.PrettyMIDI(initial_tempo=tempo)
    right, left = pretty_midi.Instrument(0, name="upper"), pretty_midi.Instrument(0, name="lower")
    pitch = 72
    for i in range(bars * 16):
        pitch = min(84, max(64, pitch + rng.choice([-2, -1, 1, 1, 2, 3])))
        right.notes.append(pretty_midi.Note(90, pitch, i * step, (i + 1) * step))
        if i % 4 == 0:
            left.notes.append(pretty_midi.Note(80, 46 + rng.choice([0, 1, 3, 6]), i * step, (i + 2) * step))
    pm.instruments += [right, left]
    return pm


def midi_bytes(pm: pretty_midi.PrettyMIDI) -> bytes:
    buf = io.BytesIO()
    pm.write(buf)
    return buf.getvalue()


def make_raw(root: Path, n_pieces: int = 6, bars: int = 8) -> Path:
    """``root/<style>/pieceN.mid`` + ``root/manifest.csv`` in the download stage's format."""
    rows = []
    for style, make in (("busy", busy_piece), ("calm", calm_piece)):
        for i in range(n_pieces):
            rel = f"{style}/piece{i}.mid"
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(midi_bytes(make(seed=i, bars=bars + i % 3)))
            rows.append((style, rel))
    with open(root / "manifest.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["style", "file", "source", "sha256"])
        for style, rel in rows:
            w.writerow([style, rel, "test", sha256_file(root / rel)])
    return root


CORPUS = {"extract": {"shard_windows": 16}}  # the calm/busy pieces above, on params.yaml's grid


def tiny_params(**sections) -> Params:
    """params.yaml shrunk (:func:`tests.helpers_params.tiny_params`) for this corpus; ``sections`` override."""
    return helpers_params.tiny_params(CORPUS, **sections)


def transfer_settings(**knobs) -> TransferSettings:
    """Settings that do not move (alpha 0, no guided steps) with the guided optimiser of :func:`tiny_params`,
    then ``knobs``."""
    tp = tiny_params().transfer
    return dataclasses.replace(TransferSettings.unmoved(tp.guided_lr, tp.guided_distance_weight), **knobs)


def train_tiny_vae(index: ShardIndex, path: Path, params: Params, steps: int = 60, seed: int = 0) -> Path:
    """A small StyleVAE fitted for a few steps, saved like the train_vae stage saves its checkpoint."""
    torch.manual_seed(seed)
    spec = index.spec
    cfg = VAEConfig.from_params(params.model, spec)
    vae = StyleVAE(cfg)
    opt = torch.optim.Adam(vae.parameters(), lr=1e-2)
    data = index.load_split("train")
    x_all = torch.from_numpy(data.rolls).float()
    lens_all = torch.from_numpy(data.lengths).long()
    gen = np.random.default_rng(seed)
    for _ in range(steps):
        idx = torch.from_numpy(gen.choice(len(x_all), size=min(32, len(x_all)), replace=False))
        x, lens = x_all[idx], lens_all[idx]
        loss = model_loss(vae, x, lens, torch.ones(2), kl_weight=0.01, free_bits=0.0)["total"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    vae.eval()
    threshold, _, _ = tune_threshold(vae, data.take(slice(0, 64)))  # as the stage does: a calibrated model's notes
    tune_onset_threshold(vae, data.take(slice(0, 64)), threshold)  # often stay below 0.5
    torch.save({"kind": "vae", "model_config": checkpoint_config(vae), "model_state": vae.state_dict(),
                "styles": index.styles, "spec": spec.to_dict(), "threshold": threshold, "params": {}}, path)
    return path


@dataclass
class Project:
    """Paths of a tiny pipeline run, laid out like the repository's."""

    root: Path
    params: Params

    @property
    def raw(self) -> Path:
        return self.root / "data" / "raw"

    @property
    def shards(self) -> Path:
        return self.root / "data" / "shards"

    @property
    def splits(self) -> Path:
        return self.root / "data" / "splits.json"

    @property
    def transfers(self) -> Path:
        return self.root / "data" / "transfers"

    @property
    def report(self) -> Path:
        return self.root / "data" / "report"

    @property
    def vae(self) -> Path:
        return self.root / "models" / "vae.pt"

    @property
    def classifier(self) -> Path:
        return self.root / "models" / "latent_classifier.pt"

    @property
    def judge(self) -> Path:
        return self.root / "models" / "judge.pt"

    @property
    def settings(self) -> Path:
        return self.root / "models" / "transfer_settings.json"

    @property
    def sweep(self) -> Path:
        return self.root / "data" / "transfer_sweep"

    def tune_paths(self):
        from midistyle.tuning import TunePaths

        return TunePaths(self.raw, self.splits, self.shards, self.vae, self.classifier, self.settings, self.sweep)

    @property
    def spec(self) -> RollSpec:
        return RollSpec.from_params(self.params.extract)


@contextmanager
def one_thread() -> Iterator[None]:
    """Tiny models run fastest on one thread, and a shared 2-core machine does not thrash; restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def build_project(root: Path, params: Params | None = None, transfer: bool = True) -> Project:
    """Run the pipeline up to the transfer stage on the tiny corpus (a few seconds)."""
    from midistyle import classifier, judge
    from midistyle.extract import extract
    from midistyle.transfer import transfer_stage
    from midistyle.tuning import tune_stage

    params = params or tiny_params()
    p = Project(root, params)
    make_raw(p.raw)
    (root / "models").mkdir(parents=True, exist_ok=True)
    extract(params, p.raw, p.shards, p.splits, root / "metrics" / "extract.json", progress=False)
    train_tiny_vae(ShardIndex.open(p.shards), p.vae, params)
    classifier.train_stage(params, p.shards, p.vae, p.classifier, root / "metrics" / "classifier.json")
    judge.train_stage(params, p.shards, p.judge, root / "metrics" / "judge.json")
    if transfer:
        tune_stage(params, p.tune_paths())
        transfer_stage(params, p.raw, p.splits, p.vae, p.classifier, p.transfers, p.settings)
    return p


def eval_paths(p: Project):
    """The evaluate stage's paths inside a tiny project."""
    from midistyle.evaluate import EvalPaths

    return EvalPaths(shards=p.shards, raw=p.raw, splits=p.splits, transfers=p.transfers, vae=p.vae,
                     classifier=p.classifier, judge=p.judge, report=p.report, metrics=p.root / "metrics" / "eval.json",
                     curves=p.root / "metrics" / "train_vae_curves.csv", settings=p.settings, sweep=p.sweep,
                     curve_csv=p.root / "metrics" / "strength_content.csv")


def write_curves(path: Path) -> Path:
    """A train_vae_curves.csv like the train_vae stage writes (a few columns suffice for the plot)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = ["epoch,train_recon,val_recon,train_kl,val_kl,val_precision,val_recall,val_f1"]
    rows += [f"{e},{900 / e:.1f},{950 / e:.1f},{3 * e},{3 * e + 1},{0.2 + 0.1 * e},{0.3 + 0.05 * e},{0.25 + 0.08 * e}"
             for e in range(1, 5)]
    path.write_text("\n".join(rows) + "\n")
    return path
