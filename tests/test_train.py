"""The train_vae stage: loss terms, outputs, determinism, resuming (exception and SIGKILL), DDP, MLflow."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from midistyle import tracking
from midistyle.model import load_vae
from midistyle.shards import ShardIndex
from midistyle.model import StyleVAE, VAEConfig, note_states
from midistyle.train import Paths, kl_weight_at, note_density, pos_weights, train, vae_loss
from tests.helpers_train import REPO, make_shards, tiny_params, tiny_raw, tiny_vae_config

EPOCHS = 4


def without_timing(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k != "timing"}


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["model_state"]


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k  # bitwise


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    return make_shards(tmp_path_factory.mktemp("train"))


@pytest.fixture(scope="module")
def baseline(shards, tmp_path_factory):
    """An uninterrupted run of EPOCHS epochs: (its folder, its metrics)."""
    root = tmp_path_factory.mktemp("baseline")
    metrics = train(tiny_params(train={"epochs": EPOCHS}), paths_in(root, shards), progress=False)
    return root, metrics


def paths_in(root: Path, shards: Path) -> Paths:
    return Paths(shards=shards, model=root / "models/vae.pt", metrics=root / "metrics/train_vae.json",
                 curves=root / "metrics/train_vae_curves.csv", last=root / "models/tmp/vae-last.pt")


# ---------------------------------------------------------------- loss
def _cfg(output: str) -> VAEConfig:
    """params.yaml's model on a grid of 3 pitches and two 3-step bars, every size 4."""
    model = {"latent_size": 4, "encoder_hidden": 4, "dense_size": 4, "conductor_hidden": 4, "decoder_hidden": 4,
             "frames_per_step": 1, "autoregressive": True, "output": output}
    return tiny_vae_config(model, n_pitches=3, window_steps=6, steps_per_bar=3)


def test_independent_output_loss_is_weighted_bce_summed_inside_lengths_and_averaged_over_the_batch():
    torch.manual_seed(0)
    x = (torch.rand(2, 6, 2, 2, 3) < 0.3).float()
    logits = torch.randn(2, 6, 2, 2, 3)
    lengths = torch.tensor([6, 2])
    mu, logvar = torch.zeros(2, 4), torch.zeros(2, 4)
    pw = torch.tensor([3.0, 7.0])
    nll = StyleVAE(_cfg("independent")).reconstruction_nll(logits, x, pw)
    terms = vae_loss(nll, lengths, mu, logvar, kl_weight=1.0, free_bits=0.0)
    # by hand: -[pw * x * log p + (1 - x) * log(1 - p)], pw per channel (axis 3)
    p = torch.sigmoid(logits)
    w = pw.view(1, 1, 1, 2, 1)
    bce = -(w * x * torch.log(p) + (1 - x) * torch.log(1 - p))
    expected = (bce[0].sum() + bce[1, :2].sum()) / 2
    torch.testing.assert_close(terms["recon"], expected)
    assert float(terms["kl"]) == 0.0
    padded = nll.clone()
    padded[1, 2:] = 100.0  # anything in the padding
    assert torch.equal(vae_loss(padded, lengths, mu, logvar, 1.0, 0.0)["recon"], terms["recon"])


def test_note_state_loss_is_the_cross_entropy_of_off_onset_hold():
    x = torch.zeros(1, 6, 2, 2, 3)
    x[0, 1:4, 0, 0, 1] = 1.0  # a note held over steps 1-3 in the right hand, pitch row 1
    x[0, 1, 0, 1, 1] = 1.0  # its onset
    x[0, 2, 0, 1, 1] = 1.0  # ... struck again at step 2
    logits = torch.randn(1, 6, 2, 3, 3)
    pw = torch.tensor([2.0, 5.0])  # (hold weight from the sounding channel, onset weight)
    nll = StyleVAE(_cfg("note_state")).reconstruction_nll(logits, x, pw)
    logp = torch.log_softmax(logits, dim=3)  # (1, W, hand, state, P)
    expected = -logp[0, :, :, 0, :].sum()  # every cell off ...
    for step, state, weight in ((1, 1, 5.0), (2, 1, 5.0), (3, 2, 2.0)):  # ... but these three
        expected += logp[0, step, 0, 0, 1] - weight * logp[0, step, 0, state, 1]
    torch.testing.assert_close(nll.sum(), expected)
    assert note_states(x)[0, :, 0, 1].tolist() == [0, 1, 1, 2, 0, 0]


