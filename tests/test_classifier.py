"""The train_classifier stage (latent classifier: class-weighted, selected on val) and the train_judge stage (the
independent judge, which reads no VAE)."""

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
from midistyle.judge import NO_VERDICT, JudgeConfig, JudgePanel, RollJudge, agreed, judge_probs, load_judge
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
    r = style_regions(mu, style, 2, samples=400, seed=3)
    assert r.windows == [500, 300]
    assert [len(x) for x in r.samples] == [400, 300]  # up to ``samples`` per style, every window where fewer
    assert {tuple(x) for x in r.samples[0].numpy()} <= {tuple(x) for x in mu[:500].astype(np.float32)}
    again = style_regions(mu, style, 2, samples=400, seed=3)
    assert all(torch.equal(a, b) for a, b in zip(r.samples, again.samples))  # seeded
    np.testing.assert_allclose(r.means[1].numpy(), mu[500:].mean(axis=0), rtol=1e-5)
    cov = (r.chol[1] @ r.chol[1].T).numpy()
    np.testing.assert_allclose(cov, np.cov(mu[500:], rowvar=False), atol=1e-3)


def test_stage_writes_weights_only_checkpoints_and_metrics(project):
    for path in (project.classifier, project.judge):
        ckpt = torch.load(path, weights_only=True)
        assert ckpt["styles"] == list(STYLES)
    assert "config" in torch.load(project.classifier, weights_only=True)
    members = torch.load(project.judge, weights_only=True)["members"]
    assert {n: m["config"]["merge_hands"] for n, m in members.items()} == {"hands": False, "heard": True}
    clf, regions, ckpt = load_classifier(project.classifier)
    assert regions.means.shape == (2, project.params.model.latent_size)
    judge, _ = load_judge(project.judge)
    assert isinstance(judge, JudgePanel) and set(judge.members) == {"hands", "heard"}
    m = json.loads((project.root / "metrics" / "classifier.json").read_text())
    j = json.loads((project.root / "metrics" / "judge.json").read_text())
    assert set(m) == {"styles", "latent_classifier"} and m["styles"] == j["styles"] == list(STYLES)
    fitted = {"latent_classifier": m["latent_classifier"], **{f"judge {n}": v for n, v in j["members"].items()}}
    for name, fit in fitted.items():
        assert 1 <= fit["selected_epoch"] <= fit["epochs_run"], name
    for name, scored in (*fitted.items(), ("judge", j)):
        test = scored["test"]
        assert set(test) >= {"accuracy", "balanced_accuracy", "confusion", "undecided"}
        decided = sum(sum(row.values()) for row in test["confusion"].values())
        assert decided + sum(test["undecided"].values()) == test["windows"] > 0
    # the two styles are far apart: the judge tells them apart on real test windows, and in other keys
    assert j["test"]["balanced_accuracy"] >= 0.8
    assert j["test_transposed"]["balanced_accuracy"] >= 0.8
    assert j["test_transposed"]["windows"] == j["test"]["windows"]
    assert all("test_transposed" in m for m in j["members"].values())


def test_the_judge_trains_on_windows_moved_to_seeded_random_keys(project, monkeypatch):
    from midistyle import judge
    from midistyle.shards import ShardIndex
    from tests.helpers_style import tiny_params

    seen = []

    def recording(x, low, high, generator=None):
        seen.append((low, high, generator.initial_seed() if generator is not None else None))
        return x

    monkeypatch.setattr(judge, "transpose", recording)
    params = tiny_params(judge={"epochs": 2, "patience": 2, "transpose": [-3, 4]})
    judge.train_judge(ShardIndex.open(project.shards), params.judge, params.seed)
    assert seen and {(lo, hi) for lo, hi, _ in seen} == {(-3, 4)}
    # one seeded generator per epoch: the same run draws the same keys, the next epoch other ones
    assert [g for *_, g in seen][0] == params.seed * 1000 + 1 and [g for *_, g in seen][-1] == params.seed * 1000 + 2


def test_the_classifier_encodes_its_training_windows_in_seeded_random_keys(project):
    from midistyle.classifier import encode_split
    from midistyle.model import load_vae
    from midistyle.shards import ShardIndex

    vae, _ = load_vae(project.vae)
    index = ShardIndex.open(project.shards)
    as_written, styles = encode_split(vae, index, "train")
    moved, moved_styles = encode_split(vae, index, "train", keys=(-5, 6), seed=7)
    again, _ = encode_split(vae, index, "train", keys=(-5, 6), seed=7)
    assert np.array_equal(styles, moved_styles) and np.array_equal(moved, again)
    same = np.isclose(moved, as_written, atol=1e-6).all(axis=1)
    assert 0 < same.mean() < 0.5  # a shift of 0 leaves about 1 window in 12 as written


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


