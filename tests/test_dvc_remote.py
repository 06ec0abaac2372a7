"""A second machine gets the pipeline's data, shards and models from a DVC remote, without rerunning anything.

The sample pipeline runs once in a clean clone (tests/helpers_repro.sample_run,
shared with the reproduction test); that clone adds a local-folder remote,
commits its lock file and metrics and runs `dvc push`. A fresh `git clone` of it
(the second machine) runs `dvc pull`: then `dvc status` is clean, `dvc repro`
runs no stage, and the trained models are byte-identical.
"""

import hashlib
import subprocess
from pathlib import Path

import pytest

from midistyle.reproduce import repro_env
from tests.helpers_repro import sample_run

pytestmark = pytest.mark.slow


def run(cmd: list[str], cwd: Path, env: dict, timeout: float = 600) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"`{' '.join(cmd)}` in {cwd} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_push_then_pull_on_a_fresh_clone_needs_no_rerun(tmp_path_factory):
    first = sample_run(tmp_path_factory).root
    scratch = tmp_path_factory.mktemp("remote")
    remote = scratch / "storage"
    env = repro_env(first, scratch)

    run(["dvc", "remote", "add", "--default", "storage", str(remote)], first, env)
    run(["git", "add", "-A"], first, env)
    run(["git", "commit", "--quiet", "-m", "sample run, with a DVC remote"], first, env)
    pushed = run(["dvc", "push"], first, env)
    assert remote.is_dir() and any(remote.rglob("*")), pushed

    second = scratch / "second"
    run(["git", "clone", "--quiet", "--no-hardlinks", str(first), str(second)], scratch, env)
    assert not (second / "models" / "vae.pt").exists()
    env2 = repro_env(second, scratch)
    run(["dvc", "pull"], second, env2)

    for model in ("vae.pt", "latent_classifier.pt", "judge.pt"):
        assert sha256(second / "models" / model) == sha256(first / "models" / model), model
    assert sorted(p.name for p in (second / "data" / "shards").iterdir()) == \
        sorted(p.name for p in (first / "data" / "shards").iterdir())
    status = run(["dvc", "status"], second, env2)
    assert "up to date" in status, status
    repro = run(["dvc", "repro"], second, env2)
    assert "Running stage" not in repro, repro
    assert "didn't change, skipping" in repro, repro
