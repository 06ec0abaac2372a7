"""MLflow tracking for the stages: where the store is, one run per stage execution.

Store
    A SQLite database ``mlflow.db`` and an artifact folder ``mlartifacts/`` at
    the *project root* (both git-ignored, never DVC outputs). The root is found
    from the current directory: DVC runs queued/temp experiments in copies under
    ``<repo>/.dvc/tmp/exps/...``, so a path containing ``/.dvc/tmp/exps/`` maps
    to the part before ``/.dvc/``; otherwise the nearest folder upwards that
    holds ``.dvc/``. So ``dvc repro``, ``dvc exp run`` and ``dvc exp run
    --queue`` all log into the same store. ``MIDISTYLE_MLFLOW_URI`` (or
    else ``MLFLOW_TRACKING_URI``) overrides it; for a ``sqlite:///DIR/x.db`` URI
    the artifacts go to ``DIR/mlartifacts``.

Runs
    ``start_run(params, "train_vae")`` opens one run in experiment
    ``params.mlflow.experiment`` with every resolved param (flattened:
    ``train.lr``), tags ``git_rev``/``git_dirty`` (``mlflow.source.git.commit``
    too), ``dvc_stage``, ``dvc_exp_name`` and ``dvc_exp_baseline_rev`` (set by
    ``dvc exp run`` in the env as ``DVC_EXP_NAME``/``DVC_EXP_BASELINE_REV``; the
    run is named after the experiment) and ``profile`` (``data.profile``). It
    ends FINISHED, FAILED (an exception) or KILLED (Ctrl-C). With
    ``mlflow.enabled: false`` it yields a :class:`NullRun` whose methods do
    nothing. MLflow's telemetry is switched off (``MLFLOW_DISABLE_TELEMETRY``,
    ``DO_NOT_TRACK``); a SQLite store needs no network at all.

DVC's run cache and MLflow
    DVC can *restore* a stage's outputs from its run cache (same code, params
    and deps as a run it has seen) without running the command, and then
    nothing reaches MLflow. The two stay consistent through the outputs'
    hashes: when a stage finishes, :meth:`Run.tag_outputs` tags its run with
    the md5 of each output, the same hash DVC writes to ``dvc.lock``
    (``dvc_out_md5.models/vae.pt``). Training is deterministic and the
    checkpoint holds no timestamps, so a restored ``models/vae.pt`` has the md5
    of the run that first produced it: ``python -m midistyle.tracking
    models/vae.pt`` (or :func:`find_runs_for_output`) lists that run. To force
    a fresh, logged run instead, use ``dvc repro --no-run-cache`` /
    ``dvc exp run --no-run-cache`` (or ``-f`` for a single stage).
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from midistyle import layout
from midistyle.config import Params, as_dict, flatten

log = logging.getLogger(__name__)

URI_ENV = ("MIDISTYLE_MLFLOW_URI", "MLFLOW_TRACKING_URI")
DB_NAME, ARTIFACTS_NAME = "mlflow.db", "mlartifacts"
OUT_TAG = "dvc_out_md5."  # + output path: the md5 that dvc.lock records for it


# ---------------------------------------------------------------- where
def project_root(start: str | Path | None = None) -> Path:
    """The DVC project root, also from inside a DVC experiment's temporary copy."""
    here = Path(start or os.getcwd()).resolve()
    text = str(here) + os.sep
    exps = f"{os.sep}.dvc{os.sep}tmp{os.sep}exps{os.sep}"
    if exps in text:
        return Path(text.split(f"{os.sep}.dvc{os.sep}", 1)[0])
    for folder in (here, *here.parents):
        if (folder / ".dvc").is_dir():
            return folder
    return here


def tracking_uri() -> str:
    """``MIDISTYLE_MLFLOW_URI``, else ``MLFLOW_TRACKING_URI``, else ``sqlite:///<root>/mlflow.db``."""
    for name in URI_ENV:
        if os.environ.get(name):
            return os.environ[name]
    return f"sqlite:///{project_root() / DB_NAME}"


def artifact_dir(uri: str) -> Path | None:
    """``DIR/mlartifacts`` beside a SQLite store ``sqlite:///DIR/x.db``; None for other stores."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///"):]).resolve().parent / ARTIFACTS_NAME


def artifact_location(uri: str) -> str | None:
    """``file://DIR/mlartifacts`` beside a SQLite store; None (the server decides) for other stores."""
    folder = artifact_dir(uri)
    return folder.as_uri() if folder else None