def test_the_heard_member_cannot_tell_the_hands_apart_and_the_panel_needs_both():
    torch.manual_seed(0)
    cfg = JudgeConfig(n_pitches=51, channels=4, hidden=8, n_styles=2)
    heard, hands = RollJudge(JudgeConfig(**{**cfg.__dict__, "merge_hands": True})), RollJudge(cfg)
    x = np.zeros((1, 32, 2, 2, 51), bool)
    x[0, :16, 0, :, 30] = True   # a note in the right hand ...
    moved = np.zeros_like(x)
    moved[:, :, 1] = x[:, :, 0]  # ... moved into the left: the same sound
    lengths = np.array([32])
    np.testing.assert_allclose(judge_probs(heard, x, lengths), judge_probs(heard, moved, lengths), atol=1e-6)
    assert not np.allclose(judge_probs(hands, x, lengths), judge_probs(hands, moved, lengths))
    votes = {"hands": np.array([0, 1, 1]), "heard": np.array([0, 0, 1])}
    np.testing.assert_array_equal(agreed(votes), [0, NO_VERDICT, 1])
    m = classification_metrics(np.array([0, 0, 1]), agreed(votes), ["a", "b"])
    assert m["accuracy"] == pytest.approx(2 / 3) and m["undecided"] == {"a": 1, "b": 0}
    assert m["confusion"]["a"] == {"a": 1, "b": 0} and m["recall"]["a"] == 0.5


def test_a_judge_of_the_former_single_network_format_is_refused(tmp_path, project):
    old = torch.load(project.judge, weights_only=True)
    member = old.pop("members")["hands"]
    torch.save({**old, "config": member["config"], "state": member["state"]}, tmp_path / "judge.pt")
    with pytest.raises(UserError, match=r"judge\.pt: a judge of an older format .*`dvc repro train_judge"):
        load_judge(tmp_path / "judge.pt")


def test_missing_or_foreign_checkpoint_is_a_user_error(tmp_path, project):
    with pytest.raises(UserError, match="no trained model"):
        load_classifier(tmp_path / "nope.pt")
    with pytest.raises(UserError, match="not a latent_classifier checkpoint"):
        load_classifier(project.judge)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="not a readable checkpoint"):
        load_judge(tmp_path / "junk.pt")


def test_stages_log_to_mlflow(tmp_path, monkeypatch, project):
    from midistyle import classifier, judge
    from midistyle.tracking import client
    from tests.helpers_style import tiny_params

    monkeypatch.setenv("MIDISTYLE_MLFLOW_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    params = tiny_params(mlflow={"enabled": True}, classifier={"epochs": 2}, judge={"epochs": 1})
    classifier.train_stage(params, project.shards, project.vae, tmp_path / "c.pt", tmp_path / "c.json")
    judge.train_stage(params, project.shards, tmp_path / "j.pt", tmp_path / "j.json")
    mlf = client()
    exp = mlf.get_experiment_by_name(params.mlflow.experiment)
    runs = {r.data.tags["dvc_stage"]: r for r in mlf.search_runs([exp.experiment_id])}
    assert set(runs) == {"train_classifier", "train_judge"}
    assert {"latent_classifier_test_balanced_accuracy", "latent_classifier_val_accuracy",
            "classifier_train_loss"} <= set(runs["train_classifier"].data.metrics)
    assert {"judge_test_accuracy", "judge_val_accuracy", "judge_test_balanced_accuracy", "judge_heard_test_accuracy",
            "judge_hands_train_loss", "judge_heard_train_loss"} <= set(runs["train_judge"].data.metrics)
    for stage, out in (("train_classifier", "c.pt"), ("train_judge", "j.pt")):
        run_id = runs[stage].info.run_id
        assert {a.path for a in mlf.list_artifacts(run_id, "model")} == {f"model/{out}"}
        assert not [k for k in torch.load(tmp_path / out, weights_only=True) if "run" in k or "mlflow" in k]


def test_the_judge_reads_no_vae(tmp_path, monkeypatch, project):
    """A new VAE does not train the judge again: its stage runs without one (dvc.yaml names none)."""
    from midistyle import judge, layout
    from tests.helpers_style import tiny_params

    params = tiny_params(judge={"epochs": 1})
    monkeypatch.chdir(tmp_path)  # the default paths, models/vae.pt among them, name nothing here
    assert not layout.VAE.exists() and not layout.CLASSIFIER.exists()
    judge.train_stage(params, project.shards, tmp_path / "j.pt", tmp_path / "j.json")
    assert not layout.VAE.exists()
    panel, _ = load_judge(tmp_path / "j.pt")
    assert set(panel.members) == {"hands", "heard"}
