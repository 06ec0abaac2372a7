"""The MLflow server (the UI's backend) serves the runs back through its REST API.

A server on 127.0.0.1 and a free port over a temporary sqlite store; every wait
is bounded and the server's process group is stopped by its id.
"""

from pathlib import Path

import pytest

from midistyle.config import load_yaml, parse_params
from tests.helpers_repro import REPO, MlflowServer, sample_run

API = "/api/2.0/mlflow"


def log_tiny_runs(store: Path, monkeypatch, lrs=(1e-3, 3e-4)) -> list[str]:
    """Runs shaped like train_vae's (params, a per-epoch loss history, an artifact), logged as the stages do."""
    monkeypatch.setenv("MIDISTYLE_MLFLOW_URI", f"sqlite:///{store / 'mlflow.db'}")
    try:
        from midistyle.tracking import start_run
    except ImportError:  # before the tracking module: the same shape straight through MLflow
        start_run = None
    ids = []
    for lr in lrs:
        if start_run is None:
            ids.append(log_with_mlflow(store, lr))
            continue
        raw = load_yaml(REPO / "params.yaml")
        raw["train"]["lr"] = lr
        with start_run(parse_params(raw), "train_vae") as run:
            for epoch in range(3):
                run.log_metrics({"val_loss": 1.0 / (epoch + 1) + lr}, step=epoch)
            run.log_dict({"epoch": [0, 1, 2]}, "curves/train_vae_curves.json")
            ids.append(run.run_id)
    return ids


def log_with_mlflow(store: Path, lr: float) -> str:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{store / 'mlflow.db'}")
    exp = client.get_experiment_by_name("midistyle")
    exp_id = exp.experiment_id if exp else client.create_experiment("midistyle", (store / "mlartifacts").as_uri())
    run_id = client.create_run(exp_id, tags={"dvc_stage": "train_vae"}).info.run_id
    client.log_param(run_id, "train.lr", lr)
    for epoch in range(3):
        client.log_metric(run_id, "val_loss", 1.0 / (epoch + 1) + lr, step=epoch)
    client.log_dict(run_id, {"epoch": [0, 1, 2]}, "curves/train_vae_curves.json")
    client.set_terminated(run_id)
    return run_id


def as_dict(run: dict, field: str) -> dict:
    """A run's params or tags (lists of key/value objects in the REST answer) as a dict."""
    return {item["key"]: item["value"] for item in run["data"].get(field, [])}


def search(server, experiment_name="midistyle") -> list[dict]:
    exp = server.get(f"{API}/experiments/get-by-name", experiment_name=experiment_name)["experiment"]
    return server.post(f"{API}/runs/search", {"experiment_ids": [exp["experiment_id"]]}).get("runs", [])


def assert_stopped(server):
    assert server.proc.poll() is not None and not server.group_alive()
    with pytest.raises(OSError):
        server.get("/health", raw=True)


def test_server_serves_runs_params_metric_history_and_artifacts(tmp_path, monkeypatch):
    ids = log_tiny_runs(tmp_path, monkeypatch)
    with MlflowServer(tmp_path) as server:
        runs = {r["info"]["run_id"]: r for r in search(server)}
        assert set(runs) == set(ids)
        assert as_dict(runs[ids[0]], "params")["train.lr"] == "0.001"
        assert as_dict(runs[ids[1]], "tags")["dvc_stage"] == "train_vae"
        history = server.get(f"{API}/metrics/get-history", run_id=ids[1], metric_key="val_loss")["metrics"]
        assert [m["step"] for m in history] == [0, 1, 2]
        assert history[-1]["value"] == pytest.approx(1 / 3 + 3e-4)
        files = server.get(f"{API}/artifacts/list", run_id=ids[0], path="curves")["files"]
        assert [f["path"] for f in files] == ["curves/train_vae_curves.json"]
    assert_stopped(server)


@pytest.mark.slow
def test_server_serves_the_sample_pipeline_runs(tmp_path_factory):
    """The runs that the sample pipeline run (tests/test_reproduce.py) logged, read back through the server."""
    run = sample_run(tmp_path_factory)
    if "train_vae" not in run.stages:
        pytest.skip("train_vae is not in this checkout yet: nothing logged to MLflow")
    store = run.root.parent  # midistyle.reproduce points MIDISTYLE_MLFLOW_URI at <workdir>/mlflow.db
    with MlflowServer(store) as server:
        runs = search(server)
        assert runs, f"no MLflow run in {store / 'mlflow.db'}"
        train = next((r for r in runs if as_dict(r, "tags").get("dvc_stage") == "train_vae"), None)
        assert train, f"no run tagged dvc_stage=train_vae among {len(runs)}"
        run_id = train["info"]["run_id"]
        assert as_dict(train, "params")["data.profile"] == "sample"
        metrics = [m["key"] for m in train["data"].get("metrics", [])]
        assert metrics, "train_vae logged no metric"
        history = server.get(f"{API}/metrics/get-history", run_id=run_id, metric_key=metrics[0])["metrics"]
        assert history
        assert server.get(f"{API}/artifacts/list", run_id=run_id).get("files")
    assert_stopped(server)