def git_revision(root: str | Path | None = None) -> tuple[str, bool | None]:
    """(``git rev-parse HEAD``, dirty?) of the project; ("unknown", None) outside a git checkout.

    Dirty means a tracked file differs from HEAD, not counting ``dvc.lock`` and
    ``metrics/``, which ``dvc repro`` itself rewrites while the pipeline runs.
    """
    root = Path(root or project_root())

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)

    try:
        head = git("rev-parse", "HEAD")
    except FileNotFoundError:  # no git installed
        return "unknown", None
    if head.returncode != 0:
        return "unknown", None
    status = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!dvc.lock", ":!metrics")
    return head.stdout.strip(), bool(status.stdout.strip()) if status.returncode == 0 else None


def file_md5(path: str | Path) -> str:
    """md5 of a file's bytes: what DVC 3 records in dvc.lock for a file output."""
    h = hashlib.md5()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------- runs
def client(uri: str | None = None):
    """An ``MlflowClient`` on the project's store; no telemetry, no INFO chatter from the store's migrations."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # read when mlflow is imported
    os.environ.setdefault("DO_NOT_TRACK", "true")
    from mlflow import MlflowClient

    for name in ("mlflow", "alembic"):  # after the import: mlflow sets its logger's level when imported
        logging.getLogger(name).setLevel(logging.WARNING)
    return MlflowClient(tracking_uri=uri or tracking_uri())


def experiment_id(mlf, name: str, uri: str) -> str:
    """Get or create the experiment (restoring a deleted one); safe when two processes race."""
    from mlflow.exceptions import MlflowException

    exp = mlf.get_experiment_by_name(name)
    if exp is None:
        try:
            return mlf.create_experiment(name, artifact_location=artifact_location(uri))
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            exp = mlf.get_experiment_by_name(name)  # another process created it first
    if exp.lifecycle_stage == "deleted":
        mlf.restore_experiment(exp.experiment_id)
    return exp.experiment_id


@contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """Serialise opening a SQLite store between processes (queued experiments start together).

    MLflow creates and migrates the database on first use; two processes doing
    that at once fail ("table _alembic_tmp_metrics already exists"). Logging
    into an existing store concurrently is fine. The lock file lives in the
    (git-ignored) artifact folder.
    """
    folder = artifact_dir(uri)
    if folder is None:
        yield
        return
    import fcntl

    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".store.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class Run:
    """One MLflow run, logged through an explicit client (no global fluent state)."""

    enabled = True

    def __init__(self, mlf, run_id: str):
        self.client, self.run_id = mlf, run_id

    @property
    def info(self):
        return self.client.get_run(self.run_id).info

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):  # log_batch takes at most 100 params
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step or 0) for k, v in metrics.items() if v is not None]
        for i in range(0, len(items), 1000):
            self.client.log_batch(self.run_id, metrics=items[i : i + 1000])

    def set_tags(self, tags: dict[str, Any]) -> None:
        for k, v in tags.items():
            self.client.set_tag(self.run_id, k, str(v))

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_artifacts(self, folder: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifacts(self.run_id, str(folder), artifact_path)

    def log_dict(self, obj: Any, artifact_file: str) -> None:
        self.client.log_dict(self.run_id, obj, artifact_file)

    def tag_outputs(self, *paths: str | Path) -> None:
        """Tag the run with each output's md5 (as in dvc.lock): see the module docstring."""
        self.set_tags({OUT_TAG + Path(p).as_posix(): file_md5(p) for p in paths})


class NullRun:
    """What ``start_run`` yields with ``mlflow.enabled: false``: every method of :class:`Run` does nothing.

    Only :class:`Run`'s methods exist here, so a call a real run would refuse
    fails with tracking off too.
    """

    enabled = False
    run_id: str | None = None

    def __getattr__(self, name: str):
        if name.startswith("_") or not callable(getattr(Run, name, None)):
            raise AttributeError(f"{type(self).__name__} has no {name!r} (nor has Run)")
        return lambda *args, **kwargs: None


