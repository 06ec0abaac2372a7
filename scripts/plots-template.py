#!/usr/bin/env python3
"""Build an offline HTML template for `dvc plots show` / `dvc plots diff` and point DVC at it.

DVC's default page loads vega, vega-lite and vega-embed from a CDN, so its plots
stay blank without internet. This script fetches the pinned packages from the
npm registry (`npm pack`, checked against the pinned sha512), inlines their
minified builds into a page with dvc-render's `{plot_divs}` placeholder (and no
`{scripts}` placeholder, so the CDN tags are never added), writes it to a
git-ignored path and sets `plots.html_template` in `.dvc/config.local`.

Run by scripts/bootstrap.sh; idempotent (an up-to-date template is not fetched
again). On failure DVC keeps its default (online) template.

    .venv/bin/python scripts/plots-template.py [--out .dvc/tmp/offline-plots.html] [--no-config]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

# package -> (sha512 integrity of the npm tarball, minified browser build inside it)
PACKAGES = {
    "vega@5.33.1": ("1fArfVDUqVbb5z8n+/nVQb+VNBzx8svY6CrsyTK4Ujm4yrd9I1auoKxBAPXLCavY1LcrbHUskQbGUP8gXOzyQw==",
                    "package/build/vega.min.js"),
    "vega-lite@5.23.0": ("l4J6+AWE3DIjvovEoHl2LdtCUkfm4zs8Xxx7INwZEAv+XVb6kR6vIN1gt3t2gN2gs/y4DYTs/RPoTeYAuEg6mA==",
                         "package/build/vega-lite.min.js"),
    "vega-embed@6.29.0": ("PmlshTLtLFLgWtF/b23T1OwX53AugJ9RZ3qPE2c01VFAbgt3/GSNI/etzA/GzdrkceXFma+FDHNXUppKuM0U6Q==",
                          "package/build/vega-embed.min.js"),
}
STAMP = "<!-- midistyle offline plots template: " + " ".join(PACKAGES) + " (scripts/plots-template.py) -->"
DEFAULT_OUT = Path(".dvc/tmp/offline-plots.html")  # .dvc/tmp is git-ignored by DVC itself

PAGE = """<!DOCTYPE html>
{stamp}
<html>
<head>
    <meta charset="utf-8">
    {{refresh_tag}}
    <title>DVC Plot</title>
{scripts}
    <style>
        table {{
            border-spacing: 15px;
        }}
    </style>
</head>
<body>
    {{plot_divs}}
</body>
</html>
"""


def build_template(scripts: dict[str, str]) -> str:
    """The page with each ``name -> JavaScript`` inlined in order (dvc-render fills ``{plot_divs}``)."""
    tags = []
    for name, js in scripts.items():
        for placeholder in ("{plot_divs}", "{scripts}", "{refresh_tag}"):
            if placeholder in js:  # dvc-render replaces these anywhere in the page
                raise ValueError(f"{name}: contains {placeholder}")
        js = js.replace("</script", "<\\/script")  # cannot end the tag early
        tags.append(f"    <script>/* {name} */\n{js}\n    </script>")
    return PAGE.format(stamp=STAMP, scripts="\n".join(tags))


def fetch(workdir: Path) -> dict[str, str]:
    """``npm pack`` each package into ``workdir``; its minified build, after the integrity check."""
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm not found")
    proc = subprocess.run([npm, "pack", "--json", "--silent", *PACKAGES], cwd=workdir,
                          capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"npm pack failed: {proc.stderr.strip().splitlines()[-1:]}")
    files = {f"{p['name']}@{p['version']}": workdir / p["filename"] for p in json.loads(proc.stdout)}
    scripts = {}
    for spec, (integrity, member) in PACKAGES.items():
        data = files[spec].read_bytes()
        digest = base64.b64encode(hashlib.sha512(data).digest()).decode()
        if digest != integrity:
            raise RuntimeError(f"{spec}: sha512 {digest} differs from the pinned {integrity}")
        with tarfile.open(files[spec]) as tar:
            scripts[spec] = tar.extractfile(member).read().decode("utf-8")
    return scripts


def _dvc() -> str:
    local = Path(sys.executable).parent / "dvc"
    return str(local) if local.exists() else "dvc"


def configure(out: Path | None) -> None:
    """Set (or, with None, unset) plots.html_template in .dvc/config.local; DVC resolves it from .dvc/."""
    if out is None:
        subprocess.run([_dvc(), "config", "--local", "--unset", "plots.html_template"], capture_output=True)
        return
    rel = os.path.relpath(out.resolve(), Path(".dvc").resolve())
    subprocess.run([_dvc(), "config", "--local", "plots.html_template", rel], check=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--no-config", action="store_true", help="only write the template")
    ap.add_argument("--force", action="store_true", help="fetch again even when up to date")
    args = ap.parse_args(argv)
    os.chdir(Path(__file__).resolve().parents[1])
    up_to_date = args.out.exists() and STAMP in args.out.read_text(encoding="utf-8")[:1000]
    if args.force or not up_to_date:
        try:
            with tempfile.TemporaryDirectory() as tmp:
                page = build_template(fetch(Path(tmp)))
        except (RuntimeError, OSError, ValueError, subprocess.SubprocessError) as exc:
            print(f"note: offline plots template not built ({exc}); `dvc plots show` pages load vega from "
                  "a CDN", file=sys.stderr)
            if not args.no_config and not args.out.exists():
                configure(None)
            return 1
        args.out.parent.mkdir(parents=True, exist_ok=True)
        partial = args.out.with_suffix(".partial")
        partial.write_text(page, encoding="utf-8")
        partial.replace(args.out)
        print(f"wrote {args.out} ({len(page) // 1024} KiB)")
    if not args.no_config:
        configure(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