def test_kl_with_free_bits_per_dimension():
    mu = torch.tensor([[1.0, 0.0], [1.0, 0.0]])  # dim 0: KL 0.5 nats, dim 1: 0
    logvar = torch.zeros(2, 2)
    args = (torch.zeros(2, 1), torch.tensor([1, 1]), mu, logvar)
    t = vae_loss(*args, kl_weight=2.0, free_bits=0.2)
    torch.testing.assert_close(t["kl"], torch.tensor(0.5))
    torch.testing.assert_close(t["kl_bits_per_dim"], torch.tensor(0.25 / math.log(2)))
    torch.testing.assert_close(t["total"] - t["recon"], torch.tensor(2.0 * (0.5 + 0.2)))  # dim 1 clamped to 0.2


def test_kl_weight_rises_linearly_per_step():
    tp = tiny_params(train={"kl_weight": 0.5, "kl_anneal_epochs": 2}).train
    assert [kl_weight_at(s, 10, tp) for s in (0, 5, 10, 20, 35)] == [0.0, 0.125, 0.25, 0.5, 0.5]
    assert kl_weight_at(0, 10, tiny_params(train={"kl_weight": 0.5, "kl_anneal_epochs": 0}).train) == 0.5


def test_pos_weight_from_the_training_note_density(shards):
    index = ShardIndex.open(shards)
    rolls, lengths = [], []
    for s in index.shards:
        if s["split"] == "train":
            b = index.read_shard(s)
            rolls.append(b.rolls)
            lengths.append(b.lengths)
    rolls, lengths = np.concatenate(rolls), np.concatenate(lengths)
    d = rolls.sum(axis=(0, 1, 2, 4)) / (lengths.sum() * 2 * rolls.shape[-1])
    np.testing.assert_allclose(note_density(index), d)
    assert 0 < d[1] < d[0] < 0.5  # onsets are rarer than sounding cells
    def train_params(**changes):
        return tiny_params(train={"pos_weight": None, **changes}).train  # null: from the note density

    np.testing.assert_allclose(pos_weights(index, train_params(max_pos_weight=1e9)), (1 - d) / d)
    assert pos_weights(index, train_params(max_pos_weight=3.0)) == [3.0, 3.0]
    assert pos_weights(index, train_params(pos_weight=2.5)) == [2.5, 2.5]


# ---------------------------------------------------------------- the stage
def test_outputs(baseline):
    root, metrics = baseline
    assert torch.load(root / "models/tmp/vae-last.pt", weights_only=True)["epoch"] == EPOCHS  # kept: a longer run continues
    assert json.loads((root / "metrics/train_vae.json").read_text()) == metrics
    assert metrics["epochs"] == EPOCHS and metrics["timing"]["resumed_from_epoch"] == 0
    for key in ("precision", "recall", "f1", "onset_f1", "active_dims", "kl", "recon"):
        assert key in metrics["test"] and key in metrics["val"]
    assert metrics["timing"]["windows_per_second"] > 0
    lines = (root / "metrics/train_vae_curves.csv").read_text().splitlines()
    header = lines[0].split(",")
    assert header[0] == "epoch" and len(lines) == EPOCHS + 1
    for name in ("recon", "kl", "kl_bits_per_dim", "kl_weight", "total"):
        assert f"train_{name}" in header and f"val_{name}" in header
    assert {"val_precision", "val_recall", "val_f1", "val_active_dims", "val_threshold"} <= set(header)
    _, ckpt = load_vae(root / "models/vae.pt")
    assert ckpt["threshold"] == metrics["threshold"] == ckpt["history"][-1]["val_threshold"]
    assert [h["epoch"] for h in ckpt["history"]] == list(range(1, EPOCHS + 1))
    kl_weights = [h["train_kl_weight"] for h in ckpt["history"]]
    final = tiny_params().train.kl_weight
    assert kl_weights[0] == pytest.approx(final) and kl_weights[-1] == pytest.approx(final)  # annealed over 1 epoch


