"""Screenshots of the MLflow UI comparing two runs, for the README.

    docs/mlflow-compare.png       the experiment's chart view: loss curves of the runs
    docs/mlflow-compare-runs.png  the compare page: params and metrics side by side

Needs a running UI (`scripts/mlflow-ui`) and Playwright driving Debian's Chromium
(`pip install playwright` into any virtualenv; no browser download):

    python docs/mlflow_screenshots.py --url http://127.0.0.1:5000 [--runs ID,ID] [--color-runs]

Without --runs it takes the two newest runs of experiment "midistyle" that
logged train.lr. --color-runs gives them distinct colours (the UI's own
``mlflow.runColor`` tag), written to the store.
"""

from __future__ import annotations

import argparse
import json
import urllib.parse
import urllib.request
from pathlib import Path

API = "/api/2.0/mlflow"
COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728")
_LOCAL = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def call(base: str, endpoint: str, payload: dict | None = None, **query) -> dict:
    url = base + API + endpoint + ("?" + urllib.parse.urlencode(query) if query else "")
    data = json.dumps(payload).encode() if payload is not None else None
    req = urllib.request.Request(url, data, {"Content-Type": "application/json"})
    with _LOCAL.open(req, timeout=30) as resp:
        return json.loads(resp.read() or b"{}")


def pick_runs(base: str, experiment: str, runs: list[str] | None) -> tuple[str, list[str]]:
    exp_id = call(base, "/experiments/get-by-name", experiment_name=experiment)["experiment"]["experiment_id"]
    if runs:
        return exp_id, runs
    found = call(base, "/runs/search", {"experiment_ids": [exp_id], "order_by": ["attributes.start_time DESC"],
                                        "filter": "params.`train.lr` != ''", "max_results": 2})
    return exp_id, [r["info"]["run_id"] for r in found.get("runs", [])]


def dismiss_popups(page) -> None:
    """The assistant panel and first-visit hints cover part of the page."""
    for name in ("Close guidance", "Close", "Got it"):
        button = page.get_by_role("button", name=name, exact=True)
        if button.count():
            button.first.click()
            page.wait_for_timeout(500)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", default="http://127.0.0.1:5000")
    ap.add_argument("--experiment", default="midistyle")
    ap.add_argument("--runs", help="comma-separated run ids (default: the two newest with train.lr)")
    ap.add_argument("--color-runs", action="store_true")
    ap.add_argument("--charts", default="_total", help="show the metric charts matching this (default: %(default)s)")
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    args = ap.parse_args(argv)

    from playwright.sync_api import sync_playwright

    base = args.url.rstrip("/")
    exp_id, runs = pick_runs(base, args.experiment, args.runs and args.runs.split(","))
    if len(runs) < 2:
        raise SystemExit(f"need two runs to compare, found {runs}")
    if args.color_runs:
        for run_id, color in zip(runs, COLORS):
            call(base, "/runs/set-tag", {"run_id": run_id, "key": "mlflow.runColor", "value": color})
    quoted = {k: urllib.parse.quote(json.dumps(v)) for k, v in (("runs", runs), ("experiments", [exp_id]))}
    pages = {
        "mlflow-compare.png": f"{base}/#/experiments/{exp_id}/runs?compareRunsMode=CHART",
        "mlflow-compare-runs.png": f"{base}/#/compare-runs?runs={quoted['runs']}&experiments={quoted['experiments']}",
    }
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=args.chromium, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        for name, url in pages.items():
            page.goto(url, wait_until="load")
            page.wait_for_timeout(6000)  # the UI is a JS app that loads runs after the page
            dismiss_popups(page)
            search = page.get_by_placeholder("Search metric charts")
            if args.charts and search.count():
                search.fill(args.charts)
            plots = page.get_by_text("Visualizations", exact=True)
            if plots.count():  # the compare page: fold the plots, show the params and metrics tables
                plots.first.click()
                page.get_by_text("Show diff only").first.click()  # the params that differ: train.lr
                page.set_viewport_size({"width": 1400, "height": 1300})
            page.wait_for_timeout(1500)
            page.screenshot(path=str(args.out / name))
            print(f"wrote {args.out / name}")
        browser.close()


if __name__ == "__main__":
    main()
