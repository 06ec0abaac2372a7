"""CI reproduces the sample run's metrics; the comparison itself is unit-tested first.

The end-to-end test clones the committed repository (set MIDISTYLE_REPRO_WORKTREE=1
to overlay uncommitted files while developing), applies
tests/expected/sample_overrides.yaml, runs `dvc repro` of the whole pipeline and compares the metrics with tests/expected/sample_metrics.json.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from midistyle.config import load_yaml, parse_params
from midistyle.reproduce import (
    EXPECTED,
    OVERRIDES,
    Tolerance,
    apply_overrides,
    compare_metrics,
    deep_merge,
    format_table,
    load_expected,
    main,
    read_metrics_dir,
    run_sample,
    write_expected,
)
from tests.helpers_repro import REPO, load_script, sample_run

TOLERANCES = {"extract.*": {}, "train_vae.*loss*": {"rel": 1e-3, "abs": 1e-6}, "*": {"rel": 1e-6}}
RUN = {
    "extract": {"files_seen": 48, "windows": {"train": {"baroque": 300, "renaissance": 410}},
                "timing": {"wall_seconds": 3.2, "files_per_second": 15.0}},
    "train_vae": {"val": {"loss": 0.4213, "recon": 0.38}, "epochs": 2, "peak_rss_mb": 900.0},
}


def perturbed(path, value):
    run = json.loads(json.dumps(RUN))
    *parents, leaf = path.split(".")
    node = run
    for p in parents:
        node = node[p]
    node[leaf] = value
    return run


# ---------------------------------------------------------------- compare_metrics
def test_identical_runs_have_no_drift():
    assert compare_metrics(RUN, json.loads(json.dumps(RUN)), TOLERANCES) == []


def test_wall_clock_keys_are_never_compared():
    actual = perturbed("extract.timing.wall_seconds", 99.0)
    actual["train_vae"]["peak_rss_mb"] = 5000.0
    del actual["extract"]["timing"]["files_per_second"]
    assert compare_metrics(RUN, actual, TOLERANCES) == []


def test_counts_are_exact_and_losses_have_a_tolerance():
    (d,) = compare_metrics(RUN, perturbed("extract.windows.train.baroque", 301), TOLERANCES)
    assert (d.key, d.expected, d.actual, d.tolerance, d.kind) == ("extract.windows.train.baroque", 300, 301,
                                                                 Tolerance(), "changed")
    assert compare_metrics(RUN, perturbed("train_vae.val.loss", 0.4213 * (1 + 5e-4)), TOLERANCES) == []
    (d,) = compare_metrics(RUN, perturbed("train_vae.val.loss", 0.4213 * (1 + 2e-3)), TOLERANCES)
    assert d.tolerance == Tolerance(rel=1e-3, abs=1e-6)
    (d,) = compare_metrics(RUN, perturbed("train_vae.val.recon", 0.38 * (1 + 1e-5)), TOLERANCES)
    assert d.tolerance == Tolerance(rel=1e-6)  # the catch-all pattern


def test_missing_and_extra_metrics_are_drifts():
    actual = json.loads(json.dumps(RUN))
    del actual["train_vae"]["val"]["recon"]
    actual["extract"]["notes_folded"] = 7
    drifts = {d.key: d for d in compare_metrics(RUN, actual, TOLERANCES)}
    assert drifts["train_vae.val.recon"].kind == "missing"
    assert drifts["extract.notes_folded"].kind == "extra"
    assert len(drifts) == 2


def test_nan_matches_only_nan():
    assert compare_metrics({"m": {"x": float("nan")}}, {"m": {"x": float("nan")}}) == []
    assert len(compare_metrics({"m": {"x": 1.0}}, {"m": {"x": float("nan")}}, {"*": {"rel": 1}})) == 1


def test_a_changed_model_default_fails_with_a_readable_table():
    # What a different model.latent_size does to the run: the losses move far
    # outside their tolerance, and the failure names each metric.
    actual = perturbed("train_vae.val.loss", 0.5120)
    actual["train_vae"]["val"]["recon"] = 0.45
    table = format_table(compare_metrics(RUN, actual, TOLERANCES))
    lines = table.splitlines()
    assert lines[0].split() == ["metric", "expected", "actual", "tolerance", "delta"]
    assert set(lines[1]) <= {"-", " "}
    loss = next(line for line in lines if line.startswith("train_vae.val.loss"))
    assert "0.4213" in loss and "0.512" in loss and "rel 0.001 + abs 1e-06" in loss and "+0.0907 (+21.53%)" in loss
    assert any(line.startswith("train_vae.val.recon") and "rel 1e-06" in line for line in lines)
    assert lines[-1] == "2 drifts: 2 changed, 0 missing, 0 extra"
    assert format_table(compare_metrics(RUN, actual, TOLERANCES), limit=1).splitlines()[-1].endswith(", 1 shown")


def test_missing_and_extra_read_plainly_in_the_table():
    table = format_table(compare_metrics({"a": {"x": 1}}, {"b": {"y": 2}}))
    assert "missing from the run" in table and "not in the expected file" in table


# ---------------------------------------------------------------- files and stages
def test_expected_file_and_overrides_are_valid():
    expected = load_expected(REPO / EXPECTED)
    assert "*" in expected["tolerances"], "the expected file needs a catch-all tolerance"
    for tol in expected["tolerances"].values():
        assert set(tol) <= {"rel", "abs", "note"}
    overrides = yaml.safe_load((REPO / OVERRIDES).read_text())
    params = parse_params(deep_merge(load_yaml(REPO / "params.yaml"), overrides))
    assert params.data.profile == "sample"


def test_apply_overrides_merges_nested_keys(tmp_path):
    (tmp_path / "params.yaml").write_text("seed: 1\ntrain: {lr: 0.001, epochs: 15}\nlist: [1, 2]\n")
    (tmp_path / "o.yaml").write_text("train: {epochs: 2}\nlist: [3]\n")
    apply_overrides(tmp_path / "params.yaml", tmp_path / "o.yaml")
    assert yaml.safe_load((tmp_path / "params.yaml").read_text()) == {
        "seed": 1, "train": {"lr": 0.001, "epochs": 2}, "list": [3]}


def test_update_keeps_tolerances_and_drops_timing(tmp_path):
    exp = tmp_path / "expected.json"
    exp.write_text(json.dumps({"about": "notes", "tolerances": TOLERANCES, "metrics": {}}))
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    for stem, content in RUN.items():
        (metrics / f"{stem}.json").write_text(json.dumps(content))
    assert main(["--metrics-dir", str(metrics), "--expected", str(exp)]) == 1  # extra metrics
    assert main(["--metrics-dir", str(metrics), "--expected", str(exp), "--update"]) == 0
    data = load_expected(exp)
    assert data["about"] == "notes" and data["tolerances"] == TOLERANCES
    assert "timing" not in data["metrics"]["extract"] and "peak_rss_mb" not in data["metrics"]["train_vae"]
    assert main(["--metrics-dir", str(metrics), "--expected", str(exp)]) == 0
    write_expected(exp, perturbed("extract.files_seen", 47))
    assert main(["--metrics-dir", str(metrics), "--expected", str(exp)]) == 1
    assert read_metrics_dir(metrics, ["extract"]).keys() == {"extract"}


def make_tiny_repo(root):
    """A git + DVC repo of two stages: `count` writes metrics, `double` reads them."""
    root.mkdir()
    files = {
        "params.yaml": "seed: 1\nn: 2\n",
        "count.py": "import json, os, yaml\nn = yaml.safe_load(open('params.yaml'))['n']\nos.makedirs('metrics')\n"
                    "json.dump({'n': n * 2, 'timing': {'wall_seconds': 0.1}}, open('metrics/count.json', 'w'))\n",
        "dvc.yaml": yaml.safe_dump({"stages": {
            "count": {"cmd": "python count.py", "deps": ["count.py"], "params": ["n"],
                      "metrics": [{"metrics/count.json": {"cache": False}}]},
            "double": {"cmd": "python double.py", "deps": ["double.py", "metrics/count.json"], "outs": ["double.txt"]}}}),
        "double.py": "import json\nopen('double.txt', 'w').write(str(json.load(open('metrics/count.json'))['n'] * 2))\n",
        str(OVERRIDES): "n: 5\n",
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "DVC_NO_ANALYTICS": "1"}
    dvc = str(Path(sys.executable).parent / "dvc")
    for cmd in (["git", "init", "-q"], [dvc, "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "tiny"]):
        subprocess.run(cmd, cwd=root, env=env, check=True)
    (root / "uncommitted.txt").write_text("not in HEAD")
    return root


def test_run_sample_clones_applies_overrides_and_runs_every_stage(tmp_path):
    repo = make_tiny_repo(tmp_path / "repo")
    run = run_sample(repo, tmp_path / "work", timeout=120)
    assert run.stages == ["count", "double"] and (run.root / "double.txt").read_text() == "20"
    assert run.metric_names == ["count"] and not (run.root / "uncommitted.txt").exists()
    assert read_metrics_dir(run.root / "metrics", run.metric_names) == {
        "count": {"n": 10, "timing": {"wall_seconds": 0.1}}}
    assert not (repo / "metrics").exists(), "the run wrote into the source repository"
    assert (run_sample(repo, tmp_path / "work2", worktree=True).root / "uncommitted.txt").exists()


# ---------------------------------------------------------------- end to end
@pytest.mark.slow
def test_sample_run_reproduces_the_expected_metrics(tmp_path_factory):
    run = sample_run(tmp_path_factory)
    expected = load_expected(run.root / EXPECTED)
    actual = read_metrics_dir(run.root / "metrics", run.metric_names)
    drifts = compare_metrics(expected["metrics"], actual, expected["tolerances"])
    print(f"dvc repro ({' '.join(run.stages)}): {run.seconds:.1f} s")
    if drifts:
        pytest.fail(f"the sample run's metrics drifted from {EXPECTED} (stages run: {', '.join(run.stages)}):\n"
                    f"{format_table(drifts, limit=80)}\n"
                    "If the change is intended, rewrite the file: python -m midistyle.reproduce --update",
                    pytrace=False)


# ---------------------------------------------------------------- offline plots template
SCRIPT_SRC = re.compile(r"<script[^>]*\bsrc\s*=\s*[\"']?\s*(https?:)?//", re.I)


def render_vega_page(tmp_path, template):
    from dvc_render import VegaRenderer, render_html

    points = [{"epoch": e, "val_loss": 1 / e, "rev": "workspace", "filename": "c.csv"} for e in (1, 2, 3)]
    out = tmp_path / "index.html"
    render_html([VegaRenderer(points, "c.csv", x="epoch", y="val_loss")], out, html_template=template and str(template))
    return out.read_text()


def test_offline_template_inlines_scripts_and_keeps_dvc_placeholders(tmp_path):
    plots = load_script("plots-template.py")
    page = plots.build_template({"vega": "var a = '</script>';", "vega-embed": "function vegaEmbed(){}"})
    assert "{plot_divs}" in page and "{scripts}" not in page and "<\\/script>" in page
    assert SCRIPT_SRC.search(render_vega_page(tmp_path, None)), "DVC's default page loads vega from a CDN"
    (tmp_path / "t.html").write_text(page)
    html = render_vega_page(tmp_path, tmp_path / "t.html")
    assert "vegaEmbed('#" in html and not SCRIPT_SRC.search(html), "dvc-render added its CDN scripts"
    with pytest.raises(ValueError, match="plot_divs"):
        plots.build_template({"bad": "x = '{plot_divs}'"})


def test_generated_offline_template_loads_nothing_from_the_network(tmp_path):
    plots = load_script("plots-template.py")
    template = REPO / plots.DEFAULT_OUT
    if not template.exists():
        pytest.skip(f"{plots.DEFAULT_OUT} not generated (scripts/plots-template.py needs npm)")
    page = template.read_text()
    assert plots.STAMP in page and not SCRIPT_SRC.search(page)
    assert all(f"/* {spec} */" in page for spec in plots.PACKAGES)
    assert not SCRIPT_SRC.search(render_vega_page(tmp_path, template))
