"""The report opened in headless Chromium: it renders, and every picture loads.

Skipped where Debian's Chromium is not installed (``apt-get install chromium``;
``scripts/system-packages.sh`` installs it as root).
"""

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is not installed (apt-get install chromium)")


@pytest.fixture(scope="module")
def report(evaluated_style_project) -> Path:
    return evaluated_style_project.report / "index.html"


def chromium(*args: str, timeout: int = 90) -> subprocess.CompletedProcess:
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    try:
        return subprocess.run([str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", *args],
                              capture_output=True, text=True, timeout=timeout)
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def test_every_picture_loads(report):
    # the page's inline script marks <body data-images="loaded"> once every <img> has decoded with a width
    done = chromium("--virtual-time-budget=10000", "--dump-dom", report.as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    body = re.search(r"<body[^>]*>", done.stdout)
    assert body, done.stdout[:500]
    assert 'data-images="loaded"' in body.group(0), f"pictures did not all load: {body.group(0)}"
    n_images = done.stdout.count("<img ")
    assert n_images >= 3  # training curves, trade-off plot, at least one piece's rolls
    assert "<audio controls" in done.stdout


def test_screenshot_is_not_blank(report, tmp_path):
    from matplotlib.image import imread

    shot = tmp_path / "report.png"
    done = chromium("--window-size=1280,2400", "--hide-scrollbars", "--virtual-time-budget=10000",
                    f"--screenshot={shot}", report.as_uri())
    assert done.returncode == 0 and shot.exists(), done.stderr[-2000:]
    pixels = imread(shot)[..., :3]
    assert pixels.std() > 0.05  # text, tables and plots, not a blank page
    colourful = (pixels.max(axis=-1) - pixels.min(axis=-1) > 0.2).mean()
    assert colourful > 0.001  # the plots' and badges' colours are there
    assert np.isfinite(pixels).all()
