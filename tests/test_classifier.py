"""The train_classifier stage: latent classifier (class-weighted, selected on val) and the independent judge."""

import json

import numpy as np
import pytest
import torch

from midistyle.classifier import (
    LatentClassifier,
    ClassifierConfig,
    load_classifier,
    predict,
    style_regions,
)
from midistyle.errors import UserError
from midistyle.fitting import FitSettings, class_weights, classification_metrics, fit_selected
from midistyle.judge import RollJudge, JudgeConfig, judge_probs, load_judge
from tests.helpers_style import STYLES, one_thread


@pytest.fixture(scope="module")
def project(style_project):
    """The session's tiny project, on one thread while this module's tests run (restored after)."""
    with one_thread():
        yield style_project


@pytest.fixture(autouse=True)
def single_thread():
    """Tiny networks: one thread is fastest, and does not thrash a shared 2-core machine."""
    with one_thread():
        yield


def test_classification_metrics_balanced_accuracy_and_confusion():
    y_true = np.array([0, 0, 0, 0, 1, 1])
    y_pred = np.array([0, 0, 0, 1, 1, 0])
    m = classification_metrics(y_true, y_pred, ["a", "b"])
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["balanced_accuracy"] == pytest.approx((3 / 4 + 1 / 2) / 2)
    assert m["confusion"] == {"a": {"a": 3, "b": 1}, "b": {"a": 1, "b": 1}}
    assert m["windows"] == 6


def test_class_weights_are_inverse_frequency_and_refuse_an_empty_style():
    w = class_weights(np.array([900, 100]))
    assert w.tolist() == pytest.approx([1000 / 1800, 1000 / 200])
    with pytest.raises(UserError, match="no training windows"):
        class_weights(np.array([10, 0]))


def _blobs(n_major: int, n_minor: int, seed: int):
    g = np.random.default_rng(seed)
    x = np.concatenate([g.normal(0.0, 1.0, (n_major, 2)), g.normal(1.2, 1.0, (n_minor, 2))]).astype(np.float32)
    y = np.concatenate([np.zeros(n_major, int), np.ones(n_minor, int)])
    return torch.from_numpy(x), torch.from_numpy(y)


def _fit(weights, patience=50, lr=0.05, epochs=12):
    torch.manual_seed(0)
    x, y = _blobs(950, 50, seed=1)
    xv, yv = _blobs(950, 50, seed=2)
    model = LatentClassifier(ClassifierConfig(2, 16, 2))

    def batches(epoch):
        order = torch.from_numpy(np.random.default_rng([0, epoch]).permutation(len(y)))
        for lo in range(0, len(y), 100):
            yield (x[order[lo : lo + 100]],), y[order[lo : lo + 100]]

    history, best = fit_selected(model, batches, lambda m: classification_metrics(yv.numpy(), predict(m, xv), ["a", "b"]),
                                 weights, FitSettings(epochs, lr, 0.0, patience))
    return model, history, best, classification_metrics(yv.numpy(), predict(model, xv), ["a", "b"])


def test_class_weighted_loss_finds_the_minority_style():
    _, _, _, weighted = _fit(class_weights(np.array([950, 50])))
    _, _, _, plain = _fit(torch.ones(2))
    assert weighted["recall"]["b"] > 0.5 > plain["recall"]["b"]
    assert weighted["balanced_accuracy"] > plain["balanced_accuracy"]


def test_selection_keeps_the_best_val_epoch_and_stops_early():
    _, history, best, final = _fit(class_weights(np.array([950, 50])), patience=2, lr=1e-9)  # lr ~0: nothing improves
    assert len(history) == 3 and best == 1  # epoch 1, then two without improvement
    assert final["balanced_accuracy"] == pytest.approx(history[0]["val_balanced_accuracy"])


def test_style_regions_are_the_per_style_gaussians():
    g = np.random.default_rng(0)
    mu = np.concatenate([g.normal(0, 1, (500, 3)), g.normal(5, 2, (300, 3))])
    style = np.array([0] * 500 + [1] * 300)
    r = style_regions(mu, style, 2)
    assert r.windows == [500, 300]
    np.testing.assert_allclose(r.means[1].numpy(), mu[500:].mean(axis=0), rtol=1e-5)
    cov = (r.chol[1] @ r.chol[1].T).numpy()
    np.testing.assert_allclose(cov, np.cov(mu[500:], rowvar=False), atol=1e-3)