def epoch_logger(run: "Run | NullRun", prefix: str, logger: logging.Logger) -> Callable[[int, dict], None]:
    """An ``on_epoch`` callback of :func:`midistyle.fitting.fit_selected`: each epoch's row to the log and to
    the run, its names prefixed (``judge_hands_val_accuracy``), the epoch as the step."""
    def log_epoch(epoch: int, row: dict) -> None:
        logger.info("%s epoch %d: %s", prefix, epoch, {k: round(v, 4) for k, v in row.items() if k != "epoch"})
        run.log_metrics({f"{prefix}_{k}": v for k, v in row.items() if k != "epoch"}, step=epoch)
    return log_epoch


def log_scores(run: "Run | NullRun", prefix: str, metrics: dict, splits: Iterable[str],
               keys: Iterable[str] = ("accuracy", "balanced_accuracy")) -> None:
    """Each split's classification scores to the run as ``{prefix}_{split}_{key}`` (``judge_test_accuracy``)."""
    run.log_metrics({f"{prefix}_{split}_{key}": metrics[split][key] for split in splits for key in keys})


def run_tags(params: Params, stage: str) -> dict[str, str]:
    rev, dirty = git_revision()
    tags = {
        "git_rev": rev,
        "git_dirty": str(dirty).lower(),
        "mlflow.source.git.commit": rev,
        "dvc_stage": stage,
        "profile": params.data.profile,
        "mlflow.runName": os.environ.get("DVC_EXP_NAME") or stage,
    }
    for env, tag in (("DVC_EXP_NAME", "dvc_exp_name"), ("DVC_EXP_BASELINE_REV", "dvc_exp_baseline_rev")):
        if os.environ.get(env):
            tags[tag] = os.environ[env]
    return tags


@contextmanager
def start_run(params: Params, stage: str, resume_run_id: str | None = None) -> Iterator[Run | NullRun]:
    """One MLflow run for one execution of ``stage``; yields a :class:`Run` (or :class:`NullRun`).

    ``resume_run_id``: reopen that run (a training resumed from its checkpoint
    keeps logging into the run it started) when it is in this store and
    experiment; otherwise a new run is created.
    """
    if not params.mlflow.enabled:
        yield NullRun()
        return
    uri = tracking_uri()
    with store_lock(uri):
        mlf = client(uri)
        exp_id = experiment_id(mlf, params.mlflow.experiment, uri)
    run = _reopen(mlf, resume_run_id, exp_id) if resume_run_id else None
    if run is None:
        created = mlf.create_run(exp_id, tags=run_tags(params, stage))
        run = Run(mlf, created.info.run_id)
        run.log_params(flatten(as_dict(params)))
    log.info("MLflow run %s in %s", run.run_id, uri)
    try:
        yield run
    except KeyboardInterrupt:
        mlf.set_terminated(run.run_id, "KILLED")
        raise
    except BaseException:
        mlf.set_terminated(run.run_id, "FAILED")
        raise
    mlf.set_terminated(run.run_id, "FINISHED")


def _reopen(mlf, run_id: str, exp_id: str) -> Run | None:
    from mlflow.exceptions import MlflowException

    try:
        old = mlf.get_run(run_id)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        return None
    if old.info.experiment_id != exp_id or old.info.lifecycle_stage == "deleted":
        return None
    mlf.update_run(run_id, status="RUNNING")
    return Run(mlf, run_id)


def find_runs_for_output(path: str | Path = layout.VAE, md5: str | None = None,
                         experiment: str = "midistyle") -> list[str]:
    """Ids of the runs (newest first) that produced this output, matched by its md5."""
    md5 = md5 or file_md5(path)
    mlf = client()
    exp = mlf.get_experiment_by_name(experiment)
    if exp is None:
        return []
    found = mlf.search_runs([exp.experiment_id], f"tags.`{OUT_TAG}{Path(path).as_posix()}` = '{md5}'",
                            order_by=["attributes.start_time DESC"])
    return [r.info.run_id for r in found]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="List the MLflow runs that produced a pipeline output (by its md5).")
    ap.add_argument("path", nargs="?", default=str(layout.VAE))
    ap.add_argument("--experiment", default="midistyle")
    args = ap.parse_args(argv)
    runs = find_runs_for_output(args.path, experiment=args.experiment)
    if not runs:
        raise SystemExit(f"{args.path}: no MLflow run in {tracking_uri()} produced this file")
    print("\n".join(runs))


if __name__ == "__main__":
    main()
