"""A DVC experiment end to end: `dvc exp run -S train.lr=...` on the sample profile in a temporary clone.

The experiment runs in DVC's temporary copy (``--temp``: under ``<clone>/.dvc/tmp/exps/``)
with no MLflow URI in the environment, so it also checks that the run lands in the
clone's own store (``<clone>/mlflow.db``), found from the DVC root. Slow (download,
extract and a tiny training of 2 epochs): deselect with ``-m 'not slow'``. And
queued experiments that start together share a store that does not exist yet.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from midistyle import tracking
from midistyle.reproduce import clone
from tests.helpers_train import REPO

TINY = {  # the sample profile and a model of a few thousand weights: minutes on 2 CPU cores
    "data": {"profile": "sample"},
    "model": {"latent_size": 8, "encoder_hidden": 16, "dense_size": 16, "decoder_hidden": 32},
    "train": {"epochs": 2, "batch_size": 32, "kl_anneal_epochs": 1, "eval_windows": 32, "device": "cpu",
              "num_processes": 1, "log_reconstructions": 1, "epoch_windows": 256},
}


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def clone_worktree(dest: Path) -> Path:
    """A git clone of the repo plus its uncommitted files (pipeline outputs excluded), committed in the clone."""
    clone(REPO, dest, worktree=True)
    params = yaml.safe_load((dest / "params.yaml").read_text())
    for section, values in TINY.items():
        params[section].update(values)
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (dest / "dvc.lock").unlink(missing_ok=True)
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t.invalid", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t.invalid"}
    subprocess.run(["git", "add", "-A"], cwd=dest, check=True, env=env)
    subprocess.run(["git", "commit", "--quiet", "-m", "tiny baseline"], cwd=dest, check=True, env=env)
    return dest


@pytest.mark.slow
def test_dvc_experiment_shows_up_in_exp_show_and_as_an_mlflow_run(tmp_path):
    if not (REPO / "stages/download.py").exists():
        pytest.skip("the download stage is not in this checkout yet")
    repo = clone_worktree(tmp_path / "repo")
    env = {k: v for k, v in os.environ.items() if k not in tracking.URI_ENV and not k.startswith("DVC_")}
    venv_bin = str(Path(sys.executable).parent)
    env.update(PATH=venv_bin + os.pathsep + env.get("PATH", ""), DVC_NO_ANALYTICS="1",
               PYTHONPATH=str(repo / "src"), DVC_SITE_CACHE_DIR=str(tmp_path / "dvc-site-cache"),
               GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t.invalid", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@t.invalid")

    def dvc(*args: str, timeout: float = 900) -> str:
        proc = subprocess.run(["dvc", *args], cwd=repo, env=env, capture_output=True, text=True, timeout=timeout)
        assert proc.returncode == 0, f"dvc {' '.join(args)}:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
        return proc.stdout

    dvc("exp", "run", "--temp", "-n", "tiny-lr", "-S", "train.lr=0.002", "train_vae")

    shown = json.loads(dvc("exp", "show", "--json", timeout=120))
    exps = [e for rev in shown for e in (rev.get("experiments") or []) if e.get("name") == "tiny-lr"]
    assert exps, json.dumps(shown)[:2000]
    data = exps[0]["revs"][0]["data"]
    assert data["params"]["params.yaml"]["data"]["train"]["lr"] == 0.002
    metrics = data["metrics"]["metrics/train_vae.json"]["data"]
    assert metrics["epochs"] == 2 and 0 <= metrics["test"]["f1"] <= 1
    lock = yaml.safe_load(git("show", f"{exps[0]['revs'][0]['rev']}:dvc.lock", cwd=repo))
    (out,) = [o for o in lock["stages"]["train_vae"]["outs"] if o["path"] == "models/vae.pt"]

    # the run went to the clone's own store although the stage ran in .dvc/tmp/exps/...
    store = repo / "mlflow.db"
    assert store.exists() and (repo / "mlartifacts").is_dir()
    client = tracking.client(f"sqlite:///{store}")
    exp = client.get_experiment_by_name("midistyle")
    (run,) = client.search_runs([exp.experiment_id], "tags.dvc_exp_name = 'tiny-lr'")
    assert run.info.status == "FINISHED" and run.info.run_name == "tiny-lr"
    assert run.data.params["train.lr"] == "0.002" and run.data.params["data.profile"] == "sample"
    assert run.data.tags["dvc_stage"] == "train_vae" and run.data.tags["profile"] == "sample"
    assert run.data.tags["git_rev"] == git("rev-parse", "HEAD", cwd=repo).strip()
    assert run.data.tags["dvc_exp_baseline_rev"] == run.data.tags["git_rev"]
    assert run.data.tags["dvc_out_md5.models/vae.pt"] == out["md5"]  # the run of a DVC output, by its hash
    assert run.data.metrics["test_f1"] == pytest.approx(metrics["test"]["f1"])


LOG_A_RUN = """
import sys
from midistyle import tracking
from midistyle.reproduce import clone
from tests.helpers_train import tiny_params

with tracking.start_run(tiny_params(mlflow={"enabled": True}), "train_vae") as run:
    for epoch in range(1, 6):
        run.log_metrics({"val_total": 1.0 / epoch, "val_f1": 0.1 * epoch}, step=epoch)
"""


def test_experiments_starting_together_share_a_new_store(tmp_path):
    """Queued experiments (`dvc queue start -j 3`) open the not-yet-created SQLite store at the same moment."""
    env = {**os.environ, "MIDISTYLE_MLFLOW_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
           "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "src")])}
    procs = [subprocess.Popen([sys.executable, "-c", LOG_A_RUN], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT) for _ in range(3)]
    outputs = [p.communicate(timeout=120)[0].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], "\n".join(o[-2000:] for o in outputs)
    client = tracking.client(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("midistyle").experiment_id])
    assert len(runs) == 3 and all(r.info.status == "FINISHED" for r in runs)
    assert all(len(client.get_metric_history(r.info.run_id, "val_f1")) == 5 for r in runs)