def test_stage_writes_weights_only_checkpoints_and_metrics(project):
    for path in (project.classifier, project.judge):
        ckpt = torch.load(path, weights_only=True)
        assert ckpt["styles"] == list(STYLES)
        assert "config" in ckpt and "state" in ckpt
    clf, regions, ckpt = load_classifier(project.classifier)
    assert regions.means.shape == (2, project.params.model.latent_size)
    judge, _ = load_judge(project.judge)
    m = json.loads((project.root / "metrics" / "classifier.json").read_text())
    for name in ("latent_classifier", "judge"):
        test = m[name]["test"]
        assert set(test) >= {"accuracy", "balanced_accuracy", "confusion"}
        assert sum(sum(row.values()) for row in test["confusion"].values()) == test["windows"] > 0
        assert 1 <= m[name]["selected_epoch"] <= m[name]["epochs_run"]
    # the two styles are far apart: the judge tells them apart on real test windows
    assert m["judge"]["test"]["balanced_accuracy"] >= 0.8


def test_judge_reads_rolls_without_the_vae_and_ignores_padding():
    torch.manual_seed(0)
    judge = RollJudge(JudgeConfig(n_pitches=51, channels=4, hidden=8, n_styles=3))
    assert not any("vae" in name or "decoder" in name for name, _ in judge.named_parameters())
    x = np.zeros((2, 64, 2, 2, 51), bool)
    x[:, :16, 0, :, 30] = True
    x[1, 40:, 1, :, 5] = True  # noise past the length of window 1 ...
    p = judge_probs(judge, x, np.array([16, 16]))
    np.testing.assert_allclose(p[0], p[1], atol=1e-6)  # ... does not change its verdict
    assert p.shape == (2, 3) and np.allclose(p.sum(1), 1)


def test_train_judge_builds_the_network_it_is_given(project):
    from midistyle.judge import train_judge
    from midistyle.shards import ShardIndex

    built = []

    def make(cfg: JudgeConfig) -> RollJudge:
        built.append(cfg)
        return RollJudge(cfg)

    judge, out = train_judge(ShardIndex.open(project.shards), project.params.judge, project.params.seed, make=make)
    assert len(built) == 1 and built[0].n_styles == len(STYLES) and built[0].channels == project.params.judge.channels
    assert isinstance(judge, RollJudge) and out["metrics"]["test"]["windows"] > 0


def test_missing_or_foreign_checkpoint_is_a_user_error(tmp_path, project):
    with pytest.raises(UserError, match="no trained model"):
        load_classifier(tmp_path / "nope.pt")
    with pytest.raises(UserError, match="not a latent_classifier checkpoint"):
        load_classifier(project.judge)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="not a readable checkpoint"):
        load_judge(tmp_path / "junk.pt")


def test_stage_logs_to_mlflow(tmp_path, monkeypatch, project):
    from midistyle.classifier import train_stage
    from midistyle.tracking import client
    from tests.helpers_style import tiny_params

    monkeypatch.setenv("MIDISTYLE_MLFLOW_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    params = tiny_params(mlflow={"enabled": True}, classifier={"epochs": 2}, judge={"epochs": 1})
    train_stage(params, project.shards, project.vae, tmp_path / "c.pt", tmp_path / "j.pt", tmp_path / "m.json")
    mlf = client()
    exp = mlf.get_experiment_by_name(params.mlflow.experiment)
    (run,) = mlf.search_runs([exp.experiment_id])
    assert run.data.tags["dvc_stage"] == "train_classifier"
    assert {"judge_test_accuracy", "latent_classifier_test_balanced_accuracy", "judge_val_accuracy"} <= set(run.data.metrics)
    artifacts = {a.path for a in mlf.list_artifacts(run.info.run_id, "model")}
    assert artifacts == {"model/c.pt", "model/j.pt"}
    for path in (tmp_path / "c.pt", tmp_path / "j.pt"):  # the stage outputs name no MLflow run
        assert not [k for k in torch.load(path, weights_only=True) if "run" in k or "mlflow" in k]