def test_a_fixed_threshold_param_is_used_and_stored(shards, tmp_path):
    metrics = train(tiny_params(train={"epochs": 1, "threshold": 0.7}), paths_in(tmp_path, shards), progress=False)
    assert metrics["threshold"] == 0.7
    assert load_vae(tmp_path / "models/vae.pt")[1]["threshold"] == 0.7


class Stop(Exception):
    pass


def test_resume_after_an_interruption_ends_bitwise_equal(baseline, shards, tmp_path):
    params = tiny_params(train={"epochs": EPOCHS})
    paths = paths_in(tmp_path, shards)

    def stop_after_2(epoch, row):
        if epoch == 2:
            raise Stop

    with pytest.raises(Stop):
        train(params, paths, progress=False, after_epoch=stop_after_2)
    assert torch.load(paths.last, weights_only=True)["epoch"] == 2 and not paths.model.exists()
    metrics = train(params, paths, progress=False)
    assert metrics["timing"]["resumed_from_epoch"] == 2
    assert without_timing(metrics) == without_timing(baseline[1])
    assert_same_weights(paths.model, baseline[0] / "models/vae.pt")
    assert (tmp_path / "metrics/train_vae_curves.csv").read_text() == (baseline[0] / "metrics/train_vae_curves.csv").read_text()


def test_a_checkpoint_of_other_params_is_not_resumed(shards, tmp_path):
    paths = paths_in(tmp_path, shards)

    def stop(epoch, row):
        raise Stop

    with pytest.raises(Stop):
        train(tiny_params(train={"epochs": 2}), paths, progress=False, after_epoch=stop)
    assert paths.last.exists()
    metrics = train(tiny_params(train={"epochs": 2, "lr": 0.003}), paths, progress=False)
    assert metrics["timing"]["resumed_from_epoch"] == 0


