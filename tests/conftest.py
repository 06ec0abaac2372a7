"""Shared pytest fixtures."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest


@dataclass
class LoopbackServer:
    """An HTTP server on 127.0.0.1 serving ``files`` (URL path -> bytes); 404 for anything else."""

    base: str
    files: dict[str, bytes] = field(default_factory=dict)

    def serve(self, name: str, body: bytes) -> str:
        """Serve ``body`` at ``/<name>``; returns its URL."""
        self.files[f"/{name}"] = body
        return f"{self.base}/{name}"


@pytest.fixture
def http_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[LoopbackServer]:
    """A throwaway web server on an ephemeral loopback port (tests never reach the internet)."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    files: dict[str, bytes] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            body = files.get(self.path.split("?")[0])
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - keep test output quiet
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield LoopbackServer(f"http://127.0.0.1:{server.server_address[1]}", files)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture(scope="session")
def style_project(tmp_path_factory: pytest.TempPathFactory):
    """The tiny two-style project up to the transfer stage, built once per session (tests that change it copy it)."""
    from tests.helpers_style import build_project, one_thread

    with one_thread():
        return build_project(tmp_path_factory.mktemp("style_project"))


@pytest.fixture(scope="session")
def evaluated_style_project(style_project):
    """The tiny project after the evaluate stage (metrics/eval.json and data/report/), once per session."""
    from midistyle.evaluate import evaluate
    from tests.helpers_style import eval_paths, one_thread, write_curves

    with one_thread():
        write_curves(style_project.root / "metrics" / "train_vae_curves.csv")
        evaluate(style_project.params, eval_paths(style_project))
    return style_project
