#!/usr/bin/env bash
# Create (or update) the project's virtual environment in .venv.
# Everything is pinned through constraints.txt so that no package can pull in
# a CUDA build of torch. Idempotent: a second run only checks the pins.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
stamp=.venv/.midistyle-installed
want=$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    .venv/bin/python -m pip install --quiet --progress-bar off -c constraints.txt -e '.[dev]' \
        2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2)
    echo "$want" > "$stamp"
fi
# Offline pages for `dvc plots show|diff` (vega from npm, inlined); DVC's CDN page if npm fails.
.venv/bin/python scripts/plots-template.py || true
scripts/system-packages.sh