def test_a_finished_run_asked_for_more_epochs_continues_and_ends_bitwise_equal(baseline, shards, tmp_path,
                                                                                  monkeypatch):
    monkeypatch.setenv("MIDISTYLE_MLFLOW_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    paths = paths_in(tmp_path, shards)
    mlflow = {"enabled": True, "experiment": "midistyle-continue"}
    short = train(tiny_params(train={"epochs": 2}, mlflow=mlflow), paths, progress=False)
    assert short["epochs"] == 2
    metrics = train(tiny_params(train={"epochs": EPOCHS}, mlflow=mlflow), paths, progress=False)
    assert metrics["timing"]["resumed_from_epoch"] == 2 and metrics["timing"]["epochs_this_run"] == EPOCHS - 2
    assert without_timing(metrics) == without_timing(baseline[1])
    assert_same_weights(paths.model, baseline[0] / "models/vae.pt")
    # the finished run's MLflow params are immutable: the continuation is a new run that names it
    client = tracking.client(os.environ["MIDISTYLE_MLFLOW_URI"])
    exp = client.get_experiment_by_name("midistyle-continue")
    first, second = sorted(client.search_runs([exp.experiment_id]), key=lambda r: r.info.start_time)
    assert first.data.params["train.epochs"] == "2" and second.data.params["train.epochs"] == str(EPOCHS)
    assert second.data.tags["continued_from_run"] == first.info.run_id
    assert second.data.tags["resumed_from_epoch"] == "2" and "continued_from_run" not in first.data.tags


def test_a_finished_run_is_not_continued_to_fewer_epochs_or_by_other_code_or_under_cosine(shards, tmp_path,
                                                                                           monkeypatch):
    from midistyle import train as train_module

    paths = paths_in(tmp_path, shards)
    train(tiny_params(train={"epochs": 2}), paths, progress=False)
    assert train(tiny_params(train={"epochs": 1}), paths, progress=False)["timing"]["resumed_from_epoch"] == 0
    again = train(tiny_params(train={"epochs": 1}), paths, progress=False)  # `dvc repro -f`: nothing left to train
    assert again["timing"]["resumed_from_epoch"] == 1 and again["timing"]["epochs_this_run"] == 0
    digest = train_module.source_digest()
    monkeypatch.setattr(train_module, "source_digest", lambda: digest[::-1])  # the package's code changed
    assert train(tiny_params(train={"epochs": 2}), paths, progress=False)["timing"]["resumed_from_epoch"] == 0
    monkeypatch.undo()
    cosine = {"lr_schedule": "cosine", "min_lr": 0.0}
    train(tiny_params(train={"epochs": 1, **cosine}), paths, progress=False)
    assert train(tiny_params(train={"epochs": 2, **cosine}), paths, progress=False)["timing"]["resumed_from_epoch"] == 0


KILLED_RUN = """
import logging, sys, time
from pathlib import Path
from midistyle import shards
from midistyle.train import Paths, train
from tests.helpers_train import tiny_params

iter_batches = shards.ShardIndex.iter_batches

def stalling(self, split, *args, epoch=0, **kwargs):  # stalls in the middle of epoch 3 (index 2)
    for i, batch in enumerate(iter_batches(self, split, *args, epoch=epoch, **kwargs)):
        if split == "train" and epoch == 2 and i == 2:
            Path("mid-epoch").touch()
            time.sleep(120)
        yield batch

shards.ShardIndex.iter_batches = stalling
logging.basicConfig(level=logging.INFO)
train(tiny_params(train={"epochs": %d}), Paths(shards=Path(sys.argv[1])), progress=False)
"""


def test_resume_after_sigkill_mid_epoch_ends_bitwise_equal(baseline, shards, tmp_path, monkeypatch):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "src")])}
    proc = subprocess.Popen([sys.executable, "-c", KILLED_RUN % EPOCHS, str(shards)], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "mid-epoch").exists():
            assert proc.poll() is None, proc.stdout.read().decode()
            assert time.monotonic() < deadline, "the run never reached epoch 3"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    assert proc.returncode == -signal.SIGKILL
    last = tmp_path / "models/tmp/vae-last.pt"
    assert torch.load(last, weights_only=True)["epoch"] == 2 and not (tmp_path / "models/vae.pt").exists()
    assert not list(last.parent.glob("*.part"))  # atomic writes leave no partial file behind

    monkeypatch.chdir(tmp_path)
    metrics = train(tiny_params(train={"epochs": EPOCHS}), Paths(shards=shards), progress=False)
    assert metrics["timing"]["resumed_from_epoch"] == 2
    assert without_timing(metrics) == without_timing(baseline[1])
    assert_same_weights(tmp_path / "models/vae.pt", baseline[0] / "models/vae.pt")
    assert torch.load(last, weights_only=True)["epoch"] == EPOCHS  # the finished state, for a longer run


