"""Helpers for the reproducibility tests: scripts/ files, free ports, bounded waits, an MLflow server."""

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_LOCAL = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback only: never a proxy


def load_script(name: str):
    """Import ``scripts/<name>`` (a file with a dash in its name) as a module."""
    path = REPO / "scripts" / name
    spec = importlib.util.spec_from_file_location(path.stem.replace("-", "_"), path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check, timeout: float, interval: float = 0.25, what: str = "condition"):
    """Call ``check`` until it returns a truthy value (returned) or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not reached within {timeout:.0f} s")
        time.sleep(interval)


class MlflowServer:
    """``mlflow server`` on 127.0.0.1 over ``store/mlflow.db`` (+ ``store/mlartifacts``).

    A context manager: it waits (bounded) for ``/health``, and on exit stops the
    server's own process group (uvicorn and MLflow's job runner) by its id.
    """

    def __init__(self, store: Path, startup_timeout: float = 90):
        self.store, self.startup_timeout = Path(store), startup_timeout
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> "MlflowServer":
        mlflow = Path(sys.executable).parent / "mlflow"
        cmd = [str(mlflow), "server", "--backend-store-uri", f"sqlite:///{self.store / 'mlflow.db'}",
               "--artifacts-destination", str(self.store / "mlartifacts"),
               "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"]
        self.log_path = self.store / "server.log"
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no background job workers
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, cwd=self.store, env=env, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            wait_for(self._healthy, self.startup_timeout, what=f"mlflow server on {self.url}")
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _healthy(self) -> bool:
        if self.proc.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"mlflow server exited with status {self.proc.returncode}:\n{tail}")
        try:
            return self.get("/health", raw=True) == b"OK"
        except OSError:
            return False

    def group_alive(self) -> bool:
        try:
            os.killpg(self.proc.pid, 0)
        except ProcessLookupError:
            return False
        return True

    def stop(self) -> None:
        """SIGTERM to the server's process group, SIGKILL to what is left after 15 s."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(15)
                wait_for(lambda: not self.group_alive(), 15, what="the server's processes to exit")
                break
            except (subprocess.TimeoutExpired, TimeoutError):
                continue

    def get(self, endpoint: str, raw: bool = False, **query):
        url = self.url + endpoint + ("?" + urllib.parse.urlencode(query) if query else "")
        with _LOCAL.open(url, timeout=10) as resp:
            body = resp.read()
        return body if raw else json.loads(body)

    def post(self, endpoint: str, payload: dict) -> dict:
        req = urllib.request.Request(self.url + endpoint, json.dumps(payload).encode(),
                                     {"Content-Type": "application/json"})
        with _LOCAL.open(req, timeout=10) as resp:
            return json.loads(resp.read())


_SAMPLE: dict = {}


def sample_run(tmp_path_factory):
    """The sample pipeline run in a clean clone, once per session (read by several tests).

    The clone is of HEAD; MIDISTYLE_REPRO_WORKTREE=1 copies uncommitted files over it.
    """
    from midistyle.reproduce import run_sample

    if "run" not in _SAMPLE:
        worktree = os.environ.get("MIDISTYLE_REPRO_WORKTREE") == "1"
        try:
            _SAMPLE["run"] = run_sample(REPO, tmp_path_factory.mktemp("sample"), worktree=worktree, timeout=1200)
        except Exception as exc:  # reported once per test that needs the run
            _SAMPLE["run"] = exc
    if isinstance(_SAMPLE["run"], Exception):
        raise _SAMPLE["run"]
    return _SAMPLE["run"]