def test_ddp_two_gloo_processes_on_cpu(shards, tmp_path):
    """train.num_processes: 2 re-launches the stage under torchrun; rank 0 writes a loadable checkpoint."""
    raw = tiny_raw(train={"epochs": 2, "num_processes": 2})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    (tmp_path / "data").mkdir()
    (tmp_path / "data/shards").symlink_to(shards)
    proc = subprocess.run([sys.executable, str(REPO / "stages/train_vae.py")], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    vae, ckpt = load_vae(tmp_path / "models/vae.pt")
    metrics = json.loads((tmp_path / "metrics/train_vae.json").read_text())
    assert metrics["timing"]["processes"] == 2 and ckpt["epoch"] == 2
    assert not any(k.startswith("module.") for k in ckpt["model_state"])  # the bare model, not the DDP wrapper


def test_draw_rolls_writes_one_panel_per_roll(tmp_path):
    from PIL import Image

    from midistyle.pictures import draw_rolls, roll_image

    roll = np.zeros((32, 2, 2, 25), bool)
    roll[0:8, 0, 0, 20] = roll[0, 0, 1, 20] = True  # a held right-hand note
    roll[4:6, 1, 0, 3] = roll[4, 1, 1, 3] = True  # a short left-hand note
    img = roll_image(roll)
    assert img.shape == (25, 32, 3) and img[20, 0].max() < 1 and (img[0, 0] == 1).all()
    one = draw_rolls([("a", roll)], tmp_path / "one.png")
    two = draw_rolls([("a", roll), ("probabilities", roll * 0.5)], tmp_path / "two.png", pitch_low=48, title="t")
    h1, h2 = Image.open(one).size[1], Image.open(two).size[1]
    assert h2 > 1.5 * h1


# ---------------------------------------------------------------- MLflow
def test_project_root_is_found_from_a_dvc_experiment_copy(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    exp = repo / ".dvc/tmp/exps/tmpab12cd"
    (exp / "stages").mkdir(parents=True)
    (exp / ".dvc").mkdir()  # the copy is a DVC repo of its own
    assert tracking.project_root(exp / "stages") == repo
    assert tracking.project_root(repo / ".dvc/tmp/exps") == repo
    assert tracking.project_root(exp.parent.parent.parent / "cache") == repo  # nearest folder holding .dvc/
    for var in tracking.URI_ENV:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(exp)
    assert tracking.tracking_uri() == f"sqlite:///{repo.resolve() / 'mlflow.db'}"
    assert tracking.artifact_location(tracking.tracking_uri()) == (repo.resolve() / "mlartifacts").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///elsewhere.db")
    assert tracking.tracking_uri() == "sqlite:///elsewhere.db"
    monkeypatch.setenv("MIDISTYLE_MLFLOW_URI", "sqlite:////x/y.db")
    assert tracking.tracking_uri() == "sqlite:////x/y.db"


def test_disabled_tracking_yields_a_no_op_run():
    with tracking.start_run(tiny_params(), "train_vae") as run:
        assert not run.enabled and run.run_id is None
        run.log_metrics({"a": 1.0}, step=1)
        run.tag_outputs("does-not-matter")


def test_a_training_run_is_logged_to_mlflow(shards, tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'store/mlflow.db'}"
    (tmp_path / "store").mkdir()
    monkeypatch.setenv("MIDISTYLE_MLFLOW_URI", uri)
    monkeypatch.setenv("DVC_EXP_NAME", "tiny-exp")
    monkeypatch.setenv("DVC_EXP_BASELINE_REV", "abc123")
    params = tiny_params(train={"epochs": 2, "eval_every": 1}, mlflow={"enabled": True, "experiment": "midistyle-test"})
    paths = paths_in(tmp_path, shards)

    def stop(epoch, row):
        raise Stop

    with pytest.raises(Stop):  # the run fails after epoch 1 ...
        train(params, paths, progress=False, after_epoch=stop)
    train(params, paths, progress=False)  # ... and the resumed training logs into the same run

    client = tracking.client(uri)
    exp = client.get_experiment_by_name("midistyle-test")
    assert exp.artifact_location == (tmp_path / "store/mlartifacts").as_uri()
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_name == "tiny-exp"
    tags = run.data.tags
    assert tags["resumed_from_epoch"] == "1"
    assert tags["dvc_stage"] == "train_vae" and tags["dvc_exp_name"] == "tiny-exp"
    assert tags["dvc_exp_baseline_rev"] == "abc123" and tags["profile"] == "tiny"
    assert tags["git_rev"] and tags["git_dirty"] in ("true", "false", "none")
    assert run.data.params["train.epochs"] == "2" and run.data.params["seed"] == "0"
    assert run.data.params["model.latent_size"] == "8"
    for key in ("train_recon", "train_kl", "train_kl_bits_per_dim", "train_kl_weight", "train_total", "val_recon",
                "val_kl", "val_total", "val_precision", "val_recall", "val_f1", "val_active_dims", "test_f1"):
        assert key in run.data.metrics, key
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_f1")] == [1, 2]
    files = {f.path for f in client.list_artifacts(run.info.run_id, "reconstructions")}
    assert files == {f"reconstructions/val-{i:02d}{suffix}" for i in range(2)
                     for suffix in ("-original.mid", "-reconstruction.mid", ".png")}
    assert {f.path for f in client.list_artifacts(run.info.run_id, "model")} == {"model/vae.pt"}
    ckpt = torch.load(paths.model, weights_only=True)
    assert "mlflow_run_id" not in ckpt and set(ckpt["params"]) == {"seed", "model", "train"}  # names no run
    assert "run_key" not in ckpt and "run_key" in torch.load(paths.last, weights_only=True)  # nor the code's digest
    # the run that produced models/vae.pt is found from the file's md5 (what dvc.lock records)
    assert tags[f"dvc_out_md5.{paths.model.as_posix()}"] == tracking.file_md5(paths.model)
    assert tracking.find_runs_for_output(paths.model, experiment="midistyle-test") == [run.info.run_id]


def test_identical_logged_runs_write_identical_checkpoints(shards, tmp_path, monkeypatch):
    """The MLflow run id and experiment stay out of models/vae.pt: two identical runs write the same bytes."""
    monkeypatch.setenv("MIDISTYLE_MLFLOW_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    outputs = []
    for name in ("one", "two"):
        params = tiny_params(train={"epochs": 1}, mlflow={"enabled": True, "experiment": f"midistyle-{name}"})
        paths = paths_in(tmp_path / name, shards)
        train(params, paths, progress=False)
        outputs.append(paths.model.read_bytes())
    assert outputs[0] == outputs[1]


def test_an_edit_of_the_code_that_leaves_the_weights_alone_leaves_the_checkpoint_bytes_alone(shards, tmp_path,
                                                                                                monkeypatch):
    from midistyle import train as train_module

    outputs = []
    for name in ("before", "after"):
        monkeypatch.setattr(train_module, "source_digest", lambda: name)  # e.g. a docstring rewrapped
        paths = paths_in(tmp_path / name, shards)
        train(tiny_params(train={"epochs": 1}), paths, progress=False)
        outputs.append(paths.model.read_bytes())
    assert outputs[0] == outputs[1]


def test_the_no_op_run_has_exactly_the_methods_of_a_real_run():
    null = tracking.NullRun()
    methods = [n for n, v in vars(tracking.Run).items() if callable(v) and not n.startswith("_")]
    assert {"log_metrics", "log_params", "set_tags", "tag_outputs", "log_artifact"} <= set(methods)
    for name in methods:
        getattr(null, name)()
    for name in ("log_metric", "log_param", "set_tag", "end_run"):  # names mlflow's fluent API has, Run does not
        with pytest.raises(AttributeError, match=name):
            getattr(null, name)


def test_transpose_moves_each_window_by_its_own_semitones_and_drops_what_leaves_the_range():
    from midistyle.augment import transpose
    x = torch.zeros(3, 4, 2, 2, 51)
    x[:, :, 0, 0, 10] = 1  # a low note, right hand sounding
    x[:, :, 1, 1, 50] = 1  # the top row, left hand onset
    torch.manual_seed(0)
    shifts = torch.randint(-5, 7, (3,)).tolist()
    torch.manual_seed(0)
    y = transpose(x, -5, 6)
    for i, s in enumerate(shifts):
        assert y[i, :, 0, 0].nonzero()[:, 1].tolist() == [10 + s] * 4
        assert y[i, :, 1, 1].nonzero()[:, 1].tolist() == ([50 + s] * 4 if s <= 0 else [])
    assert torch.equal(transpose(x, 0, 0), x)
    # the judge and the latent classifier draw from their own seeded generator, not the global one
    torch.manual_seed(1)
    a = transpose(x, -5, 6, torch.Generator().manual_seed(5))
    torch.manual_seed(2)
    assert torch.equal(a, transpose(x, -5, 6, torch.Generator().manual_seed(5)))


def test_bf16_precision_runs_the_forward_pass_in_bfloat16_and_keeps_fp32_weights():
    from midistyle.train import train_step
    cfg = tiny_vae_config({})
    x = (torch.rand(4, cfg.window_steps, 2, 2, cfg.n_pitches) < 0.1).float()
    x[:, :, :, 1] *= x[:, :, :, 0]  # an onset only where a note sounds
    lengths = torch.full((4,), cfg.window_steps, dtype=torch.int64)
    losses = {}
    for precision in ("fp32", "bf16"):
        tp = tiny_params(train={"precision": precision}).train
        torch.manual_seed(0)
        vae = StyleVAE(cfg)
        opt = torch.optim.Adam(vae.parameters(), lr=1e-3)
        terms = train_step(vae, opt, x, lengths, torch.ones(2), 0.1, tp)
        assert torch.isfinite(terms["total"])
        assert all(p.dtype == torch.float32 for p in vae.parameters())  # autocast leaves the weights alone
        losses[precision] = terms["total"].item()
    # the same weights and batch: only rounding separates the two, so the losses are close but not equal
    assert losses["fp32"] != losses["bf16"]
    assert math.isclose(losses["fp32"], losses["bf16"], rel_tol=0.05)


def test_precision_is_checked():
    from midistyle.config import ConfigError
    with pytest.raises(ConfigError, match=r"train\.precision"):
        tiny_params(train={"precision": "fp16"})


def test_cosine_lr_falls_from_lr_to_min_lr_and_constant_stays():
    from midistyle.train import lr_at
    constant = tiny_params(train={"lr": 0.002}).train
    assert [lr_at(s, 10, constant) for s in range(10)] == [0.002] * 10
    tp = tiny_params(train={"lr": 0.002, "lr_schedule": "cosine", "min_lr": 0.0001}).train
    lrs = [lr_at(s, 10, tp) for s in range(10)]
    assert lrs[0] == pytest.approx(0.002) and lrs[-1] == pytest.approx(0.0001)
    assert all(a > b for a, b in zip(lrs, lrs[1:]))
    assert lrs[5] == pytest.approx(0.0001 + 0.5 * 0.0019 * (1 + math.cos(math.pi * 5 / 9)))


def test_min_lr_above_lr_is_an_error_naming_the_key():
    from midistyle.config import ConfigError
    with pytest.raises(ConfigError, match=r"train\.min_lr: must be at most train\.lr"):
        tiny_params(train={"lr": 0.001, "min_lr": 0.01})
    with pytest.raises(ConfigError, match=r"train\.lr_schedule"):
        tiny_params(train={"lr_schedule": "step"})


def test_a_cosine_run_uses_the_decayed_rate_and_resumes_bitwise_equal(shards, tmp_path):
    params = tiny_params(train={"epochs": 3, "lr_schedule": "cosine", "min_lr": 0.0})
    whole = train(params, paths_in(tmp_path / "whole", shards), progress=False)
    ckpt = torch.load(tmp_path / "whole/models/vae.pt", weights_only=True)
    assert ckpt["optimizer_state"]["param_groups"][0]["lr"] == pytest.approx(0.0, abs=1e-12)  # the last step's rate
    paths = paths_in(tmp_path / "resumed", shards)

    def stop_after_1(epoch, row):
        if epoch == 1:
            raise Stop

    with pytest.raises(Stop):
        train(params, paths, progress=False, after_epoch=stop_after_1)
    assert without_timing(train(params, paths, progress=False)) == without_timing(whole)
    assert_same_weights(paths.model, tmp_path / "whole/models/vae.pt")


def test_eval_every_skips_validations_but_not_the_last_and_leaves_the_weights_alone(baseline, shards, tmp_path):
    """Validation reads the model and never changes it: the weights and final metrics are the baseline's
    (validated after every epoch)."""
    every = train(tiny_params(train={"epochs": EPOCHS, "eval_every": 1}), paths_in(tmp_path / "every", shards),
                  progress=False)
    assert_same_weights(tmp_path / "every/models/vae.pt", baseline[0] / "models/vae.pt")
    assert without_timing(every) == without_timing(baseline[1])
    params = tiny_params(train={"epochs": EPOCHS, "eval_every": 3})
    paths = paths_in(tmp_path, shards)

    def stop_after_1(epoch, row):  # resume from an epoch that was not validated (no threshold yet)
        if epoch == 1:
            raise Stop

    with pytest.raises(Stop):
        train(params, paths, progress=False, after_epoch=stop_after_1)
    metrics = train(params, paths, progress=False)
    assert_same_weights(paths.model, baseline[0] / "models/vae.pt")
    assert without_timing(metrics) == without_timing(baseline[1])
    import csv
    with open(paths.curves, newline="") as fh:
        rows = list(csv.DictReader(fh))
    validated = [r["epoch"] for r in rows if r["val_f1"] != ""]
    assert validated == ["3", str(EPOCHS)] and all(r["train_total"] != "" for r in rows)
